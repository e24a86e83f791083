//! The error mapping: 401, 403, the uniform 404, 405, 409, 422 fields, 503.

use actix_web::http::Method;
use actix_web::test::TestRequest;

use crate::support::{BASE, World, bare, json, send};

#[actix_web::test]
async fn a_missing_or_foreign_token_is_401_with_a_bearer_challenge() {
    let world = World::new();
    let app = world.app().await;
    let anonymous = send(&app, TestRequest::get().uri(BASE)).await;
    let garbage = send(&app, bare(Method::GET, BASE, "not.a.jwt")).await;
    for answer in [&anonymous, &garbage] {
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(answer.reasons(), [("INVALID_TOKEN".to_owned(), None)]);
    }
    assert_eq!(anonymous.body, garbage.body);
}

#[actix_web::test]
async fn non_admins_get_403_on_the_collection_and_the_same_404_everywhere_else() {
    let world = World::new();
    let app = world.app().await;
    let body =
        r#"{"id": "sa-ci", "displayName": "CI", "scope": "organization", "scopeId": "org-acme"}"#;
    assert_eq!(
        send(&app, json(Method::POST, BASE, &world.admin(), body))
            .await
            .status,
        201
    );
    let viewer = world.token("viewer@acme.example", &["compute.deployer"]);
    let list = send(&app, bare(Method::GET, BASE, &viewer)).await;
    assert_eq!(list.status, 403);
    assert_eq!(list.reasons(), [("PERMISSION_DENIED".to_owned(), None)]);
    let missing = send(
        &app,
        bare(Method::GET, &format!("{BASE}/sa-missing"), &world.admin()),
    )
    .await;
    for path in [format!("{BASE}/sa-ci"), format!("{BASE}/sa-ci/credentials")] {
        let hidden = send(&app, bare(Method::GET, &path, &viewer)).await;
        assert_eq!(
            (hidden.status, hidden.body.as_str()),
            (404, missing.body.as_str()),
            "{path}"
        );
    }
}

#[actix_web::test]
async fn business_rule_violations_are_422_with_json_paths() {
    let world = World::new();
    let app = world.app().await;
    let body = r#"{"displayName": "x", "scope": "project", "scopeId": "nope", "roles": ["compute.deployer", "no.such.role"]}"#;
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), body)).await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        answer.reasons(),
        [
            (
                "SCOPE_TARGET_NOT_FOUND".to_owned(),
                Some("scopeId".to_owned())
            ),
            ("ROLE_NOT_FOUND".to_owned(), Some("roles[1]".to_owned())),
        ]
    );
}

#[actix_web::test]
async fn acting_as_an_account_without_its_roles_is_403_naming_the_role() {
    let world = World::new();
    let app = world.app().await;
    let body = r#"{"id": "sa-w", "displayName": "w", "scope": "organization", "scopeId": "org-acme", "roles": ["admin", "storage.writer"]}"#;
    assert_eq!(
        send(&app, json(Method::POST, BASE, &world.admin(), body))
            .await
            .status,
        201
    );
    let limited = world.token("limited@acme.example", &["admin"]);
    let answer = send(
        &app,
        json(
            Method::POST,
            &format!("{BASE}/sa-w/credentials"),
            &limited,
            "",
        ),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.reasons(),
        [("ROLE_NOT_HELD".to_owned(), Some("roles[1]".to_owned()))]
    );
}

#[actix_web::test]
async fn a_duplicate_id_is_409_and_the_credential_cap_is_409() {
    let world = World::new();
    let app = world.app().await;
    let body =
        r#"{"id": "sa-ci", "displayName": "CI", "scope": "organization", "scopeId": "org-acme"}"#;
    assert_eq!(
        send(&app, json(Method::POST, BASE, &world.admin(), body))
            .await
            .status,
        201
    );
    let again = send(&app, json(Method::POST, BASE, &world.admin(), body)).await;
    assert_eq!(again.status, 409);
    assert_eq!(
        again.reasons(),
        [("ALREADY_EXISTS".to_owned(), Some("id".to_owned()))]
    );
    let creds = format!("{BASE}/sa-ci/credentials");
    for _ in 0..5 {
        assert_eq!(
            send(&app, json(Method::POST, &creds, &world.admin(), ""))
                .await
                .status,
            201
        );
    }
    let sixth = send(&app, json(Method::POST, &creds, &world.admin(), "")).await;
    assert_eq!(sixth.status, 409);
    assert_eq!(
        sixth.reasons(),
        [("CREDENTIAL_LIMIT_REACHED".to_owned(), None)]
    );
}

#[actix_web::test]
async fn a_storage_outage_is_503_with_retry_after_and_readiness_fails() {
    let world = World::new();
    let app = world.app().await;
    world.memory.state().unavailable = true;
    let answer = send(
        &app,
        bare(Method::GET, &format!("{BASE}/sa-ci"), &world.admin()),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.reasons(), [("UNAVAILABLE".to_owned(), None)]);
    let ready = send(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!(ready.status, 503);
    world.memory.state().unavailable = false;
    assert_eq!(
        send(&app, TestRequest::get().uri("/readyz")).await.status,
        200
    );
}

#[actix_web::test]
async fn unknown_routes_are_404_and_unserved_methods_405_with_allow() {
    let world = World::new();
    let app = world.app().await;
    let nowhere = send(&app, TestRequest::get().uri("/v2/nothing")).await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.reasons(), [("NOT_FOUND".to_owned(), None)]);
    let put = send(&app, TestRequest::put().uri(BASE)).await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, HEAD, POST"));
    assert!(
        put.header("x-request-id").is_some(),
        "every answer has a request id"
    );
}
