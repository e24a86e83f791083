//! [`TokenStore`] on the `revoked_tokens` table (and, for service-account tokens, on
//! `credentials` joined with `service_accounts`).
//!
//! - `is_live` is one statement, whatever the token:
//!   `SELECT NOT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1 AND issuer = ANY($2))`
//!   for a user token (`$2` is the token's issuer and `''`, which marks revocations recorded
//!   before they named their issuer: see the migration `revocations_by_issuer`), and
//!   for a service-account token additionally `AND EXISTS (SELECT 1 FROM credentials INNER
//!   JOIN service_accounts ON … WHERE client_id = $2 AND credentials.id = $3 AND
//!   credentials.org_id = service_accounts.org_id AND expires_at > $4 AND status = 'active')`.
//!   Both are cacheable prepared statements; the revocation check is one short range of the
//!   primary key `(jti, issuer)`, the credential check two unique-index probes (the lookup of
//!   a mint).
//!   A token minted with a federated credential (its `credential_id` starts with `fc-`) is
//!   checked the same way against `federated_credentials`, joined with `trusted_issuers`, so
//!   an issuer the operator stops trusting stops its tokens too.
//! - The same condition, as [`LiveCondition`], is a `WHERE` term of the reads made for a
//!   request (the `*_if_live` methods): a read under a live token takes no statement more than
//!   the read itself; only when it finds nothing does `SELECT <condition>` follow, to tell a
//!   missing resource from a dead token.
//! - `revoke` is one `INSERT … ON CONFLICT (jti, issuer) DO NOTHING`: revoking twice is not an
//!   error and keeps the first record.
//! - [`PgStore::purge_expired_revocations`] deletes the records of tokens that expired (a
//!   range scan of `revoked_tokens_expires_at_idx`).

use diesel::dsl::{exists, not};
use diesel::expression::{AppearsOnTable, ValidGrouping, is_aggregate};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use iam_domain::federated_credential::is_federated;
use iam_domain::pagination::Page;
use iam_domain::ports::{IfLive, LiveToken, StoreError, TokenRef, TokenStore};
use iam_domain::resource_id::{CredentialId, OrgId};
use iam_domain::service_account::{ClientId, ServiceAccountStatus};
use time::OffsetDateTime;

use crate::credential_store::credential_of_client;
use crate::error::DbError;
use crate::federated_store::federated_of_client;
use crate::schema::{credentials, federated_credentials, revoked_tokens, service_accounts};
use crate::store::PgStore;

/// The issuer of revocations recorded before revocations named their issuer; they apply to
/// their `jti` from every issuer.
const LEGACY_ISSUER: &str = "";

/// `NOT EXISTS (SELECT jti FROM revoked_tokens WHERE jti = $1 AND issuer = ANY($2))`, with
/// `$2` = `[issuer, LEGACY_ISSUER]`.
#[diesel::dsl::auto_type]
fn not_revoked<'a>(jti: &'a str, issuers: [&'a str; 2]) -> _ {
    not(exists(
        revoked_tokens::table
            .filter(revoked_tokens::jti.eq(jti))
            .filter(revoked_tokens::issuer.eq_any(issuers))
            .select(revoked_tokens::jti),
    ))
}

/// `EXISTS (…)`: credential `id` of the account with client id `client_id` exists, is
/// unexpired at `now`, and its account has status `active_status`.
#[diesel::dsl::auto_type]
fn credential_live<'a>(
    client_id: &'a str,
    id: &'a str,
    now: OffsetDateTime,
    active_status: &'static str,
) -> _ {
    let credential: credential_of_client<'a> = credential_of_client(client_id, id);
    exists(
        credential
            .filter(credentials::expires_at.gt(now))
            .filter(service_accounts::status.eq(active_status))
            .select(credentials::uid),
    )
}

/// The condition of `is_live` for a service-account token: not revoked, and its credential
/// live.
#[diesel::dsl::auto_type]
fn service_account_live<'a>(
    token: TokenRef<'a>,
    client_id: &'a str,
    id: &'a str,
    now: OffsetDateTime,
) -> _ {
    let not_revoked: not_revoked<'a> = not_revoked(token.id, [token.issuer, LEGACY_ISSUER]);
    let credential_live: credential_live<'a> =
        credential_live(client_id, id, now, ServiceAccountStatus::Active.as_str());
    not_revoked.and(credential_live)
}

/// The condition of `is_live` for a token minted with federated credential `id`: not
/// revoked, the credential exists and belongs to the active account `client_id`, whose
/// organization still trusts the credential's issuer.
#[diesel::dsl::auto_type]
fn federated_live<'a>(token: TokenRef<'a>, client_id: &'a str, id: &'a str) -> _ {
    let not_revoked: not_revoked<'a> = not_revoked(token.id, [token.issuer, LEGACY_ISSUER]);
    let credential: federated_of_client<'a> = federated_of_client(client_id, id);
    let active: &'static str = ServiceAccountStatus::Active.as_str();
    not_revoked.and(exists(
        credential
            .filter(service_accounts::status.eq(active))
            .select(federated_credentials::uid),
    ))
}

/// A token's liveness as a boolean SQL expression, to be added to the `WHERE` clause of a
/// read ([`PgStore::if_live`]): a row is read only while the caller's token is live.
/// Its subqueries name no table of the statement they are put in (they are uncorrelated:
/// PostgreSQL evaluates them once per statement, as a one-time filter), so it fits any
/// query.
#[derive(Debug, Clone)]
pub(crate) enum LiveCondition<'a> {
    /// No condition (`TRUE`): a read outside a request's liveness check.
    Always,
    /// A user token: not revoked.
    User(not_revoked<'a>),
    /// A service-account token minted with a client secret.
    ServiceAccount(service_account_live<'a>),
    /// A service-account token minted with a federated credential.
    Federated(federated_live<'a>),
}

impl<'a> LiveCondition<'a> {
    /// The condition that `live`'s token is live.
    pub(crate) fn of(live: &'a LiveToken<'_>) -> Self {
        let token = live.token;
        match &live.service_account {
            None => Self::User(not_revoked(token.id, [token.issuer, LEGACY_ISSUER])),
            Some((client_id, id)) if is_federated(id) => {
                Self::Federated(federated_live(token, client_id.as_str(), id.as_str()))
            }
            Some((client_id, id)) => Self::ServiceAccount(service_account_live(
                token,
                client_id.as_str(),
                id.as_str(),
                live.now,
            )),
        }
    }
}

impl Expression for LiveCondition<'_> {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for LiveCondition<'_> {}

impl<QS> SelectableExpression<QS> for LiveCondition<'_> {}

impl<GroupBy> ValidGrouping<GroupBy> for LiveCondition<'_> {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for LiveCondition<'_> {
    // Each variant renders other SQL: statements are cached by their text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for LiveCondition<'_> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            Self::Always => {
                pass.push_sql("TRUE");
                Ok(())
            }
            Self::User(condition) => condition.walk_ast(pass),
            Self::ServiceAccount(condition) => condition.walk_ast(pass),
            Self::Federated(condition) => condition.walk_ast(pass),
        }
    }
}

/// A `revoked_tokens` row as inserted (`revoked_at` defaults to the database's `now()`).
#[derive(Debug, Insertable)]
#[diesel(table_name = revoked_tokens, check_for_backend(diesel::pg::Pg))]
struct NewRevocation<'a> {
    jti: &'a str,
    issuer: &'a str,
    org_id: &'a str,
    expires_at: OffsetDateTime,
}

/// The liveness statement of [`TokenStore::is_live`]: `SELECT <condition>`.
async fn token_is_live(conn: &AsyncPgConnection, live: &LiveToken<'_>) -> Result<bool, StoreError> {
    Ok(diesel::dsl::select(LiveCondition::of(live))
        .get_result::<bool>(&mut &*conn)
        .await
        .map_err(DbError::from)?)
}

impl PgStore {
    /// Completes a read made under [`LiveCondition::of`]`(live)`, so that a dead token read
    /// nothing: when `found` says that `value` holds something, the token is live and the
    /// read took one statement. Otherwise (nothing there, or the token is dead) the liveness
    /// statement follows on `conn` alone to tell the two apart.
    ///
    /// # Errors
    /// [`StoreError`] when the liveness statement fails.
    pub(crate) async fn if_live<T>(
        conn: &AsyncPgConnection,
        live: &LiveToken<'_>,
        value: T,
        found: impl FnOnce(&T) -> bool,
    ) -> Result<IfLive<T>, StoreError> {
        Ok(if found(&value) || token_is_live(conn, live).await? {
            IfLive::Live(value)
        } else {
            IfLive::Dead
        })
    }

    /// Deletes the revocation records of tokens that expired before `now` (they are dead
    /// anyway); returns how many were deleted. For a periodic maintenance task.
    ///
    /// # Errors
    /// [`StoreError`] for backend failures.
    pub async fn purge_expired_revocations(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let deleted =
            diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.lt(now)))
                .execute(&mut conn)
                .await
                .map_err(DbError::from)?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }

    /// The plan Postgres chooses for [`TokenStore::is_live`] of a service-account token
    /// (`EXPLAIN` output lines).
    ///
    /// # Errors
    /// [`StoreError`] for backend failures.
    #[cfg(feature = "test-support")]
    pub async fn explain_is_live(
        &self,
        token: TokenRef<'_>,
        client_id: &ClientId,
        id: &CredentialId,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let query = diesel::dsl::select(service_account_live(
            token,
            client_id.as_str(),
            id.as_str(),
            now,
        ));
        let mut conn = self.conn().await?;
        Ok(crate::test_support::Explain(query)
            .load::<String>(&mut conn)
            .await
            .map_err(DbError::from)?)
    }
}

/// Whether a page read under a [`LiveCondition`] read anything (so the condition held): an
/// item, or a count above zero.
pub(crate) fn read_any<T>(page: &Page<T>) -> bool {
    !page.items.is_empty() || page.total.is_some_and(|total| total > 0)
}

impl TokenStore for PgStore {
    async fn is_live(
        &self,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &CredentialId)>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let live = LiveToken {
            token,
            service_account: service_account.map(|(client_id, id)| (client_id.clone(), id)),
            now,
        };
        let conn = self.conn().await?;
        token_is_live(&conn, &live).await
    }

    async fn revoke(
        &self,
        tenant: &OrgId,
        token: TokenRef<'_>,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::insert_into(revoked_tokens::table)
            .values(NewRevocation {
                jti: token.id,
                issuer: token.issuer,
                org_id: tenant.as_str(),
                expires_at,
            })
            .on_conflict((revoked_tokens::jti, revoked_tokens::issuer))
            .do_nothing()
            .execute(&mut conn)
            .await
            .map_err(DbError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn cacheable(query: &impl QueryFragment<Pg>) -> bool {
        query.is_safe_to_cache_prepared(&Pg).unwrap_or(false)
    }

    #[test]
    fn both_liveness_checks_are_single_cacheable_statements() {
        let token = TokenRef {
            issuer: "https://iam.test",
            id: "jti-1",
        };
        let live = LiveToken {
            token,
            service_account: None,
            now: datetime!(2026-11-28 00:00 UTC),
        };
        let user = diesel::dsl::select(LiveCondition::of(&live));
        let sql = diesel::debug_query::<Pg, _>(&user).to_string();
        assert!(
            sql.starts_with(
                "SELECT  NOT (EXISTS (SELECT \"revoked_tokens\".\"jti\" FROM \"revoked_tokens\" "
            ) && sql.contains(
                "WHERE ((\"revoked_tokens\".\"jti\" = $1) AND (\"revoked_tokens\".\"issuer\" = ANY($2)))"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("binds: [\"jti-1\", [\"https://iam.test\", \"\"]]"),
            "{sql}"
        );
        assert!(cacheable(&user), "{sql}");

        let now = datetime!(2026-11-28 00:00 UTC);
        let sa = diesel::dsl::select(service_account_live(
            token,
            "sa-ci@org-acme.iam",
            "cred-a",
            now,
        ));
        let sql = diesel::debug_query::<Pg, _>(&sa).to_string();
        for part in [
            "SELECT ( NOT (EXISTS (SELECT \"revoked_tokens\".\"jti\" FROM",
            "(\"revoked_tokens\".\"issuer\" = ANY($2))",
            " AND EXISTS (SELECT \"credentials\".\"uid\" FROM (\"credentials\" INNER JOIN",
            "(\"service_accounts\".\"client_id\" = $3)",
            "(\"credentials\".\"id\" = $4)",
            "(\"credentials\".\"org_id\" = \"service_accounts\".\"org_id\")",
            "(\"credentials\".\"expires_at\" > $5)",
            "(\"service_accounts\".\"status\" = $6)",
        ] {
            assert!(sql.contains(part), "{part} not in {sql}");
        }
        assert!(sql.contains("\"sa-ci@org-acme.iam\", \"cred-a\""), "{sql}");
        assert!(sql.contains("\"active\"]"), "{sql}");
        assert!(cacheable(&sa), "{sql}");
    }
}
