//! The size limit of a request's headers: 16 KiB in all (names and values), far above what
//! this API needs (a bearer token is about 1 KiB) and the size common proxies allow. Larger
//! heads get 431 `HEADERS_TOO_LARGE` in the error envelope before any work. (actix-web itself
//! refuses heads beyond about 128 KiB, or with more than 96 headers, with a bare 431: the head
//! a connection may buffer is bounded either way.)

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError as _};

use crate::error::{ApiError, ErrorDetail};

/// The most header bytes (names plus values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Middleware: 431 when the request's headers exceed [`MAX_HEADER_BYTES`].
///
/// # Errors
/// Passes through errors of the wrapped service.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        let error = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request's headers exceed {MAX_HEADER_BYTES} bytes"),
            vec![ErrorDetail::reason("HEADERS_TOO_LARGE")],
        );
        return Ok(req
            .into_response(error.error_response())
            .map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
