//! The four credential routes: one-time secrets, lifetime policy, the active-credential cap
//! (also under concurrency across two instances), enumeration hiding, and secret hygiene.

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use iam_domain::ports::Clock as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::support::{BASE, BinaryServer, Response, TestServer};

fn creds(sa: &str) -> String {
    format!("{BASE}/{sa}/credentials")
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

async fn create(server: &TestServer, token: &str, sa: &str, body: Option<Value>) -> Response {
    server
        .call(Method::POST, &creds(sa), Some(token), body.as_ref(), &[])
        .await
}

/// Every 16-character window of the random part of a secret (and the secret itself).
fn fragments(secret: &str) -> Vec<String> {
    let body = secret.rsplit_once('_').unwrap().1;
    let chars: Vec<char> = body.chars().collect();
    let mut out: Vec<String> = chars.windows(16).map(|w| w.iter().collect()).collect();
    out.push(secret.to_owned());
    out
}

/// Fails if `haystack` holds any secret fragment, as text or hex-encoded (how `pg_dump`
/// writes `bytea`, and how byte parameters may appear in logs).
fn assert_no_secret(haystack: &str, secrets: &[String], what: &str) {
    let lowercase = haystack.to_ascii_lowercase();
    for secret in secrets {
        for fragment in fragments(secret) {
            let hex: String = fragment
                .bytes()
                .flat_map(|b| [b >> 4, b & 15])
                .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap())
                .collect();
            assert!(
                !haystack.contains(&fragment),
                "{what} contains a fragment of a secret"
            );
            assert!(
                !lowercase.contains(&hex),
                "{what} contains a hex-encoded secret fragment"
            );
        }
    }
}

#[tokio::test]
async fn create_shows_the_secret_once_with_the_default_lifetime() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let now = server.clock.now();
    let created = create(&server, &admin, "sa-ci", None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let body = created.json();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("cred-"));
    assert_eq!(
        created.header("location"),
        Some(format!("{}/{id}", creds("sa-ci")).as_str())
    );
    assert_eq!(body["selfLink"], format!("{}/{id}", creds("sa-ci")));
    assert_eq!(body["serviceAccountId"], "sa-ci");
    assert_eq!(body["status"], "active");
    assert_eq!(body["createdBy"], "alice@acme.example");
    assert_eq!(body["lastUsedAt"], Value::Null);
    assert_eq!(body["lastUsedIp"], Value::Null);
    let expires_at = parse_time(&body["expiresAt"]);
    assert!((expires_at - (now + Duration::days(90))).abs() < Duration::seconds(1));
    let secret = body["clientSecret"].as_str().unwrap().to_owned();
    assert_eq!(
        iam_domain::client_secret::check_format(&secret)
            .unwrap()
            .as_str(),
        id
    );

    let secrets = [secret];
    let got = server
        .get(&format!("{}/{id}", creds("sa-ci")), &admin)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.json().get("clientSecret").is_none());
    let listed = server.get(&creds("sa-ci"), &admin).await;
    assert_eq!(listed.json()["credentials"][0]["id"], id);
    let account = server.get(&format!("{BASE}/sa-ci"), &admin).await;
    assert_eq!(account.json()["activeCredentialCount"], 1);
    for (what, response) in [("get", &got), ("list", &listed), ("account", &account)] {
        assert_no_secret(&response.text, &secrets, what);
    }
}

#[tokio::test]
async fn the_body_is_optional_and_checked_field_by_field() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    assert_eq!(
        create(&server, &admin, "sa-ci", Some(json!({})))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        create(&server, &admin, "sa-ci", Some(json!({"expiresAt": null})))
            .await
            .status,
        StatusCode::CREATED
    );
    let bad = create(
        &server,
        &admin,
        "sa-ci",
        Some(json!({"expiresAt": "tomorrow", "secret": "mine"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let mut reasons = bad.reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("INVALID_FORMAT".to_owned(), Some("expiresAt".to_owned())),
            ("UNKNOWN_FIELD".to_owned(), Some("secret".to_owned())),
        ]
    );
}

#[tokio::test]
async fn expiry_in_the_past_or_beyond_the_org_maximum_is_422() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let now = server.clock.now();
    for (at, reason) in [
        (now - Duration::minutes(1), "EXPIRY_IN_PAST"),
        (now, "EXPIRY_IN_PAST"),
        (now + Duration::days(366), "EXPIRY_EXCEEDS_MAX"),
    ] {
        let r = create(
            &server,
            &admin,
            "sa-ci",
            Some(json!({"expiresAt": rfc3339(at)})),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{at}");
        assert_eq!(
            r.reasons(),
            [(reason.to_owned(), Some("expiresAt".to_owned()))]
        );
    }
    let ok = create(
        &server,
        &admin,
        "sa-ci",
        Some(json!({"expiresAt": rfc3339(now + Duration::days(30))})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let expected = iam_domain::ports::to_storage_precision(now + Duration::days(30));
    assert_eq!(
        parse_time(&ok.json()["expiresAt"]),
        expected,
        "kept to the microsecond"
    );
    let shifted = (now + Duration::days(1)).to_offset(time::macros::offset!(+05:00));
    let shifted = create(
        &server,
        &admin,
        "sa-ci",
        Some(json!({"expiresAt": rfc3339(shifted)})),
    )
    .await;
    let shown = shifted.json()["expiresAt"].as_str().unwrap().to_owned();
    assert!(shown.ends_with('Z'), "answered in UTC: {shown}");
    // org-globex allows at most 90 days.
    let globex = server.token("org-globex", "gina", &["admin"]);
    server
        .post(
            BASE,
            &globex,
            &json!({"id": "sa-g", "displayName": "g", "scope": "project", "scopeId": "web"}),
        )
        .await;
    let r = create(
        &server,
        &globex,
        "sa-g",
        Some(json!({"expiresAt": rfc3339(now + Duration::days(91))})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let default = create(&server, &globex, "sa-g", None).await.json();
    assert!(
        (parse_time(&default["expiresAt"]) - (now + Duration::days(30))).abs()
            < Duration::seconds(1)
    );
}

#[tokio::test]
async fn expired_credentials_show_expired_leave_the_count_and_free_a_slot() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let now = server.clock.now();
    let short = create(
        &server,
        &admin,
        "sa-ci",
        Some(json!({"expiresAt": rfc3339(now + Duration::hours(1))})),
    )
    .await;
    let short_id = short.json()["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        assert_eq!(
            create(&server, &admin, "sa-ci", None).await.status,
            StatusCode::CREATED
        );
    }
    let full = create(&server, &admin, "sa-ci", None).await;
    assert_eq!(full.status, StatusCode::CONFLICT);
    assert_eq!(
        full.reasons(),
        [("CREDENTIAL_LIMIT_REACHED".to_owned(), None)]
    );
    assert_eq!(
        server.get(&format!("{BASE}/sa-ci"), &admin).await.json()["activeCredentialCount"],
        5
    );

    server.clock.advance(Duration::hours(1));
    let admin = server.admin(); // the first token expired with the hour
    let expired = server
        .get(&format!("{}/{short_id}", creds("sa-ci")), &admin)
        .await
        .json();
    assert_eq!(expired["status"], "expired");
    assert_eq!(
        server.get(&format!("{BASE}/sa-ci"), &admin).await.json()["activeCredentialCount"],
        4
    );
    let listed = server.get(&format!("{BASE}?offset=0"), &admin).await.json();
    assert_eq!(listed["serviceAccounts"][0]["activeCredentialCount"], 4);
    let only_expired = server
        .get(&format!("{}?status=expired", creds("sa-ci")), &admin)
        .await
        .json();
    let ids: Vec<&str> = only_expired["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [short_id.as_str()]);
    let active = server
        .get(
            &format!("{}?status=active&offset=0", creds("sa-ci")),
            &admin,
        )
        .await
        .json();
    assert_eq!(active["total"], 4);
    assert_eq!(
        create(&server, &admin, "sa-ci", None).await.status,
        StatusCode::CREATED,
        "a slot was freed"
    );
    assert_eq!(
        create(&server, &admin, "sa-ci", None).await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn creation_is_allowed_on_a_disabled_account() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    server
        .patch(
            &format!("{BASE}/sa-ci"),
            &admin,
            &json!({"status": "disabled"}),
        )
        .await;
    assert_eq!(
        create(&server, &admin, "sa-ci", None).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn non_admins_other_tenants_and_wrong_accounts_get_the_same_404() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    server.create_sa(&admin, "sa-other").await;
    let id = create(&server, &admin, "sa-ci", None).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewer = server.token("org-acme", "bob", &["compute.deployer"]);
    let globex = server.token("org-globex", "gina", &["admin"]);
    let missing = server.get(&creds("sa-missing"), &admin).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let cases = [
        (&viewer, Method::GET, creds("sa-ci")),
        (&viewer, Method::POST, creds("sa-ci")),
        (&viewer, Method::GET, format!("{}/{id}", creds("sa-ci"))),
        (&viewer, Method::DELETE, format!("{}/{id}", creds("sa-ci"))),
        (&globex, Method::GET, creds("sa-ci")),
        (&globex, Method::POST, creds("sa-ci")),
        (&globex, Method::GET, format!("{}/{id}", creds("sa-ci"))),
        (&globex, Method::DELETE, format!("{}/{id}", creds("sa-ci"))),
        (&admin, Method::GET, format!("{}/{id}", creds("sa-other"))),
        (
            &admin,
            Method::DELETE,
            format!("{}/{id}", creds("sa-other")),
        ),
        (
            &admin,
            Method::GET,
            format!("{}/cred-missing", creds("sa-ci")),
        ),
        (&admin, Method::POST, creds("sa-missing")),
    ];
    for (token, method, path) in cases {
        let r = server
            .call(method.clone(), &path, Some(token), None, &[])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            r.text, missing.text,
            "{method} {path}: same bytes as a missing account"
        );
    }
    let still = server
        .get(&format!("{}/{id}", creds("sa-ci")), &admin)
        .await;
    assert_eq!(still.status, StatusCode::OK, "nothing was deleted");
    assert_eq!(
        server.get(&format!("{BASE}/sa-ci"), &admin).await.json()["activeCredentialCount"],
        1
    );
}

#[tokio::test]
async fn delete_is_204_once_and_deleting_the_account_deletes_its_credentials() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let first = create(&server, &admin, "sa-ci", None).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = create(&server, &admin, "sa-ci", None).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{}/{first}", creds("sa-ci"));
    assert_eq!(
        server.delete(&path, &admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get(&path, &admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.delete(&path, &admin).await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        server.delete(&format!("{BASE}/sa-ci"), &admin).await.status,
        StatusCode::NO_CONTENT
    );
    server.create_sa(&admin, "sa-ci").await;
    let recreated = server
        .get(&format!("{}/{second}", creds("sa-ci")), &admin)
        .await;
    assert_eq!(
        recreated.status,
        StatusCode::NOT_FOUND,
        "the old account's credential went with it"
    );
    assert_eq!(
        server.get(&creds("sa-ci"), &admin).await.json()["credentials"],
        json!([])
    );
    let actions: Vec<String> = server
        .db
        .audit_events()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "credential.create").count(),
        2
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "credential.delete").count(),
        1
    );
}

#[tokio::test]
async fn credential_lists_page_by_cursor_and_offset() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            create(&server, &admin, "sa-ci", None).await.json()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        server.clock.advance(Duration::milliseconds(1));
    }
    let mut seen = Vec::new();
    let mut path = format!("{}?pageSize=2", creds("sa-ci"));
    loop {
        let page = server.get(&path, &admin).await.json();
        seen.extend(
            page["credentials"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["nextPageToken"].as_str() {
            Some(token) => path = format!("{}?pageSize=2&pageToken={token}", creds("sa-ci")),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let page = server
        .get(&format!("{}?pageSize=2&offset=4", creds("sa-ci")), &admin)
        .await
        .json();
    assert_eq!(page["total"], 5);
    assert_eq!(page["credentials"].as_array().unwrap().len(), 1);
    let first = server
        .get(&format!("{}?pageSize=2", creds("sa-ci")), &admin)
        .await
        .json();
    let token = first["nextPageToken"].as_str().unwrap();
    server.create_sa(&admin, "sa-two").await;
    let elsewhere = server
        .get(&format!("{}?pageToken={token}", creds("sa-two")), &admin)
        .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::BAD_REQUEST,
        "a token is bound to its account"
    );
    let bad = server
        .get(&format!("{}?status=revoked", creds("sa-ci")), &admin)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_retried_create_replays_the_same_secret_without_using_another_slot() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let headers = [("idempotency-key", "rotate-2026-11")];
    let first = server
        .call(Method::POST, &creds("sa-ci"), Some(&admin), None, &headers)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = server
        .call(Method::POST, &creds("sa-ci"), Some(&admin), None, &headers)
        .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(
        retry.text, first.text,
        "the same secret, shown again to the same caller"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        server.get(&format!("{BASE}/sa-ci"), &admin).await.json()["activeCredentialCount"],
        1
    );

    // The same person without the admin role gets no replay (and no secret): just the 404.
    let demoted = server.token("org-acme", "alice@acme.example", &["compute.deployer"]);
    let replay = server
        .call(
            Method::POST,
            &creds("sa-ci"),
            Some(&demoted),
            None,
            &headers,
        )
        .await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);

    // The recorded response is stored sealed: no trace of the secret in the database.
    let secret = first.json()["clientSecret"].as_str().unwrap().to_owned();
    let dump = pg_dump(server.db.url());
    assert!(
        dump.contains("idempotency_keys"),
        "the dump covers the table"
    );
    assert_no_secret(&dump, &[secret], "pg_dump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_through_two_instances_yield_exactly_the_cap() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let (second_url, second) = server.second_instance();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let requests = (0..50).map(|i| {
        let base = if i % 2 == 0 {
            server.base_url.clone()
        } else {
            second_url.clone()
        };
        let request = client
            .post(format!("{base}{}", creds("sa-ci")))
            .bearer_auth(&admin)
            .timeout(StdDuration::from_secs(30))
            .send();
        async move { request.await.unwrap().status() }
    });
    let statuses = futures_join_all(requests).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (5, 45), "{statuses:?}");
    let stored = server
        .get(
            &format!("{}?status=active&offset=0", creds("sa-ci")),
            &admin,
        )
        .await
        .json();
    assert_eq!(stored["total"], 5);
    drop(second.stop(false));
}

/// Awaits all futures concurrently (spawned, so they truly race on the runtime's threads).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<StatusCode>
where
    F: Future<Output = StatusCode> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

fn pg_bin(tool: &str) -> String {
    let dir = std::env::var("PG_BIN_DIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let path = std::path::Path::new(&dir).join(tool);
    if path.exists() {
        path.display().to_string()
    } else {
        tool.to_owned()
    }
}

fn pg_dump(url: &str) -> String {
    let output = std::process::Command::new(pg_bin("pg_dump"))
        .args(["--no-owner", "--dbname", url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs the real binary with the most verbose logging, creates credentials and exercises every
/// endpoint, then searches the captured logs, a `pg_dump` and every non-create response for
/// any secret or any 16-character fragment of one.
#[tokio::test]
async fn no_secret_reaches_logs_the_database_or_any_other_response() {
    let db = TestServer::demo_database().await;
    let mut server = BinaryServer::new(
        db.url(),
        &[("IAM_LOG", "trace"), ("IAM_LOG_FORMAT", "json")],
    );
    let token = server.run(&[
        "token", "mint", "--tenant", "org-acme", "--sub", "ops", "--roles", "admin",
    ]);
    let token = token.trim().to_owned();
    server.serve().await;

    let client = reqwest::Client::new();
    let send = |method: Method, path: String, body: Option<Value>, key: Option<&'static str>| {
        let mut request = client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let account = json!({"id": "sa-leak", "displayName": "leak", "scope": "organization", "scopeId": "org-acme"});
    assert_eq!(
        send(Method::POST, BASE.into(), Some(account), None).await.0,
        StatusCode::CREATED
    );
    let (mut secrets, mut ids) = (Vec::new(), Vec::new());
    for key in [None, Some("leak-key"), None] {
        let (status, body) = send(Method::POST, creds("sa-leak"), None, key).await;
        assert_eq!(status, StatusCode::CREATED);
        let body: Value = serde_json::from_str(&body).unwrap();
        secrets.push(body["clientSecret"].as_str().unwrap().to_owned());
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // The replay of the idempotent create legitimately shows its secret again; nothing else may.
    let (_, replay) = send(Method::POST, creds("sa-leak"), None, Some("leak-key")).await;
    assert!(replay.contains(&secrets[1]));
    let mut other_responses = String::new();
    for (method, path, body) in [
        (Method::GET, creds("sa-leak"), None),
        (Method::GET, format!("{}?offset=0", creds("sa-leak")), None),
        (
            Method::GET,
            format!("{}/{}", creds("sa-leak"), ids[0]),
            None,
        ),
        (Method::GET, format!("{BASE}/sa-leak"), None),
        (Method::GET, BASE.to_owned(), None),
        (
            Method::PATCH,
            format!("{BASE}/sa-leak"),
            Some(json!({"description": "rotated"})),
        ),
        (
            Method::POST,
            creds("sa-leak"),
            Some(json!({"expiresAt": "yesterday"})),
        ),
        (
            Method::DELETE,
            format!("{}/{}", creds("sa-leak"), ids[0]),
            None,
        ),
        (
            Method::GET,
            format!("{}/{}", creds("sa-leak"), ids[0]),
            None,
        ),
        (Method::GET, "/openapi.json".to_owned(), None),
    ] {
        other_responses.push_str(&send(method, path, body, None).await.1);
    }
    let dump = pg_dump(db.url());
    let (_, logs) = server.terminate().await;

    assert!(logs.contains("TRACE"), "logging ran at trace level");
    assert!(
        logs.matches("request completed").count() >= 15,
        "the logs cover the requests"
    );
    assert!(
        dump.contains("credential.create"),
        "the dump covers the data"
    );
    assert_eq!(HashSet::<&String>::from_iter(&secrets).len(), 3);
    assert_no_secret(&logs, &secrets, "server logs");
    assert_no_secret(&dump, &secrets, "pg_dump");
    assert_no_secret(&other_responses, &secrets, "non-create responses");
}
