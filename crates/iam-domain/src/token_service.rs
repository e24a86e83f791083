//! The token service: a workload exchanges its client id and secret (SPEC §6), or a token of
//! an issuer it is federated with (SPEC §9), for a short-lived access grant, and every later
//! use of such a token is checked for liveness.
//!
//! Every way a mint can fail on the client's side — unknown client, wrong secret, bad
//! checksum, expired or deleted credential, disabled account — is the same
//! [`MintError::InvalidClient`], and costs the same: an unknown credential still costs one
//! HMAC. Narrowing beyond the account's scope or roles is [`MintError::NarrowingRefused`].
//!
//! Failed mints are counted by a [`MintThrottle`]; a client id or address over its limit is
//! refused with [`MintError::Throttled`] *first*, before the secret is parsed, the credential
//! looked up or anything hashed.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

use crate::client_secret::{ClientSecret, SecretHasher};
use crate::ports::{
    Adapters, AssertionVerifier, Clock, CredentialStore, Directory, FederatedCredentialStore,
    IdGenerator, LiveToken, StoreError, TokenRef, TokenStore, UsageRecorder,
};
use crate::principal::Principal;
use crate::resource_id::{CredentialId, OrgId};
use crate::role::RoleSlug;
use crate::scope::{Scope, ScopeTarget};
use crate::service_account::Grantee;
use crate::service_account::{ClientId, ServiceAccountStatus};
use crate::throttle::MintThrottle;

/// `scope_narrowing` of a mint as requested: ask for less than the account has. The requested
/// `scopeId` is parsed once, by the mint, into a [`ScopeTarget`] of the account's organization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// A narrower scope (an organization-scoped account may ask for one of its projects).
    pub scope: Option<Scope>,
    /// The requested `scopeId` for `scope`.
    pub scope_id: Option<String>,
    /// A subset of the account's roles.
    pub roles: Option<Vec<RoleSlug>>,
}

/// What a successful mint grants; the HTTP adapter signs it as a JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `sub`: the account's client id.
    pub subject: ClientId,
    /// `tenant_id`.
    pub tenant: OrgId,
    /// `scope` and `scope_id`.
    pub target: ScopeTarget,
    /// `roles`.
    pub roles: Vec<RoleSlug>,
    /// `credential_id`.
    pub credential_id: CredentialId,
    /// `jti`.
    pub token_id: String,
    /// `iat`.
    pub issued_at: OffsetDateTime,
    /// `exp`.
    pub expires_at: OffsetDateTime,
}

/// Why a mint failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Unknown client, wrong or malformed secret, expired or deleted credential, disabled
    /// account: deliberately indistinguishable.
    #[error("invalid client credentials")]
    InvalidClient,
    /// The requested narrowing exceeds the account's scope or roles.
    #[error("scope narrowing refused: {0}")]
    NarrowingRefused(String),
    /// Too many failed mints from this client id and address, or this address: refused
    /// without looking at the secret.
    #[error("too many failed attempts")]
    Throttled {
        /// When to try again (whole seconds, at least one).
        retry_after: std::time::Duration,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else failed: a broken contract of an adapter (no mint step can fail this way
    /// today; the variant keeps such failures apart from storage outages).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a grant is scoped to: the account's own target, or a narrower one inside it. The
/// one place a requested narrowing is parsed.
fn narrowed_target(account: &ScopeTarget, narrowing: &Narrowing) -> Result<ScopeTarget, MintError> {
    let refuse = || {
        MintError::NarrowingRefused(
            "the requested scope is not within the service account's scope".into(),
        )
    };
    let wanted = narrowing.scope.unwrap_or(account.scope());
    match (&narrowing.scope_id, wanted, account) {
        // Its own target, named or not.
        (None, scope, own) if scope == own.scope() => Ok(own.clone()),
        (Some(id), scope, own) if scope == own.scope() && id == own.id() => Ok(own.clone()),
        // An organization-scoped account may narrow to any project of its organization.
        (Some(id), Scope::Project, ScopeTarget::Organization(_)) => {
            ScopeTarget::parse(Scope::Project, id).map_err(|_| refuse())
        }
        _ => Err(refuse()),
    }
}

/// Mints grants and checks token liveness.
pub struct TokenService<A: Adapters> {
    credentials: A::Credentials,
    federated: A::Federated,
    assertions: A::Assertions,
    directory: A::Directory,
    tokens: A::Tokens,
    usage: A::Usage,
    clock: A::Clock,
    ids: A::Ids,
    hasher: SecretHasher,
    lifetime: Duration,
    admin_role: RoleSlug,
    throttle: MintThrottle,
    /// Hashed when the presented credential does not exist, so that case costs what a wrong
    /// secret costs.
    decoy: ClientSecret,
}

impl<A: Adapters> TokenService<A> {
    /// The token service; grants live for `lifetime`, failures are counted by `throttle`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the service's collaborators, wired once"
    )]
    pub fn new(
        credentials: A::Credentials,
        federated: A::Federated,
        assertions: A::Assertions,
        directory: A::Directory,
        tokens: A::Tokens,
        usage: A::Usage,
        clock: A::Clock,
        ids: A::Ids,
        hasher: SecretHasher,
        lifetime: Duration,
        admin_role: RoleSlug,
        throttle: MintThrottle,
    ) -> Self {
        let decoy_id =
            CredentialId::parse("cred-decoy").unwrap_or_else(|_| unreachable!("a valid id"));
        Self {
            credentials,
            federated,
            assertions,
            directory,
            tokens,
            usage,
            clock,
            ids,
            hasher,
            lifetime,
            admin_role,
            throttle,
            decoy: ClientSecret::generate(&decoy_id, &[0; 32]),
        }
    }

    /// Computes one HMAC as a rejected-before-lookup mint would have, so that unknown or
    /// malformed credentials cost what a wrong secret costs. `black_box` keeps the optimizer
    /// from removing the otherwise unused result.
    fn spend_decoy_hash(&self) {
        std::hint::black_box(self.hasher.hash(&self.decoy));
    }

    /// Exchanges a client id and secret for a grant, recording the credential's last use.
    ///
    /// A caller over its failure limit is refused before anything else is done; a failed
    /// mint counts against the limit (every attempt is counted when admitted and given back
    /// unless it failed on its credentials), a successful one clears its client's count.
    ///
    /// # Errors
    /// [`MintError::Throttled`]; [`MintError::InvalidClient`] for every client-side failure;
    /// [`MintError::NarrowingRefused`]; [`MintError::Store`].
    pub async fn mint(
        &self,
        client_id: &str,
        client_secret: &str,
        narrowing: &Narrowing,
        source_ip: Option<IpAddr>,
    ) -> Result<Grant, MintError> {
        self.throttled(client_id, source_ip, |now| {
            self.mint_unthrottled(client_id, client_secret, narrowing, source_ip, now)
        })
        .await
    }

    /// Exchanges an external workload's token (`client_assertion`, SPEC §9) for a grant of
    /// the account `client_id`: the token must verify against the keys of an issuer the
    /// account's organization trusts, and its `iss`, `sub` and one of its `aud` must match one
    /// of the account's federated credentials. Throttled like [`Self::mint`].
    ///
    /// # Errors
    /// As [`Self::mint`]; an unverifiable token, unreachable issuer keys, no matching
    /// credential and a disabled account are all [`MintError::InvalidClient`].
    pub async fn mint_with_assertion(
        &self,
        client_id: &str,
        assertion: &str,
        narrowing: &Narrowing,
        source_ip: Option<IpAddr>,
    ) -> Result<Grant, MintError> {
        self.throttled(client_id, source_ip, |now| {
            self.exchange_unthrottled(client_id, assertion, narrowing, source_ip, now)
        })
        .await
    }

    /// Runs `mint` under the failure throttle of `client_id` and `source_ip`.
    async fn throttled<F: Future<Output = Result<Grant, MintError>>>(
        &self,
        client_id: &str,
        source_ip: Option<IpAddr>,
        mint: impl FnOnce(OffsetDateTime) -> F,
    ) -> Result<Grant, MintError> {
        let now = self.clock.now_micros();
        // Checked and counted as a failure in one step, so parallel guesses cannot all pass
        // the check first; given back below unless it really was a client failure.
        self.throttle
            .admit(client_id, source_ip, now)
            .map_err(|retry_after| MintError::Throttled { retry_after })?;
        let result = mint(now).await;
        match &result {
            Ok(_) => self.throttle.succeeded(client_id, source_ip, now),
            Err(MintError::InvalidClient) => {}
            Err(_) => self.throttle.refund(client_id, source_ip, now),
        }
        result
    }

    async fn exchange_unthrottled(
        &self,
        client_id: &str,
        assertion: &str,
        narrowing: &Narrowing,
        source_ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<Grant, MintError> {
        let (Ok(client_id), Some((issuer, subject))) =
            (ClientId::parse(client_id), self.assertions.peek(assertion))
        else {
            return Err(MintError::InvalidClient);
        };
        let Some(found) = self
            .federated
            .find_for_exchange(&client_id, &issuer, &subject)
            .await?
        else {
            return Err(MintError::InvalidClient);
        };
        if found.account.status != ServiceAccountStatus::Active {
            return Err(MintError::InvalidClient);
        }
        // Why it was refused is the verifier's to log; the client learns nothing.
        let Ok(verified) = self.assertions.verify(assertion, &found.trusted, now).await else {
            return Err(MintError::InvalidClient);
        };
        // Verified claims, not the peeked ones, decide.
        let Some(credential) = found.credentials.iter().find(|c| {
            c.issuer == verified.issuer
                && c.subject == verified.subject
                && c.accepts_audience(&verified.audiences)
        }) else {
            return Err(MintError::InvalidClient);
        };
        let grant = self
            .grant(
                found.account.clone(),
                credential.id.clone(),
                now + self.lifetime,
                narrowing,
                now,
            )
            .await?;
        self.usage.record_use(credential.uid, now, source_ip);
        Ok(grant)
    }

    async fn mint_unthrottled(
        &self,
        client_id: &str,
        client_secret: &str,
        narrowing: &Narrowing,
        source_ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<Grant, MintError> {
        let (Ok((credential_id, secret)), Ok(client_id)) = (
            ClientSecret::parse(client_secret),
            ClientId::parse(client_id),
        ) else {
            self.spend_decoy_hash();
            return Err(MintError::InvalidClient);
        };
        let Some(credential) = self
            .credentials
            .find_for_mint(&client_id, &credential_id)
            .await?
        else {
            self.spend_decoy_hash();
            return Err(MintError::InvalidClient);
        };
        let verified = self.hasher.verify(&secret, &credential.secret_hash);
        if !verified
            || !credential.is_active(now)
            || credential.account.status != ServiceAccountStatus::Active
        {
            return Err(MintError::InvalidClient);
        }

        let grant = self
            .grant(
                credential.account,
                credential_id,
                // Never outlive the credential: verifiers that only check signatures (JWKS)
                // must not accept a token past its credential's expiry.
                (now + self.lifetime).min(credential.expires_at),
                narrowing,
                now,
            )
            .await?;
        self.usage.record_use(credential.uid, now, source_ip);
        Ok(grant)
    }

    /// The grant of `account` through `credential_id`, narrowed as asked, expiring at
    /// `expires_at`.
    async fn grant(
        &self,
        account: Grantee,
        credential_id: CredentialId,
        expires_at: OffsetDateTime,
        narrowing: &Narrowing,
        now: OffsetDateTime,
    ) -> Result<Grant, MintError> {
        let target = narrowed_target(&account.target, narrowing)?;
        if let ScopeTarget::Project(project) = &target
            && target != account.target
            && !self
                .directory
                .project_exists(&account.tenant, project)
                .await?
        {
            // Narrowed to a project of the organization: it must exist.
            return Err(MintError::NarrowingRefused(format!(
                "no project \"{project}\" in the service account's organization"
            )));
        }
        let roles = match &narrowing.roles {
            None => account.roles.clone(),
            Some(wanted) => {
                let held: BTreeSet<&RoleSlug> = account.roles.iter().collect();
                if let Some(extra) = wanted.iter().find(|r| !held.contains(r)) {
                    return Err(MintError::NarrowingRefused(format!(
                        "the service account does not hold role {extra}"
                    )));
                }
                wanted.clone()
            }
        };
        Ok(Grant {
            subject: account.client_id,
            tenant: account.tenant,
            target,
            roles,
            credential_id,
            token_id: self.ids.uid().to_string(),
            issued_at: now,
            expires_at,
        })
    }

    /// Whether a token whose signature and expiry already checked out is still live: its
    /// `jti` is not revoked and, for a service-account token, its credential exists and is
    /// unexpired and its account is active. One storage round trip, no cache.
    ///
    /// # Errors
    /// [`StoreError`] when storage fails.
    pub async fn is_live(&self, principal: &Principal) -> Result<bool, StoreError> {
        let Some(live) = LiveToken::of(principal, self.clock.now_micros()) else {
            return Ok(false);
        };
        self.tokens
            .is_live(
                live.token,
                live.service_account.as_ref().map(|(c, id)| (c, *id)),
                live.now,
            )
            .await
    }

    /// Revokes the token `target` (already verified; its `exp` claim is `target_exp`) on
    /// behalf of `caller`: allowed for the caller's own tokens and, for a tenant admin, any
    /// token of the tenant. Anything else is silently ignored (the endpoint always answers
    /// the same). The revocation is kept until the token expires ([`revocation_expiry`]).
    ///
    /// # Errors
    /// [`StoreError`] when storage fails.
    pub async fn revoke(
        &self,
        caller: &Principal,
        target: &Principal,
        target_exp: i64,
    ) -> Result<(), StoreError> {
        let same_tenant = caller.tenant == target.tenant;
        let own = same_tenant
            && caller.subject == target.subject
            && caller.issuer == target.issuer
            && caller.kind == target.kind;
        if !(own || (same_tenant && caller.is_tenant_admin(&self.admin_role))) {
            return Ok(());
        }
        self.tokens
            .revoke(
                &target.tenant,
                token_ref(target),
                revocation_expiry(target_exp),
            )
            .await
    }
}

/// What revocation calls `principal`'s token.
fn token_ref(principal: &Principal) -> TokenRef<'_> {
    TokenRef {
        issuer: &principal.issuer,
        id: &principal.token_id,
    }
}

/// How long to keep the revocation of a token whose `exp` claim is `exp` (seconds since the
/// epoch): until that instant, which may be any `i64`. An `exp` beyond what a timestamp can
/// hold (past the year 9999) keeps it until the latest representable instant — never wrapping
/// to an early date that would purge the revocation while the token still verifies. One before
/// the earliest representable instant is already dead.
pub fn revocation_expiry(exp: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(exp).unwrap_or(if exp > 0 {
        time::PrimitiveDateTime::MAX.assume_utc()
    } else {
        time::PrimitiveDateTime::MIN.assume_utc()
    })
}

#[cfg(test)]
mod tests;
