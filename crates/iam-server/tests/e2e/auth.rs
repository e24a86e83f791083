//! Bearer-token checks: every refusal is the same 401 with `WWW-Authenticate`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iam_domain::ports::Clock as _;
use iam_http::jwt::Ed25519Key;
use reqwest::{Method, StatusCode};

use crate::support::{BASE, TestServer};

async fn assert_401(server: &TestServer, token: Option<&str>, what: &str) -> String {
    let response = server.call(Method::GET, BASE, token, None, &[]).await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        response.text
    );
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{what}"
    );
    assert_eq!(
        response.reasons(),
        [("INVALID_TOKEN".to_owned(), None)],
        "{what}"
    );
    response.text
}

#[tokio::test]
async fn missing_malformed_expired_and_untrusted_tokens_get_one_401() {
    let server = TestServer::start().await;
    let valid = server.admin();
    assert_eq!(
        server
            .call(Method::GET, BASE, Some(&valid), None, &[])
            .await
            .status,
        StatusCode::OK
    );

    let mut bodies = vec![
        assert_401(&server, None, "no token").await,
        assert_401(&server, Some("not-a-jwt"), "garbage").await,
    ];
    // Signed by a key the server does not trust.
    let stranger = Ed25519Key::generate().unwrap();
    bodies.push(
        assert_401(
            &server,
            Some(&server.token_signed_by(&stranger, "org-acme", &["admin"])),
            "unknown key",
        )
        .await,
    );
    // A valid token with its signature replaced.
    let (head, _) = valid.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    bodies.push(assert_401(&server, Some(&forged), "bad signature").await);
    // A valid token with an edited payload (tenant switched).
    let parts: Vec<&str> = valid.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["tenant_id"] = "org-globex".into();
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    bodies.push(assert_401(&server, Some(&edited), "edited claims").await);
    // alg: none.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    bodies.push(
        assert_401(
            &server,
            Some(&format!("{none_header}.{}.", parts[1])),
            "alg none",
        )
        .await,
    );
    // A service-account token naming no live credential.
    let mut service_account = TestServer::admin_request();
    service_account.kind = iam_domain::PrincipalKind::ServiceAccount;
    bodies.push(
        assert_401(
            &server,
            Some(&server.token_for(&service_account)),
            "service account",
        )
        .await,
    );
    // Expired: the clock moves past exp + 60 s of leeway.
    server.clock.advance(time::Duration::minutes(17));
    bodies.push(assert_401(&server, Some(&valid), "expired").await);

    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every refusal has the same body");
}

#[tokio::test]
async fn tokens_for_another_audience_or_issuer_are_refused_though_signed_by_our_key() {
    let server = TestServer::start().await;
    let request = TestServer::admin_request();
    let mut other_audience = server.config.clone();
    other_audience.audience = "someone-else".into();
    assert_401(
        &server,
        Some(&server.mint_with(&other_audience, &request)),
        "audience",
    )
    .await;
    let mut other_issuer = server.config.clone();
    other_issuer.issuer = "https://evil.example".into();
    assert_401(
        &server,
        Some(&server.mint_with(&other_issuer, &request)),
        "issuer",
    )
    .await;
    assert_eq!(
        server
            .call(
                Method::GET,
                BASE,
                Some(&server.mint_with(&server.config, &request)),
                None,
                &[]
            )
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_external_issuers_jwks_is_trusted_for_that_issuer_only() {
    let external = Ed25519Key::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("iam-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [external.public_jwk()]}).to_string(),
    )
    .unwrap();
    let server = TestServer::start_with(&[
        ("IAM_EXTERNAL_ISSUER", "https://idp.example"),
        ("IAM_EXTERNAL_JWKS_FILE", jwks.to_str().unwrap()),
    ])
    .await;
    let mut config = server.config.clone();
    config.issuer = "https://idp.example".into();
    let request = iam_server::token::MintRequest {
        tenant: iam_domain::OrgId::parse("org-acme").unwrap(),
        subject: "sso-user".into(),
        roles: vec![iam_domain::RoleSlug::parse("admin").unwrap()],
        scope: iam_domain::Scope::Organization,
        scope_id: None,
        ttl: time::Duration::minutes(5),
        kind: iam_domain::PrincipalKind::User,
    };
    let idp_token =
        iam_server::token::mint(&config, &external, &request, server.clock.now()).unwrap();
    let ok = server
        .call(Method::GET, BASE, Some(&idp_token), None, &[])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    // The external key cannot sign for the server's own issuer.
    let impostor =
        iam_server::token::mint(&server.config, &external, &request, server.clock.now()).unwrap();
    assert_401(&server, Some(&impostor), "external key, own issuer").await;
    std::fs::remove_dir_all(dir).unwrap();
}
