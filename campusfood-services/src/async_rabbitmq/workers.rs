//! The message handlers of the asynchronous architecture, written against
//! [`Handler`] so they run on any publish/subscribe transport (RabbitMQ,
//! Kafka, in-memory).
//!
//! Each answers a [`Disposition`]: `Ack` once its effects are durable,
//! `Retry` for what may pass (an injected fault, a storage or broker
//! hiccup), `DeadLetter` for what never will (a poison message). Every one
//! is safe to run twice on the same message: the ledger and the order
//! status are idempotent, and the notifier remembers what it sent.
//!
//! A store that does not answer (the shared database restarting, a full
//! disk) is not the message's fault: the handler keeps the delivery and
//! tries again with backoff for up to [`STORE_PATIENCE`] before it counts
//! an attempt, so an outage does not send good orders to the dead letters.
//! Meanwhile the consumer's prefetch window bounds how many deliveries
//! wait, and a stopping subscription hands them back to the broker.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::bounded;
use campusfood_core::events::{
    FailReason, InventoryFailed, InventoryReserved, NotifyRequest, OrderNotified, OrderPlaced,
    ReserveRequest,
};
use campusfood_core::order::{OrderStatus, now_rfc3339};
use campusfood_core::transport::{
    Delivery, Disposition, Handler, Message, Route, Transport, headers,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::inventory::{InventoryService, ReserveResult};
use crate::notification::NotificationService;
use crate::stores::OrderStore;
use crate::stores::ProcessedIds;
use crate::timeline::{Hop, Step, service};

/// How long a handler keeps retrying a store that does not answer before
/// it gives the delivery back as a failed attempt.
pub const STORE_PATIENCE: Duration = Duration::from_secs(300);

/// Runs `op` until it answers `Ok`, with backoff from 50 ms to 5 s, for at
/// most [`STORE_PATIENCE`]; then its last error.
async fn patiently<T, E, F>(what: &str, mut op: impl FnMut() -> F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    let mut pause = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, ?pause, "{what}: store unavailable; trying again (the delivery keeps its attempts)");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Decodes a delivery's body, or says why it is poison, in a reason of at
/// most [`MAX_REASON_BYTES`](bounded::MAX_REASON_BYTES) whatever the body
/// holds.
pub fn decode_or_poison<T: DeserializeOwned>(delivery: &Delivery) -> Result<T, Disposition> {
    let poison = |reason: String| Disposition::DeadLetter {
        reason: bounded::reason_owned(reason),
    };
    let value: serde_json::Value = serde_json::from_slice(&delivery.message.body)
        .map_err(|e| poison(format!("invalid JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| poison(format!("invalid message: {e}")))
}

/// Publishes `event` on `route`, keyed by `order`, carrying the request id
/// and the attempt of the delivery it answers
/// ([`headers::CAUSE_ATTEMPT`]).
async fn publish<T: serde::Serialize>(
    transport: &dyn Transport,
    route: &Route,
    order: &OrderId,
    request_id: &str,
    attempt: u32,
    event: &T,
) -> Result<(), Disposition> {
    let message = Message::json(event)
        .map_err(|e| Disposition::DeadLetter {
            reason: format!("cannot encode event: {e}"),
        })?
        .with_key(order.as_str())
        .with_header(headers::REQUEST_ID, request_id)
        .with_header(headers::CAUSE_ATTEMPT, attempt.to_string());
    transport
        .publish(route, message)
        .await
        .map_err(|e| Disposition::Retry {
            reason: format!("publishing {route}: {e}"),
        })
}

/// Consumes `OrderPlaced`: reserves through the idempotent ledger (after
/// injected faults), then publishes `InventoryReserved` or
/// `InventoryFailed`. A redelivered order gets the first decision again,
/// and the event is published again (consumers are idempotent).
#[derive(Debug)]
pub struct ReserveWorker {
    inventory: Arc<InventoryService>,
    transport: Arc<dyn Transport>,
}

impl ReserveWorker {
    /// A worker deciding with `inventory` and publishing on `transport`.
    pub fn new(inventory: Arc<InventoryService>, transport: Arc<dyn Transport>) -> Self {
        Self {
            inventory,
            transport,
        }
    }
}

#[async_trait]
impl Handler for ReserveWorker {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let placed: OrderPlaced = match decode_or_poison(&delivery) {
            Ok(p) => p,
            Err(poison) => return poison,
        };
        let request = ReserveRequest::for_placed(&placed);
        let request_id = placed.request_id.to_string();
        let inventory = &self.inventory;
        let result = patiently("reserving", || async {
            match inventory.reserve(&request, delivery.attempt).await {
                ReserveResult::Unavailable { reason, .. } => Err(reason),
                decided => Ok(decided),
            }
        })
        .await
        .unwrap_or_else(|reason| ReserveResult::Unavailable {
            reason,
            request_id: placed.request_id,
        });
        let published = match result {
            ReserveResult::Reserved(ok) => {
                let event = InventoryReserved::new(&placed, ok);
                publish(
                    &*self.transport,
                    &Route::INVENTORY_RESERVED,
                    &placed.order_id,
                    &request_id,
                    delivery.attempt,
                    &event,
                )
                .await
            }
            ReserveResult::Insufficient(_) | ReserveResult::UnknownItem { .. } => {
                let reason = if matches!(result, ReserveResult::Insufficient(_)) {
                    FailReason::InsufficientStock
                } else {
                    FailReason::ItemNotFound
                };
                let event = InventoryFailed::new(&placed, reason);
                publish(
                    &*self.transport,
                    &Route::INVENTORY_FAILED,
                    &placed.order_id,
                    &request_id,
                    delivery.attempt,
                    &event,
                )
                .await
            }
            // Released at inventory (`POST /release`) before its turn: it
            // will not be reserved, and the contract's InventoryFailed has
            // no reason for it. Set aside, with the reason, for an operator.
            ReserveResult::Released { .. } => {
                return Disposition::DeadLetter {
                    reason: "the order was released at inventory; it is not reserved".to_owned(),
                };
            }
            // Its id names another order: an event for it would be taken
            // for that order's. Set aside, with the reason.
            ReserveResult::IdTaken { item, qty, .. } => {
                return Disposition::DeadLetter {
                    reason: format!(
                        "order id already used for another order ({qty} x {item}); nothing reserved"
                    ),
                };
            }
            ReserveResult::Injected { .. } => {
                return Disposition::Retry {
                    reason: "injected failure".to_owned(),
                };
            }
            ReserveResult::Unavailable { reason, .. } => return Disposition::Retry { reason },
        };
        match published {
            Ok(()) => Disposition::Ack,
            Err(d) => d,
        }
    }
}

/// One lock per key, held while a key is being settled; a key's lock is
/// forgotten once nobody holds or waits for it.
#[derive(Debug, Default)]
struct PerKey {
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one key is being settled.
struct KeyGuard<'a> {
    owner: &'a PerKey,
    key: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl PerKey {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no one else settles `key`, then holds it.
    async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        KeyGuard {
            owner: self,
            key: key.to_owned(),
            _held: lock.lock_owned().await,
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.map();
        // The map's and this guard's references: nobody waits.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

/// Consumes `InventoryReserved`: sends the confirmation once per order and
/// records it at once (a redelivery — also one after the `OrderNotified`
/// publish failed — is recognised and not sent again; two copies in flight
/// at once are settled one after the other, so the second sees the first's
/// record), then publishes `OrderNotified` (again, for a redelivery).
#[derive(Debug)]
pub struct NotifyWorker {
    notification: Arc<NotificationService>,
    processed: Arc<dyn ProcessedIds>,
    transport: Arc<dyn Transport>,
    settling: PerKey,
}

impl NotifyWorker {
    /// A worker sending with `notification`, remembering in `processed`.
    pub fn new(
        notification: Arc<NotificationService>,
        processed: Arc<dyn ProcessedIds>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            notification,
            processed,
            transport,
            settling: PerKey::default(),
        }
    }
}

#[async_trait]
impl Handler for NotifyWorker {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let reserved: InventoryReserved = match decode_or_poison(&delivery) {
            Ok(r) => r,
            Err(poison) => return poison,
        };
        let id = reserved.order_id.as_str();
        let _settling = self.settling.lock(id).await;
        let sent = match patiently("checking sent notifications", || {
            self.processed.contains(id)
        })
        .await
        {
            Ok(sent) => sent,
            Err(e) => {
                return Disposition::Retry {
                    reason: e.to_string(),
                };
            }
        };
        if sent {
            tracing::info!(order_id = id, "already notified: not sent again");
        } else {
            let request = NotifyRequest::confirming_reserved(&reserved);
            if let Err(e) = self.notification.send(&request).await {
                return Disposition::Retry {
                    reason: e.to_string(),
                };
            }
            // Recorded right after sending, before the event: a publish that
            // fails (the broker cut) is retried without sending again.
            if let Err(e) = patiently("recording a sent notification", || {
                self.processed.record(id)
            })
            .await
            {
                return Disposition::Retry {
                    reason: e.to_string(),
                };
            }
        }
        let event = OrderNotified::new(&reserved);
        let request_id = reserved.request_id.to_string();
        if let Err(d) = publish(
            &*self.transport,
            &Route::ORDER_NOTIFIED,
            &reserved.order_id,
            &request_id,
            delivery.attempt,
            &event,
        )
        .await
        {
            return d;
        }
        // Also for a redelivery of one sent before: the order's status
        // reaches `notified` even when the first event was lost.
        Disposition::Ack
    }
}

/// What a status update reads of an event: the order, and for its
/// timeline when it happened and what it says (any of the three events).
#[derive(Deserialize)]
struct AboutOrder {
    order_id: OrderId,
    /// RFC 3339 in ours; the original's may differ (then: when consumed).
    #[serde(default)]
    created_at: Option<serde_json::Value>,
    #[serde(default)]
    reservation_id: Option<String>,
    #[serde(default)]
    reason: Option<serde_json::Value>,
}

impl AboutOrder {
    /// The timeline hop this event is, as `status`'s event.
    fn hop(&self, status: OrderStatus, delivery: &Delivery) -> Hop {
        let (service, step) = match status {
            OrderStatus::Notified => (service::NOTIFICATION, Step::Notified),
            OrderStatus::Failed => (service::INVENTORY, Step::Failed),
            _ => (service::INVENTORY, Step::Reserved),
        };
        let at = match &self.created_at {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => now_rfc3339(),
        };
        let attempt = delivery
            .message
            .headers
            .get(headers::CAUSE_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        let mut hop = Hop::at(Some(at), service, step).attempt(attempt);
        let detail = match (&self.reservation_id, &self.reason) {
            (Some(r), _) => Some(format!("reservation {r}")),
            (None, Some(serde_json::Value::String(r))) => Some(r.clone()),
            _ => None,
        };
        if let Some(d) = detail {
            hop = hop.detail(bounded::reason(&d).into_owned());
        }
        hop
    }
}

/// Consumes an inventory or notification event and moves the order's
/// status forward to `status`.
#[derive(Debug)]
pub struct StatusWorker {
    store: Arc<dyn OrderStore>,
    status: OrderStatus,
}

impl StatusWorker {
    /// A worker moving orders in `store` to `status`.
    pub fn new(store: Arc<dyn OrderStore>, status: OrderStatus) -> Self {
        Self { store, status }
    }
}

#[async_trait]
impl Handler for StatusWorker {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let about: AboutOrder = match decode_or_poison(&delivery) {
            Ok(a) => a,
            Err(poison) => return poison,
        };
        let hop = about.hop(self.status, &delivery);
        match patiently("updating an order's status", || {
            self.store.advance(&about.order_id, self.status, &hop)
        })
        .await
        {
            Ok(Some(order)) => {
                tracing::debug!(order_id = %order.order_id, status = ?order.status, "order status");
                Disposition::Ack
            }
            Ok(None) => {
                tracing::warn!(order_id = %about.order_id, "event for an order this service does not know");
                Disposition::Ack
            }
            Err(e) => Disposition::Retry {
                reason: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use campusfood_core::events::ReserveOk;
    use campusfood_core::fault::{FaultConfig, FaultInjector};
    use campusfood_core::order::{Order, PlaceOrder};
    use campusfood_core::transport::ForwardTransport;
    use campusfood_transport::memory::MemoryTransport;

    use super::*;
    use crate::stores::MemoryProcessedIds;

    /// An `InventoryReserved` for a fresh order of one burger.
    fn reserved_event() -> InventoryReserved {
        let order = PlaceOrder::from_json(br#"{"item": "burger", "qty": 1}"#).unwrap();
        let placed = OrderPlaced::from(&Order::new(order, OrderStatus::Placed));
        InventoryReserved::new(
            &placed,
            ReserveOk::new(&ReserveRequest::for_placed(&placed), 9),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_copies_in_flight_at_once_are_notified_once() {
        // A slow send, so that both copies are in flight together.
        let slow = FaultConfig::new(0.2, 0.0, None).unwrap();
        let notification = Arc::new(NotificationService::new(Arc::new(FaultInjector::new(slow))));
        let worker = Arc::new(NotifyWorker::new(
            notification.clone(),
            Arc::new(MemoryProcessedIds::new()),
            Arc::new(MemoryTransport::new()),
        ));
        let event = reserved_event();
        let copy = || Delivery {
            message: Message::json(&event).unwrap(),
            attempt: 1,
        };
        let (a, b) = tokio::join!(worker.handle(copy()), worker.handle(copy()));
        assert_eq!((a, b), (Disposition::Ack, Disposition::Ack));
        assert_eq!(notification.sent(), 1, "one confirmation for two copies");
        assert!(worker.settling.map().is_empty(), "no lock left behind");
    }

    /// Memory, except that the first publish fails (a broker cut).
    #[derive(Debug, Default)]
    struct FirstPublishFails {
        inner: MemoryTransport,
        failed: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl ForwardTransport for FirstPublishFails {
        fn inner(&self) -> &dyn Transport {
            &self.inner
        }
        fn forward_name(&self) -> &'static str {
            "first-publish-fails"
        }
        async fn forward_publish(
            &self,
            route: &Route,
            message: Message,
        ) -> Result<(), campusfood_core::transport::TransportError> {
            if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(campusfood_core::transport::TransportError::Unavailable {
                    route: route.clone(),
                    reason: "connection closed".to_owned(),
                });
            }
            self.inner.publish(route, message).await
        }
    }

    #[tokio::test]
    async fn a_redelivery_after_the_event_was_lost_is_not_sent_again() {
        let notification = Arc::new(NotificationService::default());
        let worker = NotifyWorker::new(
            notification.clone(),
            Arc::new(MemoryProcessedIds::new()),
            Arc::new(FirstPublishFails::default()),
        );
        let event = reserved_event();
        let delivery = |attempt| Delivery {
            message: Message::json(&event).unwrap(),
            attempt,
        };
        // Sent, then the OrderNotified publish fails: retried.
        assert!(matches!(
            worker.handle(delivery(1)).await,
            Disposition::Retry { .. }
        ));
        // The redelivery publishes the event, and sends nothing again.
        assert_eq!(worker.handle(delivery(2)).await, Disposition::Ack);
        assert_eq!(notification.sent(), 1, "one confirmation");
    }
}
