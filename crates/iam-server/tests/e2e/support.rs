//! A real server on port 0, on a fresh database, with a controllable clock, and an HTTP client.

use std::collections::HashMap;
use std::net::TcpListener;

use iam_domain::ports::Clock;
use iam_domain::{OrgId, PrincipalKind, RoleSlug, Scope};
use iam_http::jwt::{AccessClaims, Audience, Ed25519Key, TokenSigner};
use iam_postgres::test_support::TestDatabase;
use iam_server::config::Config;
use iam_server::token::{MintRequest, mint};
use iam_server::{app, directory_file, keys};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

pub const BASE: &str = "/v1/regions/global/iam/service-accounts";

/// The clock the tests move by hand: the domain's fake clock, started at the real time.
pub type TestClock = iam_domain::fakes::FixedClock;

fn test_clock() -> TestClock {
    #[expect(clippy::disallowed_methods, reason = "seeding the test clock")]
    let now = OffsetDateTime::now_utc();
    TestClock::new(now)
}

pub struct TestServer {
    pub db: TestDatabase,
    pub base_url: String,
    pub clock: TestClock,
    pub config: Config,
    key: Ed25519Key,
    client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    _state_dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `reason`s of an error envelope, with their fields.
    pub fn reasons(&self) -> Vec<(String, Option<String>)> {
        let body = self.json();
        assert_eq!(body["error"]["code"], self.status.as_u16(), "{}", self.text);
        body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["reason"].as_str().unwrap().to_owned(),
                    d["field"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A fresh database with the demo directory (`docs/examples/directory.toml`).
    pub async fn demo_database() -> TestDatabase {
        let db = TestDatabase::create().await;
        Self::apply_demo_directory(&db).await;
        db
    }

    async fn apply_demo_directory(db: &TestDatabase) {
        let specs = directory_file::parse(include_str!("../../../../docs/examples/directory.toml"))
            .unwrap();
        db.store()
            .apply_directory(&specs, false, &TestDatabase::operator())
            .await
            .unwrap();
    }

    pub async fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let db = TestDatabase::create().await;
        let state_dir =
            std::env::temp_dir().join(format!("iam-e2e-{}", uuid::Uuid::new_v4().simple()));
        let mut env: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), db.url().to_owned()),
            ("IAM_DEV_STATE_DIR".into(), state_dir.display().to_string()),
            ("IAM_WORKERS".into(), "2".into()),
            ("IAM_DB_MAX_CONNECTIONS".into(), "4".into()),
            ("IAM_SHUTDOWN_TIMEOUT_SECS".into(), "1".into()),
        ]);
        for (k, v) in extra_env {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_env(|k| env.get(k).cloned()).unwrap();
        Self::apply_demo_directory(&db).await;

        let clock = test_clock();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = app::build(&config, clock.clone(), listener).unwrap().server;
        let handle = server.handle();
        tokio::spawn(server);
        let key = keys::signing_key(&config).unwrap();
        Self {
            db,
            base_url: format!("http://{addr}"),
            clock,
            config,
            key,
            client: reqwest::Client::new(),
            handle,
            _state_dir: TempDir(state_dir),
        }
    }

    /// Another instance of the server on the same database, with the same configuration
    /// (keys, pepper) and clock: what a second replica behind a load balancer is.
    pub fn second_instance(&self) -> (String, actix_web::dev::ServerHandle) {
        self.instance_with(&self.config)
    }

    /// Another instance on the same database and clock, with `config`.
    pub fn instance_with(&self, config: &Config) -> (String, actix_web::dev::ServerHandle) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = app::build(config, self.clock.clone(), listener)
            .unwrap()
            .server;
        let handle = server.handle();
        tokio::spawn(server);
        (format!("http://{addr}"), handle)
    }

    /// A token signed with the server's key.
    pub fn token(&self, tenant: &str, subject: &str, roles: &[&str]) -> String {
        self.token_for(&MintRequest {
            tenant: OrgId::parse(tenant).unwrap(),
            subject: subject.into(),
            roles: roles.iter().map(|r| RoleSlug::parse(*r).unwrap()).collect(),
            scope: Scope::Organization,
            scope_id: None,
            ttl: Duration::minutes(15),
            kind: PrincipalKind::User,
        })
    }

    pub fn token_for(&self, request: &MintRequest) -> String {
        self.mint_with(&self.config, request)
    }

    /// A token signed with the server's key but the issuer and audience of `config`.
    pub fn mint_with(&self, config: &Config, request: &MintRequest) -> String {
        mint(config, &self.key, request, self.clock.now()).unwrap()
    }

    pub fn admin_request() -> MintRequest {
        MintRequest {
            tenant: OrgId::parse("org-acme").unwrap(),
            subject: "alice@acme.example".into(),
            roles: [
                "admin",
                "compute.deployer",
                "storage.writer",
                "storage.reader",
            ]
            .iter()
            .map(|r| RoleSlug::parse(*r).unwrap())
            .collect(),
            scope: Scope::Organization,
            scope_id: None,
            ttl: Duration::minutes(15),
            kind: PrincipalKind::User,
        }
    }

    pub fn token_signed_by(&self, key: &Ed25519Key, tenant: &str, roles: &[&str]) -> String {
        let request = MintRequest {
            tenant: OrgId::parse(tenant).unwrap(),
            subject: "mallory".into(),
            roles: roles.iter().map(|r| RoleSlug::parse(*r).unwrap()).collect(),
            scope: Scope::Organization,
            scope_id: None,
            ttl: Duration::minutes(15),
            kind: PrincipalKind::User,
        };
        mint(&self.config, key, &request, self.clock.now()).unwrap()
    }

    /// Claims as `token mint` would put them in an admin token issued now (for tests that
    /// then edit them).
    pub fn admin_claims(&self) -> AccessClaims {
        let now = self.clock.now().unix_timestamp();
        AccessClaims {
            sub: "alice@acme.example".into(),
            iss: self.config.issuer.clone(),
            aud: Audience::One(self.config.audience.clone()),
            exp: now + 900,
            iat: now,
            nbf: None,
            jti: uuid::Uuid::new_v4().to_string(),
            tenant_id: "org-acme".into(),
            scope: "organization".into(),
            scope_id: "org-acme".into(),
            roles: vec!["admin".into()],
            principal_type: "user".into(),
            credential_id: None,
        }
    }

    /// `claims` signed with the server's key (or `key`).
    pub fn sign(&self, claims: &AccessClaims, key: Option<&Ed25519Key>) -> String {
        TokenSigner::new(key.unwrap_or(&self.key))
            .unwrap()
            .sign(claims)
            .unwrap()
    }

    /// An admin of org-acme holding every role of its catalog.
    pub fn admin(&self) -> String {
        self.token_for(&Self::admin_request())
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Response {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.call(Method::POST, path, Some(token), Some(body), &[])
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Response {
        self.call(Method::PATCH, path, Some(token), Some(body), &[])
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.call(Method::DELETE, path, Some(token), None, &[])
            .await
    }

    /// Creates `id` in org-acme's organization scope and asserts 201.
    pub async fn create_sa(&self, token: &str, id: &str) -> Value {
        let response = self
            .post(
                BASE,
                token,
                &serde_json::json!({"id": id, "displayName": id, "scope": "organization", "scopeId": "org-acme"}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        response.json()
    }
}

impl Drop for TestServer {
    /// Stops the server's workers before the database is dropped (`stop` sends the command
    /// when called; the returned future only waits for completion).
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The real `iam-server` binary, run as a child process against a database.
pub struct BinaryServer {
    pub url: String,
    child: Option<std::process::Child>,
    port: u16,
    database_url: String,
    env: Vec<(String, String)>,
    state_dir: TempDir,
}

impl BinaryServer {
    /// Prepares (does not start) a server on a free port with its own development state dir.
    pub fn new(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let state_dir =
            std::env::temp_dir().join(format!("iam-bin-{}", uuid::Uuid::new_v4().simple()));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child: None,
            port,
            database_url: database_url.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            state_dir: TempDir(state_dir),
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_iam-server"));
        command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("IAM_DEV_STATE_DIR", &self.state_dir.0)
            .env("IAM_LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("IAM_WORKERS", "1")
            .env("IAM_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Runs a CLI subcommand that must fail; returns what it wrote to stderr.
    pub fn run_failing(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let output = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    }

    /// Runs a CLI subcommand to completion and returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Starts `serve` (stdout and stderr go to a log file) and waits until `/readyz`
    /// answers 200.
    pub async fn serve(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = self
            .command(&["serve"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }

    fn log_path(&self) -> std::path::PathBuf {
        std::fs::create_dir_all(&self.state_dir.0).unwrap();
        self.state_dir.0.join("server.log")
    }

    /// Sends SIGTERM, waits (at most 10 s) for the exit, and returns the exit status with
    /// everything the server wrote.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, std::fs::read_to_string(self.log_path()).unwrap());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        child.kill().unwrap();
        panic!("the server did not stop within 10 s of SIGTERM");
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
