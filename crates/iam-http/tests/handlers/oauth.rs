//! The standard OAuth2 token endpoint's request parsing (RFC 6749 §4.4, §2.3.1, §5.2).

use actix_web::http::Method;
use actix_web::test::TestRequest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::support::{Answer, BASE, World, json, send};

const TOKEN: &str = "/oauth2/token";
const CLIENT: &str = "sa-bot@acme.iam";

fn form(body: &str) -> TestRequest {
    TestRequest::post()
        .uri(TOKEN)
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .set_payload(body.to_owned())
}

fn basic(id: &str, secret: &str) -> (&'static str, String) {
    (
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
    )
}

fn oauth_error(answer: &Answer) -> String {
    let body: Value = answer.json();
    body["error"].as_str().unwrap().to_owned()
}

/// `sa-bot` with a credential; returns its secret.
async fn bot<S, B>(world: &World, app: &S) -> String
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let body = r#"{"id": "sa-bot", "displayName": "bot", "scope": "organization", "scopeId": "org-acme", "roles": ["compute.deployer"]}"#;
    assert_eq!(
        send(app, json(Method::POST, BASE, &world.admin(), body))
            .await
            .status,
        201
    );
    let created = send(
        app,
        json(
            Method::POST,
            &format!("{BASE}/sa-bot/credentials"),
            &world.admin(),
            "",
        ),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.json()["clientSecret"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn basic_and_post_authentication_both_mint_a_token() {
    let world = World::new();
    let app = world.app().await;
    let secret = bot(&world, &app).await;
    let by_basic = send(
        &app,
        form("grant_type=client_credentials").insert_header(basic(CLIENT, &secret)),
    )
    .await;
    assert_eq!(by_basic.status, 200, "{}", by_basic.body);
    assert_eq!(by_basic.header("cache-control"), Some("no-store"));
    let token = by_basic.json();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 900);
    let encoded: String = url_encode(&secret);
    let by_post = send(
        &app,
        form(&format!(
            "grant_type=client_credentials&client_id=sa-bot%40acme.iam&client_secret={encoded}"
        )),
    )
    .await;
    assert_eq!(by_post.status, 200, "{}", by_post.body);
    assert_eq!(world.memory.state().mint_lookups, 2);
}

fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[actix_web::test]
async fn a_missing_or_unsupported_grant_type_is_refused_before_any_lookup() {
    let world = World::new();
    let app = world.app().await;
    let missing = send(&app, form("client_id=a&client_secret=b")).await;
    assert_eq!(
        (missing.status, oauth_error(&missing).as_str()),
        (400, "invalid_request")
    );
    let password = send(
        &app,
        form("grant_type=password&client_id=a&client_secret=b"),
    )
    .await;
    assert_eq!(
        (password.status, oauth_error(&password).as_str()),
        (400, "unsupported_grant_type")
    );
    assert_eq!(world.memory.state().mint_lookups, 0);
}

#[actix_web::test]
async fn two_authentication_methods_or_a_repeated_parameter_are_invalid_requests() {
    let world = World::new();
    let app = world.app().await;
    let both =
        form("grant_type=client_credentials&client_secret=x").insert_header(basic(CLIENT, "y"));
    let answer = send(&app, both).await;
    assert_eq!(
        (answer.status, oauth_error(&answer).as_str()),
        (400, "invalid_request")
    );
    let twice = form(
        "grant_type=client_credentials&grant_type=client_credentials&client_id=a&client_secret=b",
    );
    let answer = send(&app, twice).await;
    assert_eq!(
        (answer.status, oauth_error(&answer).as_str()),
        (400, "invalid_request")
    );
}

#[actix_web::test]
async fn malformed_basic_credentials_or_none_at_all_are_invalid_client() {
    let world = World::new();
    let app = world.app().await;
    let garbage =
        form("grant_type=client_credentials").insert_header(("authorization", "Basic %%%"));
    let answer = send(&app, garbage).await;
    assert_eq!(
        (answer.status, oauth_error(&answer).as_str()),
        (401, "invalid_client")
    );
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Basic realm=\"iam\"")
    );
    let anonymous = send(&app, form("grant_type=client_credentials")).await;
    assert_eq!(
        (anonymous.status, oauth_error(&anonymous).as_str()),
        (401, "invalid_client")
    );
}

#[actix_web::test]
async fn a_json_body_or_an_unknown_role_in_scope_are_refused_per_rfc_6749() {
    let world = World::new();
    let app = world.app().await;
    let not_a_form = TestRequest::post()
        .uri(TOKEN)
        .insert_header(("content-type", "application/json"))
        .set_payload("{}");
    let answer = send(&app, not_a_form).await;
    assert_eq!(
        (answer.status, oauth_error(&answer).as_str()),
        (400, "invalid_request")
    );
    let bad_scope = form("grant_type=client_credentials&scope=Not%20A%20Role")
        .insert_header(basic(CLIENT, "x"));
    let answer = send(&app, bad_scope).await;
    assert_eq!(
        (answer.status, oauth_error(&answer).as_str()),
        (400, "invalid_scope")
    );
}

#[actix_web::test]
async fn a_wrong_secret_is_invalid_client_with_one_body() {
    let world = World::new();
    let app = world.app().await;
    let secret = bot(&world, &app).await;
    let mut wrong = secret.clone().into_bytes();
    let last = wrong.len() - 8;
    wrong[last] = if wrong[last] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    let a = send(
        &app,
        form("grant_type=client_credentials").insert_header(basic(CLIENT, &wrong)),
    )
    .await;
    let b = send(
        &app,
        form("grant_type=client_credentials").insert_header(basic("nobody@acme.iam", &secret)),
    )
    .await;
    assert_eq!((a.status, b.status), (401, 401));
    assert_eq!(a.body, b.body, "indistinguishable");
}
