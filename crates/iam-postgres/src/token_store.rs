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
//! - `revoke` is one `INSERT … ON CONFLICT (jti, issuer) DO NOTHING`: revoking twice is not an
//!   error and keeps the first record.
//! - [`PgStore::purge_expired_revocations`] deletes the records of tokens that expired (a
//!   range scan of `revoked_tokens_expires_at_idx`).

use diesel::dsl::{exists, not};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use iam_domain::federated_credential::is_federated;
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

/// The `SELECT` of `is_live` for a user token.
#[diesel::dsl::auto_type]
fn user_token_live<'a>(token: TokenRef<'a>) -> _ {
    let not_revoked: not_revoked<'a> = not_revoked(token.id, [token.issuer, LEGACY_ISSUER]);
    diesel::dsl::select(not_revoked)
}

/// The `SELECT` of `is_live` for a service-account token.
#[diesel::dsl::auto_type]
fn service_account_token_live<'a>(
    token: TokenRef<'a>,
    client_id: &'a str,
    id: &'a str,
    now: OffsetDateTime,
) -> _ {
    let not_revoked: not_revoked<'a> = not_revoked(token.id, [token.issuer, LEGACY_ISSUER]);
    let credential_live: credential_live<'a> =
        credential_live(client_id, id, now, ServiceAccountStatus::Active.as_str());
    diesel::dsl::select(not_revoked.and(credential_live))
}

/// The `SELECT` of `is_live` for a token minted with federated credential `id`: not revoked,
/// the credential exists and belongs to the active account `client_id`, whose organization
/// still trusts the credential's issuer.
#[diesel::dsl::auto_type]
fn federated_token_live<'a>(token: TokenRef<'a>, client_id: &'a str, id: &'a str) -> _ {
    let not_revoked: not_revoked<'a> = not_revoked(token.id, [token.issuer, LEGACY_ISSUER]);
    let credential: federated_of_client<'a> = federated_of_client(client_id, id);
    let active: &'static str = ServiceAccountStatus::Active.as_str();
    diesel::dsl::select(
        not_revoked.and(exists(
            credential
                .filter(service_accounts::status.eq(active))
                .select(federated_credentials::uid),
        )),
    )
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

/// The liveness statement of [`TokenStore::is_live`] on `conn` (which may be pipelining
/// other statements: see [`PgStore::if_live`]).
async fn token_is_live(
    conn: &AsyncPgConnection,
    token: TokenRef<'_>,
    service_account: Option<(&ClientId, &CredentialId)>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut conn = conn;
    let live = match service_account {
        None => user_token_live(token).get_result::<bool>(&mut conn).await,
        Some((client_id, id)) if is_federated(id) => {
            federated_token_live(token, client_id.as_str(), id.as_str())
                .get_result::<bool>(&mut conn)
                .await
        }
        Some((client_id, id)) => {
            service_account_token_live(token, client_id.as_str(), id.as_str(), now)
                .get_result::<bool>(&mut conn)
                .await
        }
    };
    Ok(live.map_err(DbError::from)?)
}

impl PgStore {
    /// `read` on one connection together with the liveness statement of `live`, both sent
    /// at once (pipelined): one round trip. `read` must not wait for anything before sending
    /// its first statement, and should send no more than it would alone.
    ///
    /// # Errors
    /// [`StoreError`] when either fails.
    pub(crate) async fn if_live<T>(
        &self,
        live: &LiveToken<'_>,
        read: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, StoreError>,
    ) -> Result<IfLive<T>, StoreError> {
        let conn = self.conn().await?;
        let alive = token_is_live(
            &conn,
            live.token,
            live.service_account.as_ref().map(|(c, id)| (c, *id)),
            live.now,
        );
        let (alive, value) = tokio::try_join!(alive, read(&conn))?;
        Ok(if alive {
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
        let query = service_account_token_live(token, client_id.as_str(), id.as_str(), now);
        let mut conn = self.conn().await?;
        Ok(crate::test_support::Explain(query)
            .load::<String>(&mut conn)
            .await
            .map_err(DbError::from)?)
    }
}

impl TokenStore for PgStore {
    async fn is_live(
        &self,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &CredentialId)>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        token_is_live(&conn, token, service_account, now).await
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
    use diesel::pg::Pg;
    use diesel::query_builder::QueryFragment;
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
        let user = user_token_live(token);
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
        let sa = service_account_token_live(token, "sa-ci@org-acme.iam", "cred-a", now);
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
