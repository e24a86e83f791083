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
pub mod error;
pub mod health;
pub mod idempotency;
pub mod jwt;
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
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::ports::{Adapters, IdempotencyStore, Readiness};
use iam_domain::{CredentialAdmin, ServiceAccountAdmin, TokenService};

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

/// Registers every route. The caller must also register `web::Data<AppState<A>>`,
/// `web::Data<caller::Authenticator>` and `web::Data<client_ip::TrustedProxies>` as app data
/// and wrap the app in [`request_id::middleware`].
///
/// Every path is one resource: a method it does not serve is answered 405 with an `Allow`
/// header listing the ones it does (RFC 9110 §15.5.6), and every `GET` also serves `HEAD`.
pub fn configure<A: HttpAdapters>(cfg: &mut web::ServiceConfig) {
    use service_accounts as sa;
    let openapi = openapi::json();
    let openapi = move || {
        let openapi = openapi.clone();
        async move {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(openapi)
        }
    };
    let account = format!("{}/{{id}}", sa::BASE_PATH);
    let credentials = format!("{}/{{saId}}/credentials", sa::BASE_PATH);
    let credential = format!("{}/{{saId}}/credentials/{{id}}", sa::BASE_PATH);
    cfg.service(read_only("/healthz", health::healthz))
        .service(read_only("/readyz", health::readyz::<A>))
        .service(read_only("/openapi.json", openapi))
        .service(
            resource(sa::BASE_PATH, "GET, HEAD, POST")
                .route(web::get().to(sa::list::<A>))
                .route(web::head().to(sa::list::<A>))
                .route(web::post().to(sa::create::<A>)),
        )
        .service(
            resource(&account, "GET, HEAD, PATCH, DELETE")
                .route(web::get().to(sa::get::<A>))
                .route(web::head().to(sa::get::<A>))
                .route(web::patch().to(sa::update::<A>))
                .route(web::delete().to(sa::delete::<A>)),
        )
        .service(
            resource(&credentials, "GET, HEAD, POST")
                .route(web::get().to(credentials::list::<A>))
                .route(web::head().to(credentials::list::<A>))
                .route(web::post().to(credentials::create::<A>)),
        )
        .service(
            resource(&credential, "GET, HEAD, DELETE")
                .route(web::get().to(credentials::get::<A>))
                .route(web::head().to(credentials::get::<A>))
                .route(web::delete().to(credentials::delete::<A>)),
        )
        .service(post_only(
            "/v1/regions/global/auth/token",
            token_endpoints::mint::<A>,
        ))
        .service(post_only(
            "/oauth2/token",
            token_endpoints::oauth2_token::<A>,
        ))
        .service(post_only(
            "/v1/regions/global/auth/introspect",
            token_endpoints::introspect,
        ))
        .service(post_only(
            "/v1/regions/global/auth/revoke",
            token_endpoints::revoke::<A>,
        ))
        .service(read_only(
            "/.well-known/jwks.json",
            token_endpoints::jwks::<A>,
        ))
        .service(read_only(
            "/.well-known/oauth-authorization-server",
            token_endpoints::metadata::<A>,
        ))
        .default_service(web::to(not_found));
}

/// The resource at `path`, answering every method it has no route for with 405 and
/// `Allow: {allow}`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || {
        std::future::ready(method_not_allowed(allow))
    }))
}

/// A resource serving only `GET` (and `HEAD`) with `handler`.
fn read_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    resource(path, "GET, HEAD")
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
}

/// A resource serving only `POST` with `handler`.
fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    resource(path, "POST").route(web::post().to(handler))
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
