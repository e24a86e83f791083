//! This service's own Ed25519 keys: generating and loading them (PKCS#8 PEM), their public
//! halves as JWKs with RFC 7638 thumbprints as `kid`, secrets derived from them, and signing
//! access tokens. Verification of tokens (ours and external issuers') is in [`crate::jwt`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sha2::{Digest, Sha256};

use crate::jwt::AccessClaims;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS random source failed.
    #[error("the operating system's random source failed")]
    Random,
    /// The PEM or DER was not an Ed25519 PKCS#8 private key.
    #[error("not an Ed25519 PKCS#8 private key")]
    InvalidPrivateKey,
    /// A JWKS document could not be used.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
}

/// An Ed25519 signing key of this service, identified by its RFC 7638 thumbprint.
pub struct Ed25519Key {
    signing: ed25519_dalek::SigningKey,
    kid: String,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    /// A new random key from the OS CSPRNG.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the OS random source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| KeyError::Random)?;
        Ok(Self::from_signing_key(
            ed25519_dalek::SigningKey::from_bytes(&seed),
        ))
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    /// [`KeyError::InvalidPrivateKey`] when `pem` is not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| KeyError::InvalidPrivateKey)?;
        Ok(Self::from_signing_key(signing))
    }

    /// The key as PKCS#8 PEM, for storing a generated development key.
    ///
    /// # Errors
    /// [`KeyError::InvalidPrivateKey`] if encoding fails.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|_| KeyError::InvalidPrivateKey)
    }

    fn from_signing_key(signing: ed25519_dalek::SigningKey) -> Self {
        let kid = thumbprint(&signing.verifying_key());
        Self { signing, kid }
    }

    /// The public half, for verification and the JWKS.
    pub fn verification_key(&self) -> VerificationKey {
        VerificationKey {
            public: self.signing.verifying_key(),
            kid: self.kid.clone(),
        }
    }

    /// A 32-byte secret for `purpose`, derived from this key (HMAC-SHA256 keyed with the
    /// private seed), so instances sharing the signing key share derived secrets too.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac as _;
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(self.signing.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key id (`kid` header).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (for `/.well-known/jwks.json`).
    pub fn public_jwk(&self) -> serde_json::Value {
        self.verification_key().jwk()
    }

    /// For tests that forge tokens `TokenSigner` would not make.
    #[cfg(test)]
    pub(crate) fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey, KeyError> {
        let der = self
            .signing
            .to_pkcs8_der()
            .map_err(|_| KeyError::InvalidPrivateKey)?;
        Ok(jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()))
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: the `kid`.
fn thumbprint(public: &ed25519_dalek::VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(public.as_bytes());
    // The required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The public half of one of this service's keys: the current signing key, or an earlier one
/// kept so its tokens stay valid until they expire (key rotation).
#[derive(Debug, Clone)]
pub struct VerificationKey {
    public: ed25519_dalek::VerifyingKey,
    kid: String,
}

impl VerificationKey {
    /// Loads a public key (`-----BEGIN PUBLIC KEY-----`, SPKI) or, for convenience, the
    /// public half of a private key (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
    ///
    /// # Errors
    /// [`KeyError::InvalidPrivateKey`] when `pem` is neither.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        if let Ok(public) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self {
                kid: thumbprint(&public),
                public,
            });
        }
        Ok(Ed25519Key::from_pkcs8_pem(pem)?.verification_key())
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public.as_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    pub(crate) fn verifying_key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.public
    }
}

/// Signs tokens with one of this service's keys, parsed once: each token costs one Ed25519
/// signature and no key preparation (`jsonwebtoken::encode` would rebuild the signing key,
/// a scalar multiplication, on every call).
pub struct TokenSigner {
    signing: ed25519_dalek::SigningKey,
    /// `base64url({"typ":"JWT","alg":"EdDSA","kid":…})`: the same for every token.
    header: String,
}

impl TokenSigner {
    /// A signer using `key`.
    ///
    /// # Errors
    /// [`KeyError::InvalidPrivateKey`] if the header cannot be encoded (it always can).
    pub fn new(key: &Ed25519Key) -> Result<Self, KeyError> {
        let header = serde_json::to_vec(&serde_json::json!({
            "typ": "JWT",
            "alg": "EdDSA",
            "kid": key.kid,
        }))
        .map_err(|_| KeyError::InvalidPrivateKey)?;
        Ok(Self {
            signing: key.signing.clone(),
            header: URL_SAFE_NO_PAD.encode(header),
        })
    }

    /// A signed compact JWS (RFC 7515 §7.1) carrying `claims`, with `alg: EdDSA` and this
    /// key's `kid`: `header.payload.signature`, the signature by `ed25519-dalek` over the
    /// first two parts.
    ///
    /// # Errors
    /// When `claims` cannot be serialized (a bug).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, serde_json::Error> {
        use ed25519_dalek::Signer as _;
        let payload = serde_json::to_vec(claims)?;
        // header + payload + signature (86 characters) and two dots.
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 90);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key_id() {
        let key = Ed25519Key::generate().unwrap();
        let again = Ed25519Key::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert!(Ed25519Key::from_pkcs8_pem("not a key").is_err());
    }
}
