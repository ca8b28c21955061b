//! The stores in PostgreSQL, shared by every instance of every service
//! that points at the same database (feature `postgres`).
//!
//! - [`Postgres::connect`] opens a connection pool on
//!   [`DatabaseConfig`] and
//!   applies the [migrations](MIGRATIONS) that are missing, under an
//!   advisory lock so that instances starting together do not race.
//!   Tables live in the configured schema (`campusfood` by default),
//!   created when missing.
//! - [`PgLedger`]: the inventory ledger, idempotent per order id and never
//!   negative with any number of instances deciding at once; calls made
//!   at the same time share one transaction and one commit.
//! - [`PgOrderStore`]: the async OrderService's orders and outbox; any
//!   instance answers for every order, and several relays share the
//!   outbox through leases ([`OUTBOX_LEASE`]).
//! - [`PgOutbox`]: Part A's kept notifications, leased the same way.
//! - [`PgProcessedIds`]: processed-id sets (orders already notified).
//!
//! Each store is namespaced by a name (see
//! [`names`](crate::stores::names)), so Parts A, B and C keep their own
//! ledgers and outboxes in one database.

use std::time::Duration;

use campusfood_core::config::DatabaseConfig;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::NoTls;

mod ledger;
mod stores;

pub use ledger::PgLedger;
pub use stores::{OUTBOX_LEASE, PgOrderStore, PgOutbox, PgProcessedIds};

/// The schema migrations, in order: `(version, name, SQL)`. Each is applied
/// once, in its own transaction, and recorded in `schema_migrations`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "stores", include_str!("migrations/0001_stores.sql")),
    (2, "releases", include_str!("migrations/0002_releases.sql")),
    (
        3,
        "order_hops",
        include_str!("migrations/0003_order_hops.sql"),
    ),
];

/// The advisory lock migrations are applied under (any fixed number; the
/// same in every instance).
const MIGRATION_LOCK: i64 = 0x6361_6d70_7573_6664; // "campusfd"

/// How long taking a connection (or opening one) may wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Postgres could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgError {
    /// The settings cannot work (a bad URL or schema name). Fix the input.
    #[error("database settings: {0}")]
    Config(String),
    /// The database did not answer or refused. Try again later.
    #[error("postgres at {url}: {reason}")]
    Unavailable {
        /// The URL, without its password.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A statement failed.
    #[error("postgres: {0}")]
    Query(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Query(describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Query(format!("no connection: {e}"))
    }
}

/// The message of a Postgres error, with the server's own words when it
/// sent any.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A connection pool on the shared database, with the schema migrated.
/// Cloning shares the pool.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    schema: String,
    url: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.url)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects to `config.url` and applies the missing migrations to
    /// `config.schema` (creating it).
    ///
    /// # Errors
    /// [`PgError::Config`] without a URL, for a URL that does not parse or
    /// a schema that is not a plain identifier; [`PgError::Unavailable`]
    /// when the database cannot be reached or refuses us.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, PgError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| PgError::Config("no database URL".to_owned()))?;
        let shown = config.redacted_url().unwrap_or_default();
        let schema = valid_schema(&config.schema)?;
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| PgError::Config(format!("{shown}: {e}")))?;
        pg.options(format!("-c search_path={schema}"))
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("campusfood");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        let this = Self {
            pool,
            schema: schema.to_owned(),
            url: shown,
        };
        this.migrate().await.map_err(|e| match e {
            PgError::Query(reason) => PgError::Unavailable {
                url: this.url.clone(),
                reason,
            },
            other => other,
        })?;
        tracing::info!(url = %this.url, schema = %this.schema, "postgres stores ready");
        Ok(this)
    }

    /// The pool, for the stores.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The schema the tables are in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Applies what [`MIGRATIONS`] holds that the database does not, under
    /// a session advisory lock.
    async fn migrate(&self) -> Result<(), PgError> {
        let mut client = self.pool.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let applied = self.apply_missing(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        applied?;
        unlocked?;
        Ok(())
    }

    async fn apply_missing(&self, client: &mut deadpool_postgres::Client) -> Result<(), PgError> {
        let schema = &self.schema;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                     version    integer PRIMARY KEY,
                     name       text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            ))
            .await?;
        let rows = client
            .query(
                &format!("SELECT version FROM {schema}.schema_migrations"),
                &[],
            )
            .await?;
        let done: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        for &(version, name, sql) in MIGRATIONS {
            if done.contains(&version) {
                continue;
            }
            let tx = client.transaction().await?;
            tx.batch_execute(sql).await.map_err(|e| {
                PgError::Query(format!("migration {version} ({name}): {}", describe(&e)))
            })?;
            tx.execute(
                &format!("INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"),
                &[&version, &name],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(version, name, schema = %schema, "migration applied");
        }
        Ok(())
    }
}

/// `schema` if it is a plain lower-case identifier (safe to splice into
/// SQL unquoted).
fn valid_schema(schema: &str) -> Result<&str, PgError> {
    let mut chars = schema.chars();
    let ok = matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 63;
    if ok {
        Ok(schema)
    } else {
        Err(PgError::Config(format!(
            "schema {schema:?} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_identifiers() {
        assert!(valid_schema("campusfood").is_ok());
        assert!(valid_schema("t_1").is_ok());
        for bad in ["", "1x", "a;drop", "A", "a b", &"x".repeat(64)] {
            assert!(valid_schema(bad).is_err(), "{bad}");
        }
    }
}
