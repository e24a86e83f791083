//! [`Directory`] on `organizations`, `projects`, `roles` and `trusted_issuers`, and (module
//! `apply`) the operator's declarative [`PgStore::apply_directory`] that writes them
//! (`iam-server directory apply FILE`).

mod apply;

use std::collections::{BTreeSet, HashSet};

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use iam_domain::federated_credential::{Issuer, TrustedIssuer};
use iam_domain::organization::{OrgPolicy, OrgSlug, Organization};
use iam_domain::ports::{Directory, StoreError};
use iam_domain::resource_id::{OrgId, ProjectId};
use iam_domain::role::RoleSlug;
use iam_domain::scope::Scope;
use time::{Duration, OffsetDateTime};

use crate::error::{DbError, corrupt};
use crate::schema::{organizations, projects, roles, trusted_issuers};
use crate::store::PgStore;

/// One organization of a directory file: the organization with its policy, and the complete
/// lists of its projects, roles and trusted issuers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationSpec {
    /// The organization, its slug and policy.
    pub organization: Organization,
    /// Its projects.
    pub projects: Vec<ProjectSpec>,
    /// Its role catalog.
    pub roles: Vec<RoleSpec>,
    /// The external issuers its federated credentials may name (SPEC §9).
    pub trusted_issuers: Vec<TrustedIssuer>,
}

/// A project of an [`OrganizationSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSpec {
    /// Unique within the organization.
    pub id: ProjectId,
    /// Optional human-readable name.
    pub display_name: Option<String>,
}

/// A role of an [`OrganizationSpec`]'s catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// Unique within the organization.
    pub slug: RoleSlug,
    /// Optional explanation for operators.
    pub description: Option<String>,
}

/// What [`PgStore::apply_directory`] changed. Rows that already matched the file are not
/// counted, so applying the same file twice reports zeros the second time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplySummary {
    /// Organizations created or changed.
    pub organizations_upserted: u64,
    /// Projects created or changed.
    pub projects_upserted: u64,
    /// Roles created or changed.
    pub roles_upserted: u64,
    /// Projects deleted because the file no longer lists them (`prune` only).
    pub projects_pruned: u64,
    /// Roles deleted because the file no longer lists them (`prune` only).
    pub roles_pruned: u64,
    /// Trusted issuers added or changed.
    pub trusted_issuers_upserted: u64,
    /// Trusted issuers deleted because the file no longer lists them (`prune` only).
    pub trusted_issuers_pruned: u64,
}

/// Who applies a directory file, and when: what its audit events record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The actor of the events (`operator:{name}`).
    pub actor: String,
    /// Shared by every event of one apply (stored as the events' request id).
    pub run_id: String,
    /// When the apply ran.
    pub at: OffsetDateTime,
}

/// An `organizations` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations, check_for_backend(Pg))]
struct OrganizationRow {
    id: String,
    slug: String,
    allowed_scopes: Vec<Option<String>>,
    credential_default_lifetime_seconds: i64,
    credential_max_lifetime_seconds: i64,
    max_active_credentials: i32,
}

impl OrganizationRow {
    fn from_domain(org: &Organization) -> Result<Self, StoreError> {
        let policy = &org.policy;
        Ok(Self {
            id: org.id.as_str().to_owned(),
            slug: org.slug.as_str().to_owned(),
            allowed_scopes: policy
                .allowed_scopes()
                .iter()
                .map(|s| Some(s.as_str().to_owned()))
                .collect(),
            credential_default_lifetime_seconds: policy
                .credential_default_lifetime()
                .whole_seconds(),
            credential_max_lifetime_seconds: policy.credential_max_lifetime().whole_seconds(),
            max_active_credentials: i32::try_from(policy.max_active_credentials()).map_err(
                |_| {
                    corrupt(format_args!(
                        "organization {}: credential cap too large",
                        org.id
                    ))
                },
            )?,
        })
    }

    fn into_domain(self) -> Result<Organization, StoreError> {
        let id = self.id;
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            corrupt(format_args!("organization {id}: {field}: {e}"))
        };
        let scopes = self
            .allowed_scopes
            .iter()
            .map(|scope| {
                scope
                    .as_deref()
                    .ok_or_else(|| bad("allowed_scopes", &"NULL element"))?
                    .parse::<Scope>()
                    .map_err(|e| bad("allowed_scopes", &e))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let cap = u32::try_from(self.max_active_credentials)
            .map_err(|e| bad("max_active_credentials", &e))?;
        let policy = OrgPolicy::new(
            scopes,
            Duration::seconds(self.credential_default_lifetime_seconds),
            Duration::seconds(self.credential_max_lifetime_seconds),
            cap,
        )
        .map_err(|e| bad("policy", &e))?;
        Ok(Organization {
            slug: OrgSlug::parse(self.slug).map_err(|e| bad("slug", &e))?,
            id: OrgId::parse(id.clone()).map_err(|e| bad("id", &e))?,
            policy,
        })
    }
}

/// A `projects` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = projects, check_for_backend(Pg))]
struct ProjectRow {
    org_id: String,
    id: String,
    display_name: Option<String>,
}

/// A `roles` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = roles, check_for_backend(Pg))]
struct RoleRow {
    org_id: String,
    slug: String,
    description: Option<String>,
}

/// A `trusted_issuers` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = trusted_issuers, check_for_backend(Pg))]
pub(crate) struct TrustedIssuerRow {
    pub(crate) org_id: String,
    pub(crate) issuer: String,
    pub(crate) jwks_uri: Option<String>,
}

impl TrustedIssuerRow {
    pub(crate) fn into_domain(self) -> Result<TrustedIssuer, StoreError> {
        Ok(TrustedIssuer {
            issuer: Issuer::parse(self.issuer)
                .map_err(|e| corrupt(format_args!("trusted issuer of {}: {e}", self.org_id)))?,
            jwks_uri: self.jwks_uri,
        })
    }
}

impl Directory for PgStore {
    async fn organization(&self, tenant: &OrgId) -> Result<Option<Organization>, StoreError> {
        let mut conn = self.conn().await?;
        let row = organizations::table
            .find(tenant.as_str())
            .select(OrganizationRow::as_select())
            .first::<OrganizationRow>(&mut conn)
            .await
            .optional()
            .map_err(DbError::from)?;
        row.map(OrganizationRow::into_domain).transpose()
    }

    async fn project_exists(
        &self,
        tenant: &OrgId,
        project: &ProjectId,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let exists = diesel::select(diesel::dsl::exists(
            projects::table.find((tenant.as_str(), project.as_str())),
        ))
        .get_result::<bool>(&mut conn)
        .await
        .map_err(DbError::from)?;
        Ok(exists)
    }

    async fn missing_roles(
        &self,
        tenant: &OrgId,
        wanted: &[RoleSlug],
    ) -> Result<Vec<RoleSlug>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let slugs: Vec<&str> = wanted.iter().map(RoleSlug::as_str).collect();
        let mut conn = self.conn().await?;
        let found: HashSet<String> = roles::table
            .filter(roles::org_id.eq(tenant.as_str()))
            .filter(roles::slug.eq_any(&slugs))
            .select(roles::slug)
            .load::<String>(&mut conn)
            .await
            .map_err(DbError::from)?
            .into_iter()
            .collect();
        Ok(wanted
            .iter()
            .filter(|role| !found.contains(role.as_str()))
            .cloned()
            .collect())
    }

    async fn trusted_issuer(
        &self,
        tenant: &OrgId,
        issuer: &str,
    ) -> Result<Option<TrustedIssuer>, StoreError> {
        let mut conn = self.conn().await?;
        let row = trusted_issuers::table
            .find((tenant.as_str(), issuer))
            .select(TrustedIssuerRow::as_select())
            .first::<TrustedIssuerRow>(&mut conn)
            .await
            .optional()
            .map_err(DbError::from)?;
        row.map(TrustedIssuerRow::into_domain).transpose()
    }
}
