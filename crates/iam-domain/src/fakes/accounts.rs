//! The directory and service accounts of the fakes.

use std::future::{Future, ready};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Memory, State};
use crate::audit::AuditEvent;
use crate::federated_credential::TrustedIssuer;
use crate::organization::Organization;
use crate::pagination::{Cursor, Page, PagePosition, PageRequest};
use crate::ports::{
    Directory, IdempotencyCompletion, IfLive, InsertError, LiveToken, ServiceAccountStore,
    StoreError, UpdateOutcome,
};
use crate::resource_id::{OrgId, ProjectId, ServiceAccountId};
use crate::role::RoleSlug;
use crate::service_account::{Revision, ServiceAccount, ServiceAccountFilter};

impl Directory for Memory {
    fn organization(
        &self,
        tenant: &OrgId,
    ) -> impl Future<Output = Result<Option<Organization>, StoreError>> + Send {
        ready(Ok(self
            .state()
            .orgs
            .iter()
            .find(|o| o.id == *tenant)
            .cloned()))
    }

    fn project_exists(
        &self,
        tenant: &OrgId,
        project: &ProjectId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let found = self
            .state()
            .projects
            .iter()
            .any(|(o, p)| o == tenant && p == project);
        ready(Ok(found))
    }

    fn missing_roles(
        &self,
        tenant: &OrgId,
        roles: &[RoleSlug],
    ) -> impl Future<Output = Result<Vec<RoleSlug>, StoreError>> + Send {
        let state = self.state();
        let missing = roles
            .iter()
            .filter(|r| !state.roles.iter().any(|(o, c)| o == tenant && c == *r))
            .cloned()
            .collect();
        ready(Ok(missing))
    }

    fn trusted_issuer(
        &self,
        tenant: &OrgId,
        issuer: &str,
    ) -> impl Future<Output = Result<Option<TrustedIssuer>, StoreError>> + Send {
        let found = self
            .state()
            .trusted
            .iter()
            .find(|(o, t)| o == tenant && t.issuer.as_str() == issuer)
            .map(|(_, t)| t.clone());
        ready(Ok(found))
    }
}

impl ServiceAccountStore for Memory {
    fn insert(
        &self,
        account: &ServiceAccount,
        audit: &AuditEvent,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<(), InsertError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e.into()));
        }
        let mut state = self.state();
        let result = if state
            .accounts
            .iter()
            .any(|a| a.tenant == account.tenant && a.id == account.id)
        {
            Err(InsertError::Duplicate)
        } else if completion.is_some_and(|c| !state.complete(c)) {
            Err(InsertError::ClaimLost)
        } else {
            state.accounts.push(account.clone());
            state.audit.push(audit.clone());
            Ok(())
        };
        ready(result)
    }

    fn get(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<ServiceAccount>, StoreError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e));
        }
        let state = self.state();
        let found = state
            .accounts
            .iter()
            .find(|a| a.tenant == *tenant && a.id == *id)
            .map(|a| state.with_count(a, now));
        ready(Ok(found))
    }

    fn list(
        &self,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Page<ServiceAccount>, StoreError>> + Send {
        if let Err(e) = self.up() {
            return ready(Err(e));
        }
        let state = self.state();
        let matching: Vec<ServiceAccount> = state
            .accounts
            .iter()
            .filter(|a| a.tenant == *tenant)
            .filter(|a| filter.scope.is_none_or(|s| a.target.scope() == s))
            .filter(|a| {
                filter
                    .target_id
                    .as_ref()
                    .is_none_or(|id| a.target.id() == id.as_str())
            })
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .map(|a| state.with_count(a, now))
            .collect();
        ready(Ok(paginate(matching, page, |a| (a.created_at, a.uid))))
    }

    fn update(
        &self,
        account: &ServiceAccount,
        expected: Revision,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send {
        let mut state = self.state();
        if let Some(outcome) = state.next_update.take() {
            return ready(Ok(outcome));
        }
        let outcome = match state.accounts.iter_mut().find(|a| a.uid == account.uid) {
            None => UpdateOutcome::Gone,
            Some(stored) if stored.revision != expected => UpdateOutcome::Stale,
            Some(stored) => {
                *stored = account.clone();
                state.audit.push(audit.clone());
                UpdateOutcome::Updated
            }
        };
        ready(Ok(outcome))
    }

    fn delete(
        &self,
        tenant: &OrgId,
        id: &ServiceAccountId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut state = self.state();
        let before = state.accounts.len();
        state
            .accounts
            .retain(|a| !(a.tenant == *tenant && a.id == *id));
        let deleted = state.accounts.len() < before;
        if deleted {
            // Like the database's ON DELETE CASCADE.
            state
                .credentials
                .retain(|c| !(c.tenant == *tenant && c.service_account_id == *id));
            state.audit.push(audit.clone());
        }
        ready(Ok(deleted))
    }

    fn get_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        id: &ServiceAccountId,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<IfLive<Option<ServiceAccount>>, StoreError>> + Send {
        self.if_live(live, self.get(tenant, id, now))
    }

    fn list_if_live(
        &self,
        live: &LiveToken<'_>,
        tenant: &OrgId,
        filter: &ServiceAccountFilter,
        page: PageRequest,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<IfLive<Page<ServiceAccount>>, StoreError>> + Send {
        self.if_live(live, self.list(tenant, filter, page, now))
    }
}

impl State {
    fn with_count(&self, account: &ServiceAccount, now: OffsetDateTime) -> ServiceAccount {
        let active = self
            .credentials
            .iter()
            .filter(|c| c.service_account_uid == account.uid && c.expires_at > now)
            .count();
        ServiceAccount {
            active_credential_count: u32::try_from(active).unwrap(),
            ..account.clone()
        }
    }
}

/// Cursor or offset paging of `items` ordered by `key`, as the store contract describes.
pub(super) fn paginate<T>(
    mut items: Vec<T>,
    page: PageRequest,
    key: impl Fn(&T) -> (OffsetDateTime, Uuid),
) -> Page<T> {
    items.sort_by_key(|item| key(item));
    let size = usize::from(page.size.get());
    match page.position {
        PagePosition::Offset(offset) => Page {
            total: Some(items.len() as u64),
            items: items
                .into_iter()
                .skip(usize::try_from(offset).unwrap())
                .take(size)
                .collect(),
            next: None,
        },
        PagePosition::After(cursor) => {
            let rest: Vec<T> = items
                .into_iter()
                .filter(|item| cursor.is_none_or(|c| key(item) > (c.created_at, c.uid)))
                .collect();
            let more = rest.len() > size;
            let items: Vec<T> = rest.into_iter().take(size).collect();
            let next = items.last().filter(|_| more).map(|last| {
                let (created_at, uid) = key(last);
                Cursor { created_at, uid }
            });
            Page {
                items,
                next,
                total: None,
            }
        }
    }
}
