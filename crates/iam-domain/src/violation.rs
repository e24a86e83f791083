//! Business-rule violations: what makes a request unprocessable (HTTP 422) or, for the
//! acting-as rule, forbidden (403). Shared by the use cases; they name the request field at
//! fault with a typed [`Field`], which adapters render in their own syntax (JSON paths in
//! `iam-http`), so the domain carries no wire syntax.

use std::fmt;

/// A field of a request (or of the account a request acts on) that a violation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The requested scope of a new account.
    Scope,
    /// The requested scope target id of a new account.
    ScopeId,
    /// The role at this index: of the request's role list, or (acting-as rule) of the
    /// account's role list.
    Role(usize),
    /// A credential's requested expiry.
    ExpiresAt,
    /// A federated credential's issuer.
    Issuer,
}

impl fmt::Display for Field {
    /// A neutral rendering for logs and messages (`roles #2`); adapters use their own syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Scope => f.write_str("scope"),
            Field::ScopeId => f.write_str("scope id"),
            Field::Role(index) => write!(f, "roles #{index}"),
            Field::ExpiresAt => f.write_str("expiry"),
            Field::Issuer => f.write_str("issuer"),
        }
    }
}

/// A broken business rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule that was broken.
    pub reason: ViolationReason,
    /// The field at fault, when one field is.
    pub field: Option<Field>,
    /// Human-readable explanation.
    pub message: String,
}

/// The rules a [`Violation`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationReason {
    /// The org policy does not allow this scope.
    ScopeNotAllowed,
    /// `scopeId` names no organization or project the caller's org has.
    ScopeTargetNotFound,
    /// A role is not in the org's role catalog.
    RoleNotFound,
    /// The caller does not hold a role it tries to assign (or to act with).
    RoleNotHeld,
    /// The caller's organization is not in the directory.
    TenantNotProvisioned,
    /// A credential's `expiresAt` is not in the future.
    ExpiryInPast,
    /// A credential's `expiresAt` is beyond the org's maximum lifetime.
    ExpiryExceedsMax,
    /// A federated credential names an issuer its organization does not trust.
    IssuerNotTrusted,
}

impl ViolationReason {
    /// The contract's `reason` code.
    pub fn code(self) -> &'static str {
        match self {
            ViolationReason::ScopeNotAllowed => "SCOPE_NOT_ALLOWED",
            ViolationReason::ScopeTargetNotFound => "SCOPE_TARGET_NOT_FOUND",
            ViolationReason::RoleNotFound => "ROLE_NOT_FOUND",
            ViolationReason::RoleNotHeld => "ROLE_NOT_HELD",
            ViolationReason::TenantNotProvisioned => "TENANT_NOT_PROVISIONED",
            ViolationReason::ExpiryInPast => "EXPIRY_IN_PAST",
            ViolationReason::ExpiryExceedsMax => "EXPIRY_EXCEEDS_MAX",
            ViolationReason::IssuerNotTrusted => "ISSUER_NOT_TRUSTED",
        }
    }
}
