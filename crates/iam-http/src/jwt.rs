//! JSON Web Tokens: the access-token claims and the verification of every API caller's
//! bearer token. This service's own keys and the signing of tokens are in
//! [`crate::signing_keys`] (re-exported here).
//!
//! [`TokenVerifier`] trusts this service's own keys (an external issuer's are
//! [`crate::external_issuer`]'s). Each trusted key is bound to the issuer it may sign for.
//! `exp`, `nbf` and `iat` are checked against the injected clock (not the ambient one) with at
//! most 60 s of skew: a token issued in the future is refused like one not yet valid.
//! `principal_type: service_account` is reserved for this service's own tokens (only it can
//! vouch that the credential behind one exists); an external issuer's token claiming it is
//! refused.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_domain::{
    CredentialId, OrgId, Principal, PrincipalKind, RoleSlug, Scope, ScopeTarget, Subject,
};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use crate::signing_keys::{Ed25519Key, KeyError, TokenSigner, VerificationKey};

/// Largest clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: i64 = 60;

/// The `aud` claim: one audience or several (both forms are standard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "k0rdent"`.
    One(String),
    /// `"aud": ["k0rdent", "other"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.to_owned())
    }
}

/// The claims of an access token (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Subject: user id or service-account client id.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    pub jti: String,
    /// The organization.
    pub tenant_id: String,
    /// `organization` or `project`.
    pub scope: String,
    /// The organization or project id.
    pub scope_id: String,
    /// Roles held within the scope.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `user`, `api_key` or `service_account`.
    pub principal_type: String,
    /// The credential a service-account token was minted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
}

struct TrustedKey {
    /// Parsed once (a point decompression), not per token.
    key: ed25519_dalek::VerifyingKey,
    issuer: String,
}

/// How many verified tokens [`TokenVerifier`] remembers (about 1 KiB each).
pub const VERIFIED_CACHE_SIZE: usize = 4096;

/// A token that passed every check but the time ones (which depend on when it is used).
type Verified = Arc<(AccessClaims, Principal)>;

/// The JOSE header members read; everything else is ignored.
#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    kid: Option<String>,
}

/// Why a token was refused. Callers see one uniform 401; this is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or unsupported algorithm (including `none`).
    #[error("malformed token or unsupported algorithm")]
    Malformed,
    /// No trusted key has the token's `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    /// Bad signature, wrong issuer or audience, or missing required claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The claims do not describe a principal of this service.
    #[error("unusable claims: {0}")]
    BadClaims(&'static str),
}

/// Verifies bearer tokens against this service's own keys.
///
/// A token that verified is remembered (at most [`VERIFIED_CACHE_SIZE`], least recently used
/// forgotten first), keyed by the SHA-256 of the whole token: presented again, it costs a
/// hash instead of a signature verification. Its times are checked again on every use, and
/// an entry found past its `exp` is dropped, so no entry is ever used beyond its token's
/// lifetime. Only what the token itself says is remembered; liveness (revocation, the
/// credential, the account) is checked on every request by the caller.
pub struct TokenVerifier {
    keys: HashMap<String, TrustedKey>,
    audience: String,
    verified: Mutex<LruCache<[u8; 32], Verified>>,
}

impl TokenVerifier {
    /// The audience every accepted token carries (among others, if its `aud` is a list).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A verifier that trusts no key yet and accepts tokens for `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            keys: HashMap::new(),
            audience: audience.into(),
            verified: Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Trusts one of this service's keys for tokens issued by `issuer`.
    pub fn trust_own_key(&mut self, key: &VerificationKey, issuer: &str) {
        self.keys.insert(
            key.kid().to_owned(),
            TrustedKey {
                key: *key.verifying_key(),
                issuer: issuer.to_owned(),
            },
        );
    }

    /// Verifies `token` at time `now` and builds the calling principal.
    ///
    /// # Errors
    /// The [`TokenError`] saying why the token is refused.
    pub fn verify(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(AccessClaims, Principal), TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // `get` also marks the entry as recently used.
        let cached = self.cache().get(&digest).cloned();
        let remembered = cached.is_some();
        let verified = match cached {
            Some(verified) => verified,
            None => Arc::new(self.verify_untimed(token)?),
        };
        if let Err(refused) = check_times(&verified.0, now) {
            if remembered && refused == TokenError::Expired {
                self.cache().pop(&digest);
            }
            return Err(refused);
        }
        if !remembered {
            self.cache().put(digest, Arc::clone(&verified));
        }
        Ok(verified.as_ref().clone())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], Verified>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every check of [`Self::verify`] but the time claims: the compact JWS (RFC 7515 §7.1)
    /// with `kid` naming a trusted key and `alg: EdDSA`, its signature (`verify_strict` of
    /// `ed25519-dalek`), the key's issuer as `iss`, the audience in `aud`, and the claims of a
    /// principal.
    fn verify_untimed(&self, token: &str) -> Result<(AccessClaims, Principal), TokenError> {
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: JoseHeader = decode_json(header_part).ok_or(TokenError::Malformed)?;
        // An unknown (or absent) kid first: the token may be an external issuer's, whatever
        // its algorithm; one of ours is EdDSA.
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let trusted = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        // The signing input: the header and the payload as sent, with their dot.
        let signed = &token[..header_part.len() + 1 + payload.len()];
        trusted
            .key
            .verify_strict(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Invalid("bad signature".into()))?;
        let claims: AccessClaims = decode_json(payload)
            .ok_or_else(|| TokenError::Invalid("claims of an access token".into()))?;
        if claims.iss != trusted.issuer {
            return Err(TokenError::Invalid("wrong issuer".into()));
        }
        let audience_ok = match &claims.aud {
            Audience::One(one) => *one == self.audience,
            Audience::Many(many) => many.contains(&self.audience),
        };
        if !audience_ok {
            return Err(TokenError::Invalid("wrong audience".into()));
        }
        let principal = principal_from(&claims)?;
        Ok((claims, principal))
    }
}

/// A base64url (unpadded) JSON part of a compact JWS.
fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `exp` (required), `nbf` and `iat` at `now`, with [`LEEWAY_SECONDS`] of skew.
fn check_times(claims: &AccessClaims, now: OffsetDateTime) -> Result<(), TokenError> {
    let now = now.unix_timestamp();
    if now >= claims.exp.saturating_add(LEEWAY_SECONDS) {
        return Err(TokenError::Expired);
    }
    let latest = now.saturating_add(LEEWAY_SECONDS);
    if claims.nbf.is_some_and(|nbf| nbf > latest) {
        return Err(TokenError::NotYetValid);
    }
    if claims.iat > latest {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// The principal `claims` describe.
pub(crate) fn principal_from(claims: &AccessClaims) -> Result<Principal, TokenError> {
    let scope = claims
        .scope
        .parse::<Scope>()
        .map_err(|_| TokenError::BadClaims("scope"))?;
    Ok(Principal {
        subject: Subject::parse(claims.sub.as_str()).map_err(|_| TokenError::BadClaims("sub"))?,
        issuer: claims.iss.clone(),
        tenant: OrgId::parse(claims.tenant_id.as_str())
            .map_err(|_| TokenError::BadClaims("tenant_id"))?,
        target: ScopeTarget::parse(scope, &claims.scope_id)
            .map_err(|_| TokenError::BadClaims("scope_id"))?,
        roles: claims
            .roles
            .iter()
            .filter_map(|r| RoleSlug::parse(r.as_str()).ok())
            .collect(),
        kind: PrincipalKind::parse(&claims.principal_type)
            .ok_or(TokenError::BadClaims("principal_type"))?,
        token_id: claims.jti.clone(),
        credential_id: claims
            .credential_id
            .as_deref()
            .map(CredentialId::parse)
            .transpose()
            .map_err(|_| TokenError::BadClaims("credential_id"))?,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    const ISSUER: &str = "https://iam.test";

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            sub: "alice".into(),
            iss: ISSUER.into(),
            aud: "k0rdent".into(),
            exp,
            iat: exp - 900,
            nbf: None,
            jti: "j1".into(),
            tenant_id: "org-acme".into(),
            scope: "organization".into(),
            scope_id: "org-acme".into(),
            roles: vec!["admin".into(), "Not A Role".into()],
            principal_type: "user".into(),
            credential_id: None,
        }
    }

    fn now() -> OffsetDateTime {
        datetime!(2026-06-01 12:00 UTC)
    }

    fn setup() -> (Ed25519Key, TokenVerifier) {
        let key = Ed25519Key::generate().unwrap();
        let mut verifier = TokenVerifier::new("k0rdent");
        verifier.trust_own_key(&key.verification_key(), ISSUER);
        (key, verifier)
    }

    #[test]
    fn signed_token_round_trips_into_a_principal_dropping_invalid_roles() {
        let (key, verifier) = setup();
        let token = TokenSigner::new(&key)
            .unwrap()
            .sign(&claims(now().unix_timestamp() + 60))
            .unwrap();
        let (_, principal) = verifier.verify(&token, now()).unwrap();
        assert_eq!(principal.tenant.as_str(), "org-acme");
        assert_eq!(principal.roles.len(), 1);
    }

    #[test]
    fn expiry_is_checked_against_the_given_clock_with_sixty_seconds_of_leeway() {
        let (key, verifier) = setup();
        let signer = TokenSigner::new(&key).unwrap();
        let exp = now().unix_timestamp();
        let token = signer.sign(&claims(exp)).unwrap();
        assert!(
            verifier
                .verify(&token, now() + time::Duration::seconds(59))
                .is_ok()
        );
        assert_eq!(
            verifier
                .verify(&token, now() + time::Duration::seconds(60))
                .unwrap_err(),
            TokenError::Expired
        );
        let mut early = claims(exp + 3600);
        early.nbf = Some(exp + 120);
        let token = signer.sign(&early).unwrap();
        assert_eq!(
            verifier.verify(&token, now()).unwrap_err(),
            TokenError::NotYetValid
        );
    }

    #[test]
    fn tokens_of_unknown_keys_wrong_issuer_or_audience_or_alg_none_are_refused() {
        let (_, verifier) = setup();
        let stranger = Ed25519Key::generate().unwrap();
        let exp = now().unix_timestamp() + 600;
        let token = TokenSigner::new(&stranger)
            .unwrap()
            .sign(&claims(exp))
            .unwrap();
        assert_eq!(
            verifier.verify(&token, now()).unwrap_err(),
            TokenError::UnknownKey
        );

        let (key, verifier) = setup();
        let signer = TokenSigner::new(&key).unwrap();
        let mut wrong_iss = claims(exp);
        wrong_iss.iss = "https://evil".into();
        assert!(matches!(
            verifier.verify(&signer.sign(&wrong_iss).unwrap(), now()),
            Err(TokenError::Invalid(_))
        ));
        let mut wrong_aud = claims(exp);
        wrong_aud.aud = "other".into();
        assert!(matches!(
            verifier.verify(&signer.sign(&wrong_aud).unwrap(), now()),
            Err(TokenError::Invalid(_))
        ));

        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(exp)).unwrap());
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, key.kid()));
        assert_eq!(
            verifier
                .verify(&format!("{header}.{payload}."), now())
                .unwrap_err(),
            TokenError::Malformed
        );
    }

    #[test]
    fn hs256_signed_with_the_public_key_and_tokens_without_kid_are_refused() {
        let (key, verifier) = setup();
        let exp = now().unix_timestamp() + 600;
        // Algorithm confusion: HMAC keyed with the (public) Ed25519 key bytes.
        let public = URL_SAFE_NO_PAD
            .decode(key.public_jwk()["x"].as_str().unwrap())
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let confused =
            jsonwebtoken::encode(&header, &claims(exp), &EncodingKey::from_secret(&public))
                .unwrap();
        assert_eq!(
            verifier.verify(&confused, now()).unwrap_err(),
            TokenError::Malformed
        );

        let mut no_kid = Header::new(Algorithm::EdDSA);
        no_kid.kid = None;
        let token =
            jsonwebtoken::encode(&no_kid, &claims(exp), &key.encoding_key().unwrap()).unwrap();
        assert_eq!(
            verifier.verify(&token, now()).unwrap_err(),
            TokenError::UnknownKey
        );
    }

    #[test]
    fn audience_arrays_are_accepted_and_bad_subjects_refused() {
        let (key, verifier) = setup();
        let signer = TokenSigner::new(&key).unwrap();
        let mut many = claims(now().unix_timestamp() + 60);
        many.aud = Audience::Many(vec!["other".into(), "k0rdent".into()]);
        assert!(verifier.verify(&signer.sign(&many).unwrap(), now()).is_ok());
        for sub in [String::new(), "x".repeat(256), "a\u{0}b".to_owned()] {
            let mut bad = claims(now().unix_timestamp() + 60);
            bad.sub = sub;
            assert_eq!(
                verifier
                    .verify(&signer.sign(&bad).unwrap(), now())
                    .unwrap_err(),
                TokenError::BadClaims("sub")
            );
        }
    }

    #[test]
    fn a_remembered_token_is_checked_for_time_again_and_a_changed_one_verified_anew() {
        let (key, verifier) = setup();
        let signer = TokenSigner::new(&key).unwrap();
        let exp = now().unix_timestamp() + 600;
        let token = signer.sign(&claims(exp)).unwrap();
        assert!(verifier.verify(&token, now()).is_ok());
        assert!(verifier.verify(&token, now()).is_ok());
        assert_eq!(verifier.cache().len(), 1);
        // Another payload under the same signature is another token: verified, refused.
        let other = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(exp + 1)).unwrap());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &other;
        assert_eq!(
            verifier.verify(&parts.join("."), now()).unwrap_err(),
            TokenError::Invalid("bad signature".into())
        );
        // Past its exp, the remembered token is refused and forgotten.
        assert_eq!(
            verifier
                .verify(&token, now() + time::Duration::seconds(660))
                .unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(verifier.cache().len(), 0);
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused_beyond_the_leeway() {
        let (key, verifier) = setup();
        let signer = TokenSigner::new(&key).unwrap();
        let mut early = claims(now().unix_timestamp() + 3600);
        early.iat = now().unix_timestamp() + 60;
        assert!(
            verifier
                .verify(&signer.sign(&early).unwrap(), now())
                .is_ok()
        );
        early.iat += 1;
        assert_eq!(
            verifier
                .verify(&signer.sign(&early).unwrap(), now())
                .unwrap_err(),
            TokenError::IssuedInFuture
        );
    }
}
