//! The service account: a machine principal of one organization, and its value types.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::organization::OrgSlug;
use crate::principal::Subject;
use crate::resource_id::{OrgId, ServiceAccountId, TargetId};
use crate::role::RoleSlug;
use crate::scope::{Scope, ScopeTarget};
use crate::validation::{InvalidValue, check_length};

/// Human-readable name, 1–255 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Maximum length in characters.
    pub const MAX_LEN: usize = 255;
    /// What [`Self::parse`] accepts besides the length, as an ECMA-262 pattern (for API
    /// descriptions): no control character (Unicode `Cc`), and one that is not white space.
    pub const PATTERN: &'static str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";

    /// Parses a display name.
    ///
    /// # Errors
    /// `REQUIRED` when empty or blank, `TOO_LONG`, or `INVALID_CHARACTERS` for control characters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        check_length(&raw, 1, Self::MAX_LEN)?;
        if raw.trim().is_empty() {
            return Err(InvalidValue::new("REQUIRED", "must not be blank"));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "INVALID_CHARACTERS",
                "must not contain control characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-text description, at most 1024 characters; line breaks and tabs allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Maximum length in characters.
    pub const MAX_LEN: usize = 1024;
    /// What [`Self::parse`] accepts besides the length, as an ECMA-262 pattern (for API
    /// descriptions): no control character except line feed, carriage return and tab.
    pub const PATTERN: &'static str =
        "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$";

    /// Parses a description. The empty string is not a description (it means "none").
    ///
    /// # Errors
    /// `REQUIRED` when empty, `TOO_LONG`, or `INVALID_CHARACTERS` for control characters
    /// other than line feed, carriage return and tab.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        check_length(&raw, 1, Self::MAX_LEN)?;
        if raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(InvalidValue::new(
                "INVALID_CHARACTERS",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(raw))
    }

    /// The description as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a service account may authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceAccountStatus {
    /// May mint tokens.
    Active,
    /// Keeps its credentials but cannot mint tokens; its tokens are refused.
    Disabled,
}

impl ServiceAccountStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceAccountStatus::Active => "active",
            ServiceAccountStatus::Disabled => "disabled",
        }
    }
}

impl fmt::Display for ServiceAccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceAccountStatus {
    type Err = InvalidValue;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "active" => Ok(ServiceAccountStatus::Active),
            "disabled" => Ok(ServiceAccountStatus::Disabled),
            _ => Err(InvalidValue::new(
                "INVALID_VALUE",
                "must be one of: active, disabled",
            )),
        }
    }
}

/// The `OAuth2` client id of a service account: `{id}@{orgSlug}.iam`. Server-made, immutable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Derives the client id of account `id` in the organization with slug `slug`.
    pub fn derive(id: &ServiceAccountId, slug: &OrgSlug) -> Self {
        Self(format!("{id}@{slug}.iam"))
    }

    /// Rebuilds a stored client id.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    /// Parses a client id presented by a client: `{id}@{slug}.iam`, both parts resource ids.
    ///
    /// # Errors
    /// `INVALID_FORMAT` when `raw` has another shape.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let invalid = || InvalidValue::new("INVALID_FORMAT", "must look like {id}@{org}.iam");
        let (id, rest) = raw.split_once('@').ok_or_else(invalid)?;
        let slug = rest.strip_suffix(".iam").ok_or_else(invalid)?;
        crate::resource_id::check(id).map_err(|_| invalid())?;
        crate::resource_id::check(slug).map_err(|_| invalid())?;
        Ok(Self(raw.to_owned()))
    }

    /// The client id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Monotonic revision of a service account, bumped by every change; the basis of its `ETag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of a newly created account.
    pub const FIRST: Revision = Revision(1);

    /// The revision after one more change.
    #[must_use]
    pub fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }
}

/// A service account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Server-made UUID v4, immutable.
    pub uid: Uuid,
    /// The owning organization.
    pub tenant: OrgId,
    /// Unique within the organization.
    pub id: ServiceAccountId,
    /// Human-readable name.
    pub display_name: DisplayName,
    /// Optional free text.
    pub description: Option<Description>,
    /// Server-made, immutable.
    pub client_id: ClientId,
    /// The organization or the project of it the account is scoped to; immutable.
    pub target: ScopeTarget,
    /// Assigned roles, without duplicates, in the order they were given.
    pub roles: Vec<RoleSlug>,
    /// Active or disabled.
    pub status: ServiceAccountStatus,
    /// `sub` of the principal that created it.
    pub created_by: Subject,
    /// Creation time (microsecond precision).
    pub created_at: OffsetDateTime,
    /// Time of the last change (microsecond precision).
    pub updated_at: OffsetDateTime,
    /// Revision for optimistic concurrency and `ETag`.
    pub revision: Revision,
    /// Number of non-expired credentials (0 until credentials exist).
    pub active_credential_count: u32,
}

/// What a token is minted from, of a service account: whom it names, and what it may
/// carry. Token mints and exchanges read only this much of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantee {
    /// The owning organization.
    pub tenant: OrgId,
    /// The token's `sub`.
    pub client_id: ClientId,
    /// The scope a token may carry (or narrow).
    pub target: ScopeTarget,
    /// The roles a token may carry (or narrow to).
    pub roles: Vec<RoleSlug>,
    /// Only an active account gets tokens.
    pub status: ServiceAccountStatus,
}

impl From<ServiceAccount> for Grantee {
    fn from(account: ServiceAccount) -> Self {
        Self {
            tenant: account.tenant,
            client_id: account.client_id,
            target: account.target,
            roles: account.roles,
            status: account.status,
        }
    }
}

/// Filters of the list endpoint; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountFilter {
    /// Only accounts with this scope.
    pub scope: Option<Scope>,
    /// Only accounts scoped to an organization or project with this id.
    pub target_id: Option<TargetId>,
    /// Only accounts with this status.
    pub status: Option<ServiceAccountStatus>,
}

/// The mutable fields of a PATCH; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountPatch {
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<Description>>,
    /// Replaces the whole role list.
    pub roles: Option<Vec<RoleSlug>>,
    /// New status.
    pub status: Option<ServiceAccountStatus>,
}

impl ServiceAccountPatch {
    /// Whether the patch names no field at all (the contract answers such a PATCH with 400).
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none()
            && self.description.is_none()
            && self.roles.is_none()
            && self.status.is_none()
    }

    /// Applies the patch to `account`, returning the names of the fields that changed.
    pub(crate) fn apply(self, account: &mut ServiceAccount) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if let Some(name) = self.display_name
            && name != account.display_name
        {
            account.display_name = name;
            changed.push("displayName");
        }
        if let Some(description) = self.description
            && description != account.description
        {
            account.description = description;
            changed.push("description");
        }
        if let Some(roles) = self.roles {
            let roles = dedup_roles(roles);
            if roles != account.roles {
                account.roles = roles;
                changed.push("roles");
            }
        }
        if let Some(status) = self.status
            && status != account.status
        {
            account.status = status;
            changed.push("status");
        }
        changed
    }
}

/// Removes repeated roles, keeping the first occurrence of each.
pub(crate) fn dedup_roles(roles: Vec<RoleSlug>) -> Vec<RoleSlug> {
    let mut seen = std::collections::HashSet::new();
    roles
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_rejects_blank_control_and_overlong() {
        assert_eq!(DisplayName::parse("").unwrap_err().reason, "REQUIRED");
        assert_eq!(DisplayName::parse("   ").unwrap_err().reason, "REQUIRED");
        assert_eq!(
            DisplayName::parse("a\u{7}b").unwrap_err().reason,
            "INVALID_CHARACTERS"
        );
        assert_eq!(
            DisplayName::parse("é".repeat(256)).unwrap_err().reason,
            "TOO_LONG"
        );
        assert!(DisplayName::parse("é".repeat(255)).is_ok());
    }

    #[test]
    fn description_allows_line_breaks_and_caps_length() {
        assert!(Description::parse("line one\nline two\tend").is_ok());
        assert_eq!(
            Description::parse("x".repeat(1025)).unwrap_err().reason,
            "TOO_LONG"
        );
        assert_eq!(
            Description::parse("a\u{0}").unwrap_err().reason,
            "INVALID_CHARACTERS"
        );
    }

    #[test]
    fn client_id_is_id_at_org_slug_dot_iam() {
        let id = ServiceAccountId::parse("sa-pipeline-prod").unwrap();
        let slug = OrgSlug::parse("myorg").unwrap();
        assert_eq!(
            ClientId::derive(&id, &slug).as_str(),
            "sa-pipeline-prod@myorg.iam"
        );
    }

    #[test]
    fn status_parses_only_the_two_wire_names() {
        assert_eq!("active".parse(), Ok(ServiceAccountStatus::Active));
        assert_eq!("disabled".parse(), Ok(ServiceAccountStatus::Disabled));
        assert!("Active".parse::<ServiceAccountStatus>().is_err());
    }
}
