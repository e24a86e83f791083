//! Server-made identifiers from the operating system's CSPRNG.

use iam_domain::ports::IdGenerator;
use uuid::Uuid;

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
        let mut bytes = [0u8; 10];
        if getrandom::fill(&mut bytes).is_err() {
            // Practically unreachable on Linux; a v4 UUID's first 6 bytes are random too.
            bytes[..6].copy_from_slice(&Uuid::new_v4().as_bytes()[..6]);
            bytes[6..].copy_from_slice(&Uuid::new_v4().as_bytes()[..4]);
        }
        base32(&bytes)
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
