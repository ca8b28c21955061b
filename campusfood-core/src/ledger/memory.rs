//! An in-memory ledger: for tests and for embedding where durability is not
//! wanted. One mutex guards stock and records together, which is what makes
//! each reservation atomic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    InventoryLedger, LedgerError, Release, Reservation, ReservationRecord, ReserveOutcome, decide,
    release_decided,
};
use crate::ids::OrderId;
use crate::order::{Item, Quantity};
use crate::stock::StockSpec;

/// An in-memory [`InventoryLedger`]. Its state is lost with the process.
#[derive(Debug)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    stock: BTreeMap<Item, u64>,
    records: HashMap<OrderId, ReservationRecord>,
    /// Orders released before they were decided.
    released_early: HashSet<OrderId>,
}

impl MemoryLedger {
    /// A ledger holding `stock`, with no reservations.
    pub fn new(stock: &StockSpec) -> Self {
        Self {
            state: Mutex::new(State {
                stock: stock.levels().clone(),
                records: HashMap::new(),
                released_early: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated
        // (each update is one insert after the decision), so poison is safe
        // to ignore.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl InventoryLedger for MemoryLedger {
    async fn reserve(
        &self,
        order: &OrderId,
        item: &Item,
        qty: Quantity,
    ) -> Result<Reservation, LedgerError> {
        let mut state = self.lock();
        if let Some(first) = state.records.get(order) {
            return Ok(Reservation::Repeat(first.clone()));
        }
        let outcome = if state.released_early.remove(order) {
            ReserveOutcome::Released
        } else {
            decide(state.stock.get(item).copied(), qty)
        };
        if let ReserveOutcome::Reserved { remaining } = outcome {
            state.stock.insert(item.clone(), remaining);
        }
        let record = ReservationRecord {
            order_id: order.clone(),
            item: item.clone(),
            qty,
            outcome,
        };
        state.records.insert(order.clone(), record.clone());
        Ok(Reservation::First(record))
    }

    async fn release(&self, order: &OrderId) -> Result<Release, LedgerError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(record) = state.records.get_mut(order) else {
            return Ok(if state.released_early.insert(order.clone()) {
                Release::NothingHeld
            } else {
                Release::AlreadyReleased
            });
        };
        let back = match release_decided(record) {
            None => return Ok(Release::AlreadyReleased),
            Some(0) => return Ok(Release::NothingHeld),
            Some(back) => back,
        };
        let level = state.stock.entry(record.item.clone()).or_insert(0);
        *level = level.saturating_add(back);
        Ok(Release::Returned {
            item: record.item.clone(),
            qty: record.qty,
            level: *level,
        })
    }

    async fn stock(&self) -> Result<BTreeMap<Item, u64>, LedgerError> {
        Ok(self.lock().stock.clone())
    }

    async fn reservation(&self, order: &OrderId) -> Result<Option<ReservationRecord>, LedgerError> {
        Ok(self.lock().records.get(order).cloned())
    }

    async fn reservation_count(&self) -> Result<u64, LedgerError> {
        Ok(self.lock().records.len() as u64)
    }
}
