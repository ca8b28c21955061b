//! The counting model: arrivals in one-second buckets over the rolling
//! window, deterministic totals, and the bounded dedupe memory.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use campusfood_core::OrderId;
use campusfood_core::events::{InventoryEvent, InventoryStatus, OrderEvent};
use campusfood_core::order::now_rfc3339;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Counts of distinct events since the consumer started: identical after a
/// replay of the same records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Distinct orders read from the order topic.
    pub orders: u64,
    /// Distinct inventory events read.
    pub inventory_events: u64,
    /// Of those, `Success`.
    pub successes: u64,
    /// Of those, `Failure`.
    pub failures: u64,
    /// Records dropped because their topic and order id were seen before.
    pub duplicates_dropped: u64,
    /// Records on either topic that were not valid events.
    pub malformed: u64,
}

/// `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsSnapshot {
    /// Orders in the window, per minute.
    pub orders_per_min: f64,
    /// Inventory events in the window.
    pub inventory_events: u64,
    /// `Failure` inventory events in the window.
    pub failures: u64,
    /// `failures` / `inventory_events` × 100 (0 when there are none),
    /// rounded to 2 decimals.
    pub failure_rate_pct: f64,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// When this snapshot was taken (RFC 3339, UTC).
    pub generated_at: String,
    /// Deterministic totals since the consumer started.
    pub totals: Totals,
    /// The group's lag per topic (records not yet committed); `null` when
    /// Kafka did not tell within 2 s.
    pub lag: BTreeMap<String, Option<i64>>,
}

/// Counts of one arrival second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    orders: u64,
    inventory: u64,
    failures: u64,
}

/// Most order ids remembered per topic for dedupe.
pub const DEDUPE_CAPACITY: usize = 1_000_000;

/// How an order id is remembered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SeenKey {
    /// One of ours: its number.
    Bits(u64),
    /// Another producer's: its text.
    Text(Box<str>),
}

/// The ids seen on one topic, at most `capacity`, oldest forgotten first.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<SeenKey>,
    order: VecDeque<SeenKey>,
    capacity: usize,
}

impl Seen {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ..Self::default()
        }
    }

    /// Remembers `key`; whether it was new.
    fn insert(&mut self, key: SeenKey) -> bool {
        if self.set.contains(&key) {
            return false;
        }
        self.set.insert(key.clone());
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[derive(Debug, Default)]
struct Counters {
    seen_orders: Seen,
    seen_inventory: Seen,
    totals: Totals,
    /// Newest at the back; none older than the window.
    buckets: VecDeque<Bucket>,
}

/// The analytics state: dedupe, window and totals. Cheap to share (`Arc`);
/// every method is a short critical section.
#[derive(Debug)]
pub struct Analytics {
    window_secs: u64,
    started: Instant,
    state: Mutex<Counters>,
}

/// The dedupe key of an order id: a generated id by its 48-bit number,
/// another producer's by its text.
fn order_key(id: &OrderId) -> SeenKey {
    match id.generated_bits() {
        Some(bits) => SeenKey::Bits(bits),
        None => SeenKey::Text(id.as_str().into()),
    }
}

impl Analytics {
    /// Empty analytics over a window of `window` (rounded down to whole
    /// seconds, at least 1), remembering [`DEDUPE_CAPACITY`] ids per topic.
    pub fn new(window: Duration) -> Self {
        Self::with_dedupe_capacity(window, DEDUPE_CAPACITY)
    }

    /// Like [`new`](Self::new), remembering at most `capacity` ids per
    /// topic for dedupe.
    pub fn with_dedupe_capacity(window: Duration, capacity: usize) -> Self {
        Self {
            window_secs: window.as_secs().max(1),
            started: Instant::now(),
            state: Mutex::new(Counters {
                seen_orders: Seen::with_capacity(capacity),
                seen_inventory: Seen::with_capacity(capacity),
                ..Counters::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts `order` unless its id was seen on the order topic before.
    /// Returns whether it was new.
    pub fn record_order(&self, order: &OrderEvent) -> bool {
        let second = self.now_second();
        let mut s = self.lock();
        if !s.seen_orders.insert(order_key(&order.order_id)) {
            s.totals.duplicates_dropped += 1;
            return false;
        }
        s.totals.orders += 1;
        self.bucket(&mut s, second).orders += 1;
        true
    }

    /// Counts `event` unless its order id was seen on the inventory topic
    /// before. Returns whether it was new.
    pub fn record_inventory(&self, event: &InventoryEvent) -> bool {
        let second = self.now_second();
        let mut s = self.lock();
        if !s.seen_inventory.insert(order_key(&event.order_id)) {
            s.totals.duplicates_dropped += 1;
            return false;
        }
        s.totals.inventory_events += 1;
        let failed = event.status == InventoryStatus::Failure;
        if failed {
            s.totals.failures += 1;
        } else {
            s.totals.successes += 1;
        }
        let b = self.bucket(&mut s, second);
        b.inventory += 1;
        b.failures += u64::from(failed);
        true
    }

    /// Counts a record that was not a valid event.
    pub fn record_malformed(&self) {
        self.lock().totals.malformed += 1;
    }

    /// The bucket of `second`, dropping buckets that left the window.
    fn bucket<'a>(&self, s: &'a mut Counters, second: u64) -> &'a mut Bucket {
        let oldest = second.saturating_sub(self.window_secs - 1);
        while s.buckets.front().is_some_and(|b| b.second < oldest) {
            s.buckets.pop_front();
        }
        if s.buckets.back().is_none_or(|b| b.second != second) {
            s.buckets.push_back(Bucket {
                second,
                orders: 0,
                inventory: 0,
                failures: 0,
            });
        }
        let last = s.buckets.len() - 1;
        &mut s.buckets[last]
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    /// The window's numbers and the totals, now (no lag).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let now = self.now_second();
        let oldest = now.saturating_sub(self.window_secs - 1);
        let (orders, inventory, failures, totals) = {
            let s = self.lock();
            let mut sums = (0, 0, 0);
            for b in s.buckets.iter().filter(|b| b.second >= oldest) {
                sums.0 += b.orders;
                sums.1 += b.inventory;
                sums.2 += b.failures;
            }
            (sums.0, sums.1, sums.2, s.totals)
        };
        let failure_rate_pct = if inventory == 0 {
            0.0
        } else {
            (failures as f64 * 10_000.0 / inventory as f64).round() / 100.0
        };
        MetricsSnapshot {
            orders_per_min: (orders as f64 * 60.0 / self.window_secs as f64 * 100.0).round()
                / 100.0,
            inventory_events: inventory,
            failures,
            failure_rate_pct,
            window_seconds: self.window_secs,
            generated_at: now_rfc3339(),
            totals,
            lag: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming_kafka::producer::OrderGenerator;

    #[test]
    fn dedupe_memory_is_bounded_and_forgets_the_oldest() {
        let a = Analytics::with_dedupe_capacity(Duration::from_secs(10), 2);
        let orders = OrderGenerator::new(3, 3).unwrap().orders(3);
        assert!(a.record_order(&orders[0]));
        assert!(a.record_order(&orders[1]));
        assert!(!a.record_order(&orders[0]), "remembered: dropped");
        assert!(a.record_order(&orders[2]), "a third forgets the oldest");
        assert!(!a.record_order(&orders[2]));
        assert!(!a.record_order(&orders[1]));
        assert!(
            a.record_order(&orders[0]),
            "forgotten: counted again (the documented cost)"
        );
        assert_eq!(a.totals().duplicates_dropped, 3);
        assert_eq!(a.lock().seen_orders.set.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn dedupes_windows_and_totals() {
        let a = Analytics::new(Duration::from_secs(10));
        let g = OrderGenerator::new(3, 3).unwrap();
        let orders = g.orders(20);
        for o in &orders {
            assert!(a.record_order(o));
        }
        assert!(!a.record_order(&orders[0]), "a duplicate is dropped");
        for (i, o) in orders.iter().enumerate() {
            let status = if i % 4 == 0 {
                InventoryStatus::Failure
            } else {
                InventoryStatus::Success
            };
            assert!(a.record_inventory(&InventoryEvent::for_order(o, status)));
        }
        assert!(!a.record_inventory(&InventoryEvent::for_order(
            &orders[1],
            InventoryStatus::Success
        )));
        a.record_malformed();
        let m = a.snapshot();
        assert_eq!(m.window_seconds, 10);
        assert_eq!(m.orders_per_min, 120.0); // 20 in a 10 s window
        assert_eq!((m.inventory_events, m.failures), (20, 5));
        assert_eq!(m.failure_rate_pct, 25.0);
        let expected = Totals {
            orders: 20,
            inventory_events: 20,
            successes: 15,
            failures: 5,
            duplicates_dropped: 2,
            malformed: 1,
        };
        assert_eq!(m.totals, expected);

        // The window forgets; the totals do not.
        tokio::time::advance(Duration::from_secs(11)).await;
        a.record_order(&g.next_order());
        let m = a.snapshot();
        assert_eq!(
            (m.orders_per_min, m.inventory_events, m.failures),
            (6.0, 0, 0)
        );
        assert_eq!(m.failure_rate_pct, 0.0);
        assert_eq!(m.totals.orders, 21);
    }

    #[test]
    fn other_producers_ids_are_told_apart() {
        let a = Analytics::new(Duration::from_secs(60));
        // The original producer's ids, and one that only looks like ours.
        for i in 1..=100 {
            let o: OrderEvent = serde_json::from_str(&format!(
                r#"{{"order_id": "order-{i}", "item_id": "item-1", "qty": 1, "ts": 1764600000.5}}"#
            ))
            .unwrap();
            assert!(a.record_order(&o), "order-{i} is new");
            assert!(!a.record_order(&o), "order-{i} again is a duplicate");
        }
        let lower: OrderEvent = serde_json::from_str(
            r#"{"order_id": "ORD-00000000abcd", "item_id": "item-1", "qty": 1, "ts": 1}"#,
        )
        .unwrap();
        let upper: OrderEvent = serde_json::from_str(
            r#"{"order_id": "ORD-00000000ABCD", "item_id": "item-1", "qty": 1, "ts": 1}"#,
        )
        .unwrap();
        assert!(a.record_order(&lower));
        assert!(a.record_order(&upper), "a different id");
        let t = a.snapshot().totals;
        assert_eq!((t.orders, t.duplicates_dropped), (102, 100));
    }

    #[test]
    fn metrics_have_the_contract_fields() {
        let v = serde_json::to_value(Analytics::new(Duration::from_secs(60)).snapshot()).unwrap();
        for field in [
            "orders_per_min",
            "inventory_events",
            "failures",
            "failure_rate_pct",
            "window_seconds",
            "generated_at",
            "totals",
            "lag",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
    }
}
