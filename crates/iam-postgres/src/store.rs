//! [`PgStore`]: the handle every port implementation hangs off.

use crate::error::DbError;
use crate::pool::{Conn, PgConfig, PgPool, PoolBuildError};

/// The Postgres implementation of the storage ports (`ServiceAccountStore`,
/// `CredentialStore`, `TokenStore`, `Directory`, `IdempotencyStore`, `Readiness`). Cloning it is cheap:
/// clones share one [`PgPool`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store using `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A store with a new pool built from `config` (no connection is opened yet).
    ///
    /// # Errors
    /// [`PoolBuildError`] as for [`PgPool::new`].
    pub fn connect(config: &PgConfig) -> Result<Self, PoolBuildError> {
        Ok(Self::new(PgPool::new(config)?))
    }

    /// The pool (for metrics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks a connection out of the pool.
    pub(crate) async fn conn(&self) -> Result<Conn, DbError> {
        self.pool.get().await
    }
}
