//! `iam-server token mint`: bootstrap tokens signed with the server key (SPEC §3), for first
//! setup, scripts and development.

use iam_domain::{OrgId, PrincipalKind, RoleSlug, Scope, ScopeTarget, Subject};
use iam_http::jwt::{AccessClaims, Audience, Ed25519Key, TokenSigner};
use time::{Duration, OffsetDateTime};

use crate::config::Config;

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// `tenant_id`.
    pub tenant: OrgId,
    /// `sub`.
    pub subject: String,
    /// `roles`.
    pub roles: Vec<RoleSlug>,
    /// `scope`.
    pub scope: Scope,
    /// `scope_id` (defaults to the tenant for organization scope).
    pub scope_id: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// `principal_type`.
    pub kind: PrincipalKind,
}

/// Signs a token for `request`, issued at `now`.
///
/// # Errors
/// When `scope_id` is missing for a project scope, the lifetime is not positive, or signing
/// fails.
pub fn mint(
    config: &Config,
    key: &Ed25519Key,
    request: &MintRequest,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    anyhow::ensure!(request.ttl.is_positive(), "the lifetime must be positive");
    let scope_id = match (&request.scope_id, request.scope) {
        (Some(id), _) => id.clone(),
        (None, Scope::Organization) => request.tenant.to_string(),
        (None, Scope::Project) => anyhow::bail!("--scope-id is required for project scope"),
    };
    // A token whose scope target is not an organization or project id would be refused.
    let target = ScopeTarget::parse(request.scope, &scope_id)
        .map_err(|e| anyhow::anyhow!("--scope-id {scope_id:?}: {e}"))?;
    let subject =
        Subject::parse(request.subject.as_str()).map_err(|e| anyhow::anyhow!("--sub: {e}"))?;
    let iat = now.unix_timestamp();
    let claims = AccessClaims {
        sub: subject.to_string(),
        iss: config.issuer.clone(),
        aud: Audience::One(config.audience.clone()),
        exp: (now + request.ttl).unix_timestamp(),
        iat,
        nbf: Some(iat),
        jti: uuid::Uuid::new_v4().to_string(),
        tenant_id: request.tenant.to_string(),
        scope: target.scope().as_str().to_owned(),
        scope_id: target.id().to_owned(),
        roles: request.roles.iter().map(ToString::to_string).collect(),
        principal_type: request.kind.as_str().to_owned(),
        credential_id: None,
    };
    Ok(TokenSigner::new(key)?.sign(&claims)?)
}
