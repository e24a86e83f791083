//! # iam-domain
//!
//! The pure core of the IAM service-account service: the resource model (organizations and
//! their policy, projects, roles, service accounts), the calling [`Principal`], every
//! authorization and validation rule of the contract, and the use cases that apply them
//! ([`ServiceAccountAdmin`], [`CredentialAdmin`]). Client secrets ([`client_secret`]) are
//! generated, checked offline and hashed here too: pure functions of their inputs.
//!
//! Nothing here performs I/O. Storage, time and randomness are reached through the port traits
//! in [`ports`]; adapters (`iam-postgres`, `iam-server`) implement them and the HTTP adapter
//! (`iam-http`) drives the use cases. This crate depends on no database driver, web framework
//! or async runtime — `cargo xtask ci` checks that.

pub mod acting_as;
pub mod audit;
pub mod client_secret;
pub mod credential;
pub mod credential_admin;
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
