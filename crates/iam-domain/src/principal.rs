//! The authenticated caller of a request, built from verified token claims.

use std::collections::BTreeSet;
use std::fmt;

use crate::resource_id::{CredentialId, OrgId};
use crate::role::RoleSlug;
use crate::scope::ScopeTarget;
use crate::validation::{InvalidValue, check_length};

/// Who a token speaks for (`sub`): 1–255 characters without control characters. Recorded as
/// `createdBy` and as the actor of audit events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    /// Longest accepted subject, in characters.
    pub const MAX_LEN: usize = 255;

    /// Parses a `sub` claim (or a stored `createdBy`).
    ///
    /// # Errors
    /// `REQUIRED`, `TOO_LONG`, or `INVALID_CHARACTERS` for control characters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        check_length(&raw, 1, Self::MAX_LEN)?;
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "INVALID_CHARACTERS",
                "must not contain control characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The subject as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of principal a token represents (`principal_type` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A human user.
    User,
    /// An API key.
    ApiKey,
    /// A service account authenticated with a client secret.
    ServiceAccount,
}

impl PrincipalKind {
    /// The wire name of the `principal_type` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::ServiceAccount => "service_account",
        }
    }

    /// Parses the `principal_type` claim.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(PrincipalKind::User),
            "api_key" => Some(PrincipalKind::ApiKey),
            "service_account" => Some(PrincipalKind::ServiceAccount),
            _ => None,
        }
    }
}

/// The caller. Its tenant comes only from a verified token, never from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`: who the caller is (recorded as `createdBy` and in audit events).
    pub subject: Subject,
    /// `iss`: who vouches for the caller (this service or an external issuer).
    pub issuer: String,
    /// `tenant_id`: the organization the caller belongs to.
    pub tenant: OrgId,
    /// `scope` and `scope_id`: what the token is scoped to.
    pub target: ScopeTarget,
    /// `roles` the caller holds within its scope. Claims that are not valid slugs are dropped.
    pub roles: BTreeSet<RoleSlug>,
    /// `principal_type`.
    pub kind: PrincipalKind,
    /// `jti`: the token's id (what revocation names).
    pub token_id: String,
    /// `credential_id`: for service-account tokens, the credential they were minted with.
    pub credential_id: Option<CredentialId>,
}

impl Principal {
    /// Whether the token is scoped to the caller's whole organization.
    fn scoped_to_own_organization(&self) -> bool {
        matches!(&self.target, ScopeTarget::Organization(org) if *org == self.tenant)
    }

    /// A tenant administrator: scoped to its whole organization and holding `admin_role`.
    pub fn is_tenant_admin(&self, admin_role: &RoleSlug) -> bool {
        self.scoped_to_own_organization() && self.roles.contains(admin_role)
    }

    /// Whether the caller holds `role` at `target`, a target of its organization.
    ///
    /// An organization-scoped caller holds its roles in every project of the org; a
    /// project-scoped caller only in its own project.
    pub fn holds(&self, role: &RoleSlug, target: &ScopeTarget) -> bool {
        let in_scope = match &self.target {
            ScopeTarget::Organization(_) => self.scoped_to_own_organization(),
            own @ ScopeTarget::Project(_) => own == target,
        };
        in_scope && self.roles.contains(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource_id::ProjectId;

    fn org(id: &str) -> ScopeTarget {
        ScopeTarget::Organization(OrgId::parse(id).unwrap())
    }

    fn project(id: &str) -> ScopeTarget {
        ScopeTarget::Project(ProjectId::parse(id).unwrap())
    }

    fn principal(target: ScopeTarget, roles: &[&str]) -> Principal {
        Principal {
            subject: Subject::parse("alice").unwrap(),
            issuer: "urn:test".into(),
            tenant: OrgId::parse("org-acme").unwrap(),
            target,
            roles: roles.iter().map(|r| RoleSlug::parse(*r).unwrap()).collect(),
            kind: PrincipalKind::User,
            token_id: "jti-1".into(),
            credential_id: None,
        }
    }

    #[test]
    fn admin_needs_org_scope_on_own_org_and_the_admin_role() {
        let admin = RoleSlug::parse("admin").unwrap();
        assert!(principal(org("org-acme"), &["admin"]).is_tenant_admin(&admin));
        assert!(!principal(org("org-acme"), &["viewer"]).is_tenant_admin(&admin));
        assert!(!principal(org("org-other"), &["admin"]).is_tenant_admin(&admin));
        assert!(!principal(project("org-acme"), &["admin"]).is_tenant_admin(&admin));
    }

    #[test]
    fn org_scoped_roles_hold_in_every_project_project_roles_only_in_theirs() {
        let deployer = RoleSlug::parse("compute.deployer").unwrap();
        let at_org = principal(org("org-acme"), &["compute.deployer"]);
        assert!(at_org.holds(&deployer, &project("web")));
        assert!(at_org.holds(&deployer, &org("org-acme")));
        let in_web = principal(project("web"), &["compute.deployer"]);
        assert!(in_web.holds(&deployer, &project("web")));
        assert!(!in_web.holds(&deployer, &project("db")));
        assert!(!in_web.holds(&deployer, &org("org-acme")));
        let foreign_org = principal(org("org-other"), &["compute.deployer"]);
        assert!(!foreign_org.holds(&deployer, &project("web")));
    }

    #[test]
    fn subjects_are_1_to_255_characters_without_control_characters() {
        assert!(Subject::parse("alice@acme.example").is_ok());
        assert!(Subject::parse("é".repeat(255)).is_ok());
        for (bad, reason) in [
            (String::new(), "REQUIRED"),
            ("x".repeat(256), "TOO_LONG"),
            ("a\u{0}b".to_owned(), "INVALID_CHARACTERS"),
        ] {
            assert_eq!(Subject::parse(bad).unwrap_err().reason, reason);
        }
    }
}
