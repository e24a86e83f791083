//! The token service: minting (k0rdent JSON and standard OAuth2), service-account tokens as
//! API callers with immediate effect of disable/delete/revoke, introspection, key rotation,
//! last use, JWKS and metadata.

use std::time::Duration as StdDuration;

use iam_domain::ports::Clock as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::Duration;

use crate::support::{BASE, Response, TestServer};

const TOKEN: &str = "/v1/regions/global/auth/token";
const INTROSPECT: &str = "/v1/regions/global/auth/introspect";
const REVOKE: &str = "/v1/regions/global/auth/revoke";

/// `sa-bot@acme.iam`: an organization-scoped admin service account with one credential.
async fn bot(server: &TestServer) -> (String, String) {
    let admin = server.admin();
    let created = server
        .post(
            BASE,
            &admin,
            &json!({"id": "sa-bot", "displayName": "bot", "scope": "organization",
                                   "scopeId": "org-acme", "roles": ["admin", "compute.deployer"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let credential = server
        .post(&format!("{BASE}/sa-bot/credentials"), &admin, &json!({}))
        .await
        .json();
    (
        credential["clientSecret"].as_str().unwrap().to_owned(),
        credential["id"].as_str().unwrap().to_owned(),
    )
}

async fn mint(
    server: &TestServer,
    client_id: &str,
    secret: &str,
    narrowing: Option<Value>,
) -> Response {
    let mut body = json!({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret});
    if let Some(narrowing) = narrowing {
        body["scope_narrowing"] = narrowing;
    }
    server
        .call(Method::POST, TOKEN, None, Some(&body), &[])
        .await
}

async fn access_token(server: &TestServer, secret: &str) -> String {
    let minted = mint(server, "sa-bot@acme.iam", secret, None).await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.text);
    minted.json()["access_token"].as_str().unwrap().to_owned()
}

async fn introspect(server: &TestServer, token: &str) -> Value {
    let response = server
        .call(
            Method::POST,
            INTROSPECT,
            Some(&server.admin()),
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.json()
}

#[tokio::test]
async fn a_minted_token_carries_the_accounts_claims_and_manages_service_accounts() {
    let server = TestServer::start().await;
    let (secret, credential) = bot(&server).await;
    let minted = mint(&server, "sa-bot@acme.iam", &secret, None).await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.text);
    assert_eq!(minted.header("cache-control"), Some("no-store"));
    let body = minted.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();

    let claims = introspect(&server, token).await;
    assert_eq!(claims["active"], true);
    assert_eq!(claims["sub"], "sa-bot@acme.iam");
    assert_eq!(claims["principal_type"], "service_account");
    assert_eq!(claims["credential_id"], credential);
    assert_eq!(claims["tenant_id"], "org-acme");
    assert_eq!(claims["roles"], json!(["admin", "compute.deployer"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());

    // An admin service account manages service accounts; scope-down applies to it too.
    let created = server
        .post(BASE, token, &json!({"id": "sa-child", "displayName": "c", "scope": "project", "scopeId": "web", "roles": ["compute.deployer"]}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["createdBy"], "sa-bot@acme.iam");
    let beyond = server
        .post(BASE, token, &json!({"displayName": "c", "scope": "project", "scopeId": "web", "roles": ["storage.writer"]}))
        .await;
    assert_eq!(
        beyond.reasons(),
        [("ROLE_NOT_HELD".to_owned(), Some("roles[0]".to_owned()))]
    );
}

#[tokio::test]
async fn every_rejected_mint_gets_one_and_the_same_401() {
    let server = TestServer::start().await;
    let (secret, credential) = bot(&server).await;
    let admin = server.admin();
    let mut typo = secret.clone().into_bytes();
    let i = typo.len() - 9;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let wrong = iam_domain::ClientSecret::generate(
        &iam_domain::CredentialId::parse(credential.clone()).unwrap(),
        &[1; 32],
    );

    let mut bodies = Vec::new();
    for (client, candidate) in [
        ("nobody@acme.iam", secret.as_str()),
        ("sa-bot@acme.iam", wrong.expose()),
        ("sa-bot@acme.iam", typo.as_str()),
        ("sa-bot@acme.iam", "plt_cs_not-a-secret"),
        ("sa-child@acme.iam", secret.as_str()),
    ] {
        let r = mint(&server, client, candidate, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{client}");
        bodies.push(r.text);
    }
    // Disabled account.
    server
        .patch(
            &format!("{BASE}/sa-bot"),
            &admin,
            &json!({"status": "disabled"}),
        )
        .await;
    bodies.push(mint(&server, "sa-bot@acme.iam", &secret, None).await.text);
    server
        .patch(
            &format!("{BASE}/sa-bot"),
            &admin,
            &json!({"status": "active"}),
        )
        .await;
    assert_eq!(
        mint(&server, "sa-bot@acme.iam", &secret, None).await.status,
        StatusCode::OK
    );
    // Expired credential (the clock passes its 90-day default lifetime).
    let short = server
        .post(&format!("{BASE}/sa-bot/credentials"), &admin, &json!({"expiresAt": (server.clock.now() + Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap()}))
        .await
        .json();
    let short_secret = short["clientSecret"].as_str().unwrap().to_owned();
    assert_eq!(
        mint(&server, "sa-bot@acme.iam", &short_secret, None)
            .await
            .status,
        StatusCode::OK
    );
    server.clock.advance(Duration::hours(2));
    bodies.push(
        mint(&server, "sa-bot@acme.iam", &short_secret, None)
            .await
            .text,
    );
    // Deleted credential.
    let admin = server.admin();
    server
        .delete(&format!("{BASE}/sa-bot/credentials/{credential}"), &admin)
        .await;
    bodies.push(mint(&server, "sa-bot@acme.iam", &secret, None).await.text);

    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one indistinguishable body: {bodies:?}");
    assert!(bodies[0].contains("INVALID_CLIENT"));
}

#[tokio::test]
async fn bad_requests_unsupported_grants_and_wide_narrowing_are_refused() {
    let server = TestServer::start().await;
    let (secret, _) = bot(&server).await;
    let grant = server
        .call(Method::POST, TOKEN, None, Some(&json!({"grant_type": "password", "client_id": "sa-bot@acme.iam", "client_secret": secret})), &[])
        .await;
    assert_eq!(grant.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        grant.reasons(),
        [(
            "UNSUPPORTED_GRANT_TYPE".to_owned(),
            Some("grant_type".to_owned())
        )]
    );
    let missing = server
        .call(
            Method::POST,
            TOKEN,
            None,
            Some(&json!({"grant_type": "client_credentials"})),
            &[],
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.reasons().len(), 2);
    let wide = mint(
        &server,
        "sa-bot@acme.iam",
        &secret,
        Some(json!({"roles": ["storage.writer"]})),
    )
    .await;
    assert_eq!(wide.status, StatusCode::FORBIDDEN);
    let narrow = mint(
        &server,
        "sa-bot@acme.iam",
        &secret,
        Some(json!({"scope": "project", "scopeId": "web", "roles": ["compute.deployer"]})),
    )
    .await;
    assert_eq!(narrow.status, StatusCode::OK);
    let claims = introspect(&server, narrow.json()["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (claims["scope"].as_str(), claims["scope_id"].as_str()),
        (Some("project"), Some("web"))
    );
    assert_eq!(claims["roles"], json!(["compute.deployer"]));
    // A narrowed token is not a tenant admin any more.
    let narrowed = narrow.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get(BASE, &narrowed).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn disable_delete_and_revoke_take_effect_on_the_very_next_request() {
    let server = TestServer::start().await;
    let (secret, credential) = bot(&server).await;
    let admin = server.admin();
    let token = access_token(&server, &secret).await;
    assert_eq!(server.get(BASE, &token).await.status, StatusCode::OK);

    server
        .patch(
            &format!("{BASE}/sa-bot"),
            &admin,
            &json!({"status": "disabled"}),
        )
        .await;
    let refused = server.get(BASE, &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(introspect(&server, &token).await, json!({"active": false}));
    server
        .patch(
            &format!("{BASE}/sa-bot"),
            &admin,
            &json!({"status": "active"}),
        )
        .await;
    assert_eq!(
        server.get(BASE, &token).await.status,
        StatusCode::OK,
        "works again once re-enabled"
    );
    assert_eq!(introspect(&server, &token).await["active"], true);

    // Revocation: by the token itself.
    let revoked = server
        .call(
            Method::POST,
            REVOKE,
            Some(&token),
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(
        (revoked.status, revoked.json()),
        (StatusCode::OK, json!({"revoked": true}))
    );
    assert_eq!(
        server.get(BASE, &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(introspect(&server, &token).await, json!({"active": false}));

    // Deleting the credential kills its tokens and its secret.
    let second = access_token(&server, &secret).await;
    server
        .delete(&format!("{BASE}/sa-bot/credentials/{credential}"), &admin)
        .await;
    assert_eq!(
        server.get(BASE, &second).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mint(&server, "sa-bot@acme.iam", &secret, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // So does deleting the account, for the tokens of its other credentials.
    let other = server
        .post(&format!("{BASE}/sa-bot/credentials"), &admin, &json!({}))
        .await
        .json();
    let third = access_token(&server, other["clientSecret"].as_str().unwrap()).await;
    assert_eq!(server.get(BASE, &third).await.status, StatusCode::OK);
    server.delete(&format!("{BASE}/sa-bot"), &admin).await;
    assert_eq!(
        server.get(BASE, &third).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(introspect(&server, &third).await, json!({"active": false}));
}

/// Reads check liveness in the same round trip as the read, not before it: a dead token must
/// still get 401 — not the 400 of a bad parameter, the 404 of an account it may not see, or
/// the page itself — on every read route, whether or not its signature was cached.
#[tokio::test]
async fn a_dead_token_gets_401_on_every_read_route_before_any_other_answer() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (_, credential) = bot(&server).await;
    let viewer = server.token("org-acme", "bob", &["compute.deployer"]);
    let fc = format!("{BASE}/sa-bot/federated-credentials");
    let reads = [
        BASE.to_owned(),
        format!("{BASE}?pageSize=0"),
        format!("{BASE}?offset=0"),
        format!("{BASE}/sa-bot"),
        format!("{BASE}/sa-none"),
        format!("{BASE}/sa-bot/credentials"),
        format!("{BASE}/sa-bot/credentials?status=bogus"),
        format!("{BASE}/sa-bot/credentials/{credential}"),
        format!("{BASE}/sa-bot/credentials/cred-none"),
        fc.clone(),
        format!("{fc}?pageToken=forged"),
        format!("{fc}/fc-none"),
    ];
    // Live, each token gets what its rights say (the signature is now cached, too).
    for path in &reads {
        let live = server.get(path, &admin).await.status;
        assert_ne!(live, StatusCode::UNAUTHORIZED, "{path}");
        let status = server.get(path, &viewer).await.status;
        assert!(
            [
                StatusCode::NOT_FOUND,
                StatusCode::FORBIDDEN,
                StatusCode::BAD_REQUEST
            ]
            .contains(&status),
            "{path}: {status}"
        );
    }
    for token in [&admin, &viewer] {
        let revoked = server
            .call(
                Method::POST,
                REVOKE,
                Some(token),
                Some(&json!({"token": token})),
                &[],
            )
            .await;
        assert_eq!(revoked.status, StatusCode::OK);
        for path in &reads {
            let dead = server.get(path, token).await;
            assert_eq!(
                dead.status,
                StatusCode::UNAUTHORIZED,
                "{path}: {}",
                dead.text
            );
            assert_eq!(
                dead.header("www-authenticate"),
                Some("Bearer error=\"invalid_token\""),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn only_the_owner_or_a_tenant_admin_can_revoke_and_introspection_stays_in_the_tenant() {
    let server = TestServer::start().await;
    let (secret, _) = bot(&server).await;
    let token = access_token(&server, &secret).await;
    let bystander = server.token("org-acme", "bob", &["compute.deployer"]);
    let r = server
        .call(
            Method::POST,
            REVOKE,
            Some(&bystander),
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"revoked": true})),
        "same answer"
    );
    assert_eq!(
        server.get(BASE, &token).await.status,
        StatusCode::OK,
        "but nothing was revoked"
    );
    let foreign = server.token("org-globex", "gina", &["admin"]);
    let seen = server
        .call(
            Method::POST,
            INTROSPECT,
            Some(&foreign),
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(seen.json(), json!({"active": false}));
    let foreign_revoke = server
        .call(
            Method::POST,
            REVOKE,
            Some(&foreign),
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(foreign_revoke.json(), json!({"revoked": true}));
    assert_eq!(
        server.get(BASE, &token).await.status,
        StatusCode::OK,
        "another tenant's admin revoked nothing"
    );
    let garbage = server
        .call(
            Method::POST,
            INTROSPECT,
            Some(&bystander),
            Some(&json!({"token": "x.y.z"})),
            &[],
        )
        .await;
    assert_eq!(garbage.json(), json!({"active": false}));
    let no_auth = server
        .call(
            Method::POST,
            INTROSPECT,
            None,
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(no_auth.status, StatusCode::UNAUTHORIZED);
    // A tenant admin may revoke anyone's token of the tenant.
    server
        .call(
            Method::POST,
            REVOKE,
            Some(&server.admin()),
            Some(&json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(
        server.get(BASE, &token).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn last_use_shows_the_mint_within_a_few_seconds() {
    let server = TestServer::start().await;
    let (secret, credential) = bot(&server).await;
    let path = format!("{BASE}/sa-bot/credentials/{credential}");
    assert_eq!(
        server.get(&path, &server.admin()).await.json()["lastUsedAt"],
        Value::Null
    );
    access_token(&server, &secret).await;
    let mut seen = Value::Null;
    for _ in 0..40 {
        seen = server.get(&path, &server.admin()).await.json();
        if !seen["lastUsedAt"].is_null() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(seen["lastUsedAt"].is_string(), "{seen}");
    assert_eq!(seen["lastUsedIp"], "127.0.0.1");
}

#[tokio::test]
async fn a_standard_oauth2_client_gets_a_token_that_calls_the_api() {
    use oauth2::basic::BasicClient;
    use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};

    let server = TestServer::start().await;
    let (secret, _) = bot(&server).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new("sa-bot@acme.iam".into()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", server.base_url)).unwrap())
            .set_auth_type(auth);
        let token = client
            .exchange_client_credentials()
            .request_async(&http)
            .await
            .unwrap();
        let listed = server.get(BASE, token.access_token().secret()).await;
        assert_eq!(listed.status, StatusCode::OK);
        // A scope narrows the roles.
        let narrowed = client
            .exchange_client_credentials()
            .add_scope(Scope::new("compute.deployer".into()))
            .request_async(&http)
            .await
            .unwrap();
        let claims = introspect(&server, narrowed.access_token().secret()).await;
        assert_eq!(claims["roles"], json!(["compute.deployer"]));
    }
    let bad = BasicClient::new(ClientId::new("sa-bot@acme.iam".into()))
        .set_client_secret(ClientSecret::new("plt_cs_wrong".into()))
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", server.base_url)).unwrap());
    let error = bad
        .exchange_client_credentials()
        .request_async(&http)
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("invalid_client"), "{error:?}");
}

#[tokio::test]
async fn jwks_and_metadata_describe_the_issuer() {
    let server = TestServer::start().await;
    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None, &[])
        .await
        .json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let meta = server
        .call(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None,
            &[],
        )
        .await
        .json();
    assert_eq!(meta["issuer"], server.config.issuer);
    assert!(
        meta["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth2/token")
    );
    assert_eq!(meta["grant_types_supported"], json!(["client_credentials"]));
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_old_tokens_valid_until_they_expire() {
    let old = TestServer::start().await;
    let (secret, _) = bot(&old).await;
    let old_token = access_token(&old, &secret).await;
    // A new instance on the same database with a new signing key that still trusts the old one.
    let old_key = old.config.dev_state_dir.join("signing-key.pem");
    let new_dir =
        std::env::temp_dir().join(format!("iam-rotated-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&new_dir).unwrap();
    std::fs::copy(
        old.config.dev_state_dir.join("pepper"),
        new_dir.join("pepper"),
    )
    .unwrap();
    let mut config = old.config.clone();
    config.dev_state_dir = new_dir.clone();
    config.verification_key_files = vec![old_key];
    let (url, handle) = old.instance_with(&config);
    let client = reqwest::Client::new();
    let listed = client
        .get(format!("{url}{BASE}"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        StatusCode::OK,
        "the old key's token is still accepted"
    );
    let jwks: Value = client
        .get(format!("{url}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "both keys are published"
    );
    let minted: Value = client
        .post(format!("{url}{TOKEN}"))
        .json(&json!({"grant_type": "client_credentials", "client_id": "sa-bot@acme.iam", "client_secret": secret}))
        .send().await.unwrap().json().await.unwrap();
    let new_token = minted["access_token"].as_str().unwrap();
    assert_eq!(
        old.get(BASE, new_token).await.status,
        StatusCode::UNAUTHORIZED,
        "the old instance does not know the new key"
    );
    old.clock.advance(Duration::minutes(16));
    let expired = client
        .get(format!("{url}{BASE}"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expired.status(),
        StatusCode::UNAUTHORIZED,
        "until it expires"
    );
    drop(handle.stop(false));
    std::fs::remove_dir_all(new_dir).unwrap();
}

#[tokio::test]
async fn failed_mints_are_throttled_and_a_throttled_caller_is_refused_whatever_its_secret() {
    let server = TestServer::start_with(&[
        ("IAM_TRUSTED_PROXIES", "127.0.0.1"),
        ("IAM_MINT_FAILURE_LIMIT", "3"),
    ])
    .await;
    let (secret, credential) = bot(&server).await;
    let body = |secret: &str| json!({"grant_type": "client_credentials", "client_id": "sa-bot@acme.iam", "client_secret": secret});
    let attacker = [("x-forwarded-for", "203.0.113.66")];
    for _ in 0..3 {
        let r = server
            .call(
                Method::POST,
                TOKEN,
                None,
                Some(&body("plt_cs_guess")),
                &attacker,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let throttled = server
        .call(
            Method::POST,
            TOKEN,
            None,
            Some(&body("plt_cs_guess")),
            &attacker,
        )
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        throttled.header("retry-after"),
        Some("60"),
        "the test clock stands still"
    );
    assert_eq!(
        throttled.reasons(),
        [("TOO_MANY_FAILED_ATTEMPTS".to_owned(), None)]
    );
    let form = [
        ("x-forwarded-for", "203.0.113.66"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let url = format!("{}/oauth2/token", server.base_url);
    let oauth = reqwest::Client::new()
        .post(url)
        .header(form[0].0, form[0].1)
        .header(form[1].0, form[1].1)
        .body(
            "grant_type=client_credentials&client_id=sa-bot%40acme.iam&client_secret=plt_cs_guess",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(oauth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(oauth.headers().contains_key("retry-after"));

    // A throttled pair is refused before its secret is looked at: the valid secret too, from
    // the attacker's address (a shared NAT), until the window ends.
    let same_nat = server
        .call(Method::POST, TOKEN, None, Some(&body(&secret)), &attacker)
        .await;
    assert_eq!(
        same_nat.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        same_nat.text
    );
    // The workload elsewhere is not affected, and its address is recorded as last used.
    server.clock.advance(Duration::seconds(1));
    let legit = server
        .call(
            Method::POST,
            TOKEN,
            None,
            Some(&body(&secret)),
            &[("x-forwarded-for", "198.51.100.7")],
        )
        .await;
    assert_eq!(legit.status, StatusCode::OK, "{}", legit.text);
    let path = format!("{BASE}/sa-bot/credentials/{credential}");
    let mut last_ip = Value::Null;
    for _ in 0..40 {
        last_ip = server.get(&path, &server.admin()).await.json()["lastUsedIp"].clone();
        if last_ip == "198.51.100.7" {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(last_ip, "198.51.100.7");
    // When the window ends, the pair may try again.
    server.clock.advance(Duration::seconds(60));
    let after = server
        .call(Method::POST, TOKEN, None, Some(&body(&secret)), &attacker)
        .await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
}

/// Introspection names the audience as one string, as published, also for a token whose
/// `aud` lists several.
#[tokio::test]
async fn introspection_shows_the_accepted_audience_as_one_string() {
    let server = TestServer::start().await;
    let mut claims = server.admin_claims();
    claims.aud = iam_http::jwt::Audience::Many(vec!["other".into(), "k0rdent".into()]);
    let token = server.sign(&claims, None);
    let introspected = introspect(&server, &token).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["aud"], "k0rdent");
}

/// What the OpenAPI document promises about bodies holds: an empty `token` is refused, and an
/// optional body may be `null`.
#[tokio::test]
async fn an_empty_token_is_refused_and_a_null_credential_body_is_no_body() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for path in [INTROSPECT, "/v1/regions/global/auth/revoke"] {
        let response = server
            .call(
                Method::POST,
                path,
                Some(&admin),
                Some(&json!({"token": ""})),
                &[],
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            response.text
        );
        assert_eq!(
            response.reasons(),
            [("TOO_SHORT".to_owned(), Some("token".to_owned()))]
        );
    }
    server.create_sa(&admin, "sa-null-body").await;
    let created = server
        .call(
            Method::POST,
            "/v1/regions/global/iam/service-accounts/sa-null-body/credentials",
            Some(&admin),
            Some(&Value::Null),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}
