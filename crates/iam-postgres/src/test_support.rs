//! Databases for tests (cargo feature `test-support`; never used in production code).
//!
//! [`TestDatabase::create`] gives a test its own database, cloned in a few milliseconds from
//! a migrated template with `CREATE DATABASE … TEMPLATE …`, and drops it when the
//! [`TestDatabase`] is dropped. The template is named after a fingerprint of the embedded
//! migrations (names and contents), so a changed migration gets a fresh template; it is
//! built once, under a Postgres advisory lock, so parallel test binaries do not race.
//!
//! ```no_run
//! # async fn demo() {
//! use iam_postgres::test_support::TestDatabase;
//!
//! let db = TestDatabase::create().await; // reads DATABASE_URL
//! let store = db.store(); // a PgStore on the fresh database
//! // … exercise `store`, inspect `db.audit_events().await` …
//! # }
//! ```
//!
//! Environment: `DATABASE_URL` — URL of a role allowed to create databases (a superuser in
//! development and CI); its own database is used only for administrative statements.
//! `cargo xtask ci` provides it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use iam_domain::audit::AuditAction;
use time::OffsetDateTime;

use crate::directory::Operator;
use crate::migrations::run_migrations;
use crate::pool::{PgConfig, PgPool};
use crate::schema::audit_events;
use crate::store::PgStore;

/// The environment variable naming the administrative connection.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// Advisory lock key held while a template is built (arbitrary: "iam-tmpl" in ASCII).
const TEMPLATE_LOCK: i64 = 0x6961_6d2d_746d_706c;

/// Prefix of template database names.
const TEMPLATE_PREFIX: &str = "iam_template_";

/// Fingerprint of the embedded migrations, computed by `build.rs`.
const MIGRATIONS_FINGERPRINT: &str = env!("IAM_MIGRATIONS_FINGERPRINT");

/// A database of its own for one test, dropped (best effort) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

/// One stored audit event, as the tests inspect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Database-generated, increasing id.
    pub id: i64,
    /// Tenant.
    pub org_id: String,
    /// Acting principal's `sub`.
    pub actor: String,
    /// Action name (`service_account.create`, …).
    pub action: String,
    /// Resource path (`service-accounts/sa-ci`).
    pub resource: String,
    /// Names of the changed fields.
    pub changed_fields: Vec<String>,
    /// Request id.
    pub request_id: String,
    /// Source IP as text.
    pub source_ip: Option<String>,
    /// When it happened.
    pub occurred_at: OffsetDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(Pg))]
struct AuditRow {
    id: i64,
    org_id: String,
    actor: String,
    action: String,
    resource: String,
    changed_fields: Vec<Option<String>>,
    request_id: String,
    source_ip: Option<String>,
    occurred_at: OffsetDateTime,
}

impl TestDatabase {
    /// Creates a fresh, migrated database named `iam_test_<random>`.
    ///
    /// # Panics
    /// When `DATABASE_URL` is not set, or the database server refuses (test-only code: a
    /// test cannot run without its database).
    pub async fn create() -> TestDatabase {
        let admin_url = admin_url();
        let template = ensure_template(&admin_url).await;
        Self::create_from(admin_url, &template).await
    }

    /// Creates a fresh database without any migration (to test readiness and migrations).
    ///
    /// # Panics
    /// As [`TestDatabase::create`].
    pub async fn create_unmigrated() -> TestDatabase {
        Self::create_from(admin_url(), "template0").await
    }

    async fn create_from(admin_url: String, template: &str) -> TestDatabase {
        let name = format!("iam_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(&admin_url).await;
        create_database(&mut admin, &name, template).await;
        TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of this database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool configuration for this database, sized for tests.
    pub fn config(&self) -> PgConfig {
        PgConfig {
            max_connections: 8,
            ..PgConfig::new(self.url.clone())
        }
    }

    /// A [`PgStore`] on this database.
    ///
    /// # Panics
    /// Never in practice: the test configuration is valid.
    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.config())
            .unwrap_or_else(|e| panic!("cannot build a pool for {}: {e}", self.name))
    }

    /// A [`PgStore`] on this database whose connections count the statements they send
    /// (transaction control included), to check how many a store operation takes.
    ///
    /// # Panics
    /// Never in practice: the test configuration is valid.
    pub fn counting_store(&self) -> (PgStore, StatementCounter) {
        let counter = StatementCounter::default();
        let pool = PgPool::counting(&self.config(), Arc::clone(&counter.0))
            .unwrap_or_else(|e| panic!("cannot build a pool for {}: {e}", self.name));
        (PgStore::new(pool), counter)
    }

    /// A direct connection to this database (for raw SQL in tests).
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn connection(&self) -> AsyncPgConnection {
        connect(&self.url).await
    }

    /// Runs `sql` (one or more statements) on this database: for tests that inject faults,
    /// e.g. a trigger that fails a write.
    ///
    /// # Panics
    /// When the statements fail.
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connection().await;
        conn.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("cannot execute {sql:?}: {e}"));
    }

    /// The audit events of service accounts and credentials (what the API writes), oldest
    /// first; the events of directory applies are [`Self::directory_audit_events`].
    ///
    /// # Panics
    /// When the query fails.
    pub async fn audit_events(&self) -> Vec<AuditRecord> {
        self.all_audit_events()
            .await
            .into_iter()
            .filter(|event| event.action != AuditAction::DirectoryApplied.as_str())
            .collect()
    }

    /// The audit events of directory applies (`directory.apply`), oldest first.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn directory_audit_events(&self) -> Vec<AuditRecord> {
        self.all_audit_events()
            .await
            .into_iter()
            .filter(|event| event.action == AuditAction::DirectoryApplied.as_str())
            .collect()
    }

    async fn all_audit_events(&self) -> Vec<AuditRecord> {
        let mut conn = self.connection().await;
        let rows = audit_events::table
            .order(audit_events::id.asc())
            .select(AuditRow::as_select())
            .load::<AuditRow>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot read audit_events: {e}"));
        rows.into_iter()
            .map(|row| AuditRecord {
                id: row.id,
                org_id: row.org_id,
                actor: row.actor,
                action: row.action,
                resource: row.resource,
                changed_fields: row.changed_fields.into_iter().flatten().collect(),
                request_id: row.request_id,
                source_ip: row.source_ip,
                occurred_at: row.occurred_at,
            })
            .collect()
    }

    /// What a test's directory apply records as its operator.
    pub fn operator() -> Operator {
        #[expect(
            clippy::disallowed_methods,
            reason = "test support: the real time is fine"
        )]
        let at = OffsetDateTime::now_utc();
        Operator {
            actor: "operator:test".into(),
            run_id: format!("directory-apply-{}", uuid::Uuid::new_v4().simple()),
            at: iam_domain::ports::to_storage_precision(at),
        }
    }
}

impl Drop for TestDatabase {
    /// Drops the database (terminating connections still open to it). Best effort: a failure
    /// is logged, and leftovers are harmless (`iam_test_*` names are never reused).
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // `drop` may run inside a tokio runtime, which must not be blocked on: use a thread
        // with a runtime of its own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.batch_execute(&statement)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(database = %self.name, "cannot drop test database: {e}"),
            Err(_) => tracing::warn!(database = %self.name, "dropping test database panicked"),
        }
    }
}

fn admin_url() -> String {
    std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL tests need a database server: set {DATABASE_URL_VAR} \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres) or run `cargo xtask ci`"
        )
    })
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database server: {e}"))
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// `CREATE DATABASE name TEMPLATE template`, retrying while the template is briefly busy
/// (a connection that just closed may still be exiting on the server).
async fn create_database(admin: &mut AsyncPgConnection, name: &str, template: &str) {
    let statement = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
    let mut attempt = 0;
    loop {
        attempt += 1;
        match admin.batch_execute(&statement).await {
            Ok(()) => return,
            Err(e) if attempt < 20 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => panic!("cannot create test database {name} from {template}: {e}"),
        }
    }
}

/// Makes sure the migrated template for the current migrations exists; returns its name.
async fn ensure_template(admin_url: &str) -> String {
    static READY: OnceLock<String> = OnceLock::new();
    if let Some(name) = READY.get() {
        return name.clone();
    }
    let template = format!("{TEMPLATE_PREFIX}{MIGRATIONS_FINGERPRINT}");
    let mut admin = connect(admin_url).await;
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        panic!("cannot prepare the template database {template}: {what}: {e}")
    };
    admin
        .batch_execute(&format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})"))
        .await
        .unwrap_or_else(|e| fail("lock", &e));
    let ready = diesel::select(
        diesel::dsl::sql::<Bool>(
            "EXISTS (SELECT 1 FROM pg_database WHERE datistemplate AND datname = ",
        )
        .bind::<Text, _>(&template)
        .sql(")"),
    )
    .get_result::<bool>(&mut admin)
    .await
    .unwrap_or_else(|e| fail("lookup", &e));
    if !ready {
        // A leftover of an interrupted build is not marked as template: rebuild it.
        // (One statement per call: a multi-statement string runs as one transaction, and
        // `CREATE/DROP DATABASE` refuse to run inside one.)
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{template}\" WITH (FORCE)"
            ))
            .await
            .unwrap_or_else(|e| fail("drop leftover", &e));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{template}\" TEMPLATE template0"
            ))
            .await
            .unwrap_or_else(|e| fail("create", &e));
        run_migrations(&with_database(admin_url, &template))
            .await
            .unwrap_or_else(|e| fail("migrate", &e));
        admin
            .batch_execute(&format!("ALTER DATABASE \"{template}\" IS_TEMPLATE true"))
            .await
            .unwrap_or_else(|e| fail("mark as template", &e));
        remove_stale_templates(&mut admin, &template).await;
    }
    admin
        .batch_execute(&format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"))
        .await
        .unwrap_or_else(|e| fail("unlock", &e));
    READY.get_or_init(|| template).clone()
}

/// Drops templates of older migration sets (best effort: one in use is left alone).
async fn remove_stale_templates(admin: &mut AsyncPgConnection, current: &str) {
    let stale = diesel::dsl::sql::<Text>("SELECT datname FROM pg_database WHERE datname LIKE ")
        .bind::<Text, _>(format!("{TEMPLATE_PREFIX}%"))
        .sql(" AND datname <> ")
        .bind::<Text, _>(current)
        .load::<String>(admin)
        .await
        .unwrap_or_default();
    for name in stale {
        let unmarked = admin
            .batch_execute(&format!("ALTER DATABASE \"{name}\" IS_TEMPLATE false"))
            .await;
        let dropped = match unmarked {
            Ok(()) => {
                admin
                    .batch_execute(&format!("DROP DATABASE \"{name}\""))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = dropped {
            tracing::info!(database = %name, "stale template left in place: {e}");
        }
    }
}

/// How many statements the connections of a [`TestDatabase::counting_store`] sent.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter(Arc<AtomicUsize>);

impl StatementCounter {
    /// Statements sent since the store was made or since the last [`Self::take`].
    pub fn get(&self) -> usize {
        AtomicUsize::load(&self.0, Ordering::SeqCst)
    }

    /// Returns the count and starts again from 0.
    pub fn take(&self) -> usize {
        self.0.swap(0, Ordering::SeqCst)
    }
}

/// `EXPLAIN <query>`: the plan Postgres would use for `query`, one line per row.
#[derive(Debug)]
pub(crate) struct Explain<Q>(pub(crate) Q);

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Explain<Q> {
    type SqlType = Text;
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        out.push_sql("EXPLAIN ");
        self.0.walk_ast(out.reborrow())
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database_name() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
