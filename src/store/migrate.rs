//! The migration runner: `.sql` files under `migrations/{sqlite,postgres}/NNNN_name.sql`,
//! embedded in the binary, applied in version order, one transaction each, recorded in
//! `schema_migrations(version, name, applied_at)`.
//!
//! Adding a migration: write the file for BOTH backends with the same `NNNN_name`, and add
//! one line to the `migrations!` list below (a unit test checks it against the directories).

// `Executor::execute` rather than `RawSql::execute`: the latter is an `async fn` generic
// over the executor, whose future rustc cannot prove `Send` (higher-ranked lifetime bug).
use sqlx::Executor;

use super::{now_unix, Backend, Inner, Store, StoreError};

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// `0001_init`: the file stem, as reported by [`Store::migrate`].
    pub fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

/// The migrations, in order, once for both backends: each version has a file of the
/// same name in `migrations/sqlite` and `migrations/postgres`, so the two cannot drift.
macro_rules! migrations {
    ($($version:literal $name:literal $file:literal,)*) => {
        pub(crate) const SQLITE: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/sqlite/", $file)),
        }),*];
        pub(crate) const POSTGRES: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/postgres/", $file)),
        }),*];
    };
}

migrations! {
    1 "init" "0001_init.sql",
    2 "calls" "0002_calls.sql",
    3 "recordings" "0003_recordings.sql",
    4 "admin" "0004_admin.sql",
    5 "extension_routing" "0005_extension_routing.sql",
    6 "voicemail" "0006_voicemail.sql",
    7 "cluster" "0007_cluster.sql",
    8 "cluster_secret" "0008_cluster_secret.sql",
    9 "node_samples" "0009_node_samples.sql",
    10 "account_extension" "0010_account_extension.sql",
    11 "vip_handover" "0011_vip_handover.sql",
    12 "node_calls" "0012_node_calls.sql",
}

pub(crate) fn for_backend(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, \
     name TEXT NOT NULL, \
     applied_at BIGINT NOT NULL)";

/// PostgreSQL: serialise concurrent migrators (several nodes starting at once) per schema.
/// A transaction-level lock, so it is released on commit, rollback or a dropped connection.
const PG_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('ringfort.migrate.' || current_schema()))";

fn mig_err(version: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Migration {
        version,
        reason: e.to_string(),
    }
}

pub(crate) async fn run(store: &Store) -> Result<Vec<String>, StoreError> {
    let backend = store.backend();
    let migrations = for_backend(backend);
    let binary_version = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    // SQLite: BEGIN IMMEDIATE takes the write lock up front, so the read-then-write below
    // cannot fail with SQLITE_BUSY_SNAPSHOT against a concurrent writer.
    let begin = backend.begin_write_sql();

    // The same body for both pool types; each expansion is type-checked on its own.
    macro_rules! body {
        ($pool:expr) => {{
            let pool = $pool;
            let mut tx = pool.begin_with(begin).await?;
            if backend == Backend::Postgres {
                sqlx::query(PG_LOCK).execute(&mut *tx).await?;
            }
            (&mut *tx).execute(sqlx::raw_sql(CREATE_TABLE)).await?;
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;

            let mut applied = std::collections::BTreeSet::new();
            for (version, name) in rows {
                if version > binary_version {
                    return Err(StoreError::NewerSchema {
                        db_version: version,
                        binary_version,
                    });
                }
                match migrations.iter().find(|m| m.version == version) {
                    Some(m) if m.name == name => {}
                    Some(m) => {
                        return Err(mig_err(
                            version,
                            format!(
                                "database recorded it as {name:?}, this binary calls it {:?}",
                                m.name
                            ),
                        ))
                    }
                    None => {
                        return Err(mig_err(
                            version,
                            format!("database recorded {name:?}, unknown to this binary"),
                        ))
                    }
                }
                applied.insert(version);
            }

            let mut now_applied = Vec::new();
            for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
                let mut tx = pool.begin_with(begin).await?;
                if backend == Backend::Postgres {
                    sqlx::query(PG_LOCK).execute(&mut *tx).await?;
                }
                // Re-check under the lock: another process may have applied it meanwhile.
                let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_some() {
                    continue;
                }
                (&mut *tx)
                    .execute(sqlx::raw_sql(m.sql))
                    .await
                    .map_err(|e| mig_err(m.version, e))?;
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.name)
                .bind(now_unix())
                .execute(&mut *tx)
                .await
                .map_err(|e| mig_err(m.version, e))?;
                tx.commit().await.map_err(|e| mig_err(m.version, e))?;
                tracing::info!(migration = %m.label(), backend = ?backend, "applied migration");
                now_applied.push(m.label());
            }
            Ok(now_applied)
        }};
    }

    match &store.inner {
        Inner::Sqlite(pool) => body!(pool),
        Inner::Postgres(pool) => body!(pool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut out: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".sql").map(str::to_owned))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn embedded_lists_match_the_directories() {
        let sqlite: Vec<String> = SQLITE.iter().map(Migration::label).collect();
        let pg: Vec<String> = POSTGRES.iter().map(Migration::label).collect();
        assert_eq!(
            sqlite,
            files("sqlite"),
            "migrations/sqlite vs migrate::SQLITE"
        );
        assert_eq!(
            pg,
            files("postgres"),
            "migrations/postgres vs migrate::POSTGRES"
        );
        assert_eq!(sqlite, pg, "both backends must have the same migrations");
    }

    #[test]
    fn versions_strictly_increase() {
        for list in [SQLITE, POSTGRES] {
            for w in list.windows(2) {
                assert!(w[0].version < w[1].version);
            }
        }
    }
}
