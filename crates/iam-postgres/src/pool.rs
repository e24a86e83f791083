//! The connection pool: diesel-async's deadpool integration with explicit timeouts.
//!
//! Connections are recycled without a test query ([`RecyclingMethod::Fast`]): a checkout costs
//! no round trip. A connection whose socket closed (database restart) is detected as broken
//! and replaced on the next checkout; the one request that meets it first fails with
//! `StoreError::Unavailable`.

use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::Timeouts;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};

use crate::error::DbError;

/// How to reach Postgres and how many connections to keep.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database` (key-value strings work too).
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: usize,
    /// Longest time to establish one new connection.
    pub connect_timeout: Duration,
    /// Longest time a request waits for a free connection.
    pub checkout_timeout: Duration,
}

impl PgConfig {
    /// Default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default checkout timeout.
    pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A configuration for `url` with the default size and timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            checkout_timeout: Self::DEFAULT_CHECKOUT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for PgConfig {
    /// Leaves out the URL: it may contain a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("checkout_timeout", &self.checkout_timeout)
            .finish()
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolBuildError {
    /// `max_connections` was 0.
    #[error("max_connections must be at least 1")]
    NoConnections,
    /// deadpool refused the configuration.
    #[error("cannot build the connection pool")]
    Build(#[source] deadpool::managed::BuildError),
}

/// A pool of Postgres connections; cloning it is cheap (all clones share one pool).
///
/// Building it opens no connection: connections are created on demand, each within
/// [`PgConfig::connect_timeout`].
#[derive(Clone)]
pub struct PgPool {
    inner: Pool<AsyncPgConnection>,
}

/// A snapshot of the pool's usage (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgPoolStatus {
    /// Most connections the pool opens.
    pub max_size: usize,
    /// Connections currently open (idle and in use).
    pub size: usize,
    /// Idle connections ready for checkout.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

impl PgPool {
    /// Builds a pool (tokio runtime) with the configured size and timeouts.
    ///
    /// # Errors
    /// [`PoolBuildError`] when `max_connections` is 0 or deadpool rejects the configuration.
    pub fn new(config: &PgConfig) -> Result<Self, PoolBuildError> {
        Self::with_manager_config(config, ManagerConfig::default())
    }

    /// As [`Self::new`], with `manager_config`'s connection setup (its recycling method is
    /// replaced by [`RecyclingMethod::Fast`]).
    pub(crate) fn with_manager_config(
        config: &PgConfig,
        mut manager_config: ManagerConfig<AsyncPgConnection>,
    ) -> Result<Self, PoolBuildError> {
        if config.max_connections == 0 {
            return Err(PoolBuildError::NoConnections);
        }
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::new_with_config(config.url.clone(), manager_config);
        let inner = Pool::builder(manager)
            .max_size(config.max_connections)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(config.checkout_timeout),
                create: Some(config.connect_timeout),
                recycle: Some(config.checkout_timeout),
            })
            .build()
            .map_err(PoolBuildError::Build)?;
        Ok(Self { inner })
    }

    /// The pool's current usage.
    pub fn status(&self) -> PgPoolStatus {
        let status = self.inner.status();
        PgPoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        }
    }

    /// Checks a connection out, within the checkout and connect timeouts.
    pub(crate) async fn get(&self) -> Result<Object<AsyncPgConnection>, DbError> {
        Ok(self.inner.get().await?)
    }
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
