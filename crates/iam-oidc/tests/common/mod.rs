//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_oidc::testing::FakeIssuer;
use iam_oidc::{FetcherConfig, JwksFetcher, JwksLocation};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// The tests' "now" (unix seconds), far from the machine's clock on purpose.
pub const NOW: i64 = 1_900_000_000;

/// Leeway used by the tests.
pub const LEEWAY: i64 = 60;

/// Valid claims from `issuer`.
pub fn claims(issuer: &str) -> Value {
    json!({ "iss": issuer, "sub": "workload-1", "aud": "iam", "exp": NOW + 300, "iat": NOW - 5 })
}

/// Valid claims from `issuer`, with `changes` merged in (a null removes the claim).
pub fn claims_with(issuer: &str, changes: &Value) -> Value {
    let mut claims = claims(issuer);
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// A fetcher with `config`.
pub fn fetcher(config: FetcherConfig) -> JwksFetcher {
    JwksFetcher::new(config).unwrap()
}

/// Both ways of locating the fake issuer's keys.
pub fn locations(issuer: &FakeIssuer) -> [JwksLocation; 2] {
    [
        JwksLocation::Url(issuer.jwks_uri()),
        JwksLocation::Discovery {
            issuer: issuer.issuer(),
        },
    ]
}

/// `token` with its header replaced by `header` (the signature no longer matches).
pub fn with_header(token: &str, header: &Value) -> String {
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

/// The decoded header of `token`.
pub fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

/// A loopback server answering every request with what `response` makes of its base URL
/// (or never answering when `None`), for failures the fake issuer does not produce.
/// Returns its base URL.
pub async fn raw_server(response: impl FnOnce(&str) -> Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let response = response(&base);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                let _ = stream.read(&mut buffer).await;
                match response {
                    Some(response) => {
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    base
}

/// An HTTP/1.1 response with a JSON `body`.
pub fn http_response(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}
