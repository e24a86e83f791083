//! Reading request bodies and query strings into fields, collecting every problem.
//!
//! Bodies are parsed into a JSON object first and then field by field, so one response can
//! name every bad field (unknown, wrong type, null where not allowed, invalid value) instead
//! of stopping at the first as a derived deserializer would.

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::{self, Bytes};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::error::{ApiError, ErrorDetail};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the request body, refusing more than [`MAX_BODY_BYTES`].
///
/// # Errors
/// 413 when too large, 400 when the body cannot be read.
pub async fn read(payload: web::Payload) -> Result<Bytes, ApiError> {
    match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::bad_request(vec![ErrorDetail::reason(
            "UNREADABLE_BODY",
        )])),
        Err(_) => Err(too_large()),
    }
}

/// Reads a request body that carries a secret (a client secret) into a buffer zeroed on drop.
/// The body is collected into one buffer sized from `Content-Length` (up to 32 KiB up front,
/// more than any token request needs); that buffer becomes this one, so no copy of the
/// secret made by this code outlives the request. (The HTTP framework's own connection
/// buffers are not ours to zero.)
///
/// # Errors
/// 413 when larger than [`MAX_BODY_BYTES`], 400 when the body cannot be read.
pub async fn read_sensitive(payload: web::Payload) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let bytes = read(payload).await?;
    Ok(Zeroizing::new(take_buffer(bytes)))
}

/// The buffer behind `bytes` as a `Vec`, without copying when `bytes` is its only handle
/// (the usual case for a collected body); a copy otherwise.
fn take_buffer(bytes: Bytes) -> Vec<u8> {
    match bytes.try_into_mut() {
        Ok(unique) => unique.into(),
        Err(shared) => shared.to_vec(),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
        vec![ErrorDetail::reason("BODY_TOO_LARGE")],
    )
}

/// As [`object`], for an optional body: JSON `null` is no body too.
///
/// # Errors
/// As [`object`].
pub fn optional_object(
    req: &HttpRequest,
    bytes: &[u8],
) -> Result<Option<Map<String, Value>>, ApiError> {
    if bytes.trim_ascii() == b"null" {
        return object(req, b"");
    }
    object(req, bytes)
}

/// Parses `bytes` as a JSON object. An empty body is `None` (callers decide if that is allowed).
///
/// # Errors
/// 415 for a non-JSON `Content-Type`; 400 for malformed JSON or a non-object.
pub fn object(req: &HttpRequest, bytes: &[u8]) -> Result<Option<Map<String, Value>>, ApiError> {
    if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request bodies must be application/json",
                vec![ErrorDetail::reason("UNSUPPORTED_MEDIA_TYPE")],
            ));
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ApiError::bad_request(vec![ErrorDetail {
            reason: "INVALID_TYPE".into(),
            field: None,
            message: Some("the body must be a JSON object".into()),
        }])),
        Err(e) => Err(ApiError::bad_request(vec![ErrorDetail {
            reason: "MALFORMED_JSON".into(),
            field: None,
            message: Some(format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )),
        }])),
    }
}

/// A JSON object being taken apart field by field; problems accumulate in `errors`.
pub struct Fields {
    map: Map<String, Value>,
    /// Every problem found so far.
    pub errors: Vec<ErrorDetail>,
}

/// A field's presence in a body.
pub enum Presence<T> {
    /// The key is absent.
    Absent,
    /// The key is present with `null`.
    Null,
    /// The key is present with a value of the right type.
    Value(T),
    /// The key is present with a wrong type (already reported).
    Invalid,
}

impl Fields {
    /// Starts taking `map` apart.
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    /// Reports every key not in `known` as `UNKNOWN_FIELD`, or as `IMMUTABLE_FIELD` when it is
    /// in `immutable`.
    pub fn reject_unknown(&mut self, known: &[&str], immutable: &[&str]) {
        let mut keys: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        keys.sort();
        for key in keys {
            self.errors.push(if immutable.contains(&key.as_str()) {
                ErrorDetail::field(
                    key.clone(),
                    "IMMUTABLE_FIELD",
                    "this field cannot be changed",
                )
            } else {
                ErrorDetail::field(
                    key.clone(),
                    "UNKNOWN_FIELD",
                    "this field is not part of the request",
                )
            });
        }
    }

    /// Reports a problem with `field`.
    pub fn error(&mut self, field: impl Into<String>, reason: &str, message: &str) {
        self.errors.push(ErrorDetail::field(field, reason, message));
    }

    /// Takes a string field.
    pub fn string(&mut self, name: &str) -> Presence<String> {
        match self.map.remove(name) {
            None => Presence::Absent,
            Some(Value::Null) => Presence::Null,
            Some(Value::String(s)) => Presence::Value(s),
            Some(_) => {
                self.error(name, "INVALID_TYPE", "must be a string");
                Presence::Invalid
            }
        }
    }

    /// Takes an array-of-strings field, with each string's index.
    pub fn strings(&mut self, name: &str) -> Presence<Vec<(usize, String)>> {
        match self.map.remove(name) {
            None => Presence::Absent,
            Some(Value::Null) => Presence::Null,
            Some(Value::Array(items)) => {
                // Non-strings are reported here; the strings are still returned so that their
                // values get checked (and reported) too.
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.into_iter().enumerate() {
                    if let Value::String(s) = item {
                        out.push((index, s));
                    } else {
                        self.error(
                            format!("{name}[{index}]"),
                            "INVALID_TYPE",
                            "must be a string",
                        );
                    }
                }
                Presence::Value(out)
            }
            Some(_) => {
                self.error(name, "INVALID_TYPE", "must be an array of strings");
                Presence::Invalid
            }
        }
    }

    /// Takes an object field as a nested [`Fields`] (whose problems the caller merges back).
    pub fn object(&mut self, name: &str) -> Presence<Fields> {
        match self.map.remove(name) {
            None => Presence::Absent,
            Some(Value::Null) => Presence::Null,
            Some(Value::Object(map)) => Presence::Value(Fields::new(map)),
            Some(_) => {
                self.error(name, "INVALID_TYPE", "must be an object");
                Presence::Invalid
            }
        }
    }

    /// Takes a required string field: absent or null is `REQUIRED`.
    pub fn required_string(&mut self, name: &str) -> Option<String> {
        match self.string(name) {
            Presence::Value(s) => Some(s),
            Presence::Absent | Presence::Null => {
                self.error(name, "REQUIRED", "this field is required");
                None
            }
            Presence::Invalid => None,
        }
    }

    /// Parses `raw` with `parse`, reporting a failure against `field`.
    pub fn parse<T, E: Into<iam_domain::InvalidValue>>(
        &mut self,
        field: impl Into<String>,
        raw: String,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(value) => Some(value),
            Err(invalid) => {
                self.errors
                    .push(ErrorDetail::invalid(field, invalid.into()));
                None
            }
        }
    }

    /// Finishes: `Ok(())` when no problem was found, else a 400 listing them all.
    ///
    /// # Errors
    /// A 400 [`ApiError`] with every collected detail.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request(self.errors))
        }
    }
}

/// Parses a query string into unique name/value pairs, refusing names outside `known`.
///
/// # Errors
/// 400 for an undecodable query, unknown or repeated parameters.
pub fn query(raw: &str, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(raw)
        .map_err(|_| ApiError::bad_request(vec![ErrorDetail::reason("MALFORMED_QUERY")]))?
        .into_inner();
    let mut errors = Vec::new();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            errors.push(ErrorDetail::field(
                name.clone(),
                "UNKNOWN_PARAMETER",
                "this query parameter is not supported",
            ));
        } else if pairs[..i].iter().any(|(n, _)| n == name) {
            errors.push(ErrorDetail::field(
                name.clone(),
                "REPEATED_PARAMETER",
                "give this parameter at most once",
            ));
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(ApiError::bad_request(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collected_body_hands_over_its_buffer_without_copying() {
        let mut collected = web::BytesMut::with_capacity(64);
        collected.extend_from_slice(b"client_secret=plt_cs_x");
        let frozen = collected.freeze();
        let address = frozen.as_ptr();
        let taken = take_buffer(frozen);
        assert_eq!(taken, b"client_secret=plt_cs_x");
        assert_eq!(taken.as_ptr(), address, "the same buffer, now ours to zero");
        let shared = Bytes::from_static(b"static");
        assert_eq!(take_buffer(shared), b"static");
    }
}
