//! Federated credentials and the verification of external tokens, in the fakes.
//!
//! [`FakeAssertions`] stands in for the JWKS fetcher: its "tokens" are `iss|sub|aud|exp` in
//! clear text (`exp` as a Unix time), "signed" when they end in `|signed`, and its issuers'
//! keys can be taken away ([`FakeAssertions::keys_down`]).

use std::future::{Future, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;

use super::accounts::paginate;
use super::{Memory, State};
use crate::audit::AuditEvent;
use crate::federated_credential::{
    ExternalSubject, FederatedCredential, Issuer, TrustedIssuer, is_federated,
};
use crate::pagination::{Page, PageRequest};
use crate::ports::{
    AssertionRejected, AssertionVerifier, CapOutcome, FederatedCredentialStore, FederatedMatch,
    IdempotencyCompletion, IfLive, LiveToken, StoreError, VerifiedAssertion,
};
use crate::resource_id::{CredentialId, OrgId, ServiceAccountId};
use crate::service_account::{ClientId, ServiceAccountStatus};

impl FederatedCredentialStore for Memory {
    fn insert_federated(
        &self,
        credential: &FederatedCredential,
        cap: u32,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<CapOutcome, StoreError>> + Send {
        let mut state = self.state();
        let uid = credential.service_account_uid;
        let outcome = if !state.accounts.iter().any(|a| a.uid == uid) {
            CapOutcome::AccountGone
        } else if state
            .federated
            .iter()
            .filter(|c| c.service_account_uid == uid)
            .count()
            >= usize::try_from(cap).unwrap()
        {
            CapOutcome::LimitReached
        } else if completion.is_some_and(|c| !state.complete(c)) {
            CapOutcome::ClaimLost
        } else {
            state.federated.push(credential.clone());
            state.audit.push(audit.clone());
            CapOutcome::Inserted
        };
        ready(Ok(outcome))
    }

    fn get_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<Option<FederatedCredential>, StoreError>> + Send {
        let found = self
            .state()
            .federated
            .iter()
            .find(|c| c.tenant == *tenant && c.service_account_id == *account && c.id == *id)
            .cloned();
        ready(Ok(found))
    }

    fn list_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Option<Page<FederatedCredential>>, StoreError>> + Send {
        let state = self.state();
        let exists = state
            .accounts
            .iter()
            .any(|a| a.tenant == *tenant && a.id == *account);
        let result = exists.then(|| {
            let matching: Vec<FederatedCredential> = state
                .federated
                .iter()
                .filter(|c| c.tenant == *tenant && c.service_account_id == *account)
                .cloned()
                .collect();
            paginate(matching, page, |c| (c.created_at, c.uid))
        });
        ready(Ok(result))
    }

    fn delete_federated(
        &self,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut state = self.state();
        let before = state.federated.len();
        state
            .federated
            .retain(|c| !(c.tenant == *tenant && c.service_account_id == *account && c.id == *id));
        let deleted = state.federated.len() < before;
        if deleted {
            state.audit.push(audit.clone());
        }
        ready(Ok(deleted))
    }

    fn find_for_exchange(
        &self,
        client_id: &ClientId,
        issuer: &str,
        subject: &str,
    ) -> impl Future<Output = Result<Option<FederatedMatch>, StoreError>> + Send {
        let state = self.state();
        let found = state
            .accounts
            .iter()
            .find(|a| a.client_id == *client_id)
            .and_then(|account| {
                let trusted = state
                    .trusted
                    .iter()
                    .find(|(org, t)| *org == account.tenant && t.issuer.as_str() == issuer)?
                    .1
                    .clone();
                let credentials: Vec<FederatedCredential> = state
                    .federated
                    .iter()
                    .filter(|c| {
                        c.service_account_uid == account.uid
                            && c.issuer.as_str() == issuer
                            && c.subject.as_str() == subject
                    })
                    .cloned()
                    .collect();
                (!credentials.is_empty()).then(|| FederatedMatch {
                    account: account.clone().into(),
                    credentials,
                    trusted,
                })
            });
        ready(Ok(found))
    }

    fn get_federated_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<IfLive<Option<FederatedCredential>>, StoreError>> + Send {
        self.if_live(live, self.get_federated(tenant, account, id))
    }

    fn list_federated_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        account: &ServiceAccountId,
        page: PageRequest,
    ) -> impl Future<Output = Result<IfLive<Option<Page<FederatedCredential>>>, StoreError>> + Send
    {
        self.if_live(live, self.list_federated(tenant, account, page))
    }
}

impl State {
    /// Whether the federated credential `id` of the active account with `client_id` exists
    /// and its issuer is still trusted (a federated token's liveness in the fakes).
    pub(super) fn federated_live(&self, client_id: &ClientId, id: &CredentialId) -> bool {
        let state = self;
        is_federated(id)
            && state.accounts.iter().any(|a| {
                a.client_id == *client_id
                    && a.status == ServiceAccountStatus::Active
                    && state.federated.iter().any(|c| {
                        c.service_account_uid == a.uid
                            && c.id == *id
                            && state
                                .trusted
                                .iter()
                                .any(|(org, t)| *org == a.tenant && t.issuer == c.issuer)
                    })
            })
    }
}

/// The fake external-token verifier (see the module documentation).
#[derive(Clone, Default)]
pub struct FakeAssertions {
    down: Arc<AtomicBool>,
}

impl FakeAssertions {
    /// A token of the fakes: `iss|sub|aud|exp|signed`.
    pub fn token(issuer: &str, subject: &str, audience: &str, exp: OffsetDateTime) -> String {
        format!(
            "{issuer}|{subject}|{audience}|{}|signed",
            exp.unix_timestamp()
        )
    }

    /// Takes every issuer's keys away (`true`) or brings them back.
    pub fn keys_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl AssertionVerifier for FakeAssertions {
    fn peek(&self, assertion: &str) -> Option<(String, String)> {
        let mut parts = assertion.split('|');
        Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
    }

    fn verify(
        &self,
        assertion: &str,
        issuer: &TrustedIssuer,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<VerifiedAssertion, AssertionRejected>> + Send {
        let invalid = |why: &str| AssertionRejected::Invalid(why.to_owned());
        let result = if self.down.load(Ordering::SeqCst) {
            Err(AssertionRejected::KeysUnavailable("down".into()))
        } else {
            match assertion.split('|').collect::<Vec<_>>()[..] {
                [iss, sub, aud, exp, "signed"] if iss == issuer.issuer.as_str() => exp
                    .parse::<i64>()
                    .ok()
                    .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp).ok())
                    .filter(|exp| *exp > now)
                    .ok_or_else(|| invalid("expired"))
                    .and_then(|expires_at| {
                        Ok(VerifiedAssertion {
                            issuer: Issuer::parse(iss).map_err(|_| invalid("iss"))?,
                            subject: ExternalSubject::parse(sub).map_err(|_| invalid("sub"))?,
                            audiences: vec![aud.to_owned()],
                            expires_at,
                        })
                    }),
                _ => Err(invalid("bad signature")),
            }
        };
        ready(result)
    }
}
