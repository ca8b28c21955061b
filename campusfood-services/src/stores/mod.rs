//! Where the services keep their state, chosen once per process: embedded
//! redb files in the data directory (the default; one process per file),
//! or — with `CAMPUSFOOD_DATABASE_URL` and feature `postgres` — one
//! PostgreSQL database that any number of instances share.
//!
//! Every store has a [name](names): its redb file is `<name>.redb`, and in
//! Postgres its rows are namespaced by the name. A process opens only the
//! stores of the services it runs, so one process per service works from
//! one folder.
//!
//! Every store is a small trait, found here: the ledger and outbox traits
//! are core's ([`InventoryLedger`], [`Outbox`], re-exported — the product's
//! design keeps them, and their memory and redb implementations, in
//! `campusfood-core`); the order store and the processed-id sets are this
//! crate's ([`orders`], [`processed`]), with their implementations beside
//! the shared ones: [`memory`], [`redb`] and `postgres` (feature `postgres`;
//! its types are named without links, so that these docs build without it).
//!
//! | store | trait | in memory | embedded | shared |
//! |---|---|---|---|---|
//! | inventory ledger | [`InventoryLedger`] | [`MemoryLedger`](campusfood_core::ledger::MemoryLedger) | [`RedbLedger`] | `postgres::PgLedger` |
//! | orders + outbox (async) | [`OrderStore`] | [`MemoryOrderStore`] | [`RedbOrderStore`] | `postgres::PgOrderStore` |
//! | kept notifications (sync) | [`Outbox`] | [`MemoryOutbox`](campusfood_core::outbox::MemoryOutbox) | [`RedbOutbox`] | `postgres::PgOutbox` |
//! | processed ids (notified orders) | [`ProcessedIds`] | [`MemoryProcessedIds`] | [`RedbProcessedIds`] | `postgres::PgProcessedIds` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use campusfood_core::Config;
use campusfood_core::OrderId;
use campusfood_core::group_commit::{CommitError, Flush};
use campusfood_core::ledger::{LedgerError, LedgerPeek, RedbLedger};
use campusfood_core::outbox::{OutboxError, RedbOutbox};
use campusfood_core::stock::StockSpec;
use thiserror::Error;

pub mod memory;
pub mod orders;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
pub mod processed;
pub mod redb;

pub use self::memory::{MemoryOrderStore, MemoryProcessedIds};
pub use self::orders::{OrderStore, Placed, advanced};
pub use self::processed::ProcessedIds;
pub use self::redb::{RedbOrderStore, RedbProcessedIds};
pub use campusfood_core::ledger::InventoryLedger;
pub use campusfood_core::outbox::Outbox;

/// The store failed. Not the caller's fault: try again later.
#[derive(Debug, Clone, Error)]
#[error("order store: {0}")]
pub struct StoreError(pub String);

impl From<CommitError> for StoreError {
    fn from(e: CommitError) -> Self {
        Self(e.to_string())
    }
}

/// The stores' names, one per service and architecture.
pub mod names {
    /// Part A: InventoryService's ledger.
    pub const SYNC_LEDGER: &str = "sync-inventory";
    /// Part A: OrderService's kept notifications.
    pub const SYNC_NOTIFICATION_OUTBOX: &str = "sync-order-outbox";
    /// Part A: NotificationService's orders already notified.
    pub const SYNC_NOTIFIED: &str = "sync-notified";
    /// Part B: InventoryService's ledger.
    pub const ASYNC_LEDGER: &str = "async-inventory";
    /// Part B: OrderService's orders and outbox.
    pub const ASYNC_ORDERS: &str = "async-orders";
    /// Part B: NotificationService's orders already notified.
    pub const ASYNC_NOTIFIED: &str = "async-notified";
    /// Part C: the inventory consumer's ledger.
    pub const STREAMING_LEDGER: &str = "streaming-inventory";

    /// The embedded file of the store `name`: `<name>.redb`.
    pub fn file(name: &str) -> String {
        format!("{name}.redb")
    }
}

/// The stores could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoresError {
    /// A database URL was given to a build without Postgres support.
    #[error(
        "CAMPUSFOOD_DATABASE_URL is set, but this build has no Postgres support \
         (build with feature `postgres`)"
    )]
    NoPostgres,
    /// Postgres could not be used.
    /// (The Postgres error is this one's message, not its source, so that
    /// the hint is printed once.)
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[error("{0} (start it with `scripts/brokers.sh up postgres`)")]
    Postgres(postgres::PgError),
}

#[cfg(feature = "postgres")]
impl From<postgres::PgError> for StoresError {
    fn from(e: postgres::PgError) -> Self {
        Self::Postgres(e)
    }
}

/// Where this process's stores live. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub enum Stores {
    /// One redb file per store in this directory. A file is open in one
    /// process at a time.
    Embedded(PathBuf),
    /// One Postgres database shared by every instance.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(postgres::Postgres),
}

impl Stores {
    /// Postgres when `config.database.url` is set (connecting and
    /// migrating), else redb files in `config.data_dir`.
    ///
    /// # Errors
    /// [`StoresError`] when the database cannot be used.
    pub async fn open(config: &Config) -> Result<Self, StoresError> {
        match &config.database.url {
            None => Ok(Self::Embedded(config.data_dir.clone())),
            #[cfg(feature = "postgres")]
            Some(_) => Ok(Self::Postgres(
                postgres::Postgres::connect(&config.database).await?,
            )),
            #[cfg(not(feature = "postgres"))]
            Some(_) => Err(StoresError::NoPostgres),
        }
    }

    /// Redb files in `dir`.
    pub fn embedded(dir: impl AsRef<Path>) -> Self {
        Self::Embedded(dir.as_ref().to_path_buf())
    }

    /// Whether the stores are shared between instances.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::Embedded(_))
    }

    /// Says where the stores are, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded(dir) => format!("redb files in {}", dir.display()),
            #[cfg(feature = "postgres")]
            Self::Postgres(pg) => format!("{pg:?}"),
        }
    }

    /// The inventory ledger `name`, stocked with `stock` when new.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when it cannot be opened (in use by another
    /// process, not writable, database unreachable).
    ///
    /// `flush` says how a redb ledger's batches reach the disk:
    /// [`Flush::Each`] for HTTP callers, [`Flush::Shared`] for queue
    /// consumers. Postgres commits each reservation itself.
    pub async fn ledger(
        &self,
        name: &str,
        stock: &StockSpec,
        flush: Flush,
    ) -> Result<Arc<dyn InventoryLedger>, LedgerError> {
        match self {
            Self::Embedded(dir) => Ok(Arc::new(RedbLedger::open_with(
                dir.join(names::file(name)),
                stock,
                flush,
            )?)),
            #[cfg(feature = "postgres")]
            Self::Postgres(pg) => Ok(Arc::new(postgres::PgLedger::open(pg, name, stock).await?)),
        }
    }

    /// The decision for `order` in the inventory ledger `name`, looked at
    /// from outside the process that writes it: nothing is created,
    /// stocked or repaired. A redb file held by its running writer is
    /// [`LedgerPeek::InUse`] (redb lets no reader in beside a writer);
    /// Postgres is read beside its writers.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when the store cannot be read.
    pub async fn peek_ledger(
        &self,
        name: &str,
        order: &OrderId,
    ) -> Result<LedgerPeek, LedgerError> {
        match self {
            Self::Embedded(dir) => {
                let (path, order) = (dir.join(names::file(name)), order.clone());
                tokio::task::spawn_blocking(move || RedbLedger::peek(path, &order))
                    .await
                    .map_err(|e| LedgerError::Storage(format!("ledger read task failed: {e}")))?
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(pg) => postgres::PgLedger::peek(pg, name, order).await,
        }
    }

    /// The order store (orders and outbox) `name`; `flush` says how a redb
    /// store's status advances reach the disk (placed orders are each
    /// durable before `place` returns).
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be opened.
    pub fn order_store(&self, name: &str, flush: Flush) -> Result<Arc<dyn OrderStore>, StoreError> {
        match self {
            Self::Embedded(dir) => Ok(Arc::new(RedbOrderStore::open_with(
                dir.join(names::file(name)),
                flush,
            )?)),
            #[cfg(feature = "postgres")]
            Self::Postgres(pg) => Ok(Arc::new(postgres::PgOrderStore::new(pg, name))),
        }
    }

    /// The processed-id set `name`; `flush` as for
    /// [`ledger`](Self::ledger).
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be opened.
    pub fn processed(&self, name: &str, flush: Flush) -> Result<Arc<dyn ProcessedIds>, StoreError> {
        match self {
            Self::Embedded(dir) => Ok(Arc::new(RedbProcessedIds::open_with(
                dir.join(names::file(name)),
                flush,
            )?)),
            #[cfg(feature = "postgres")]
            Self::Postgres(pg) => Ok(Arc::new(postgres::PgProcessedIds::new(pg, name))),
        }
    }

    /// The outbox `name`.
    ///
    /// # Errors
    /// [`OutboxError`] when it cannot be opened.
    pub fn outbox(&self, name: &str) -> Result<Arc<dyn Outbox>, OutboxError> {
        match self {
            Self::Embedded(dir) => Ok(Arc::new(RedbOutbox::open(dir.join(names::file(name)))?)),
            #[cfg(feature = "postgres")]
            Self::Postgres(pg) => Ok(Arc::new(postgres::PgOutbox::new(pg, name))),
        }
    }
}
