//! Request ids, health, readiness, the OpenAPI document and unknown routes.

use reqwest::{Method, StatusCode};

use crate::support::{BASE, BinaryServer, TestServer};

#[tokio::test]
async fn every_response_has_a_request_id_echoing_valid_incoming_ones() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for (method, path, token) in [
        (Method::GET, BASE.to_owned(), Some(admin.as_str())),
        (Method::GET, BASE.to_owned(), None),
        (
            Method::GET,
            format!("{BASE}/sa-missing"),
            Some(admin.as_str()),
        ),
        (Method::GET, "/healthz".to_owned(), None),
        (Method::GET, "/no/such/route".to_owned(), None),
        (Method::PUT, BASE.to_owned(), Some(admin.as_str())),
    ] {
        let generated = server.call(method.clone(), &path, token, None, &[]).await;
        let id = generated
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{method} {path}"));
        assert!(!id.is_empty());
        let echoed = server
            .call(
                method.clone(),
                &path,
                token,
                None,
                &[("x-request-id", "abc-123")],
            )
            .await;
        assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
        let replaced = server
            .call(method, &path, token, None, &[("x-request-id", "bad id!")])
            .await;
        assert_ne!(replaced.header("x-request-id"), Some("bad id!"));
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_envelope() {
    let server = TestServer::start().await;
    let missing = server
        .call(Method::GET, "/v2/nothing", None, None, &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.reasons(), [("NOT_FOUND".to_owned(), None)]);
    let put = server
        .call(
            Method::PUT,
            &format!("{BASE}/sa-x"),
            Some(&server.admin()),
            None,
            &[],
        )
        .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.reasons(), [("METHOD_NOT_ALLOWED".to_owned(), None)]);
}

#[tokio::test]
async fn health_readiness_and_openapi_are_served() {
    let server = TestServer::start().await;
    assert_eq!(
        server
            .call(Method::GET, "/healthz", None, None, &[])
            .await
            .status,
        StatusCode::OK
    );
    let ready = server.call(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let doc = server
        .call(Method::GET, "/openapi.json", None, None, &[])
        .await
        .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let op = &doc["paths"]["/v1/regions/global/iam/service-accounts/{id}"]["patch"];
    assert_eq!(
        op["x-visibility"],
        serde_json::json!(["public", "internal"])
    );
}

#[tokio::test]
async fn readiness_fails_on_an_unmigrated_database() {
    let db = iam_postgres::test_support::TestDatabase::create_unmigrated().await;
    let config = iam_server::config::Config::from_env(|k| match k {
        "DATABASE_URL" => Some(db.url().to_owned()),
        "IAM_DEV_STATE_DIR" => Some(
            std::env::temp_dir()
                .join("iam-e2e-unmigrated")
                .display()
                .to_string(),
        ),
        "IAM_WORKERS" => Some("1".into()),
        _ => None,
    })
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = iam_server::app::build(&config, iam_server::clock::SystemClock, listener)
        .unwrap()
        .server;
    let handle = server.handle();
    tokio::spawn(server);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    handle.stop(true).await;
}

/// The real binary, end to end: `migrate` on an empty database, `directory apply`,
/// `token mint`, `serve`, a request with the minted token, and a clean exit on SIGTERM.
#[tokio::test]
async fn the_binary_migrates_applies_mints_serves_and_stops_on_sigterm() {
    let db = iam_postgres::test_support::TestDatabase::create_unmigrated().await;
    let mut server = BinaryServer::new(db.url(), &[]);
    server.run(&["migrate"]);
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/directory.toml"
    );
    server.run(&["directory", "apply", file, "--actor", "ops-alice"]);
    // Audited: one event per organization, by the operator, in one run.
    let events = db.directory_audit_events().await;
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(event.actor, "operator:ops-alice");
        assert_eq!(event.action, "directory.apply");
        assert_eq!(event.request_id, events[0].request_id);
        assert!(event.request_id.starts_with("directory-apply-"));
        assert_eq!(event.changed_fields[0], "+organization");
    }
    // Applying it again changes nothing and audits nothing.
    server.run(&["directory", "apply", file, "--actor", "ops-alice"]);
    assert_eq!(db.directory_audit_events().await.len(), events.len());
    let token = server.run(&[
        "token", "mint", "--tenant", "org-acme", "--sub", "ops", "--roles", "admin",
    ]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "stdout is exactly one JWT");

    server.serve().await;
    let listed = reqwest::Client::new()
        .get(format!("{}{BASE}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let (exit, _) = server.terminate().await;
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
}

/// The binary refuses to start when the external issuer is its own issuer: an external key
/// could then sign tokens that look like this service's.
#[tokio::test]
async fn the_binary_refuses_an_external_issuer_equal_to_its_own() {
    let db = iam_postgres::test_support::TestDatabase::create().await;
    let server = BinaryServer::new(db.url(), &[]);
    let stderr = server.run_failing(
        &["serve"],
        &[
            ("IAM_ISSUER", "https://iam.example"),
            ("IAM_EXTERNAL_ISSUER", "https://iam.example/"),
            ("IAM_EXTERNAL_JWKS_FILE", "/nonexistent/jwks.json"),
        ],
    );
    assert!(stderr.contains("IAM_EXTERNAL_ISSUER"), "{stderr}");
    assert!(stderr.contains("own issuer"), "{stderr}");
}

/// SPEC §7: a stalled database (a lock held elsewhere) never holds a request longer than the
/// request deadline; it gets 503 with `Retry-After`, and the pool serves normally afterwards.
#[tokio::test]
async fn a_stalled_database_answers_503_within_the_request_deadline() {
    use diesel_async::SimpleAsyncConnection as _;

    let server = TestServer::start_with(&[("IAM_REQUEST_TIMEOUT", "1s")]).await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-stall").await;
    let path = format!("{BASE}/sa-stall");
    let mut locker = server.db.connection().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE service_accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    // More requests than pooled connections (4): some wait for a connection, the rest for
    // the lock; every one is answered at the deadline.
    let started = std::time::Instant::now();
    let get = || server.get(&path, &admin);
    let stalled = tokio::join!(get(), get(), get(), get(), get(), get());
    let elapsed = started.elapsed();
    let (r1, r2, r3, r4, r5, r6) = stalled;
    for response in [r1, r2, r3, r4, r5, r6] {
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            response.text
        );
        assert_eq!(response.header("retry-after"), Some("1"));
        assert_eq!(response.reasons(), [("UNAVAILABLE".to_owned(), None)]);
    }
    assert!(
        elapsed < std::time::Duration::from_millis(2500),
        "{elapsed:?}"
    );

    locker.batch_execute("COMMIT").await.unwrap();
    let started = std::time::Instant::now();
    for _ in 0..8 {
        let response = server.get(&path, &admin).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// SPEC §8: `/metrics` in the Prometheus (`OpenMetrics`) text format, route templates and
/// bounded values as labels — never an id, however many are requested.
#[tokio::test]
async fn metrics_count_requests_by_route_template_with_bounded_labels() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for n in 0..20 {
        let id = format!("sa-metrics-{n}");
        server.create_sa(&admin, &id).await;
        assert_eq!(
            server.get(&format!("{BASE}/{id}"), &admin).await.status,
            StatusCode::OK
        );
        let missing = server.get(&format!("{BASE}/sa-missing-{n}"), &admin).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let unrouted = server
            .call(Method::GET, &format!("/nowhere/{n}"), None, None, &[])
            .await;
        assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    }
    let refused = server
        .call(
            Method::POST,
            "/v1/regions/global/auth/token",
            None,
            Some(&serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": "nobody@acme.iam",
                "client_secret": "wrong",
            })),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let scrape = server.call(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert!(
        scrape
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        scrape.header("content-type")
    );
    let text = &scrape.text;
    let route = "/v1/regions/global/iam/service-accounts/{id}";
    for line in [
        format!(r#"http_requests_total{{method="GET",route="{route}",status="200"}} 20"#),
        format!(r#"http_requests_total{{method="GET",route="{route}",status="404"}} 20"#),
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 20"#.to_owned(),
        format!(r#"http_request_duration_seconds_count{{method="GET",route="{route}"}} 40"#),
        r#"iam_token_mints_total{outcome="invalid_client"} 1"#.to_owned(),
        r#"iam_db_pool_connections{state="max"} 4"#.to_owned(),
        format!(
            r#"iam_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(text.contains("iam_usage_flush_lag_seconds "), "{text}");
    assert!(
        !text.contains("sa-metrics") && !text.contains("sa-missing") && !text.contains("nowhere")
    );
    // 60 requests to distinct ids and paths, a handful of series.
    let request_series = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .count();
    assert!(request_series <= 6, "{request_series} series:\n{text}");
}

/// The Grafana dashboard (`deploy/grafana/iam.json`) queries only series a real scrape has.
#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_exists_in_a_scrape() {
    let server = TestServer::start().await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-dashboard").await;
    let mint = serde_json::json!({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"});
    server
        .call(
            Method::POST,
            "/v1/regions/global/auth/token",
            None,
            Some(&mint),
            &[],
        )
        .await;
    let scrape = server
        .call(Method::GET, "/metrics", None, None, &[])
        .await
        .text;

    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/iam.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let names: std::collections::BTreeSet<&str> = exprs
        .iter()
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')))
        .filter(|token| token.starts_with("http_") || token.starts_with("iam_"))
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let present = scrape.lines().any(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        });
        assert!(
            present,
            "the dashboard queries {name}, which the scrape lacks:\n{scrape}"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(expr) if key == "expr" => exprs.push(expr.clone()),
                    other => collect_exprs(other, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, exprs)),
        _ => {}
    }
}
