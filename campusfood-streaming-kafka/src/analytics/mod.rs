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
//! A record on `inventory-events` that is not an [`InventoryEvent`](campusfood_core::events::InventoryEvent) is
//! counted ([`Totals::malformed`]) and dead-lettered to
//! `inventory-events.dlq`. One on `order-events` is counted and skipped:
//! the inventory consumer, which owns that topic's processing, dead-letters
//! it (so the `.dlq` holds it once, not once per group).
//!
//! `THROTTLE_MS` pauses before each record, to show lag building up;
//! `REPORT_INTERVAL_SEC` logs a summary line.
//!
//! # Prometheus
//! `GET /prometheus` serves the process's metrics in Prometheus text
//! ([`AnalyticsOptions::prometheus`], on by default): the lag as the gauge
//! `campusfood_consumer_lag`, distinct orders read as
//! `campusfood_orders_placed_total`, and each member's deliveries and
//! handler durations. `/metrics` stays the contract's JSON.
//!
//! # Layout
//! - `window`: the counting model — rolling window, totals, dedupe
//!   ([`Analytics`]).
//! - `handler`: feeds each topic's records into it.
//! - `metrics`: what `GET /metrics` answers, the lag kept fresh in the
//!   background, and the router.
//! - `reporter`: the periodic summary line.
//! - here: the settings and the consumer assembled ([`AnalyticsConsumer`]).

mod handler;
mod metrics;
mod reporter;
mod window;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use campusfood_core::task::BackgroundTask;
use campusfood_core::telemetry::TracedHandler;
use campusfood_core::transport::{Route, SubscribeOptions, Subscription};
use campusfood_kafka::KafkaTransport;

use self::handler::{AnalyticsHandler, Source};
use self::metrics::{LagCache, Metrics, router, spawn_lag_refresher};
use self::reporter::spawn_reporter;
use super::{StreamingError, metered, with_instance_id};
use campusfood_services::server::Server;

pub use self::metrics::{LAG_REFRESH, LAG_STALE};
pub use self::window::{Analytics, DEDUPE_CAPACITY, MetricsSnapshot, Totals};

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
    /// Serve Prometheus text at
    /// [`KafkaConfig::PROMETHEUS_PATH`](campusfood_core::config::KafkaConfig::PROMETHEUS_PATH),
    /// installing the process's recorder
    /// ([`install_prometheus`](campusfood_services::metrics::install_prometheus))
    /// if none is yet.
    pub prometheus: bool,
}

impl Default for AnalyticsOptions {
    /// Group `analytics-consumer`, 60 s window, no throttle, a report every
    /// 10 s, dynamic membership, `127.0.0.1:8080`, Prometheus at
    /// `/prometheus`.
    fn default() -> Self {
        Self {
            group: "analytics-consumer".to_owned(),
            window: Duration::from_secs(60),
            throttle: Duration::ZERO,
            report_interval: Duration::from_secs(10),
            group_instance_id: None,
            http_addr: "127.0.0.1:8080".to_owned(),
            prometheus: true,
        }
    }
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
        campusfood_core::metric::register_orders_placed();
        let config = transport.config();
        let metrics = Metrics {
            analytics: analytics.clone(),
            transport: transport.clone(),
            group: options.group.clone(),
            topics: [config.order_topic.clone(), config.inventory_topic.clone()],
            lag: Arc::new(LagCache::default()),
        };
        let prometheus = if options.prometheus {
            Some(campusfood_services::metrics::install_prometheus()?)
        } else {
            None
        };
        let server = Server::start(
            "analytics",
            &options.http_addr,
            router(metrics.clone(), prometheus),
        )
        .await?;
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
            // Each record counted in the trace of its order.
            let topic = match source {
                Source::Orders => &config.order_topic,
                Source::Inventory => &config.inventory_topic,
            };
            let handler = Arc::new(TracedHandler::new(
                handler,
                "kafka",
                topic,
                Some(&options.group),
            ));
            let opts = SubscribeOptions {
                group: Some(options.group.clone()),
                ..SubscribeOptions::default()
            };
            let subscribed = match with_instance_id(transport, instance).await {
                Ok(t) => metered(t)
                    .subscribe(&route, handler, opts)
                    .await
                    .map_err(Into::into),
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
