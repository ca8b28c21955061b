//! The inventory consumer: reads `order-events`, decides each order with
//! [`InventoryService::reserve`] (injected failure by seed, then the
//! idempotent stock ledger) and writes an [`InventoryEvent`](campusfood_core::events::InventoryEvent) — the order
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
//!
//! # Layout
//! - `options`: the settings ([`InventoryOptions`], [`DEFAULT_SEED`],
//!   [`DEFAULT_MAX_BATCH`]).
//! - `decider`: the decision both modes share ([`OrderDecider`]) and what
//!   it has done ([`InventoryCounts`]).
//! - `workers`: the two delivery modes over the decider.
//! - here: the consumer assembled ([`InventoryConsumer`]).

mod decider;
mod options;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use campusfood_core::config::HttpConfig;
use campusfood_core::fault::FaultInjector;
use campusfood_core::ledger::InventoryLedger;
use campusfood_core::task::BackgroundTask;
use campusfood_core::telemetry::TracedHandler;
use campusfood_core::transport::{Route, SubscribeOptions, Subscription};
use campusfood_kafka::{KafkaTransport, TransactionalOptions, TransactionalProcessor};

use self::workers::{AtLeastOnceWorker, Topics, TransactionalWorker};
use super::{StreamingError, member_instance_id, metered, with_instance_id};
use crate::analytics::LAG_REFRESH;
use campusfood_services::inventory::InventoryService;
use campusfood_services::metrics::{install_prometheus, sample_every, with_metrics};
use campusfood_services::server::{Server, health_route};

pub use self::decider::{Decision, InventoryCounts, OrderDecider, event_message};
pub use self::options::{DEFAULT_MAX_BATCH, DEFAULT_SEED, InventoryOptions};

/// The inventory consumer, running. See the [module docs](self).
#[derive(Debug)]
pub struct InventoryConsumer {
    decider: Arc<OrderDecider>,
    subscriptions: Vec<Subscription>,
    exactly_once: bool,
    /// `GET /metrics` and the lag gauge's refresher, when asked for.
    metrics: Option<(Server, BackgroundTask)>,
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
            metrics: None,
        };
        if let Some(addr) = &options.metrics_addr {
            let topic = transport.config().order_topic.clone();
            this.metrics = Some(serve_metrics(transport, &options.group, topic, addr).await?);
        }
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
                    let worker = Arc::new(TransactionalWorker {
                        decider: decider.clone(),
                        topics: Topics::of(&t, &options.group),
                    });
                    TransactionalProcessor::new(&t, &Route::ORDER_PLACED, worker, txn)
                        .await
                        .map(TransactionalProcessor::spawn)
                }
                Ok(t) => {
                    let topics = Topics::of(&t, &options.group);
                    let worker = Arc::new(AtLeastOnceWorker {
                        decider: decider.clone(),
                        transport: t.clone(),
                        topics: topics.clone(),
                    });
                    let worker = Arc::new(TracedHandler::new(
                        worker,
                        "kafka",
                        &topics.orders,
                        Some(&options.group),
                    ));
                    let opts = SubscribeOptions {
                        group: Some(options.group.clone()),
                        max_attempts: options.max_attempts,
                        retry_delay: options.retry_delay,
                        ..SubscribeOptions::default()
                    };
                    metered(t)
                        .subscribe(&Route::ORDER_PLACED, worker, opts)
                        .await
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

    /// Where `GET /metrics` is served, when
    /// [`InventoryOptions::metrics_addr`] asked for it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(server, _)| server.addr())
    }

    /// Whether it runs in Kafka transactions.
    pub fn is_exactly_once(&self) -> bool {
        self.exactly_once
    }

    /// Stops every worker (each finishes, and in exactly-once mode commits,
    /// the batch in hand).
    pub async fn stop(self) {
        futures::future::join_all(self.subscriptions.into_iter().map(Subscription::stop)).await;
        if let Some((server, lag)) = self.metrics {
            let _ = lag.stop().await;
            server.stop().await;
        }
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

/// Serves `GET /metrics` (and `/health`) on `addr`, with a background task
/// that asks Kafka for `group`'s lag on `topic` every [`LAG_REFRESH`] and
/// keeps it in the gauge `campusfood_consumer_lag` (scrapes never ask).
async fn serve_metrics(
    transport: &KafkaTransport,
    group: &str,
    topic: String,
    addr: &str,
) -> Result<(Server, BackgroundTask), StreamingError> {
    let prometheus = install_prometheus()?;
    let router = with_metrics(
        axum::Router::new().route("/health", health_route("inventory-consumer")),
        Some(&prometheus),
    );
    let server = Server::start("inventory-consumer", addr, router).await?;
    let (transport, group) = (transport.clone(), group.to_owned());
    let lag = BackgroundTask::spawn(|stop| {
        sample_every(LAG_REFRESH, stop.into_stopped(), move || {
            let (transport, group, topic) = (transport.clone(), group.clone(), topic.clone());
            async move {
                match transport.lag(&group, &topic).await {
                    Ok(partitions) => {
                        let total = partitions.iter().map(|p| p.lag).sum();
                        campusfood_core::metric::consumer_lag(&group, &topic, total);
                    }
                    Err(e) => tracing::debug!(%topic, error = %e, "lag unavailable"),
                }
            }
        })
    });
    tracing::info!(addr = %server.addr(), path = HttpConfig::METRICS_PATH, "inventory consumer metrics");
    Ok((server, lag))
}
