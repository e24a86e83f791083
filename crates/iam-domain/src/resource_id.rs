//! Resource identifiers of organizations, projects, service accounts and credentials.
//!
//! All of them share the contract's pattern `^[a-z]([-a-z0-9]*[a-z0-9])?$`, 1–63 characters, but
//! are distinct types so one can never be passed where another is expected.

use std::fmt;

use crate::validation::InvalidValue;

/// Maximum length of a resource id.
pub const MAX_LEN: usize = 63;

/// The resource id pattern as a regular expression (for documents and schemas; [`check`] is
/// what enforces it).
pub const PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Checks the resource id pattern `^[a-z]([-a-z0-9]*[a-z0-9])?$` with length 1–63.
///
/// # Errors
/// `REQUIRED` when empty, `TOO_LONG` past 63 characters, `INVALID_FORMAT` otherwise.
pub fn check(raw: &str) -> Result<(), InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue::new("REQUIRED", "must not be empty"));
    }
    if raw.len() > MAX_LEN {
        return Err(InvalidValue::new(
            "TOO_LONG",
            format!("must be at most {MAX_LEN} characters long"),
        ));
    }
    let bytes = raw.as_bytes();
    let first_ok = bytes[0].is_ascii_lowercase();
    let last_ok =
        bytes[bytes.len() - 1].is_ascii_lowercase() || bytes[bytes.len() - 1].is_ascii_digit();
    let body_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if first_ok && last_ok && body_ok {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "INVALID_FORMAT",
            "must start with a lowercase letter, contain only lowercase letters, digits and '-', \
             and not end with '-'",
        ))
    }
}

macro_rules! resource_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses a raw id.
            ///
            /// # Errors
            /// [`InvalidValue`] when `raw` does not match the resource id pattern.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
                let raw = raw.into();
                check(&raw)?;
                Ok(Self(raw))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

resource_id!(
    /// An organization (tenant) id such as `org-acme`.
    OrgId
);
resource_id!(
    /// A project id, unique within its organization.
    ProjectId
);
resource_id!(
    /// A service account id such as `sa-pipeline-prod`, unique within its organization.
    ServiceAccountId
);
resource_id!(
    /// A credential id such as `cred-k3j2m4n5p6q7r2s3`, unique within its organization.
    CredentialId
);
resource_id!(
    /// The id of a scope target — an organization or a project — where the scope is not
    /// known, as the `scopeId` list filter names it.
    TargetId
);

impl TargetId {
    /// The id of a target already parsed as an [`OrgId`] or [`ProjectId`].
    pub(crate) fn from_valid(id: &str) -> Self {
        Self(id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ids_matching_the_pattern() {
        for ok in ["a", "org-acme", "sa-1", "a1", "x".repeat(63).as_str()] {
            assert!(ServiceAccountId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_ids_outside_the_pattern_with_a_reason() {
        let cases = [
            ("", "REQUIRED"),
            ("1abc", "INVALID_FORMAT"),
            ("-abc", "INVALID_FORMAT"),
            ("abc-", "INVALID_FORMAT"),
            ("Abc", "INVALID_FORMAT"),
            ("a_b", "INVALID_FORMAT"),
            ("a.b", "INVALID_FORMAT"),
            ("é", "INVALID_FORMAT"),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                ServiceAccountId::parse(raw).unwrap_err().reason,
                reason,
                "{raw:?}"
            );
        }
        assert_eq!(OrgId::parse("x".repeat(64)).unwrap_err().reason, "TOO_LONG");
    }
}
