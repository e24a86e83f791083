//! # iam-domain
//!
//! The pure core of the IAM service-account service: the resource model (organizations and
//! their policy, projects, roles, service accounts, credentials), the calling [`Principal`],
//! every authorization and validation rule of the contract, and the use cases that apply them
//! ([`ServiceAccountAdmin`], [`CredentialAdmin`], [`TokenService`]). Client secrets
//! ([`client_secret`]) are generated, checked offline and hashed here too: pure functions of
//! their inputs.
//!
//! Nothing here performs I/O. Storage, time and randomness are reached through the port traits
//! in [`ports`]; adapters (`iam-postgres`, `iam-server`) implement them and the HTTP adapter
//! (`iam-http`) drives the use cases. This crate depends on no database driver, web framework
//! or async runtime — `cargo xtask ci` checks that.
//!
//! ## Embedding it
//!
//! A deployment names its adapters once, as an [`Adapters`](ports::Adapters) bundle, and
//! builds the use cases over them. With the `test-support` feature the crate brings in-memory
//! fakes of every port (module `fakes`), which keep the ports' contracts; they are what this
//! example (and the adapters' own handler tests) run on:
//!
//! ```
//! use iam_domain::fakes::{Fakes, FixedClock, SeqIds, block_on, principal, role, seeded_memory};
//! use iam_domain::{
//!     CreateServiceAccount, CredentialAdmin, CredentialError, DisplayName, RequestContext,
//!     Scope, SecretHasher, ServiceAccountAdmin, ServiceAccountError, ServiceAccountId,
//! };
//!
//! // org-acme (slug `acme`) with project `web` and roles admin, compute.deployer, …
//! let memory = seeded_memory();
//! let clock = FixedClock::new(time::macros::datetime!(2026-12-01 12:00 UTC));
//! let accounts = ServiceAccountAdmin::<Fakes>::new(
//!     memory.clone(), memory.clone(), clock.clone(), SeqIds::default(), role("admin"),
//! );
//! let credentials = CredentialAdmin::<Fakes>::new(
//!     memory.clone(), memory.clone(), memory.clone(), clock.clone(), SeqIds::default(),
//!     SecretHasher::new(&[7; 32]).expect("a 32-byte pepper"), role("admin"),
//! );
//!
//! // A tenant admin creates a project-scoped account with a role it holds…
//! let admin = principal("org-acme", &["admin", "compute.deployer"]);
//! let context = RequestContext { request_id: "req-1".into(), source_ip: None };
//! let request = CreateServiceAccount {
//!     id: Some(ServiceAccountId::parse("sa-ci")?),
//!     display_name: DisplayName::parse("CI pipeline")?,
//!     description: None,
//!     scope: Scope::Project,
//!     scope_id: "web".into(),
//!     roles: vec![role("compute.deployer")],
//! };
//! let account = block_on(accounts.create(&admin, &context, request, None))?;
//! assert_eq!(account.client_id.as_str(), "sa-ci@acme.iam");
//!
//! // …and a client secret for it, shown once; only its hash is stored.
//! let created = block_on(credentials.create(&admin, &context, "sa-ci", None, None))?;
//! assert!(created.secret.expose().starts_with("plt_cs_cred-"));
//!
//! // Whoever is not a tenant admin cannot tell the account exists…
//! let viewer = principal("org-acme", &["compute.deployer"]);
//! assert!(matches!(
//!     block_on(accounts.get(&viewer, "sa-ci")),
//!     Err(ServiceAccountError::NotFound)
//! ));
//! // …and an admin without the account's roles may not give it a secret (acting as it).
//! let limited = principal("org-acme", &["admin"]);
//! assert!(matches!(
//!     block_on(credentials.create(&limited, &context, "sa-ci", None, None)),
//!     Err(CredentialError::ActingAsRefused(_))
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `fakes::block_on` suffices for the fakes, which never wait; real adapters need a real
//! executor.

pub mod acting_as;
pub mod audit;
pub mod client_secret;
pub mod credential;
pub mod credential_admin;
pub mod federated_credential;
pub mod federation_admin;
pub mod organization;
pub mod pagination;
pub mod ports;
pub mod principal;
pub mod resource_id;
pub mod role;
pub mod scope;
pub mod service_account;
pub mod service_account_admin;
pub mod throttle;
pub mod token_service;
pub mod validation;
pub mod violation;
mod visibility;

#[cfg(any(test, feature = "test-support"))]
pub mod fakes;

pub use acting_as::acting_as_violations;
pub use audit::{AuditAction, AuditEvent, RequestContext};
pub use client_secret::{ClientSecret, MalformedSecret, SecretHash, SecretHasher};
pub use credential::{Credential, CredentialFilter, CredentialStatus};
pub use credential_admin::{CreatedCredential, CredentialAdmin, CredentialError};
pub use federated_credential::{
    Audience, ExternalSubject, FederatedCredential, Issuer, NewFederatedCredential, TrustedIssuer,
};
pub use federation_admin::FederationAdmin;
pub use organization::{OrgPolicy, OrgSlug, Organization, PolicyError};
pub use pagination::{Cursor, Page, PagePosition, PageRequest, PageSize};
pub use principal::{Principal, PrincipalKind, Subject};
pub use resource_id::{CredentialId, OrgId, ProjectId, ServiceAccountId, TargetId};
pub use role::RoleSlug;
pub use scope::{Scope, ScopeTarget};
pub use service_account::{
    ClientId, Description, DisplayName, Revision, ServiceAccount, ServiceAccountFilter,
    ServiceAccountPatch, ServiceAccountStatus,
};
pub use service_account_admin::{CreateServiceAccount, ServiceAccountAdmin, ServiceAccountError};
pub use throttle::{MintThrottle, ThrottleLimits};
pub use token_service::{Grant, MintError, Narrowing, TokenService};
pub use validation::InvalidValue;
pub use violation::{Field, Violation, ViolationReason};
