//! PATCH parsing and `If-Match` preconditions.

use actix_web::http::Method;

use crate::support::{Answer, BASE, World, bare, json, send};

const SA: &str = "/v1/regions/global/iam/service-accounts/sa-ci";

/// Creates `sa-ci` and returns its representation.
async fn create<S, B>(world: &World, app: &S) -> Answer
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let body = r#"{"id": "sa-ci", "displayName": "CI", "description": "about", "scope": "organization", "scopeId": "org-acme"}"#;
    let answer = send(app, json(Method::POST, BASE, &world.admin(), body)).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer
}

#[actix_web::test]
async fn an_empty_patch_is_400_empty_patch() {
    let world = World::new();
    let app = world.app().await;
    create(&world, &app).await;
    for body in ["{}", ""] {
        let answer = send(&app, json(Method::PATCH, SA, &world.admin(), body)).await;
        assert_eq!(answer.status, 400, "{body:?}");
        assert_eq!(answer.reasons(), [("EMPTY_PATCH".to_owned(), None)]);
    }
}

#[actix_web::test]
async fn nulls_and_read_only_fields_are_named_one_by_one() {
    let world = World::new();
    let app = world.app().await;
    create(&world, &app).await;
    let body = r#"{"displayName": null, "roles": null, "status": null, "id": "x", "clientId": "y", "bogus": 1}"#;
    let answer = send(&app, json(Method::PATCH, SA, &world.admin(), body)).await;
    assert_eq!(answer.status, 400);
    let mut reasons: Vec<String> = answer
        .reasons()
        .into_iter()
        .map(|(reason, field)| format!("{}:{reason}", field.unwrap()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bogus:UNKNOWN_FIELD",
            "clientId:IMMUTABLE_FIELD",
            "displayName:NULL_NOT_ALLOWED",
            "id:IMMUTABLE_FIELD",
            "roles:NULL_NOT_ALLOWED",
            "status:NULL_NOT_ALLOWED",
        ]
    );
}

#[actix_web::test]
async fn an_empty_or_null_description_clears_it() {
    let world = World::new();
    let app = world.app().await;
    create(&world, &app).await;
    for body in [r#"{"description": ""}"#, r#"{"description": null}"#] {
        let answer = send(&app, json(Method::PATCH, SA, &world.admin(), body)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.json().get("description").is_none(), "{body}");
    }
}

#[actix_web::test]
async fn a_patch_that_changes_nothing_keeps_the_etag() {
    let world = World::new();
    let app = world.app().await;
    let created = create(&world, &app).await;
    let answer = send(
        &app,
        json(
            Method::PATCH,
            SA,
            &world.admin(),
            r#"{"displayName": "CI"}"#,
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("etag"), created.header("etag"));
    assert_eq!(answer.json()["updatedAt"], created.json()["updatedAt"]);
}

#[actix_web::test]
async fn if_match_with_the_current_tag_or_a_star_succeeds() {
    let world = World::new();
    let app = world.app().await;
    let created = create(&world, &app).await;
    let tag = created.header("etag").unwrap().to_owned();
    let current = json(
        Method::PATCH,
        SA,
        &world.admin(),
        r#"{"displayName": "one"}"#,
    )
    .insert_header(("if-match", format!("\"nope\", {tag}")));
    let answer = send(&app, current).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let star = json(
        Method::PATCH,
        SA,
        &world.admin(),
        r#"{"displayName": "two"}"#,
    )
    .insert_header(("if-match", "*"));
    assert_eq!(send(&app, star).await.status, 200);
}

#[actix_web::test]
async fn a_stale_or_weak_if_match_is_412_and_changes_nothing() {
    let world = World::new();
    let app = world.app().await;
    let created = create(&world, &app).await;
    let old_tag = created.header("etag").unwrap().to_owned();
    let renamed = send(
        &app,
        json(
            Method::PATCH,
            SA,
            &world.admin(),
            r#"{"displayName": "new"}"#,
        ),
    )
    .await;
    assert_eq!(renamed.status, 200);
    for tag in [
        old_tag.clone(),
        format!("W/{}", renamed.header("etag").unwrap()),
    ] {
        let request = json(
            Method::PATCH,
            SA,
            &world.admin(),
            r#"{"displayName": "lost"}"#,
        )
        .insert_header(("if-match", tag.clone()));
        let answer = send(&app, request).await;
        assert_eq!(answer.status, 412, "{tag}");
        assert_eq!(answer.reasons(), [("PRECONDITION_FAILED".to_owned(), None)]);
    }
    let read = send(&app, bare(Method::GET, SA, &world.admin())).await;
    assert_eq!(read.json()["displayName"], "new");
}
