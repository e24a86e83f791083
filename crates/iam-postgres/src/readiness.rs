//! [`Readiness`]: the database answers and its schema is at least the embedded migrations'.

use diesel::dsl::max;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::RunQueryDsl;
use iam_domain::ports::{Readiness, StoreError};

use crate::error::DbError;
use crate::migrations::latest_embedded_version;
use crate::store::PgStore;

// diesel's own bookkeeping table (created by the migration harness, not by a migration, so it
// is not in the generated `schema.rs`).
diesel::table! {
    __diesel_schema_migrations (version) {
        version -> VarChar,
        run_on -> Timestamp,
    }
}

/// Whether migration version `applied` (the newest one the database recorded) satisfies
/// `needed`. Versions are digit strings of equal length, so they compare as strings; a
/// database ahead of the code (a newer release migrated it) is fine.
fn is_current(applied: Option<&str>, needed: &str) -> bool {
    applied.is_some_and(|applied| (applied.len(), applied) >= (needed.len(), needed))
}

impl Readiness for PgStore {
    async fn check(&self) -> Result<(), StoreError> {
        let needed = latest_embedded_version();
        let mut conn = self.conn().await?;
        let has_table = diesel::select(diesel::dsl::sql::<Bool>(
            "to_regclass('__diesel_schema_migrations') IS NOT NULL",
        ))
        .get_result::<bool>(&mut conn)
        .await
        .map_err(DbError::from)?;
        let applied = if has_table {
            __diesel_schema_migrations::table
                .select(max(__diesel_schema_migrations::version))
                .get_result::<Option<String>>(&mut conn)
                .await
                .map_err(DbError::from)?
        } else {
            None
        };
        if is_current(applied.as_deref(), needed) {
            Ok(())
        } else {
            Err(StoreError::Unexpected(
                format!(
                    "database migrations are pending: the schema is at version {}, this build \
                     needs {needed}",
                    applied.as_deref().unwrap_or("(none)")
                )
                .into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_current;

    #[test]
    fn a_schema_at_or_ahead_of_the_code_is_current_behind_or_missing_is_not() {
        assert!(is_current(Some("20261128000001"), "20261128000001"));
        assert!(is_current(Some("20270101000000"), "20261128000001"));
        assert!(!is_current(Some("20261127000009"), "20261128000001"));
        assert!(!is_current(None, "20261128000001"));
    }
}
