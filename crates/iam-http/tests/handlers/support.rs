//! The real routes (`iam_http::configure`) over the domain's in-memory fakes: no database,
//! no network, a fixed clock.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::test::{TestRequest, call_service, init_service, read_body};
use actix_web::{App, web};
use iam_domain::fakes::{FakeAssertions, FixedClock, Memory, SeqIds, role, seeded_memory};
use iam_domain::ports::{Adapters, Clock};
use iam_domain::{
    CredentialAdmin, FederationAdmin, MintThrottle, SecretHasher, ServiceAccountAdmin,
    ThrottleLimits, TokenService,
};
use iam_http::caller::{Authenticator, LivenessCheck};
use iam_http::client_ip::TrustedProxies;
use iam_http::jwt::{AccessClaims, Audience, Ed25519Key, TokenSigner, TokenVerifier};
use iam_http::page_token::PageTokenCodec;
use iam_http::sealing::ResponseSealer;
use iam_http::token_endpoints::TokenIssuer;
use iam_http::{AppState, HttpAdapters, request_id};
use serde_json::Value;
use time::macros::datetime;

pub const BASE: &str = "/v1/regions/global/iam/service-accounts";
pub const ISSUER: &str = "https://iam.test";

/// The fakes as a deployment.
pub struct TestAdapters;

impl Adapters for TestAdapters {
    type Store = Memory;
    type Credentials = Memory;
    type Federated = Memory;
    type Assertions = FakeAssertions;
    type Tokens = Memory;
    type Usage = Memory;
    type Directory = Memory;
    type Clock = FixedClock;
    type Ids = SeqIds;
}

impl HttpAdapters for TestAdapters {
    type Idempotency = Memory;
    type Readiness = Memory;
}

/// A world: the fakes' state, the clock, the signing key.
pub struct World {
    pub memory: Memory,
    pub clock: FixedClock,
    key: Ed25519Key,
}

/// An answer, read whole.
pub struct Answer {
    pub status: u16,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(reason, field)` of each detail of an error envelope.
    pub fn reasons(&self) -> Vec<(String, Option<String>)> {
        let body = self.json();
        assert_eq!(body["error"]["code"], self.status, "{}", self.body);
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

impl World {
    pub fn new() -> Self {
        Self {
            memory: seeded_memory(),
            clock: FixedClock::new(datetime!(2026-12-01 12:00 UTC)),
            key: Ed25519Key::generate().unwrap(),
        }
    }

    /// The routes over this world.
    pub async fn app(
        &self,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        let hasher = SecretHasher::new(&[3; 32]).unwrap();
        let m = &self.memory;
        let state = web::Data::new(AppState::<TestAdapters> {
            admin: ServiceAccountAdmin::new(
                m.clone(),
                m.clone(),
                self.clock.clone(),
                SeqIds::default(),
                role("admin"),
            ),
            credentials: CredentialAdmin::new(
                m.clone(),
                m.clone(),
                m.clone(),
                self.clock.clone(),
                SeqIds::default(),
                hasher.clone(),
                role("admin"),
            ),
            federation: FederationAdmin::new(
                m.clone(),
                m.clone(),
                m.clone(),
                self.clock.clone(),
                SeqIds::default(),
                role("admin"),
                iam_domain::Audience::parse(ISSUER).unwrap(),
            ),
            tokens: TokenService::new(
                m.clone(),
                m.clone(),
                FakeAssertions::default(),
                m.clone(),
                m.clone(),
                m.clone(),
                self.clock.clone(),
                SeqIds::default(),
                hasher,
                time::Duration::seconds(900),
                role("admin"),
                MintThrottle::new(ThrottleLimits::default()),
            ),
            issuer: TokenIssuer::new(
                TokenSigner::new(&self.key).unwrap(),
                ISSUER.into(),
                "k0rdent".into(),
                ISSUER,
                &[self.key.verification_key()],
            ),
            sealer: ResponseSealer::from_pepper(&[7; 32]),
            idempotency: m.clone(),
            readiness: m.clone(),
            page_tokens: PageTokenCodec::new([9; 32]),
        });
        let mut verifier = TokenVerifier::new("k0rdent");
        verifier.trust_own_key(&self.key.verification_key(), ISSUER);
        let liveness: Arc<dyn LivenessCheck> = state.clone().into_inner();
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let authenticator = web::Data::new(Authenticator::new(Arc::new(verifier), clock, liveness));
        init_service(
            App::new()
                .app_data(state)
                .app_data(authenticator)
                .app_data(web::Data::new(TrustedProxies(vec![])))
                .wrap(from_fn(request_id::middleware))
                .configure(iam_http::configure::<TestAdapters>),
        )
        .await
    }

    /// A token of `tenant` signed with this world's key, for `sub` holding `roles` at
    /// organization scope.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        let now = self.clock.now().unix_timestamp();
        let claims = AccessClaims {
            sub: sub.into(),
            iss: ISSUER.into(),
            aud: Audience::One("k0rdent".into()),
            exp: now + 900,
            iat: now,
            nbf: None,
            jti: format!("jti-{sub}-{}", roles.join("-")),
            tenant_id: "org-acme".into(),
            scope: "organization".into(),
            scope_id: "org-acme".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            principal_type: "user".into(),
            credential_id: None,
        };
        TokenSigner::new(&self.key).unwrap().sign(&claims).unwrap()
    }

    /// An admin of org-acme holding every role of its catalog.
    pub fn admin(&self) -> String {
        self.token(
            "alice@acme.example",
            &[
                "admin",
                "compute.deployer",
                "storage.writer",
                "storage.reader",
            ],
        )
    }
}

/// Sends `request` to `app` and reads the whole answer.
pub async fn send<S, B>(app: &S, request: TestRequest) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_body(response).await;
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// A JSON request with a bearer token.
pub fn json(method: actix_web::http::Method, path: &str, token: &str, body: &str) -> TestRequest {
    TestRequest::default()
        .method(method)
        .uri(path)
        .insert_header(("authorization", format!("Bearer {token}")))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

/// A request without a body.
pub fn bare(method: actix_web::http::Method, path: &str, token: &str) -> TestRequest {
    TestRequest::default()
        .method(method)
        .uri(path)
        .insert_header(("authorization", format!("Bearer {token}")))
}
