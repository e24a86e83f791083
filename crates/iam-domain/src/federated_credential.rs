//! Federated credentials (SPEC §9): an external identity — an issuer and a subject it signs
//! tokens for — that may act as a service account without any stored secret.
//!
//! Operators decide which issuers an organization may trust ([`TrustedIssuer`], from the
//! directory file); tenant administrators bind one issuer's subject to one of their service
//! accounts. A workload holding a token of that issuer for that subject, with one of the
//! credential's audiences, exchanges it for an access token of the account.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::principal::Subject;
use crate::resource_id::{CredentialId, OrgId, ServiceAccountId};
use crate::service_account::Description;
use crate::validation::{InvalidValue, check_length};

/// At most this many federated credentials per service account (SPEC §9).
pub const MAX_PER_ACCOUNT: u32 = 20;

/// At most this many audiences per federated credential.
pub const MAX_AUDIENCES: usize = 10;

/// The prefix of every federated credential id; a token's `credential_id` with it names a
/// federated credential, any other a client secret.
pub const ID_PREFIX: &str = "fc-";

/// Whether `id` names a federated credential (rather than a client secret).
pub fn is_federated(id: &CredentialId) -> bool {
    id.as_str().starts_with(ID_PREFIX)
}

/// An issuer an organization trusts, as the operator configured it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustedIssuer {
    /// The issuer URL, compared exactly with a token's `iss`.
    pub issuer: Issuer,
    /// Where its keys are; `None`: OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
}

/// Checks a string of 1–`max` characters without control characters or spaces.
fn check_token_text(raw: &str, max: usize, what: &str) -> Result<(), InvalidValue> {
    check_length(raw, 1, max)?;
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidValue::new(
            "INVALID_CHARACTERS",
            format!("{what} must not contain spaces or control characters"),
        ));
    }
    Ok(())
}

macro_rules! claim_value {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Maximum length in characters.
            pub const MAX_LEN: usize = 512;
            /// What [`Self::parse`] accepts besides the length, as an ECMA-262 pattern.
            pub const PATTERN: &'static str = "^[^\\s\\u0000-\\u001F\\u007F-\\u009F]+$";

            /// Parses a raw value: 1–512 characters, no spaces or control characters.
            ///
            /// # Errors
            /// `REQUIRED`, `TOO_LONG` or `INVALID_CHARACTERS`.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
                let raw = raw.into();
                check_token_text(&raw, Self::MAX_LEN, $what)?;
                Ok(Self(raw))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

claim_value!(
    /// An issuer (`iss`) as a federated credential names it: matched exactly, byte for byte.
    Issuer,
    "an issuer"
);
claim_value!(
    /// The subject (`sub`) an external issuer signs for: matched exactly.
    ExternalSubject,
    "a subject"
);
claim_value!(
    /// One accepted `aud` value of an external token.
    Audience,
    "an audience"
);

/// A federated credential as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Server-made UUID v4.
    pub uid: Uuid,
    /// The owning organization.
    pub tenant: OrgId,
    /// The service account's `uid`.
    pub service_account_uid: Uuid,
    /// The service account's id.
    pub service_account_id: ServiceAccountId,
    /// `fc-` + random lowercase base32.
    pub id: CredentialId,
    /// The trusted issuer whose tokens it accepts.
    pub issuer: Issuer,
    /// The subject those tokens must name.
    pub subject: ExternalSubject,
    /// A token's `aud` must contain one of these (1–10, distinct, in request order).
    pub audiences: Vec<Audience>,
    /// Free text.
    pub description: Option<Description>,
    /// `sub` of the creator.
    pub created_by: Subject,
    /// Creation time (microsecond precision).
    pub created_at: OffsetDateTime,
    /// Time of the last successful exchange.
    pub last_used_at: Option<OffsetDateTime>,
}

impl FederatedCredential {
    /// Whether a token with audiences `token_audiences` is meant for this credential.
    pub fn accepts_audience(&self, token_audiences: &[String]) -> bool {
        token_audiences
            .iter()
            .any(|aud| self.audiences.iter().any(|a| a.as_str() == aud))
    }
}

/// A new federated credential as requested (validated values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFederatedCredential {
    /// The issuer; must be trusted by the caller's organization.
    pub issuer: Issuer,
    /// The subject.
    pub subject: ExternalSubject,
    /// The audiences; empty: this service's own issuer URL.
    pub audiences: Vec<Audience>,
    /// Free text.
    pub description: Option<Description>,
}

/// `audiences` without repetitions, in first-seen order.
pub fn distinct_audiences(audiences: Vec<Audience>) -> Vec<Audience> {
    let mut seen = std::collections::HashSet::new();
    audiences
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_refuse_spaces_controls_and_overlong_values() {
        assert!(ExternalSubject::parse("system:serviceaccount:ci:deployer").is_ok());
        assert_eq!(ExternalSubject::parse("").unwrap_err().reason, "REQUIRED");
        assert_eq!(
            ExternalSubject::parse("a b").unwrap_err().reason,
            "INVALID_CHARACTERS"
        );
        assert_eq!(
            Issuer::parse("https://x\u{7}").unwrap_err().reason,
            "INVALID_CHARACTERS"
        );
        assert_eq!(
            Audience::parse("a".repeat(513)).unwrap_err().reason,
            "TOO_LONG"
        );
    }

    #[test]
    fn ids_with_the_prefix_are_federated_and_audiences_are_deduplicated() {
        assert!(is_federated(&CredentialId::parse("fc-abc").unwrap()));
        assert!(!is_federated(&CredentialId::parse("cred-abc").unwrap()));
        let a = Audience::parse("a").unwrap();
        let b = Audience::parse("b").unwrap();
        assert_eq!(
            distinct_audiences(vec![a.clone(), b.clone(), a.clone()]),
            vec![a, b]
        );
    }
}
