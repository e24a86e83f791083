//! The standard OAuth2 token request (RFC 6749 §4.4): the form body, client authentication
//! by `client_secret_basic` (RFC 6749 §2.3.1), `client_secret_post`, or a workload's token
//! as `client_assertion` (RFC 7523 §2.2, SPEC §9), and the §5.2 error responses. Every buffer
//! that holds the client secret is zeroed on drop.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use iam_domain::{Narrowing, RoleSlug};
use serde_json::json;
use zeroize::{Zeroize as _, Zeroizing};

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

pub(crate) fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: &str,
) -> OAuthError {
    OAuthError {
        status,
        error,
        description: description.to_owned(),
        retry_after: None,
    }
}

impl OAuthError {
    pub(crate) fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait.as_secs().max(1));
        self
    }

    pub(crate) fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"iam\""),
            ));
        }
        response.json(json!({ "error": self.error, "error_description": self.description }))
    }
}

/// `client_id:client_secret` of `Authorization: Basic`, each form-urlencoded (RFC 6749 §2.3.1).
/// Every buffer holding the secret is zeroed on drop.
fn basic_credentials(req: &HttpRequest) -> Option<Result<(String, Secret), ()>> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let parse = || -> Option<(String, Secret)> {
        let decoded = Zeroizing::new(STANDARD.decode(encoded.trim()).ok()?);
        let decoded = std::str::from_utf8(&decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        Some((form_decode(id)?.to_string(), form_decode(secret)?))
    };
    Some(parse().ok_or(()))
}

/// A client secret as this module holds it: zeroed on drop.
pub(crate) type Secret = Zeroizing<String>;

/// `client_assertion_type` of a JWT used for client authentication (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a token request authenticates its client.
pub(crate) enum ClientAuth {
    /// A client secret.
    Secret(Secret),
    /// A token of an issuer the account is federated with (SPEC §9).
    Assertion(String),
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` is a space, `%XX` a byte) into a
/// buffer zeroed on drop; `None` for a malformed escape or invalid UTF-8.
fn form_decode(raw: &str) -> Option<Secret> {
    fn hex(digit: u8) -> Option<u8> {
        char::from(digit)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(raw.len()));
    let mut rest = raw.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        rest = tail;
        bytes.push(match first {
            b'+' => b' ',
            b'%' => {
                let [high, low, tail @ ..] = rest else {
                    return None;
                };
                rest = tail;
                hex(*high)? << 4 | hex(*low)?
            }
            other => other,
        });
    }
    let text = std::str::from_utf8(&bytes).ok()?;
    Some(Zeroizing::new(text.to_owned()))
}

/// The name/value pairs of a form body; every value is zeroed on drop (one is the secret).
struct FormPairs(Vec<(String, String)>);

impl FormPairs {
    /// Zeroes every value (what dropping does).
    fn wipe(&mut self) {
        for (_, value) in &mut self.0 {
            value.zeroize();
        }
    }
}

impl Drop for FormPairs {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// The client id, secret and narrowing of an RFC 6749 §4.4 request, or the §5.2 error to
/// answer.
pub(crate) fn oauth_request(
    req: &HttpRequest,
    bytes: &[u8],
) -> Result<(String, ClientAuth, Narrowing), OAuthError> {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        });
    let invalid = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    if !form_type {
        return Err(invalid(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(invalid("the body is not UTF-8"));
    };
    let Ok(pairs) = web::Query::<Vec<(String, String)>>::from_query(text) else {
        return Err(invalid("the body is not a valid form"));
    };
    let pairs = FormPairs(pairs.into_inner());
    let pairs = &pairs.0;
    let get = |name: &str| {
        let mut values = pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            Err(())
        } else {
            Ok(first)
        }
    };
    let (
        Ok(grant_type),
        Ok(scope),
        Ok(body_id),
        Ok(body_secret),
        Ok(assertion_type),
        Ok(assertion),
    ) = (
        get("grant_type"),
        get("scope"),
        get("client_id"),
        get("client_secret"),
        get("client_assertion_type"),
        get("client_assertion"),
    )
    else {
        return Err(invalid("a parameter was given more than once"));
    };
    match grant_type {
        None => return Err(invalid("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ));
        }
    }
    let (client_id, client_auth) = if assertion_type.is_some() || assertion.is_some() {
        let basic = req.headers().contains_key(header::AUTHORIZATION);
        if basic || body_secret.is_some() {
            return Err(invalid("use one client authentication method, not two"));
        }
        assertion_auth(assertion_type, assertion, body_id)?
    } else {
        secret_auth(req, body_id, body_secret)?
    };
    // An empty scope parameter counts as omitted (RFC 6749 §3.1).
    let roles = match scope.filter(|s| !s.trim().is_empty()).map(|s| {
        s.split_whitespace()
            .map(RoleSlug::parse)
            .collect::<Result<Vec<_>, _>>()
    }) {
        None => None,
        Some(Ok(roles)) => Some(roles),
        Some(Err(_)) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "scope lists role slugs",
            ));
        }
    };
    Ok((
        client_id,
        client_auth,
        Narrowing {
            roles,
            ..Narrowing::default()
        },
    ))
}

/// RFC 7523 client authentication: the client id and the workload's assertion.
fn assertion_auth(
    assertion_type: Option<&str>,
    assertion: Option<&str>,
    body_id: Option<&str>,
) -> Result<(String, ClientAuth), OAuthError> {
    let invalid = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    match (assertion_type, assertion, body_id) {
        (Some(JWT_BEARER), Some(assertion), Some(id)) => {
            Ok((id.to_owned(), ClientAuth::Assertion(assertion.to_owned())))
        }
        (Some(JWT_BEARER), Some(_), None) => {
            Err(invalid("client_id is required with client_assertion"))
        }
        (Some(JWT_BEARER), None, _) => Err(invalid("client_assertion is required")),
        _ => Err(invalid(&format!(
            "client_assertion_type must be {JWT_BEARER}"
        ))),
    }
}

/// `client_secret_basic` or `client_secret_post`: the client id and secret.
fn secret_auth(
    req: &HttpRequest,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<(String, ClientAuth), OAuthError> {
    let invalid = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    let (client_id, client_secret) = match (basic_credentials(req), body_id, body_secret) {
        // client_secret_basic; a client_id in the body too is allowed if it is the same.
        (Some(Ok(pair)), id, None) if id.is_none_or(|id| id == pair.0) => pair,
        (Some(Ok(_)), _, _) => {
            return Err(invalid("use one client authentication method, not two"));
        }
        (Some(Err(())), _, _) => {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "malformed Basic credentials",
            ));
        }
        (None, Some(id), Some(secret)) => (id.to_owned(), Zeroizing::new(secret.to_owned())),
        (None, _, _) => {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is required",
            ));
        }
    };
    Ok((client_id, ClientAuth::Secret(client_secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode_into_zeroizing_buffers() {
        let decoded: Secret = form_decode("a%2Bb+c%3A%25").unwrap();
        assert_eq!(decoded.as_str(), "a+b c:%");
        assert_eq!(form_decode("plt_cs_x").unwrap().as_str(), "plt_cs_x");
        for malformed in ["%", "%4", "%zz", "%ff"] {
            assert!(form_decode(malformed).is_none(), "{malformed}");
        }
    }

    #[test]
    fn wiping_form_pairs_clears_every_value() {
        let mut pairs = FormPairs(vec![("client_secret".into(), "plt_cs_secret".into())]);
        // What dropping runs, observed before the memory is released.
        pairs.wipe();
        assert!(pairs.0[0].1.is_empty(), "zeroize clears the string");
    }
}
