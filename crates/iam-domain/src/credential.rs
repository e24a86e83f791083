//! Credentials: client secrets of a service account, with an expiry.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::client_secret::SecretHash;
use crate::principal::Subject;
use crate::resource_id::{CredentialId, OrgId, ServiceAccountId};
use crate::service_account::Grantee;
use crate::validation::InvalidValue;

/// `active` until `expiresAt`, `expired` from then on (terminal). Computed, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialStatus {
    /// Can mint tokens (if its service account is active).
    Active,
    /// Past its expiry; cannot mint tokens; does not count towards the cap.
    Expired,
}

impl CredentialStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialStatus::Active => "active",
            CredentialStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for CredentialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialStatus {
    type Err = InvalidValue;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "active" => Ok(CredentialStatus::Active),
            "expired" => Ok(CredentialStatus::Expired),
            _ => Err(InvalidValue::new(
                "INVALID_VALUE",
                "must be one of: active, expired",
            )),
        }
    }
}

/// A credential as stored. The secret itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Server-made UUID v4.
    pub uid: Uuid,
    /// The owning organization.
    pub tenant: OrgId,
    /// The service account's `uid` (the row the credential belongs to).
    pub service_account_uid: Uuid,
    /// The service account's id.
    pub service_account_id: ServiceAccountId,
    /// `cred-` + random lowercase base32.
    pub id: CredentialId,
    /// `HMAC-SHA256(pepper, secret)`.
    pub secret_hash: SecretHash,
    /// When it stops working (microsecond precision).
    pub expires_at: OffsetDateTime,
    /// `sub` of the creator.
    pub created_by: Subject,
    /// Creation time (microsecond precision).
    pub created_at: OffsetDateTime,
    /// Time of the last successful token mint.
    pub last_used_at: Option<OffsetDateTime>,
    /// Client IP of the last successful token mint.
    pub last_used_ip: Option<IpAddr>,
}

/// A client-secret credential as a token mint checks it, with the account it belongs to
/// ([`crate::ports::CredentialStore::find_for_mint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintCredential {
    /// The credential's `uid` (its last use is recorded by it).
    pub uid: Uuid,
    /// `HMAC-SHA256(pepper, secret)`.
    pub secret_hash: SecretHash,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// Its account.
    pub account: Grantee,
}

impl MintCredential {
    /// Whether it still works at `now` (as [`Credential::status`]).
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        now < self.expires_at
    }
}

impl Credential {
    /// The status at `now`: expired iff `now >= expires_at`.
    pub fn status(&self, now: OffsetDateTime) -> CredentialStatus {
        if now >= self.expires_at {
            CredentialStatus::Expired
        } else {
            CredentialStatus::Active
        }
    }
}

/// Filter of the credential list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialFilter {
    /// Only credentials with this status at the time of the request.
    pub status: Option<CredentialStatus>,
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_credential_expires_exactly_at_expires_at() {
        let credential = Credential {
            uid: Uuid::nil(),
            tenant: OrgId::parse("org-a").unwrap(),
            service_account_uid: Uuid::nil(),
            service_account_id: ServiceAccountId::parse("sa-a").unwrap(),
            id: CredentialId::parse("cred-a").unwrap(),
            secret_hash: SecretHash([0; 32]),
            expires_at: datetime!(2026-01-01 00:00 UTC),
            created_by: Subject::parse("alice").unwrap(),
            created_at: datetime!(2025-01-01 00:00 UTC),
            last_used_at: None,
            last_used_ip: None,
        };
        let just_before = datetime!(2025-12-31 23:59:59.999999 UTC);
        assert_eq!(credential.status(just_before), CredentialStatus::Active);
        assert_eq!(
            credential.status(credential.expires_at),
            CredentialStatus::Expired
        );
        // What a mint reads of it agrees.
        let minted = MintCredential {
            uid: credential.uid,
            secret_hash: credential.secret_hash.clone(),
            expires_at: credential.expires_at,
            account: Grantee {
                tenant: credential.tenant.clone(),
                client_id: crate::service_account::ClientId::from_stored("sa-a@a.iam".into()),
                target: crate::scope::ScopeTarget::Organization(credential.tenant.clone()),
                roles: Vec::new(),
                status: crate::service_account::ServiceAccountStatus::Active,
            },
        };
        assert!(minted.is_active(just_before));
        assert!(!minted.is_active(credential.expires_at));
    }
}
