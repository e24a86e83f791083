//! Organizations (tenants), their policy, and projects.

use std::collections::BTreeSet;
use std::fmt;

use time::Duration;

use crate::resource_id::{self, OrgId};
use crate::scope::Scope;
use crate::validation::InvalidValue;

/// The slug an organization uses in client ids (`{id}@{slug}.iam`); same pattern as ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrgSlug(String);

impl OrgSlug {
    /// Parses a raw slug.
    ///
    /// # Errors
    /// [`InvalidValue`] when `raw` does not match the resource id pattern.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        resource_id::check(&raw)?;
        Ok(Self(raw))
    }

    /// The slug as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&OrgId> for OrgSlug {
    fn from(id: &OrgId) -> Self {
        Self(id.as_str().to_owned())
    }
}

impl fmt::Display for OrgSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an organization policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `allowedScopes` was empty: no service account could ever be created.
    #[error("allowedScopes must name at least one scope")]
    NoScopes,
    /// A lifetime was zero or negative.
    #[error("credential lifetimes must be positive")]
    NonPositiveLifetime,
    /// A lifetime exceeded [`OrgPolicy::MAX_LIFETIME`].
    #[error("credential lifetimes may be at most 100 years")]
    LifetimeTooLong,
    /// `credentialDefaultLifetime` exceeded `credentialMaxLifetime`.
    #[error("credentialDefaultLifetime must not exceed credentialMaxLifetime")]
    DefaultExceedsMax,
    /// `maxActiveCredentials` outside 1–100.
    #[error("maxActiveCredentials must be between 1 and 100")]
    CredentialCapOutOfRange,
}

/// Rules an organization sets for its service accounts and their credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicy {
    allowed_scopes: BTreeSet<Scope>,
    credential_default_lifetime: Duration,
    credential_max_lifetime: Duration,
    max_active_credentials: u32,
}

impl OrgPolicy {
    /// The longest lifetime a policy may allow (100 years), so expiry arithmetic never
    /// leaves the representable range.
    pub const MAX_LIFETIME: Duration = Duration::days(36_500);

    /// Builds a policy, enforcing its invariants (default ≤ max, at least one scope, …).
    ///
    /// # Errors
    /// The [`PolicyError`] naming the first broken invariant.
    pub fn new(
        allowed_scopes: BTreeSet<Scope>,
        credential_default_lifetime: Duration,
        credential_max_lifetime: Duration,
        max_active_credentials: u32,
    ) -> Result<Self, PolicyError> {
        if allowed_scopes.is_empty() {
            return Err(PolicyError::NoScopes);
        }
        if !credential_default_lifetime.is_positive() || !credential_max_lifetime.is_positive() {
            return Err(PolicyError::NonPositiveLifetime);
        }
        if credential_max_lifetime > Self::MAX_LIFETIME {
            return Err(PolicyError::LifetimeTooLong);
        }
        if credential_default_lifetime > credential_max_lifetime {
            return Err(PolicyError::DefaultExceedsMax);
        }
        if !(1..=100).contains(&max_active_credentials) {
            return Err(PolicyError::CredentialCapOutOfRange);
        }
        Ok(Self {
            allowed_scopes,
            credential_default_lifetime,
            credential_max_lifetime,
            max_active_credentials,
        })
    }

    /// Scopes service accounts of this organization may have.
    pub fn allowed_scopes(&self) -> &BTreeSet<Scope> {
        &self.allowed_scopes
    }

    /// Whether `scope` is allowed.
    pub fn allows(&self, scope: Scope) -> bool {
        self.allowed_scopes.contains(&scope)
    }

    /// Lifetime of a credential created without `expiresAt`.
    pub fn credential_default_lifetime(&self) -> Duration {
        self.credential_default_lifetime
    }

    /// Longest lifetime a credential may be given.
    pub fn credential_max_lifetime(&self) -> Duration {
        self.credential_max_lifetime
    }

    /// Most active (non-expired) credentials one service account may hold.
    pub fn max_active_credentials(&self) -> u32 {
        self.max_active_credentials
    }
}

impl Default for OrgPolicy {
    /// The contract's defaults: both scopes, 90-day default and 365-day maximum lifetime, 5
    /// active credentials.
    fn default() -> Self {
        Self {
            allowed_scopes: Scope::ALL.into_iter().collect(),
            credential_default_lifetime: Duration::days(90),
            credential_max_lifetime: Duration::days(365),
            max_active_credentials: 5,
        }
    }
}

/// An organization: one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// The tenant id carried by tokens as `tenant_id`.
    pub id: OrgId,
    /// Used in client ids; defaults to the id.
    pub slug: OrgSlug,
    /// The organization's rules.
    pub policy: OrgPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_has_the_published_values() {
        let policy = OrgPolicy::default();
        assert!(policy.allows(Scope::Organization) && policy.allows(Scope::Project));
        assert_eq!(policy.credential_default_lifetime(), Duration::days(90));
        assert_eq!(policy.credential_max_lifetime(), Duration::days(365));
        assert_eq!(policy.max_active_credentials(), 5);
    }

    #[test]
    fn policy_refuses_default_lifetime_above_max() {
        let scopes = BTreeSet::from([Scope::Project]);
        let err = OrgPolicy::new(scopes, Duration::days(30), Duration::days(10), 5).unwrap_err();
        assert_eq!(err, PolicyError::DefaultExceedsMax);
    }

    #[test]
    fn policy_refuses_empty_scopes_zero_lifetimes_and_cap_out_of_range() {
        let days = Duration::days;
        let one = || BTreeSet::from([Scope::Project]);
        assert_eq!(
            OrgPolicy::new(BTreeSet::new(), days(1), days(2), 5).unwrap_err(),
            PolicyError::NoScopes
        );
        assert_eq!(
            OrgPolicy::new(one(), Duration::ZERO, days(2), 5).unwrap_err(),
            PolicyError::NonPositiveLifetime
        );
        assert_eq!(
            OrgPolicy::new(one(), days(1), days(2), 0).unwrap_err(),
            PolicyError::CredentialCapOutOfRange
        );
    }
}
