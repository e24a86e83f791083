//! The authenticated caller of a request, built from verified token claims.

use std::collections::BTreeSet;

use crate::resource_id::{CredentialId, OrgId};
use crate::role::RoleSlug;
use crate::scope::Scope;

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
    pub subject: String,
    /// `iss`: who vouches for the caller (this service or an external issuer).
    pub issuer: String,
    /// `tenant_id`: the organization the caller belongs to.
    pub tenant: OrgId,
    /// `scope`: the level the token is scoped to.
    pub scope: Scope,
    /// `scope_id`: the organization or project id of that level.
    pub scope_id: String,
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
    /// A tenant administrator: scoped to its whole organization and holding `admin_role`.
    pub fn is_tenant_admin(&self, admin_role: &RoleSlug) -> bool {
        self.scope == Scope::Organization
            && self.scope_id == self.tenant.as_str()
            && self.roles.contains(admin_role)
    }

    /// Whether the caller holds `role` in the given scope of its organization.
    ///
    /// An organization-scoped caller holds its roles in every project of the org; a
    /// project-scoped caller only in its own project.
    pub fn holds(&self, role: &RoleSlug, scope: Scope, scope_id: &str) -> bool {
        let in_scope = match self.scope {
            Scope::Organization => self.scope_id == self.tenant.as_str(),
            Scope::Project => scope == Scope::Project && self.scope_id == scope_id,
        };
        in_scope && self.roles.contains(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scope: Scope, scope_id: &str, roles: &[&str]) -> Principal {
        Principal {
            subject: "alice".into(),
            issuer: "urn:test".into(),
            tenant: OrgId::parse("org-acme").unwrap(),
            scope,
            scope_id: scope_id.into(),
            roles: roles.iter().map(|r| RoleSlug::parse(*r).unwrap()).collect(),
            kind: PrincipalKind::User,
            token_id: "jti-1".into(),
            credential_id: None,
        }
    }

    #[test]
    fn admin_needs_org_scope_on_own_org_and_the_admin_role() {
        let admin = RoleSlug::parse("admin").unwrap();
        assert!(principal(Scope::Organization, "org-acme", &["admin"]).is_tenant_admin(&admin));
        assert!(!principal(Scope::Organization, "org-acme", &["viewer"]).is_tenant_admin(&admin));
        assert!(!principal(Scope::Organization, "org-other", &["admin"]).is_tenant_admin(&admin));
        assert!(!principal(Scope::Project, "org-acme", &["admin"]).is_tenant_admin(&admin));
    }

    #[test]
    fn org_scoped_roles_hold_in_every_project_project_roles_only_in_theirs() {
        let deployer = RoleSlug::parse("compute.deployer").unwrap();
        let org = principal(Scope::Organization, "org-acme", &["compute.deployer"]);
        assert!(org.holds(&deployer, Scope::Project, "web"));
        assert!(org.holds(&deployer, Scope::Organization, "org-acme"));
        let project = principal(Scope::Project, "web", &["compute.deployer"]);
        assert!(project.holds(&deployer, Scope::Project, "web"));
        assert!(!project.holds(&deployer, Scope::Project, "db"));
        assert!(!project.holds(&deployer, Scope::Organization, "org-acme"));
    }
}
