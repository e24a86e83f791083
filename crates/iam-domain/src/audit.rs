//! Audit events: every mutation records who did what to which resource, and from where.
//!
//! The store writes the event in the same transaction as the change it describes.

use std::net::IpAddr;

use time::OffsetDateTime;

use crate::resource_id::OrgId;

/// Where a request came from; carried by every command for auditing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The request id (`X-Request-Id`).
    pub request_id: String,
    /// The client's IP address, when known.
    pub source_ip: Option<IpAddr>,
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A service account was created.
    ServiceAccountCreated,
    /// A service account's mutable fields changed.
    ServiceAccountUpdated,
    /// A service account was deleted with its credentials.
    ServiceAccountDeleted,
    /// A credential (client secret) was created.
    CredentialCreated,
    /// A credential was deleted.
    CredentialDeleted,
    /// A federated credential (a trusted external identity, SPEC §9) was created.
    FederatedCredentialCreated,
    /// A federated credential was deleted.
    FederatedCredentialDeleted,
    /// An operator applied a directory file that changed an organization, its policy, its
    /// projects or its roles (`iam-server directory apply`).
    DirectoryApplied,
}

impl AuditAction {
    /// The stable name stored with the event.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ServiceAccountCreated => "service_account.create",
            AuditAction::ServiceAccountUpdated => "service_account.update",
            AuditAction::ServiceAccountDeleted => "service_account.delete",
            AuditAction::CredentialCreated => "credential.create",
            AuditAction::CredentialDeleted => "credential.delete",
            AuditAction::FederatedCredentialCreated => "federated_credential.create",
            AuditAction::FederatedCredentialDeleted => "federated_credential.delete",
            AuditAction::DirectoryApplied => "directory.apply",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The tenant the resource belongs to.
    pub tenant: OrgId,
    /// `sub` of the acting principal.
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The resource, as its path below the API base (`service-accounts/sa-ci`).
    pub resource: String,
    /// What changed: names of the fields an update changed; for a directory apply, one entry
    /// per change (`+projects/web`, `~policy.maxActiveCredentials`, `-roles/x`).
    pub changed_fields: Vec<String>,
    /// The request that did it.
    pub request_id: String,
    /// Where the request came from.
    pub source_ip: Option<IpAddr>,
    /// When.
    pub at: OffsetDateTime,
}
