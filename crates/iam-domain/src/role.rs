//! Role slugs such as `compute.deployer` or `storage-writer`.

use std::fmt;

use crate::validation::{InvalidValue, check_length};

/// An org-defined role slug: lowercase words of `[a-z0-9]` separated by `.` or `-`, 1–128 chars.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleSlug(String);

impl RoleSlug {
    /// Maximum length of a role slug.
    pub const MAX_LEN: usize = 128;

    /// The slug pattern as a regular expression (for documents and schemas; [`Self::parse`]
    /// is what enforces it).
    pub const PATTERN: &'static str = "^[a-z0-9]+([.-][a-z0-9]+)*$";

    /// Parses a raw role slug.
    ///
    /// # Errors
    /// `REQUIRED`, `TOO_LONG` or `INVALID_FORMAT` when `raw` is not a valid slug.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        check_length(&raw, 1, Self::MAX_LEN)?;
        let words_ok = raw.split(['.', '-']).all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if words_ok {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(
                "INVALID_FORMAT",
                "must be lowercase words of letters and digits separated by '.' or '-'",
            ))
        }
    }

    /// The slug as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_and_dashed_words() {
        for ok in ["admin", "compute.deployer", "storage-writer", "a.b-c.d2"] {
            assert!(RoleSlug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_empty_words_uppercase_and_overlong_slugs() {
        for bad in ["", ".a", "a.", "a..b", "Admin", "a b", "a_b"] {
            assert!(RoleSlug::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            RoleSlug::parse("a".repeat(129)).unwrap_err().reason,
            "TOO_LONG"
        );
    }
}
