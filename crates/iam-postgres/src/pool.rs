//! The connection pool: diesel-async's deadpool integration with explicit timeouts.
//!
//! Connections are recycled without a test query ([`RecyclingMethod::Fast`]): a checkout costs
//! no round trip. A connection whose socket closed (database restart) is detected as broken
//! and replaced on the next checkout; the one request that meets it first fails with
//! `StoreError::Unavailable`.
//!
//! Every new connection gets [`PgConfig::statement_timeout`] (PostgreSQL's
//! `statement_timeout`): a statement stuck behind a lock is cancelled by the server, and the
//! connection stays usable. A connection whose statement was abandoned by the caller (the
//! request's deadline dropped the future mid-query, see [`Conn`]) is never returned to the
//! pool: its answer may still be on the way, or the backend may hang, and the next request
//! would wait behind it. It is closed instead, and the pool opens a fresh one.
//!
//! A connection's I/O runs as a task on the async runtime that opened it. A query from
//! another thread then costs two cross-thread wake-ups (there and back), which on a busy
//! machine is a large share of a request's CPU. So a thread serving requests on a runtime of
//! its own (an HTTP worker) can take a pool of its own with [`PgPool::attach_thread`]: every
//! connection it uses was opened, and is driven, on that thread. Other threads use the
//! shared pool.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{Timeouts, WeakPool};
use diesel::ConnectionError;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

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
    /// PostgreSQL's `statement_timeout` for every connection (`None`: the server's setting).
    /// The server binary sets it to the request deadline.
    pub statement_timeout: Option<Duration>,
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
            statement_timeout: None,
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
            .field("statement_timeout", &self.statement_timeout)
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
    /// Pools of threads attached with [`PgPool::attach_thread`].
    attached: Arc<Attached>,
    /// Tests only: counts every statement sent (see `TestDatabase::counting_store`).
    statements: Option<Arc<AtomicUsize>>,
}

/// A snapshot of the pool's usage (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
        if config.max_connections == 0 {
            return Err(PoolBuildError::NoConnections);
        }
        Ok(Self {
            inner: build_pool(config, config.max_connections)?,
            attached: Arc::new(Attached {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                config: config.clone(),
                pools: std::sync::Mutex::new(Vec::new()),
            }),
            statements: None,
        })
    }

    /// Gives the calling thread a pool of its own, of `size` connections: from now on, every
    /// connection this thread checks out comes from it. A connection's I/O task runs on the
    /// runtime that opened it, so a thread whose runtime serves requests (an HTTP worker)
    /// and only uses connections it opened itself never wakes another thread for a query.
    ///
    /// # Errors
    /// [`PoolBuildError`] when `size` is 0.
    pub fn attach_thread(&self, size: usize) -> Result<(), PoolBuildError> {
        if size == 0 {
            return Err(PoolBuildError::NoConnections);
        }
        let pool = build_pool(&self.attached.config, size)?;
        self.attached
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(pool.weak());
        let id = self.attached.id;
        THREAD_POOLS.with_borrow_mut(|pools| {
            pools.retain(|(pool_id, _)| *pool_id != id);
            pools.push((id, pool));
        });
        Ok(())
    }

    /// The pool the calling thread checks connections out of.
    fn current(&self) -> Pool<AsyncPgConnection> {
        let id = self.attached.id;
        THREAD_POOLS
            .with_borrow(|pools| {
                pools
                    .iter()
                    .find(|(pool_id, _)| *pool_id == id)
                    .map(|(_, pool)| pool.clone())
            })
            .unwrap_or_else(|| self.inner.clone())
    }

    /// As [`Self::new`], counting every statement its connections send in `statements`.
    #[cfg(feature = "test-support")]
    pub(crate) fn counting(
        config: &PgConfig,
        statements: Arc<AtomicUsize>,
    ) -> Result<Self, PoolBuildError> {
        Ok(Self {
            statements: Some(statements),
            ..Self::new(config)?
        })
    }

    /// The pool's current usage.
    pub fn status(&self) -> PgPoolStatus {
        let attached = self
            .attached
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(WeakPool::upgrade)
            .collect::<Vec<_>>();
        std::iter::once(&self.inner).chain(&attached).fold(
            PgPoolStatus::default(),
            |total, pool| {
                let status = pool.status();
                PgPoolStatus {
                    max_size: total.max_size + status.max_size,
                    size: total.size + status.size,
                    available: total.available + status.available,
                    waiting: total.waiting + status.waiting,
                }
            },
        )
    }

    /// Checks a connection out, within the checkout and connect timeouts.
    pub(crate) async fn get(&self) -> Result<Conn, DbError> {
        let pool = self.current();
        let mut object = pool.get().await?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        object.set_instrumentation(InFlight {
            in_flight: Arc::clone(&in_flight),
            statements: self.statements.clone(),
        });
        Ok(Conn {
            object: Some(object),
            in_flight,
        })
    }
}

/// Identifies each [`PgPool`] (and its clones) in [`THREAD_POOLS`].
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The pools attached to this thread ([`PgPool::attach_thread`]), by pool id.
    static THREAD_POOLS: std::cell::RefCell<Vec<(u64, Pool<AsyncPgConnection>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What [`PgPool::attach_thread`] needs, shared by the clones of a pool.
struct Attached {
    id: u64,
    config: PgConfig,
    /// Every attached pool, for [`PgPool::status`].
    pools: std::sync::Mutex<Vec<WeakPool<AsyncDieselConnectionManager<AsyncPgConnection>>>>,
}

/// A deadpool of at most `size` connections configured by `config`.
fn build_pool(config: &PgConfig, size: usize) -> Result<Pool<AsyncPgConnection>, PoolBuildError> {
    let mut manager_config = ManagerConfig::default();
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup = Box::new(connection_setup(config.statement_timeout));
    let manager = AsyncDieselConnectionManager::new_with_config(config.url.clone(), manager_config);
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(config.checkout_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.checkout_timeout),
        })
        .build()
        .map_err(PoolBuildError::Build)
}

/// What every new connection runs first: [`PgConfig::statement_timeout`], if set.
fn connection_setup(
    statement_timeout: Option<Duration>,
) -> impl Fn(&str) -> Setup<'_> + Send + Sync {
    // PostgreSQL takes milliseconds up to `i32::MAX`; 0 would mean "no timeout".
    let setup = statement_timeout.map(|timeout| {
        format!(
            "SET statement_timeout = {}",
            timeout.as_millis().clamp(1, 2_147_483_647)
        )
    });
    move |url| {
        let setup = setup.clone();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            if let Some(setup) = setup {
                conn.batch_execute(&setup)
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        })
    }
}

/// The future of a connection's setup.
type Setup<'a> =
    Pin<Box<dyn Future<Output = diesel::ConnectionResult<AsyncPgConnection>> + Send + 'a>>;

/// A connection checked out of the pool. It goes back when dropped — unless a statement it
/// started has not finished (its future was dropped: the request ran out of time). Such a
/// connection may still receive that statement's answer, or its backend may hang; the next
/// user would wait behind it. It is closed instead, and the pool replaces it.
pub(crate) struct Conn {
    object: Option<Object<AsyncPgConnection>>,
    /// Statements started and not finished, counted by [`InFlight`].
    in_flight: Arc<AtomicUsize>,
}

impl Deref for Conn {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        // `object` is `Some` from checkout until `drop` takes it.
        self.object.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.object.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.in_flight.load(Ordering::Acquire) > 0
            && let Some(object) = self.object.take()
        {
            tracing::warn!(
                "closing a database connection whose statement was abandoned (request deadline)"
            );
            drop(Object::take(object));
        }
    }
}

/// Instrumentation of a checked-out connection: counts statements in flight (and, in tests,
/// every statement sent).
struct InFlight {
    in_flight: Arc<AtomicUsize>,
    statements: Option<Arc<AtomicUsize>>,
}

impl Instrumentation for InFlight {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                if let Some(statements) = &self.statements {
                    statements.fetch_add(1, Ordering::SeqCst);
                }
            }
            InstrumentationEvent::FinishQuery { .. } => {
                // Saturating: a finish without its start (none is known) must not wrap.
                let _ = self
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_sub(1))
                    });
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
