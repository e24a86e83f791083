//! Opaque, tamper-evident page tokens for cursor pagination.
//!
//! A token carries the last item's `(createdAt, uid)` and a truncated HMAC-SHA256 over it, the
//! collection, the caller's tenant and the list filters. So an edited or forged token, a token
//! from another tenant, and a token replayed with different filters are all refused.
//!
//! Layout before base64url: version (1) · `created_at` in µs, big endian (8) · uid (16) · MAC (16).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use iam_domain::Cursor;
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const PAYLOAD_LEN: usize = 1 + 8 + 16;

/// Encodes and checks page tokens with a server-side key.
pub struct PageTokenCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokenCodec { .. }")
    }
}

/// A page token that is malformed, forged, or bound to other filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid page token")]
pub struct InvalidPageToken;

impl PageTokenCodec {
    /// A codec keyed with `key` (derived from server configuration; shared by all instances).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, payload: &[u8], binding: &[&str]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in binding {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(payload);
        mac
    }

    /// The token for continuing after `cursor`, bound to `binding` (collection, tenant and
    /// filter values, in a fixed order).
    pub fn encode(&self, cursor: &Cursor, binding: &[&str]) -> String {
        let micros =
            i64::try_from(cursor.created_at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
        let mut bytes = Vec::with_capacity(PAYLOAD_LEN + MAC_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&micros.to_be_bytes());
        bytes.extend_from_slice(cursor.uid.as_bytes());
        let tag = self.mac(&bytes, binding).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor in `token`, if the token is authentic and bound to `binding`.
    ///
    /// # Errors
    /// [`InvalidPageToken`] for anything else.
    pub fn decode(&self, token: &str, binding: &[&str]) -> Result<Cursor, InvalidPageToken> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| InvalidPageToken)?;
        if bytes.len() != PAYLOAD_LEN + MAC_LEN || bytes[0] != VERSION {
            return Err(InvalidPageToken);
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        self.mac(payload, binding)
            .verify_truncated_left(tag)
            .map_err(|_| InvalidPageToken)?;
        let micros = i64::from_be_bytes(payload[1..9].try_into().map_err(|_| InvalidPageToken)?);
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .map_err(|_| InvalidPageToken)?;
        let uid = Uuid::from_slice(&payload[9..25]).map_err(|_| InvalidPageToken)?;
        Ok(Cursor { created_at, uid })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            created_at: datetime!(2026-01-02 03:04:05.123456 UTC),
            uid: Uuid::from_u128(42),
        }
    }

    #[test]
    fn round_trips_with_the_same_binding() {
        let codec = PageTokenCodec::new([7; 32]);
        let token = codec.encode(&cursor(), &["sa", "org-acme", ""]);
        assert_eq!(codec.decode(&token, &["sa", "org-acme", ""]), Ok(cursor()));
    }

    #[test]
    fn refuses_other_bindings_keys_and_any_edited_character() {
        let codec = PageTokenCodec::new([7; 32]);
        let binding = ["sa", "org-acme", "active"];
        let token = codec.encode(&cursor(), &binding);
        assert!(
            codec
                .decode(&token, &["sa", "org-other", "active"])
                .is_err()
        );
        assert!(
            codec
                .decode(&token, &["sa", "org-acme", "disabled"])
                .is_err()
        );
        assert!(
            codec.decode(&token, &["sa", "org-acmeactive", ""]).is_err(),
            "length-prefixed"
        );
        assert!(
            PageTokenCodec::new([8; 32])
                .decode(&token, &binding)
                .is_err()
        );
        for i in 0..token.len() {
            let mut edited = token.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(edited).unwrap();
            if edited != token {
                assert!(
                    codec.decode(&edited, &binding).is_err(),
                    "edit at {i} accepted"
                );
            }
        }
        assert!(codec.decode("", &binding).is_err());
        assert!(codec.decode("not base64!", &binding).is_err());
    }
}
