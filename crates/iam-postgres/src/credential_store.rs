//! [`CredentialStore`] on the `credentials` table.
//!
//! - `insert_within_cap` is one `READ COMMITTED` transaction: lock the parent account row
//!   (`SELECT … FOR UPDATE`), count its active credentials, insert, write the audit event
//!   and, for a request with an `Idempotency-Key`, the recorded response (so a crash never
//!   commits the credential without the record that makes a retry replay it).
//!   Every insert of a credential of that account queues on the same row lock, and the count
//!   is a statement of its own that starts after the lock is granted, so under `READ
//!   COMMITTED` it sees every credential committed by the previous lock holder: the cap holds
//!   under any concurrency and across any number of server instances.
//! - `get` is one statement (credential joined with its account).
//! - `list` sends two independent statements at once on one connection (pipelined: one round
//!   trip), three in offset mode: "does the account exist" and the page (and the total),
//!   whose account filter is the scalar subquery `service_account_uid = (SELECT uid FROM
//!   service_accounts WHERE org_id = $1 AND id = $2)`. Postgres evaluates it once (an
//!   `InitPlan`) and uses its value as the index condition of a keyset range scan of
//!   `credentials_page_idx (service_account_uid, created_at, uid)`. With a status filter the
//!   planner may instead scan `credentials_active_idx (service_account_uid, expires_at)` and
//!   sort that account's matching credentials (for `active`, at most the cap).
//! - `delete` is one transaction: the delete (by tenant, account and id) and, if it deleted a
//!   row, the audit event.
//! - `find_for_mint` (the hot path of a token mint) is one statement: the account by its client
//!   id (an index scan of the unique `service_accounts_client_id_key`) joined with the
//!   credential by `(org_id, id)` (an index scan of the unique `credentials_org_id_id_key`),
//!   with the credential's `service_account_uid` equal to the account's uid. It selects only
//!   the nine columns a mint checks ([`MintRow`] and the account's `GranteeRow`): every
//!   column sent costs PostgreSQL its binary output, and the full rows cost it half as much
//!   again as the lookup itself.

use std::net::IpAddr;

use diesel::dsl::{count_star, exists};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use iam_domain::audit::AuditEvent;
use iam_domain::client_secret::SecretHash;
use iam_domain::credential::{Credential, CredentialFilter, CredentialStatus, MintCredential};
use iam_domain::pagination::{Cursor, Page, PagePosition, PageRequest};
use iam_domain::ports::{
    CapOutcome, CredentialStore, IdempotencyCompletion, IfLive, LiveToken, StoreError,
};
use iam_domain::principal::Subject;
use iam_domain::resource_id::{CredentialId, OrgId, ServiceAccountId};
use iam_domain::service_account::ClientId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::error::{DbError, corrupt};
use crate::idempotency::record_completion;
use crate::keyset::{cursor_page_if, offset_page_if, row_greater_than};
use crate::schema::{credentials, service_accounts};
use crate::service_account_store::GranteeRow;
use crate::store::PgStore;
use crate::token_store::LiveCondition;

/// A `credentials` row. There is no column for the plaintext secret: only its hash.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = credentials, check_for_backend(Pg))]
struct CredentialRow {
    uid: Uuid,
    org_id: String,
    service_account_uid: Uuid,
    id: String,
    secret_hash: Vec<u8>,
    expires_at: OffsetDateTime,
    created_by: String,
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    last_used_ip: Option<String>,
}

/// The columns of a credential a token mint checks (with its account's [`GranteeRow`]).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = credentials, check_for_backend(Pg))]
struct MintRow {
    uid: Uuid,
    secret_hash: Vec<u8>,
    expires_at: OffsetDateTime,
}

/// The `secret_hash` column of credential `uid` (32 bytes).
fn secret_hash(uid: Uuid, stored: Vec<u8>) -> Result<SecretHash, StoreError> {
    let len = stored.len();
    <[u8; 32]>::try_from(stored).map(SecretHash).map_err(|_| {
        corrupt(format_args!(
            "credential {uid}: secret_hash: {len} bytes, not 32"
        ))
    })
}

impl CredentialRow {
    fn from_domain(credential: &Credential) -> Self {
        Self {
            uid: credential.uid,
            org_id: credential.tenant.as_str().to_owned(),
            service_account_uid: credential.service_account_uid,
            id: credential.id.as_str().to_owned(),
            secret_hash: credential.secret_hash.0.to_vec(),
            expires_at: credential.expires_at,
            created_by: credential.created_by.as_str().to_owned(),
            created_at: credential.created_at,
            last_used_at: credential.last_used_at,
            last_used_ip: credential.last_used_ip.map(|ip| ip.to_string()),
        }
    }

    /// The credential, given the id of its account (which lives in `service_accounts`).
    fn into_domain(self, service_account_id: ServiceAccountId) -> Result<Credential, StoreError> {
        let uid = self.uid;
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            corrupt(format_args!("credential {uid}: {field}: {e}"))
        };
        let secret_hash = secret_hash(uid, self.secret_hash)?;
        Ok(Credential {
            uid,
            tenant: OrgId::parse(self.org_id).map_err(|e| bad("org_id", &e))?,
            service_account_uid: self.service_account_uid,
            service_account_id,
            id: CredentialId::parse(self.id).map_err(|e| bad("id", &e))?,
            secret_hash,
            expires_at: self.expires_at,
            created_by: Subject::parse(self.created_by).map_err(|e| bad("created_by", &e))?,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            last_used_ip: self
                .last_used_ip
                .map(|ip| ip.parse::<IpAddr>())
                .transpose()
                .map_err(|e| bad("last_used_ip", &e))?,
        })
    }
}

/// `(SELECT uid FROM service_accounts WHERE org_id = tenant AND id = account LIMIT 1)`: the
/// uid of the account, or NULL, as a scalar subquery (evaluated once per statement).
#[diesel::dsl::auto_type]
fn account_uid<'a>(tenant: &'a str, account: &'a str) -> _ {
    service_accounts::table
        .filter(service_accounts::org_id.eq(tenant))
        .filter(service_accounts::id.eq(account))
        .select(service_accounts::uid)
        .single_value()
}

/// The credentials of account `account` of `tenant` matching `filter` at `now`, as a boxed
/// query other clauses can be added to.
fn filtered<'a>(
    tenant: &'a OrgId,
    account: &'a ServiceAccountId,
    filter: CredentialFilter,
    now: OffsetDateTime,
) -> credentials::BoxedQuery<'a, Pg> {
    let mut query = credentials::table
        .filter(
            credentials::service_account_uid
                .nullable()
                .eq(account_uid(tenant.as_str(), account.as_str())),
        )
        .into_boxed();
    match filter.status {
        None => {}
        Some(CredentialStatus::Active) => query = query.filter(credentials::expires_at.gt(now)),
        Some(CredentialStatus::Expired) => query = query.filter(credentials::expires_at.le(now)),
    }
    query
}

/// `(created_at, uid)` order.
fn ordered(query: credentials::BoxedQuery<'_, Pg>) -> credentials::BoxedQuery<'_, Pg> {
    query.order((credentials::created_at.asc(), credentials::uid.asc()))
}

/// One keyset page: the first `limit` matching credentials strictly after `after`.
fn cursor_page<'a>(
    tenant: &'a OrgId,
    account: &'a ServiceAccountId,
    filter: CredentialFilter,
    now: OffsetDateTime,
    after: Option<Cursor>,
    limit: i64,
) -> credentials::BoxedQuery<'a, Pg> {
    let mut query = filtered(tenant, account, filter, now);
    if let Some(cursor) = after {
        query = query.filter(row_greater_than(
            (credentials::created_at, credentials::uid),
            (
                cursor.created_at.into_sql::<Timestamptz>(),
                cursor.uid.into_sql::<SqlUuid>(),
            ),
        ));
    }
    ordered(query).limit(limit)
}

/// The credential `id` of the account whose client id is `client_id`, joined with that
/// account: `credentials INNER JOIN service_accounts ON credentials.service_account_uid =
/// service_accounts.uid WHERE service_accounts.client_id = $1 AND credentials.id = $2 AND
/// credentials.org_id = service_accounts.org_id`. At most one row (`client_id` is unique, and
/// so is `(org_id, id)` of a credential); both lookups are unique-index scans. Shared by
/// `find_for_mint` and the liveness check of service-account tokens.
#[diesel::dsl::auto_type]
pub(crate) fn credential_of_client<'a>(client_id: &'a str, id: &'a str) -> _ {
    credentials::table
        .inner_join(service_accounts::table)
        .filter(service_accounts::client_id.eq(client_id))
        .filter(credentials::id.eq(id))
        .filter(credentials::org_id.eq(service_accounts::org_id))
}

/// `EXISTS (SELECT 1 FROM service_accounts WHERE org_id = tenant AND id = account)`.
#[diesel::dsl::auto_type]
pub(crate) fn account_exists<'a>(tenant: &'a str, account: &'a str) -> _ {
    exists(
        service_accounts::table
            .filter(service_accounts::org_id.eq(tenant))
            .filter(service_accounts::id.eq(account)),
    )
}

/// Why the cap transaction did not insert.
enum CapFailure {
    /// Nothing stored: the account is gone or the cap is reached.
    Refused(CapOutcome),
    /// The database failed.
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for CapFailure {
    fn from(e: diesel::result::Error) -> Self {
        CapFailure::Db(e)
    }
}

impl PgStore {
    /// Credential `id` of `account` in `tenant`: one statement.
    async fn get_credential(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError> {
        let row = credentials::table
            .inner_join(service_accounts::table)
            .filter(credentials::org_id.eq(tenant.as_str()))
            .filter(credentials::id.eq(id.as_str()))
            .filter(service_accounts::org_id.eq(tenant.as_str()))
            .filter(service_accounts::id.eq(account.as_str()))
            .filter(live)
            .select(CredentialRow::as_select())
            .first::<CredentialRow>(&mut &*conn)
            .await
            .optional()
            .map_err(DbError::from)?;
        row.map(|row| row.into_domain(account.clone())).transpose()
    }

    /// A page of `account`'s credentials (`None`: no such account, or `live` does not hold),
    /// its statements pipelined: one round trip.
    async fn list_credentials(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Result<Option<Page<Credential>>, StoreError> {
        let size = page.size.get();
        let exists = diesel::select(account_exists(tenant.as_str(), account.as_str()).and(live))
            .get_result::<bool>(&mut &*conn);
        let convert = |row: CredentialRow| row.into_domain(account.clone());
        match page.position {
            PagePosition::After(after) => {
                // One more than asked: whether it exists decides `next`.
                let rows = cursor_page(tenant, account, filter, now, after, i64::from(size) + 1)
                    .select(CredentialRow::as_select())
                    .load::<CredentialRow>(&mut &*conn);
                cursor_page_if(exists, rows, size, convert, |c| Cursor {
                    created_at: c.created_at,
                    uid: c.uid,
                })
                .await
            }
            PagePosition::Offset(offset) => {
                let rows = ordered(filtered(tenant, account, filter, now))
                    .offset(i64::try_from(offset).unwrap_or(i64::MAX))
                    .limit(i64::from(size))
                    .select(CredentialRow::as_select())
                    .load::<CredentialRow>(&mut &*conn);
                let total = filtered(tenant, account, filter, now)
                    .select(count_star())
                    .get_result::<i64>(&mut &*conn);
                offset_page_if(exists, rows, total, convert).await
            }
        }
    }

    /// The plan Postgres chooses for [`CredentialStore::find_for_mint`] (`EXPLAIN` output
    /// lines).
    ///
    /// # Errors
    /// [`StoreError`] for backend failures.
    #[cfg(feature = "test-support")]
    pub async fn explain_find_for_mint(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> Result<Vec<String>, StoreError> {
        let query = credential_of_client(client_id.as_str(), id.as_str())
            .select((MintRow::as_select(), GranteeRow::as_select()));
        let mut conn = self.conn().await?;
        Ok(crate::test_support::Explain(query)
            .load::<String>(&mut conn)
            .await
            .map_err(DbError::from)?)
    }

    /// The plan Postgres chooses for a cursor-mode credential list page (`EXPLAIN` output
    /// lines).
    ///
    /// # Errors
    /// [`StoreError`] for backend failures.
    #[cfg(feature = "test-support")]
    pub async fn explain_credential_page(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        now: OffsetDateTime,
        after: Option<Cursor>,
        size: u16,
    ) -> Result<Vec<String>, StoreError> {
        let query = cursor_page(tenant, account, filter, now, after, i64::from(size) + 1)
            .select(CredentialRow::as_select());
        let mut conn = self.conn().await?;
        Ok(crate::test_support::Explain(query)
            .load::<String>(&mut conn)
            .await
            .map_err(DbError::from)?)
    }
}

impl CredentialStore for PgStore {
    async fn insert_within_cap(
        &self,
        credential: &Credential,
        cap: u32,
        now: OffsetDateTime,
        event: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<CapOutcome, StoreError> {
        let row = CredentialRow::from_domain(credential);
        let cap = i64::from(cap);
        let mut conn = self.conn().await?;
        let result = conn
            .build_transaction()
            // Explicit, whatever the server's default: the count below must see what the
            // previous holder of the account lock committed, which a `REPEATABLE READ`
            // snapshot (taken by the locking statement) would not.
            .read_committed()
            .run::<_, CapFailure, _>(async |conn| {
                let locked = service_accounts::table
                    .filter(service_accounts::uid.eq(row.service_account_uid))
                    .filter(service_accounts::org_id.eq(&row.org_id))
                    .select(service_accounts::uid)
                    .for_update()
                    .first::<Uuid>(conn)
                    .await
                    .optional()?;
                if locked.is_none() {
                    return Err(CapFailure::Refused(CapOutcome::AccountGone));
                }
                // A statement of its own, after the lock: it must not be combined with the
                // locking one, whose snapshot predates the wait for the lock.
                let active = credentials::table
                    .filter(credentials::service_account_uid.eq(row.service_account_uid))
                    .filter(credentials::expires_at.gt(now))
                    .select(count_star())
                    .get_result::<i64>(conn)
                    .await?;
                if active >= cap {
                    return Err(CapFailure::Refused(CapOutcome::LimitReached));
                }
                // A unique violation (same uid, or same id in the tenant) means the id
                // generator broke its contract: it stays an error (`Unexpected`).
                diesel::insert_into(credentials::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
                audit::record(conn, event).await?;
                // The record that makes a retry replay commits with the credential, or neither
                // does: a retry never uses a second slot.
                if let Some(completion) = completion
                    && !record_completion(conn, completion).await?
                {
                    return Err(CapFailure::Refused(CapOutcome::ClaimLost));
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => Ok(CapOutcome::Inserted),
            Err(CapFailure::Refused(outcome)) => Ok(outcome),
            Err(CapFailure::Db(e)) => Err(DbError::from(e).into()),
        }
    }

    async fn get(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError> {
        let conn = self.conn().await?;
        Self::get_credential(&conn, LiveCondition::Always, tenant, account, id).await
    }

    async fn list(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Result<Option<Page<Credential>>, StoreError> {
        let conn = self.conn().await?;
        Self::list_credentials(
            &conn,
            LiveCondition::Always,
            tenant,
            account,
            filter,
            page,
            now,
        )
        .await
    }

    async fn get_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> Result<IfLive<Option<Credential>>, StoreError> {
        let conn = self.conn().await?;
        let condition = LiveCondition::of(live);
        let found = Self::get_credential(&conn, condition, tenant, account, id).await?;
        Self::if_live(&conn, live, found, Option::is_some).await
    }

    async fn list_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> Result<IfLive<Option<Page<Credential>>>, StoreError> {
        let conn = self.conn().await?;
        let condition = LiveCondition::of(live);
        let found =
            Self::list_credentials(&conn, condition, tenant, account, filter, page, now).await?;
        Self::if_live(&conn, live, found, Option::is_some).await
    }

    /// One statement (see the module documentation). The account's `active_credential_count`
    /// is not read: it is 0 in the result.
    async fn find_for_mint(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> Result<Option<MintCredential>, StoreError> {
        let mut conn = self.conn().await?;
        let row = credential_of_client(client_id.as_str(), id.as_str())
            .select((MintRow::as_select(), GranteeRow::as_select()))
            .get_result::<(MintRow, GranteeRow)>(&mut conn)
            .await
            .optional()
            .map_err(DbError::from)?;
        row.map(|(credential, account)| {
            Ok(MintCredential {
                uid: credential.uid,
                secret_hash: secret_hash(credential.uid, credential.secret_hash)?,
                expires_at: credential.expires_at,
                account: account.into_domain()?,
            })
        })
        .transpose()
    }

    async fn delete(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let deleted = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let deleted = diesel::delete(
                    credentials::table
                        .filter(credentials::org_id.eq(tenant.as_str()))
                        .filter(credentials::id.eq(id.as_str()))
                        .filter(
                            credentials::service_account_uid
                                .nullable()
                                .eq(account_uid(tenant.as_str(), account.as_str())),
                        ),
                )
                .returning(credentials::uid)
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
    fn a_list_page_is_cacheable_and_resolves_the_account_in_a_scalar_subquery() {
        let tenant = OrgId::parse("org-a").unwrap();
        let account = ServiceAccountId::parse("sa-a").unwrap();
        let now = datetime!(2026-11-28 00:00 UTC);
        let after = Some(Cursor {
            created_at: now,
            uid: Uuid::nil(),
        });
        let filter = CredentialFilter {
            status: Some(CredentialStatus::Active),
        };
        let page = cursor_page(&tenant, &account, filter, now, after, 51)
            .select(CredentialRow::as_select());
        let sql = diesel::debug_query::<Pg, _>(&page).to_string();
        assert!(
            sql.contains(
                "WHERE (((\"credentials\".\"service_account_uid\" = (SELECT \"service_accounts\".\"uid\" \
                 FROM \"service_accounts\" WHERE ((\"service_accounts\".\"org_id\" = $1) AND \
                 (\"service_accounts\".\"id\" = $2)) LIMIT $3))"
            ),
            "{sql}"
        );
        assert!(cacheable(&page), "{sql}");
        let exists = diesel::select(account_exists(tenant.as_str(), account.as_str()));
        assert!(cacheable(&exists));
    }

    #[test]
    fn the_mint_lookup_is_one_cacheable_join_on_client_id_and_credential_id() {
        let query = credential_of_client("sa-ci@org-acme.iam", "cred-a")
            .select((MintRow::as_select(), GranteeRow::as_select()));
        let sql = diesel::debug_query::<Pg, _>(&query).to_string();
        assert!(
            sql.contains(
                "FROM (\"credentials\" INNER JOIN \"service_accounts\" ON \
                 (\"credentials\".\"service_account_uid\" = \"service_accounts\".\"uid\"))"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "WHERE (((\"service_accounts\".\"client_id\" = $1) AND \
                 (\"credentials\".\"id\" = $2)) AND \
                 (\"credentials\".\"org_id\" = \"service_accounts\".\"org_id\"))"
            ),
            "{sql}"
        );
        assert!(cacheable(&query), "{sql}");
    }
}
