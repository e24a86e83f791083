//! `GET /healthz` (the process answers) and `GET /readyz` (storage reachable, schema current).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use iam_domain::ports::Readiness;
use serde_json::json;

use crate::{AppState, HttpAdapters};

/// Liveness: 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "Operations", responses((status = 200, description = "Alive.")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: 200 when the database answers and its migrations are current, else 503.
#[utoipa::path(
    get, path = "/readyz", operation_id = "getReadiness", tag = "Operations",
    responses((status = 200, description = "Ready."), (status = 503, description = "Not ready."))
)]
pub async fn readyz<A: HttpAdapters>(state: web::Data<AppState<A>>) -> HttpResponse {
    match state.readiness.check().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(error) => {
            tracing::warn!(%error, cause = ?std::error::Error::source(&error), "not ready");
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
                .json(json!({ "status": "unavailable" }))
        }
    }
}
