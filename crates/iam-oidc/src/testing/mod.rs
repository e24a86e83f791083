//! A fake OIDC issuer for tests (feature `testing`): an in-process HTTP server on
//! `127.0.0.1` serving `/.well-known/openid-configuration` and `/jwks`, with signing,
//! forging, rotation, outages and `Cache-Control` under the test's control.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use iam_oidc::testing::{FakeAlg, FakeIssuer};
//! use iam_oidc::{FetcherConfig, JwksFetcher, JwksLocation};
//!
//! let issuer = FakeIssuer::start().await;
//! let token = issuer.sign(FakeAlg::EdDsa, &serde_json::json!({
//!     "iss": issuer.issuer(), "sub": "workload", "exp": 2_000_000_000,
//! }));
//! let fetcher = JwksFetcher::new(FetcherConfig::default()).unwrap();
//! let location = JwksLocation::Discovery { issuer: issuer.issuer() };
//! let claims = fetcher.verify(&token, &issuer.issuer(), &location, 1_900_000_000, 60).await;
//! assert_eq!(claims.unwrap()["sub"], "workload");
//! # });
//! ```

mod keys;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::keys::{FakeKey, RSA_ROTATION};
use self::server::Response;

/// The algorithms the fake issuer signs with; it has one current key per algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeAlg {
    /// RS256 with a fixed test-only RSA-2048 key.
    Rs256,
    /// ES256 with a P-256 key generated at start.
    Es256,
    /// EdDSA with an Ed25519 key generated at start.
    EdDsa,
}

impl FakeAlg {
    const ALL: [Self; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    fn index(self) -> usize {
        match self {
            Self::Rs256 => 0,
            Self::Es256 => 1,
            Self::EdDsa => 2,
        }
    }

    fn kid_prefix(self) -> &'static str {
        match self {
            Self::Rs256 => "rs256",
            Self::Es256 => "es256",
            Self::EdDsa => "eddsa",
        }
    }
}

/// The `kid` of the 1024-bit RSA key every JWKS of the fake issuer also publishes.
pub const WEAK_RSA_KID: &str = "rs256-weak-1024";

/// An in-process OIDC issuer on `127.0.0.1:PORT`. The server stops when this is dropped.
///
/// Its RS256 keys come from a fixed test-only set, so two fake issuers share them (and
/// their `kid`s): a test of one issuer signing as another must use ES256 or `EdDSA`, whose
/// keys are random per issuer.
pub struct FakeIssuer {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: JoinHandle<()>,
}

/// What the server and the handle share.
pub(crate) struct Shared {
    issuer: String,
    state: Mutex<State>,
    fetches: AtomicUsize,
}

/// The issuer's keys and knobs.
struct State {
    /// Current (published) key per algorithm, by [`FakeAlg::index`].
    current: [FakeKey; 3],
    /// Unpublished key per algorithm, `kid` `unpublished-<alg>`.
    unpublished: [FakeKey; 3],
    /// The published 1024-bit RSA key.
    weak: FakeKey,
    /// Keys made so far per algorithm (numbers the `kid`s).
    serials: [usize; 3],
    down: bool,
    cache_control: Option<String>,
    omit_content_length: bool,
    discovery_issuer: Option<String>,
}

impl FakeIssuer {
    /// Starts the issuer on `127.0.0.1:0` with one current key per algorithm, published in
    /// its JWKS (together with the 1024-bit RSA key [`WEAK_RSA_KID`]).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    #[expect(
        clippy::expect_used,
        reason = "a test that cannot bind loopback cannot run"
    )]
    pub async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("the bound address");
        let state = State {
            current: FakeAlg::ALL
                .map(|alg| FakeKey::new(alg, format!("{}-1", alg.kid_prefix()), 0)),
            unpublished: FakeAlg::ALL
                .map(|alg| FakeKey::unpublished(alg, format!("unpublished-{}", alg.kid_prefix()))),
            weak: FakeKey::weak_rsa(WEAK_RSA_KID.to_owned()),
            serials: [1; 3],
            down: false,
            cache_control: None,
            omit_content_length: false,
            discovery_issuer: None,
        };
        let shared = Arc::new(Shared {
            issuer: format!("http://{address}"),
            state: Mutex::new(state),
            fetches: AtomicUsize::new(0),
        });
        let server = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Self {
            shared,
            address,
            server,
        }
    }

    /// The issuer identifier, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The JWKS URL, `http://127.0.0.1:PORT/jwks`.
    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks", self.address)
    }

    /// `claims` signed with the current key of `alg` (its `kid` in the header).
    pub fn sign(&self, alg: FakeAlg, claims: &Value) -> String {
        self.shared.state().current[alg.index()].sign(claims)
    }

    /// `claims` under the current `kid` of `alg` but signed by an unpublished key: a
    /// forged token whose signature does not verify.
    pub fn forge(&self, alg: FakeAlg, claims: &Value) -> String {
        let state = self.shared.state();
        let kid = state.current[alg.index()].kid.clone();
        state.unpublished[alg.index()].renamed(kid).sign(claims)
    }

    /// `claims` signed by an unpublished key whose `kid` is not in the JWKS.
    pub fn sign_unknown_kid(&self, alg: FakeAlg, claims: &Value) -> String {
        self.shared.state().unpublished[alg.index()].sign(claims)
    }

    /// `claims` signed (RS256) by the published 1024-bit RSA key [`WEAK_RSA_KID`].
    pub fn sign_weak_rsa(&self, claims: &Value) -> String {
        self.shared.state().weak.sign(claims)
    }

    /// Makes a new current key (new `kid`) for `alg`; the old one leaves the JWKS.
    pub fn rotate(&self, alg: FakeAlg) {
        let mut state = self.shared.state();
        let serial = state.serials[alg.index()] + 1;
        state.serials[alg.index()] = serial;
        let kid = format!("{}-{serial}", alg.kid_prefix());
        state.current[alg.index()] = FakeKey::new(alg, kid, (serial - 1) % RSA_ROTATION);
    }

    /// When `down`, every request is answered `503`.
    pub fn set_down(&self, down: bool) {
        self.shared.state().down = down;
    }

    /// The `Cache-Control` header of JWKS answers (none by default).
    pub fn set_cache_control(&self, value: Option<&str>) {
        self.shared.state().cache_control = value.map(str::to_owned);
    }

    /// When `omit`, answers carry no `Content-Length` (the body ends with the connection),
    /// so a client must bound what it reads itself.
    pub fn set_omit_content_length(&self, omit: bool) {
        self.shared.state().omit_content_length = omit;
    }

    /// The `issuer` the discovery document names (`None`: the real one).
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        self.shared.state().discovery_issuer = issuer.map(str::to_owned);
    }

    /// Number of `GET /jwks` requests served (successful or not).
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for FakeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIssuer")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The state; a poisoned lock (a panicking test) is taken over.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether answers omit `Content-Length`.
    fn omits_content_length(&self) -> bool {
        self.state().omit_content_length
    }

    /// The answer to `method` `path`.
    fn answer(&self, method: &str, path: &str) -> Response {
        if method == "GET" && path == "/jwks" {
            self.fetches.fetch_add(1, Ordering::SeqCst);
        }
        let state = self.state();
        if state.down {
            return Response::json("503 Service Unavailable", &json!({"error": "down"}));
        }
        match (method, path) {
            ("GET", "/.well-known/openid-configuration") => {
                let issuer = state
                    .discovery_issuer
                    .clone()
                    .unwrap_or_else(|| self.issuer.clone());
                let jwks_uri = format!("{}/jwks", self.issuer);
                Response::json("200 OK", &json!({ "issuer": issuer, "jwks_uri": jwks_uri }))
            }
            ("GET", "/jwks") => {
                let mut keys: Vec<Value> =
                    state.current.iter().map(|key| key.jwk.clone()).collect();
                keys.push(state.weak.jwk.clone());
                let mut response = Response::json("200 OK", &json!({ "keys": keys }));
                if let Some(value) = &state.cache_control {
                    response.headers.push(("Cache-Control", value.clone()));
                }
                response
            }
            ("GET", _) => Response::json("404 Not Found", &json!({"error": "not found"})),
            _ => Response::json("405 Method Not Allowed", &json!({"error": "GET only"})),
        }
    }
}
