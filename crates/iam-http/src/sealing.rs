//! Encryption of stored idempotent responses.
//!
//! A recorded response may hold a client secret (credential create), so every recorded body
//! is sealed with ChaCha20-Poly1305 under a key derived from the secret pepper, with a random
//! nonce, and bound (as associated data) to the idempotency key it belongs to: a record copied
//! to another key does not open. Records are purged after 24 h.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use iam_domain::ports::IdempotencyKey;
use sha2::Sha256;

const NONCE_LEN: usize = 12;

/// Seals and opens recorded response bodies.
#[derive(Clone)]
pub struct ResponseSealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseSealer { .. }")
    }
}

/// A sealed record could not be sealed or opened (tampered with, or the pepper changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the recorded response cannot be sealed or opened")]
pub struct SealError;

fn associated_data(key: &IdempotencyKey) -> Vec<u8> {
    let mut aad = Vec::new();
    for part in [key.tenant.as_str(), key.subject.as_str(), key.key.as_str()] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

impl ResponseSealer {
    /// A sealer whose key is `HMAC-SHA256(pepper, "iam/idempotency-sealing/v1")`.
    pub fn from_pepper(pepper: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"iam/idempotency-sealing/v1");
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// `nonce || ciphertext` of `body`, bound to `key`.
    ///
    /// # Errors
    /// [`SealError`] when the OS random source fails.
    pub fn seal(&self, key: &IdempotencyKey, body: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError)?;
        let aad = associated_data(key);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The body sealed by [`Self::seal`] for `key`.
    ///
    /// # Errors
    /// [`SealError`] when the record was altered, belongs to another key, or the pepper
    /// changed since it was sealed.
    pub fn open(&self, key: &IdempotencyKey, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| SealError)?;
        let aad = associated_data(key);
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError)
    }
}

#[cfg(test)]
mod tests {
    use iam_domain::OrgId;

    use super::*;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey {
            tenant: OrgId::parse("org-a").unwrap(),
            subject: "alice".into(),
            key: k.into(),
        }
    }

    #[test]
    fn sealed_bodies_open_only_for_their_key_and_pepper_and_hide_the_plaintext() {
        let sealer = ResponseSealer::from_pepper(&[1; 32]);
        let body = b"{\"clientSecret\":\"plt_cs_cred-x_secretsecretsecret\"}";
        let record = sealer.seal(&key("k1"), body).unwrap();
        assert!(!record.windows(16).any(|w| body.windows(16).any(|b| b == w)));
        assert_eq!(sealer.open(&key("k1"), &record).unwrap(), body);
        assert_eq!(sealer.open(&key("k2"), &record), Err(SealError));
        assert_eq!(
            ResponseSealer::from_pepper(&[2; 32]).open(&key("k1"), &record),
            Err(SealError)
        );
        let mut tampered = record.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(&key("k1"), &tampered), Err(SealError));
        assert_eq!(sealer.open(&key("k1"), &[0; 5]), Err(SealError));
        assert_ne!(
            sealer.seal(&key("k1"), body).unwrap(),
            record,
            "fresh nonce every time"
        );
    }
}
