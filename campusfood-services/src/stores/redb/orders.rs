//! The durable [`OrderStore`] in a redb file, group-committed.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::group_commit::{Flush, GroupCommit, Persist};
use campusfood_core::order::{Order, OrderStatus};
use campusfood_core::outbox::OutboxEntry;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{Committed, open_file};
use crate::stores::{OrderStore, Placed, StoreError, advanced};
use crate::timeline::Hop;

const ORDERS: TableDefinition<'_, &str, &str> = TableDefinition::new("orders");
/// Outbox entries by sequence number (oldest first), and the sequence of
/// each entry id, so removal by id is direct.
const OUTBOX: TableDefinition<'_, u64, &str> = TableDefinition::new("outbox");
const OUTBOX_SEQ: TableDefinition<'_, &str, u64> = TableDefinition::new("outbox_seq");
/// Each order's timeline: its hops as a JSON array.
const HOPS: TableDefinition<'_, &str, &str> = TableDefinition::new("order_hops");

/// A write the group-commit writer applies.
enum Write {
    Place(Box<Order>, Box<OutboxEntry>),
    Advance(OrderId, OrderStatus, Box<Hop>),
    Published(Vec<String>, Box<Hop>),
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
    let mut hops = txn.open_table(HOPS).map_err(se)?;
    // Appends to an order's timeline (read, extend, write: a few hops).
    let mut append = |id: &str, hop: &Hop| -> Result<(), String> {
        let mut list: Vec<Hop> = match hops.get(id).map_err(se)? {
            Some(v) => serde_json::from_str(v.value()).map_err(se)?,
            None => Vec::new(),
        };
        if list.contains(hop) {
            return Ok(());
        }
        list.push(hop.clone());
        let json = serde_json::to_string(&list).map_err(se)?;
        hops.insert(id, json.as_str()).map_err(se)?;
        Ok(())
    };
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
            Write::Advance(id, status, hop) => {
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
                            append(id.as_str(), hop)?;
                            Ok(Some(order))
                        }
                    },
                }
            }
            Write::Published(ids, hop) => {
                for id in ids {
                    let removed = seqs.remove(id.as_str()).map_err(se)?.map(|s| s.value());
                    if let Some(seq) = removed {
                        outbox.remove(seq).map_err(se)?;
                        append(id.as_str(), hop)?;
                    }
                }
                Ok(None)
            }
        });
    }
    Ok(answers)
}

impl RedbOrderStore {
    /// Opens (creating) the store at `path`; each write is made durable
    /// on its own ([`Flush::Each`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Flush::Each)
    }

    /// Opens (creating) the store at `path`, its status advances flushed
    /// as `flush` says. A placed order is always durable before
    /// [`place`](OrderStore::place) returns (its own `fsync`: a 201 waits on
    /// it).
    pub fn open_with(path: impl AsRef<Path>, flush: Flush) -> Result<Self, StoreError> {
        let db = open_file(path.as_ref(), |txn| {
            txn.open_table(ORDERS)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(OUTBOX_SEQ)?;
            txn.open_table(HOPS)?;
            Ok(())
        })?;
        // Status events come from consumers that ack after the durable
        // effect, many in flight: with Flush::Shared they share fsyncs
        // (with placed orders, or one every `flush.defer_limit()`). Forgetting
        // published events is bookkeeping: if it is lost in a crash, the
        // relay publishes those events again and consumers, being
        // idempotent, absorb them.
        let advance = flush.persist();
        let writer = GroupCommit::spawn_with(
            "order-store-writer",
            db.clone(),
            Box::new(apply),
            Box::new(move |op| match op {
                Write::Place(..) => Persist::Now,
                Write::Advance(..) => advance,
                Write::Published(..) => Persist::Lazy,
            }),
            flush.defer_limit(),
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
        hop: &Hop,
    ) -> Result<Option<Order>, StoreError> {
        self.write(Write::Advance(id.clone(), status, Box::new(hop.clone())))
            .await
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

    async fn published(&self, ids: Vec<String>, hop: &Hop) -> Result<(), StoreError> {
        self.write(Write::Published(ids, Box::new(hop.clone())))
            .await
            .map(drop)
    }

    async fn timeline(&self, id: &OrderId) -> Result<Option<(Order, Vec<Hop>)>, StoreError> {
        let id = id.clone();
        self.store
            .read(move |txn| {
                let orders = txn.open_table(ORDERS).map_err(se)?;
                let Some(order) = orders.get(id.as_str()).map_err(se)? else {
                    return Ok(None);
                };
                let order: Order = serde_json::from_str(order.value()).map_err(se)?;
                let hops = match txn
                    .open_table(HOPS)
                    .map_err(se)?
                    .get(id.as_str())
                    .map_err(se)?
                {
                    Some(v) => serde_json::from_str(v.value()).map_err(se)?,
                    None => Vec::new(),
                };
                Ok(Some((order, hops)))
            })
            .await
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
