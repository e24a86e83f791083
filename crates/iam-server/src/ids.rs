//! Server-made identifiers and secret material from the operating system's CSPRNG.

use iam_domain::ports::{IdGenerator, RandomnessUnavailable};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Random ids: UUID v4 and 80-bit lowercase base32 suffixes.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsIds;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32 in lowercase, without padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u16, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[usize::from((buffer >> bits) & 31)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32[usize::from((buffer << (5 - bits)) & 31)]));
    }
    out
}

impl IdGenerator for OsIds {
    fn uid(&self) -> Uuid {
        Uuid::new_v4()
    }

    fn random_suffix(&self) -> String {
        // A v4 UUID is 122 bits from the OS CSPRNG; bytes 6 and 8 carry the version and
        // variant bits, so take 10 bytes around them: 80 random bits.
        let uuid = Uuid::new_v4();
        let b = uuid.as_bytes();
        let mut bytes = [0u8; 10];
        bytes[..6].copy_from_slice(&b[..6]);
        bytes[6..].copy_from_slice(&b[9..13]);
        base32(&bytes)
    }

    fn secret_bytes(&self) -> Result<Zeroizing<[u8; 32]>, RandomnessUnavailable> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| RandomnessUnavailable)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc_4648_vectors_in_lowercase() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"fooba"), "mzxw6ytb");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn suffixes_are_sixteen_base32_characters_and_differ() {
        let a = OsIds.random_suffix();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(a, OsIds.random_suffix());
    }
}
