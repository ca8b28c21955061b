//! The stores in memory, for tests and embedding: nothing survives the
//! process.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::order::{Order, OrderStatus};
use campusfood_core::outbox::OutboxEntry;

use super::{OrderStore, Placed, ProcessedIds, StoreError, advanced};
use crate::timeline::Hop;

/// An in-memory [`OrderStore`], for tests and embedding.
#[derive(Debug, Default)]
pub struct MemoryOrderStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    orders: BTreeMap<OrderId, Order>,
    hops: BTreeMap<OrderId, Vec<Hop>>,
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
        hop: &Hop,
    ) -> Result<Option<Order>, StoreError> {
        let mut s = self.lock();
        let Some(o) = s.orders.get_mut(id) else {
            return Ok(None);
        };
        if let Some(next) = advanced(o.status, status) {
            o.status = next;
        }
        let order = o.clone();
        let hops = s.hops.entry(id.clone()).or_default();
        if !hops.contains(hop) {
            hops.push(hop.clone());
        }
        Ok(Some(order))
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.lock().outbox.values().take(limit).cloned().collect())
    }

    async fn published(&self, ids: Vec<String>, hop: &Hop) -> Result<(), StoreError> {
        let mut s = self.lock();
        let mut gone = Vec::new();
        s.outbox.retain(|_, e| {
            let published = ids.contains(&e.id);
            if published {
                gone.push(e.id.clone());
            }
            !published
        });
        for id in gone {
            if let Ok(id) = OrderId::parse(&id) {
                s.hops.entry(id).or_default().push(hop.clone());
            }
        }
        Ok(())
    }

    async fn timeline(&self, id: &OrderId) -> Result<Option<(Order, Vec<Hop>)>, StoreError> {
        let s = self.lock();
        Ok(s.orders
            .get(id)
            .map(|o| (o.clone(), s.hops.get(id).cloned().unwrap_or_default())))
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().outbox.len() as u64)
    }

    async fn order_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock().orders.len() as u64)
    }
}

/// In-memory [`ProcessedIds`].
#[derive(Debug, Default)]
pub struct MemoryProcessedIds(Mutex<HashSet<String>>);

impl MemoryProcessedIds {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ProcessedIds for MemoryProcessedIds {
    async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().contains(id))
    }

    async fn record(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().insert(id.to_owned()))
    }

    async fn len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().len() as u64)
    }
}
