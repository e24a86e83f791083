//! The hardening of issue 7, tried as an attacker would: acting as an account needs all its
//! roles, secrets are never cached, non-admins get the uniform 404 before any validation,
//! unsupported methods get 405 with `Allow`, and a crash between a create and its idempotency
//! record cannot make a retry do the work twice.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{BASE, TestServer};

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
