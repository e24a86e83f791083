//! The token service: a workload exchanges its client id and secret for a short-lived access
//! grant (SPEC §6), and every later use of such a token is checked for liveness.
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
use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

use crate::client_secret::{ClientSecret, SecretHasher};
use crate::credential::CredentialStatus;
use crate::ports::{
    Adapters, Clock, CredentialStore, Directory, IdGenerator, StoreError, TokenRef, TokenStore,
    UsageRecorder,
};
use crate::principal::{Principal, PrincipalKind};
use crate::resource_id::{CredentialId, OrgId};
use crate::role::RoleSlug;
use crate::scope::{Scope, ScopeTarget};
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

    /// The lifetime of minted grants.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
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
        let now = self.clock.now_micros();
        // Checked and counted as a failure in one step, so parallel guesses cannot all pass
        // the check first; given back below unless it really was a client failure.
        self.throttle
            .admit(client_id, source_ip, now)
            .map_err(|retry_after| MintError::Throttled { retry_after })?;
        let result = self
            .mint_unthrottled(client_id, client_secret, narrowing, source_ip, now)
            .await;
        match &result {
            Ok(_) => self.throttle.succeeded(client_id, source_ip, now),
            Err(MintError::InvalidClient) => {}
            Err(_) => self.throttle.refund(client_id, source_ip, now),
        }
        result
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
        let Some((credential, account)) = self
            .credentials
            .find_for_mint(&client_id, &credential_id)
            .await?
        else {
            self.spend_decoy_hash();
            return Err(MintError::InvalidClient);
        };
        let verified = self.hasher.verify(&secret, &credential.secret_hash);
        if !verified
            || credential.status(now) != CredentialStatus::Active
            || account.status != ServiceAccountStatus::Active
        {
            return Err(MintError::InvalidClient);
        }

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

        self.usage.record_use(credential.uid, now, source_ip);
        Ok(Grant {
            subject: account.client_id,
            tenant: account.tenant,
            target,
            roles,
            credential_id,
            token_id: self.ids.uid().to_string(),
            issued_at: now,
            // Never outlive the credential: verifiers that only check signatures (JWKS) must
            // not accept a token past its credential's expiry.
            expires_at: (now + self.lifetime).min(credential.expires_at),
        })
    }

    /// Whether a token whose signature and expiry already checked out is still live: its
    /// `jti` is not revoked and, for a service-account token, its credential exists and is
    /// unexpired and its account is active. One storage round trip, no cache.
    ///
    /// # Errors
    /// [`StoreError`] when storage fails.
    pub async fn is_live(&self, principal: &Principal) -> Result<bool, StoreError> {
        let service_account = match (principal.kind, &principal.credential_id) {
            (PrincipalKind::ServiceAccount, Some(credential)) => Some((
                ClientId::from_stored(principal.subject.as_str().to_owned()),
                credential.clone(),
            )),
            (PrincipalKind::ServiceAccount, None) => return Ok(false),
            _ => None,
        };
        self.tokens
            .is_live(
                token_ref(principal),
                service_account.as_ref().map(|(c, id)| (c, id)),
                self.clock.now_micros(),
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
mod tests {
    use std::sync::{Arc, Mutex};

    use time::macros::datetime;

    use super::*;
    use crate::audit::RequestContext;
    use crate::credential_admin::CredentialAdmin;
    use crate::fakes::{
        Fakes, FixedClock, Memory, SeqIds, block_on, principal, role, seeded_memory,
    };
    use crate::principal::Subject;
    use crate::resource_id::ServiceAccountId;
    use crate::service_account::{DisplayName, ServiceAccountPatch};
    use crate::service_account_admin::{CreateServiceAccount, Precondition, ServiceAccountAdmin};
    use crate::throttle::ThrottleLimits;

    struct World {
        memory: Memory,
        clock: FixedClock,
        accounts: ServiceAccountAdmin<Fakes>,
        credentials: CredentialAdmin<Fakes>,
        tokens: TokenService<Fakes>,
        secret: String,
        credential: CredentialId,
    }

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: "r".into(),
            source_ip: None,
        }
    }

    fn admin() -> Principal {
        principal("org-acme", &["admin", "compute.deployer", "storage.reader"])
    }

    /// `sa-ci@acme.iam`, org-scoped, roles compute.deployer + storage.reader, one credential.
    fn world() -> World {
        let memory = seeded_memory();
        let clock = FixedClock(Arc::new(Mutex::new(datetime!(2026-05-01 08:00 UTC))));
        let hasher = SecretHasher::new(&[9; 32]).unwrap();
        let accounts = ServiceAccountAdmin::<Fakes>::new(
            memory.clone(),
            memory.clone(),
            clock.clone(),
            SeqIds::default(),
            role("admin"),
        );
        let credentials = CredentialAdmin::<Fakes>::new(
            memory.clone(),
            memory.clone(),
            memory.clone(),
            clock.clone(),
            SeqIds::default(),
            hasher.clone(),
            role("admin"),
        );
        let tokens = TokenService::<Fakes>::new(
            memory.clone(),
            memory.clone(),
            memory.clone(),
            memory.clone(),
            clock.clone(),
            SeqIds::default(),
            hasher,
            Duration::seconds(900),
            role("admin"),
            MintThrottle::new(ThrottleLimits::default()),
        );
        block_on(accounts.create(
            &admin(),
            &ctx(),
            CreateServiceAccount {
                id: Some(ServiceAccountId::parse("sa-ci").unwrap()),
                display_name: DisplayName::parse("CI").unwrap(),
                description: None,
                scope: Scope::Organization,
                scope_id: "org-acme".into(),
                roles: vec![role("compute.deployer"), role("storage.reader")],
            },
            None,
        ))
        .unwrap();
        let created = block_on(credentials.create(&admin(), &ctx(), "sa-ci", None, None)).unwrap();
        World {
            memory,
            clock,
            accounts,
            credentials,
            tokens,
            secret: created.secret.expose().to_owned(),
            credential: created.credential.id,
        }
    }

    fn mint(
        w: &World,
        client_id: &str,
        secret: &str,
        narrowing: &Narrowing,
    ) -> Result<Grant, MintError> {
        block_on(w.tokens.mint(
            client_id,
            secret,
            narrowing,
            Some("198.51.100.4".parse().unwrap()),
        ))
    }

    fn sa_principal(grant: &Grant) -> Principal {
        Principal {
            subject: Subject::parse(grant.subject.as_str()).unwrap(),
            issuer: "urn:test".into(),
            tenant: grant.tenant.clone(),
            target: grant.target.clone(),
            roles: grant.roles.iter().cloned().collect(),
            kind: PrincipalKind::ServiceAccount,
            token_id: grant.token_id.clone(),
            credential_id: Some(grant.credential_id.clone()),
        }
    }

    #[test]
    fn a_valid_secret_mints_a_grant_with_the_accounts_scope_and_roles_and_records_the_use() {
        let w = world();
        let grant = mint(&w, "sa-ci@acme.iam", &w.secret, &Narrowing::default()).unwrap();
        assert_eq!(grant.subject.as_str(), "sa-ci@acme.iam");
        assert_eq!(grant.tenant.as_str(), "org-acme");
        assert_eq!(
            (grant.target.scope(), grant.target.id()),
            (Scope::Organization, "org-acme")
        );
        assert_eq!(
            grant.roles,
            [role("compute.deployer"), role("storage.reader")]
        );
        assert_eq!(grant.credential_id, w.credential);
        assert_eq!(grant.expires_at - grant.issued_at, Duration::seconds(900));
        let uses = w.memory.state().uses.clone();
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].2, Some("198.51.100.4".parse().unwrap()));
    }

    #[test]
    fn every_client_side_failure_is_the_same_invalid_client() {
        let w = world();
        let none = Narrowing::default();
        let mut typo = w.secret.clone().into_bytes();
        let last = typo.len() - 10;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        let other = ClientSecret::generate(&w.credential, &[77; 32]);
        for (client, secret) in [
            ("sa-ci@acme.iam", "garbage"),
            ("sa-ci@acme.iam", typo.as_str()),
            ("sa-ci@acme.iam", other.expose()),
            ("sa-other@acme.iam", w.secret.as_str()),
            ("nobody@acme.iam", w.secret.as_str()),
            ("sa-ci\u{0}@acme.iam", w.secret.as_str()),
            ("not a client id", w.secret.as_str()),
        ] {
            assert!(
                matches!(
                    mint(&w, client, secret, &none),
                    Err(MintError::InvalidClient)
                ),
                "{client}"
            );
        }
        // Disabled account, then expired credential, then deleted credential.
        let disable = ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Disabled),
            ..ServiceAccountPatch::default()
        };
        block_on(
            w.accounts
                .update(&admin(), &ctx(), "sa-ci", disable, &Precondition::None),
        )
        .unwrap();
        assert!(matches!(
            mint(&w, "sa-ci@acme.iam", &w.secret, &none),
            Err(MintError::InvalidClient)
        ));
        let enable = ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Active),
            ..ServiceAccountPatch::default()
        };
        block_on(
            w.accounts
                .update(&admin(), &ctx(), "sa-ci", enable, &Precondition::None),
        )
        .unwrap();
        assert!(
            mint(&w, "sa-ci@acme.iam", &w.secret, &none).is_ok(),
            "works again once re-enabled"
        );
        w.clock.advance(Duration::days(90));
        assert!(matches!(
            mint(&w, "sa-ci@acme.iam", &w.secret, &none),
            Err(MintError::InvalidClient)
        ));
        assert!(
            w.memory.state().uses.len() == 1,
            "only the successful mint was recorded"
        );
    }

    #[test]
    fn revocations_name_the_issuer_and_never_expire_before_the_token() {
        let w = world();
        let grant = mint(&w, "sa-ci@acme.iam", &w.secret, &Narrowing::default()).unwrap();
        let ours = sa_principal(&grant);
        // An external user token that happens to carry the same jti.
        let mut theirs = admin();
        theirs.issuer = "https://idp.test".into();
        theirs.token_id = ours.token_id.clone();
        block_on(w.tokens.revoke(&admin(), &theirs, 1_900_000_000)).unwrap();
        assert!(!block_on(w.tokens.is_live(&theirs)).unwrap());
        assert!(
            block_on(w.tokens.is_live(&ours)).unwrap(),
            "the same jti of another issuer is another token"
        );

        // Kept until exp, whatever exp is: far beyond the year 9999 saturates, never wraps.
        for (exp, kept_until) in [
            (1_900_000_000, datetime!(2030-03-17 17:46:40 UTC)),
            (253_402_300_800, time::PrimitiveDateTime::MAX.assume_utc()),
            (i64::MAX, time::PrimitiveDateTime::MAX.assume_utc()),
            (i64::MIN, time::PrimitiveDateTime::MIN.assume_utc()),
        ] {
            assert_eq!(revocation_expiry(exp), kept_until, "{exp}");
        }
        block_on(w.tokens.revoke(&ours, &ours, i64::MAX)).unwrap();
        let until = w.memory.state().revoked.last().unwrap().2;
        assert_eq!(until.year(), 9999);
    }

    #[test]
    fn a_throttled_caller_is_refused_before_any_lookup_even_with_the_right_secret() {
        let w = world();
        let none = Narrowing::default();
        let before = w.memory.state().mint_lookups;
        // Unknown-credential guesses are parsed, looked up and hashed (against the decoy):
        // each is one lookup, and each counts, up to the limit (10 per client and address).
        let guess = ClientSecret::generate(&CredentialId::parse("cred-guess").unwrap(), &[1; 32]);
        for _ in 0..10 {
            assert!(matches!(
                mint(&w, "sa-ci@acme.iam", guess.expose(), &none),
                Err(MintError::InvalidClient)
            ));
        }
        assert_eq!(w.memory.state().mint_lookups, before + 10);

        // Over the limit: refused before the lookup, whatever the secret.
        for secret in [guess.expose(), "garbage", w.secret.as_str()] {
            let refused = mint(&w, "sa-ci@acme.iam", secret, &none);
            let Err(MintError::Throttled { retry_after }) = refused else {
                panic!("expected Throttled, got {refused:?}");
            };
            assert_eq!(retry_after, std::time::Duration::from_mins(1));
        }
        assert_eq!(
            w.memory.state().mint_lookups,
            before + 10,
            "a throttled request issues no query"
        );
        assert!(w.memory.state().uses.is_empty(), "and mints nothing");

        // Another address is not affected; the block ends with its window.
        let elsewhere = block_on(w.tokens.mint(
            "sa-ci@acme.iam",
            &w.secret,
            &none,
            Some("192.0.2.99".parse().unwrap()),
        ));
        assert!(elsewhere.is_ok());
        w.clock.advance(Duration::seconds(60));
        assert!(mint(&w, "sa-ci@acme.iam", &w.secret, &none).is_ok());
    }

    #[test]
    fn narrowing_may_only_shrink_scope_and_roles() {
        let w = world();
        let ok = Narrowing {
            scope: Some(Scope::Project),
            scope_id: Some("web".into()),
            roles: Some(vec![role("storage.reader")]),
        };
        let grant = mint(&w, "sa-ci@acme.iam", &w.secret, &ok).unwrap();
        assert_eq!(
            (grant.target.scope(), grant.target.id()),
            (Scope::Project, "web")
        );
        assert_eq!(grant.roles, [role("storage.reader")]);
        for refused in [
            Narrowing {
                roles: Some(vec![role("admin")]),
                ..Narrowing::default()
            },
            Narrowing {
                scope: Some(Scope::Organization),
                scope_id: Some("org-other".into()),
                roles: None,
            },
            Narrowing {
                scope: Some(Scope::Project),
                scope_id: None,
                roles: None,
            },
            Narrowing {
                scope: Some(Scope::Project),
                scope_id: Some("Not An Id".into()),
                roles: None,
            },
            Narrowing {
                scope: Some(Scope::Project),
                scope_id: Some("ghost".into()),
                roles: None,
            },
        ] {
            assert!(
                matches!(
                    mint(&w, "sa-ci@acme.iam", &w.secret, &refused),
                    Err(MintError::NarrowingRefused(_))
                ),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_service_account_token_dies_with_its_account_credential_or_revocation() {
        let w = world();
        let grant = mint(&w, "sa-ci@acme.iam", &w.secret, &Narrowing::default()).unwrap();
        let token = sa_principal(&grant);
        assert!(block_on(w.tokens.is_live(&token)).unwrap());

        let disable = ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Disabled),
            ..ServiceAccountPatch::default()
        };
        block_on(
            w.accounts
                .update(&admin(), &ctx(), "sa-ci", disable, &Precondition::None),
        )
        .unwrap();
        assert!(
            !block_on(w.tokens.is_live(&token)).unwrap(),
            "disabled account"
        );
        let enable = ServiceAccountPatch {
            status: Some(ServiceAccountStatus::Active),
            ..ServiceAccountPatch::default()
        };
        block_on(
            w.accounts
                .update(&admin(), &ctx(), "sa-ci", enable, &Precondition::None),
        )
        .unwrap();
        assert!(block_on(w.tokens.is_live(&token)).unwrap(), "re-enabled");

        // Someone else's token cannot be revoked by a non-admin; one's own can.
        let stranger = principal("org-acme", &["compute.deployer"]);
        block_on(
            w.tokens
                .revoke(&stranger, &token, grant.expires_at.unix_timestamp()),
        )
        .unwrap();
        assert!(block_on(w.tokens.is_live(&token)).unwrap());
        block_on(
            w.tokens
                .revoke(&token, &token, grant.expires_at.unix_timestamp()),
        )
        .unwrap();
        assert!(!block_on(w.tokens.is_live(&token)).unwrap(), "revoked");

        let second =
            sa_principal(&mint(&w, "sa-ci@acme.iam", &w.secret, &Narrowing::default()).unwrap());
        block_on(
            w.credentials
                .delete(&admin(), &ctx(), "sa-ci", w.credential.as_str()),
        )
        .unwrap();
        assert!(
            !block_on(w.tokens.is_live(&second)).unwrap(),
            "deleted credential"
        );
        assert!(
            block_on(w.tokens.is_live(&admin())).unwrap(),
            "user tokens only need no revocation"
        );
    }
}
