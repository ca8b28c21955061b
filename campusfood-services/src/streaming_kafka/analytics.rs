//! The analytics consumer: reads `order-events` and `inventory-events`
//! (read committed, group `analytics-consumer`) and serves `GET /metrics`.
//!
//! # Duplicates
//! An event is identified by its topic and order id. The first one counts;
//! any later record with the same topic and order id (a redelivery after a
//! crash, an at-least-once re-send, a producer retry) is dropped and counted
//! in [`Totals::duplicates_dropped`]. The ids seen are kept in memory —
//! ours (`ORD-` + 12 hex digits) as their 48-bit numbers, any other
//! producer's (`order-17`, …) as text — at most [`DEDUPE_CAPACITY`] per
//! topic, oldest forgotten first: memory stays bounded (about 40 bytes an
//! id), at the cost that a duplicate of an order older than the last
//! [`DEDUPE_CAPACITY`] distinct orders of its topic is counted again. A
//! restarted process starts empty and counts what it reads from its
//! committed offsets on.
//!
//! # Lag
//! The group's lag is asked of Kafka by one background task, every
//! [`LAG_REFRESH`], one request at a time; `GET /metrics` answers with the
//! last value (`null` when none is younger than [`LAG_STALE`]). Scrapes
//! never start Kafka work of their own.
//!
//! # Two kinds of numbers
//! - **Rolling window** (the contract's `/metrics` fields): events counted
//!   by wall-clock *arrival* at this consumer in one-second buckets over
//!   the last [`AnalyticsOptions::window`] (`WINDOW_SEC`):
//!   `orders_per_min` = orders in the window × 60 / `WINDOW_SEC`;
//!   `inventory_events` and `failures` = inventory events and failures in
//!   the window; `failure_rate_pct` = failures / inventory events × 100.
//!   They depend on timing: a replay gives different values.
//! - **Totals** ([`Totals`]): counts of distinct events since the process
//!   started. They depend only on the records read, so re-reading the same
//!   topics from the beginning (offset reset, restart) gives identical
//!   totals.
//!
//! # Malformed records
//! A record on `inventory-events` that is not an [`InventoryEvent`] is
//! counted ([`Totals::malformed`]) and dead-lettered to
//! `inventory-events.dlq`. One on `order-events` is counted and skipped:
//! the inventory consumer, which owns that topic's processing, dead-letters
//! it (so the `.dlq` holds it once, not once per group).
//!
//! `THROTTLE_MS` pauses before each record, to show lag building up;
//! `REPORT_INTERVAL_SEC` logs a summary line.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use campusfood_core::OrderId;
use campusfood_core::bounded;
use campusfood_core::events::{InventoryEvent, InventoryStatus, OrderEvent};
use campusfood_core::order::now_rfc3339;
use campusfood_core::task::BackgroundTask;
use campusfood_core::transport::{
    Delivery, Disposition, Handler, Route, SubscribeOptions, Subscription, Transport,
};
use campusfood_transport::kafka::KafkaTransport;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::StreamingError;
use super::inventory::with_instance_id;
use crate::server::Server;

/// The analytics consumer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsOptions {
    /// `GROUP_ID`: its consumer group.
    pub group: String,
    /// `WINDOW_SEC`: the rolling window, whole seconds (at least 1).
    pub window: Duration,
    /// `THROTTLE_MS`: a pause before each record.
    pub throttle: Duration,
    /// `REPORT_INTERVAL_SEC`: how often a summary line is logged (zero:
    /// never).
    pub report_interval: Duration,
    /// `GROUP_INSTANCE_ID`: static membership. The consumer is two group
    /// members (one per topic), `<id>-orders` and `<id>-inventory`. A
    /// static member does not leave the group when it stops, so an offset
    /// reset must wait for its session to time out (45 s).
    pub group_instance_id: Option<String>,
    /// `HTTP_HOST:HTTP_PORT` of `/metrics` (port 0 picks a free one).
    pub http_addr: String,
}

impl Default for AnalyticsOptions {
    /// Group `analytics-consumer`, 60 s window, no throttle, a report every
    /// 10 s, dynamic membership, `127.0.0.1:8080`.
    fn default() -> Self {
        Self {
            group: "analytics-consumer".to_owned(),
            window: Duration::from_secs(60),
            throttle: Duration::ZERO,
            report_interval: Duration::from_secs(10),
            group_instance_id: None,
            http_addr: "127.0.0.1:8080".to_owned(),
        }
    }
}

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

/// Which topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Orders,
    Inventory,
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

/// Feeds one topic's records into [`Analytics`].
#[derive(Debug)]
struct AnalyticsHandler {
    analytics: Arc<Analytics>,
    source: Source,
    throttle: Duration,
}

#[async_trait]
impl Handler for AnalyticsHandler {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        if !self.throttle.is_zero() {
            tokio::time::sleep(self.throttle).await;
        }
        let message = &delivery.message;
        match self.source {
            Source::Orders => match message.decode::<OrderEvent>() {
                Ok(order) => {
                    self.analytics.record_order(&order);
                }
                Err(e) => {
                    self.analytics.record_malformed();
                    tracing::warn!(key = ?message.key, error = %e, "malformed order event: skipped");
                }
            },
            Source::Inventory => match message.decode::<InventoryEvent>() {
                Ok(event) => {
                    self.analytics.record_inventory(&event);
                }
                Err(e) => {
                    self.analytics.record_malformed();
                    return Disposition::DeadLetter {
                        reason: bounded::reason_owned(format!("not an InventoryEvent: {e}")),
                    };
                }
            },
        }
        Disposition::Ack
    }
}

/// How often the background task asks Kafka for the group's lag.
pub const LAG_REFRESH: Duration = Duration::from_secs(1);
/// A lag older than this is answered as `null`.
pub const LAG_STALE: Duration = Duration::from_secs(5);

/// The last lag Kafka told, per topic, and when.
#[derive(Debug, Default)]
struct LagCache {
    values: Mutex<BTreeMap<String, (i64, Instant)>>,
    refreshes: std::sync::atomic::AtomicU64,
}

/// What `/metrics` needs to answer.
#[derive(Debug, Clone)]
struct Metrics {
    analytics: Arc<Analytics>,
    transport: KafkaTransport,
    group: String,
    topics: [String; 2],
    lag: Arc<LagCache>,
}

impl Metrics {
    /// The window, the totals and the last lag (no Kafka call).
    fn snapshot(&self) -> MetricsSnapshot {
        let mut snapshot = self.analytics.snapshot();
        let values = self.lag.values.lock().unwrap_or_else(|p| p.into_inner());
        for topic in &self.topics {
            let fresh = values
                .get(topic)
                .filter(|(_, at)| at.elapsed() <= LAG_STALE)
                .map(|(lag, _)| *lag);
            snapshot.lag.insert(topic.clone(), fresh);
        }
        snapshot
    }

    /// Asks Kafka for the lag of each topic, one call at a time, and keeps
    /// what it answers.
    async fn refresh_lag(&self) {
        for topic in &self.topics {
            match self.transport.lag(&self.group, topic).await {
                Ok(partitions) => {
                    let total = partitions.iter().map(|p| p.lag).sum();
                    self.lag
                        .values
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(topic.clone(), (total, Instant::now()));
                }
                Err(e) => tracing::debug!(%topic, error = %e, "lag unavailable"),
            }
        }
        self.lag
            .refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Refreshes the lag every [`LAG_REFRESH`] until stopped.
fn spawn_lag_refresher(metrics: Metrics) -> BackgroundTask {
    BackgroundTask::spawn(|mut stop| async move {
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                () = metrics.refresh_lag() => {}
            }
            tokio::select! {
                () = stop.stopped() => return,
                () = tokio::time::sleep(LAG_REFRESH) => {}
            }
        }
    })
}

/// `GET /metrics`, `GET /health` and `GET /openapi.json`.
fn router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move { Json(m.snapshot()) }),
        )
        .route("/health", crate::server::health_route("analytics-consumer"))
        .route(
            "/openapi.json",
            crate::server::openapi_route(crate::openapi::analytics::<MetricsSnapshot>()),
        )
        .with_state(metrics)
}

/// The analytics consumer, running: two group members (one per topic), the
/// `/metrics` server and the periodic report. See the [module docs](self).
#[derive(Debug)]
pub struct AnalyticsConsumer {
    metrics: Metrics,
    subscriptions: Vec<Subscription>,
    server: Server,
    reporter: Option<BackgroundTask>,
    lag_refresher: BackgroundTask,
}

impl AnalyticsConsumer {
    /// Subscribes to both topics in [`AnalyticsOptions::group`] and serves
    /// `/metrics` on [`AnalyticsOptions::http_addr`].
    ///
    /// # Errors
    /// [`StreamingError::Transport`] when Kafka refuses a subscription,
    /// [`StreamingError::Http`] when the address cannot be bound.
    pub async fn start(
        transport: &KafkaTransport,
        options: &AnalyticsOptions,
    ) -> Result<Self, StreamingError> {
        let analytics = Arc::new(Analytics::new(options.window));
        let config = transport.config();
        let metrics = Metrics {
            analytics: analytics.clone(),
            transport: transport.clone(),
            group: options.group.clone(),
            topics: [config.order_topic.clone(), config.inventory_topic.clone()],
            lag: Arc::new(LagCache::default()),
        };
        let server =
            Server::start("analytics", &options.http_addr, router(metrics.clone())).await?;
        let lag_refresher = spawn_lag_refresher(metrics.clone());
        let mut this = Self {
            metrics,
            subscriptions: Vec::with_capacity(2),
            server,
            reporter: None,
            lag_refresher,
        };
        for (source, route, member) in [
            (Source::Orders, Route::ORDER_PLACED, "orders"),
            (Source::Inventory, Route::INVENTORY_RESERVED, "inventory"),
        ] {
            let instance = options
                .group_instance_id
                .as_ref()
                .map(|id| format!("{id}-{member}"));
            let handler = Arc::new(AnalyticsHandler {
                analytics: analytics.clone(),
                source,
                throttle: options.throttle,
            });
            let opts = SubscribeOptions {
                group: Some(options.group.clone()),
                ..SubscribeOptions::default()
            };
            let subscribed = match with_instance_id(transport, instance).await {
                Ok(t) => t.subscribe(&route, handler, opts).await.map_err(Into::into),
                Err(e) => Err(e),
            };
            match subscribed {
                Ok(s) => this.subscriptions.push(s),
                Err(e) => {
                    this.stop().await;
                    return Err(e);
                }
            }
        }
        if !options.report_interval.is_zero() {
            this.reporter = Some(spawn_reporter(
                this.metrics.clone(),
                options.report_interval,
            ));
        }
        tracing::info!(
            group = %options.group,
            window = ?options.window,
            throttle = ?options.throttle,
            addr = %this.server.addr(),
            "analytics consumer started"
        );
        Ok(this)
    }

    /// Where `/metrics` is served.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The analytics state (totals, window).
    pub fn analytics(&self) -> &Arc<Analytics> {
        &self.metrics.analytics
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.metrics.analytics.totals()
    }

    /// What `GET /metrics` answers, with the lag asked of Kafka now (for
    /// in-process callers that need it current; scrapes of `GET /metrics`
    /// use the value the background task keeps).
    pub async fn metrics(&self) -> MetricsSnapshot {
        self.metrics.refresh_lag().await;
        self.metrics.snapshot()
    }

    /// How many times the lag was asked of Kafka since the start (one
    /// background refresh at a time, never per scrape).
    pub fn lag_refreshes(&self) -> u64 {
        self.metrics
            .lag
            .refreshes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the report, the HTTP server and both members (each commits
    /// what it has handled and leaves the group, unless static).
    pub async fn stop(self) {
        if let Some(reporter) = self.reporter {
            let _ = reporter.stop().await;
        }
        let _ = self.lag_refresher.stop().await;
        self.server.stop().await;
        futures::future::join_all(self.subscriptions.into_iter().map(Subscription::stop)).await;
        let t = self.metrics.analytics.totals();
        tracing::info!(?t, "analytics consumer stopped");
    }
}

/// Logs a summary line every `every`.
fn spawn_reporter(metrics: Metrics, every: Duration) -> BackgroundTask {
    BackgroundTask::spawn(|mut stop| async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                _ = tick.tick() => {}
            }
            let m = metrics.snapshot();
            tracing::info!(
                orders_per_min = m.orders_per_min,
                inventory_events = m.inventory_events,
                failures = m.failures,
                failure_rate_pct = m.failure_rate_pct,
                window_seconds = m.window_seconds,
                totals = ?m.totals,
                lag = ?m.lag,
                "metrics"
            );
        }
    })
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
