//! Where the asynchronous OrderService keeps orders, their status, and the
//! transactional outbox of events still to publish.
//!
//! [`OrderStore::place`] writes the order *and* its `OrderPlaced` event in
//! one transaction: once `POST /order` has answered 201, the event is on
//! disk and the relay will publish it, even if the broker is down at that
//! moment or the process dies right after answering. Status only moves
//! forward (placed → reserved | failed → notified), so events that arrive
//! late or twice change nothing.

use std::fmt;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::order::{Order, OrderStatus};
use campusfood_core::outbox::OutboxEntry;

use super::StoreError;
use crate::timeline::Hop;

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
    /// Moves `id` to `status` if that is forward, and appends `hop` to its
    /// timeline either way (a late or repeated decision is part of its
    /// story) unless that very hop is there already (the same event
    /// delivered again), in one write; returns the order as it now is
    /// (`None` if unknown: nothing is written). Returns once the write is
    /// durable, which may share an `fsync` with later writes (a status
    /// event's consumer acks after it; see
    /// [`Persist::Deferred`](campusfood_core::group_commit::Persist::Deferred)).
    async fn advance(
        &self,
        id: &OrderId,
        status: OrderStatus,
        hop: &Hop,
    ) -> Result<Option<Order>, StoreError>;
    /// Up to `limit` outbox entries, oldest first.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Removes published outbox entries and appends `hop` (when they were
    /// sent) to the timeline of each order whose entry this call removed,
    /// in one write.
    async fn published(&self, ids: Vec<String>, hop: &Hop) -> Result<(), StoreError>;
    /// The order `id` and the hops recorded for it (by [`advance`] and
    /// [`published`]), oldest first.
    ///
    /// [`advance`]: OrderStore::advance
    /// [`published`]: OrderStore::published
    async fn timeline(&self, id: &OrderId) -> Result<Option<(Order, Vec<Hop>)>, StoreError>;
    /// How many outbox entries wait.
    async fn outbox_len(&self) -> Result<u64, StoreError>;
    /// How many orders are stored.
    async fn order_count(&self) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use campusfood_core::order::PlaceOrder;
    use campusfood_core::transport::{Message, Route};

    use super::*;
    use crate::stores::{MemoryOrderStore, RedbOrderStore};
    use crate::timeline::{Step, service};

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
        let sent = Hop::now(service::ORDER, Step::Published);
        store
            .published(vec![a.order_id.to_string()], &sent)
            .await
            .unwrap();
        // Published once: late bookkeeping of another relay adds no hop.
        store
            .published(vec![a.order_id.to_string()], &sent)
            .await
            .unwrap();
        assert_eq!(store.outbox(10).await.unwrap(), vec![eb]);
        assert_eq!(store.outbox_len().await.unwrap(), 1);
        // Forward only; the hop recorded either way.
        let notified = Hop::now(service::NOTIFICATION, Step::Notified).attempt(2);
        let got = store
            .advance(&a.order_id, OrderStatus::Notified, &notified)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, OrderStatus::Notified);
        let late = Hop::now(service::INVENTORY, Step::Reserved).detail("late");
        let got = store
            .advance(&a.order_id, OrderStatus::Reserved, &late)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, OrderStatus::Notified);
        // The same event again adds nothing.
        store
            .advance(&a.order_id, OrderStatus::Reserved, &late)
            .await
            .unwrap();
        assert_eq!(
            store
                .advance(&OrderId::generate(), OrderStatus::Reserved, &late)
                .await
                .unwrap(),
            None
        );
        let (stored, hops) = store.timeline(&a.order_id).await.unwrap().unwrap();
        assert_eq!(stored.status, OrderStatus::Notified);
        assert_eq!(
            hops.iter().map(|h| h.step).collect::<Vec<_>>(),
            [Step::Published, Step::Notified, Step::Reserved]
        );
        assert_eq!(hops[1], notified);
        assert_eq!(hops[2], late);
        let (_, hops) = store.timeline(&b.order_id).await.unwrap().unwrap();
        assert!(hops.is_empty(), "{hops:?}");
        assert!(
            store
                .timeline(&OrderId::generate())
                .await
                .unwrap()
                .is_none()
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
