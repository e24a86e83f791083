//! [`FederatedCredentialStore`] on the `federated_credentials` table (SPEC §9).
//!
//! The statements mirror those of client secrets (`credential_store`):
//! - `insert_federated` is one `READ COMMITTED` transaction that locks the parent account row,
//!   counts its federated credentials in a statement of its own, inserts, and writes the audit
//!   event and the idempotency record: the cap of 20 holds under any concurrency and across
//!   instances.
//! - `get_federated` is one statement; `list_federated` pipelines "does the account exist"
//!   with the page (and, in offset mode, the total) on one connection: one round trip.
//! - `find_for_exchange` (the hot path of a federated mint) is one statement: the account by
//!   its unique client id, joined with its federated credentials for the token's issuer and
//!   subject (`federated_credentials_match_idx`), joined with the organization's trust in that
//!   issuer (the primary key of `trusted_issuers`).

use diesel::dsl::count_star;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use iam_domain::audit::AuditEvent;
use iam_domain::federated_credential::{Audience, ExternalSubject, FederatedCredential, Issuer};
use iam_domain::pagination::{Cursor, Page, PagePosition, PageRequest};
use iam_domain::ports::{
    CapOutcome, FederatedCredentialStore, FederatedMatch, IdempotencyCompletion, IfLive, LiveToken,
    StoreError,
};
use iam_domain::principal::Subject;
use iam_domain::resource_id::{CredentialId, OrgId, ServiceAccountId};
use iam_domain::service_account::{ClientId, Description};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::credential_store::account_exists;
use crate::directory::TrustedIssuerRow;
use crate::error::{DbError, corrupt};
use crate::idempotency::record_completion;
use crate::keyset::{cursor_page_if, offset_page_if, row_greater_than};
use crate::schema::{federated_credentials, service_accounts, trusted_issuers};
use crate::service_account_store::GranteeRow;
use crate::store::PgStore;
use crate::token_store::LiveCondition;

/// A `federated_credentials` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = federated_credentials, check_for_backend(Pg))]
pub(crate) struct FederatedRow {
    uid: Uuid,
    org_id: String,
    service_account_uid: Uuid,
    id: String,
    issuer: String,
    subject: String,
    audiences: Vec<Option<String>>,
    description: Option<String>,
    created_by: String,
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    last_used_ip: Option<String>,
}

impl FederatedRow {
    fn from_domain(credential: &FederatedCredential) -> Self {
        Self {
            uid: credential.uid,
            org_id: credential.tenant.as_str().to_owned(),
            service_account_uid: credential.service_account_uid,
            id: credential.id.as_str().to_owned(),
            issuer: credential.issuer.as_str().to_owned(),
            subject: credential.subject.as_str().to_owned(),
            audiences: credential
                .audiences
                .iter()
                .map(|a| Some(a.as_str().to_owned()))
                .collect(),
            description: credential
                .description
                .as_ref()
                .map(|d| d.as_str().to_owned()),
            created_by: credential.created_by.as_str().to_owned(),
            created_at: credential.created_at,
            last_used_at: credential.last_used_at,
            last_used_ip: None,
        }
    }

    /// The credential, given the id of its account (which lives in `service_accounts`).
    fn into_domain(
        self,
        service_account_id: ServiceAccountId,
    ) -> Result<FederatedCredential, StoreError> {
        let uid = self.uid;
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            corrupt(format_args!("federated credential {uid}: {field}: {e}"))
        };
        let audiences = self
            .audiences
            .into_iter()
            .map(|a| {
                Audience::parse(a.ok_or_else(|| bad("audiences", &"NULL element"))?)
                    .map_err(|e| bad("audiences", &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FederatedCredential {
            uid,
            tenant: OrgId::parse(self.org_id).map_err(|e| bad("org_id", &e))?,
            service_account_uid: self.service_account_uid,
            service_account_id,
            id: CredentialId::parse(self.id).map_err(|e| bad("id", &e))?,
            issuer: Issuer::parse(self.issuer).map_err(|e| bad("issuer", &e))?,
            subject: ExternalSubject::parse(self.subject).map_err(|e| bad("subject", &e))?,
            audiences,
            description: self
                .description
                .map(Description::parse)
                .transpose()
                .map_err(|e| bad("description", &e))?,
            created_by: Subject::parse(self.created_by).map_err(|e| bad("created_by", &e))?,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        })
    }
}

/// `(SELECT uid FROM service_accounts WHERE org_id = tenant AND id = account LIMIT 1)`.
#[diesel::dsl::auto_type]
fn account_uid<'a>(tenant: &'a str, account: &'a str) -> _ {
    service_accounts::table
        .filter(service_accounts::org_id.eq(tenant))
        .filter(service_accounts::id.eq(account))
        .select(service_accounts::uid)
        .single_value()
}

/// The federated credentials of account `account` of `tenant`, as a boxed query.
fn of_account<'a>(
    tenant: &'a OrgId,
    account: &'a ServiceAccountId,
) -> federated_credentials::BoxedQuery<'a, Pg> {
    federated_credentials::table
        .filter(
            federated_credentials::service_account_uid
                .nullable()
                .eq(account_uid(tenant.as_str(), account.as_str())),
        )
        .order((
            federated_credentials::created_at.asc(),
            federated_credentials::uid.asc(),
        ))
        .into_boxed()
}

/// The federated credential `id` of the account whose client id is `client_id`, joined with
/// that account and the organization's trust in the credential's issuer: what the liveness
/// of a federated token checks (`token_store`).
#[diesel::dsl::auto_type]
pub(crate) fn federated_of_client<'a>(client_id: &'a str, id: &'a str) -> _ {
    federated_credentials::table
        .inner_join(service_accounts::table)
        .inner_join(
            trusted_issuers::table.on(trusted_issuers::org_id
                .eq(service_accounts::org_id)
                .and(trusted_issuers::issuer.eq(federated_credentials::issuer))),
        )
        .filter(service_accounts::client_id.eq(client_id))
        .filter(federated_credentials::id.eq(id))
        .filter(federated_credentials::org_id.eq(service_accounts::org_id))
}

/// Why the cap transaction did not insert.
enum CapFailure {
    Refused(CapOutcome),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for CapFailure {
    fn from(e: diesel::result::Error) -> Self {
        CapFailure::Db(e)
    }
}

impl PgStore {
    /// Federated credential `id` of `account` in `tenant`: one statement.
    async fn get_federated_on(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> Result<Option<FederatedCredential>, StoreError> {
        let row = federated_credentials::table
            .inner_join(service_accounts::table)
            .filter(federated_credentials::org_id.eq(tenant.as_str()))
            .filter(federated_credentials::id.eq(id.as_str()))
            .filter(service_accounts::org_id.eq(tenant.as_str()))
            .filter(service_accounts::id.eq(account.as_str()))
            .filter(live)
            .select(FederatedRow::as_select())
            .first::<FederatedRow>(&mut &*conn)
            .await
            .optional()
            .map_err(DbError::from)?;
        row.map(|row| row.into_domain(account.clone())).transpose()
    }

    async fn list_federated_page(
        conn: &AsyncPgConnection,
        live: LiveCondition<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> Result<Option<Page<FederatedCredential>>, StoreError> {
        let size = page.size.get();
        // All statements are sent at once (pipelined on one connection): one round trip.
        let exists = diesel::select(account_exists(tenant.as_str(), account.as_str()).and(live))
            .get_result::<bool>(&mut &*conn);
        let convert = |row: FederatedRow| row.into_domain(account.clone());
        match page.position {
            PagePosition::After(after) => {
                let mut query = of_account(tenant, account);
                if let Some(cursor) = after {
                    query = query.filter(row_greater_than(
                        (
                            federated_credentials::created_at,
                            federated_credentials::uid,
                        ),
                        (
                            cursor.created_at.into_sql::<Timestamptz>(),
                            cursor.uid.into_sql::<SqlUuid>(),
                        ),
                    ));
                }
                // One more than asked: whether it exists decides `next`.
                let rows = query
                    .limit(i64::from(size) + 1)
                    .select(FederatedRow::as_select())
                    .load::<FederatedRow>(&mut &*conn);
                cursor_page_if(exists, rows, size, convert, |c| Cursor {
                    created_at: c.created_at,
                    uid: c.uid,
                })
                .await
            }
            PagePosition::Offset(offset) => {
                let rows = of_account(tenant, account)
                    .offset(i64::try_from(offset).unwrap_or(i64::MAX))
                    .limit(i64::from(size))
                    .select(FederatedRow::as_select())
                    .load::<FederatedRow>(&mut &*conn);
                let total = federated_credentials::table
                    .filter(
                        federated_credentials::service_account_uid
                            .nullable()
                            .eq(account_uid(tenant.as_str(), account.as_str())),
                    )
                    .select(count_star())
                    .get_result::<i64>(&mut &*conn);
                offset_page_if(exists, rows, total, convert).await
            }
        }
    }
}

impl FederatedCredentialStore for PgStore {
    async fn insert_federated(
        &self,
        credential: &FederatedCredential,
        cap: u32,
        event: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> Result<CapOutcome, StoreError> {
        let row = FederatedRow::from_domain(credential);
        let cap = i64::from(cap);
        let mut conn = self.conn().await?;
        let result = conn
            .build_transaction()
            // The count must see what the previous holder of the account lock committed.
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
                let existing = federated_credentials::table
                    .filter(federated_credentials::service_account_uid.eq(row.service_account_uid))
                    .select(count_star())
                    .get_result::<i64>(conn)
                    .await?;
                if existing >= cap {
                    return Err(CapFailure::Refused(CapOutcome::LimitReached));
                }
                diesel::insert_into(federated_credentials::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
                audit::record(conn, event).await?;
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

    async fn get_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> Result<Option<FederatedCredential>, StoreError> {
        let conn = self.conn().await?;
        Self::get_federated_on(&conn, LiveCondition::Always, tenant, account, id).await
    }

    async fn list_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> Result<Option<Page<FederatedCredential>>, StoreError> {
        let conn = self.conn().await?;
        Self::list_federated_page(&conn, LiveCondition::Always, tenant, account, page).await
    }

    async fn get_federated_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> Result<IfLive<Option<FederatedCredential>>, StoreError> {
        let conn = self.conn().await?;
        let condition = LiveCondition::of(live);
        let found = Self::get_federated_on(&conn, condition, tenant, account, id).await?;
        Self::if_live(&conn, live, found, Option::is_some).await
    }

    async fn list_federated_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> Result<IfLive<Option<Page<FederatedCredential>>>, StoreError> {
        let conn = self.conn().await?;
        let condition = LiveCondition::of(live);
        let found = Self::list_federated_page(&conn, condition, tenant, account, page).await?;
        Self::if_live(&conn, live, found, Option::is_some).await
    }

    async fn delete_federated(
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
                    federated_credentials::table
                        .filter(federated_credentials::org_id.eq(tenant.as_str()))
                        .filter(federated_credentials::id.eq(id.as_str()))
                        .filter(
                            federated_credentials::service_account_uid
                                .nullable()
                                .eq(account_uid(tenant.as_str(), account.as_str())),
                        ),
                )
                .returning(federated_credentials::uid)
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

    async fn find_for_exchange(
        &self,
        client_id: &ClientId,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<FederatedMatch>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = federated_credentials::table
            .inner_join(service_accounts::table)
            .inner_join(
                trusted_issuers::table.on(trusted_issuers::org_id
                    .eq(service_accounts::org_id)
                    .and(trusted_issuers::issuer.eq(federated_credentials::issuer))),
            )
            .filter(service_accounts::client_id.eq(client_id.as_str()))
            .filter(federated_credentials::issuer.eq(issuer))
            .filter(federated_credentials::subject.eq(subject))
            .filter(federated_credentials::org_id.eq(service_accounts::org_id))
            .order((
                federated_credentials::created_at.asc(),
                federated_credentials::uid.asc(),
            ))
            .select((
                FederatedRow::as_select(),
                service_accounts::id,
                GranteeRow::as_select(),
                TrustedIssuerRow::as_select(),
            ))
            .load::<(FederatedRow, String, GranteeRow, TrustedIssuerRow)>(&mut conn)
            .await
            .map_err(DbError::from)?;
        let mut rows = rows.into_iter();
        let Some((first, account_id, account, trusted)) = rows.next() else {
            return Ok(None);
        };
        let account_id = ServiceAccountId::parse(account_id)
            .map_err(|e| corrupt(format_args!("service account id: {e}")))?;
        // One row per credential: the trust is joined by its primary key.
        let credentials = std::iter::once(first)
            .chain(rows.map(|(row, ..)| row))
            .map(|row| row.into_domain(account_id.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(FederatedMatch {
            account: account.into_domain()?,
            credentials,
            trusted: trusted.into_domain()?,
        }))
    }
}
