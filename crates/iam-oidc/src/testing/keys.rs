//! Key material of the fake issuer: fixed test-only RSA keys (RSA generation is too slow in
//! debug builds), and P-256 and Ed25519 keys generated at start.

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

use super::FakeAlg;
use crate::keys::b64;

/// TEST-ONLY RSA-2048 private keys (PKCS#8 PEM), generated with `openssl genpkey` for this
/// crate's fake issuer. They protect nothing; never use them anywhere else.
const TEST_ONLY_RSA_2048: [&str; 5] = [
    include_str!("test-only-rsa2048-1.pem"),
    include_str!("test-only-rsa2048-2.pem"),
    include_str!("test-only-rsa2048-3.pem"),
    include_str!("test-only-rsa2048-4.pem"),
    include_str!("test-only-rsa2048-5.pem"),
];

/// How many of [`TEST_ONLY_RSA_2048`] the published RS256 key rotates through; the last one
/// is never published (it signs forged and unknown-`kid` tokens).
pub(super) const RSA_ROTATION: usize = 4;

/// TEST-ONLY RSA-1024 private key: too small, published to prove such keys are refused.
const TEST_ONLY_RSA_1024_WEAK: &str = include_str!("test-only-rsa1024-weak.pem");

/// A signing key with its `kid` and its public JWK.
pub(super) struct FakeKey {
    pub(super) kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    pub(super) jwk: Value,
}

impl FakeKey {
    /// The key for `alg` under `kid`: for RS256 the `rsa_index`-th fixed key, otherwise a
    /// fresh random one.
    pub(super) fn new(alg: FakeAlg, kid: String, rsa_index: usize) -> Self {
        match alg {
            FakeAlg::Rs256 => rsa_key(
                TEST_ONLY_RSA_2048[rsa_index % TEST_ONLY_RSA_2048.len()],
                kid,
            ),
            FakeAlg::Es256 => ec_key(kid),
            FakeAlg::EdDsa => ed_key(kid),
        }
    }

    /// The unpublishable key for `alg` under `kid` (RS256: the fixed key outside the rotation).
    pub(super) fn unpublished(alg: FakeAlg, kid: String) -> Self {
        Self::new(alg, kid, RSA_ROTATION)
    }

    /// The 1024-bit RSA key under `kid`.
    pub(super) fn weak_rsa(kid: String) -> Self {
        rsa_key(TEST_ONLY_RSA_1024_WEAK, kid)
    }

    /// This key with another `kid` (same material, same JWK otherwise).
    pub(super) fn renamed(&self, kid: String) -> Self {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = Value::String(kid.clone());
        Self {
            kid,
            alg: self.alg,
            encoding: self.encoding.clone(),
            jwk,
        }
    }

    /// A compact JWS of `claims` signed with this key, its `kid` in the header.
    #[expect(
        clippy::expect_used,
        reason = "the key was made for exactly this algorithm, and JSON values always serialize"
    )]
    pub(super) fn sign(&self, claims: &Value) -> String {
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(self.alg)
        };
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing with a valid key")
    }
}

/// An RS256 key from a fixed PKCS#8 PEM.
#[expect(
    clippy::expect_used,
    reason = "the PEMs are fixed, valid test keys of this crate"
)]
fn rsa_key(pem: &str, kid: String) -> FakeKey {
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("a valid test-only RSA key");
    let der = private
        .to_pkcs1_der()
        .expect("an RSA key encodes as PKCS#1");
    let jwk = json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64(&private.n().to_bytes_be()),
        "e": b64(&private.e().to_bytes_be()),
    });
    FakeKey {
        kid,
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk,
    }
}

/// 32 random bytes.
#[expect(
    clippy::expect_used,
    reason = "a test machine without randomness cannot run tests"
)]
fn random_32() -> [u8; 32] {
    let mut bytes = [0; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes
}

/// A random ES256 key.
#[expect(
    clippy::expect_used,
    reason = "a generated P-256 key always encodes as PKCS#8"
)]
fn ec_key(kid: String) -> FakeKey {
    let secret = loop {
        // Almost every 32-byte string is a valid scalar; retry the rare one that is not.
        if let Ok(secret) = p256::SecretKey::from_slice(&random_32()) {
            break secret;
        }
    };
    let point = secret.public_key().to_encoded_point(false);
    let coordinate = |value: Option<&p256::FieldBytes>| value.map(|bytes| b64(bytes));
    let jwk = json!({
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
        "crv": "P-256",
        "x": coordinate(point.x()),
        "y": coordinate(point.y()),
    });
    let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret).expect("PKCS#8 encoding");
    FakeKey {
        kid,
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk,
    }
}

/// A random EdDSA (Ed25519) key.
#[expect(
    clippy::expect_used,
    reason = "an Ed25519 key always encodes as PKCS#8"
)]
fn ed_key(kid: String) -> FakeKey {
    let secret = ed25519_dalek::SigningKey::from_bytes(&random_32());
    let jwk = json!({
        "kty": "OKP",
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
        "crv": "Ed25519",
        "x": b64(secret.verifying_key().as_bytes()),
    });
    let der = secret.to_pkcs8_der().expect("PKCS#8 encoding");
    FakeKey {
        kid,
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        jwk,
    }
}
