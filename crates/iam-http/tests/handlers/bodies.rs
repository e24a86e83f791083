//! Request bodies: every bad field in one 400, media types, sizes.

use actix_web::http::Method;
use actix_web::test::TestRequest;

use crate::support::{BASE, World, json, send};

#[actix_web::test]
async fn malformed_json_is_400_malformed_json() {
    let world = World::new();
    let app = world.app().await;
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), "{\"id\": ")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.reasons(), [("MALFORMED_JSON".to_owned(), None)]);
}

#[actix_web::test]
async fn a_body_that_is_no_object_is_400_invalid_type() {
    let world = World::new();
    let app = world.app().await;
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), "[1, 2]")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.reasons(), [("INVALID_TYPE".to_owned(), None)]);
}

#[actix_web::test]
async fn every_bad_field_of_a_create_is_listed_in_one_answer() {
    let world = World::new();
    let app = world.app().await;
    let body = r#"{"id": "Bad_Id", "displayName": "", "scope": "galaxy", "scopeId": 7,
                   "roles": ["ok.role", "Not A Role"], "isAdmin": true}"#;
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), body)).await;
    assert_eq!(answer.status, 400);
    let mut fields: Vec<String> = answer
        .reasons()
        .into_iter()
        .map(|(reason, field)| format!("{}:{reason}", field.unwrap()))
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "displayName:REQUIRED",
            "id:INVALID_FORMAT",
            "isAdmin:UNKNOWN_FIELD",
            "roles[1]:INVALID_FORMAT",
            "scope:INVALID_VALUE",
            "scopeId:INVALID_TYPE",
        ]
    );
    assert!(world.memory.state().accounts.is_empty());
}

#[actix_web::test]
async fn a_missing_body_of_a_create_is_400_body_required() {
    let world = World::new();
    let app = world.app().await;
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), "")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.reasons(), [("BODY_REQUIRED".to_owned(), None)]);
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_415_and_one_too_large_is_413() {
    let world = World::new();
    let app = world.app().await;
    let xml = TestRequest::post()
        .uri(BASE)
        .insert_header(("authorization", format!("Bearer {}", world.admin())))
        .insert_header(("content-type", "application/xml"))
        .set_payload("<sa/>");
    let answer = send(&app, xml).await;
    assert_eq!(answer.status, 415);
    assert_eq!(
        answer.reasons(),
        [("UNSUPPORTED_MEDIA_TYPE".to_owned(), None)]
    );

    let huge = format!("{{\"displayName\": \"{}\"}}", "x".repeat(70 * 1024));
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), &huge)).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.reasons(), [("BODY_TOO_LARGE".to_owned(), None)]);
}

#[actix_web::test]
async fn a_valid_create_is_201_with_location_and_etag_and_is_stored() {
    let world = World::new();
    let app = world.app().await;
    let body = r#"{"id": "sa-ci", "displayName": "CI", "scope": "project", "scopeId": "web",
                   "roles": ["compute.deployer"]}"#;
    let answer = send(&app, json(Method::POST, BASE, &world.admin(), body)).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        answer.header("location"),
        Some(format!("{BASE}/sa-ci").as_str())
    );
    assert!(answer.header("etag").unwrap().starts_with('"'));
    let created = answer.json();
    assert_eq!(created["clientId"], "sa-ci@acme.iam");
    assert_eq!(
        (created["scope"].as_str(), created["scopeId"].as_str()),
        (Some("project"), Some("web"))
    );
    assert_eq!(world.memory.state().accounts.len(), 1);
}

#[actix_web::test]
async fn an_idempotent_create_replays_its_first_answer() {
    let world = World::new();
    let app = world.app().await;
    let body = r#"{"displayName": "generated", "scope": "organization", "scopeId": "org-acme"}"#;
    let keyed =
        || json(Method::POST, BASE, &world.admin(), body).insert_header(("idempotency-key", "k-1"));
    let first = send(&app, keyed()).await;
    let again = send(&app, keyed()).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        first.json()["id"],
        again.json()["id"],
        "the same generated account"
    );
    assert_eq!(world.memory.state().accounts.len(), 1);
    let other = json(
        Method::POST,
        BASE,
        &world.admin(),
        "{\"displayName\": \"x\", \"scope\": \"organization\", \"scopeId\": \"org-acme\"}",
    )
    .insert_header(("idempotency-key", "k-1"));
    let reused = send(&app, other).await;
    assert_eq!(reused.status, 422);
    assert_eq!(
        reused.reasons(),
        [(
            "IDEMPOTENCY_KEY_REUSED".to_owned(),
            Some("Idempotency-Key".to_owned())
        )]
    );
}
