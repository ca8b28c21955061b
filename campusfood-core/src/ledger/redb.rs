//! A durable ledger in a [redb](https://docs.rs/redb) file, with group commit.
//!
//! # Design
//!
//! Every decision must be on disk before `reserve` answers, so that an
//! answered reservation survives `kill -9` and power loss. A durable commit
//! costs one `fsync`; paying it once per order would cap throughput at a few
//! thousand orders per second. Instead the ledger *group-commits*:
//!
//! - One dedicated writer thread ([`GroupCommit`], shared with the other
//!   durable stores) owns the write side. [`RedbLedger::reserve`] submits
//!   its request and awaits the answer.
//! - The writer blocks for the first request, then drains whatever else is
//!   already queued (at most [`MAX_BATCH`]), applies the whole batch in ONE
//!   write transaction in arrival order, commits once with
//!   [`Durability::Immediate`] (one `fsync`), and only then answers every
//!   request of the batch.
//! - Requests in one batch see each other: the transaction reads its own
//!   writes, so a second request for an order already decided earlier in the
//!   batch becomes a [`Reservation::Repeat`] of the first.
//! - While one batch is being committed the next one queues up, so the batch
//!   size adapts to the load: one request per commit when idle (latency of
//!   one `fsync`), hundreds per commit under load (throughput not bounded by
//!   the `fsync` rate).
//! - If the batch cannot be applied or committed, every request of the batch
//!   gets [`LedgerError::Storage`] and the transaction is aborted. (A failure
//!   inside redb's commit itself leaves the batch applied fully or not at all,
//!   but redb cannot always tell which; redb then refuses further writes until
//!   the file is reopened. Since `reserve` is idempotent, retrying the same
//!   orders after a restart returns whatever decision became durable.)
//!
//! Reads ([`stock`](InventoryLedger::stock),
//! [`reservation`](InventoryLedger::reservation),
//! [`reservation_count`](InventoryLedger::reservation_count)) do not go
//! through the writer: each runs its own read transaction on tokio's blocking
//! pool and sees every committed batch, so a read after an answered `reserve`
//! sees that reservation.
//!
//! [`release`](InventoryLedger::release) goes through the same writer, in
//! the same batches, so a release and a reservation of one order are
//! decided one after the other, never interleaved.
//!
//! # File layout
//!
//! Four tables: `stock` (item → level, `u64`), `reservations` (order id →
//! the [`ReservationRecord`] as JSON), `released_early` (order ids released
//! before they were decided) and `meta` (format version). The initial
//! stock is written only when the file is new; a restarted process keeps the
//! levels it had. (`released_early` is created when missing, so files
//! written before releases existed open as they are.)

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};

use super::{
    InventoryLedger, LedgerError, LedgerPeek, Release, Reservation, ReservationRecord,
    ReserveOutcome, decide, release_decided,
};
use crate::group_commit::{CommitError, Flush, GroupCommit, MAX_BATCH, SharedDb};
use crate::ids::OrderId;
use crate::order::{Item, Quantity};
use crate::stock::StockSpec;

/// Item name → stock level.
const STOCK: TableDefinition<'_, &str, u64> = TableDefinition::new("stock");
/// Order id → the decision, as JSON.
const RESERVATIONS: TableDefinition<'_, &str, &str> = TableDefinition::new("reservations");
/// Order ids released before they were decided: their reservation, should
/// it come, takes nothing.
const RELEASED_EARLY: TableDefinition<'_, &str, ()> = TableDefinition::new("released_early");
/// Bookkeeping: the format version, present once the initial stock is in.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// The key in [`META`] whose presence marks an initialised file.
const FORMAT_KEY: &str = "format_version";
/// The file format this code writes and reads.
const FORMAT_VERSION: u64 = 1;

/// One call, as the writer applies it.
enum Request {
    Reserve {
        order: OrderId,
        item: Item,
        qty: Quantity,
    },
    Release(OrderId),
}

/// The writer's answer to one [`Request`], of the same kind.
enum Reply {
    Reserve(Result<Reservation, LedgerError>),
    Release(Result<Release, LedgerError>),
}

/// A durable, group-committing [`InventoryLedger`] stored in a redb file.
///
/// - **Durable**: `reserve` answers only after its decision is committed
///   with an `fsync`, so an answered reservation survives `kill -9` and power
///   loss.
/// - **Group commit**: one writer thread takes every request queued at that
///   moment (up to [`MAX_BATCH`](Self::MAX_BATCH)), applies them in one write
///   transaction in arrival order — a duplicate later in the batch sees the
///   earlier one and becomes a [`Reservation::Repeat`] — commits once, then
///   answers them all. Idle, a call costs one `fsync`; under load, hundreds
///   of calls share one. [`commits`](Self::commits) counts the batches.
/// - **Failure**: if a batch cannot be applied or committed, every call in
///   it gets [`LedgerError::Storage`]. After a failed commit redb refuses
///   further writes until the file is reopened; as `reserve` is idempotent,
///   retrying after a restart returns whichever decision became durable.
/// - **Reads** ([`stock`](InventoryLedger::stock) and friends) run their own
///   read transaction on tokio's blocking pool, never through the writer,
///   and see every answered `reserve`.
/// - **Restart**: the initial stock is written only into a new file; see
///   [`open`](Self::open).
///
/// Cloning is cheap and shares the same file and writer. When the last clone
/// is dropped the writer thread finishes what is queued and ends, and the
/// drop waits for it (at most one commit), so the file can be reopened right
/// after.
#[derive(Debug, Clone)]
pub struct RedbLedger {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<SharedDb>,
    path: PathBuf,
    /// Dropped after `db` (declaration order): its drop waits for the
    /// writer thread, so the file is closed when the last handle is gone.
    writer: GroupCommit<Request, Reply>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbLedger")
            .field("path", &self.path)
            .field("commits", &self.writer.commits())
            .finish_non_exhaustive()
    }
}

impl RedbLedger {
    /// The most requests the writer applies in one write transaction (one
    /// commit, one `fsync`).
    pub const MAX_BATCH: usize = MAX_BATCH;

    /// Opens the ledger in the file at `path`, creating the file (and its
    /// parent directories) if needed.
    ///
    /// `initial` is written only when the file is new. A file that already
    /// holds a ledger keeps its stock levels and records, whatever `initial`
    /// says: a restarted process continues where it stopped.
    ///
    /// Blocks on file I/O (after a crash, redb repairs the file while
    /// opening, which reads all of it), so call it at start-up or from a
    /// blocking context. Fails with [`LedgerError::Storage`] if the file is
    /// not a redb database, is open in another process, or cannot be written.
    ///
    /// Each batch of reservations is made durable on its own
    /// ([`Flush::Each`]); see [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>, initial: &StockSpec) -> Result<Self, LedgerError> {
        Self::open_with(path, initial, Flush::Each)
    }

    /// Like [`open`](Self::open), its batches made durable as `flush` says:
    /// [`Flush::Shared`] for a ledger written by queue consumers, whose
    /// reservations are answered (and their messages acked) a few
    /// milliseconds later but share one `fsync`.
    pub fn open_with(
        path: impl AsRef<Path>,
        initial: &StockSpec,
        flush: Flush,
    ) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let db = SharedDb::open_path(&path).map_err(commit_error)?;
        Self::with_db(db, path, initial, flush)
    }

    /// A ledger on `db` (opened, and reopened after a failed write, by
    /// whatever `db` was made with: a file, or another redb backend),
    /// named `path` in logs, its batches made durable as `flush` says.
    pub fn with_db(
        db: Arc<SharedDb>,
        path: PathBuf,
        initial: &StockSpec,
        flush: Flush,
    ) -> Result<Self, LedgerError> {
        let shown = path.display().to_string();
        let fresh = initialise(&*db.get().map_err(commit_error)?, initial)
            .map_err(|e| LedgerError::Storage(format!("initialising ledger {shown}: {e}")))?;
        tracing::info!(path = %shown, fresh, "inventory ledger opened");
        let writer = GroupCommit::spawn("ledger-writer", db.clone(), Box::new(apply_batch), flush)
            .map_err(commit_error)?;
        Ok(Self {
            inner: Arc::new(Inner { db, path, writer }),
        })
    }

    /// The file this ledger is stored in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Diagnostic: how many write transactions the writer has committed
    /// since this ledger was opened. With [`Flush::Each`] each is one batch
    /// and one `fsync`, so `reserve` calls divided by this is the mean batch
    /// size.
    pub fn commits(&self) -> u64 {
        self.inner.writer.commits()
    }

    /// Every recorded decision, in order-id order. Reads the whole table:
    /// meant for audits, recovery checks and tests, not for the hot path.
    pub async fn records(&self) -> Result<Vec<ReservationRecord>, LedgerError> {
        self.read(|txn| {
            let table = txn
                .open_table(RESERVATIONS)
                .map_err(storage("opening reservations table"))?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(storage("listing reservations"))? {
                let (order, json) = entry.map_err(storage("reading reservations"))?;
                records.push(decode(order.value(), json.value())?);
            }
            Ok(records)
        })
        .await
    }

    /// The decision for `order` in the ledger file at `path`, read without
    /// writing: the file is opened read-only (never created, initialised
    /// nor repaired) and closed again. The writer holds the file exclusively
    /// while it runs, so a ledger open in another process (or this one) is
    /// [`LedgerPeek::InUse`], not an error.
    ///
    /// Blocks on file I/O: call it from a blocking context.
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when the file cannot be read or is not a
    /// ledger.
    pub fn peek(path: impl AsRef<Path>, order: &OrderId) -> Result<LedgerPeek, LedgerError> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok(LedgerPeek::Missing);
        }
        let shown = path.display();
        let db = match redb::ReadOnlyDatabase::open(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Ok(LedgerPeek::InUse {
                    reason: format!("{shown} is open for writing in another process"),
                });
            }
            Err(redb::DatabaseError::RepairAborted) => return Ok(LedgerPeek::NeedsRepair),
            Err(e) => return Err(LedgerError::Storage(format!("opening {shown}: {e}"))),
        };
        let txn = db
            .begin_read()
            .map_err(storage("beginning read transaction"))?;
        let table = match txn.open_table(RESERVATIONS) {
            Ok(table) => table,
            // A file whose first transaction never committed holds no
            // tables yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LedgerPeek::Missing),
            Err(e) => return Err(LedgerError::Storage(format!("reading {shown}: {e}"))),
        };
        let found = table
            .get(order.as_str())
            .map_err(storage("reading a reservation"))?;
        Ok(match found {
            Some(json) => LedgerPeek::Decided {
                record: decode(order.as_str(), json.value())?,
            },
            None => LedgerPeek::Undecided,
        })
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, LedgerError> + Send + 'static,
    {
        let db = self.inner.db.get().map_err(commit_error)?;
        tokio::task::spawn_blocking(move || {
            let txn = db
                .begin_read()
                .map_err(storage("beginning read transaction"))?;
            f(&txn)
        })
        .await
        .map_err(|e| LedgerError::Storage(format!("ledger read task failed: {e}")))?
    }
}

#[async_trait]
impl InventoryLedger for RedbLedger {
    async fn reserve(
        &self,
        order: &OrderId,
        item: &Item,
        qty: Quantity,
    ) -> Result<Reservation, LedgerError> {
        let request = Request::Reserve {
            order: order.clone(),
            item: item.clone(),
            qty,
        };
        match self.inner.writer.submit(request).await {
            Ok(Reply::Reserve(answer)) => answer,
            Ok(Reply::Release(_)) => Err(mismatched()),
            Err(e) => Err(commit_error(e)),
        }
    }

    async fn release(&self, order: &OrderId) -> Result<Release, LedgerError> {
        match self
            .inner
            .writer
            .submit(Request::Release(order.clone()))
            .await
        {
            Ok(Reply::Release(answer)) => answer,
            Ok(Reply::Reserve(_)) => Err(mismatched()),
            Err(e) => Err(commit_error(e)),
        }
    }

    async fn stock(&self) -> Result<BTreeMap<Item, u64>, LedgerError> {
        self.read(|txn| {
            let table = txn
                .open_table(STOCK)
                .map_err(storage("opening stock table"))?;
            let mut levels = BTreeMap::new();
            for entry in table.iter().map_err(storage("listing stock"))? {
                let (item, level) = entry.map_err(storage("reading stock"))?;
                let item = Item::parse(item.value()).map_err(|e| {
                    LedgerError::Storage(format!("stock table holds a bad item name: {e}"))
                })?;
                levels.insert(item, level.value());
            }
            Ok(levels)
        })
        .await
    }

    async fn reservation(&self, order: &OrderId) -> Result<Option<ReservationRecord>, LedgerError> {
        let order = order.clone();
        self.read(move |txn| {
            let table = txn
                .open_table(RESERVATIONS)
                .map_err(storage("opening reservations table"))?;
            let found = table
                .get(order.as_str())
                .map_err(storage("reading a reservation"))?;
            found
                .map(|json| decode(order.as_str(), json.value()))
                .transpose()
        })
        .await
    }

    /// The writer reopens the file after a failed write and tries again
    /// with the next reservation; this says why the last one failed until
    /// one commits.
    fn write_failure(&self) -> Option<String> {
        self.inner.writer.failure()
    }

    async fn reservation_count(&self) -> Result<u64, LedgerError> {
        self.read(|txn| {
            txn.open_table(RESERVATIONS)
                .map_err(storage("opening reservations table"))?
                .len()
                .map_err(storage("counting reservations"))
        })
        .await
    }
}

/// Creates the tables and, if the file is new, writes `initial`, in one
/// durable transaction. Returns whether the file was new.
fn initialise(db: &Database, initial: &StockSpec) -> Result<bool, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let fresh = {
        let mut meta = txn.open_table(META)?;
        let mut stock = txn.open_table(STOCK)?;
        txn.open_table(RESERVATIONS)?;
        txn.open_table(RELEASED_EARLY)?;
        let version = meta.get(FORMAT_KEY)?.map(|v| v.value());
        match version {
            Some(FORMAT_VERSION) => false,
            Some(other) => {
                return Err(redb::Error::Corrupted(format!(
                    "ledger format version {other} is not supported (expected {FORMAT_VERSION})"
                )));
            }
            None => {
                for (item, level) in initial.levels() {
                    stock.insert(item.as_str(), *level)?;
                }
                meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
                true
            }
        }
    };
    txn.commit()?;
    Ok(fresh)
}

/// The writer answered a call with the other kind of answer (a bug).
fn mismatched() -> LedgerError {
    LedgerError::Storage("ledger writer answered the wrong kind of call".to_owned())
}

/// A writer failure as a ledger error.
fn commit_error(e: CommitError) -> LedgerError {
    match e {
        CommitError::Storage(s) => LedgerError::Storage(s),
        CommitError::Closed => LedgerError::Closed,
    }
}

/// Applies a batch inside the writer's transaction, in arrival order. An
/// `Err` dooms the whole batch (nothing of it is committed).
fn apply_batch(txn: &WriteTransaction, batch: &[Request]) -> Result<Vec<Reply>, String> {
    let mut stock = txn
        .open_table(STOCK)
        .map_err(|e| format!("opening stock table: {e}"))?;
    let mut records = txn
        .open_table(RESERVATIONS)
        .map_err(|e| format!("opening reservations table: {e}"))?;
    let mut early = txn
        .open_table(RELEASED_EARLY)
        .map_err(|e| format!("opening released_early table: {e}"))?;
    let mut tables = Tables {
        stock: &mut stock,
        records: &mut records,
        early: &mut early,
    };
    batch
        .iter()
        .map(|request| match request {
            Request::Reserve { order, item, qty } => {
                reserve_one(&mut tables, order, item, *qty).map(Reply::Reserve)
            }
            Request::Release(order) => release_one(&mut tables, order).map(Reply::Release),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("writing reservation: {e}"))
}

/// The tables a batch writes.
struct Tables<'a, 't> {
    stock: &'a mut Table<'t, &'static str, u64>,
    records: &'a mut Table<'t, &'static str, &'static str>,
    early: &'a mut Table<'t, &'static str, ()>,
}

/// Decides one reservation inside the batch's transaction. The outer `Err`
/// is a storage failure that dooms the whole batch; the inner one concerns
/// only this request (an unreadable earlier record), which changed nothing.
fn reserve_one(
    t: &mut Tables<'_, '_>,
    order: &OrderId,
    item: &Item,
    qty: Quantity,
) -> Result<Result<Reservation, LedgerError>, redb::StorageError> {
    let key = order.as_str();
    if let Some(json) = t.records.get(key)? {
        return Ok(decode(key, json.value()).map(Reservation::Repeat));
    }
    let outcome = if t.early.remove(key)?.is_some() {
        ReserveOutcome::Released
    } else {
        decide(t.stock.get(item.as_str())?.map(|l| l.value()), qty)
    };
    let record = ReservationRecord {
        order_id: order.clone(),
        item: item.clone(),
        qty,
        outcome,
    };
    if let Err(e) = write_record(t, &record)? {
        return Ok(Err(e));
    }
    if let ReserveOutcome::Reserved { remaining } = record.outcome {
        t.stock.insert(item.as_str(), remaining)?;
    }
    Ok(Ok(Reservation::First(record)))
}

/// Releases one order inside the batch's transaction; errors as for
/// [`reserve_one`].
fn release_one(
    t: &mut Tables<'_, '_>,
    order: &OrderId,
) -> Result<Result<Release, LedgerError>, redb::StorageError> {
    let key = order.as_str();
    let found = t.records.get(key)?.map(|json| decode(key, json.value()));
    let mut record = match found {
        None => {
            let first = t.early.insert(key, ())?.is_none();
            return Ok(Ok(if first {
                Release::NothingHeld
            } else {
                Release::AlreadyReleased
            }));
        }
        Some(Err(e)) => return Ok(Err(e)),
        Some(Ok(record)) => record,
    };
    let Some(back) = release_decided(&mut record) else {
        return Ok(Ok(Release::AlreadyReleased));
    };
    if let Err(e) = write_record(t, &record)? {
        return Ok(Err(e));
    }
    if back == 0 {
        return Ok(Ok(Release::NothingHeld));
    }
    let item = record.item.as_str();
    let level = t
        .stock
        .get(item)?
        .map_or(0, |l| l.value())
        .saturating_add(back);
    t.stock.insert(item, level)?;
    Ok(Ok(Release::Returned {
        item: record.item,
        qty: record.qty,
        level,
    }))
}

/// Writes `record`; the inner `Err` when it cannot be encoded (nothing
/// written).
fn write_record(
    t: &mut Tables<'_, '_>,
    record: &ReservationRecord,
) -> Result<Result<(), LedgerError>, redb::StorageError> {
    let key = record.order_id.as_str();
    match serde_json::to_string(record) {
        Ok(json) => t.records.insert(key, json.as_str()).map(|_| Ok(())),
        Err(e) => Ok(Err(LedgerError::Storage(format!(
            "encoding reservation {key}: {e}"
        )))),
    }
}

/// Parses a stored record.
fn decode(order: &str, json: &str) -> Result<ReservationRecord, LedgerError> {
    serde_json::from_str(json)
        .map_err(|e| LedgerError::Storage(format!("stored reservation {order} is unreadable: {e}")))
}

/// Maps an error to [`LedgerError::Storage`] with `context`.
fn storage<E: fmt::Display>(context: &'static str) -> impl FnOnce(E) -> LedgerError {
    move |e| LedgerError::Storage(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> StockSpec {
        s.parse().unwrap()
    }

    fn item(s: &str) -> Item {
        Item::parse(s).unwrap()
    }

    fn qty(n: u64) -> Quantity {
        Quantity::new(n).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reopening_keeps_stock_and_records_and_ignores_initial_stock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/ledger.redb");
        let o1 = OrderId::generate();
        let o2 = OrderId::generate();
        {
            let ledger = RedbLedger::open(&path, &spec("burger=10,pizza=1")).unwrap();
            ledger.reserve(&o1, &item("burger"), qty(4)).await.unwrap();
            ledger.reserve(&o2, &item("pizza"), qty(2)).await.unwrap();
        }
        // A different initial stock must not be applied to an existing file.
        let ledger = RedbLedger::open(&path, &spec("burger=999,sushi=5")).unwrap();
        let stock = ledger.stock().await.unwrap();
        assert_eq!(
            stock,
            BTreeMap::from([(item("burger"), 6), (item("pizza"), 1)])
        );
        assert_eq!(ledger.reservation_count().await.unwrap(), 2);
        let r1 = ledger.reservation(&o1).await.unwrap().unwrap();
        assert_eq!(r1.outcome, ReserveOutcome::Reserved { remaining: 6 });
        assert_eq!(r1.qty, qty(4));
        assert_eq!(
            ledger.reservation(&o2).await.unwrap().unwrap().outcome,
            ReserveOutcome::Insufficient { available: 1 }
        );
        // Still idempotent across the restart.
        let again = ledger.reserve(&o1, &item("burger"), qty(4)).await.unwrap();
        assert_eq!(again, Reservation::Repeat(r1));
        assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 6);
        assert_eq!(ledger.records().await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reservations_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(
            RedbLedger::open(dir.path().join("ledger.redb"), &spec("burger=100000")).unwrap(),
        );
        let before = ledger.commits();
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let l = ledger.clone();
                tokio::spawn(async move {
                    l.reserve(&OrderId::generate(), &item("burger"), qty(1))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for r in futures::future::join_all(tasks).await {
            assert!(!r.unwrap().is_repeat());
        }
        let batches = ledger.commits() - before;
        assert!(batches >= 1);
        assert!(
            batches <= 100,
            "1000 concurrent reservations took {batches} commits; group commit is not batching"
        );
        assert_eq!(ledger.reservation_count().await.unwrap(), 1000);
        assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 99_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_duplicates_are_decided_once_and_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = RedbLedger::open(dir.path().join("ledger.redb"), &spec("burger=5")).unwrap();
        let (order, burger) = (OrderId::generate(), item("burger"));
        // join_all polls every future once before any can complete, so all
        // ten are queued together and land in one or two batches.
        let results =
            futures::future::join_all((0..10).map(|_| ledger.reserve(&order, &burger, qty(2))))
                .await;
        let firsts = results
            .iter()
            .filter(|r| !r.as_ref().unwrap().is_repeat())
            .count();
        assert_eq!(firsts, 1);
        assert!(ledger.commits() < 10);
        assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 3);
    }

    #[tokio::test]
    async fn peek_reads_a_closed_file_and_says_when_the_writer_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let (order, other) = (OrderId::generate(), OrderId::generate());
        assert_eq!(
            RedbLedger::peek(&path, &order).unwrap(),
            LedgerPeek::Missing
        );
        assert!(!path.exists(), "a peek creates nothing");
        let ledger = RedbLedger::open(&path, &spec("burger=5")).unwrap();
        ledger
            .reserve(&order, &item("burger"), qty(2))
            .await
            .unwrap();
        let in_use = RedbLedger::peek(&path, &order).unwrap();
        assert!(
            matches!(&in_use, LedgerPeek::InUse { reason } if reason.contains(&path.display().to_string())),
            "{in_use:?}"
        );
        drop(ledger);
        assert_eq!(
            RedbLedger::peek(&path, &order).unwrap(),
            LedgerPeek::Decided {
                record: ReservationRecord {
                    order_id: order.clone(),
                    item: item("burger"),
                    qty: qty(2),
                    outcome: ReserveOutcome::Reserved { remaining: 3 },
                }
            }
        );
        assert_eq!(
            RedbLedger::peek(&path, &other).unwrap(),
            LedgerPeek::Undecided
        );
        // The writer opens it again after a peek.
        let reopened = RedbLedger::open(&path, &spec("burger=5")).unwrap();
        assert_eq!(reopened.stock().await.unwrap()[&item("burger")], 3);
    }

    #[tokio::test]
    async fn second_open_of_a_live_file_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.redb");
        let _ledger = RedbLedger::open(&path, &spec("burger=5")).unwrap();
        let err = RedbLedger::open(&path, &spec("burger=5")).unwrap_err();
        assert!(matches!(err, LedgerError::Storage(_)), "{err}");
        // One line naming the file and both ways out, not redb's words.
        let said = err.to_string();
        assert!(said.contains(&path.display().to_string()), "{said}");
        assert!(said.contains("CAMPUSFOOD_DATA_DIR"), "{said}");
        assert!(said.contains("CAMPUSFOOD_DATABASE_URL"), "{said}");
        assert!(!said.contains('\n'), "{said}");
        // Not a redb file at all.
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, b"definitely not a database, but long enough to look").unwrap();
        assert!(RedbLedger::open(&junk, &spec("burger=5")).is_err());
    }

    #[tokio::test]
    async fn a_full_disk_is_reported_and_the_ledger_recovers_when_it_has_room() {
        let backend = crate::group_commit::tests::FlakyBackend::default();
        let ledger = RedbLedger::with_db(
            backend.shared_db(),
            "flaky".into(),
            &spec("burger=5"),
            Flush::Each,
        )
        .unwrap();
        let first = OrderId::generate();
        ledger
            .reserve(&first, &item("burger"), qty(1))
            .await
            .unwrap();
        assert_eq!(ledger.write_failure(), None);

        backend
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let lost = OrderId::generate();
        assert!(matches!(
            ledger.reserve(&lost, &item("burger"), qty(1)).await,
            Err(LedgerError::Storage(_))
        ));
        assert!(
            ledger.write_failure().is_some(),
            "reported while it cannot write"
        );

        backend
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let r = ledger
            .reserve(&lost, &item("burger"), qty(1))
            .await
            .unwrap();
        assert!(!r.is_repeat(), "the failed decision was not kept");
        assert_eq!(r.outcome(), ReserveOutcome::Reserved { remaining: 3 });
        assert_eq!(ledger.write_failure(), None, "healthy again");
        assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 3);
        assert!(ledger.reservation(&first).await.unwrap().is_some());
    }
}
