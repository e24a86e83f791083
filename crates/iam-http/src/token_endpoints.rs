//! The token service over HTTP (SPEC §6): the k0rdent mint (`POST /v1/regions/global/auth/token`,
//! JSON), the standard OAuth2 client-credentials endpoint (`POST /oauth2/token`, RFC 6749 §4.4
//! with `client_secret_basic` and `client_secret_post`, errors per §5.2), introspection,
//! revocation, the JWKS and RFC 8414 metadata.
#![expect(
    clippy::missing_errors_doc,
    reason = "handler doc comments become OpenAPI summaries; their errors are the statuses listed in #[utoipa::path]"
)]

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::{Grant, MintError, Narrowing, PrincipalKind, RoleSlug, Scope};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::body::{self, Fields, Presence};
use crate::caller::{Authenticator, Caller};
use crate::error::{ApiError, ErrorDetail, ErrorEnvelope};
use crate::jwt::{AccessClaims, Audience, TokenSigner, VerificationKey};
use crate::oauth_form::{ClientAuth, JWT_BEARER, oauth_error, oauth_request};
use crate::{AppState, HttpAdapters};
use crate::{client_ip, metrics};

/// Signs grants and describes this issuer.
pub struct TokenIssuer {
    signer: TokenSigner,
    issuer: String,
    audience: String,
    public_url: String,
    jwks: String,
}

impl TokenIssuer {
    /// An issuer signing with `signer` as `issuer` for `audience`, publishing `keys` (the
    /// current key first, then keys kept for rotation) and its endpoints under `public_url`.
    pub fn new(
        signer: TokenSigner,
        issuer: String,
        audience: String,
        public_url: &str,
        keys: &[VerificationKey],
    ) -> Self {
        let jwks = json!({ "keys": keys.iter().map(VerificationKey::jwk).collect::<Vec<_>>() });
        Self {
            signer,
            issuer,
            audience,
            public_url: public_url.trim_end_matches('/').to_owned(),
            jwks: jwks.to_string(),
        }
    }

    fn sign(&self, grant: &Grant) -> Result<String, ApiError> {
        let claims = AccessClaims {
            sub: grant.subject.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            exp: grant.expires_at.unix_timestamp(),
            iat: grant.issued_at.unix_timestamp(),
            nbf: Some(grant.issued_at.unix_timestamp()),
            jti: grant.token_id.clone(),
            tenant_id: grant.tenant.to_string(),
            scope: grant.target.scope().as_str().to_owned(),
            scope_id: grant.target.id().to_owned(),
            roles: grant.roles.iter().map(ToString::to_string).collect(),
            principal_type: PrincipalKind::ServiceAccount.as_str().to_owned(),
            credential_id: Some(grant.credential_id.to_string()),
        };
        self.signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing a token failed");
            ApiError::internal()
        })
    }
}

/// A minted access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires: the token's `exp − iat`.
    pub expires_in: i64,
}

fn token_response<A: HttpAdapters>(
    state: &AppState<A>,
    grant: &Grant,
) -> Result<HttpResponse, ApiError> {
    let body = TokenResponse {
        access_token: state.issuer.sign(grant)?,
        token_type: "Bearer",
        // Exactly the token's `exp − iat` (both whole seconds), also when the credential's
        // expiry cut the lifetime short.
        expires_in: grant.expires_at.unix_timestamp() - grant.issued_at.unix_timestamp(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")))
        .json(body))
}

/// Body of the k0rdent token request (documentation; parsed field by field).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct TokenRequestBody {
    #[schema(value_type = GrantType)]
    grant_type: String,
    /// The service account's client id, `{id}@{orgSlug}.iam`.
    client_id: String,
    /// The client secret, `plt_cs_…` (or authenticate with `client_assertion`).
    #[schema(nullable = false)]
    client_secret: Option<String>,
    /// With `client_assertion`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    #[schema(nullable = false)]
    client_assertion_type: Option<String>,
    /// A token of an issuer one of the account's federated credentials trusts (SPEC §9),
    /// instead of a client secret.
    #[schema(nullable = false, min_length = 1)]
    client_assertion: Option<String>,
    /// Ask for less than the account has (`null`: as omitted).
    scope_narrowing: Option<ScopeNarrowing>,
}

/// The one grant type served.
#[derive(ToSchema)]
pub enum GrantType {
    /// OAuth 2.0 client credentials (RFC 6749 §4.4).
    #[schema(rename = "client_credentials")]
    ClientCredentials,
}

/// A narrower grant than the account's (every field optional; omitted: the account's own).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct ScopeNarrowing {
    /// `project` narrows an organization-scoped account to one of its projects.
    #[schema(value_type = Option<crate::service_accounts::ScopeSchema>)]
    scope: Option<String>,
    /// The organization or project id.
    scope_id: Option<String>,
    /// A subset of the account's roles.
    roles: Option<Vec<String>>,
}

/// The form of `POST /oauth2/token` (RFC 6749 §4.4; documentation, parsed field by field).
/// The client authenticates with `Authorization: Basic` (`client_secret_basic`), with
/// `client_id` and `client_secret` in the form (`client_secret_post`), or with `client_id` and
/// a federated token as `client_assertion` (RFC 7523 §2.2, SPEC §9): one of them.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct OAuthTokenForm {
    #[schema(value_type = GrantType)]
    grant_type: String,
    /// Space-separated role slugs to narrow the grant to (optional).
    #[schema(nullable = false)]
    scope: Option<String>,
    /// With `client_secret_post`.
    #[schema(nullable = false)]
    client_id: Option<String>,
    /// With `client_secret_post`.
    #[schema(nullable = false)]
    client_secret: Option<String>,
    /// With a federated token: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    #[schema(nullable = false)]
    client_assertion_type: Option<String>,
    /// A token of an issuer one of the account's federated credentials trusts (SPEC §9);
    /// `client_id` is then required.
    #[schema(nullable = false)]
    client_assertion: Option<String>,
}

/// Body of introspection and revocation (documentation; parsed field by field).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document only"
)]
pub struct TokenBody {
    /// The token (a JWT).
    #[schema(min_length = 1)]
    token: String,
}

/// The answer of an introspection: an active token's claims, or only `active: false`.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Introspection {
    /// Live: `active: true` and the token's claims.
    Active(Box<ActiveToken>),
    /// Not live (invalid, expired, revoked, of another tenant, or its account or credential
    /// is gone or disabled).
    Inactive(InactiveToken),
}

/// An active token's introspection.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documents the response in the OpenAPI document only"
)]
pub struct ActiveToken {
    /// Always `true`.
    active: bool,
    sub: String,
    iss: String,
    /// The audience this service accepted the token for.
    aud: String,
    exp: i64,
    iat: i64,
    nbf: Option<i64>,
    jti: String,
    tenant_id: String,
    #[schema(value_type = crate::service_accounts::ScopeSchema)]
    scope: String,
    scope_id: String,
    roles: Vec<String>,
    /// `user`, `api_key` or `service_account`.
    principal_type: String,
    /// The credential a service-account token was minted with.
    credential_id: Option<String>,
}

/// A token that is not active.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the response in the OpenAPI document only"
)]
pub struct InactiveToken {
    /// Always `false`.
    active: bool,
}

/// The answer of a revocation.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the response in the OpenAPI document only"
)]
pub struct Revoked {
    /// Always `true`.
    revoked: bool,
}

/// Exchange a client id and secret for an access token (k0rdent JSON form).
#[utoipa::path(
    post, path = "/v1/regions/global/auth/token", operation_id = "mintToken", tag = "Auth",
    request_body = TokenRequestBody,
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 429, body = ErrorEnvelope, headers(("Retry-After" = String)),
            description = "Too many failed mints from this client and address; refused before any check."),
    )
)]
pub async fn mint<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The body holds the client secret: read into a buffer zeroed on drop.
    let bytes = body::read_sensitive(payload).await?;
    let map = body::object(&req, &bytes)?
        .ok_or_else(|| ApiError::bad_request(vec![ErrorDetail::reason("BODY_REQUIRED")]))?;
    let mut f = Fields::new(map);
    f.reject_unknown(
        &[
            "grant_type",
            "client_id",
            "client_secret",
            "client_assertion_type",
            "client_assertion",
            "scope_narrowing",
        ],
        &[],
    );
    let grant_type = f.required_string("grant_type");
    let client_id = f.required_string("client_id");
    let client_auth = client_auth(&mut f);
    let narrowing = match f.object("scope_narrowing") {
        Presence::Value(mut n) => {
            n.reject_unknown(&["scope", "scopeId", "roles"], &[]);
            let narrowing = Narrowing {
                scope: match n.string("scope") {
                    Presence::Value(raw) => n.parse("scope", raw, |s| s.parse::<Scope>()),
                    _ => None,
                },
                scope_id: match n.string("scopeId") {
                    Presence::Value(raw) => Some(raw),
                    _ => None,
                },
                roles: match n.strings("roles") {
                    Presence::Value(raw) => Some(
                        raw.into_iter()
                            .filter_map(|(i, r)| n.parse(format!("roles[{i}]"), r, RoleSlug::parse))
                            .collect(),
                    ),
                    _ => None,
                },
            };
            f.errors.extend(n.errors.into_iter().map(|mut e| {
                e.field = e.field.map(|field| format!("scope_narrowing.{field}"));
                e
            }));
            narrowing
        }
        _ => Narrowing::default(),
    };
    f.finish()?;
    let (Some(grant_type), Some(client_id), Some(client_auth)) =
        (grant_type, client_id, client_auth)
    else {
        tracing::error!("token request passed validation without its required fields");
        return Err(ApiError::internal());
    };
    if grant_type != "client_credentials" {
        return Err(ApiError::bad_request(vec![ErrorDetail::field(
            "grant_type",
            "UNSUPPORTED_GRANT_TYPE",
            "only client_credentials is supported",
        )]));
    }
    match mint_for(&state, &req, &client_id, &client_auth, &narrowing).await {
        Ok(grant) => token_response(&state, &grant),
        Err(MintError::Throttled { retry_after }) => Err(ApiError::too_many_requests(retry_after)),
        Err(MintError::InvalidClient) => Err(ApiError::invalid_client()),
        Err(MintError::NarrowingRefused(why)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            why,
            vec![ErrorDetail::reason("SCOPE_NARROWING_REFUSED")],
        )),
        Err(MintError::Store(e)) => Err(e.into()),
        Err(MintError::Internal(cause)) => Err(ApiError::internal_because(&*cause)),
    }
}

/// OAuth2 client-credentials token endpoint (RFC 6749 §4.4) for standard client libraries.
#[utoipa::path(
    post, path = "/oauth2/token", operation_id = "oauth2Token", tag = "Auth",
    request_body(content_type = "application/x-www-form-urlencoded", content = OAuthTokenForm),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "RFC 6749 §5.2 error"),
        (status = 401, description = "invalid_client"),
        (status = 429, headers(("Retry-After" = String)), description = "slow_down: too many failed mints"),
    )
)]
pub async fn oauth2_token<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The body may hold the client secret (client_secret_post): zeroed on drop.
    let bytes = body::read_sensitive(payload).await?;
    let (client_id, client_auth, narrowing) = match oauth_request(&req, &bytes) {
        Ok(request) => request,
        Err(refusal) => return Ok(refusal.response()),
    };
    match mint_for(&state, &req, &client_id, &client_auth, &narrowing).await {
        Ok(grant) => token_response(&state, &grant),
        Err(MintError::Throttled { retry_after }) => Ok(oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &format!(
                "too many failed attempts; retry in {} s",
                retry_after.as_secs().max(1)
            ),
        )
        .retry_after(retry_after)
        .response()),
        Err(MintError::InvalidClient) => Ok(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid client credentials",
        )
        .response()),
        Err(MintError::NarrowingRefused(why)) => {
            Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &why).response())
        }
        Err(MintError::Store(e)) => Err(e.into()),
        Err(MintError::Internal(cause)) => Err(ApiError::internal_because(&*cause)),
    }
}

/// Mints with a secret or a federated token, and counts the outcome.
async fn mint_for<A: HttpAdapters>(
    state: &AppState<A>,
    req: &HttpRequest,
    client_id: &str,
    auth: &ClientAuth,
    narrowing: &Narrowing,
) -> Result<Grant, MintError> {
    let ip = client_ip::of(req);
    let minted = match auth {
        ClientAuth::Secret(secret) => state.tokens.mint(client_id, secret, narrowing, ip).await,
        ClientAuth::Assertion(assertion) => {
            state
                .tokens
                .mint_with_assertion(client_id, assertion, narrowing, ip)
                .await
        }
    };
    metrics::record_mint(req, &minted);
    minted
}

/// The client authentication of a JSON token request: `client_secret`, or
/// `client_assertion_type` + `client_assertion` (never both); errors go to `f`.
fn client_auth(f: &mut Fields) -> Option<ClientAuth> {
    let assertion_type = f.string("client_assertion_type");
    let assertion = f.string("client_assertion");
    if matches!(
        (&assertion_type, &assertion),
        (Presence::Absent, Presence::Absent)
    ) {
        return f
            .required_string("client_secret")
            .map(|secret| ClientAuth::Secret(Zeroizing::new(secret)));
    }
    if !matches!(f.string("client_secret"), Presence::Absent) {
        f.error(
            "client_secret",
            "NOT_ALLOWED",
            "use one client authentication method: client_secret or client_assertion",
        );
    }
    match assertion_type {
        Presence::Value(kind) if kind == JWT_BEARER => {}
        Presence::Invalid => {}
        Presence::Value(_) => f.error(
            "client_assertion_type",
            "INVALID_VALUE",
            &format!("must be {JWT_BEARER}"),
        ),
        Presence::Absent | Presence::Null => f.error(
            "client_assertion_type",
            "REQUIRED",
            "required with client_assertion",
        ),
    }
    match assertion {
        Presence::Value(token) if !token.is_empty() => Some(ClientAuth::Assertion(token)),
        Presence::Invalid => None,
        Presence::Value(_) => {
            f.error("client_assertion", "TOO_SHORT", "must not be empty");
            None
        }
        Presence::Absent | Presence::Null => {
            f.error(
                "client_assertion",
                "REQUIRED",
                "required with client_assertion_type",
            );
            None
        }
    }
}

fn token_field(req: &HttpRequest, bytes: &[u8]) -> Result<String, ApiError> {
    let map = body::object(req, bytes)?
        .ok_or_else(|| ApiError::bad_request(vec![ErrorDetail::reason("BODY_REQUIRED")]))?;
    let mut f = Fields::new(map);
    f.reject_unknown(&["token"], &[]);
    let token = f.required_string("token");
    if token.as_deref() == Some("") {
        f.error("token", "TOO_SHORT", "must not be empty");
    }
    f.finish()?;
    token.ok_or_else(ApiError::internal)
}

/// Is a token active? Answers `{active: false}` only, or `{active: true, …claims}`.
#[utoipa::path(
    post, path = "/v1/regions/global/auth/introspect", operation_id = "introspectToken", tag = "Auth",
    request_body = TokenBody,
    responses(
        (status = 200, body = Introspection, description = "`{active: false}` for any token that is not live, else `{active: true, …claims}`."),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn introspect(
    authenticator: web::Data<Authenticator>,
    Caller(caller): Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload).await?;
    let token = token_field(&req, &bytes)?;
    let inactive = || HttpResponse::Ok().json(json!({ "active": false }));
    let Ok((claims, target)) = authenticator.verify(&token).await else {
        return Ok(inactive());
    };
    let expired = claims.exp <= authenticator.now().unix_timestamp();
    if expired || target.tenant != caller.tenant || !authenticator.is_live(&target).await? {
        return Ok(inactive());
    }
    let mut body = serde_json::to_value(&claims).map_err(|_| ApiError::internal())?;
    if let Some(map) = body.as_object_mut() {
        map.insert("active".into(), true.into());
        // One string, as published: the audience this service accepted the token for (an
        // external token may name several).
        map.insert("aud".into(), authenticator.audience().into());
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Revoke a token (one's own, or, for a tenant admin, any of the tenant). Always 200.
#[utoipa::path(
    post, path = "/v1/regions/global/auth/revoke", operation_id = "revokeToken", tag = "Auth",
    request_body = TokenBody,
    responses(
        (status = 200, body = Revoked, description = "Always `{revoked: true}`, whether or not anything was revoked."),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
    ),
    security(("bearerAuth" = []))
)]
pub async fn revoke<A: HttpAdapters>(
    state: web::Data<AppState<A>>,
    authenticator: web::Data<Authenticator>,
    Caller(caller): Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload).await?;
    let token = token_field(&req, &bytes)?;
    if let Ok((claims, target)) = authenticator.verify(&token).await {
        state.tokens.revoke(&caller, &target, claims.exp).await?;
    }
    Ok(HttpResponse::Ok().json(json!({ "revoked": true })))
}

/// The public keys of this issuer (JWKS, RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", operation_id = "getJwks", tag = "Auth", responses((status = 200, description = "JWKS")))]
pub async fn jwks<A: HttpAdapters>(state: web::Data<AppState<A>>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        ))
        .content_type("application/json")
        .body(state.issuer.jwks.clone())
}

/// OAuth 2.0 authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", operation_id = "getAuthorizationServerMetadata", tag = "Auth", responses((status = 200, description = "RFC 8414 metadata")))]
pub async fn metadata<A: HttpAdapters>(state: web::Data<AppState<A>>) -> HttpResponse {
    let base = &state.issuer.public_url;
    HttpResponse::Ok().json(json!({
        "issuer": state.issuer.issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
    }))
}
