//! Client secrets: `plt_cs_{credentialId}_{body}`.
//!
//! The body is 32 bytes from the OS CSPRNG in base62 (43 characters), followed by a 6-character
//! base62 CRC32 checksum of everything before it. The checksum lets scanners and the server
//! reject typos and non-secrets offline ([`check_format`]), as GitHub tokens do; it adds no
//! secrecy. At rest only `HMAC-SHA256(pepper, secret)` is kept ([`SecretHasher`]).
//!
//! The plaintext lives only in [`ClientSecret`], whose `Debug` is redacted and whose memory is
//! zeroed on drop (as are the buffers it is built in); it is shown once, in the response that
//! creates the credential.

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::resource_id::CredentialId;

/// Every client secret starts with this.
pub const PREFIX: &str = "plt_cs_";
/// Base62 characters of the 32 random bytes (62^43 > 2^256).
pub const RANDOM_LEN: usize = 43;
/// Base62 characters of the CRC32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Big-endian `bytes` as a base62 number of exactly `width` digits (left-padded with `0`),
/// appended to `out`. `width` must be large enough for the value; callers use fixed sizes
/// that are. The working digits are zeroed when done (they are the secret, re-encoded), and
/// callers give `out` room enough that it never reallocates (which would leave a copy).
fn push_base62(out: &mut String, bytes: &[u8], width: usize) {
    // Little-endian base-62 digits of the number, by schoolbook long multiplication; one
    // more digit than the width of the largest input, so it never reallocates either.
    let mut digits: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(width + 1));
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in digits.iter_mut() {
            carry += u32::from(*digit) * 256;
            *digit = u8::try_from(carry % 62).unwrap_or(0);
            carry /= 62;
        }
        while carry > 0 {
            digits.push(u8::try_from(carry % 62).unwrap_or(0));
            carry /= 62;
        }
    }
    let len = width.max(digits.len());
    digits.resize(len, 0);
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| char::from(BASE62[usize::from(d)])),
    );
}

/// Big-endian `bytes` as exactly `width` base62 digits (see [`push_base62`]).
fn base62(bytes: &[u8], width: usize) -> String {
    let mut out = String::with_capacity(width);
    push_base62(&mut out, bytes, width);
    out
}

fn checksum(prefix_and_random: &str) -> String {
    base62(
        &crc32fast::hash(prefix_and_random.as_bytes()).to_be_bytes(),
        CHECKSUM_LEN,
    )
}

/// Why a string is not a well-formed client secret. Deliberately carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSecret {
    /// Wrong prefix, missing separator, bad id, wrong length or alphabet.
    #[error("not a client secret")]
    Format,
    /// Well-formed but the checksum does not match (a typo or an invented value).
    #[error("client secret checksum mismatch")]
    Checksum,
}

/// Checks a candidate secret offline (format and checksum) and returns the credential id it
/// names. Never touches storage.
///
/// # Errors
/// [`MalformedSecret`] when the format or checksum is wrong.
pub fn check_format(raw: &str) -> Result<CredentialId, MalformedSecret> {
    let rest = raw.strip_prefix(PREFIX).ok_or(MalformedSecret::Format)?;
    let (id, body) = rest.rsplit_once('_').ok_or(MalformedSecret::Format)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| BASE62.contains(&b)) {
        return Err(MalformedSecret::Format);
    }
    let id = CredentialId::parse(id).map_err(|_| MalformedSecret::Format)?;
    let (signed, given) = raw.split_at(raw.len() - CHECKSUM_LEN);
    if checksum(signed) != given {
        return Err(MalformedSecret::Checksum);
    }
    Ok(id)
}

/// A plaintext client secret. `Debug` is redacted; the text is reachable only through
/// [`ClientSecret::expose`], which the one response that shows it calls. Its memory is zeroed
/// when it is dropped, and so is every buffer it was made in.
pub struct ClientSecret(SecretString);

impl ClientSecret {
    /// The secret of credential `id` made from 32 random bytes.
    ///
    /// The text is built in one buffer sized for it up front (so it never reallocates and
    /// leaves no stray copy), copied into the secret, and zeroed.
    pub fn generate(id: &CredentialId, random: &[u8; 32]) -> Self {
        let len = PREFIX.len() + id.as_str().len() + 1 + RANDOM_LEN + CHECKSUM_LEN;
        let mut text = Zeroizing::new(String::with_capacity(len));
        text.push_str(PREFIX);
        text.push_str(id.as_str());
        text.push('_');
        push_base62(&mut text, random, RANDOM_LEN);
        let sum = checksum(&text);
        text.push_str(&sum);
        Self(SecretString::from(text.as_str()))
    }

    /// Wraps a candidate presented by a client, after checking its format and checksum.
    ///
    /// # Errors
    /// [`MalformedSecret`] when the format or checksum is wrong.
    pub fn parse(raw: &str) -> Result<(CredentialId, Self), MalformedSecret> {
        let id = check_format(raw)?;
        Ok((id, Self(SecretString::from(raw))))
    }

    /// The plaintext. Call only to put it in the create response (or to hash it).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([REDACTED])")
    }
}

/// `HMAC-SHA256(pepper, secret)`: what is stored instead of a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// Hashes and verifies secrets with the server's pepper (from configuration, never stored).
#[derive(Clone)]
pub struct SecretHasher {
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHasher { pepper: [REDACTED] }")
    }
}

impl SecretHasher {
    /// Smallest accepted pepper, in bytes.
    pub const MIN_PEPPER_LEN: usize = 32;

    /// A hasher keyed with `HMAC-SHA256(pepper, "iam/client-secret-hash/v1")` (so other keys
    /// derived from the same pepper never coincide with it), or `None` if `pepper` is shorter
    /// than [`Self::MIN_PEPPER_LEN`] bytes.
    pub fn new(pepper: &[u8]) -> Option<Self> {
        if pepper.len() < Self::MIN_PEPPER_LEN {
            return None;
        }
        let mut derive = Hmac::<Sha256>::new_from_slice(pepper).ok()?;
        derive.update(b"iam/client-secret-hash/v1");
        let key = derive.finalize().into_bytes();
        Hmac::<Sha256>::new_from_slice(&key)
            .ok()
            .map(|keyed| Self { keyed })
    }

    /// The stored form of `secret`.
    pub fn hash(&self, secret: &ClientSecret) -> SecretHash {
        let mut mac = self.keyed.clone();
        mac.update(secret.expose().as_bytes());
        SecretHash(mac.finalize().into_bytes().into())
    }

    /// Whether `candidate` hashes to `stored`, compared in constant time.
    pub fn verify(&self, candidate: &ClientSecret, stored: &SecretHash) -> bool {
        let mut mac = self.keyed.clone();
        mac.update(candidate.expose().as_bytes());
        mac.verify_slice(&stored.0).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use zeroize::ZeroizeOnDrop;

    use super::*;

    fn id() -> CredentialId {
        CredentialId::parse("cred-abcdefghijklmnop").unwrap()
    }

    #[test]
    fn generated_secrets_have_the_documented_shape_and_pass_the_offline_check() {
        for random in [[0u8; 32], [0xff; 32], [7; 32]] {
            let secret = ClientSecret::generate(&id(), &random);
            let text = secret.expose();
            assert!(text.starts_with("plt_cs_cred-abcdefghijklmnop_"), "{text}");
            let body = text.rsplit_once('_').unwrap().1;
            assert_eq!(body.len(), RANDOM_LEN + CHECKSUM_LEN);
            assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(check_format(text), Ok(id()));
        }
        let a = ClientSecret::generate(&id(), &[1; 32]);
        let b = ClientSecret::generate(&id(), &[2; 32]);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn base62_is_a_fixed_width_big_endian_number() {
        assert_eq!(base62(&[0, 0, 0, 0], 6), "000000");
        assert_eq!(base62(&[0, 0, 0, 61], 6), "00000z");
        assert_eq!(base62(&[0, 0, 0, 62], 6), "000010");
        assert_eq!(base62(&u32::MAX.to_be_bytes(), 6), "4gfFC3");
        assert_eq!(base62(&[0xff; 32], RANDOM_LEN).len(), RANDOM_LEN);
    }

    #[test]
    fn typos_and_non_secrets_are_rejected_offline() {
        let secret = ClientSecret::generate(&id(), &[9; 32]);
        let text = secret.expose().to_owned();
        // Every single-character substitution in the random part or checksum is caught.
        let start = text.len() - RANDOM_LEN - CHECKSUM_LEN;
        for i in start..text.len() {
            let mut typo = text.clone().into_bytes();
            typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(typo).unwrap();
            assert_eq!(
                check_format(&typo),
                Err(MalformedSecret::Checksum),
                "position {i}"
            );
        }
        for bad in [
            "",
            "plt_cs_",
            "ghp_0123456789",
            &text[1..],
            &text[..text.len() - 1],
            &format!("{text}x"),
            &text.replace("plt_cs_", "plt_cx_"),
            &text.replace("cred-abcdefghijklmnop", "CRED"),
        ] {
            assert!(check_format(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plaintext_secrets_and_their_random_bytes_are_zeroed_on_drop() {
        // What `ClientSecret` and the id generator's random bytes are made of.
        fn zeroed_on_drop<T: ZeroizeOnDrop + ?Sized>() {}
        zeroed_on_drop::<SecretString>();
        zeroed_on_drop::<Zeroizing<[u8; 32]>>();
        // The one-buffer build is exact: no reallocation can have left a copy behind.
        let secret = ClientSecret::generate(&id(), &[0xff; 32]);
        let len = PREFIX.len() + id().as_str().len() + 1 + RANDOM_LEN + CHECKSUM_LEN;
        assert_eq!(secret.expose().len(), len);
        let mut digits = String::with_capacity(RANDOM_LEN);
        push_base62(&mut digits, &[0xff; 32], RANDOM_LEN);
        assert_eq!(digits.capacity(), RANDOM_LEN, "no reallocation");
    }

    #[test]
    fn the_hash_is_keyed_verifies_in_constant_time_and_debug_redacts() {
        let hasher = SecretHasher::new(&[3; 32]).unwrap();
        let other = SecretHasher::new(&[4; 32]).unwrap();
        let secret = ClientSecret::generate(&id(), &[5; 32]);
        let hash = hasher.hash(&secret);
        assert!(hasher.verify(&secret, &hash));
        assert!(
            !other.verify(&secret, &hash),
            "another pepper, another hash"
        );
        let wrong = ClientSecret::generate(&id(), &[6; 32]);
        assert!(!hasher.verify(&wrong, &hash));
        assert!(
            SecretHasher::new(&[1; 31]).is_none(),
            "short peppers are refused"
        );
        let shown = format!("{secret:?} {hash:?} {hasher:?}");
        assert!(!shown.contains(&secret.expose()[20..40]), "{shown}");
    }
}
