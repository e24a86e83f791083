//! Wiring: the concrete adapters, the shared state, and the HTTP server.

use std::marker::PhantomData;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use iam_domain::ports::{Adapters, Clock};
use iam_domain::{CredentialAdmin, SecretHasher, ServiceAccountAdmin};
use iam_http::caller::Authenticator;
use iam_http::page_token::PageTokenCodec;
use iam_http::sealing::ResponseSealer;
use iam_http::{AppState, request_id};
use iam_postgres::PgStore;

use crate::config::Config;
use crate::ids::OsIds;
use crate::keys;

/// The adapters of a deployment: PostgreSQL for storage, the OS for ids, and clock `C`
/// (the system clock in production; tests substitute a controllable one).
pub struct Deployment<C>(PhantomData<fn() -> C>);

impl<C: Clock + Clone> Adapters for Deployment<C> {
    type Store = PgStore;
    type Credentials = PgStore;
    type Directory = PgStore;
    type Idempotency = PgStore;
    type Readiness = PgStore;
    type Clock = C;
    type Ids = OsIds;
}

/// How often expired idempotency records are purged.
const PURGE_INTERVAL: Duration = Duration::from_mins(10);

/// Builds the HTTP server on `listener` (not yet running: await or spawn the result).
///
/// # Errors
/// When keys cannot be loaded, `DATABASE_URL` is missing, or the listener cannot be used.
pub fn build<C: Clock + Clone>(
    config: &Config,
    clock: C,
    listener: TcpListener,
) -> anyhow::Result<actix_web::dev::Server> {
    let key = keys::signing_key(config)?;
    let pepper = keys::secret_pepper(config)?;
    let hasher = SecretHasher::new(&pepper).context("the secret pepper is too short")?;
    let verifier = keys::verifier(config, &key)?;
    let store = PgStore::connect(&config.pg()?)?;

    spawn_idempotency_purge(store.clone(), clock.clone());

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
        hasher,
        config.admin_role.clone(),
    );
    let state = web::Data::new(AppState {
        admin,
        credentials,
        sealer: ResponseSealer::from_pepper(&pepper),
        idempotency: store.clone(),
        readiness: store,
        page_tokens: PageTokenCodec::new(key.derive_secret("iam/page-tokens/v1")),
    });
    let authenticator = web::Data::new(Authenticator::new(verifier, Arc::new(clock)));

    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(authenticator.clone())
            .wrap(from_fn(request_id::middleware))
            .configure(iam_http::configure::<Deployment<C>>)
    })
    .shutdown_timeout(config.shutdown_timeout.as_secs());
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    Ok(server.listen(listener)?.run())
}

fn spawn_idempotency_purge<C: Clock>(store: PgStore, clock: C) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PURGE_INTERVAL);
        loop {
            interval.tick().await;
            match store.purge_expired_idempotency_keys(clock.now()).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged expired idempotency records"),
                Err(error) => tracing::warn!(%error, "could not purge idempotency records"),
            }
        }
    });
}
