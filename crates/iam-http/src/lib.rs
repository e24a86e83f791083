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
pub mod openapi;
pub mod page_token;
pub mod paging;
pub mod reply;
pub mod request_id;
pub mod sealing;
pub mod service_accounts;
pub mod throttle;
pub mod token_endpoints;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::ports::Adapters;
use iam_domain::{CredentialAdmin, ServiceAccountAdmin, TokenService};

use crate::error::{ApiError, ErrorDetail};
use crate::page_token::PageTokenCodec;
use crate::sealing::ResponseSealer;

/// Shared state of the routes.
pub struct AppState<A: Adapters> {
    /// The service-account use cases.
    pub admin: ServiceAccountAdmin<A>,
    /// The credential use cases.
    pub credentials: CredentialAdmin<A>,
    /// Token minting, liveness and revocation.
    pub tokens: TokenService<A>,
    /// Signs minted tokens; publishes keys and metadata.
    pub issuer: token_endpoints::TokenIssuer,
    /// Throttles failed mints.
    pub throttle: throttle::MintThrottle,
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
pub fn configure<A: Adapters>(cfg: &mut web::ServiceConfig) {
    use service_accounts as sa;
    let openapi = openapi::json();
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz::<A>))
        .route(
            "/openapi.json",
            web::get().to(move || {
                let openapi = openapi.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(openapi)
                }
            }),
        )
        .service(
            web::resource(sa::BASE_PATH)
                .route(web::get().to(sa::list::<A>))
                .route(web::post().to(sa::create::<A>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(format!("{}/{{id}}", sa::BASE_PATH))
                .route(web::get().to(sa::get::<A>))
                .route(web::patch().to(sa::update::<A>))
                .route(web::delete().to(sa::delete::<A>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(format!("{}/{{saId}}/credentials", sa::BASE_PATH))
                .route(web::get().to(credentials::list::<A>))
                .route(web::post().to(credentials::create::<A>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(format!("{}/{{saId}}/credentials/{{id}}", sa::BASE_PATH))
                .route(web::get().to(credentials::get::<A>))
                .route(web::delete().to(credentials::delete::<A>))
                .default_service(web::to(method_not_allowed)),
        )
        .route(
            "/v1/regions/global/auth/token",
            web::post().to(token_endpoints::mint::<A>),
        )
        .route(
            "/oauth2/token",
            web::post().to(token_endpoints::oauth2_token::<A>),
        )
        .route(
            "/v1/regions/global/auth/introspect",
            web::post().to(token_endpoints::introspect),
        )
        .route(
            "/v1/regions/global/auth/revoke",
            web::post().to(token_endpoints::revoke::<A>),
        )
        .route(
            "/.well-known/jwks.json",
            web::get().to(token_endpoints::jwks::<A>),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            web::get().to(token_endpoints::metadata::<A>),
        )
        .default_service(web::to(not_found));
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

async fn method_not_allowed() -> HttpResponse {
    use actix_web::ResponseError as _;
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this resource",
        vec![ErrorDetail::reason("METHOD_NOT_ALLOWED")],
    )
    .error_response()
}
