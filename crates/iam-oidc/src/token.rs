//! A compact JWS: its header (read before any key lookup), its signature (checked by
//! `jsonwebtoken`) and its time and issuer claims (checked against the caller's clock).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::{VerifyError, echo};
use crate::keys::KeyAlg;

/// Longest token accepted, in bytes; longer ones are [`VerifyError::Malformed`].
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The claims object of a token.
pub(crate) type Claims = Map<String, Value>;

/// What the header says about how to verify the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) alg: KeyAlg,
    pub(crate) kid: String,
}

/// The three base64url parts of a compact JWS.
fn parts(token: &str) -> Option<[&str; 3]> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut split = token.split('.');
    let parts = [split.next()?, split.next()?, split.next()?];
    if split.next().is_some() || parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    Some(parts)
}

/// Decodes a base64url part holding a JSON object.
fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Reads the header: `alg` must be RS256, ES256 or EdDSA and `kid` must be present.
///
/// # Errors
/// [`VerifyError::Malformed`], [`VerifyError::UnsupportedAlgorithm`] or
/// [`VerifyError::MissingKeyId`].
pub(crate) fn parse_header(token: &str) -> Result<Header, VerifyError> {
    let [header, _, _] = parts(token).ok_or(VerifyError::Malformed("not a compact JWS"))?;
    let header = json_object(header).ok_or(VerifyError::Malformed("header is not JSON"))?;
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(VerifyError::Malformed("header has no alg"));
    };
    let alg = KeyAlg::from_name(alg).ok_or_else(|| VerifyError::UnsupportedAlgorithm(echo(alg)))?;
    let kid = match header.get("kid") {
        Some(Value::String(kid)) => kid.clone(),
        _ => return Err(VerifyError::MissingKeyId),
    };
    Ok(Header { alg, kid })
}

/// Verifies the signature with `key` (for `alg` only) and returns the claims object.
/// Time and issuer claims are checked by [`check_claims`], not here.
///
/// # Errors
/// [`VerifyError::BadSignature`], or [`VerifyError::Malformed`] when the token cannot be
/// decoded.
pub(crate) fn verify_signature(
    token: &str,
    key: &DecodingKey,
    alg: KeyAlg,
) -> Result<Claims, VerifyError> {
    let mut validation = Validation::new(alg.algorithm());
    // Claims are checked by `check_claims`, against the caller's clock.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                VerifyError::Malformed("undecodable token")
            }
            ErrorKind::Json(_) => VerifyError::Malformed("claims are not a JSON object"),
            _ => VerifyError::BadSignature,
        })
}

/// Checks `iss` (exactly `issuer`), `exp` (required: `now < exp + leeway`), and `nbf` and
/// `iat` when present (each `<= now + leeway`). A negative leeway counts as zero.
///
/// # Errors
/// The [`VerifyError`] of the first rule broken; a time claim that is not a number is
/// [`VerifyError::Malformed`].
pub(crate) fn check_claims(
    claims: &Claims,
    issuer: &str,
    now: i64,
    leeway: i64,
) -> Result<(), VerifyError> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(VerifyError::WrongIssuer);
    }
    let leeway = leeway.max(0);
    let exp = time_claim(claims, "exp")?.ok_or(VerifyError::MissingExp)?;
    if now >= exp.saturating_add(leeway) {
        return Err(VerifyError::Expired);
    }
    let latest = now.saturating_add(leeway);
    if time_claim(claims, "nbf")?.is_some_and(|nbf| nbf > latest) {
        return Err(VerifyError::NotYetValid);
    }
    if time_claim(claims, "iat")?.is_some_and(|iat| iat > latest) {
        return Err(VerifyError::IssuedInFuture);
    }
    Ok(())
}

/// A `NumericDate` claim in whole seconds (fractions are cut towards the past); `None` when
/// absent or null.
fn time_claim(claims: &Claims, name: &'static str) -> Result<Option<i64>, VerifyError> {
    let value = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    if let Some(seconds) = value.as_i64() {
        return Ok(Some(seconds));
    }
    if value.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match value.as_f64() {
        Some(seconds) if seconds.is_finite() => Ok(Some(float_seconds(seconds))),
        _ => Err(VerifyError::Malformed(match name {
            "exp" => "exp is not a number",
            "nbf" => "nbf is not a number",
            _ => "iat is not a number",
        })),
    }
}

/// A finite number of seconds, floored and saturated to `i64`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the value is finite and floored; `as` saturates at the i64 bounds, as intended"
)]
fn float_seconds(seconds: f64) -> i64 {
    seconds.floor() as i64
}

/// The unverified `iss` and `sub` claims of a compact JWT (for looking up which keys to
/// verify with); `None` if it is not a JWT with string `iss` and `sub`.
///
/// Nothing here is verified: use the result only to choose the issuer whose keys
/// [`crate::JwksFetcher::verify`] then checks the token with.
pub fn peek_issuer_subject(token: &str) -> Option<(String, String)> {
    let [_, payload, _] = parts(token)?;
    let mut claims = json_object(payload)?;
    match (claims.remove("iss")?, claims.remove("sub")?) {
        (Value::String(iss), Value::String(sub)) => Some((iss, sub)),
        _ => None,
    }
}

/// The `aud` claim as a list: a string becomes a one-element list; missing or malformed
/// (not a string nor an array of strings) gives an empty list.
pub fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(header: &Value, claims: &Value) -> String {
        let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        format!("{}.{}.c2ln", part(header), part(claims))
    }

    fn claims(value: &Value) -> Claims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn header_names_one_of_three_algorithms_and_a_kid() {
        let claims = json!({});
        let ok = parse_header(&token(&json!({"alg": "ES256", "kid": "k1"}), &claims)).unwrap();
        assert_eq!(
            ok,
            Header {
                alg: KeyAlg::Es256,
                kid: "k1".into()
            }
        );
        for alg in ["none", "HS256", "RS512", "PS256", "ES384", "rs256"] {
            assert_eq!(
                parse_header(&token(&json!({"alg": alg, "kid": "k1"}), &claims)),
                Err(VerifyError::UnsupportedAlgorithm(alg.into()))
            );
        }
        assert_eq!(
            parse_header(&token(&json!({"alg": "RS256"}), &claims)),
            Err(VerifyError::MissingKeyId)
        );
        assert_eq!(
            parse_header(&token(&json!({"alg": "RS256", "kid": 7}), &claims)),
            Err(VerifyError::MissingKeyId)
        );
        assert!(matches!(
            parse_header(&token(&json!({"kid": "k"}), &claims)),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_tokens_are_refused_before_anything_else() {
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "..",
            "!!.e30.c2ln",
            "e30..c2ln",
            "W10.e30.c2ln",
        ] {
            assert!(
                matches!(parse_header(bad), Err(VerifyError::Malformed(_))),
                "{bad}"
            );
        }
        let long = format!("{}.e30.c2ln", "a".repeat(MAX_TOKEN_LEN));
        assert!(matches!(
            parse_header(&long),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn unsupported_algorithm_echo_is_cut() {
        let alg = "X".repeat(500);
        let Err(VerifyError::UnsupportedAlgorithm(echoed)) =
            parse_header(&token(&json!({"alg": alg, "kid": "k"}), &json!({})))
        else {
            panic!("expected UnsupportedAlgorithm");
        };
        assert_eq!(echoed.len(), crate::error::MAX_ECHO);
    }

    #[test]
    fn time_claims_use_the_callers_clock_and_leeway() {
        let iss = "https://issuer.example";
        let check = |value: Value, now| check_claims(&claims(&value), iss, now, 30);
        assert_eq!(check(json!({"iss": iss, "exp": 1000}), 900), Ok(()));
        assert_eq!(check(json!({"iss": iss, "exp": 1000}), 1029), Ok(()));
        assert_eq!(
            check(json!({"iss": iss, "exp": 1000}), 1030),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            check(json!({"iss": iss}), 900),
            Err(VerifyError::MissingExp)
        );
        assert_eq!(
            check(json!({"iss": iss, "exp": null}), 900),
            Err(VerifyError::MissingExp)
        );
        assert!(matches!(
            check(json!({"iss": iss, "exp": "1000"}), 900),
            Err(VerifyError::Malformed(_))
        ));
        assert_eq!(check(json!({"iss": iss, "exp": 1000.9}), 1029), Ok(()));
        assert_eq!(
            check(json!({"iss": iss, "exp": 1000, "nbf": 930}), 900),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss": iss, "exp": 1000, "nbf": 931}), 900),
            Err(VerifyError::NotYetValid)
        );
        assert_eq!(
            check(json!({"iss": iss, "exp": 1000, "iat": 930}), 900),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss": iss, "exp": 1000, "iat": 931}), 900),
            Err(VerifyError::IssuedInFuture)
        );
        assert_eq!(
            check(json!({"iss": iss, "exp": u64::MAX}), i64::MAX - 1),
            Ok(())
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let check = |value: Value| check_claims(&claims(&value), "https://a.example", 0, 0);
        assert_eq!(
            check(json!({"iss": "https://a.example", "exp": 10})),
            Ok(())
        );
        for iss in [
            json!("https://a.example/"),
            json!("https://A.example"),
            json!(["x"]),
        ] {
            assert_eq!(
                check(json!({"iss": iss, "exp": 10})),
                Err(VerifyError::WrongIssuer)
            );
        }
        assert_eq!(check(json!({"exp": 10})), Err(VerifyError::WrongIssuer));
    }

    #[test]
    fn peek_reads_unverified_iss_and_sub() {
        let header = json!({"alg": "none"});
        assert_eq!(
            peek_issuer_subject(&token(&header, &json!({"iss": "i", "sub": "s", "x": 1}))),
            Some(("i".into(), "s".into()))
        );
        assert_eq!(
            peek_issuer_subject(&token(&header, &json!({"iss": "i"}))),
            None
        );
        assert_eq!(
            peek_issuer_subject(&token(&header, &json!({"iss": "i", "sub": 5}))),
            None
        );
        assert_eq!(
            peek_issuer_subject(&token(&header, &json!(["i", "s"]))),
            None
        );
        assert_eq!(peek_issuer_subject("garbage"), None);
    }

    #[test]
    fn audiences_are_a_list() {
        let aud = |value: Value| audiences(&claims(&value));
        assert_eq!(aud(json!({"aud": "a"})), vec!["a".to_owned()]);
        assert_eq!(
            aud(json!({"aud": ["a", "b"]})),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(aud(json!({"aud": []})), Vec::<String>::new());
        assert_eq!(aud(json!({"aud": ["a", 5]})), Vec::<String>::new());
        assert_eq!(aud(json!({"aud": 5})), Vec::<String>::new());
        assert_eq!(aud(json!({})), Vec::<String>::new());
    }
}
