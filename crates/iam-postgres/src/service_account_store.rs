//! [`ServiceAccountStore`] on the `service_accounts` table.
//!
//! Reads (get, list) are one statement each, outside any transaction. Every mutation writes
//! its audit event in the same transaction as the change; an insert for a request with an
//! `Idempotency-Key` also writes the recorded response in it. Listing uses keyset pagination on
//! the index `service_accounts_page_idx (org_id, created_at, uid)`.
//!
//! Every account read carries its `active_credential_count`, computed in the same statement by
//! a correlated scalar subquery (an index-only range scan of `credentials_active_idx` per
//! account): `(SELECT count(*) FROM credentials WHERE service_account_uid =
//! service_accounts.uid AND expires_at > $now LIMIT 1)`. (The `LIMIT 1` is diesel's
//! `single_value`; a count has one row anyway.)

use diesel::dsl::{AsSelect, count_star};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use iam_domain::audit::AuditEvent;
use iam_domain::pagination::{Cursor, Page, PagePosition, PageRequest};
use iam_domain::ports::{
    IdempotencyCompletion, IfLive, InsertError, LiveToken, ServiceAccountStore, StoreError,
    UpdateOutcome,
};
use iam_domain::principal::Subject;
use iam_domain::resource_id::{OrgId, ServiceAccountId};
use iam_domain::role::RoleSlug;
use iam_domain::scope::ScopeTarget;
use iam_domain::service_account::{
    ClientId, Description, DisplayName, Grantee, Revision, ServiceAccount, ServiceAccountFilter,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::error::{DbError, corrupt};
use crate::idempotency::record_completion;
use crate::keyset::{cursor_page_of, row_greater_than};
use crate::schema::{credentials, service_accounts};
use crate::store::PgStore;
use crate::token_store::{LiveCondition, read_any};

/// Why the insert transaction was rolled back.
enum InsertFailure {
    /// The id exists in the tenant.
    Duplicate,
    /// The idempotency claim to complete is no longer current.
    ClaimLost,
    /// The database failed.
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for InsertFailure {
    fn from(e: diesel::result::Error) -> Self {
        InsertFailure::Db(e)
    }
}

/// A `service_accounts` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = service_accounts, check_for_backend(Pg))]
pub(crate) struct ServiceAccountRow {
    uid: Uuid,
    org_id: String,
    id: String,
    display_name: String,
    description: Option<String>,
    client_id: String,
    scope: String,
    scope_id: String,
    roles: Vec<Option<String>>,
    status: String,
    created_by: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    revision: i64,
}

impl ServiceAccountRow {
    fn from_domain(account: &ServiceAccount) -> Result<Self, StoreError> {
        Ok(Self {
            uid: account.uid,
            org_id: account.tenant.as_str().to_owned(),
            id: account.id.as_str().to_owned(),
            display_name: account.display_name.as_str().to_owned(),
            description: account.description.as_ref().map(|d| d.as_str().to_owned()),
            client_id: account.client_id.as_str().to_owned(),
            scope: account.target.scope().as_str().to_owned(),
            scope_id: account.target.id().to_owned(),
            roles: roles_to_row(&account.roles),
            status: account.status.as_str().to_owned(),
            created_by: account.created_by.as_str().to_owned(),
            created_at: account.created_at,
            updated_at: account.updated_at,
            revision: revision_to_row(account.revision)?,
        })
    }

    /// The account, with `active_credential_count` as read alongside the row.
    pub(crate) fn into_domain(
        self,
        active_credentials: Option<i64>,
    ) -> Result<ServiceAccount, StoreError> {
        let uid = self.uid;
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            corrupt(format_args!("service account {uid}: {field}: {e}"))
        };
        let roles = roles_from_row(self.roles).map_err(|e| bad("roles", &e))?;
        Ok(ServiceAccount {
            uid,
            tenant: OrgId::parse(self.org_id).map_err(|e| bad("org_id", &e))?,
            id: ServiceAccountId::parse(self.id).map_err(|e| bad("id", &e))?,
            display_name: DisplayName::parse(self.display_name)
                .map_err(|e| bad("display_name", &e))?,
            description: self
                .description
                .map(Description::parse)
                .transpose()
                .map_err(|e| bad("description", &e))?,
            client_id: ClientId::from_stored(self.client_id),
            target: ScopeTarget::parse(
                self.scope.parse().map_err(|e| bad("scope", &e))?,
                &self.scope_id,
            )
            .map_err(|e| bad("scope_id", &e))?,
            roles,
            status: self.status.parse().map_err(|e| bad("status", &e))?,
            created_by: Subject::parse(self.created_by).map_err(|e| bad("created_by", &e))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: Revision(u64::try_from(self.revision).map_err(|e| bad("revision", &e))?),
            // `count(*)` always yields a row, so `None` cannot happen.
            active_credential_count: active_credentials
                .ok_or_else(|| bad("active_credential_count", &"NULL"))
                .and_then(|n| u32::try_from(n).map_err(|e| bad("active_credential_count", &e)))?,
        })
    }
}

/// The columns of a [`Grantee`]: what a token mint or exchange reads of an account.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = service_accounts, check_for_backend(Pg))]
pub(crate) struct GranteeRow {
    org_id: String,
    client_id: String,
    scope: String,
    scope_id: String,
    roles: Vec<Option<String>>,
    status: String,
}

impl GranteeRow {
    pub(crate) fn into_domain(self) -> Result<Grantee, StoreError> {
        let client_id = self.client_id;
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            corrupt(format_args!("service account {client_id}: {field}: {e}"))
        };
        Ok(Grantee {
            tenant: OrgId::parse(self.org_id).map_err(|e| bad("org_id", &e))?,
            target: ScopeTarget::parse(
                self.scope.parse().map_err(|e| bad("scope", &e))?,
                &self.scope_id,
            )
            .map_err(|e| bad("scope_id", &e))?,
            roles: roles_from_row(self.roles).map_err(|e| bad("roles", &e))?,
            status: self.status.parse().map_err(|e| bad("status", &e))?,
            client_id: ClientId::from_stored(client_id),
        })
    }
}

/// The roles of a `roles` column (a `text[]` whose elements are never NULL).
fn roles_from_row(roles: Vec<Option<String>>) -> Result<Vec<RoleSlug>, String> {
    roles
        .into_iter()
        .map(|role| {
            let role = role.ok_or("NULL element")?;
            RoleSlug::parse(role).map_err(|e| e.to_string())
        })
        .collect()
}

fn roles_to_row(roles: &[RoleSlug]) -> Vec<Option<String>> {
    roles.iter().map(|r| Some(r.as_str().to_owned())).collect()
}

fn revision_to_row(revision: Revision) -> Result<i64, StoreError> {
    i64::try_from(revision.0).map_err(|_| {
        StoreError::Unexpected(format!("revision {} does not fit a bigint", revision.0).into())
    })
}

/// `(SELECT count(*) FROM credentials c WHERE c.service_account_uid = service_accounts.uid
/// AND c.expires_at > now LIMIT 1)`: the account's active credentials at `now`, as a
/// correlated scalar subquery (no `sql()` fragment, so the statement stays cacheable).
#[diesel::dsl::auto_type]
fn active_credential_count(now: OffsetDateTime) -> _ {
    credentials::table
        .filter(credentials::service_account_uid.eq(service_accounts::uid))
        .filter(credentials::expires_at.gt(now))
        .select(count_star())
        .single_value()
}

/// What every account read selects: the row and its active credential count at `now`.
type AccountSelection = (AsSelect<ServiceAccountRow, Pg>, active_credential_count);

fn account_selection(now: OffsetDateTime) -> AccountSelection {
    (ServiceAccountRow::as_select(), active_credential_count(now))
}

/// A row read with [`account_selection`].
type AccountRead = (ServiceAccountRow, Option<i64>);

/// The accounts of `tenant` matching `filter`, as a boxed query other clauses can be added to.
fn filtered<'a>(
    tenant: &OrgId,
    filter: &ServiceAccountFilter,
) -> service_accounts::BoxedQuery<'a, Pg> {
    let mut query = service_accounts::table
        .filter(service_accounts::org_id.eq(tenant.as_str().to_owned()))
        .into_boxed();
    if let Some(scope) = filter.scope {
        query = query.filter(service_accounts::scope.eq(scope.as_str()));
    }
    if let Some(target_id) = &filter.target_id {
        query = query.filter(service_accounts::scope_id.eq(target_id.as_str().to_owned()));
    }
    if let Some(status) = filter.status {
        query = query.filter(service_accounts::status.eq(status.as_str()));
    }
    query
}

/// One keyset page: the first `limit` accounts strictly after `after`, in `(created_at, uid)`
/// order.
fn cursor_page<'a>(
    tenant: &OrgId,
    filter: &ServiceAccountFilter,
    after: Option<Cursor>,
    limit: i64,
) -> service_accounts::BoxedQuery<'a, Pg> {
    let mut query = filtered(tenant, filter);
    if let Some(cursor) = after {
        query = query.filter(row_greater_than(
            (service_accounts::created_at, service_accounts::uid),
            (
                cursor.created_at.into_sql::<Timestamptz>(),
                cursor.uid.into_sql::<SqlUuid>(),
            ),
        ));
    }
    query
        .order((
            service_accounts::created_at.asc(),
            service_accounts::uid.asc(),
        ))
        .limit(limit)
}

fn rows_into_domain(rows: Vec<AccountRead>) -> Result<Vec<ServiceAccount>, StoreError> {
    rows.into_iter()
        .map(|(row, active)| row.into_domain(active))
        .collect()
}

impl PgStore {
    /// The account `id` of `tenant` with its active credential count, if `live` holds: one
    /// statement.
    async fn get_account(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> Result<Option<ServiceAccount>, StoreError> {
        let row = service_accounts::table
            .filter(service_accounts::org_id.eq(tenant.as_str()))
            .filter(service_accounts::id.eq(id.as_str()))
            .filter(live)
            .select(account_selection(now))
            .first::<AccountRead>(&mut &*conn)
            .await
            .optional()
            .map_err(DbError::from)?;
        row.map(|(row, active)| row.into_domain(active)).transpose()
    }

    /// A page of accounts, if `live` holds: one statement (cursor mode) or two pipelined
    /// (offset mode).
    async fn list_accounts(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Result<Page<ServiceAccount>, StoreError> {
        match page.position {
            PagePosition::After(after) => {
                Self::list_cursor(conn, live, tenant, filter, after, page.size.get(), now).await
            }
            PagePosition::Offset(offset) => {
                Self::list_offset(conn, live, tenant, filter, offset, page.size.get(), now).await
            }
        }
    }

    async fn list_cursor(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        after: Option<Cursor>,
        size: u16,
        now: OffsetDateTime,
    ) -> Result<Page<ServiceAccount>, StoreError> {
        // One more than asked: whether it exists decides `next`.
        let limit = i64::from(size) + 1;
        let rows: Vec<AccountRead> = cursor_page(tenant, filter, after, limit)
            .filter(live)
            .select(account_selection(now))
            .load(&mut &*conn)
            .await
            .map_err(DbError::from)?;
        cursor_page_of(
            rows,
            size,
            |(row, active)| row.into_domain(active),
            |a| Cursor {
                created_at: a.created_at,
                uid: a.uid,
            },
        )
    }

    async fn list_offset(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        offset: u64,
        size: u16,
        now: OffsetDateTime,
    ) -> Result<Page<ServiceAccount>, StoreError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        // Both statements are sent at once (pipelined on one connection): one round trip.
        let items = filtered(tenant, filter)
            .filter(live.clone())
            .order((
                service_accounts::created_at.asc(),
                service_accounts::uid.asc(),
            ))
            .offset(offset)
            .limit(i64::from(size))
            .select(account_selection(now))
            .load::<AccountRead>(&mut &*conn);
        let total = filtered(tenant, filter)
            .filter(live)
            .select(count_star())
            .get_result::<i64>(&mut &*conn);
        let (rows, total) = tokio::try_join!(items, total).map_err(DbError::from)?;
        Ok(Page {
            items: rows_into_domain(rows)?,
            next: None,
            total: Some(u64::try_from(total).map_err(|e| corrupt(format_args!("count: {e}")))?),
        })
    }

    /// The plan Postgres chooses for a cursor-mode list page (`EXPLAIN` output lines).
    ///
    /// # Errors
    /// [`StoreError`] for backend failures.
    #[cfg(feature = "test-support")]
    pub async fn explain_list_page(
        &self,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        after: Option<Cursor>,
        size: u16,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let query =
            cursor_page(tenant, filter, after, i64::from(size) + 1).select(account_selection(now));
        let mut conn = self.conn().await?;
        Ok(crate::test_support::Explain(query)
            .load::<String>(&mut conn)
            .await
            .map_err(DbError::from)?)
    }
}

impl ServiceAccountStore for PgStore {
    async fn insert(
        &self,
        account: &ServiceAccount,
        event: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<(), InsertError> {
        let row = ServiceAccountRow::from_domain(account)?;
        let mut conn = self.conn().await.map_err(StoreError::from)?;
        let result = conn
            .transaction::<_, InsertFailure, _>(async |conn| {
                // `ON CONFLICT DO NOTHING` makes "id taken" an outcome rather than an error,
                // whichever unique index Postgres checks first, and also when a concurrent
                // insert of the same id commits first. It also covers the client id, which is
                // unique across organizations: after an organization's slug was changed and
                // reused by another, `{id}@{slug}.iam` can be taken by the other one.
                let inserted = diesel::insert_into(service_accounts::table)
                    .values(&row)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    return Err(InsertFailure::Duplicate);
                }
                audit::record(conn, event).await?;
                // The record that makes a retry replay commits with the account, or neither
                // does.
                if let Some(completion) = completion
                    && !record_completion(conn, completion).await?
                {
                    return Err(InsertFailure::ClaimLost);
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(InsertFailure::Duplicate) => Err(InsertError::Duplicate),
            Err(InsertFailure::ClaimLost) => Err(InsertError::ClaimLost),
            Err(InsertFailure::Db(e)) => Err(StoreError::from(DbError::from(e)).into()),
        }
    }

    async fn get(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> Result<Option<ServiceAccount>, StoreError> {
        let conn = self.conn().await?;
        Self::get_account(&conn, LiveCondition::Always, tenant, id, now).await
    }

    async fn list(
        &self,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Result<Page<ServiceAccount>, StoreError> {
        let conn = self.conn().await?;
        Self::list_accounts(&conn, LiveCondition::Always, tenant, filter, page, now).await
    }

    async fn get_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> Result<IfLive<Option<ServiceAccount>>, StoreError> {
        let conn = self.conn().await?;
        let found = Self::get_account(&conn, LiveCondition::of(live), tenant, id, now).await?;
        Self::if_live(&conn, live, found, Option::is_some).await
    }

    async fn list_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Result<IfLive<Page<ServiceAccount>>, StoreError> {
        let conn = self.conn().await?;
        let condition = LiveCondition::of(live);
        let page = Self::list_accounts(&conn, condition, tenant, filter, page, now).await?;
        Self::if_live(&conn, live, page, read_any).await
    }

    async fn update(
        &self,
        account: &ServiceAccount,
        expected: Revision,
        event: &AuditEvent,
    ) -> Result<UpdateOutcome, StoreError> {
        let row = ServiceAccountRow::from_domain(account)?;
        let expected = revision_to_row(expected)?;
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let updated = diesel::update(
                    service_accounts::table
                        .filter(service_accounts::uid.eq(row.uid))
                        .filter(service_accounts::org_id.eq(&row.org_id))
                        .filter(service_accounts::revision.eq(expected)),
                )
                .set((
                    service_accounts::display_name.eq(&row.display_name),
                    service_accounts::description.eq(&row.description),
                    service_accounts::roles.eq(&row.roles),
                    service_accounts::status.eq(&row.status),
                    service_accounts::updated_at.eq(row.updated_at),
                    service_accounts::revision.eq(row.revision),
                ))
                .execute(conn)
                .await?;
                if updated == 0 {
                    let exists = diesel::select(diesel::dsl::exists(
                        service_accounts::table
                            .filter(service_accounts::uid.eq(row.uid))
                            .filter(service_accounts::org_id.eq(&row.org_id)),
                    ))
                    .get_result::<bool>(conn)
                    .await?;
                    return Ok(if exists {
                        UpdateOutcome::Stale
                    } else {
                        UpdateOutcome::Gone
                    });
                }
                audit::record(conn, event).await?;
                Ok(UpdateOutcome::Updated)
            })
            .await
            .map_err(DbError::from)?;
        Ok(outcome)
    }

    async fn delete(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let deleted = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let deleted = diesel::delete(
                    service_accounts::table
                        .filter(service_accounts::org_id.eq(tenant.as_str()))
                        .filter(service_accounts::id.eq(id.as_str())),
                )
                .returning(service_accounts::uid)
                .get_result::<Uuid>(conn)
                .await
                .optional()?;
                if deleted.is_some() {
                    audit::record(conn, event).await?;
                }
                Ok(deleted.is_some())
            })
            .await
            .map_err(DbError::from)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use diesel::query_builder::QueryFragment;
    use time::macros::datetime;

    use super::*;

    /// Whether diesel may keep `query` as a prepared statement (no `sql()` fragment etc.).
    fn cacheable(query: &impl QueryFragment<Pg>) -> bool {
        query.is_safe_to_cache_prepared(&Pg).unwrap_or(false)
    }

    #[test]
    fn reads_with_the_credential_count_are_one_cacheable_statement() {
        let tenant = OrgId::parse("org-a").unwrap();
        let now = datetime!(2026-11-28 00:00 UTC);
        let after = Some(Cursor {
            created_at: now,
            uid: Uuid::nil(),
        });
        let page = cursor_page(&tenant, &ServiceAccountFilter::default(), after, 51)
            .select(account_selection(now));
        let sql = diesel::debug_query::<Pg, _>(&page).to_string();
        assert!(
            sql.contains(
                "(SELECT COUNT(*) FROM \"credentials\" WHERE ((\"credentials\".\"service_account_uid\" \
                 = \"service_accounts\".\"uid\") AND (\"credentials\".\"expires_at\" > $"
            ),
            "{sql}"
        );
        assert!(cacheable(&page), "{sql}");

        let get = service_accounts::table
            .filter(service_accounts::org_id.eq(tenant.as_str()))
            .filter(service_accounts::id.eq("sa-a"))
            .select(account_selection(now));
        assert!(cacheable(&get));
    }
}
