//! The decision both delivery modes share: decode the order, throttle,
//! reserve through [`InventoryService`], and map the result to an
//! [`InventoryEvent`] (or a retry, or a dead letter).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use campusfood_core::RequestId;
use campusfood_core::bounded;
use campusfood_core::events::{InventoryEvent, InventoryStatus, OrderEvent, ReserveRequest};
use campusfood_core::transport::{Message, Route};

use crate::StreamingError;
use campusfood_services::inventory::{InventoryService, ReserveResult};

/// What the consumer has done since it started (this process only; an
/// order decided again — after an aborted transaction, or behind an order
/// to retry in its batch — counts again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InventoryCounts {
    /// Orders decided.
    pub decided: u64,
    /// Of those, `Success`.
    pub successes: u64,
    /// Of those, `Failure`.
    pub failures: u64,
    /// Records that were not orders, dead-lettered.
    pub malformed: u64,
    /// Decisions the ledger could not make (retried).
    pub ledger_errors: u64,
}

#[derive(Debug, Default)]
struct Stats {
    decided: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    malformed: AtomicU64,
    ledger_errors: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> InventoryCounts {
        InventoryCounts {
            decided: self.decided.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            ledger_errors: self.ledger_errors.load(Ordering::Relaxed),
        }
    }
}

/// What to do with one order record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write this event (keyed by its order id) to the inventory topic.
    Emit(InventoryEvent),
    /// The ledger could not answer: try the record again later (in
    /// exactly-once mode without using up an attempt; the at-least-once
    /// consumer counts it).
    Unavailable(String),
    /// The record is not an order: set it aside.
    DeadLetter(String),
}

/// The decision logic both modes share: decode, throttle, reserve, map.
#[derive(Debug)]
pub struct OrderDecider {
    service: Arc<InventoryService>,
    throttle: Duration,
    stats: Stats,
}

impl OrderDecider {
    /// Decides with `service`, pausing `throttle` before each order.
    pub fn new(service: Arc<InventoryService>, throttle: Duration) -> Self {
        Self {
            service,
            throttle,
            stats: Stats::default(),
        }
    }

    /// Whether it pauses before each order (a throttled worker decides one
    /// order at a time).
    pub(super) fn is_throttled(&self) -> bool {
        !self.throttle.is_zero()
    }

    /// What this decider has done.
    pub fn counts(&self) -> InventoryCounts {
        self.stats.snapshot()
    }

    /// Decides the order in `message`. Always on attempt 1, so the
    /// injected failure is the same on every redelivery and replay. Runs
    /// in the caller's span (the order's consumer span); the service's
    /// `reserve` span names the order.
    pub async fn decide(&self, message: &Message) -> Decision {
        if !self.throttle.is_zero() {
            tokio::time::sleep(self.throttle).await;
        }
        let order: OrderEvent = match message.decode() {
            Ok(order) => order,
            Err(e) => {
                Stats::bump(&self.stats.malformed);
                tracing::warn!(key = ?message.key, error = %e, "malformed order event");
                return Decision::DeadLetter(bounded::reason_owned(format!(
                    "not an OrderEvent: {e}"
                )));
            }
        };
        let request_id = message.request_id().unwrap_or_else(RequestId::generate);
        let request = ReserveRequest::for_event(&order, request_id);
        let status = match self.service.reserve(&request, 1).await {
            ReserveResult::Reserved(_) => InventoryStatus::Success,
            ReserveResult::Insufficient(_)
            | ReserveResult::UnknownItem { .. }
            | ReserveResult::Released { .. }
            | ReserveResult::Injected { .. } => InventoryStatus::Failure,
            ReserveResult::Unavailable { reason, .. } => {
                Stats::bump(&self.stats.ledger_errors);
                return Decision::Unavailable(reason);
            }
            // Its id names another order, whose event is (or will be) the
            // one for this id: set it aside instead.
            ReserveResult::IdTaken { item, qty, .. } => {
                return Decision::DeadLetter(format!(
                    "order id already used for another order ({qty} x {item}); nothing reserved"
                ));
            }
        };
        Stats::bump(&self.stats.decided);
        Stats::bump(match status {
            InventoryStatus::Success => &self.stats.successes,
            InventoryStatus::Failure => &self.stats.failures,
        });
        Decision::Emit(InventoryEvent::for_order(&order, status))
    }
}

/// The route an event is written on: both map to the inventory topic; the
/// route (in the `x-route` header) tells successes from failures.
pub(super) fn route_of(event: &InventoryEvent) -> Route {
    match event.status {
        InventoryStatus::Success => Route::INVENTORY_RESERVED,
        InventoryStatus::Failure => Route::INVENTORY_FAILED,
    }
}

/// The record for `event`: JSON value, keyed by the order id.
pub fn event_message(event: &InventoryEvent) -> Result<Message, StreamingError> {
    Ok(Message::json(event)?.with_key(event.order_id.as_str()))
}

#[cfg(test)]
pub(super) mod tests {
    use campusfood_core::fault::{FaultInjector, decide};
    use campusfood_core::ledger::MemoryLedger;

    use super::*;
    use crate::inventory::DEFAULT_SEED;
    use crate::inventory::InventoryOptions;
    use crate::producer::{OrderGenerator, order_message};

    pub(in crate::inventory) fn decider(stock: &str, fail_rate: f64) -> OrderDecider {
        let options = InventoryOptions {
            fail_rate,
            ..InventoryOptions::default()
        };
        let ledger = Arc::new(MemoryLedger::new(&stock.parse().unwrap()));
        let faults = Arc::new(FaultInjector::new(options.faults().unwrap()));
        OrderDecider::new(
            Arc::new(InventoryService::new(ledger, faults)),
            Duration::ZERO,
        )
    }

    #[tokio::test]
    async fn failures_are_the_seeded_draw_and_repeats_answer_the_same() {
        let d = decider("item-1=1000000,item-2=1000000", 0.3);
        let orders = OrderGenerator::new(2, 5).unwrap().orders(2000);
        let mut first = Vec::new();
        for o in &orders {
            let Decision::Emit(e) = d.decide(&order_message(o).unwrap()).await else {
                panic!("no event");
            };
            let expected = if decide(DEFAULT_SEED, o.order_id.as_str(), 1) < 0.3 {
                InventoryStatus::Failure
            } else {
                InventoryStatus::Success
            };
            assert_eq!(e.status, expected);
            assert_eq!(
                (&e.order_id, &e.item_id, e.qty, e.ts),
                (&o.order_id, &o.item_id, o.qty, o.ts)
            );
            first.push(e);
        }
        // A redelivery decides the same (and takes no stock twice).
        for (o, e) in orders.iter().zip(&first) {
            assert_eq!(
                d.decide(&order_message(o).unwrap()).await,
                Decision::Emit(e.clone())
            );
        }
    }

    #[tokio::test]
    async fn unknown_items_and_short_stock_fail_and_garbage_is_dead_lettered() {
        let d = decider("item-1=3", 0.0);
        let g = OrderGenerator::new(1, 2).unwrap();
        let mut o = g.next_order();
        o.qty = campusfood_core::Quantity::new(2).unwrap();
        let status = |d: Decision| match d {
            Decision::Emit(e) => e.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status(d.decide(&order_message(&o).unwrap()).await),
            InventoryStatus::Success
        );
        let mut o2 = g.next_order();
        o2.qty = o.qty;
        assert_eq!(
            status(d.decide(&order_message(&o2).unwrap()).await),
            InventoryStatus::Failure
        );
        let mut o3 = g.next_order();
        o3.item_id = campusfood_core::Item::parse("item-9").unwrap();
        assert_eq!(
            status(d.decide(&order_message(&o3).unwrap()).await),
            InventoryStatus::Failure
        );
        for body in [
            &b"not json"[..],
            // No item: poison. (`order-1` itself is an order id now.)
            br#"{"order_id":"order-1","qty":1,"ts":1}"#,
        ] {
            let m = Message {
                body: bytes::Bytes::copy_from_slice(body),
                ..Message::default()
            };
            assert!(matches!(d.decide(&m).await, Decision::DeadLetter(_)));
        }
        assert_eq!(d.counts().malformed, 2);
        assert_eq!(d.counts().decided, 3);
    }

    #[test]
    fn inventory_event_has_the_contract_shape() {
        let o = OrderGenerator::new(5, 5).unwrap().next_order();
        let e = InventoryEvent::for_order(&o, InventoryStatus::Failure);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["order_id"], o.order_id.as_str());
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["item_id", "order_id", "qty", "status", "ts"]);
        let s = serde_json::to_value(InventoryStatus::Success).unwrap();
        assert_eq!(s, "Success");
    }
}
