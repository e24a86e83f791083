//! Cursor and offset pagination over real HTTP.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{BASE, TestServer};

fn ids(page: &Value) -> Vec<String> {
    page["serviceAccounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sa| sa["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn cursor_walk_returns_each_account_once_in_order_even_when_accounts_are_created_between_pages()
 {
    let server = TestServer::start().await;
    let admin = server.admin();
    for i in 0..120 {
        server.create_sa(&admin, &format!("sa-{i:03}")).await;
        // Distinct, increasing createdAt for a deterministic order.
        server.clock.advance(time::Duration::milliseconds(1));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut path = format!("{BASE}?pageSize=50");
    let mut pages = 0;
    loop {
        let page = server.get(&path, &admin).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let page = page.json();
        assert!(page.get("total").is_none(), "cursor mode has no total");
        seen.extend(ids(&page));
        pages += 1;
        // Accounts created between pages land after the cursor and show up later.
        if pages == 1 {
            server.create_sa(&admin, "sa-late-1").await;
        }
        match page["nextPageToken"].as_str() {
            Some(token) => path = format!("{BASE}?pageSize=50&pageToken={token}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..120).map(|i| format!("sa-{i:03}")).collect();
    expected.push("sa-late-1".into());
    assert_eq!(
        seen, expected,
        "every account exactly once, in creation order"
    );
    assert_eq!(pages, 3);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
}

#[tokio::test]
async fn offset_mode_reports_total_and_no_token() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for i in 0..7 {
        server.create_sa(&admin, &format!("sa-{i}")).await;
        server.clock.advance(time::Duration::milliseconds(1));
    }
    let page = server
        .get(&format!("{BASE}?offset=5&pageSize=10"), &admin)
        .await
        .json();
    assert_eq!(page["total"], 7);
    assert_eq!(ids(&page), ["sa-5", "sa-6"]);
    assert!(page.get("nextPageToken").is_none());
    let zero = server
        .get(&format!("{BASE}?offset=0&pageSize=2"), &admin)
        .await
        .json();
    assert_eq!(zero["total"], 7);
    assert_eq!(ids(&zero), ["sa-0", "sa-1"]);
}

#[tokio::test]
async fn filters_apply_and_bad_parameters_are_400() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-org").await;
    server
        .post(BASE, &admin, &serde_json::json!({"id": "sa-web", "displayName": "w", "scope": "project", "scopeId": "web"}))
        .await;
    server
        .patch(
            &format!("{BASE}/sa-web"),
            &admin,
            &serde_json::json!({"status": "disabled"}),
        )
        .await;
    let by_scope = server
        .get(&format!("{BASE}?scope=project"), &admin)
        .await
        .json();
    assert_eq!(ids(&by_scope), ["sa-web"]);
    let by_status = server
        .get(&format!("{BASE}?status=active"), &admin)
        .await
        .json();
    assert_eq!(ids(&by_status), ["sa-org"]);
    let by_target = server
        .get(&format!("{BASE}?scopeId=web&status=disabled"), &admin)
        .await
        .json();
    assert_eq!(ids(&by_target), ["sa-web"]);

    for (query, reason) in [
        ("pageSize=0", "OUT_OF_RANGE"),
        ("pageSize=501", "OUT_OF_RANGE"),
        ("pageSize=ten", "OUT_OF_RANGE"),
        ("offset=-1", "OUT_OF_RANGE"),
        ("scope=galaxy", "INVALID_VALUE"),
        ("status=paused", "INVALID_VALUE"),
        ("scopeId=Not_An_Id", "INVALID_FORMAT"),
        ("colour=blue", "UNKNOWN_PARAMETER"),
        ("pageSize=5&pageSize=6", "REPEATED_PARAMETER"),
        ("pageToken=abc&offset=0", "MUTUALLY_EXCLUSIVE"),
    ] {
        let response = server.get(&format!("{BASE}?{query}"), &admin).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            response.reasons().iter().any(|(r, _)| r == reason),
            "{query}: {}",
            response.text
        );
    }
}

#[tokio::test]
async fn edited_forged_or_refiltered_page_tokens_are_400() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for i in 0..3 {
        server.create_sa(&admin, &format!("sa-{i}")).await;
        server.clock.advance(time::Duration::milliseconds(1));
    }
    let first = server
        .get(&format!("{BASE}?pageSize=1"), &admin)
        .await
        .json();
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .get(&format!("{BASE}?pageSize=1&pageToken={token}"), &admin)
            .await
            .status,
        StatusCode::OK
    );

    let mut edited = token.clone().into_bytes();
    let last = edited.len() - 5;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    let other_tenant = server.token("org-globex", "gina", &["admin"]);
    for (path, token) in [
        (format!("{BASE}?pageToken={edited}"), admin.as_str()),
        (format!("{BASE}?pageToken=garbage"), admin.as_str()),
        (
            format!("{BASE}?pageToken={token}&status=active"),
            admin.as_str(),
        ),
        (format!("{BASE}?pageToken={token}"), other_tenant.as_str()),
    ] {
        let response = server.get(&path, token).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            response.reasons(),
            [(
                "INVALID_PAGE_TOKEN".to_owned(),
                Some("pageToken".to_owned())
            )]
        );
    }
}
