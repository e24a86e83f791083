//! [`PgStore::apply_directory`]: the operator's declarative write of the directory
//! (`iam-server directory apply FILE`), with its audit events.

use std::collections::HashSet;

use diesel::dsl::now;
use diesel::prelude::*;
use diesel::query_dsl::methods;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use iam_domain::audit::{AuditAction, AuditEvent};
use iam_domain::ports::StoreError;
use iam_domain::resource_id::OrgId;

use super::{
    ApplySummary, Operator, OrganizationRow, OrganizationSpec, ProjectRow, RoleRow,
    TrustedIssuerRow,
};
use crate::audit;
use crate::error::DbError;
use crate::schema::{organizations, projects, roles, trusted_issuers};
use crate::store::PgStore;

/// The advisory lock that serializes directory applies (any constant unique to this use).
const DIRECTORY_APPLY_LOCK: i64 = 0x1a3d_1ec7_0001;

/// Refuses a spec that lists the same project, role or trusted issuer twice (the file is
/// ambiguous).
fn check_unique(spec: &OrganizationSpec) -> Result<(), StoreError> {
    let org = &spec.organization.id;
    let mut seen = HashSet::new();
    if let Some(dup) = spec.projects.iter().find(|p| !seen.insert(&p.id)) {
        return Err(StoreError::Unexpected(
            format!("organization {org} lists project {} twice", dup.id).into(),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = spec.roles.iter().find(|r| !seen.insert(&r.slug)) {
        return Err(StoreError::Unexpected(
            format!("organization {org} lists role {} twice", dup.slug).into(),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = spec
        .trusted_issuers
        .iter()
        .find(|t| !seen.insert(&t.issuer))
    {
        return Err(StoreError::Unexpected(
            format!(
                "organization {org} lists trusted issuer {} twice",
                dup.issuer
            )
            .into(),
        ));
    }
    Ok(())
}

fn count(rows: usize) -> u64 {
    u64::try_from(rows).unwrap_or(u64::MAX)
}

/// The rows one [`OrganizationSpec`] asks for.
struct SpecRows {
    org: OrgId,
    organization: OrganizationRow,
    projects: Vec<ProjectRow>,
    roles: Vec<RoleRow>,
    issuers: Vec<TrustedIssuerRow>,
}

impl SpecRows {
    fn from_spec(spec: &OrganizationSpec) -> Result<Self, StoreError> {
        check_unique(spec)?;
        let organization = OrganizationRow::from_domain(&spec.organization)?;
        let org_id = &organization.id;
        let projects = spec
            .projects
            .iter()
            .map(|p| ProjectRow {
                org_id: org_id.clone(),
                id: p.id.as_str().to_owned(),
                display_name: p.display_name.clone(),
            })
            .collect();
        let roles = spec
            .roles
            .iter()
            .map(|r| RoleRow {
                org_id: org_id.clone(),
                slug: r.slug.as_str().to_owned(),
                description: r.description.clone(),
            })
            .collect();
        let issuers = spec
            .trusted_issuers
            .iter()
            .map(|t| TrustedIssuerRow {
                org_id: org_id.clone(),
                issuer: t.issuer.as_str().to_owned(),
                jwks_uri: t.jwks_uri.clone(),
            })
            .collect();
        Ok(Self {
            org: spec.organization.id.clone(),
            organization,
            projects,
            roles,
            issuers,
        })
    }
}

/// An organization as stored before an apply: its row, projects, roles and trusted issuers.
struct Stored {
    organization: Option<OrganizationRow>,
    projects: Vec<ProjectRow>,
    roles: Vec<RoleRow>,
    issuers: Vec<TrustedIssuerRow>,
}

async fn stored(conn: &mut AsyncPgConnection, org_id: &str) -> QueryResult<Stored> {
    let organization = organizations::table
        .find(org_id)
        .select(OrganizationRow::as_select())
        .first::<OrganizationRow>(conn)
        .await
        .optional()?;
    let projects = projects::table
        .filter(projects::org_id.eq(org_id))
        .select(ProjectRow::as_select())
        .load::<ProjectRow>(conn)
        .await?;
    let roles = roles::table
        .filter(roles::org_id.eq(org_id))
        .select(RoleRow::as_select())
        .load::<RoleRow>(conn)
        .await?;
    let issuers = trusted_issuers::table
        .filter(trusted_issuers::org_id.eq(org_id))
        .select(TrustedIssuerRow::as_select())
        .load::<TrustedIssuerRow>(conn)
        .await?;
    Ok(Stored {
        organization,
        projects,
        roles,
        issuers,
    })
}

/// What applying `wanted` (with `prune` or not) changes in `before`, one entry per change:
/// `+organization` for a new organization, `~slug` and `~policy.{field}` for changed fields,
/// `+projects/{id}`, `~projects/{id}`, `-projects/{id}` (pruned) and the same for
/// `roles/{slug}` and `trustedIssuers/{issuer}`. Empty when the apply changes nothing.
fn changes(before: &Stored, wanted: &SpecRows, prune: bool) -> Vec<String> {
    let mut changes = Vec::new();
    let org = &wanted.organization;
    match &before.organization {
        None => changes.push("+organization".to_owned()),
        Some(old) => {
            // Compared exactly as the upsert compares them (arrays in order), so every row it
            // rewrites is audited.
            for (changed, field) in [
                (old.slug != org.slug, "~slug"),
                (
                    old.allowed_scopes != org.allowed_scopes,
                    "~policy.allowedScopes",
                ),
                (
                    old.credential_default_lifetime_seconds
                        != org.credential_default_lifetime_seconds,
                    "~policy.credentialDefaultLifetime",
                ),
                (
                    old.credential_max_lifetime_seconds != org.credential_max_lifetime_seconds,
                    "~policy.credentialMaxLifetime",
                ),
                (
                    old.max_active_credentials != org.max_active_credentials,
                    "~policy.maxActiveCredentials",
                ),
            ] {
                if changed {
                    changes.push(field.to_owned());
                }
            }
        }
    }
    let projects = |p: &ProjectRow| (p.id.clone(), p.display_name.clone());
    changes.extend(diff(
        "projects",
        &before.projects.iter().map(projects).collect::<Vec<_>>(),
        &wanted.projects.iter().map(projects).collect::<Vec<_>>(),
        prune,
    ));
    let roles = |r: &RoleRow| (r.slug.clone(), r.description.clone());
    changes.extend(diff(
        "roles",
        &before.roles.iter().map(roles).collect::<Vec<_>>(),
        &wanted.roles.iter().map(roles).collect::<Vec<_>>(),
        prune,
    ));
    let issuers = |t: &TrustedIssuerRow| (t.issuer.clone(), t.jwks_uri.clone());
    changes.extend(diff(
        "trustedIssuers",
        &before.issuers.iter().map(issuers).collect::<Vec<_>>(),
        &wanted.issuers.iter().map(issuers).collect::<Vec<_>>(),
        prune,
    ));
    changes
}

/// The `+`/`~`/`-` entries of one collection of `(key, value)` pairs.
fn diff(
    collection: &str,
    before: &[(String, Option<String>)],
    wanted: &[(String, Option<String>)],
    prune: bool,
) -> Vec<String> {
    let old: std::collections::HashMap<&str, &Option<String>> =
        before.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut entries: Vec<String> = wanted
        .iter()
        .filter_map(|(key, value)| match old.get(key.as_str()) {
            None => Some(format!("+{collection}/{key}")),
            Some(current) if *current != value => Some(format!("~{collection}/{key}")),
            Some(_) => None,
        })
        .collect();
    if prune {
        let kept: HashSet<&str> = wanted.iter().map(|(k, _)| k.as_str()).collect();
        let mut pruned: Vec<&str> = before
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !kept.contains(k))
            .collect();
        pruned.sort_unstable();
        entries.extend(pruned.into_iter().map(|k| format!("-{collection}/{k}")));
    }
    entries
}

/// Inserts or updates `org`; returns 1 when a row was written, 0 when it already matched.
async fn upsert_organization(
    conn: &mut AsyncPgConnection,
    org: &OrganizationRow,
) -> QueryResult<usize> {
    let upsert = diesel::insert_into(organizations::table)
        .values(org)
        .on_conflict(organizations::id)
        .do_update()
        .set((
            organizations::slug.eq(excluded(organizations::slug)),
            organizations::allowed_scopes.eq(excluded(organizations::allowed_scopes)),
            organizations::credential_default_lifetime_seconds
                .eq(excluded(organizations::credential_default_lifetime_seconds)),
            organizations::credential_max_lifetime_seconds
                .eq(excluded(organizations::credential_max_lifetime_seconds)),
            organizations::max_active_credentials
                .eq(excluded(organizations::max_active_credentials)),
            organizations::updated_at.eq(now),
        ));
    // Leave unchanged rows alone (no write, `updated_at` kept): applying is idempotent.
    // (`FilterDsl::filter` on an upsert is its `DO UPDATE … WHERE`.)
    methods::FilterDsl::filter(
        upsert,
        organizations::slug
            .is_distinct_from(excluded(organizations::slug))
            .or(organizations::allowed_scopes
                .is_distinct_from(excluded(organizations::allowed_scopes)))
            .or(organizations::credential_default_lifetime_seconds
                .is_distinct_from(excluded(organizations::credential_default_lifetime_seconds)))
            .or(organizations::credential_max_lifetime_seconds
                .is_distinct_from(excluded(organizations::credential_max_lifetime_seconds)))
            .or(organizations::max_active_credentials
                .is_distinct_from(excluded(organizations::max_active_credentials))),
    )
    .execute(conn)
    .await
}

/// Inserts or updates `rows`; returns how many rows were written.
async fn upsert_projects(conn: &mut AsyncPgConnection, rows: &[ProjectRow]) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let upsert = diesel::insert_into(projects::table)
        .values(rows)
        .on_conflict((projects::org_id, projects::id))
        .do_update()
        .set(projects::display_name.eq(excluded(projects::display_name)));
    methods::FilterDsl::filter(
        upsert,
        projects::display_name.is_distinct_from(excluded(projects::display_name)),
    )
    .execute(conn)
    .await
}

/// Inserts or updates `rows`; returns how many rows were written.
async fn upsert_roles(conn: &mut AsyncPgConnection, rows: &[RoleRow]) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let upsert = diesel::insert_into(roles::table)
        .values(rows)
        .on_conflict((roles::org_id, roles::slug))
        .do_update()
        .set(roles::description.eq(excluded(roles::description)));
    methods::FilterDsl::filter(
        upsert,
        roles::description.is_distinct_from(excluded(roles::description)),
    )
    .execute(conn)
    .await
}

/// Inserts or updates `rows`; returns how many rows were written.
async fn upsert_issuers(
    conn: &mut AsyncPgConnection,
    rows: &[TrustedIssuerRow],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let upsert = diesel::insert_into(trusted_issuers::table)
        .values(rows)
        .on_conflict((trusted_issuers::org_id, trusted_issuers::issuer))
        .do_update()
        .set(trusted_issuers::jwks_uri.eq(excluded(trusted_issuers::jwks_uri)));
    methods::FilterDsl::filter(
        upsert,
        trusted_issuers::jwks_uri.is_distinct_from(excluded(trusted_issuers::jwks_uri)),
    )
    .execute(conn)
    .await
}

/// How many rows [`prune`] deleted.
struct Pruned {
    projects: usize,
    roles: usize,
    issuers: usize,
}

/// Deletes the projects, roles and trusted issuers of the spec's organization that the spec
/// omits.
async fn prune(conn: &mut AsyncPgConnection, rows: &SpecRows) -> QueryResult<Pruned> {
    let org_id = &rows.organization.id;
    let keep: Vec<&str> = rows.projects.iter().map(|p| p.id.as_str()).collect();
    let projects_pruned = diesel::delete(
        projects::table
            .filter(projects::org_id.eq(org_id))
            .filter(projects::id.ne_all(keep)),
    )
    .execute(conn)
    .await?;
    let keep: Vec<&str> = rows.roles.iter().map(|r| r.slug.as_str()).collect();
    let roles_pruned = diesel::delete(
        roles::table
            .filter(roles::org_id.eq(org_id))
            .filter(roles::slug.ne_all(keep)),
    )
    .execute(conn)
    .await?;
    let keep: Vec<&str> = rows.issuers.iter().map(|t| t.issuer.as_str()).collect();
    let issuers = diesel::delete(
        trusted_issuers::table
            .filter(trusted_issuers::org_id.eq(org_id))
            .filter(trusted_issuers::issuer.ne_all(keep)),
    )
    .execute(conn)
    .await?;
    Ok(Pruned {
        projects: projects_pruned,
        roles: roles_pruned,
        issuers,
    })
}

impl PgStore {
    /// Makes the directory match `specs`, in one transaction: upserts every listed
    /// organization (with its policy), project, role and trusted issuer. With `prune`, also
    /// deletes the projects, roles and trusted issuers of the listed organizations that
    /// `specs` omits. Organizations are
    /// never deleted, and organizations that `specs` does not list are not touched.
    ///
    /// Idempotent: applying the same specs again changes nothing (not even `updated_at`).
    /// `created_at`/`updated_at` of organizations come from the database clock.
    ///
    /// Every organization the apply changes gets one audit event (action `directory.apply`,
    /// actor and request id from `operator`, resource `organizations/{id}`, the changes as
    /// `+`/`~`/`-` entries, see `docs/OPERATIONS.md`) in the same transaction; an apply
    /// that changes nothing writes none. Concurrent applies are serialized (a transaction-scoped advisory lock), so each
    /// event describes exactly what its apply changed.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`] when a spec lists a project or role twice, or the database
    /// refuses a row (for example a slug already used by another organization); nothing is
    /// changed then. [`StoreError::Unavailable`] when the database is unreachable.
    pub async fn apply_directory(
        &self,
        specs: &[OrganizationSpec],
        prune: bool,
        operator: &Operator,
    ) -> Result<ApplySummary, StoreError> {
        let specs = specs
            .iter()
            .map(SpecRows::from_spec)
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.conn().await?;
        let summary = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<diesel::sql_types::BigInt, _>(DIRECTORY_APPLY_LOCK)
                    .execute(conn)
                    .await?;
                let mut summary = ApplySummary::default();
                for rows in &specs {
                    let before = stored(conn, &rows.organization.id).await?;
                    let changes = changes(&before, rows, prune);
                    summary.organizations_upserted +=
                        count(upsert_organization(conn, &rows.organization).await?);
                    summary.projects_upserted +=
                        count(upsert_projects(conn, &rows.projects).await?);
                    summary.roles_upserted += count(upsert_roles(conn, &rows.roles).await?);
                    summary.trusted_issuers_upserted +=
                        count(upsert_issuers(conn, &rows.issuers).await?);
                    if prune {
                        let pruned = self::prune(conn, rows).await?;
                        summary.projects_pruned += count(pruned.projects);
                        summary.roles_pruned += count(pruned.roles);
                        summary.trusted_issuers_pruned += count(pruned.issuers);
                    }
                    if !changes.is_empty() {
                        let event = AuditEvent {
                            resource: format!("organizations/{}", rows.org),
                            tenant: rows.org.clone(),
                            actor: operator.actor.clone(),
                            action: AuditAction::DirectoryApplied,
                            changed_fields: changes,
                            request_id: operator.run_id.clone(),
                            source_ip: None,
                            at: operator.at,
                        };
                        audit::record(conn, &event).await?;
                    }
                }
                Ok(summary)
            })
            .await
            .map_err(DbError::from)?;
        Ok(summary)
    }
}
