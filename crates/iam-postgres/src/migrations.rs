//! The schema migrations of the workspace's `migrations/` directory, embedded in the binary,
//! and how to apply them.
//!
//! diesel's migration harness is synchronous; it runs here on diesel-async's
//! [`AsyncConnectionWrapper`] (the same pure-Rust connection as the pool, no libpq) inside
//! [`tokio::task::spawn_blocking`].

use std::sync::LazyLock;

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::{Connection, RunQueryDsl, sql_query};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::MigrationError;

/// Every migration of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Advisory lock key held while migrating (an arbitrary constant: "iam-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x6961_6d2d_6d69_6772;

/// The versions of the embedded migrations, in order (`20261128000001`, …).
pub(crate) fn embedded_versions() -> &'static [String] {
    static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
        // Listing embedded migrations cannot fail: `EmbeddedMigrations::migrations` always
        // returns `Ok` (the list was checked when `embed_migrations!` expanded).
        let migrations =
            MigrationSource::<Pg>::migrations(&MIGRATIONS).unwrap_or_else(|_| Vec::new());
        let mut versions: Vec<String> = migrations
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
        versions.sort();
        versions
    });
    &VERSIONS
}

/// The version of the newest embedded migration: the schema version this code needs.
pub fn latest_embedded_version() -> &'static str {
    embedded_versions().last().map_or("", String::as_str)
}

/// Applies every pending embedded migration to the database at `url`, each in its own
/// transaction, and returns the versions it applied (empty when the schema was current).
///
/// Safe to call from async code: the blocking work runs on tokio's blocking pool. Concurrent
/// callers (several instances starting at once) are serialized by a Postgres advisory
/// lock, so each migration runs exactly once.
///
/// # Errors
/// [`MigrationError::Connect`] when the database is unreachable, [`MigrationError::Run`]
/// when a migration fails, [`MigrationError::Task`] if the blocking task panicked.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, MigrationError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(MigrationError::Connect)?;
        sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .execute(&mut conn)
            .map_err(|e| MigrationError::Run(e.into()))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(MigrationError::Run);
        // Closing the connection (dropping it) releases the session-level lock as well.
        sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .execute(&mut conn)
            .map_err(|e| MigrationError::Run(e.into()))?;
        applied
    })
    .await
    .map_err(MigrationError::Task)?
}
