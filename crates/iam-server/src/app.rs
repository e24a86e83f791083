//! Wiring: the concrete adapters, the shared state, and the HTTP server.

use std::marker::PhantomData;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use iam_domain::ports::{Adapters, Clock};
use iam_domain::{
    Audience, CredentialAdmin, FederationAdmin, MintThrottle, SecretHasher, ServiceAccountAdmin,
    ThrottleLimits, TokenService,
};
use iam_http::caller::{Authenticator, LivenessCheck};
use iam_http::client_ip::TrustedProxies;
use iam_http::deadline::RequestDeadline;
use iam_http::jwt::TokenSigner;
use iam_http::metrics::{Metrics, PoolState};
use iam_http::page_token::PageTokenCodec;
use iam_http::sealing::ResponseSealer;
use iam_http::token_endpoints::TokenIssuer;
use iam_http::{AppState, HttpAdapters, header_limit, request_id};
use iam_oidc::{FetcherConfig, JwksFetcher};
use iam_postgres::{PgConfig, PgStore, UsageBuffer};

use crate::config::Config;
use crate::federation::OidcAssertions;
use crate::ids::OsIds;
use crate::keys;

/// The adapters of a deployment: PostgreSQL for storage, the OS for ids, and clock `C`
/// (the system clock in production; tests substitute a controllable one).
pub struct Deployment<C>(PhantomData<fn() -> C>);

impl<C: Clock + Clone> Adapters for Deployment<C> {
    type Store = PgStore;
    type Credentials = PgStore;
    type Federated = PgStore;
    type Assertions = OidcAssertions;
    type Tokens = PgStore;
    type Usage = UsageBuffer;
    type Directory = PgStore;
    type Clock = C;
    type Ids = OsIds;
}

impl<C: Clock + Clone> HttpAdapters for Deployment<C> {
    type Idempotency = PgStore;
    type Readiness = PgStore;
}

/// How often expired idempotency records and revocations are purged.
const PURGE_INTERVAL: Duration = Duration::from_mins(10);
/// How long a revocation outlives its token's `exp`: more than the verifier's skew leeway.
const REVOCATION_GRACE: time::Duration = time::Duration::minutes(5);
/// How often coalesced `lastUsedAt`/`lastUsedIp` updates are written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A built server and what must be flushed when it stops.
pub struct Built {
    /// The HTTP server (await or spawn it).
    pub server: actix_web::dev::Server,
    usage: UsageBuffer,
    flusher: tokio::task::JoinHandle<()>,
    /// The request deadline, which also bounds each flush.
    deadline: Duration,
}

impl Built {
    /// After the server stopped: stops the periodic flusher (an interrupted flush puts its
    /// records back) and writes every pending last-use record, within the request deadline (a
    /// hung database must not keep the process from exiting). Returns how many were written.
    ///
    /// # Errors
    /// When the final write fails or does not finish in time.
    pub async fn flush_usage(self) -> Result<usize, iam_domain::ports::StoreError> {
        self.flusher.abort();
        // The task was aborted: its (cancelled) result says nothing worth reporting.
        let _ = self.flusher.await;
        let flushed = self.usage.flush_within(self.deadline).await;
        if flushed.is_err() {
            tracing::warn!(
                lost = self.usage.pending(),
                "last-use records could not be written before exit"
            );
        }
        flushed
    }
}

/// Builds the HTTP server on `listener` (not yet running).
///
/// # Errors
/// When keys cannot be loaded, `DATABASE_URL` is missing, or the listener cannot be used.
pub fn build<C: Clock + Clone>(
    config: &Config,
    clock: C,
    listener: TcpListener,
) -> anyhow::Result<Built> {
    let key = keys::signing_key(config)?;
    let verification_keys = keys::verification_keys(config, &key)?;
    let pepper = keys::secret_pepper(config)?;
    let hasher = SecretHasher::new(&pepper).context("the secret pepper is too short")?;
    let verifier = Arc::new(keys::verifier(config, &verification_keys));
    let fetcher = Arc::new(jwks_fetcher(config)?);
    let external = keys::external_issuer(config, &fetcher)?;
    let pg = config.pg()?;
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let connections = ConnectionSplit::of(pg.max_connections, workers);
    let store = PgStore::connect(&PgConfig {
        max_connections: connections.shared,
        ..pg
    })?;
    let usage = UsageBuffer::new(store.clone());
    let flusher = usage.spawn_flusher(USAGE_FLUSH_INTERVAL, config.request_timeout);
    spawn_purges(store.clone(), clock.clone());

    let admin = ServiceAccountAdmin::<Deployment<C>>::new(
        store.clone(),
        store.clone(),
        clock.clone(),
        OsIds,
        config.admin_role.clone(),
    );
    let credentials = CredentialAdmin::<Deployment<C>>::new(
        store.clone(),
        store.clone(),
        store.clone(),
        clock.clone(),
        OsIds,
        hasher.clone(),
        config.admin_role.clone(),
    );
    let federation = FederationAdmin::<Deployment<C>>::new(
        store.clone(),
        store.clone(),
        store.clone(),
        clock.clone(),
        OsIds,
        config.admin_role.clone(),
        // Tokens minted for this service name it by its issuer URL.
        Audience::parse(config.issuer.as_str()).context("IAM_ISSUER as an audience")?,
    );
    let tokens = token_service(config, &store, &usage, &fetcher, clock.clone(), hasher)?;
    let issuer = TokenIssuer::new(
        TokenSigner::new(&key)?,
        config.issuer.clone(),
        config.audience.clone(),
        &config.public_url,
        &verification_keys,
    );
    let store_for_metrics = store.clone();
    let state = web::Data::new(AppState {
        admin,
        credentials,
        federation,
        tokens,
        issuer,
        sealer: ResponseSealer::from_pepper(&pepper),
        idempotency: store.clone(),
        readiness: store.clone(),
        page_tokens: PageTokenCodec::new(key.derive_secret("iam/page-tokens/v1")),
    });
    let liveness: Arc<dyn LivenessCheck> = state.clone().into_inner();
    let mut authenticator = Authenticator::new(verifier, Arc::new(clock), liveness);
    if let Some(external) = external {
        authenticator = authenticator.with_external(external);
    }
    let authenticator = web::Data::new(authenticator);
    let proxies = web::Data::new(TrustedProxies(config.trusted_proxies.clone()));
    let deadline = web::Data::new(RequestDeadline(config.request_timeout));
    let metrics = web::Data::new(metrics(&store_for_metrics, &usage, &fetcher));

    let worker_store = store_for_metrics.clone();
    let server = HttpServer::new(move || {
        // Called once on each worker thread, before it serves: the worker's own connections.
        if let Err(error) = worker_store.pool().attach_thread(connections.per_worker) {
            tracing::warn!(%error, "an HTTP worker shares the background connection pool");
        }
        App::new()
            .app_data(state.clone())
            .app_data(authenticator.clone())
            .app_data(proxies.clone())
            .app_data(deadline.clone())
            .app_data(metrics.clone())
            .wrap(from_fn(header_limit::middleware))
            .wrap(from_fn(request_id::middleware))
            .configure(iam_http::configure::<Deployment<C>>)
    })
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    .workers(workers);
    Ok(Built {
        server: server.listen(listener)?.run(),
        usage,
        flusher,
        deadline: config.request_timeout,
    })
}

/// How a process's `IAM_DB_MAX_CONNECTIONS` are shared out: each HTTP worker has a pool of
/// its own ([`iam_postgres::PgPool::attach_thread`]: its queries never wake another thread),
/// and what is left serves the background tasks (usage flush, purges, shutdown). At least
/// one connection each: a process opens at most `max(IAM_DB_MAX_CONNECTIONS, workers + 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionSplit {
    per_worker: usize,
    shared: usize,
}

impl ConnectionSplit {
    fn of(max_connections: usize, workers: usize) -> Self {
        let workers = workers.max(1);
        let per_worker = (max_connections.saturating_sub(1) / workers).max(1);
        Self {
            per_worker,
            shared: max_connections.saturating_sub(per_worker * workers).max(1),
        }
    }
}

/// The token service: secrets and federated assertions in, access tokens out.
fn token_service<C: Clock + Clone>(
    config: &Config,
    store: &PgStore,
    usage: &UsageBuffer,
    fetcher: &Arc<JwksFetcher>,
    clock: C,
    hasher: SecretHasher,
) -> anyhow::Result<TokenService<Deployment<C>>> {
    let ttl = time::Duration::try_from(config.access_token_ttl).context("token lifetime")?;
    Ok(TokenService::<Deployment<C>>::new(
        store.clone(),
        store.clone(),
        OidcAssertions(Arc::clone(fetcher)),
        store.clone(),
        store.clone(),
        usage.clone(),
        clock,
        OsIds,
        hasher,
        ttl,
        config.admin_role.clone(),
        MintThrottle::new(ThrottleLimits {
            per_client_and_ip: config.mint_failure_limit,
            per_ip: config.mint_failure_limit_per_ip,
            ..ThrottleLimits::default()
        }),
    ))
}

/// The JWKS fetcher of external issuers (workload identity federation and the external
/// user-token issuer), with `IAM_JWKS_CA_FILE`'s certificates trusted too.
fn jwks_fetcher(config: &Config) -> anyhow::Result<JwksFetcher> {
    let extra_root_pem = config
        .jwks_ca_file
        .as_ref()
        .map(|file| {
            std::fs::read(file)
                .with_context(|| format!("reading IAM_JWKS_CA_FILE {}", file.display()))
        })
        .transpose()?;
    JwksFetcher::new(FetcherConfig {
        extra_root_pem,
        ..FetcherConfig::default()
    })
    .context("building the JWKS fetcher")
}

/// The metrics, with the pool, the last-use buffer and the JWKS fetcher read at each scrape.
fn metrics(store: &PgStore, usage: &UsageBuffer, fetcher: &Arc<JwksFetcher>) -> Metrics {
    let mut metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
    let (store, usage, fetcher) = (store.clone(), usage.clone(), Arc::clone(fetcher));
    metrics.on_scrape(move |metrics| {
        let pool = store.pool().status();
        metrics.set_pool(PoolState::in_use, pool.size.saturating_sub(pool.available));
        metrics.set_pool(PoolState::idle, pool.available);
        metrics.set_pool(PoolState::max, pool.max_size);
        metrics.set_pool(PoolState::waiting, pool.waiting);
        metrics.set_usage(usage.pending(), usage.since_last_flush());
        let jwks = fetcher.counts();
        metrics.set_jwks_fetches(jwks.fetched, jwks.failed);
    });
    metrics
}

fn spawn_purges<C: Clock>(store: PgStore, clock: C) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PURGE_INTERVAL);
        loop {
            interval.tick().await;
            let now = clock.now();
            match store.purge_expired_idempotency_keys(now).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged expired idempotency records"),
                Err(error) => tracing::warn!(%error, "could not purge idempotency records"),
            }
            // Tokens are accepted up to 60 s past `exp` (clock skew): keep revocations longer.
            match store
                .purge_expired_revocations(now - REVOCATION_GRACE)
                .await
            {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged expired revocations"),
                Err(error) => tracing::warn!(%error, "could not purge revocations"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::ConnectionSplit;

    #[test]
    fn workers_share_the_connections_and_background_tasks_keep_the_rest() {
        let split = |max, workers| {
            let s = ConnectionSplit::of(max, workers);
            (s.per_worker, s.shared)
        };
        assert_eq!(split(16, 2), (7, 2));
        assert_eq!(split(18, 2), (8, 2));
        assert_eq!(split(4, 2), (1, 2));
        assert_eq!(split(16, 1), (15, 1));
        assert_eq!(split(16, 4), (3, 4));
        // Too few for the workers: one each, and one for the background.
        assert_eq!(split(1, 2), (1, 1));
        assert_eq!(split(3, 8), (1, 1));
        assert_eq!(split(16, 0), (15, 1));
    }
}
