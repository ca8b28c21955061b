//! The durable [`OrderStore`] in a redb file, group-committed.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::group_commit::GroupCommit;
use campusfood_core::order::{Order, OrderStatus};
use campusfood_core::outbox::OutboxEntry;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{Committed, open_file};
use crate::stores::{OrderStore, Placed, StoreError, advanced};

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
#[derive(Debug)]
pub struct RedbOrderStore {
    store: Committed<Write, Written>,
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
        let db = open_file(path.as_ref(), |txn| {
            txn.open_table(ORDERS)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(OUTBOX_SEQ)?;
            Ok(())
        })?;
        // Forgetting published events is bookkeeping: if it is lost in a
        // crash, the relay publishes those events again and consumers,
        // being idempotent, absorb them. Everything else is durable.
        let writer = GroupCommit::spawn_with(
            "order-store-writer",
            db.clone(),
            Box::new(apply),
            Box::new(|op| !matches!(op, Write::Published(_))),
        )?;
        Ok(Self {
            store: Committed { db, writer },
        })
    }

    async fn write(&self, op: Write) -> Result<Option<Order>, StoreError> {
        self.store.writer.submit(op).await?.map_err(StoreError)
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
        self.store
            .read(move |txn| {
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
        self.store
            .read(move |txn| {
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
        self.store
            .read(|txn| txn.open_table(OUTBOX).map_err(se)?.len().map_err(se))
            .await
    }

    async fn order_count(&self) -> Result<u64, StoreError> {
        self.store
            .read(|txn| txn.open_table(ORDERS).map_err(se)?.len().map_err(se))
            .await
    }
}
