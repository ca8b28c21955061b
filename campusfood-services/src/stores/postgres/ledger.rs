//! [`PgLedger`]: the inventory ledger in Postgres, with group commit.
//!
//! Each reservation is the SQL function `reserve` of the migrations: it
//! claims the order id first (the primary key makes a second decision for
//! the same order impossible, in any instance), then takes the stock with
//! an `UPDATE … WHERE level >= qty` that Postgres re-checks against the
//! latest committed level, so instances deciding at once never oversell.
//!
//! Calls made at the same time in one process share a transaction: one
//! task takes every request queued (up to [`MAX_BATCH`]), sends their
//! `reserve` calls pipelined on one connection in arrival order (stably
//! sorted by item, so that all instances lock stock rows in one order),
//! commits once, and answers them all. A deadlock or serialization failure
//! between instances retries the whole batch.
//!
//! A release is the SQL function `release` (migration 0002), one call in a
//! transaction of its own: it claims the order's key the same way, so a
//! release and a reservation of one order are decided one after the other
//! whichever instances make them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::ledger::{
    InventoryLedger, LedgerError, LedgerPeek, Release, Reservation, ReservationRecord,
    ReserveOutcome,
};
use campusfood_core::order::{Item, Quantity};
use campusfood_core::stock::StockSpec;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::{PgError, Postgres, describe};

/// Most reservations in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// Attempts at a batch that lost a deadlock or serialization race.
const BATCH_ATTEMPTS: u32 = 5;

type Reply = Result<Reservation, LedgerError>;

struct Request {
    order: OrderId,
    item: Item,
    qty: Quantity,
    reply: oneshot::Sender<Reply>,
}

/// The inventory ledger `name` in Postgres. See the [module docs](super).
/// Cloning shares the batching task.
#[derive(Clone)]
pub struct PgLedger {
    pg: Postgres,
    name: Arc<str>,
    queue: mpsc::Sender<Request>,
    batches: Arc<AtomicU64>,
    /// Why the last batch failed, until one commits.
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("name", &self.name)
            .field("pg", &self.pg)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl fmt::Display) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

impl PgLedger {
    /// The ledger `name`, stocked with `initial` if it is new (an existing
    /// ledger keeps its levels; instances opening it together seed it
    /// once).
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when Postgres fails.
    pub async fn open(pg: &Postgres, name: &str, initial: &StockSpec) -> Result<Self, LedgerError> {
        let mut client = pg.pool().get().await.map_err(storage)?;
        let tx = client.transaction().await.map_err(pg_storage)?;
        let fresh = tx
            .execute(
                "INSERT INTO ledgers (ledger) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await
            .map_err(pg_storage)?
            == 1;
        if fresh {
            for (item, level) in initial.levels() {
                let level = i64::try_from(*level).map_err(storage)?;
                tx.execute(
                    "INSERT INTO stock (ledger, item, level) VALUES ($1, $2, $3)",
                    &[&name, &item.as_str(), &level],
                )
                .await
                .map_err(pg_storage)?;
            }
        }
        tx.commit().await.map_err(pg_storage)?;
        tracing::info!(ledger = name, fresh, "inventory ledger opened in postgres");
        let (queue, requests) = mpsc::channel(MAX_BATCH * 4);
        let batches = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(run_batches(
            pg.clone(),
            name.into(),
            requests,
            Outcomes {
                batches: batches.clone(),
                failure: failure.clone(),
            },
        ));
        Ok(Self {
            pg: pg.clone(),
            name: name.into(),
            queue,
            batches,
            failure,
        })
    }

    /// The decision for `order` in the ledger `name`, read without opening
    /// the ledger (nothing is created or stocked; a ledger that does not
    /// exist is [`LedgerPeek::Missing`]). Postgres lets any number of
    /// readers in beside the writers, so it is never
    /// [`LedgerPeek::InUse`].
    ///
    /// # Errors
    /// [`LedgerError::Storage`] when Postgres fails.
    pub async fn peek(
        pg: &Postgres,
        name: &str,
        order: &OrderId,
    ) -> Result<LedgerPeek, LedgerError> {
        let client = pg.pool().get().await.map_err(storage)?;
        let exists = client
            .query_opt("SELECT 1 FROM ledgers WHERE ledger = $1", &[&name])
            .await
            .map_err(pg_storage)?
            .is_some();
        if !exists {
            return Ok(LedgerPeek::Missing);
        }
        let id = order.as_str();
        // As `reservation`: a row without item is a release that came first.
        let row = client
            .query_opt(
                "SELECT item, qty, outcome, amount FROM reservations \
                 WHERE ledger = $1 AND order_id = $2 AND outcome <> 'pending' \
                 AND item IS NOT NULL",
                &[&name, &id],
            )
            .await
            .map_err(pg_storage)?;
        Ok(match row {
            Some(r) => LedgerPeek::Decided {
                record: record(order, r.get(0), r.get(1), r.get(2), r.get(3))?,
            },
            None => LedgerPeek::Undecided,
        })
    }

    /// Transactions committed so far by this handle's batching task (each
    /// holding one or more reservations).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    async fn read<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        f: impl FnOnce(Vec<tokio_postgres::Row>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let client = self.pg.pool().get().await.map_err(storage)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_storage)?;
        let rows = client.query(&stmt, params).await.map_err(pg_storage)?;
        f(rows)
    }
}

fn pg_storage(e: tokio_postgres::Error) -> LedgerError {
    LedgerError::Storage(describe(&e))
}

#[async_trait]
impl InventoryLedger for PgLedger {
    async fn reserve(&self, order: &OrderId, item: &Item, qty: Quantity) -> Reply {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            order: order.clone(),
            item: item.clone(),
            qty,
            reply,
        };
        self.queue
            .send(request)
            .await
            .map_err(|_| LedgerError::Closed)?;
        answer.await.map_err(|_| LedgerError::Closed)?
    }

    async fn release(&self, order: &OrderId) -> Result<Release, LedgerError> {
        let mut attempt = 1;
        loop {
            match release_once(&self.pg, &self.name, order).await {
                Err(BatchError::Race(e)) if attempt < BATCH_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "release lost a race; retrying");
                    attempt += 1;
                }
                Err(BatchError::Race(e) | BatchError::Failed(e)) => {
                    return Err(LedgerError::Storage(e));
                }
                Ok(release) => return Ok(release),
            }
        }
    }

    async fn stock(&self) -> Result<BTreeMap<Item, u64>, LedgerError> {
        let name: &str = &self.name;
        self.read(
            "SELECT item, level FROM stock WHERE ledger = $1",
            &[&name],
            |rows| {
                rows.iter()
                    .map(|r| {
                        let item = Item::parse(r.get::<_, &str>(0)).map_err(storage)?;
                        let level = u64::try_from(r.get::<_, i64>(1)).map_err(storage)?;
                        Ok((item, level))
                    })
                    .collect()
            },
        )
        .await
    }

    async fn reservation(&self, order: &OrderId) -> Result<Option<ReservationRecord>, LedgerError> {
        let name: &str = &self.name;
        let id = order.as_str();
        self.read(
            // A row without item is a release that came first: no decision.
            "SELECT item, qty, outcome, amount FROM reservations \
             WHERE ledger = $1 AND order_id = $2 AND outcome <> 'pending' \
             AND item IS NOT NULL",
            &[&name, &id],
            |rows| {
                rows.first()
                    .map(|r| record(order, r.get(0), r.get(1), r.get(2), r.get(3)))
                    .transpose()
            },
        )
        .await
    }

    fn write_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn reservation_count(&self) -> Result<u64, LedgerError> {
        let name: &str = &self.name;
        self.read(
            "SELECT count(*) FROM reservations WHERE ledger = $1 AND item IS NOT NULL",
            &[&name],
            |rows| {
                let n: i64 = rows.first().map_or(0, |r| r.get(0));
                u64::try_from(n).map_err(storage)
            },
        )
        .await
    }
}

/// A stored decision as a [`ReservationRecord`].
fn record(
    order: &OrderId,
    item: &str,
    qty: i64,
    outcome: &str,
    amount: Option<i64>,
) -> Result<ReservationRecord, LedgerError> {
    let bad = |what: &str| LedgerError::Storage(format!("reservation of {order}: bad {what}"));
    let amount = || {
        amount
            .and_then(|a| u64::try_from(a).ok())
            .ok_or_else(|| bad("amount"))
    };
    let outcome = match outcome {
        "reserved" => ReserveOutcome::Reserved {
            remaining: amount()?,
        },
        "insufficient" => ReserveOutcome::Insufficient {
            available: amount()?,
        },
        "unknown_item" => ReserveOutcome::UnknownItem,
        "released" => ReserveOutcome::Released,
        _ => return Err(bad("outcome")),
    };
    Ok(ReservationRecord {
        order_id: order.clone(),
        item: Item::parse(item).map_err(|_| bad("item"))?,
        qty: u64::try_from(qty)
            .ok()
            .and_then(|q| Quantity::new(q).ok())
            .ok_or_else(|| bad("qty"))?,
        outcome,
    })
}

/// What the batching task reports.
struct Outcomes {
    batches: Arc<AtomicU64>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Outcomes {
    fn set_failure(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }
}

/// One `release` call, in its own transaction.
async fn release_once(pg: &Postgres, name: &str, order: &OrderId) -> Result<Release, BatchError> {
    let client = pg.pool().get().await.map_err(PgError::from)?;
    let stmt = client
        .prepare_cached("SELECT o_result, o_item, o_qty, o_level FROM release($1, $2)")
        .await?;
    let row = client.query_one(&stmt, &[&name, &order.as_str()]).await?;
    let bad = |what: &str| BatchError::Failed(format!("release of {order}: bad {what}"));
    let result: &str = row.get(0);
    Ok(match result {
        "nothing_held" => Release::NothingHeld,
        "already_released" => Release::AlreadyReleased,
        "returned" => {
            let (item, qty, level): (Option<&str>, Option<i64>, Option<i64>) =
                (row.get(1), row.get(2), row.get(3));
            Release::Returned {
                item: item
                    .and_then(|i| Item::parse(i).ok())
                    .ok_or_else(|| bad("item"))?,
                qty: qty
                    .and_then(|q| u64::try_from(q).ok())
                    .and_then(|q| Quantity::new(q).ok())
                    .ok_or_else(|| bad("qty"))?,
                level: level
                    .and_then(|l| u64::try_from(l).ok())
                    .ok_or_else(|| bad("level"))?,
            }
        }
        _ => return Err(bad("result")),
    })
}

/// The batching task: runs until every [`PgLedger`] clone is dropped.
async fn run_batches(
    pg: Postgres,
    name: Arc<str>,
    mut requests: mpsc::Receiver<Request>,
    outcomes: Outcomes,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Arrival order within an item, items in one global order.
        batch.sort_by(|a, b| a.item.cmp(&b.item));
        let mut attempt = 1;
        let answers = loop {
            match apply(&pg, &name, &batch).await {
                Err(BatchError::Race(e)) if attempt < BATCH_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "ledger batch lost a race; retrying");
                    attempt += 1;
                }
                Err(BatchError::Race(e) | BatchError::Failed(e)) => break Err(e),
                Ok(answers) => break Ok(answers),
            }
        };
        match answers {
            Ok(answers) => {
                outcomes.batches.fetch_add(1, Ordering::Relaxed);
                outcomes.set_failure(None);
                for (request, answer) in batch.drain(..).zip(answers) {
                    let _ = request.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, orders = batch.len(), "ledger batch failed");
                outcomes.set_failure(Some(e.clone()));
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(LedgerError::Storage(e.clone())));
                }
            }
        }
    }
}

enum BatchError {
    /// Lost a deadlock or serialization race with another instance: the
    /// same batch may succeed now.
    Race(String),
    Failed(String),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        let race = matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        );
        if race {
            Self::Race(describe(&e))
        } else {
            Self::Failed(describe(&e))
        }
    }
}

impl From<PgError> for BatchError {
    fn from(e: PgError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// One transaction for the whole batch, the calls pipelined in order.
async fn apply(
    pg: &Postgres,
    name: &str,
    batch: &[Request],
) -> Result<Vec<Reservation>, BatchError> {
    let mut client = pg.pool().get().await.map_err(PgError::from)?;
    let stmt = client
        .prepare_cached(
            "SELECT o_first, o_item, o_qty, o_outcome, o_amount FROM reserve($1, $2, $3, $4)",
        )
        .await?;
    let tx = client.transaction().await?;
    let qtys: Vec<i64> = batch.iter().map(|r| i64::from(r.qty.get())).collect();
    let calls = batch.iter().zip(&qtys).map(|(r, qty)| {
        let (order, item) = (r.order.as_str(), r.item.as_str());
        let (stmt, tx) = (&stmt, &tx);
        async move { tx.query_one(stmt, &[&name, &order, &item, qty]).await }
    });
    let rows = futures::future::try_join_all(calls).await?;
    tx.commit().await?;
    batch
        .iter()
        .zip(rows)
        .map(|(r, row)| {
            let first: bool = row.get(0);
            let rec = record(&r.order, row.get(1), row.get(2), row.get(3), row.get(4))
                .map_err(|e| BatchError::Failed(e.to_string()))?;
            Ok(if first {
                Reservation::First(rec)
            } else {
                Reservation::Repeat(rec)
            })
        })
        .collect()
}
