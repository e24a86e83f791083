//! Unit tests of the federated credential use cases on the in-memory fakes.

use time::macros::datetime;

use super::*;
use crate::audit::AuditAction;
use crate::fakes::{
    Fakes, FixedClock, Memory, SeqIds, TRUSTED_ISSUER, block_on, principal, role, seeded_memory,
};
use crate::federated_credential::{Audience, ExternalSubject, Issuer};
use crate::pagination::{PagePosition, PageSize};
use crate::scope::Scope;
use crate::service_account::DisplayName;
use crate::service_account_admin::{CreateServiceAccount, ServiceAccountAdmin};

fn ctx() -> RequestContext {
    RequestContext {
        request_id: "r".into(),
        source_ip: None,
    }
}

fn admin() -> Principal {
    principal("org-acme", &["admin", "compute.deployer"])
}

/// `sa-ci` (role compute.deployer) and the use cases.
fn world() -> (Memory, FederationAdmin<Fakes>) {
    let memory = seeded_memory();
    let clock = FixedClock::new(datetime!(2026-12-01 10:00 UTC));
    let accounts = ServiceAccountAdmin::<Fakes>::new(
        memory.clone(),
        memory.clone(),
        clock.clone(),
        SeqIds::default(),
        role("admin"),
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
            roles: vec![role("compute.deployer")],
        },
        None,
    ))
    .unwrap();
    let admin_uc = FederationAdmin::<Fakes>::new(
        memory.clone(),
        memory.clone(),
        memory.clone(),
        clock,
        SeqIds::default(),
        role("admin"),
        Audience::parse("https://iam.test").unwrap(),
    );
    (memory, admin_uc)
}

fn request(issuer: &str, audiences: &[&str]) -> NewFederatedCredential {
    NewFederatedCredential {
        issuer: Issuer::parse(issuer).unwrap(),
        subject: ExternalSubject::parse("system:serviceaccount:ci:deployer").unwrap(),
        audiences: audiences
            .iter()
            .map(|a| Audience::parse(*a).unwrap())
            .collect(),
        description: None,
    }
}

#[test]
fn create_defaults_the_audience_audits_and_reads_back() {
    let (memory, uc) = world();
    let created = block_on(uc.create(
        &admin(),
        &ctx(),
        "sa-ci",
        request(TRUSTED_ISSUER, &[]),
        None,
    ))
    .unwrap();
    assert!(created.id.as_str().starts_with("fc-"));
    assert_eq!(
        created.audiences,
        [Audience::parse("https://iam.test").unwrap()]
    );
    assert_eq!(
        memory
            .state()
            .audit
            .last()
            .map(|e| (e.action, e.resource.clone())),
        Some((
            AuditAction::FederatedCredentialCreated,
            format!(
                "service-accounts/sa-ci/federated-credentials/{}",
                created.id
            )
        ))
    );
    let read = block_on(uc.get(&admin(), "sa-ci", created.id.as_str())).unwrap();
    assert_eq!(read, created);
    let page = PageRequest {
        size: PageSize::default(),
        position: PagePosition::After(None),
    };
    assert_eq!(
        block_on(uc.list(&admin(), "sa-ci", page)).unwrap().items,
        std::slice::from_ref(&created)
    );

    block_on(uc.delete(&admin(), &ctx(), "sa-ci", created.id.as_str())).unwrap();
    assert!(matches!(
        block_on(uc.get(&admin(), "sa-ci", created.id.as_str())),
        Err(CredentialError::NotFound)
    ));
}

#[test]
fn untrusted_issuers_non_admins_limited_admins_and_secret_ids_are_refused() {
    let (_, uc) = world();
    let Err(CredentialError::Rejected(violations)) = block_on(uc.create(
        &admin(),
        &ctx(),
        "sa-ci",
        request("https://evil.test", &[]),
        None,
    )) else {
        panic!("an untrusted issuer must be refused");
    };
    assert_eq!(violations[0].reason, ViolationReason::IssuerNotTrusted);
    assert_eq!(violations[0].field, Some(Field::Issuer));

    let viewer = principal("org-acme", &["compute.deployer"]);
    assert!(matches!(
        block_on(uc.create(&viewer, &ctx(), "sa-ci", request(TRUSTED_ISSUER, &[]), None)),
        Err(CredentialError::NotFound)
    ));
    let limited = principal("org-acme", &["admin"]);
    assert!(matches!(
        block_on(uc.create(
            &limited,
            &ctx(),
            "sa-ci",
            request(TRUSTED_ISSUER, &[]),
            None
        )),
        Err(CredentialError::ActingAsRefused(_))
    ));
    assert!(matches!(
        block_on(uc.get(&admin(), "sa-ci", "cred-abc")),
        Err(CredentialError::NotFound)
    ));
}

#[test]
fn the_twenty_first_federated_credential_is_refused() {
    let (_, uc) = world();
    for i in 0..MAX_PER_ACCOUNT {
        block_on(uc.create(
            &admin(),
            &ctx(),
            "sa-ci",
            request(TRUSTED_ISSUER, &[&format!("a{i}")]),
            None,
        ))
        .unwrap();
    }
    assert!(matches!(
        block_on(uc.create(
            &admin(),
            &ctx(),
            "sa-ci",
            request(TRUSTED_ISSUER, &[]),
            None
        )),
        Err(CredentialError::FederatedLimitReached { cap: 20 })
    ));
}
