//! The one place where database and pool failures become [`StoreError`]s.
//!
//! - Pool checkout or connect timeouts, refused or dropped connections, a server that is
//!   shutting down or starting up, a statement cancelled by `statement_timeout` (a stalled
//!   database): [`StoreError::Unavailable`] (retryable, HTTP 503).
//! - Everything else (constraint violations the adapter did not expect, a stored row that
//!   fails domain parsing, SQL errors): [`StoreError::Unexpected`].

use std::error::Error as StdError;

use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError as ManagerError;
use diesel_async::pooled_connection::deadpool::PoolError;
use iam_domain::ports::StoreError;

/// A failure while talking to Postgres: either getting a connection or running a query.
#[derive(Debug)]
pub(crate) enum DbError {
    /// Checking a connection out of the pool failed.
    Pool(PoolError),
    /// A query (or transaction control statement) failed.
    Query(DieselError),
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        DbError::Pool(e)
    }
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        DbError::Query(e)
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Pool(e) => pool_error(e),
            DbError::Query(e) => query_error(e),
        }
    }
}

/// A value read from the database that breaks a domain invariant.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unexpected(format!("stored data is invalid: {what}").into())
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) | PoolError::Closed => StoreError::Unavailable(Box::new(e)),
        PoolError::Backend(ManagerError::ConnectionError(ref inner)) => match inner {
            ConnectionError::InvalidCString(_) | ConnectionError::InvalidConnectionUrl(_) => {
                StoreError::Unexpected(Box::new(e))
            }
            _ => StoreError::Unavailable(Box::new(e)),
        },
        PoolError::Backend(ManagerError::QueryError(inner)) => query_error(inner),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Unexpected(Box::new(e))
        }
    }
}

fn query_error(e: DieselError) -> StoreError {
    if is_connection_failure(&e) {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Unexpected(Box::new(e))
    }
}

/// Whether `e` means the connection (or the server) went away rather than the query being
/// wrong.
fn is_connection_failure(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        // SQLSTATE class 57 (operator intervention: admin shutdown, crash shutdown, cannot
        // connect now) is reported by diesel as `Unknown` without the code; recognise it by
        // PostgreSQL's (English) message texts.
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            message.starts_with("terminating connection")
                || message.starts_with("the database system is")
                // 57014: `statement_timeout` (the request deadline) or a cancel request.
                || message.starts_with("canceling statement due to")
        }
        DieselError::RollbackErrorOnCommit { commit_error, .. } => {
            is_connection_failure(commit_error)
        }
        _ => false,
    }
}

/// Why [`run_migrations`](crate::run_migrations) failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database could not be reached.
    #[error("cannot connect to the database to run migrations")]
    Connect(#[source] ConnectionError),
    /// A migration failed (the failed migration's transaction was rolled back).
    #[error("running the migrations failed")]
    Run(#[source] Box<dyn StdError + Send + Sync>),
    /// The blocking task that ran the migrations panicked or was cancelled.
    #[error("the migration task did not complete")]
    Task(#[source] tokio::task::JoinError),
}
