//! The hardening of issue 7, tried as an attacker would: acting as an account needs all its
//! roles, secrets are never cached, non-admins get the uniform 404 before any validation,
//! unsupported methods get 405 with `Allow`, and a crash between a create and its idempotency
//! record cannot make a retry do the work twice.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_domain::ports::Clock as _;
use iam_http::jwt::Ed25519Key;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

use crate::support::{BASE, Response, TestServer};

const TOKEN: &str = "/v1/regions/global/auth/token";

/// The claims of a JWT (not verified: the server made it).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn assert_no_store(response: &Response, what: &str) {
    assert_eq!(response.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(response.header("pragma"), Some("no-cache"), "{what}");
}

/// An admin of org-acme holding only the admin role.
fn limited_admin(server: &TestServer) -> String {
    server.token("org-acme", "limited@acme.example", &["admin"])
}

#[tokio::test]
async fn a_limited_admin_cannot_gain_an_accounts_roles_through_a_secret() {
    let server = TestServer::start().await;
    let full = server.admin();
    let created = server
        .post(
            BASE,
            &full,
            &json!({"id": "sa-strong", "displayName": "strong", "scope": "organization",
                    "scopeId": "org-acme", "roles": ["admin", "storage.writer"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let limited = limited_admin(&server);
    let path = format!("{BASE}/sa-strong/credentials");

    let refused = server.post(&path, &limited, &json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(
        refused.reasons(),
        [("ROLE_NOT_HELD".to_owned(), Some("roles[1]".to_owned()))]
    );
    assert!(!refused.text.contains("plt_cs_"));
    // With an Idempotency-Key too, and a retry is refused again (never replays a secret).
    for _ in 0..2 {
        let keyed = server
            .call(
                Method::POST,
                &path,
                Some(&limited),
                Some(&json!({})),
                &[("idempotency-key", "escalate-1")],
            )
            .await;
        assert_eq!(keyed.status, StatusCode::FORBIDDEN, "{}", keyed.text);
    }
    let listed = server.get(&path, &full).await.json();
    assert_eq!(listed["credentials"], json!([]), "no secret was made");

    // A recorded secret is replayed only to a caller who could create it now: the same
    // subject, its token since stripped down to `admin`, gets 403, not the secret.
    let keyed = |token: String| {
        let server = &server;
        let path = path.clone();
        async move {
            server
                .call(
                    Method::POST,
                    &path,
                    Some(&token),
                    Some(&json!({})),
                    &[("idempotency-key", "replay-1")],
                )
                .await
        }
    };
    let original = keyed(full.clone()).await;
    assert_eq!(original.status, StatusCode::CREATED, "{}", original.text);
    let stripped = server.token("org-acme", "alice@acme.example", &["admin"]);
    let replay = keyed(stripped).await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN, "{}", replay.text);
    assert!(!replay.text.contains("plt_cs_"));
    let again = keyed(full.clone()).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.json()["clientSecret"],
        original.json()["clientSecret"]
    );
    let id = original.json()["id"].as_str().unwrap().to_owned();
    let gone = server.delete(&format!("{path}/{id}"), &full).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);

    // Reading, renaming and disabling stay admin-only; re-enabling is acting as the account.
    let account = format!("{BASE}/sa-strong");
    assert_eq!(server.get(&account, &limited).await.status, StatusCode::OK);
    assert_eq!(server.get(&path, &limited).await.status, StatusCode::OK);
    for patch in [
        json!({"displayName": "renamed"}),
        json!({"status": "disabled"}),
    ] {
        let r = server.patch(&account, &limited, &patch).await;
        assert_eq!(r.status, StatusCode::OK, "{patch}: {}", r.text);
    }
    let revive = server
        .patch(&account, &limited, &json!({"status": "active"}))
        .await;
    assert_eq!(revive.status, StatusCode::FORBIDDEN, "{}", revive.text);
    assert_eq!(
        revive.reasons(),
        [("ROLE_NOT_HELD".to_owned(), Some("roles[1]".to_owned()))]
    );
    let still = server.get(&account, &full).await.json();
    assert_eq!(still["status"], "disabled");

    // Whoever holds every role may do both.
    let revived = server
        .patch(&account, &full, &json!({"status": "active"}))
        .await;
    assert_eq!(revived.status, StatusCode::OK, "{}", revived.text);
    let made = server.post(&path, &full, &json!({})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);

    // A limited admin may delete the account (taking no roles by that).
    let deleted = server.delete(&account, &limited).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn expires_in_is_exactly_exp_minus_iat_also_when_the_credential_ends_first() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-short").await;
    let path = format!("{BASE}/sa-short/credentials");
    let soon = (server.clock.now() + Duration::seconds(100))
        .format(&Rfc3339)
        .unwrap();
    let short = server
        .post(&path, &admin, &json!({"expiresAt": soon}))
        .await;
    let long = server.post(&path, &admin, &json!({})).await;
    for (credential, expected) in [(short, 100), (long, 900)] {
        assert_eq!(
            credential.status,
            StatusCode::CREATED,
            "{}",
            credential.text
        );
        let secret = credential.json()["clientSecret"]
            .as_str()
            .unwrap()
            .to_owned();
        let minted = server
            .call(
                Method::POST,
                TOKEN,
                None,
                Some(&json!({"grant_type": "client_credentials",
                             "client_id": "sa-short@acme.iam", "client_secret": secret})),
                &[],
            )
            .await;
        assert_eq!(minted.status, StatusCode::OK, "{}", minted.text);
        let body = minted.json();
        let jwt = claims(body["access_token"].as_str().unwrap());
        let lifetime = jwt["exp"].as_i64().unwrap() - jwt["iat"].as_i64().unwrap();
        assert_eq!(body["expires_in"].as_i64().unwrap(), lifetime);
        assert_eq!(lifetime, expected);
    }
}

#[tokio::test]
async fn responses_carrying_a_secret_are_never_cached_replays_included() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let path = format!("{BASE}/sa-ci/credentials");
    let plain = server.post(&path, &admin, &json!({})).await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert_no_store(&plain, "create");
    let mut secrets = Vec::new();
    for attempt in ["first", "replay"] {
        let keyed = server
            .call(
                Method::POST,
                &path,
                Some(&admin),
                Some(&json!({})),
                &[("idempotency-key", "cache-1")],
            )
            .await;
        assert_eq!(keyed.status, StatusCode::CREATED, "{}", keyed.text);
        assert_no_store(&keyed, attempt);
        secrets.push(keyed.json()["clientSecret"].as_str().unwrap().to_owned());
    }
    assert_eq!(secrets[0], secrets[1], "the replay is the same response");
    // Reads never carry a secret; they need no such header.
    let read = server.get(&path, &admin).await;
    assert!(!read.text.contains("clientSecret"));
}

#[tokio::test]
async fn non_admins_get_the_uniform_404_before_any_body_query_or_header_validation() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let credential = server
        .post(&format!("{BASE}/sa-ci/credentials"), &admin, &json!({}))
        .await
        .json();
    let credential = credential["id"].as_str().unwrap().to_owned();
    let reference = server.get(&format!("{BASE}/sa-missing"), &admin).await;
    assert_eq!(reference.status, StatusCode::NOT_FOUND);
    let viewer = server.token("org-acme", "viewer@acme.example", &["compute.deployer"]);

    let client = reqwest::Client::new();
    for account in ["sa-ci", "sa-missing", "NOT_AN_ID"] {
        let sa = format!("{BASE}/{account}");
        let creds = format!("{sa}/credentials");
        let one = format!("{creds}/{credential}");
        let attempts = [
            Attempt::body(Method::PATCH, &sa, "application/json", "{not json"),
            Attempt::body(
                Method::PATCH,
                &sa,
                "application/json",
                r#"{"isAdmin": true}"#,
            ),
            Attempt::body(Method::PATCH, &sa, "text/plain", "hello"),
            Attempt::body(Method::PATCH, &sa, "application/json", "{}")
                .header("if-match", "W/\"weak\""),
            Attempt::body(
                Method::POST,
                &creds,
                "application/json",
                r#"{"expiresAt": 5}"#,
            ),
            Attempt::body(Method::POST, &creds, "application/xml", "<x/>"),
            Attempt::body(Method::POST, &creds, "application/json", "{}")
                .header("idempotency-key", ""),
            Attempt::get(&creds, "?pageSize=0&offset=-1&pageToken=forged&bogus=1"),
            Attempt::get(&one, "?bogus=1"),
        ];
        for attempt in attempts {
            let Attempt {
                method,
                path,
                query,
                content_type,
                body,
                header,
            } = attempt;
            let mut request = client
                .request(method.clone(), format!("{}{path}{query}", server.base_url))
                .bearer_auth(&viewer);
            if !content_type.is_empty() {
                request = request
                    .header("content-type", content_type)
                    .body(body.to_owned());
            }
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let what = format!("{method} {path}{query} {content_type} {body}");
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}");
            assert_eq!(response.text().await.unwrap(), reference.text, "{what}");
        }
    }
    // Nothing changed underneath.
    let sa = server.get(&format!("{BASE}/sa-ci"), &admin).await.json();
    assert_eq!(sa["activeCredentialCount"], 1);
}

/// One request of a non-admin that would be invalid even for an admin.
struct Attempt<'a> {
    method: Method,
    path: &'a str,
    query: &'a str,
    content_type: &'a str,
    body: &'a str,
    header: Option<(&'a str, &'a str)>,
}

impl<'a> Attempt<'a> {
    fn body(method: Method, path: &'a str, content_type: &'a str, body: &'a str) -> Self {
        Self {
            method,
            path,
            query: "",
            content_type,
            body,
            header: None,
        }
    }

    fn get(path: &'a str, query: &'a str) -> Self {
        Self {
            method: Method::GET,
            path,
            query,
            content_type: "",
            body: "",
            header: None,
        }
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.header = Some((name, value));
        self
    }
}

#[tokio::test]
async fn every_route_answers_unserved_methods_with_405_and_allow() {
    let server = TestServer::start().await;
    let routes: [(&str, &str); 14] = [
        ("/healthz", "GET, HEAD"),
        ("/readyz", "GET, HEAD"),
        ("/openapi.json", "GET, HEAD"),
        (BASE, "GET, HEAD, POST"),
        (
            "/v1/regions/global/iam/service-accounts/sa-x",
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            "/v1/regions/global/iam/service-accounts/sa-x/credentials",
            "GET, HEAD, POST",
        ),
        (
            "/v1/regions/global/iam/service-accounts/sa-x/credentials/cred-x",
            "GET, HEAD, DELETE",
        ),
        (TOKEN, "POST"),
        ("/oauth2/token", "POST"),
        ("/v1/regions/global/auth/introspect", "POST"),
        ("/v1/regions/global/auth/revoke", "POST"),
        ("/.well-known/jwks.json", "GET, HEAD"),
        ("/.well-known/oauth-authorization-server", "GET, HEAD"),
        (
            "/v1/regions/global/iam/service-accounts/sa-x/",
            "GET, HEAD, PATCH, DELETE",
        ),
    ];
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
    ];
    let client = reqwest::Client::new();
    for (path, allow) in routes {
        if path.ends_with('/') {
            // A trailing slash is no route at all: 404, whatever the method.
            let r = client
                .put(format!("{}{path}", server.base_url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            continue;
        }
        let allowed: Vec<&str> = allow.split(", ").collect();
        for method in methods {
            let response = client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", server.base_url),
                )
                .send()
                .await
                .unwrap();
            let status = response.status();
            if allowed.contains(&method) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                continue;
            }
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(
                response
                    .headers()
                    .get("allow")
                    .and_then(|v| v.to_str().ok()),
                Some(allow),
                "{method} {path}"
            );
            if method != "HEAD" {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], 405, "{method} {path}");
                assert_eq!(body["error"]["details"][0]["reason"], "METHOD_NOT_ALLOWED");
            }
        }
    }
    // HEAD is GET without the body.
    let head = client
        .head(format!("{}/healthz", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.text().await.unwrap(), "");
}

/// A server trusting an external issuer `https://idp.example` whose key is returned.
async fn with_external_issuer() -> (TestServer, Ed25519Key, std::path::PathBuf) {
    let external = Ed25519Key::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("iam-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [external.public_jwk()]}).to_string()).unwrap();
    let server = TestServer::start_with(&[
        ("IAM_EXTERNAL_ISSUER", "https://idp.example"),
        ("IAM_EXTERNAL_JWKS_FILE", jwks.to_str().unwrap()),
    ])
    .await;
    (server, external, dir)
}

async fn status_with(server: &TestServer, token: &str) -> StatusCode {
    server.get(BASE, token).await.status
}

#[tokio::test]
async fn external_tokens_cannot_claim_to_be_service_accounts_or_come_from_the_future() {
    let (server, external, dir) = with_external_issuer().await;
    let mut claims = server.admin_claims();
    claims.iss = "https://idp.example".into();
    let user = server.sign(&claims, Some(&external));
    assert_eq!(status_with(&server, &user).await, StatusCode::OK);

    // principal_type service_account is this service's own to vouch for.
    let mut sa = claims.clone();
    sa.principal_type = "service_account".into();
    sa.credential_id = Some("cred-abcdefghijklmnop".into());
    let forged = server.sign(&sa, Some(&external));
    let refused = server.get(BASE, &forged).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    // iat more than the 60 s skew ahead, from either issuer.
    let now = server.clock.now().unix_timestamp();
    for key in [Some(&external), None] {
        let mut future = if key.is_some() {
            claims.clone()
        } else {
            server.admin_claims()
        };
        future.iat = now + 61;
        future.exp = now + 900;
        assert_eq!(
            status_with(&server, &server.sign(&future, key)).await,
            StatusCode::UNAUTHORIZED
        );
        future.iat = now + 60;
        assert_eq!(
            status_with(&server, &server.sign(&future, key)).await,
            StatusCode::OK,
            "within the skew"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_revocation_names_the_issuer_and_outlives_any_exp() {
    let (server, external, dir) = with_external_issuer().await;
    let revoke = |token: String| {
        let server = &server;
        async move {
            let r = server
                .call(
                    Method::POST,
                    "/v1/regions/global/auth/revoke",
                    Some(&token),
                    Some(&json!({"token": token})),
                    &[],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
    };
    // Two issuers' tokens that share a jti are two tokens.
    let mut theirs = server.admin_claims();
    theirs.iss = "https://idp.example".into();
    theirs.jti = "shared-jti".into();
    let mut ours = server.admin_claims();
    ours.jti = "shared-jti".into();
    let (theirs, ours) = (
        server.sign(&theirs, Some(&external)),
        server.sign(&ours, None),
    );
    revoke(theirs.clone()).await;
    assert_eq!(
        status_with(&server, &theirs).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&server, &ours).await, StatusCode::OK);

    // exp after the year 9999: the revocation is kept (not wrapped to 1970 and purged).
    let mut forever = server.admin_claims();
    forever.exp = 253_402_300_800 + 86_400;
    let forever = server.sign(&forever, None);
    assert_eq!(status_with(&server, &forever).await, StatusCode::OK);
    revoke(forever.clone()).await;
    // A purge as late as the year 9999 drops only the 15-minute token's revocation.
    let purged = server
        .db
        .store()
        .purge_expired_revocations(time::macros::datetime!(9999-12-31 00:00 UTC))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        status_with(&server, &forever).await,
        StatusCode::UNAUTHORIZED
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_failure_between_create_and_record_cannot_make_a_retry_create_twice() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    // Fault injection: the first time a response is recorded for an idempotency key, the
    // database refuses (as if the server had died right after the create committed, before
    // the record was written, in a flow that wrote them apart).
    server
        .db
        .execute(
            "CREATE SEQUENCE record_attempts; \
             CREATE FUNCTION fail_first_record() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF NEW.completed_at IS NOT NULL AND OLD.completed_at IS NULL \
                  AND nextval('record_attempts') = 1 THEN \
                 RAISE EXCEPTION 'injected failure while recording the response'; \
               END IF; \
               RETURN NEW; \
             END $$; \
             CREATE TRIGGER fail_first_record BEFORE UPDATE ON idempotency_keys \
               FOR EACH ROW EXECUTE FUNCTION fail_first_record();",
        )
        .await;
    let path = format!("{BASE}/sa-ci/credentials");
    let empty = json!({});
    let create = || {
        server.call(
            Method::POST,
            &path,
            Some(&admin),
            Some(&empty),
            &[("idempotency-key", "once-only")],
        )
    };
    let first = create().await;
    assert!(
        first.status.is_server_error(),
        "{}: {}",
        first.status,
        first.text
    );
    assert!(
        !first.text.contains("plt_cs_"),
        "no secret without its record"
    );
    let count = || async {
        server.get(&path, &admin).await.json()["credentials"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 0, "the create rolled back with its record");

    // The client retries (after the abandonment time, in case the claim was left behind).
    server.clock.advance(Duration::seconds(61));
    let retry = create().await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
    let again = create().await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["clientSecret"], retry.json()["clientSecret"]);
    assert_eq!(count().await, 1, "created exactly once");
}

#[tokio::test]
async fn headers_over_16_kib_are_refused_with_431_in_the_envelope() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let padding = "a".repeat(iam_http::header_limit::MAX_HEADER_BYTES);
    let refused = server
        .call(
            Method::GET,
            BASE,
            Some(&admin),
            None,
            &[("x-padding", &padding)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refused.reasons(), [("HEADERS_TOO_LARGE".to_owned(), None)]);
    assert!(refused.header("x-request-id").is_some());
    // Just under the limit (with the token and the client's own headers) is served.
    let fits = "a".repeat(iam_http::header_limit::MAX_HEADER_BYTES - 2048);
    let answered = server
        .call(
            Method::GET,
            BASE,
            Some(&admin),
            None,
            &[("x-padding", &fits)],
        )
        .await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
}
