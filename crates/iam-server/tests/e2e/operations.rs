//! Request ids, health, readiness, the OpenAPI document and unknown routes.

use reqwest::{Method, StatusCode};

use crate::support::{BASE, TestServer};

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
    let server = iam_server::app::build(&config, iam_server::clock::SystemClock, listener).unwrap();
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
    use std::process::{Command, Stdio};

    let db = iam_postgres::test_support::TestDatabase::create_unmigrated().await;
    let state_dir =
        std::env::temp_dir().join(format!("iam-e2e-bin-{}", uuid::Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = env!("CARGO_BIN_EXE_iam-server");
    let command = |args: &[&str]| {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env("DATABASE_URL", db.url())
            .env("IAM_DEV_STATE_DIR", &state_dir)
            .env("IAM_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("IAM_WORKERS", "1")
            .env("IAM_LOG", "warn");
        command
    };
    let run = |args: &[&str]| {
        let output = command(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["migrate"]);
    run(&[
        "directory",
        "apply",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/examples/directory.toml"
        ),
    ]);
    let token = run(&[
        "token", "mint", "--tenant", "org-acme", "--sub", "ops", "--roles", "admin",
    ]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "stdout is exactly one JWT");

    let mut server = command(&["serve"]).stdout(Stdio::null()).spawn().unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            ready = r.status() == StatusCode::OK;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "the server became ready");
    let listed = client
        .get(format!("{url}{BASE}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut exit = None;
    for _ in 0..100 {
        if let Some(status) = server.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let Some(exit) = exit else {
        server.kill().unwrap();
        panic!("the server did not stop within 5 s of SIGTERM");
    };
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
    std::fs::remove_dir_all(&state_dir).unwrap();
}
