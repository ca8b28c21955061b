//! Where the asynchronous OrderService keeps orders, their status, and the
//! transactional outbox of events still to publish.
//!
//! [`OrderStore::place`] writes the order *and* its `OrderPlaced` event in
//! one transaction: once `POST /order` has answered 201, the event is on
//! disk and the relay will publish it, even if the broker is down at that
//! moment or the process dies right after answering. Status only moves
//! forward (placed → reserved | failed → notified), so events that arrive
//! late or twice change nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::group_commit::{CommitError, GroupCommit, SharedDb};
use campusfood_core::order::{Order, OrderStatus};
use campusfood_core::outbox::OutboxEntry;
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use thiserror::Error;

/// The store failed. Not the caller's fault: try again later.
#[derive(Debug, Clone, Error)]
#[error("order store: {0}")]
pub struct StoreError(pub String);

impl From<CommitError> for StoreError {
    fn from(e: CommitError) -> Self {
        Self(e.to_string())
    }
}

/// How far along an order is: status never moves to a lower rank.
pub(crate) fn rank(s: OrderStatus) -> u8 {
    match s {
        OrderStatus::Placed => 0,
        OrderStatus::Confirmed | OrderStatus::Reserved | OrderStatus::Failed => 1,
        OrderStatus::Notified => 2,
    }
}

/// `current` moved to `next`, or `None` when that would go backwards or
/// sideways.
pub fn advanced(current: OrderStatus, next: OrderStatus) -> Option<OrderStatus> {
    (rank(next) > rank(current)).then_some(next)
}

/// What [`OrderStore::place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The order and its event are stored.
    Stored,
    /// An order with this id is stored already: nothing was written (the
    /// store never overwrites an order).
    IdTaken,
}

/// Orders, their status, and the outbox of events to publish.
#[async_trait]
pub trait OrderStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new order and its outbox entry atomically and durably;
    /// refuses an id that is already stored.
    async fn place(&self, order: &Order, event: OutboxEntry) -> Result<Placed, StoreError>;
    /// The order `id`, if known.
    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;
    /// Moves `id` to `status` if that is forward; returns the order as it
    /// now is (`None` if unknown).
    async fn advance(&self, id: &OrderId, status: OrderStatus)
    -> Result<Option<Order>, StoreError>;
    /// Up to `limit` outbox entries, oldest first.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Removes published outbox entries.
    async fn published(&self, ids: Vec<String>) -> Result<(), StoreError>;
    /// How many outbox entries wait.
    async fn outbox_len(&self) -> Result<u64, StoreError>;
    /// How many orders are stored.
    async fn order_count(&self) -> Result<u64, StoreError>;
}

/// An in-memory [`OrderStore`], for tests and embedding.
#[derive(Debug, Default)]
pub struct MemoryOrderStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    orders: BTreeMap<OrderId, Order>,
    /// Keyed by a sequence number so that entries come out oldest first.
    outbox: BTreeMap<u64, OutboxEntry>,
    next: u64,
}

impl MemoryOrderStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn place(&self, order: &Order, event: OutboxEntry) -> Result<Placed, StoreError> {
        let mut s = self.lock();
        if s.orders.contains_key(&order.order_id) {
            return Ok(Placed::IdTaken);
        }
        s.orders.insert(order.order_id.clone(), order.clone());
        let seq = s.next;
        s.next += 1;
        s.outbox.insert(seq, event);
        Ok(Placed::Stored)
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        Ok(self.lock().orders.get(id).cloned())
    }

    async fn advance(
        &self,
        id: &OrderId,
        status: OrderStatus,
    ) -> Result<Option<Order>, StoreError> {
        let mut s = self.lock();
        Ok(s.orders.get_mut(id).map(|o| {
            if let Some(next) = advanced(o.status, status) {
                o.status = next;
            }
            o.clone()
        }))
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.lock().outbox.values().take(limit).cloned().collect())
    }

    async fn published(&self, ids: Vec<String>) -> Result<(), StoreError> {
        self.lock().outbox.retain(|_, e| !ids.contains(&e.id));
        Ok(())
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().outbox.len() as u64)
    }

    async fn order_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock().orders.len() as u64)
    }
}

const ORDERS: TableDefinition<'_, &str, &str> = TableDefinition::new("orders");
/// Outbox entries by sequence number (oldest first), and the sequence of
/// each entry id, so removal by id is direct.
const OUTBOX: TableDefinition<'_, u64, &str> = TableDefinition::new("outbox");
const OUTBOX_SEQ: TableDefinition<'_, &str, u64> = TableDefinition::new("outbox_seq");

/// A write the group-commit writer applies.
enum Write {
    Place(Box<Order>, Box<OutboxEntry>),
    Advance(OrderId, OrderStatus),
    Published(Vec<String>),
}

/// What a write answers.
type Written = Result<Option<Order>, String>;

/// A durable [`OrderStore`] in a redb file; writes are group-committed.
pub struct RedbOrderStore {
    db: Arc<SharedDb>,
    writer: GroupCommit<Write, Written>,
}

impl fmt::Debug for RedbOrderStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbOrderStore")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

fn se<E: fmt::Display>(e: E) -> String {
    e.to_string()
}

fn apply(txn: &WriteTransaction, ops: &[Write]) -> Result<Vec<Written>, String> {
    let mut orders = txn.open_table(ORDERS).map_err(se)?;
    let mut outbox = txn.open_table(OUTBOX).map_err(se)?;
    let mut seqs = txn.open_table(OUTBOX_SEQ).map_err(se)?;
    let mut next_seq = outbox.last().map_err(se)?.map_or(0, |(k, _)| k.value() + 1);
    let mut answers = Vec::with_capacity(ops.len());
    for op in ops {
        answers.push(match op {
            // An id stored already answers with that order: never
            // overwritten.
            Write::Place(order, _)
                if orders.get(order.order_id.as_str()).map_err(se)?.is_some() =>
            {
                Ok(Some((**order).clone()))
            }
            Write::Place(order, event) => {
                let order_json = serde_json::to_string(order).map_err(se)?;
                let event_json = serde_json::to_string(event).map_err(se)?;
                orders
                    .insert(order.order_id.as_str(), order_json.as_str())
                    .map_err(se)?;
                outbox.insert(next_seq, event_json.as_str()).map_err(se)?;
                seqs.insert(event.id.as_str(), next_seq).map_err(se)?;
                next_seq += 1;
                Ok(None)
            }
            Write::Advance(id, status) => {
                let current = orders
                    .get(id.as_str())
                    .map_err(se)?
                    .map(|v| v.value().to_owned());
                match current {
                    None => Ok(None),
                    Some(json) => match serde_json::from_str::<Order>(&json) {
                        Err(e) => Err(format!("stored order {id} is unreadable: {e}")),
                        Ok(mut order) => {
                            if let Some(next) = advanced(order.status, *status) {
                                order.status = next;
                                let json = serde_json::to_string(&order).map_err(se)?;
                                orders.insert(id.as_str(), json.as_str()).map_err(se)?;
                            }
                            Ok(Some(order))
                        }
                    },
                }
            }
            Write::Published(ids) => {
                for id in ids {
                    if let Some(seq) = seqs.remove(id.as_str()).map_err(se)? {
                        outbox.remove(seq.value()).map_err(se)?;
                    }
                }
                Ok(None)
            }
        });
    }
    Ok(answers)
}

impl RedbOrderStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = SharedDb::open_path(path.as_ref())?;
        {
            let txn = db
                .get()?
                .begin_write()
                .map_err(|e| StoreError(e.to_string()))?;
            txn.open_table(ORDERS)
                .map_err(|e| StoreError(e.to_string()))?;
            txn.open_table(OUTBOX)
                .map_err(|e| StoreError(e.to_string()))?;
            txn.open_table(OUTBOX_SEQ)
                .map_err(|e| StoreError(e.to_string()))?;
            txn.commit().map_err(|e| StoreError(e.to_string()))?;
        }
        // Forgetting published events is bookkeeping: if it is lost in a
        // crash, the relay publishes those events again and consumers,
        // being idempotent, absorb them. Everything else is durable.
        let writer = GroupCommit::spawn_with(
            "order-store-writer",
            db.clone(),
            Box::new(apply),
            Box::new(|op| !matches!(op, Write::Published(_))),
        )?;
        Ok(Self { db, writer })
    }

    async fn write(&self, op: Write) -> Result<Option<Order>, StoreError> {
        self.writer.submit(op).await?.map_err(StoreError)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.get()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(se)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?
        .map_err(StoreError)
    }
}

#[async_trait]
impl OrderStore for RedbOrderStore {
    async fn place(&self, order: &Order, event: OutboxEntry) -> Result<Placed, StoreError> {
        let existing = self
            .write(Write::Place(Box::new(order.clone()), Box::new(event)))
            .await?;
        Ok(match existing {
            Some(_) => Placed::IdTaken,
            None => Placed::Stored,
        })
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.clone();
        self.read(move |txn| {
            let t = txn.open_table(ORDERS).map_err(se)?;
            match t.get(id.as_str()).map_err(se)? {
                None => Ok(None),
                Some(v) => serde_json::from_str(v.value()).map(Some).map_err(se),
            }
        })
        .await
    }

    async fn advance(
        &self,
        id: &OrderId,
        status: OrderStatus,
    ) -> Result<Option<Order>, StoreError> {
        self.write(Write::Advance(id.clone(), status)).await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |txn| {
            let t = txn.open_table(OUTBOX).map_err(se)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(se)?.take(limit) {
                let (_, v) = row.map_err(se)?;
                out.push(serde_json::from_str(v.value()).map_err(se)?);
            }
            Ok(out)
        })
        .await
    }

    async fn published(&self, ids: Vec<String>) -> Result<(), StoreError> {
        self.write(Write::Published(ids)).await.map(drop)
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.read(|txn| txn.open_table(OUTBOX).map_err(se)?.len().map_err(se))
            .await
    }

    async fn order_count(&self) -> Result<u64, StoreError> {
        self.read(|txn| txn.open_table(ORDERS).map_err(se)?.len().map_err(se))
            .await
    }
}

#[cfg(test)]
mod tests {
    use campusfood_core::order::PlaceOrder;
    use campusfood_core::transport::{Message, Route};

    use super::*;

    fn order() -> (Order, OutboxEntry) {
        let o = Order::new(
            PlaceOrder::from_json(br#"{"item":"burger","qty":1}"#).unwrap(),
            OrderStatus::Placed,
        );
        let e = OutboxEntry::new(
            o.order_id.as_str(),
            &Route::ORDER_PLACED,
            &Message::json(&o).unwrap(),
        );
        (o, e)
    }

    async fn exercise(store: &dyn OrderStore) {
        let (a, ea) = order();
        let (b, eb) = order();
        store.place(&a, ea.clone()).await.unwrap();
        store.place(&b, eb.clone()).await.unwrap();
        assert_eq!(store.outbox(10).await.unwrap(), vec![ea, eb.clone()]);
        store.published(vec![a.order_id.to_string()]).await.unwrap();
        assert_eq!(store.outbox(10).await.unwrap(), vec![eb]);
        assert_eq!(store.outbox_len().await.unwrap(), 1);
        // Forward only.
        let got = store
            .advance(&a.order_id, OrderStatus::Notified)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, OrderStatus::Notified);
        let got = store
            .advance(&a.order_id, OrderStatus::Reserved)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, OrderStatus::Notified);
        assert_eq!(
            store
                .advance(&OrderId::generate(), OrderStatus::Reserved)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.get(&b.order_id).await.unwrap().unwrap().status,
            OrderStatus::Placed
        );
        assert_eq!(store.order_count().await.unwrap(), 2);

        // An id stored already is refused, never overwritten.
        let (mut c, ec) = order();
        c.order_id = b.order_id.clone();
        assert_eq!(store.place(&c, ec).await.unwrap(), Placed::IdTaken);
        assert_eq!(store.get(&b.order_id).await.unwrap().unwrap(), b);
        assert_eq!(store.order_count().await.unwrap(), 2);
        assert_eq!(store.outbox_len().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn memory_store() {
        exercise(&MemoryOrderStore::new()).await;
    }

    #[tokio::test]
    async fn redb_store_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.redb");
        {
            exercise(&RedbOrderStore::open(&path).unwrap()).await;
        }
        let s = RedbOrderStore::open(&path).unwrap();
        assert_eq!(s.order_count().await.unwrap(), 2);
        assert_eq!(s.outbox_len().await.unwrap(), 1);
    }

    #[test]
    fn status_moves_forward_only() {
        use OrderStatus::*;
        assert_eq!(advanced(Placed, Reserved), Some(Reserved));
        assert_eq!(advanced(Placed, Failed), Some(Failed));
        assert_eq!(advanced(Reserved, Notified), Some(Notified));
        assert_eq!(advanced(Notified, Reserved), None);
        assert_eq!(advanced(Reserved, Failed), None);
        assert_eq!(advanced(Placed, Placed), None);
    }
}
