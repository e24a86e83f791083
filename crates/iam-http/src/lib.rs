//! # iam-http
//!
//! The actix-web adapter of the IAM service: the routes of the contract, the error envelope,
//! request ids, bearer-token verification, page tokens, idempotency, health checks and the
//! generated `OpenAPI` document.
//!
//! Handlers are generic over the deployment's [`Adapters`]; `iam-server` picks the concrete
//! ones and calls [`configure`].

pub mod body;
pub mod caller;
pub mod client_ip;
pub mod credentials;
pub mod deadline;
pub mod error;
pub mod external_issuer;
pub mod federated_credentials;
pub mod header_limit;
pub mod health;
pub mod idempotency;
pub mod jwt;
pub mod metrics;
pub mod oauth_form;
pub mod openapi;
pub mod page_token;
pub mod paging;
pub mod reply;
pub mod request_id;
pub mod sealing;
pub mod service_accounts;
pub mod signing_keys;
pub mod token_endpoints;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::ports::{Adapters, IdempotencyStore, Readiness};
use iam_domain::{CredentialAdmin, FederationAdmin, ServiceAccountAdmin, TokenService};

use crate::error::{ApiError, ErrorDetail};
use crate::page_token::PageTokenCodec;
use crate::sealing::ResponseSealer;

/// The adapters of one deployment as the HTTP layer needs them: the domain's bundle plus the
/// ports only the HTTP layer uses (idempotency records, readiness).
pub trait HttpAdapters: Adapters {
    /// Idempotency records.
    type Idempotency: IdempotencyStore;
    /// Backend readiness.
    type Readiness: Readiness;
}

/// Shared state of the routes.
pub struct AppState<A: HttpAdapters> {
    /// The service-account use cases.
    pub admin: ServiceAccountAdmin<A>,
    /// The credential use cases.
    pub credentials: CredentialAdmin<A>,
    /// Federated credential use cases (SPEC §9).
    pub federation: FederationAdmin<A>,
    /// Token minting, liveness and revocation.
    pub tokens: TokenService<A>,
    /// Signs minted tokens; publishes keys and metadata.
    pub issuer: token_endpoints::TokenIssuer,
    /// Seals recorded idempotent responses.
    pub sealer: ResponseSealer,
    /// Idempotency records.
    pub idempotency: A::Idempotency,
    /// Storage readiness.
    pub readiness: A::Readiness,
    /// Page-token codec.
    pub page_tokens: PageTokenCodec,
}

/// One path the service serves: its template (`{name}` for a parameter), the methods it
/// serves there (what a 405 names in `Allow`), and how its handlers are registered.
///
/// [`routes`] lists them all; [`configure`] registers exactly that list, and the tests hold
/// it against the `OpenAPI` document (every route documented, every documented operation
/// routed) — one source for both.
pub struct Route {
    /// The path template.
    pub path: String,
    /// The methods served, as the `Allow` header lists them (`HEAD` wherever `GET`).
    pub allow: &'static str,
    register: fn(actix_web::Resource) -> actix_web::Resource,
}

impl Route {
    fn new(
        path: impl Into<String>,
        allow: &'static str,
        register: fn(actix_web::Resource) -> actix_web::Resource,
    ) -> Self {
        Self {
            path: path.into(),
            allow,
            register,
        }
    }

    /// The served methods (`GET`, `POST`, …), `HEAD` left out (it follows `GET`).
    pub fn methods(&self) -> impl Iterator<Item = &'static str> {
        self.allow.split(", ").filter(|m| *m != "HEAD")
    }
}

/// Every route of the service.
pub fn routes<A: HttpAdapters>() -> Vec<Route> {
    use service_accounts as sa;
    let base = sa::BASE_PATH;
    vec![
        Route::new("/healthz", "GET, HEAD", |r| read_only(r, health::healthz)),
        Route::new("/readyz", "GET, HEAD", |r| {
            read_only(r, health::readyz::<A>)
        }),
        Route::new("/metrics", "GET, HEAD", |r| read_only(r, metrics::metrics)),
        Route::new("/openapi.json", "GET, HEAD", |r| {
            read_only(r, openapi::serve)
        }),
        Route::new(base, "GET, HEAD, POST", |r| {
            read_only(r, sa::list::<A>).route(web::post().to(sa::create::<A>))
        }),
        Route::new(format!("{base}/{{id}}"), "GET, HEAD, PATCH, DELETE", |r| {
            read_only(r, sa::get::<A>)
                .route(web::patch().to(sa::update::<A>))
                .route(web::delete().to(sa::delete::<A>))
        }),
        Route::new(
            format!("{base}/{{serviceAccountId}}/credentials"),
            "GET, HEAD, POST",
            |r| {
                read_only(r, credentials::list::<A>).route(web::post().to(credentials::create::<A>))
            },
        ),
        Route::new(
            format!("{base}/{{serviceAccountId}}/credentials/{{id}}"),
            "GET, HEAD, DELETE",
            |r| {
                read_only(r, credentials::get::<A>)
                    .route(web::delete().to(credentials::delete::<A>))
            },
        ),
        Route::new(
            format!("{base}/{{serviceAccountId}}/federated-credentials"),
            "GET, HEAD, POST",
            |r| {
                read_only(r, federated_credentials::list::<A>)
                    .route(web::post().to(federated_credentials::create::<A>))
            },
        ),
        Route::new(
            format!("{base}/{{serviceAccountId}}/federated-credentials/{{id}}"),
            "GET, HEAD, DELETE",
            |r| {
                read_only(r, federated_credentials::get::<A>)
                    .route(web::delete().to(federated_credentials::delete::<A>))
            },
        ),
        Route::new("/v1/regions/global/auth/token", "POST", |r| {
            r.route(web::post().to(token_endpoints::mint::<A>))
        }),
        Route::new("/oauth2/token", "POST", |r| {
            r.route(web::post().to(token_endpoints::oauth2_token::<A>))
        }),
        Route::new("/v1/regions/global/auth/introspect", "POST", |r| {
            r.route(web::post().to(token_endpoints::introspect))
        }),
        Route::new("/v1/regions/global/auth/revoke", "POST", |r| {
            r.route(web::post().to(token_endpoints::revoke::<A>))
        }),
        Route::new("/.well-known/jwks.json", "GET, HEAD", |r| {
            read_only(r, token_endpoints::jwks::<A>)
        }),
        Route::new(
            "/.well-known/oauth-authorization-server",
            "GET, HEAD",
            |r| read_only(r, token_endpoints::metadata::<A>),
        ),
    ]
}

/// Registers every route of [`routes`]. The caller must also register
/// `web::Data<AppState<A>>`, `web::Data<caller::Authenticator>` and
/// `web::Data<client_ip::TrustedProxies>` as app data and wrap the app in
/// [`request_id::middleware`].
///
/// Every path is one resource: a method it does not serve is answered 405 with an `Allow`
/// header listing the ones it does (RFC 9110 §15.5.6), and every `GET` also serves `HEAD`.
pub fn configure<A: HttpAdapters>(cfg: &mut web::ServiceConfig) {
    for route in routes::<A>() {
        let allow = route.allow;
        let resource = web::resource(route.path).default_service(web::to(move || {
            std::future::ready(method_not_allowed(allow))
        }));
        // The deadline wraps each resource rather than the app: routing must be done before
        // the middleware may keep a handle on the request for its 503.
        cfg.service((route.register)(resource).wrap(from_fn(deadline::middleware)));
    }
    cfg.default_service(web::to(not_found));
}

/// `resource` serving `handler` for `GET` and `HEAD`.
fn read_only<F, Args>(resource: actix_web::Resource, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    resource
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError as _;
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", req.path()),
        vec![ErrorDetail::reason("NOT_FOUND")],
    )
    .error_response()
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    use actix_web::ResponseError as _;
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed on this resource; allowed: {allow}"),
        vec![ErrorDetail::reason("METHOD_NOT_ALLOWED")],
    )
    .error_response();
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    response
}
