//! Prometheus metrics (SPEC §8), served at `GET /metrics` in the `OpenMetrics` text format.
//!
//! The library is `prometheus-client`, the Prometheus project's own Rust client, rather than
//! the `metrics` facade: its registry is a value owned by one server (no global recorder, so
//! tests may run many servers in one process and each scrapes only its own), and every label
//! set is a type — methods, outcomes and pool states are enums, a route is the route
//! *template* — so a tenant, subject or id cannot become a label by accident.
//!
//! | Series | Labels | What |
//! |---|---|---|
//! | `http_requests_total` | `method`, `route`, `status` | Requests answered |
//! | `http_request_duration_seconds` | `method`, `route` | Latency histogram |
//! | `iam_token_mints_total` | `outcome` | Token requests by outcome (`throttled`: refused by the failed-mint throttle) |
//! | `iam_db_pool_connections` | `state` (`in_use`, `idle`, `max`, `waiting`) | The connection pool, at scrape time |
//! | `iam_usage_pending_records` | — | Last-use records waiting to be written |
//! | `iam_usage_flush_lag_seconds` | — | Time since last-use records were last written (or found none to write) |
//! | `iam_jwks_fetches_total` | `outcome` (`ok`, `failed`) | JWKS and OIDC discovery fetches of external issuers |
//! | `iam_build_info` | `version` | Always 1 |
//!
//! Scrape-time values (pool, usage) come from [`Metrics::on_scrape`] hooks the server
//! registers, so this crate needs no storage adapter.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix_web::http::Method as HttpMethod;
use actix_web::{HttpRequest, HttpResponse, web};
use iam_domain::MintError;
use iam_domain::ports::StoreError;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of the `OpenMetrics` text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Latency buckets, seconds: 0.5 ms to 10 s (the request deadline is 5 s by default).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An HTTP method, as a label (anything unusual is `OTHER`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    clippy::upper_case_acronyms,
    reason = "label values as HTTP spells them"
)]
pub enum Method {
    /// `GET`.
    GET,
    /// `HEAD`.
    HEAD,
    /// `POST`.
    POST,
    /// `PUT`.
    PUT,
    /// `PATCH`.
    PATCH,
    /// `DELETE`.
    DELETE,
    /// `OPTIONS`.
    OPTIONS,
    /// Any other method.
    OTHER,
}

impl From<&HttpMethod> for Method {
    fn from(method: &HttpMethod) -> Self {
        match *method {
            HttpMethod::GET => Self::GET,
            HttpMethod::HEAD => Self::HEAD,
            HttpMethod::POST => Self::POST,
            HttpMethod::PUT => Self::PUT,
            HttpMethod::PATCH => Self::PATCH,
            HttpMethod::DELETE => Self::DELETE,
            HttpMethod::OPTIONS => Self::OPTIONS,
            _ => Self::OTHER,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Method,
    /// The route template (`/v1/…/service-accounts/{id}`), or `unmatched`.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: Method,
    route: String,
}

/// How a token request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values in Prometheus' snake case"
)]
pub enum MintOutcome {
    /// A token was issued.
    issued,
    /// Unknown client, wrong secret, expired or deleted credential, disabled account.
    invalid_client,
    /// Refused by the failed-mint throttle before any check.
    throttled,
    /// The requested scope narrowing was refused.
    narrowing_refused,
    /// The database was unavailable.
    unavailable,
    /// An unexpected failure.
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MintLabels {
    outcome: MintOutcome,
}

/// How a JWKS (or OIDC discovery) fetch of an external issuer ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values in Prometheus' snake case"
)]
pub enum FetchOutcome {
    /// Fetched and parsed.
    ok,
    /// Timed out, refused, too large, not 2xx, or not a JWKS.
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    outcome: FetchOutcome,
}

/// A state of the connection pool.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values in Prometheus' snake case"
)]
pub enum PoolState {
    /// Checked out.
    in_use,
    /// Open and free.
    idle,
    /// The most the pool opens.
    max,
    /// Requests waiting for a connection.
    waiting,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: PoolState,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A hook run before each scrape, to set values read at that moment.
type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The server's metrics. Register as `web::Data<Metrics>`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    mints: Family<MintLabels, Counter>,
    pool: Family<PoolLabels, Gauge>,
    usage_pending: Gauge,
    usage_lag: Gauge<f64, AtomicU64>,
    jwks_fetches: Family<FetchLabels, Counter>,
    hooks: Vec<ScrapeHook>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every series, with `iam_build_info{version}` set to 1.
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(
            new_latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from the request head to the response, by route template",
            durations.clone(),
        );
        let mints = Family::<MintLabels, Counter>::default();
        registry.register(
            "iam_token_mints",
            "Token requests by outcome",
            mints.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "iam_db_pool_connections",
            "Database connections of the pool by state",
            pool.clone(),
        );
        let usage_pending = Gauge::default();
        registry.register(
            "iam_usage_pending_records",
            "Credential last-use records waiting to be written",
            usage_pending.clone(),
        );
        let usage_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "iam_usage_flush_lag_seconds",
            "Seconds since last-use records were last written (or found none to write)",
            usage_lag.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "iam_jwks_fetches",
            "JWKS and OIDC discovery fetches of external issuers, by outcome",
            jwks_fetches.clone(),
        );
        for outcome in [FetchOutcome::ok, FetchOutcome::failed] {
            drop(jwks_fetches.get_or_create(&FetchLabels { outcome }));
        }
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: version.to_owned(),
            })
            .set(1);
        registry.register("iam_build_info", "The running build", build);
        Self {
            registry,
            requests,
            durations,
            mints,
            pool,
            usage_pending,
            usage_lag,
            jwks_fetches,
            hooks: Vec::new(),
        }
    }

    /// Runs `hook` before each scrape (e.g. to read the pool's state).
    pub fn on_scrape(&mut self, hook: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.hooks.push(Box::new(hook));
    }

    /// Counts one answered request to `route` (a template) and its latency.
    pub fn observe_request(&self, method: Method, route: String, status: u16, elapsed: Duration) {
        self.durations
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Counts one token request.
    pub fn observe_mint(&self, outcome: MintOutcome) {
        self.mints.get_or_create(&MintLabels { outcome }).inc();
    }

    /// Sets the pool's connections in `state`.
    pub fn set_pool(&self, state: PoolState, connections: usize) {
        let value = i64::try_from(connections).unwrap_or(i64::MAX);
        self.pool.get_or_create(&PoolLabels { state }).set(value);
    }

    /// Sets the last-use buffer's figures.
    pub fn set_usage(&self, pending: usize, since_flush: Duration) {
        self.usage_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.usage_lag.set(since_flush.as_secs_f64());
    }

    /// Sets the JWKS fetch counters to the fetcher's own monotonic counts (at scrape time).
    pub fn set_jwks_fetches(&self, ok: u64, failed: u64) {
        for (outcome, total) in [(FetchOutcome::ok, ok), (FetchOutcome::failed, failed)] {
            let counter = self.jwks_fetches.get_or_create(&FetchLabels { outcome });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The scrape: every series in the `OpenMetrics` text format.
    pub fn render(&self) -> String {
        for hook in &self.hooks {
            hook(self);
        }
        let mut text = String::new();
        // Writing into a `String` cannot fail, nor can encoding these metric types.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("encoding the metrics failed");
        }
        text
    }
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The outcome of a token request, for [`Metrics::observe_mint`].
pub fn mint_outcome<T>(result: &Result<T, MintError>) -> MintOutcome {
    match result {
        Ok(_) => MintOutcome::issued,
        Err(MintError::InvalidClient) => MintOutcome::invalid_client,
        Err(MintError::Throttled { .. }) => MintOutcome::throttled,
        Err(MintError::NarrowingRefused(_)) => MintOutcome::narrowing_refused,
        Err(MintError::Store(StoreError::Unavailable(_))) => MintOutcome::unavailable,
        Err(MintError::Store(StoreError::Unexpected(_)) | MintError::Internal(_)) => {
            MintOutcome::error
        }
    }
}

/// Counts the outcome of a token request in the metrics registered with `req`'s app, if any.
pub fn record_mint<T>(req: &HttpRequest, result: &Result<T, MintError>) {
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.observe_mint(mint_outcome(result));
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get, path = "/metrics", operation_id = "getMetrics", tag = "Operations",
    responses((status = 200, content_type = "application/openmetrics-text",
        description = "Prometheus metrics (OpenMetrics text format); unauthenticated like the probes."))
)]
pub async fn metrics(req: HttpRequest) -> HttpResponse {
    let body = req
        .app_data::<web::Data<Metrics>>()
        .map(|metrics| metrics.render())
        .unwrap_or_default();
    HttpResponse::Ok().content_type(OPENMETRICS).body(body)
}
