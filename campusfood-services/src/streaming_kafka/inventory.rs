//! The inventory consumer: reads `order-events`, decides each order with
//! [`InventoryService::reserve`] (injected failure by seed, then the
//! idempotent stock ledger) and writes an [`InventoryEvent`] — the order
//! plus `status: Success | Failure` — to `inventory-events`, keyed by the
//! order id.
//!
//! | decision | status |
//! |---|---|
//! | reserved (first time, or a repeat of an earlier reservation) | `Success` |
//! | injected failure (`decide(seed, order_id, 1) < FAIL_RATE`) | `Failure` |
//! | not enough stock, or an item the stock does not hold | `Failure` |
//! | the ledger cannot answer (storage error) | retried, then dead-lettered |
//! | the record is not an `OrderEvent` (bad JSON, bad id, `qty` 0 …) | dead-lettered to `order-events.dlq` at once |
//!
//! Two delivery modes ([`InventoryOptions::exactly_once`]):
//! - **exactly once** (default): a [`TransactionalProcessor`] per worker —
//!   outputs and consumed offsets commit in one Kafka transaction; see the
//!   [parent module](super) for why this plus the idempotent ledger makes
//!   each order appear exactly once in `inventory-events`.
//! - **at least once**: a plain consumer-group subscription per worker;
//!   the event is published (and acknowledged) before the offset is
//!   committed, so a crash can only repeat an event, never lose one.
//!
//! [`InventoryOptions::workers`] consumers share the group in one process.
//! In exactly-once mode each worker decides a transaction's orders
//! concurrently (orders with the same key one after another, in offset
//! order), so the durable ledger's group commit makes one `fsync` for many
//! reservations; the events are still written in record order. With a
//! throttle, or in at-least-once mode, a worker decides one order at a
//! time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::RequestId;
use campusfood_core::bounded;
use campusfood_core::events::{InventoryEvent, InventoryStatus, OrderEvent, ReserveRequest};
use campusfood_core::fault::{FaultConfig, FaultInjector};
use campusfood_core::ledger::InventoryLedger;
use campusfood_core::transport::{
    Delivery, Disposition, Handler, Message, Route, SubscribeOptions, Subscription, Transport,
    headers,
};
use campusfood_transport::kafka::{
    KafkaTransport, Outcome, Processor, TransactionalOptions, TransactionalProcessor,
};

use super::StreamingError;
use crate::inventory::{InventoryService, ReserveResult};

/// The default seed of the injected failures (`FAIL_SEED`).
pub const DEFAULT_SEED: u64 = 273;

/// The inventory consumer's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryOptions {
    /// `GROUP_ID`: its consumer group.
    pub group: String,
    /// `FAIL_RATE`: the share of orders failed by injection, `0..=1`.
    pub fail_rate: f64,
    /// `FAIL_SEED`: the seed of the failure draw.
    pub seed: u64,
    /// `THROTTLE_MS`: a pause before each order, to simulate a slow
    /// consumer.
    pub throttle: Duration,
    /// Kafka transactions (default) or a plain at-least-once subscription.
    pub exactly_once: bool,
    /// Consumers in the group run by this process (at most the order
    /// topic's partitions are useful).
    pub workers: usize,
    /// The prefix of the workers' `transactional.id`s (`<prefix>-<n>`).
    /// By default unique to the process
    /// ([`TransactionalOptions::process_unique_id`]), so any number of
    /// inventory processes share one group; zombies are fenced by the
    /// group's generation (KIP-447). A fixed prefix must differ between
    /// processes running at once: two with the same one fence each other.
    pub transactional_id: String,
    /// `GROUP_INSTANCE_ID` for static membership (`<id>-<n>` per worker
    /// when there are several): a restarted process takes its partitions
    /// back at once instead of waiting for the session timeout.
    pub group_instance_id: Option<String>,
    /// Exactly-once mode: the most orders decided in one transaction (a
    /// crash re-decides at most this many per worker).
    pub max_batch: usize,
    /// Attempts at an order whose reservation the ledger cannot answer,
    /// before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait between those attempts.
    pub retry_delay: Duration,
}

impl Default for InventoryOptions {
    /// Group `inventory-consumer`, `FAIL_RATE` 0.05, seed
    /// [`DEFAULT_SEED`], no throttle, exactly once, 6 workers (one per
    /// partition of `order-events`), up to 500 orders per transaction,
    /// transactional ids unique to this process.
    fn default() -> Self {
        Self {
            group: "inventory-consumer".to_owned(),
            fail_rate: 0.05,
            seed: DEFAULT_SEED,
            throttle: Duration::ZERO,
            exactly_once: true,
            workers: 6,
            transactional_id: TransactionalOptions::process_unique_id("inventory-consumer"),
            group_instance_id: None,
            max_batch: 500,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
        }
    }
}

impl InventoryOptions {
    /// The options with the group `group`, and transactional ids unique to
    /// this process that start with the group's name.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self.transactional_id = TransactionalOptions::process_unique_id(&self.group);
        self
    }

    /// The fault setting the decisions use: no delay, `fail_rate`, seeded.
    ///
    /// # Errors
    /// [`StreamingError::Invalid`] if `fail_rate` is outside `0..=1`.
    pub fn faults(&self) -> Result<FaultConfig, StreamingError> {
        FaultConfig::new(0.0, self.fail_rate, Some(self.seed)).map_err(|e| {
            StreamingError::Invalid {
                name: "FAIL_RATE",
                reason: e.to_string(),
            }
        })
    }
}

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

    /// What this decider has done.
    pub fn counts(&self) -> InventoryCounts {
        self.stats.snapshot()
    }

    /// Decides the order in `message`. Always on attempt 1, so the
    /// injected failure is the same on every redelivery and replay.
    #[tracing::instrument(name = "inventory_decide", skip_all, fields(order_id = tracing::field::Empty))]
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
        tracing::Span::current().record("order_id", order.order_id.as_str());
        let request_id = message
            .headers
            .get(headers::REQUEST_ID)
            .and_then(|r| RequestId::parse(r).ok())
            .unwrap_or_else(RequestId::generate);
        let request = ReserveRequest {
            order_id: order.order_id.clone(),
            request_id,
            item: order.item_id.clone(),
            qty: order.qty,
        };
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
fn route_of(event: &InventoryEvent) -> Route {
    match event.status {
        InventoryStatus::Success => Route::INVENTORY_RESERVED,
        InventoryStatus::Failure => Route::INVENTORY_FAILED,
    }
}

/// The record for `event`: JSON value, keyed by the order id.
pub fn event_message(event: &InventoryEvent) -> Result<Message, StreamingError> {
    Ok(Message::json(event)?.with_key(event.order_id.as_str()))
}

/// Exactly-once mode: the decider as a [`Processor`].
#[derive(Debug)]
struct TransactionalWorker(Arc<OrderDecider>);

impl TransactionalWorker {
    /// The outcome of `message`'s decision.
    async fn outcome(&self, message: &Message) -> Outcome {
        match self.0.decide(message).await {
            Decision::Emit(event) => match event_message(&event) {
                Ok(message) => Outcome::Emit(vec![(route_of(&event), message)]),
                Err(e) => Outcome::DeadLetter {
                    reason: e.to_string(),
                },
            },
            Decision::Unavailable(reason) => Outcome::Unavailable { reason },
            Decision::DeadLetter(reason) => Outcome::DeadLetter { reason },
        }
    }
}

/// The indices of `deliveries` grouped by record key (keyless records
/// alone), each group in the deliveries' order.
fn lanes_by_key(deliveries: &[Delivery]) -> Vec<Vec<usize>> {
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        match d.message.key.as_deref() {
            Some(key) => match by_key.get(key) {
                Some(&lane) => lanes[lane].push(i),
                None => {
                    by_key.insert(key, lanes.len());
                    lanes.push(vec![i]);
                }
            },
            None => lanes.push(vec![i]),
        }
    }
    lanes
}

#[async_trait]
impl Processor for TransactionalWorker {
    async fn process(&self, delivery: Delivery) -> Outcome {
        self.outcome(&delivery.message).await
    }

    /// Decides the batch concurrently, the records of one key in order
    /// (the ledger group-commits concurrent reservations); a throttled
    /// worker decides one record at a time.
    async fn process_batch(&self, deliveries: Vec<Delivery>) -> Vec<Outcome> {
        if !self.0.throttle.is_zero() {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for d in &deliveries {
                let outcome = self.outcome(&d.message).await;
                let retry = outcome.is_retry();
                outcomes.push(outcome);
                if retry {
                    break;
                }
            }
            return outcomes;
        }
        let lanes = lanes_by_key(&deliveries);
        let decided = futures::future::join_all(lanes.into_iter().map(|lane| {
            let deliveries = &deliveries;
            async move {
                let mut outcomes = Vec::with_capacity(lane.len());
                for i in lane {
                    outcomes.push((i, self.outcome(&deliveries[i].message).await));
                }
                outcomes
            }
        }))
        .await;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; deliveries.len()];
        for (i, outcome) in decided.into_iter().flatten() {
            outcomes[i] = Some(outcome);
        }
        // Every index is in exactly one lane; stop at a gap all the same.
        outcomes.into_iter().map_while(|o| o).collect()
    }
}

/// At-least-once mode: the decider as a [`Handler`] that publishes (and
/// waits for the acknowledgement) before acking.
#[derive(Debug)]
struct AtLeastOnceWorker {
    decider: Arc<OrderDecider>,
    transport: KafkaTransport,
}

#[async_trait]
impl Handler for AtLeastOnceWorker {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        match self.decider.decide(&delivery.message).await {
            Decision::Emit(event) => {
                let message = match event_message(&event) {
                    Ok(m) => m,
                    Err(e) => {
                        return Disposition::DeadLetter {
                            reason: e.to_string(),
                        };
                    }
                };
                match self.transport.publish(&route_of(&event), message).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => Disposition::Retry {
                        reason: format!("publishing the inventory event: {e}"),
                    },
                }
            }
            Decision::Unavailable(reason) => Disposition::Retry { reason },
            Decision::DeadLetter(reason) => Disposition::DeadLetter { reason },
        }
    }
}

/// A transport whose consumers use `instance` as `group.instance.id`: the
/// given one when it already does, else a new connection.
pub(super) async fn with_instance_id(
    transport: &KafkaTransport,
    instance: Option<String>,
) -> Result<KafkaTransport, StreamingError> {
    if transport.config().group_instance_id == instance {
        return Ok(transport.clone());
    }
    let mut config = transport.config().clone();
    config.group_instance_id = instance;
    Ok(KafkaTransport::connect(&config).await?)
}

/// `<id>` for a single member, `<id>-<n>` for member `n` of several.
pub(super) fn member_instance_id(id: Option<&str>, n: usize, members: usize) -> Option<String> {
    id.map(|id| {
        if members > 1 {
            format!("{id}-{n}")
        } else {
            id.to_owned()
        }
    })
}

/// The inventory consumer, running. See the [module docs](self).
#[derive(Debug)]
pub struct InventoryConsumer {
    decider: Arc<OrderDecider>,
    subscriptions: Vec<Subscription>,
    exactly_once: bool,
}

impl InventoryConsumer {
    /// Starts [`InventoryOptions::workers`] consumers of the order topic in
    /// [`InventoryOptions::group`], deciding through `ledger`.
    ///
    /// # Errors
    /// [`StreamingError::Invalid`] for a bad `fail_rate`,
    /// [`StreamingError::Transport`] when Kafka refuses the subscription or
    /// the transactional producer.
    pub async fn start(
        transport: &KafkaTransport,
        ledger: Arc<dyn InventoryLedger>,
        options: &InventoryOptions,
    ) -> Result<Self, StreamingError> {
        let faults = Arc::new(FaultInjector::new(options.faults()?));
        let service = Arc::new(InventoryService::new(ledger, faults));
        let decider = Arc::new(OrderDecider::new(service, options.throttle));
        let workers = options.workers.max(1);
        let mut this = Self {
            decider: decider.clone(),
            subscriptions: Vec::with_capacity(workers),
            exactly_once: options.exactly_once,
        };
        for n in 0..workers {
            let instance = member_instance_id(options.group_instance_id.as_deref(), n, workers);
            let started = match with_instance_id(transport, instance).await {
                Ok(t) if options.exactly_once => {
                    let mut txn = TransactionalOptions::new(
                        options.group.clone(),
                        format!("{}-{n}", options.transactional_id),
                    );
                    txn.max_batch = options.max_batch.max(1);
                    // A throttled batch must still commit before the
                    // broker times the transaction out.
                    let batch_time =
                        options.throttle * u32::try_from(txn.max_batch).unwrap_or(u32::MAX);
                    txn.transaction_timeout = txn
                        .transaction_timeout
                        .max(batch_time * 2)
                        .min(Duration::from_secs(900));
                    txn.max_attempts = options.max_attempts;
                    txn.retry_delay = options.retry_delay;
                    let worker = Arc::new(TransactionalWorker(decider.clone()));
                    TransactionalProcessor::new(&t, &Route::ORDER_PLACED, worker, txn)
                        .await
                        .map(TransactionalProcessor::spawn)
                }
                Ok(t) => {
                    let worker = Arc::new(AtLeastOnceWorker {
                        decider: decider.clone(),
                        transport: t.clone(),
                    });
                    let opts = SubscribeOptions {
                        group: Some(options.group.clone()),
                        max_attempts: options.max_attempts,
                        retry_delay: options.retry_delay,
                        ..SubscribeOptions::default()
                    };
                    t.subscribe(&Route::ORDER_PLACED, worker, opts).await
                }
                Err(e) => {
                    this.stop().await;
                    return Err(e);
                }
            };
            match started {
                Ok(s) => this.subscriptions.push(s),
                Err(e) => {
                    this.stop().await;
                    return Err(e.into());
                }
            }
        }
        tracing::info!(
            group = %options.group,
            workers,
            exactly_once = options.exactly_once,
            fail_rate = options.fail_rate,
            seed = options.seed,
            throttle = ?options.throttle,
            "inventory consumer started"
        );
        Ok(this)
    }

    /// What the consumer has done since it started.
    pub fn counts(&self) -> InventoryCounts {
        self.decider.counts()
    }

    /// Whether it runs in Kafka transactions.
    pub fn is_exactly_once(&self) -> bool {
        self.exactly_once
    }

    /// Stops every worker (each finishes, and in exactly-once mode commits,
    /// the batch in hand).
    pub async fn stop(self) {
        futures::future::join_all(self.subscriptions.into_iter().map(Subscription::stop)).await;
        let c = self.decider.counts();
        tracing::info!(
            decided = c.decided,
            successes = c.successes,
            failures = c.failures,
            malformed = c.malformed,
            "inventory consumer stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use campusfood_core::fault::decide;
    use campusfood_core::ledger::MemoryLedger;

    use super::*;
    use crate::streaming_kafka::producer::{OrderGenerator, order_message};

    fn decider(stock: &str, fail_rate: f64) -> OrderDecider {
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

    #[tokio::test]
    async fn a_batch_is_grouped_by_key_and_answered_in_record_order_as_one_by_one() {
        let d = Arc::new(decider("item-1=1000000", 0.3));
        let g = OrderGenerator::new(1, 2).unwrap();
        let orders = g.orders(50);
        let mut deliveries: Vec<Delivery> = orders
            .iter()
            .map(|o| Delivery {
                message: order_message(o).unwrap(),
                attempt: 1,
            })
            .collect();
        // A repeated key (a redelivered order) and a record with no key.
        deliveries.push(deliveries[3].clone());
        deliveries.push(Delivery {
            message: Message::default(),
            attempt: 1,
        });
        assert_eq!(lanes_by_key(&deliveries).len(), 51);
        assert_eq!(lanes_by_key(&deliveries)[3], [3, 50]);

        let worker = TransactionalWorker(d.clone());
        let outcomes = worker.process_batch(deliveries.clone()).await;
        assert_eq!(outcomes.len(), deliveries.len());
        for (delivery, outcome) in deliveries.iter().zip(&outcomes).take(51) {
            assert_eq!(*outcome, worker.process(delivery.clone()).await);
        }
        assert_eq!(outcomes[50], outcomes[3]);
        assert!(matches!(outcomes[51], Outcome::DeadLetter { .. }));
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
