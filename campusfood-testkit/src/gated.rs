//! [`AnswersLate`]: a ledger whose reservations commit at once but answer
//! only when the test opens the gate — inventory reserved, and its reply
//! is still on the way when the caller gives up.

use std::collections::BTreeMap;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::ledger::{
    InventoryLedger, LedgerError, MemoryLedger, Release, Reservation, ReservationRecord,
};
use campusfood_core::order::{Item, Quantity};
use tokio::sync::Semaphore;

/// A [`MemoryLedger`] whose `reserve` commits, then waits for
/// [`open`](Self::open) before it answers. Everything else answers at once.
#[derive(Debug)]
pub struct AnswersLate {
    inner: MemoryLedger,
    gate: Semaphore,
}

impl AnswersLate {
    /// A ledger holding `stock` (`item=qty,…`), gate closed.
    pub fn new(stock: &str) -> Self {
        Self {
            inner: MemoryLedger::new(&stock.parse().unwrap()),
            gate: Semaphore::new(0),
        }
    }

    /// Lets every waiting and later reservation answer.
    pub fn open(&self) {
        self.gate.close();
    }
}

#[async_trait]
impl InventoryLedger for AnswersLate {
    async fn reserve(
        &self,
        order: &OrderId,
        item: &Item,
        qty: Quantity,
    ) -> Result<Reservation, LedgerError> {
        let reservation = self.inner.reserve(order, item, qty).await;
        // Closed means open: acquire fails at once.
        let _ = self.gate.acquire().await;
        reservation
    }

    async fn release(&self, order: &OrderId) -> Result<Release, LedgerError> {
        self.inner.release(order).await
    }

    async fn stock(&self) -> Result<BTreeMap<Item, u64>, LedgerError> {
        self.inner.stock().await
    }

    async fn reservation(&self, order: &OrderId) -> Result<Option<ReservationRecord>, LedgerError> {
        self.inner.reservation(order).await
    }

    async fn reservation_count(&self) -> Result<u64, LedgerError> {
        self.inner.reservation_count().await
    }
}
