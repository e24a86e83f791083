//! Credentials, token liveness and revocations, and last uses of the fakes.

use std::future::{Future, ready};

use time::OffsetDateTime;
use uuid::Uuid;

use super::Memory;
use super::accounts::paginate;
use crate::audit::AuditEvent;
use crate::credential::{Credential, CredentialFilter, MintCredential};
use crate::pagination::{Page, PageRequest};
use crate::ports::{
    CapOutcome, CredentialStore, IdempotencyCompletion, IfLive, LiveToken, StoreError, TokenRef,
    TokenStore, UsageRecorder,
};
use crate::resource_id::{CredentialId, OrgId, ServiceAccountId};
use crate::service_account::{ClientId, ServiceAccountStatus};

impl CredentialStore for Memory {
    fn insert_within_cap(
        &self,
        credential: &Credential,
        cap: u32,
        now: OffsetDateTime,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<CapOutcome, StoreError>> + Send {
        let mut state = self.state();
        let outcome = if !state
            .accounts
            .iter()
            .any(|a| a.uid == credential.service_account_uid)
        {
            CapOutcome::AccountGone
        } else if state
            .credentials
            .iter()
            .filter(|c| {
                c.service_account_uid == credential.service_account_uid && c.expires_at > now
            })
            .count()
            >= usize::try_from(cap).unwrap()
        {
            CapOutcome::LimitReached
        } else {
            if completion.is_some_and(|c| !state.complete(c)) {
                return ready(Ok(CapOutcome::ClaimLost));
            }
            state.credentials.push(credential.clone());
            state.audit.push(audit.clone());
            CapOutcome::Inserted
        };
        ready(Ok(outcome))
    }

    fn get(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<Credential>, StoreError>> + Send {
        let found = self
            .state()
            .credentials
            .iter()
            .find(|c| c.tenant == *tenant && c.service_account_id == *account && c.id == *id)
            .cloned();
        ready(Ok(found))
    }

    fn list(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Page<Credential>>, StoreError>> + Send {
        let state = self.state();
        let exists = state
            .accounts
            .iter()
            .any(|a| a.tenant == *tenant && a.id == *account);
        let result = exists.then(|| {
            let matching: Vec<Credential> = state
                .credentials
                .iter()
                .filter(|c| c.tenant == *tenant && c.service_account_id == *account)
                .filter(|c| filter.status.is_none_or(|s| c.status(now) == s))
                .cloned()
                .collect();
            paginate(matching, page, |c| (c.created_at, c.uid))
        });
        ready(Ok(result))
    }

    fn find_for_mint(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<MintCredential>, StoreError>> + Send {
        let mut state = self.state();
        state.mint_lookups += 1;
        let found = state
            .accounts
            .iter()
            .find(|a| a.client_id == *client_id)
            .and_then(|a| {
                state
                    .credentials
                    .iter()
                    .find(|c| c.service_account_uid == a.uid && c.id == *id)
                    .map(|c| MintCredential {
                        uid: c.uid,
                        secret_hash: c.secret_hash.clone(),
                        expires_at: c.expires_at,
                        account: a.clone().into(),
                    })
            });
        ready(Ok(found))
    }

    fn delete(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut state = self.state();
        let before = state.credentials.len();
        state
            .credentials
            .retain(|c| !(c.tenant == *tenant && c.service_account_id == *account && c.id == *id));
        let deleted = state.credentials.len() < before;
        if deleted {
            state.audit.push(audit.clone());
        }
        ready(Ok(deleted))
    }

    fn get_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<IfLive<Option<Credential>>, StoreError>> + Send {
        self.if_live(live, self.get(tenant, account, id))
    }

    fn list_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        filter: CredentialFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<IfLive<Option<Page<Credential>>>, StoreError>> + Send {
        self.if_live(live, self.list(tenant, account, filter, page, now))
    }
}

impl TokenStore for Memory {
    fn is_live(
        &self,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &CredentialId)>,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.token_live(token, service_account, now)))
    }

    fn revoke(
        &self,
        _tenant: &OrgId,
        token: TokenRef<'_>,
        expires_at: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.state()
            .revoked
            .push((token.issuer.to_owned(), token.id.to_owned(), expires_at));
        ready(Ok(()))
    }
}

impl UsageRecorder for Memory {
    fn record_use(&self, credential: Uuid, at: OffsetDateTime, ip: Option<std::net::IpAddr>) {
        self.state().uses.push((credential, at, ip));
    }
}

impl Memory {
    /// [`TokenStore::is_live`], synchronously.
    fn token_live(
        &self,
        token: TokenRef<'_>,
        service_account: Option<(&ClientId, &CredentialId)>,
        now: OffsetDateTime,
    ) -> bool {
        let state = self.state();
        let revoked = state
            .revoked
            .iter()
            .any(|(issuer, id, _)| issuer == token.issuer && id == token.id);
        let account_ok = service_account.is_none_or(|(client_id, id)| {
            if crate::federated_credential::is_federated(id) {
                state.federated_live(client_id, id)
            } else {
                state.accounts.iter().any(|a| {
                    a.client_id == *client_id
                        && a.status == ServiceAccountStatus::Active
                        && state.credentials.iter().any(|c| {
                            c.service_account_uid == a.uid && c.id == *id && c.expires_at > now
                        })
                })
            }
        });
        !revoked && account_ok
    }

    /// `read`, if `live` is live.
    pub(super) async fn if_live<T>(
        &self,
        live: &LiveToken<'_>,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<IfLive<T>, StoreError> {
        let alive = self.token_live(
            live.token,
            live.service_account.as_ref().map(|(c, id)| (c, *id)),
            live.now,
        );
        let read = read.await?;
        Ok(if alive {
            IfLive::Live(read)
        } else {
            IfLive::Dead
        })
    }
}
