//! Integration tests of the Postgres adapter against a real server.
//!
//! Every test gets a database of its own (cloned from a migrated template by
//! `iam_postgres::test_support::TestDatabase`). Needs `DATABASE_URL` (a role that may create
//! databases); `cargo xtask ci` provides one.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions unwrap too: a failure is a test failure"
)]

mod availability;
mod credentials;
mod directory;
mod federated;
mod idempotency;
mod idempotent_creates;
mod listing;
mod service_accounts;
mod tokens;
mod usage;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration as StdDuration, Instant};

use diesel_async::SimpleAsyncConnection;
use iam_domain::audit::{AuditAction, AuditEvent};
use iam_domain::organization::{OrgPolicy, OrgSlug, Organization};
use iam_domain::pagination::{Cursor, Page, PagePosition, PageRequest, PageSize};
use iam_domain::ports::{
    Directory, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyStore,
    InsertError, Readiness, ServiceAccountStore, StoreError, StoredResponse, UpdateOutcome,
};
use iam_domain::principal::Subject;
use iam_domain::resource_id::TargetId;
use iam_domain::resource_id::{OrgId, ProjectId, ServiceAccountId};
use iam_domain::role::RoleSlug;
use iam_domain::scope::{Scope, ScopeTarget};
use iam_domain::service_account::{
    ClientId, Description, DisplayName, Revision, ServiceAccount, ServiceAccountFilter,
    ServiceAccountStatus,
};
use iam_postgres::test_support::TestDatabase;
use iam_postgres::{
    ApplySummary, OrganizationSpec, PgConfig, PgStore, ProjectSpec, RoleSpec, run_migrations,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const ACME: &str = "org-acme";
/// The issuer every organization of [`org_spec`] trusts.
const TRUSTED_ISSUER: &str = "https://issuer.test";
const OTHER: &str = "org-other";

fn org_id(raw: &str) -> OrgId {
    OrgId::parse(raw).unwrap()
}

fn sa_id(raw: &str) -> ServiceAccountId {
    ServiceAccountId::parse(raw).unwrap()
}

fn role(raw: &str) -> RoleSlug {
    RoleSlug::parse(raw).unwrap()
}

/// A fixed instant with a non-zero microsecond part (Postgres keeps microseconds).
fn t0() -> OffsetDateTime {
    datetime!(2026-11-28 09:30:00.123456 UTC)
}

fn org_spec(id: &str, projects: &[&str], roles: &[&str]) -> OrganizationSpec {
    OrganizationSpec {
        organization: Organization {
            id: org_id(id),
            slug: OrgSlug::parse(id).unwrap(),
            policy: OrgPolicy::default(),
        },
        projects: projects
            .iter()
            .map(|p| ProjectSpec {
                id: ProjectId::parse(*p).unwrap(),
                display_name: Some(format!("Project {p}")),
            })
            .collect(),
        roles: roles
            .iter()
            .map(|r| RoleSpec {
                slug: role(r),
                description: None,
            })
            .collect(),
        trusted_issuers: vec![iam_domain::federated_credential::TrustedIssuer {
            issuer: iam_domain::federated_credential::Issuer::parse(TRUSTED_ISSUER).unwrap(),
            jwks_uri: None,
        }],
    }
}

/// A fresh database with two organizations in the directory.
async fn seeded() -> (TestDatabase, PgStore) {
    let db = TestDatabase::create().await;
    let store = db.store();
    store
        .apply_directory(
            &[
                org_spec(ACME, &["web", "db"], &["admin", "compute.deployer"]),
                org_spec(OTHER, &["web"], &["admin"]),
            ],
            false,
            &TestDatabase::operator(),
        )
        .await
        .unwrap();
    (db, store)
}

fn account(tenant: &str, id: &str, created_at: OffsetDateTime, uid: u128) -> ServiceAccount {
    let id = sa_id(id);
    ServiceAccount {
        uid: Uuid::from_u128(uid),
        tenant: org_id(tenant),
        client_id: ClientId::derive(&id, &OrgSlug::parse(tenant).unwrap()),
        id,
        display_name: DisplayName::parse("CI pipeline").unwrap(),
        description: Some(Description::parse("deploys\nthings").unwrap()),
        target: ScopeTarget::parse(Scope::Project, "web").unwrap(),
        roles: vec![role("compute.deployer"), role("admin")],
        status: ServiceAccountStatus::Active,
        created_by: Subject::parse("alice").unwrap(),
        created_at,
        updated_at: created_at,
        revision: Revision::FIRST,
        active_credential_count: 0,
    }
}

fn event(account: &ServiceAccount, action: AuditAction, at: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        tenant: account.tenant.clone(),
        actor: "alice".into(),
        action,
        resource: format!("service-accounts/{}", account.id),
        changed_fields: vec![],
        request_id: format!("req-{}", action.as_str()),
        source_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        at,
    }
}

async fn insert(store: &PgStore, account: &ServiceAccount) {
    store
        .insert(
            account,
            &event(
                account,
                AuditAction::ServiceAccountCreated,
                account.created_at,
            ),
            None,
        )
        .await
        .unwrap();
}

fn cursor_request(size: i64, after: Option<Cursor>) -> PageRequest {
    PageRequest {
        size: PageSize::new(size).unwrap(),
        position: PagePosition::After(after),
    }
}

fn ids(page: &Page<ServiceAccount>) -> Vec<String> {
    page.items.iter().map(|a| a.id.to_string()).collect()
}
