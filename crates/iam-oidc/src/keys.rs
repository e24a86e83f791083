//! A parsed JWKS: each published key checked once, when fetched, and kept as a ready
//! [`DecodingKey`] under its `kid`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::error::{VerifyError, echo};

/// Smallest RSA modulus accepted, in bits.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// base64url without padding, tolerating padding some issuers add.
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The algorithms this crate verifies; each fits exactly one key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256; RSA keys of at least 2048 bits.
    Rs256,
    /// ECDSA on P-256 with SHA-256; EC P-256 keys.
    Es256,
    /// Ed25519; OKP Ed25519 keys.
    EdDsa,
}

impl KeyAlg {
    /// The algorithm a header's `alg` names, if it is one of the three.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The `jsonwebtoken` algorithm.
    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// One published key under a `kid`: ready to verify one algorithm, or refused with a reason.
#[derive(Debug)]
enum Published {
    Usable { alg: KeyAlg, key: DecodingKey },
    Unusable(&'static str),
}

/// The keys of one JWKS by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Vec<Published>>,
}

/// A JWK's members this crate reads; anything else is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The JWKS document.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys without a `kid` are ignored; keys that may not be used
    /// are remembered as unusable (so a token naming one is refused with the reason, and
    /// does not trigger a refetch).
    ///
    /// # Errors
    /// A short reason when the body is not a JSON object with a `keys` array.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, &'static str> {
        let raw: RawJwks = serde_json::from_slice(body).map_err(|_| "not a JWKS document")?;
        let mut set = Self::default();
        for value in &raw.keys {
            let Ok(jwk) = RawJwk::deserialize(value) else {
                continue;
            };
            let Some(kid) = jwk.kid.clone() else {
                continue;
            };
            let published = match parse_key(&jwk) {
                Ok((alg, key)) => Published::Usable { alg, key },
                Err(reason) => Published::Unusable(reason),
            };
            set.by_kid.entry(kid).or_default().push(published);
        }
        Ok(set)
    }

    /// Whether any key (usable or not) is published under `kid`.
    pub(crate) fn contains(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Number of usable keys.
    pub(crate) fn usable(&self) -> usize {
        self.by_kid
            .values()
            .flatten()
            .filter(|key| matches!(key, Published::Usable { .. }))
            .count()
    }

    /// The key to verify a token of `alg` whose header names `kid`.
    ///
    /// # Errors
    /// [`VerifyError::UnknownKey`] when no key has that `kid`; [`VerifyError::UnusableKey`]
    /// when keys have it but none may verify `alg`.
    pub(crate) fn find(&self, kid: &str, alg: KeyAlg) -> Result<&DecodingKey, VerifyError> {
        let keys = self
            .by_kid
            .get(kid)
            .ok_or_else(|| VerifyError::UnknownKey { kid: echo(kid) })?;
        let mut reason = "key type does not fit the algorithm";
        for published in keys {
            match published {
                Published::Usable { alg: fits, key } if *fits == alg => return Ok(key),
                Published::Usable { .. } => {}
                Published::Unusable(why) => reason = why,
            }
        }
        Err(VerifyError::UnusableKey {
            kid: echo(kid),
            reason,
        })
    }
}

/// Checks one JWK and makes its [`DecodingKey`].
fn parse_key(jwk: &RawJwk) -> Result<(KeyAlg, DecodingKey), &'static str> {
    if jwk.usage.as_deref().is_some_and(|usage| usage != "sig") {
        return Err("use is not sig");
    }
    let (alg, key) = match jwk.kty.as_deref() {
        Some("RSA") => (KeyAlg::Rs256, rsa_key(jwk)?),
        Some("EC") => (KeyAlg::Es256, ec_key(jwk)?),
        Some("OKP") => (KeyAlg::EdDsa, ed_key(jwk)?),
        _ => return Err("unsupported key type"),
    };
    if jwk.alg.as_deref().is_some_and(|named| named != alg.name()) {
        return Err("published for another alg");
    }
    Ok((alg, key))
}

/// Decodes a base64url member that must be present.
fn member(value: Option<&String>, missing: &'static str) -> Result<Vec<u8>, &'static str> {
    let value = value.ok_or(missing)?;
    BASE64URL
        .decode(value)
        .map_err(|_| "member is not base64url")
}

/// An RSA key of at least [`MIN_RSA_BITS`] bits that the `rsa` crate accepts.
fn rsa_key(jwk: &RawJwk) -> Result<DecodingKey, &'static str> {
    let n = member(jwk.n.as_ref(), "RSA key without n")?;
    let e = member(jwk.e.as_ref(), "RSA key without e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    if modulus_bits(n) < MIN_RSA_BITS {
        return Err("RSA modulus under 2048 bits");
    }
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
    )
    .map_err(|_| "invalid RSA key")?;
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

/// An EC key on P-256 whose point is on the curve.
fn ec_key(jwk: &RawJwk) -> Result<DecodingKey, &'static str> {
    if jwk.crv.as_deref() != Some("P-256") {
        return Err("EC key not on P-256");
    }
    let x = member(jwk.x.as_ref(), "EC key without x")?;
    let y = member(jwk.y.as_ref(), "EC key without y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err("invalid P-256 key");
    }
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| "invalid P-256 key")?;
    // The uncompressed SEC1 point is what `DecodingKey::from_ec_components` builds too.
    Ok(DecodingKey::from_ec_der(&point))
}

/// An OKP key on Ed25519 that decodes to a valid point.
fn ed_key(jwk: &RawJwk) -> Result<DecodingKey, &'static str> {
    if jwk.crv.as_deref() != Some("Ed25519") {
        return Err("OKP key not on Ed25519");
    }
    let x = member(jwk.x.as_ref(), "OKP key without x")?;
    let bytes: [u8; 32] = x.as_slice().try_into().map_err(|_| "invalid Ed25519 key")?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| "invalid Ed25519 key")?;
    Ok(DecodingKey::from_ed_der(&bytes))
}

/// `bytes` without its leading zero bytes.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[first..]
}

/// Bit length of a big-endian unsigned integer without leading zero bytes.
fn modulus_bits(n: &[u8]) -> usize {
    match n.first() {
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

/// Standard base64url encoding without padding (for tests and the fake issuer).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A fake RSA modulus of `bits` bits (odd, so the `rsa` crate takes it).
    fn modulus(bits: usize) -> String {
        let mut n = vec![0xff_u8; bits / 8];
        n[0] = 0xc5;
        b64(&n)
    }

    fn ec_point() -> (String, String) {
        let secret = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let point = secret.verifying_key().to_encoded_point(false);
        (b64(point.x().unwrap()), b64(point.y().unwrap()))
    }

    fn ed_point() -> String {
        b64(ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .as_bytes())
    }

    fn set(keys: &serde_json::Value) -> KeySet {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn each_key_type_fits_its_algorithm() {
        let (x, y) = ec_point();
        let keys = set(&json!([
            { "kty": "RSA", "kid": "r", "n": modulus(2048), "e": "AQAB", "use": "sig", "alg": "RS256" },
            { "kty": "EC", "kid": "e", "crv": "P-256", "x": x, "y": y },
            { "kty": "OKP", "kid": "o", "crv": "Ed25519", "x": ed_point() },
        ]));
        assert_eq!(keys.usable(), 3);
        assert!(keys.find("r", KeyAlg::Rs256).is_ok());
        assert!(keys.find("e", KeyAlg::Es256).is_ok());
        assert!(keys.find("o", KeyAlg::EdDsa).is_ok());
        assert!(matches!(
            keys.find("r", KeyAlg::Es256),
            Err(VerifyError::UnusableKey { .. })
        ));
        assert!(matches!(
            keys.find("o", KeyAlg::Rs256),
            Err(VerifyError::UnusableKey { .. })
        ));
        assert_eq!(
            keys.find("nope", KeyAlg::Rs256).unwrap_err(),
            VerifyError::UnknownKey { kid: "nope".into() }
        );
    }

    #[test]
    fn unusable_keys_are_kept_with_their_reason() {
        let (x, y) = ec_point();
        let keys = set(&json!([
            { "kty": "RSA", "kid": "small", "n": modulus(1024), "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "n": modulus(2048), "e": "AQAB", "use": "enc" },
            { "kty": "RSA", "kid": "ps", "n": modulus(2048), "e": "AQAB", "alg": "PS256" },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "x": x, "y": y },
            { "kty": "EC", "kid": "offcurve", "crv": "P-256", "x": x, "y": x },
            { "kty": "OKP", "kid": "x25519", "crv": "X25519", "x": ed_point() },
            { "kty": "OKP", "kid": "short", "crv": "Ed25519", "x": "AAAA" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "nokey" },
        ]));
        assert_eq!(keys.usable(), 0);
        let reason = |kid: &str, alg| match keys.find(kid, alg) {
            Err(VerifyError::UnusableKey { reason, .. }) => reason,
            other => panic!("{kid}: {other:?}"),
        };
        assert_eq!(
            reason("small", KeyAlg::Rs256),
            "RSA modulus under 2048 bits"
        );
        assert_eq!(reason("enc", KeyAlg::Rs256), "use is not sig");
        assert_eq!(reason("ps", KeyAlg::Rs256), "published for another alg");
        assert_eq!(reason("p384", KeyAlg::Es256), "EC key not on P-256");
        assert_eq!(reason("offcurve", KeyAlg::Es256), "invalid P-256 key");
        assert_eq!(reason("x25519", KeyAlg::EdDsa), "OKP key not on Ed25519");
        assert_eq!(reason("short", KeyAlg::EdDsa), "invalid Ed25519 key");
        assert_eq!(reason("hmac", KeyAlg::Rs256), "unsupported key type");
        assert_eq!(reason("nokey", KeyAlg::Rs256), "RSA key without n");
        assert!(keys.contains("small"));
    }

    #[test]
    fn keys_without_kid_or_malformed_members_are_skipped() {
        let keys = set(&json!([
            { "kty": "RSA", "n": modulus(2048), "e": "AQAB" },
            { "kty": 5, "kid": "weird" },
            "not an object",
        ]));
        assert_eq!(keys.usable(), 0);
        assert!(!keys.contains("weird"));
    }

    #[test]
    fn documents_that_are_not_a_jwks_are_refused() {
        assert!(KeySet::parse(b"not json").is_err());
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"{\"keys\": {}}").is_err());
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"{\"keys\": []}").is_ok());
    }

    #[test]
    fn modulus_size_counts_bits_not_bytes() {
        assert_eq!(modulus_bits(strip_leading_zeros(&[0, 0, 1])), 1);
        assert_eq!(modulus_bits(&[0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0]), 15);
        assert_eq!(modulus_bits(&[]), 0);
        // A 2048-bit modulus published with a leading zero byte is still 2048 bits.
        let mut n = vec![0_u8];
        n.extend(vec![0xff_u8; 256]);
        assert_eq!(modulus_bits(strip_leading_zeros(&n)), 2048);
    }
}
