//! Workload identity federation over real HTTP (SPEC §9), against an in-process fake OIDC
//! issuer (`iam_oidc::testing::FakeIssuer`: discovery, JWKS with RSA, EC and Ed25519 keys, a
//! switch to take it down, a count of JWKS fetches); and the external user-token issuer's
//! JWKS by URL (`IAM_EXTERNAL_JWKS_URL`) with RS256 and ES256 keys.

use std::time::Duration as StdDuration;

use iam_domain::ports::Clock as _;
use iam_oidc::testing::{FakeAlg, FakeIssuer};
use iam_postgres::test_support::TestDatabase;
use iam_server::directory_file;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{BASE, Response, TestServer};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SUBJECT: &str = "system:serviceaccount:ci:deployer";
const AUDIENCE: &str = "https://iam.acme.example";

fn federated(sa: &str) -> String {
    format!("{BASE}/{sa}/federated-credentials")
}

/// Lets org-acme trust `issuer` (by discovery, or by `jwks_uri`).
async fn trust(server: &TestServer, issuer: &str, jwks_uri: Option<&str>) {
    let jwks = jwks_uri.map_or(String::new(), |uri| format!("jwksUri = \"{uri}\"\n"));
    let text = format!(
        "[[organizations]]\nid = \"org-acme\"\nslug = \"acme\"\n\
         [[organizations.trustedIssuers]]\nissuer = \"{issuer}\"\n{jwks}"
    );
    let specs = directory_file::parse(&text).unwrap();
    server
        .db
        .store()
        .apply_directory(&specs, false, &TestDatabase::operator())
        .await
        .unwrap();
}

/// A server, a fake issuer org-acme trusts (by its JWKS URL), and `sa-ci` federated with the
/// issuer's `SUBJECT` for `AUDIENCE`; returns the federated credential.
async fn world() -> (TestServer, FakeIssuer, Value) {
    world_with(&[]).await
}

/// [`world`] with extra server environment.
async fn world_with(env: &[(&str, &str)]) -> (TestServer, FakeIssuer, Value) {
    let server = TestServer::start_with(env).await;
    let issuer = FakeIssuer::start().await;
    trust(&server, &issuer.issuer(), Some(&issuer.jwks_uri())).await;
    server.create_sa(&server.admin(), "sa-ci").await;
    let created = server
        .post(
            &federated("sa-ci"),
            &server.admin(),
            &json!({"issuer": issuer.issuer(), "subject": SUBJECT, "audiences": [AUDIENCE]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    (server, issuer, created.json())
}

/// Claims of a workload token of `issuer` for `sub` and `aud`, valid for 10 minutes.
fn claims(server: &TestServer, issuer: &FakeIssuer, sub: &str, aud: &str) -> Value {
    let now = server.clock.now().unix_timestamp();
    json!({"iss": issuer.issuer(), "sub": sub, "aud": [aud], "iat": now, "exp": now + 600})
}

/// `POST /oauth2/token` with `client_assertion`.
async fn exchange_form(server: &TestServer, client_id: &str, assertion: &str) -> Response {
    let response = reqwest::Client::new()
        .post(format!("{}/oauth2/token", server.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    Response {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// The JSON token endpoint with `client_assertion`.
async fn exchange_json(server: &TestServer, client_id: &str, assertion: &str) -> Response {
    let body = json!({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    });
    server
        .call(
            Method::POST,
            "/v1/regions/global/auth/token",
            None,
            Some(&body),
            &[],
        )
        .await
}

async fn introspect(server: &TestServer, token: &str) -> Value {
    server
        .post(
            "/v1/regions/global/auth/introspect",
            &server.admin(),
            &json!({ "token": token }),
        )
        .await
        .json()
}

#[tokio::test]
async fn federated_credentials_are_created_read_listed_and_deleted_by_admins_only() {
    let server = TestServer::start().await;
    let issuer = FakeIssuer::start().await;
    trust(&server, &issuer.issuer(), None).await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;

    // Defaults: the audience is this service's issuer URL.
    let body = json!({"issuer": issuer.issuer(), "subject": SUBJECT, "description": "CI"});
    let created = server.post(&federated("sa-ci"), &admin, &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let fc = created.json();
    let id = fc["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("fc-"), "{id}");
    assert_eq!(fc["audiences"], json!([server.config.issuer]));
    assert_eq!(fc["serviceAccountId"], "sa-ci");
    assert_eq!(fc["lastUsedAt"], Value::Null);
    let path = format!("{}/{id}", federated("sa-ci"));
    assert_eq!(created.header("location"), Some(path.as_str()));
    assert_eq!(fc["selfLink"], path.as_str());
    assert_eq!(server.get(&path, &admin).await.json(), fc);
    let listed = server.get(&federated("sa-ci"), &admin).await.json();
    assert_eq!(listed["federatedCredentials"], json!([fc]));

    // An untrusted issuer, a bad body, a non-admin, a limited admin.
    let untrusted = server
        .post(
            &federated("sa-ci"),
            &admin,
            &json!({"issuer": "https://evil.example", "subject": SUBJECT}),
        )
        .await;
    assert_eq!(untrusted.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        untrusted.reasons(),
        [("ISSUER_NOT_TRUSTED".into(), Some("issuer".into()))]
    );
    let bad = server
        .post(
            &federated("sa-ci"),
            &admin,
            &json!({"issuer": issuer.issuer(), "subject": "a b", "audiences": [], "x": 1}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let fields: Vec<Option<String>> = bad.reasons().into_iter().map(|(_, f)| f).collect();
    for field in ["subject", "audiences", "x"] {
        assert!(
            fields.contains(&Some(field.into())),
            "{field}: {}",
            bad.text
        );
    }
    let viewer = server.token("org-acme", "bob", &["compute.deployer"]);
    for response in [
        server.get(&federated("sa-ci"), &viewer).await,
        server.get(&path, &viewer).await,
        server.post(&federated("sa-ci"), &viewer, &body).await,
        server.delete(&path, &viewer).await,
        server.get(&federated("sa-none"), &admin).await,
    ] {
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{}", response.text);
    }
    let other_tenant = server.token("org-globex", "eve", &["admin"]);
    assert_eq!(
        server.get(&path, &other_tenant).await.status,
        StatusCode::NOT_FOUND
    );
    let strong = server
        .post(
            BASE,
            &admin,
            &json!({"id": "sa-strong", "displayName": "s", "scope": "organization",
                    "scopeId": "org-acme", "roles": ["compute.deployer"]}),
        )
        .await;
    assert_eq!(strong.status, StatusCode::CREATED);
    let limited = server.token("org-acme", "carol", &["admin"]);
    let refused = server.post(&federated("sa-strong"), &limited, &body).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.reasons(),
        [("ROLE_NOT_HELD".into(), Some("roles[0]".into()))]
    );

    // Delete, then gone.
    assert_eq!(
        server.delete(&path, &admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get(&path, &admin).await.status,
        StatusCode::NOT_FOUND
    );
    let actions: Vec<String> = server
        .db
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.resource.contains("/federated-credentials/"))
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        ["federated_credential.create", "federated_credential.delete"]
    );
}

#[tokio::test]
async fn twenty_federated_credentials_per_account_and_idempotent_creates_replay() {
    let server = TestServer::start().await;
    let issuer = FakeIssuer::start().await;
    trust(&server, &issuer.issuer(), None).await;
    let admin = server.admin();
    server.create_sa(&admin, "sa-ci").await;
    let body = |i: usize| json!({"issuer": issuer.issuer(), "subject": format!("sub-{i}")});
    let key = [("Idempotency-Key", "fc-once")];
    let first = server
        .call(
            Method::POST,
            &federated("sa-ci"),
            Some(&admin),
            Some(&body(0)),
            &key,
        )
        .await;
    let replay = server
        .call(
            Method::POST,
            &federated("sa-ci"),
            Some(&admin),
            Some(&body(0)),
            &key,
        )
        .await;
    assert_eq!(
        (first.status, replay.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(first.text, replay.text);
    for i in 1..20 {
        let created = server.post(&federated("sa-ci"), &admin, &body(i)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{i}: {}", created.text);
    }
    let over = server.post(&federated("sa-ci"), &admin, &body(20)).await;
    assert_eq!(over.status, StatusCode::CONFLICT);
    assert_eq!(
        over.reasons(),
        [("FEDERATED_CREDENTIAL_LIMIT_REACHED".into(), None)]
    );
    let page = server
        .get(&format!("{}?pageSize=15", federated("sa-ci")), &admin)
        .await
        .json();
    assert_eq!(page["federatedCredentials"].as_array().unwrap().len(), 15);
    let token = page["nextPageToken"].as_str().unwrap();
    let rest = server
        .get(&format!("{}?pageToken={token}", federated("sa-ci")), &admin)
        .await
        .json();
    assert_eq!(rest["federatedCredentials"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_workload_token_signed_rs256_es256_or_eddsa_becomes_an_access_token() {
    let (server, issuer, fc) = world().await;
    for (alg, form) in [
        (FakeAlg::Rs256, true),
        (FakeAlg::Es256, false),
        (FakeAlg::EdDsa, true),
    ] {
        let assertion = issuer.sign(alg, &claims(&server, &issuer, SUBJECT, AUDIENCE));
        let response = if form {
            exchange_form(&server, "sa-ci@acme.iam", &assertion).await
        } else {
            exchange_json(&server, "sa-ci@acme.iam", &assertion).await
        };
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{alg:?}: {}",
            response.text
        );
        let token = response.json()["access_token"].as_str().unwrap().to_owned();
        let claims = introspect(&server, &token).await;
        assert_eq!(claims["active"], true, "{claims}");
        assert_eq!(claims["credential_id"], fc["id"]);
        assert_eq!(claims["sub"], "sa-ci@acme.iam");
        assert_eq!(claims["principal_type"], "service_account");
    }
    // The keys were fetched once for all of it, and the use is recorded.
    assert_eq!(issuer.fetches(), 1);
    let path = format!("{}/{}", federated("sa-ci"), fc["id"].as_str().unwrap());
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = server.get(&path, &server.admin()).await.json();
        if seen["lastUsedAt"].is_string() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(seen["lastUsedAt"].is_string(), "{seen}");
}

#[tokio::test]
async fn discovery_finds_the_keys_and_ten_exchanges_fetch_them_at_most_once() {
    let server = TestServer::start().await;
    let issuer = FakeIssuer::start().await;
    trust(&server, &issuer.issuer(), None).await;
    server.create_sa(&server.admin(), "sa-ci").await;
    let body = json!({"issuer": issuer.issuer(), "subject": SUBJECT, "audiences": [AUDIENCE]});
    let created = server
        .post(&federated("sa-ci"), &server.admin(), &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    for _ in 0..10 {
        let assertion = issuer.sign(FakeAlg::Rs256, &claims(&server, &issuer, SUBJECT, AUDIENCE));
        let response = exchange_form(&server, "sa-ci@acme.iam", &assertion).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    }
    assert!(issuer.fetches() <= 1, "{} fetches", issuer.fetches());
}

#[tokio::test]
async fn every_refused_workload_token_gets_one_indistinguishable_invalid_client() {
    // More failures than the failed-mint throttle allows by default.
    let (server, issuer, _) = world_with(&[
        ("IAM_MINT_FAILURE_LIMIT", "1000"),
        ("IAM_MINT_FAILURE_LIMIT_PER_IP", "1000"),
    ])
    .await;
    let stranger = FakeIssuer::start().await;
    let now = server.clock.now().unix_timestamp();
    let good = claims(&server, &issuer, SUBJECT, AUDIENCE);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        edit(&mut claims);
        claims
    };
    let refused = [
        ("wrong sub", issuer.sign(FakeAlg::Rs256, &with(&|c| c["sub"] = "system:serviceaccount:ci:other".into()))),
        ("sub differing in case", issuer.sign(FakeAlg::Rs256, &with(&|c| c["sub"] = SUBJECT.to_uppercase().into()))),
        ("wrong aud", issuer.sign(FakeAlg::Es256, &with(&|c| c["aud"] = json!(["https://elsewhere"])))),
        ("untrusted iss", stranger.sign(FakeAlg::Rs256, &json!({"iss": stranger.issuer(), "sub": SUBJECT, "aud": AUDIENCE, "exp": now + 600}))),
        ("iss of another issuer", stranger.sign(FakeAlg::Es256, &with(&|_| {}))),
        ("expired", issuer.sign(FakeAlg::Rs256, &with(&|c| c["exp"] = (now - 120).into()))),
        ("no exp", issuer.sign(FakeAlg::EdDsa, &with(&|c| { c.as_object_mut().unwrap().remove("exp"); }))),
        ("forged signature", issuer.forge(FakeAlg::Rs256, &good)),
        ("unknown kid", issuer.sign_unknown_kid(FakeAlg::Es256, &good)),
        ("not a JWT", "not.a.jwt".to_owned()),
    ];
    let mut bodies = Vec::new();
    for (what, assertion) in &refused {
        let form = exchange_form(&server, "sa-ci@acme.iam", assertion).await;
        assert_eq!(
            form.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            form.text
        );
        assert_eq!(form.json()["error"], "invalid_client", "{what}");
        bodies.push(form.text);
        let json = exchange_json(&server, "sa-ci@acme.iam", assertion).await;
        assert_eq!(
            json.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            json.text
        );
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one body for every refusal: {bodies:?}");
    // The right token for another account, and an unknown client, are refused alike.
    let assertion = issuer.sign(FakeAlg::Rs256, &good);
    server.create_sa(&server.admin(), "sa-other").await;
    for client in ["sa-other@acme.iam", "sa-none@acme.iam", "not a client id"] {
        let response = exchange_form(&server, client, &assertion).await;
        assert_eq!(
            (response.status, response.text.clone()),
            (StatusCode::UNAUTHORIZED, bodies[0].clone())
        );
    }
}

#[tokio::test]
async fn an_issuer_down_before_its_keys_were_fetched_means_invalid_client_never_a_500() {
    let (server, issuer, _) = world().await;
    issuer.set_down(true);
    let assertion = issuer.sign(FakeAlg::Rs256, &claims(&server, &issuer, SUBJECT, AUDIENCE));
    for _ in 0..3 {
        let response = exchange_form(&server, "sa-ci@acme.iam", &assertion).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            response.text
        );
        let response = exchange_json(&server, "sa-ci@acme.iam", &assertion).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            response.text
        );
    }
    // A down issuer is not hammered: one attempt within the failure backoff.
    assert_eq!(issuer.fetches(), 1);
    let scrape = server
        .call(Method::GET, "/metrics", None, None, &[])
        .await
        .text;
    assert!(
        scrape.contains("iam_jwks_fetches_total{outcome=\"failed\"} 1"),
        "{scrape}"
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_at_once_but_unknown_kids_refetch_at_most_every_thirty_seconds() {
    let (server, issuer, _) = world().await;
    let claims = claims(&server, &issuer, SUBJECT, AUDIENCE);
    let token = issuer.sign(FakeAlg::Es256, &claims);
    let first = exchange_form(&server, "sa-ci@acme.iam", &token).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(issuer.fetches(), 1);

    // The issuer rotates: the first token with the new kid makes the keys be fetched again.
    issuer.rotate(FakeAlg::Es256);
    let rotated = exchange_form(
        &server,
        "sa-ci@acme.iam",
        &issuer.sign(FakeAlg::Es256, &claims),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_eq!(issuer.fetches(), 2);

    // Tokens naming kids nobody publishes cannot make the service hammer the issuer: within
    // 30 s of that refetch they are refused from the cache.
    for _ in 0..5 {
        let unknown = issuer.sign_unknown_kid(FakeAlg::Es256, &claims);
        let refused = exchange_form(&server, "sa-ci@acme.iam", &unknown).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn deleting_the_federated_credential_or_disabling_the_account_stops_its_tokens() {
    let (server, issuer, fc) = world().await;
    let mint = async || {
        let assertion = issuer.sign(FakeAlg::Rs256, &claims(&server, &issuer, SUBJECT, AUDIENCE));
        exchange_form(&server, "sa-ci@acme.iam", &assertion).await
    };
    let token = mint().await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(introspect(&server, &token).await["active"], true);

    let disabled = server
        .patch(
            &format!("{BASE}/sa-ci"),
            &server.admin(),
            &json!({"status": "disabled"}),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text);
    assert_eq!(introspect(&server, &token).await, json!({"active": false}));
    assert_eq!(mint().await.status, StatusCode::UNAUTHORIZED);
    let enabled = server
        .patch(
            &format!("{BASE}/sa-ci"),
            &server.admin(),
            &json!({"status": "active"}),
        )
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.text);
    assert_eq!(introspect(&server, &token).await["active"], true);

    let path = format!("{}/{}", federated("sa-ci"), fc["id"].as_str().unwrap());
    assert_eq!(
        server.delete(&path, &server.admin()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(introspect(&server, &token).await, json!({"active": false}));
    assert_eq!(mint().await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_standard_oauth2_client_can_send_a_workload_token() {
    use oauth2::basic::BasicClient;
    use oauth2::{AuthType, ClientId, TokenResponse, TokenUrl};

    let (server, issuer, _) = world().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = BasicClient::new(ClientId::new("sa-ci@acme.iam".into()))
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", server.base_url)).unwrap())
        .set_auth_type(AuthType::RequestBody);
    let assertion = issuer.sign(FakeAlg::Rs256, &claims(&server, &issuer, SUBJECT, AUDIENCE));
    let token = client
        .exchange_client_credentials()
        .add_extra_param("client_assertion_type", JWT_BEARER)
        .add_extra_param("client_assertion", assertion)
        .request_async(&http)
        .await
        .unwrap();
    let claims = introspect(&server, token.access_token().secret()).await;
    assert_eq!(claims["active"], true, "{claims}");
}

#[tokio::test]
async fn a_token_request_uses_one_client_authentication_method() {
    let (server, issuer, _) = world().await;
    let assertion = issuer.sign(FakeAlg::Rs256, &claims(&server, &issuer, SUBJECT, AUDIENCE));
    let both = server
        .call(
            Method::POST,
            "/v1/regions/global/auth/token",
            None,
            Some(
                &json!({"grant_type": "client_credentials", "client_id": "sa-ci@acme.iam",
                         "client_secret": "plt_cs_x", "client_assertion_type": "urn:other",
                         "client_assertion": assertion}),
            ),
            &[],
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    let fields: Vec<Option<String>> = both.reasons().into_iter().map(|(_, f)| f).collect();
    assert_eq!(
        fields,
        [
            Some("client_secret".into()),
            Some("client_assertion_type".into())
        ]
    );
    let form = reqwest::Client::new()
        .post(format!("{}/oauth2/token", server.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sa-ci@acme.iam"),
            ("client_secret", "plt_cs_x"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        form.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
}

/// Claims of a user token of the external issuer for org-acme's admin.
fn user_claims(server: &TestServer, issuer: &FakeIssuer) -> Value {
    let now = server.clock.now().unix_timestamp();
    json!({
        "iss": issuer.issuer(), "sub": "alice@idp", "aud": server.config.audience,
        "iat": now, "exp": now + 600, "jti": "idp-1", "tenant_id": "org-acme",
        "scope": "organization", "scope_id": "org-acme", "roles": ["admin"],
        "principal_type": "user",
    })
}

#[tokio::test]
async fn user_tokens_of_an_external_issuer_signed_rs256_or_es256_are_trusted_by_jwks_url() {
    let issuer = FakeIssuer::start().await;
    let server = TestServer::start_with(&[
        ("IAM_EXTERNAL_ISSUER", &issuer.issuer()),
        ("IAM_EXTERNAL_JWKS_URL", &issuer.jwks_uri()),
    ])
    .await;
    for alg in [FakeAlg::Rs256, FakeAlg::Es256, FakeAlg::EdDsa] {
        let token = issuer.sign(alg, &user_claims(&server, &issuer));
        let listed = server.get(BASE, &token).await;
        assert_eq!(listed.status, StatusCode::OK, "{alg:?}: {}", listed.text);
    }
    assert_eq!(issuer.fetches(), 1);
    // Its tokens may not pose as this service's service accounts, nor be forged.
    let mut posing = user_claims(&server, &issuer);
    posing["principal_type"] = "service_account".into();
    posing["credential_id"] = "cred-x".into();
    let refused = [
        issuer.sign(FakeAlg::Rs256, &posing),
        issuer.forge(FakeAlg::Rs256, &user_claims(&server, &issuer)),
    ];
    for token in refused {
        assert_eq!(
            server.get(BASE, &token).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn an_unreachable_external_jwks_url_means_401_never_a_500() {
    let issuer = FakeIssuer::start().await;
    issuer.set_down(true);
    let server = TestServer::start_with(&[
        ("IAM_EXTERNAL_ISSUER", &issuer.issuer()),
        ("IAM_EXTERNAL_JWKS_URL", &issuer.jwks_uri()),
    ])
    .await;
    let token = issuer.sign(FakeAlg::Rs256, &user_claims(&server, &issuer));
    let response = server.get(BASE, &token).await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.text
    );
    // This service's own tokens keep working.
    assert_eq!(
        server.get(BASE, &server.admin()).await.status,
        StatusCode::OK
    );
}
