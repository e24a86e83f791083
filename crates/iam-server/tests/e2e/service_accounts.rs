//! The five service-account routes: success paths and every error status they list.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{BASE, TestServer};

fn reason(s: &str) -> (String, Option<String>) {
    (s.to_owned(), None)
}

fn field(s: &str, f: &str) -> (String, Option<String>) {
    (s.to_owned(), Some(f.to_owned()))
}

#[tokio::test]
async fn create_returns_201_with_location_etag_and_server_made_fields() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let body = json!({
        "id": "sa-pipeline-prod", "displayName": "Pipeline", "description": "CI",
        "scope": "project", "scopeId": "web", "roles": ["compute.deployer", "storage.writer"]
    });
    let created = server.post(BASE, &admin, &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        created.header("location"),
        Some("/v1/regions/global/iam/service-accounts/sa-pipeline-prod")
    );
    assert!(created.header("etag").is_some());
    let sa = created.json();
    assert_eq!(
        sa["selfLink"],
        "/v1/regions/global/iam/service-accounts/sa-pipeline-prod"
    );
    assert_eq!(sa["clientId"], "sa-pipeline-prod@acme.iam");
    assert_eq!(sa["status"], "active");
    assert_eq!(sa["createdBy"], "alice@acme.example");
    assert_eq!(sa["activeCredentialCount"], 0);
    assert_eq!(sa["roles"], json!(["compute.deployer", "storage.writer"]));
    assert_eq!(sa["createdAt"], sa["updatedAt"]);
    assert!(sa["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        uuid::Uuid::parse_str(sa["uid"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );

    let fetched = server
        .get(&format!("{BASE}/sa-pipeline-prod"), &admin)
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json(), sa, "GET shows exactly what create returned");
    assert_eq!(fetched.header("etag"), created.header("etag"));
}

#[tokio::test]
async fn create_without_id_generates_one_and_defaults_roles_to_empty() {
    let server = TestServer::start().await;
    let created = server
        .post(
            BASE,
            &server.admin(),
            &json!({"displayName": "x", "scope": "organization", "scopeId": "org-acme"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let sa = created.json();
    let id = sa["id"].as_str().unwrap();
    assert!(id.starts_with("sa-") && id.len() == 19, "{id}");
    assert_eq!(sa["roles"], json!([]));
    assert!(sa.get("description").is_none());
}

#[tokio::test]
async fn non_admins_get_403_on_list_and_create() {
    let server = TestServer::start().await;
    let viewer = server.token("org-acme", "bob", &["compute.deployer"]);
    let listed = server.get(BASE, &viewer).await;
    assert_eq!(listed.status, StatusCode::FORBIDDEN);
    assert_eq!(listed.reasons(), [reason("PERMISSION_DENIED")]);
    let created = server
        .post(
            BASE,
            &viewer,
            &json!({"displayName": "x", "scope": "organization", "scopeId": "org-acme"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    let count = server
        .get(&format!("{BASE}?offset=0"), &server.admin())
        .await
        .json()["total"]
        .clone();
    assert_eq!(count, 0, "nothing was created");
}

#[tokio::test]
async fn non_admins_get_the_same_404_for_existing_and_missing_accounts() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-exists").await;
    // An org-scoped caller with every role but admin, and a project-scoped "admin".
    let viewer = server.token("org-acme", "bob", &["compute.deployer", "storage.writer"]);
    let project_admin = server.token_for(&iam_server::token::MintRequest {
        tenant: iam_domain::OrgId::parse("org-acme").unwrap(),
        subject: "carol".into(),
        roles: vec![iam_domain::RoleSlug::parse("admin").unwrap()],
        scope: iam_domain::Scope::Project,
        scope_id: Some("web".into()),
        ttl: time::Duration::minutes(5),
        kind: iam_domain::PrincipalKind::User,
    });
    for token in [&viewer, &project_admin] {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let body = (method == Method::PATCH).then(|| json!({"status": "disabled"}));
            let existing = server
                .call(
                    method.clone(),
                    &format!("{BASE}/sa-exists"),
                    Some(token),
                    body.as_ref(),
                    &[],
                )
                .await;
            let missing = server
                .call(
                    method.clone(),
                    &format!("{BASE}/sa-missing"),
                    Some(token),
                    body.as_ref(),
                    &[],
                )
                .await;
            assert_eq!(existing.status, StatusCode::NOT_FOUND, "{method}");
            assert_eq!(
                existing.text, missing.text,
                "{method}: bodies must be byte-identical"
            );
            assert_eq!(
                existing.header("content-type"),
                missing.header("content-type")
            );
            assert_eq!(
                existing.header("content-length"),
                missing.header("content-length")
            );
        }
    }
    let still_there = server.get(&format!("{BASE}/sa-exists"), &admin).await;
    assert_eq!(still_there.status, StatusCode::OK);
    assert_eq!(
        still_there.json()["status"],
        "active",
        "the non-admin PATCH changed nothing"
    );
}

#[tokio::test]
async fn another_tenants_account_does_not_exist() {
    let server = TestServer::start().await;
    server.create_sa(&server.admin(), "sa-acme").await;
    let globex_admin = server.token("org-globex", "gina", &["admin", "compute.deployer"]);
    let path = format!("{BASE}/sa-acme");
    let missing = server
        .get(&format!("{BASE}/sa-nothing"), &globex_admin)
        .await;
    for response in [
        server.get(&path, &globex_admin).await,
        server
            .patch(&path, &globex_admin, &json!({"displayName": "pwned"}))
            .await,
        server.delete(&path, &globex_admin).await,
    ] {
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(response.text, missing.text);
    }
    let listed = server.get(BASE, &globex_admin).await.json();
    assert_eq!(listed["serviceAccounts"], json!([]));
    let acme = server.get(&path, &server.admin()).await.json();
    assert_eq!(acme["displayName"], "sa-acme");
}

#[tokio::test]
async fn create_reports_every_bad_field_with_400() {
    let server = TestServer::start().await;
    let bad = server
        .post(
            BASE,
            &server.admin(),
            &json!({
                "id": "Bad_Id", "displayName": "", "scope": "galaxy", "scopeId": 7,
                "roles": ["ok.role", "Not A Role", 3], "isAdmin": true, "clientId": "x@y.iam"
            }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let mut reasons = bad.reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            field("INVALID_FORMAT", "id"),
            field("INVALID_FORMAT", "roles[1]"),
            field("INVALID_TYPE", "roles[2]"),
            field("INVALID_TYPE", "scopeId"),
            field("INVALID_VALUE", "scope"),
            field("REQUIRED", "displayName"),
            field("UNKNOWN_FIELD", "clientId"),
            field("UNKNOWN_FIELD", "isAdmin"),
        ]
    );
    let missing = server.post(BASE, &server.admin(), &json!({})).await;
    let mut reasons = missing.reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            field("REQUIRED", "displayName"),
            field("REQUIRED", "scope"),
            field("REQUIRED", "scopeId")
        ]
    );
}

#[tokio::test]
async fn malformed_json_non_objects_and_other_media_types_are_refused() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let url = format!("{}{BASE}", server.base_url);
    let client = reqwest::Client::new();
    let send = |body: &'static str, content_type: &'static str| {
        client
            .post(&url)
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = send("{\"displayName\":", "application/json").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(malformed.text().await.unwrap().contains("MALFORMED_JSON"));
    let array = send("[1,2]", "application/json").await.unwrap();
    assert_eq!(array.status(), StatusCode::BAD_REQUEST);
    let form = send("displayName=x", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = client
        .post(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(format!("{{\"displayName\":\"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn business_rule_violations_are_422_with_reasons() {
    let server = TestServer::start().await;
    // The admin holds admin and compute.deployer only.
    let admin = server.token("org-acme", "dave", &["admin", "compute.deployer"]);
    let cases = [
        (
            json!({"displayName": "x", "scope": "project", "scopeId": "web", "roles": ["no.such.role"]}),
            field("ROLE_NOT_FOUND", "roles[0]"),
        ),
        (
            json!({"displayName": "x", "scope": "project", "scopeId": "web", "roles": ["compute.deployer", "storage.writer"]}),
            field("ROLE_NOT_HELD", "roles[1]"),
        ),
        (
            json!({"displayName": "x", "scope": "project", "scopeId": "nope"}),
            field("SCOPE_TARGET_NOT_FOUND", "scopeId"),
        ),
        (
            json!({"displayName": "x", "scope": "organization", "scopeId": "org-globex"}),
            field("SCOPE_TARGET_NOT_FOUND", "scopeId"),
        ),
        (
            json!({"displayName": "x", "scope": "project", "scopeId": "Not An Id!"}),
            field("SCOPE_TARGET_NOT_FOUND", "scopeId"),
        ),
    ];
    for (body, expected) in cases {
        let r = server.post(BASE, &admin, &body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.reasons(), [expected]);
    }

    // org-globex allows only project scope.
    let globex = server.token("org-globex", "gina", &["admin"]);
    let r = server
        .post(
            BASE,
            &globex,
            &json!({"displayName": "x", "scope": "organization", "scopeId": "org-globex"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.reasons(), [field("SCOPE_NOT_ALLOWED", "scope")]);

    let listed = server.get(&format!("{BASE}?offset=0"), &admin).await.json();
    assert_eq!(listed["total"], 0, "no rejected request stored anything");
    assert!(server.db.audit_events().await.is_empty());
}

#[tokio::test]
async fn duplicate_id_is_409() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-dup").await;
    let again = server
        .post(
            BASE,
            &admin,
            &json!({"id": "sa-dup", "displayName": "other", "scope": "project", "scopeId": "web"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.reasons(), [field("ALREADY_EXISTS", "id")]);
    assert_eq!(
        server.get(&format!("{BASE}/sa-dup"), &admin).await.json()["displayName"],
        "sa-dup"
    );
}

#[tokio::test]
async fn patch_updates_fields_with_replace_and_clear_semantics() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let created = server
        .post(
            BASE,
            &admin,
            &json!({"id": "sa-p", "displayName": "P", "description": "d", "scope": "organization",
                    "scopeId": "org-acme", "roles": ["storage.reader"]}),
        )
        .await
        .json();
    server.clock.advance(time::Duration::seconds(30));
    let path = format!("{BASE}/sa-p");
    let patched = server
        .patch(&path, &admin, &json!({"displayName": "Renamed", "description": null, "roles": ["compute.deployer", "storage.writer"], "status": "disabled"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    let sa = patched.json();
    assert_eq!(sa["displayName"], "Renamed");
    assert!(sa.get("description").is_none());
    assert_eq!(sa["roles"], json!(["compute.deployer", "storage.writer"]));
    assert_eq!(sa["status"], "disabled");
    assert_eq!(sa["createdAt"], created["createdAt"]);
    assert_ne!(sa["updatedAt"], created["updatedAt"]);
    assert_ne!(patched.header("etag"), None);

    // Re-enable; then a PATCH that changes nothing keeps updatedAt and the ETag.
    let enabled = server
        .patch(&path, &admin, &json!({"status": "active"}))
        .await;
    assert_eq!(enabled.json()["status"], "active");
    server.clock.advance(time::Duration::seconds(30));
    let noop = server
        .patch(
            &path,
            &admin,
            &json!({"status": "active", "description": ""}),
        )
        .await;
    assert_eq!(noop.status, StatusCode::OK);
    assert_eq!(noop.json()["updatedAt"], enabled.json()["updatedAt"]);
    assert_eq!(noop.header("etag"), enabled.header("etag"));
}

#[tokio::test]
async fn patch_refuses_empty_null_immutable_and_unknown_fields_with_400() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-p").await;
    let path = format!("{BASE}/sa-p");

    let empty = server.patch(&path, &admin, &json!({})).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.reasons(), [reason("EMPTY_PATCH")]);

    let no_body = server
        .call(Method::PATCH, &path, Some(&admin), None, &[])
        .await;
    assert_eq!(no_body.status, StatusCode::BAD_REQUEST);

    let nulls = server
        .patch(
            &path,
            &admin,
            &json!({"displayName": null, "roles": null, "status": null}),
        )
        .await;
    assert_eq!(nulls.status, StatusCode::BAD_REQUEST);
    let mut reasons = nulls.reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            field("NULL_NOT_ALLOWED", "displayName"),
            field("NULL_NOT_ALLOWED", "roles"),
            field("NULL_NOT_ALLOWED", "status")
        ]
    );

    for immutable in [
        "id",
        "uid",
        "clientId",
        "scope",
        "scopeId",
        "createdBy",
        "createdAt",
    ] {
        let r = server
            .patch(&path, &admin, &json!({immutable: "x", "displayName": "ok"}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{immutable}");
        assert_eq!(r.reasons(), [field("IMMUTABLE_FIELD", immutable)]);
    }
    let unknown = server
        .patch(
            &path,
            &admin,
            &json!({"superuser": true, "status": "paused"}),
        )
        .await;
    let mut reasons = unknown.reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            field("INVALID_VALUE", "status"),
            field("UNKNOWN_FIELD", "superuser")
        ]
    );

    let sa = server.get(&path, &admin).await.json();
    assert_eq!(
        sa["displayName"], "sa-p",
        "no refused PATCH changed anything"
    );
    assert_eq!(sa["status"], "active");
}

#[tokio::test]
async fn patch_scope_down_applies_to_added_roles_only() {
    let server = TestServer::start().await;
    let full = server.admin();
    server
        .post(BASE, &full, &json!({"id": "sa-r", "displayName": "r", "scope": "project", "scopeId": "web", "roles": ["storage.writer", "storage.reader"]}))
        .await;
    let weak = server.token("org-acme", "erin", &["admin", "storage.reader"]);
    let path = format!("{BASE}/sa-r");
    let removed = server
        .patch(&path, &weak, &json!({"roles": ["storage.reader"]}))
        .await;
    assert_eq!(
        removed.status,
        StatusCode::OK,
        "removing a role one does not hold is allowed"
    );
    let added = server
        .patch(
            &path,
            &weak,
            &json!({"roles": ["storage.reader", "storage.writer"]}),
        )
        .await;
    assert_eq!(added.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(added.reasons(), [field("ROLE_NOT_HELD", "roles[1]")]);
    let unknown = server
        .patch(&path, &weak, &json!({"roles": ["ghost"]}))
        .await;
    assert_eq!(unknown.reasons(), [field("ROLE_NOT_FOUND", "roles[0]")]);
}

#[tokio::test]
async fn if_match_with_a_stale_etag_is_412_and_a_fresh_one_succeeds() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-e").await;
    let path = format!("{BASE}/sa-e");
    let etag = server
        .get(&path, &admin)
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let first = server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"displayName": "one"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let stale = server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"displayName": "two"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.reasons(), [reason("PRECONDITION_FAILED")]);
    let weak = format!("W/{}", first.header("etag").unwrap());
    let weak = server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"displayName": "two"})),
            &[("if-match", &weak)],
        )
        .await;
    assert_eq!(
        weak.status,
        StatusCode::PRECONDITION_FAILED,
        "weak tags never match If-Match"
    );
    let star = server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"displayName": "three"})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(star.status, StatusCode::OK);
    assert_eq!(
        server.get(&path, &admin).await.json()["displayName"],
        "three"
    );
}

#[tokio::test]
async fn delete_is_204_then_the_account_is_gone() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-d").await;
    let path = format!("{BASE}/sa-d");
    let first_etag = server
        .get(&path, &admin)
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let deleted = server.delete(&path, &admin).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    assert_eq!(
        server.get(&path, &admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.delete(&path, &admin).await.status,
        StatusCode::NOT_FOUND
    );
    // The id can be reused, and the old ETag does not match the new account.
    let recreated = server
        .post(BASE, &admin, &json!({"id": "sa-d", "displayName": "again", "scope": "organization", "scopeId": "org-acme"}))
        .await;
    assert_eq!(recreated.status, StatusCode::CREATED);
    let stale = server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(&json!({"displayName": "x"})),
            &[("if-match", &first_etag)],
        )
        .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "the old account's ETag"
    );
}

#[tokio::test]
async fn idempotent_create_replays_the_first_response_and_refuses_a_different_body() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let body =
        json!({"displayName": "generated id", "scope": "organization", "scopeId": "org-acme"});
    let headers = [("idempotency-key", "create-1")];
    let first = server
        .call(Method::POST, BASE, Some(&admin), Some(&body), &headers)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = server
        .call(Method::POST, BASE, Some(&admin), Some(&body), &headers)
        .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.text, first.text, "same body, same generated id");
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let total = server.get(&format!("{BASE}?offset=0"), &admin).await.json()["total"].clone();
    assert_eq!(total, 1, "the retry did not create a second account");
    assert_eq!(server.db.audit_events().await.len(), 1);

    let other =
        json!({"displayName": "something else", "scope": "organization", "scopeId": "org-acme"});
    let reused = server
        .call(Method::POST, BASE, Some(&admin), Some(&other), &headers)
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reused.reasons(),
        [field("IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")]
    );

    // Keys belong to their caller: another admin's same key is a new request.
    let other_admin = server.token("org-acme", "bob@acme.example", &["admin"]);
    let theirs = server
        .call(
            Method::POST,
            BASE,
            Some(&other_admin),
            Some(&body),
            &headers,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(theirs.json()["id"], first.json()["id"]);

    let bad_key = server
        .call(
            Method::POST,
            BASE,
            Some(&admin),
            Some(&body),
            &[("idempotency-key", "")],
        )
        .await;
    assert_eq!(bad_key.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_mutation_leaves_exactly_one_audit_event() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let created = server
        .call(Method::POST, BASE, Some(&admin), Some(&json!({"id": "sa-a", "displayName": "a", "scope": "organization", "scopeId": "org-acme"})), &[("x-request-id", "req-create")])
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    server
        .call(
            Method::PATCH,
            &format!("{BASE}/sa-a"),
            Some(&admin),
            Some(&json!({"status": "disabled", "displayName": "b"})),
            &[("x-request-id", "req-patch")],
        )
        .await;
    // Reads, refused writes and no-op patches write nothing.
    server.get(&format!("{BASE}/sa-a"), &admin).await;
    server
        .patch(
            &format!("{BASE}/sa-a"),
            &admin,
            &json!({"status": "disabled"}),
        )
        .await;
    server
        .patch(
            &format!("{BASE}/sa-a"),
            &admin,
            &json!({"roles": ["ghost"]}),
        )
        .await;
    server.delete(&format!("{BASE}/sa-missing"), &admin).await;
    server
        .call(
            Method::DELETE,
            &format!("{BASE}/sa-a"),
            Some(&admin),
            None,
            &[("x-request-id", "req-delete")],
        )
        .await;

    let events = server.db.audit_events().await;
    let summary: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.resource.as_str(),
                e.request_id.as_str(),
                e.actor.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "service_account.create",
                "service-accounts/sa-a",
                "req-create",
                "alice@acme.example"
            ),
            (
                "service_account.update",
                "service-accounts/sa-a",
                "req-patch",
                "alice@acme.example"
            ),
            (
                "service_account.delete",
                "service-accounts/sa-a",
                "req-delete",
                "alice@acme.example"
            ),
        ]
    );
    assert_eq!(events[1].changed_fields, ["displayName", "status"]);
    for event in &events {
        assert_eq!(event.org_id, "org-acme");
        assert_eq!(event.source_ip.as_deref(), Some("127.0.0.1"));
    }
}
