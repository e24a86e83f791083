//! Unit tests of the token service on the in-memory fakes.

use std::sync::{Arc, Mutex};

use time::macros::datetime;

use super::*;
use crate::audit::RequestContext;
use crate::credential_admin::CredentialAdmin;
use crate::fakes::{
    FakeAssertions, Fakes, FixedClock, Memory, SeqIds, TRUSTED_ISSUER, block_on, principal, role,
    seeded_memory,
};
use crate::principal::{PrincipalKind, Subject};
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
    assertions: FakeAssertions,
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
    let assertions = FakeAssertions::default();
    let tokens = TokenService::<Fakes>::new(
        memory.clone(),
        memory.clone(),
        assertions.clone(),
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
        assertions,
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

/// A federated credential of `sa-ci` for `TRUSTED_ISSUER`'s `subject`, accepting `audience`.
fn federate(
    w: &World,
    subject: &str,
    audience: &str,
) -> crate::federated_credential::FederatedCredential {
    use crate::federated_credential::{Audience, ExternalSubject, Issuer, NewFederatedCredential};
    let admin_uc = crate::federation_admin::FederationAdmin::<Fakes>::new(
        w.memory.clone(),
        w.memory.clone(),
        w.memory.clone(),
        w.clock.clone(),
        SeqIds::default(),
        role("admin"),
        Audience::parse("https://iam.test").unwrap(),
    );
    let request = NewFederatedCredential {
        issuer: Issuer::parse(TRUSTED_ISSUER).unwrap(),
        subject: ExternalSubject::parse(subject).unwrap(),
        audiences: vec![Audience::parse(audience).unwrap()],
        description: None,
    };
    block_on(admin_uc.create(&admin(), &ctx(), "sa-ci", request, None)).unwrap()
}

fn exchange(w: &World, assertion: &str) -> Result<Grant, MintError> {
    block_on(
        w.tokens
            .mint_with_assertion("sa-ci@acme.iam", assertion, &Narrowing::default(), None),
    )
}

#[test]
fn a_federated_token_mints_a_grant_naming_the_federated_credential_until_it_is_deleted() {
    let w = world();
    let fc = federate(&w, "repo:acme/app", "sts.test");
    let exp = w.clock.now() + Duration::minutes(5);
    let token = FakeAssertions::token(TRUSTED_ISSUER, "repo:acme/app", "sts.test", exp);
    let grant = exchange(&w, &token).unwrap();
    assert_eq!(grant.credential_id, fc.id);
    assert_eq!(grant.subject.as_str(), "sa-ci@acme.iam");
    assert_eq!(grant.expires_at - grant.issued_at, Duration::seconds(900));
    assert!(
        w.memory
            .state()
            .uses
            .iter()
            .any(|(uid, _, _)| *uid == fc.uid)
    );
    assert!(block_on(w.tokens.is_live(&sa_principal(&grant))).unwrap());

    w.memory.state().federated.clear();
    assert!(!block_on(w.tokens.is_live(&sa_principal(&grant))).unwrap());
    assert!(matches!(
        exchange(&w, &token),
        Err(MintError::InvalidClient)
    ));
}

#[test]
fn federated_exchanges_fail_alike_on_subject_audience_issuer_expiry_signature_and_keys() {
    let w = world();
    federate(&w, "repo:acme/app", "sts.test");
    let now = w.clock.now();
    let later = now + Duration::minutes(5);
    for token in [
        FakeAssertions::token(TRUSTED_ISSUER, "repo:acme/other", "sts.test", later),
        FakeAssertions::token(TRUSTED_ISSUER, "repo:acme/app", "other", later),
        FakeAssertions::token("https://evil.test", "repo:acme/app", "sts.test", later),
        FakeAssertions::token(TRUSTED_ISSUER, "repo:acme/app", "sts.test", now),
        format!(
            "{TRUSTED_ISSUER}|repo:acme/app|sts.test|{}|forged",
            later.unix_timestamp()
        ),
        "not a token".to_owned(),
    ] {
        assert!(
            matches!(exchange(&w, &token), Err(MintError::InvalidClient)),
            "{token}"
        );
    }
    let good = FakeAssertions::token(TRUSTED_ISSUER, "repo:acme/app", "sts.test", later);
    w.assertions.keys_down(true);
    assert!(matches!(exchange(&w, &good), Err(MintError::InvalidClient)));
    w.assertions.keys_down(false);
    assert!(exchange(&w, &good).is_ok());
}

#[test]
fn a_disabled_account_or_an_untrusted_issuer_gets_no_federated_grant() {
    let w = world();
    federate(&w, "repo:acme/app", "sts.test");
    let later = w.clock.now() + Duration::minutes(5);
    let token = FakeAssertions::token(TRUSTED_ISSUER, "repo:acme/app", "sts.test", later);
    let grant = exchange(&w, &token).unwrap();
    w.memory.state().accounts[0].status = ServiceAccountStatus::Disabled;
    assert!(matches!(
        exchange(&w, &token),
        Err(MintError::InvalidClient)
    ));
    assert!(!block_on(w.tokens.is_live(&sa_principal(&grant))).unwrap());
    w.memory.state().accounts[0].status = ServiceAccountStatus::Active;
    w.memory.state().trusted.clear();
    assert!(matches!(
        exchange(&w, &token),
        Err(MintError::InvalidClient)
    ));
    assert!(!block_on(w.tokens.is_live(&sa_principal(&grant))).unwrap());
}
