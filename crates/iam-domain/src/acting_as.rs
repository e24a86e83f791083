//! Acting as a service account (SPEC §3).
//!
//! Whoever gives a service account a way to authenticate can act with every role it holds: a
//! client secret (or, later, a federated credential) mints tokens carrying the account's roles,
//! and re-enabling a disabled account revives the tokens and secrets it already has. Scope-down
//! forbids handing out roles one does not hold, so these operations require the caller to hold
//! **every** role of the account, in the account's scope. Without this rule an admin holding
//! only `admin` could mint a secret for an account that also holds `storage.writer` and so gain
//! `storage.writer`.
//!
//! Renaming, disabling, deleting and reading an account give nobody a new way in, so they need
//! only the tenant-admin rule.

use crate::principal::Principal;
use crate::service_account::ServiceAccount;
use crate::violation::{Field, Violation, ViolationReason};

/// The roles of `account` that `caller` does not hold in the account's scope, one
/// [`ViolationReason::RoleNotHeld`] each, with `field` `roles[i]` (the index in the account's
/// role list). Empty when `caller` may act as `account`.
///
/// The one place this rule is decided: creating a credential of any kind and re-enabling an
/// account both call it.
pub fn acting_as_violations(caller: &Principal, account: &ServiceAccount) -> Vec<Violation> {
    account
        .roles
        .iter()
        .enumerate()
        .filter(|(_, role)| !caller.holds(role, &account.target))
        .map(|(index, role)| Violation {
            reason: ViolationReason::RoleNotHeld,
            field: Some(Field::Role(index)),
            message: format!(
                "you do not hold role {role}, which service account {} holds, so you may not \
                 act as it",
                account.id
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::fakes::{principal, role};
    use crate::principal::Subject;
    use crate::resource_id::{OrgId, ServiceAccountId};
    use crate::scope::{Scope, ScopeTarget};
    use crate::service_account::{
        ClientId, DisplayName, Revision, ServiceAccountStatus, dedup_roles,
    };

    fn account(scope: Scope, scope_id: &str, roles: &[&str]) -> ServiceAccount {
        let target = ScopeTarget::parse(scope, scope_id).unwrap();
        let id = ServiceAccountId::parse("sa-ci").unwrap();
        ServiceAccount {
            uid: Uuid::nil(),
            tenant: OrgId::parse("org-acme").unwrap(),
            client_id: ClientId::from_stored("sa-ci@acme.iam".into()),
            id,
            display_name: DisplayName::parse("CI").unwrap(),
            description: None,
            target,
            roles: dedup_roles(roles.iter().map(|r| role(r)).collect()),
            status: ServiceAccountStatus::Active,
            created_by: Subject::parse("bob").unwrap(),
            created_at: datetime!(2026-01-01 00:00 UTC),
            updated_at: datetime!(2026-01-01 00:00 UTC),
            revision: Revision::FIRST,
            active_credential_count: 0,
        }
    }

    fn missing(caller: &Principal, account: &ServiceAccount) -> Vec<(Field, &'static str)> {
        acting_as_violations(caller, account)
            .into_iter()
            .map(|v| (v.field.unwrap(), v.reason.code()))
            .collect()
    }

    #[test]
    fn the_caller_must_hold_every_role_of_the_account() {
        let strong = account(
            Scope::Organization,
            "org-acme",
            &["admin", "storage.writer"],
        );
        let admin_only = principal("org-acme", &["admin"]);
        assert_eq!(
            missing(&admin_only, &strong),
            [(Field::Role(1), "ROLE_NOT_HELD")]
        );
        let both = principal("org-acme", &["admin", "storage.writer"]);
        assert!(missing(&both, &strong).is_empty());
        let neither = principal("org-acme", &["compute.deployer"]);
        assert_eq!(
            missing(&neither, &strong),
            [
                (Field::Role(0), "ROLE_NOT_HELD"),
                (Field::Role(1), "ROLE_NOT_HELD"),
            ]
        );
    }

    #[test]
    fn an_account_without_roles_may_be_acted_as_by_anyone_of_its_scope() {
        let empty = account(Scope::Organization, "org-acme", &[]);
        assert!(missing(&principal("org-acme", &["admin"]), &empty).is_empty());
    }

    #[test]
    fn roles_count_only_in_the_accounts_scope() {
        let in_web = account(Scope::Project, "web", &["storage.writer"]);
        // Organization-scoped roles hold in every project of the org.
        assert!(missing(&principal("org-acme", &["storage.writer"]), &in_web).is_empty());
        // A project-scoped caller holds its roles only in its own project.
        let mut db_writer = principal("org-acme", &["storage.writer"]);
        db_writer.target = ScopeTarget::parse(Scope::Project, "db").unwrap();
        assert_eq!(
            missing(&db_writer, &in_web),
            [(Field::Role(0), "ROLE_NOT_HELD")]
        );
        let org_wide = account(Scope::Organization, "org-acme", &["storage.writer"]);
        db_writer.target = ScopeTarget::parse(Scope::Project, "web").unwrap();
        assert_eq!(
            missing(&db_writer, &org_wide),
            [(Field::Role(0), "ROLE_NOT_HELD")],
            "a project role does not reach an organization-scoped account"
        );
    }
}
