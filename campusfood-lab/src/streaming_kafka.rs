//! Part C as an experiment drives it: a [`PartC`] handle that runs the Kafka
//! streaming consumers in this process — topics and groups under a suffix
//! unique to the run, the inventory consumer's durable redb ledger in a
//! temporary directory — with the inventory and analytics consumers started
//! and stopped on their own, a producer of `OrderEvent`s, and the lag and
//! offset tools of `campusfood_streaming_kafka`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use campusfood_core::config::KafkaConfig;
use campusfood_core::events::{InventoryEvent, InventoryStatus, OrderEvent};
use campusfood_core::ledger::{InventoryLedger, RedbLedger, ReservationRecord, ReserveOutcome};
use campusfood_core::task::BackgroundTask;
use campusfood_core::transport::{DeadLetters, Route, Transport};
use campusfood_core::{Config, OrderId};
use campusfood_kafka::KafkaTransport;
use campusfood_services::stores::names;
use campusfood_streaming_kafka::offsets::{self, ResetTarget};
use campusfood_streaming_kafka::producer::{OrderGenerator, order_message, publish_orders};
use campusfood_streaming_kafka::{
    AnalyticsConsumer, ConnectRetry, StreamingError, StreamingOptions, StreamingPart,
    StreamingSystem, connect, item_stock,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::LabError;
use crate::gauge::Gauge;
use crate::load::Sample;
use crate::outcomes::{OrderReading, accepted, with_refused};
use crate::settings::Settings;

/// How to get a broker when there is none.
pub const KAFKA_HINT: &str = "start it with `scripts/brokers.sh up kafka`";

/// The `--set` key of Kafka's bootstrap servers.
pub const KAFKA_BOOTSTRAP_KEY: &str = "kafka.bootstrap";

/// Items the producer draws from (`item-1` … `item-50`, the contract's
/// `ITEM_COUNT`).
pub const ITEMS: u32 = 50;

/// Stock of each item: ample, so only injected failures fail.
pub const ITEM_STOCK: u64 = 1_000_000;

/// How a [`PartC`] is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct PartCOptions {
    /// The inventory consumer's `FAIL_RATE`.
    pub fail_rate: f64,
    /// The inventory consumer's `THROTTLE_MS` (a pause before each order).
    pub inventory_throttle: Duration,
    /// The analytics consumer's `THROTTLE_MS`.
    pub analytics_throttle: Duration,
    /// The analytics window (`WINDOW_SEC`).
    pub window: Duration,
    /// Start the inventory consumer at once.
    pub inventory: bool,
    /// Start the analytics consumer at once.
    pub analytics: bool,
}

impl Default for PartCOptions {
    /// The contract's consumers: `FAIL_RATE` 0.05, no throttle, a 60 s
    /// window; both started.
    fn default() -> Self {
        Self {
            fail_rate: 0.05,
            inventory_throttle: Duration::ZERO,
            analytics_throttle: Duration::ZERO,
            window: Duration::from_secs(60),
            inventory: true,
            analytics: true,
        }
    }
}

/// Part C, running in this process over Kafka, for one experiment.
#[derive(Debug)]
pub struct PartC {
    config: Config,
    options: StreamingOptions,
    transport: KafkaTransport,
    ledger: Arc<dyn InventoryLedger>,
    inventory: Option<StreamingSystem>,
    analytics: Option<AnalyticsConsumer>,
    generator: OrderGenerator,
    /// In the name of every topic and group of this run.
    suffix: String,
    /// Holds the ledger file; removed on drop.
    _data: tempfile::TempDir,
}

fn streaming_err(what: &str) -> impl FnOnce(StreamingError) -> LabError + '_ {
    move |e| LabError::Store {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

impl PartC {
    /// Connects to Kafka (`--set kafka.bootstrap=…`, default the
    /// contract's), names topics and groups with a suffix unique to this
    /// run, opens the redb ledger in a temp dir with `item-1` … `item-50`
    /// stocked, and starts the consumers `opts` asks for.
    ///
    /// # Errors
    /// [`LabError::Unavailable`] when Kafka cannot be reached (the
    /// experiment is then skipped); others when a consumer cannot start.
    pub async fn start(
        settings: &Settings,
        experiment: &str,
        opts: PartCOptions,
    ) -> Result<Self, LabError> {
        let bootstrap = settings.param(
            KAFKA_BOOTSTRAP_KEY,
            KafkaConfig::default().bootstrap_servers,
        )?;
        let suffix = format!(
            "lab-{}-{:012x}",
            experiment.to_ascii_lowercase(),
            fastrand::u64(..) & 0xffff_ffff_ffff
        );
        let kafka = KafkaConfig {
            bootstrap_servers: bootstrap,
            request_timeout: Duration::from_secs(5),
            commit_interval: Duration::from_millis(200),
            ..KafkaConfig::default()
        }
        .with_suffix(&suffix);
        let once = ConnectRetry {
            attempts: 1,
            ..ConnectRetry::default()
        };
        let transport = match connect(&kafka, &once).await {
            Ok(t) => t,
            Err(e) => {
                return Err(LabError::Unavailable {
                    needs: format!("Kafka ({e})"),
                    hint: KAFKA_HINT.to_owned(),
                });
            }
        };
        let data = tempfile::Builder::new()
            .prefix("campusfood-lab-c-")
            .tempdir()
            .map_err(|source| LabError::Io {
                what: "creating a temp data dir".to_owned(),
                source,
            })?;
        let mut config = Config {
            data_dir: data.path().to_path_buf(),
            stock: item_stock(ITEMS, ITEM_STOCK).map_err(streaming_err("stock"))?,
            kafka,
            ..Config::default()
        };
        config.http.host = "127.0.0.1".to_owned();
        let ledger: Arc<dyn InventoryLedger> = Arc::new(
            RedbLedger::open(
                config.data_dir.join(names::file(names::STREAMING_LEDGER)),
                &config.stock,
            )
            .map_err(|e| LabError::Store {
                what: "opening the ledger".to_owned(),
                message: e.to_string(),
            })?,
        );
        let mut options = StreamingOptions::default();
        options.inventory = options
            .inventory
            .in_group(config.kafka.inventory_group.clone());
        options.inventory.fail_rate = opts.fail_rate;
        options.inventory.throttle = opts.inventory_throttle;
        options.inventory.retry_delay = Duration::from_millis(50);
        options.analytics.group = config.kafka.analytics_group.clone();
        options.analytics.http_addr = "127.0.0.1:0".to_owned();
        options.analytics.report_interval = Duration::ZERO;
        options.analytics.throttle = opts.analytics_throttle;
        options.analytics.window = opts.window;
        let mut this = Self {
            config,
            options,
            transport,
            ledger,
            inventory: None,
            analytics: None,
            generator: OrderGenerator::new(ITEMS, 5).map_err(streaming_err("generator"))?,
            suffix: suffix.clone(),
            _data: data,
        };
        let started = async {
            if opts.inventory {
                this.start_inventory().await?;
            }
            if opts.analytics {
                this.start_analytics().await?;
            }
            Ok::<_, LabError>(())
        }
        .await;
        if let Err(e) = started {
            this.stop().await;
            return Err(e);
        }
        tracing::info!(%suffix, "Part C started in process");
        Ok(this)
    }

    /// The configuration (topics, groups).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The consumers' options.
    pub fn options(&self) -> &StreamingOptions {
        &self.options
    }

    /// The transport (for lag and offsets).
    pub fn transport(&self) -> &KafkaTransport {
        &self.transport
    }

    /// Starts the inventory consumer, if it is not running, with `throttle`
    /// before each order.
    pub async fn start_inventory_with(&mut self, throttle: Duration) -> Result<(), LabError> {
        if self.inventory.is_none() {
            self.options.inventory.throttle = throttle;
            let system = StreamingSystem::start_with(
                StreamingPart::Inventory,
                &self.options,
                &self.transport,
                Some(self.ledger.clone()),
            )
            .await
            .map_err(streaming_err("starting the inventory consumer"))?;
            self.inventory = Some(system);
        }
        Ok(())
    }

    /// Starts the inventory consumer, if it is not running.
    pub async fn start_inventory(&mut self) -> Result<(), LabError> {
        let throttle = self.options.inventory.throttle;
        self.start_inventory_with(throttle).await
    }

    /// Stops the inventory consumer (its last batch commits).
    pub async fn stop_inventory(&mut self) {
        if let Some(s) = self.inventory.take() {
            s.stop().await;
        }
    }

    /// Starts the analytics consumer, if it is not running.
    pub async fn start_analytics(&mut self) -> Result<(), LabError> {
        if self.analytics.is_none() {
            let a = AnalyticsConsumer::start(&self.transport, &self.options.analytics)
                .await
                .map_err(streaming_err("starting the analytics consumer"))?;
            self.analytics = Some(a);
        }
        Ok(())
    }

    /// Stops the analytics consumer (it commits and leaves its group).
    pub async fn stop_analytics(&mut self) {
        if let Some(a) = self.analytics.take() {
            a.stop().await;
        }
    }

    /// The running analytics consumer.
    pub fn analytics(&self) -> Option<&AnalyticsConsumer> {
        self.analytics.as_ref()
    }

    /// `n` fresh orders.
    pub fn orders(&self, n: usize) -> Vec<OrderEvent> {
        self.generator.orders(n)
    }

    /// Produces `orders` as one burst; returns once Kafka acknowledged all.
    pub async fn produce(&self, orders: &[OrderEvent]) -> Result<usize, LabError> {
        publish_orders(&self.transport, orders, 0)
            .await
            .map_err(streaming_err("producing orders"))
    }

    /// Places one order the Kafka way — produces one fresh `OrderEvent` and
    /// waits for Kafka's acknowledgement — and returns it as the client saw
    /// it: status 201 when acknowledged, 0 when not.
    pub async fn place(&self, origin: Instant) -> Sample {
        let order = self.generator.next_order();
        let start = Instant::now();
        let sent = start.duration_since(origin);
        let result = match order_message(&order) {
            Ok(m) => self
                .transport
                .publish(&Route::ORDER_PLACED, m)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let latency = start.elapsed();
        match result {
            Ok(()) => Sample {
                sent,
                latency,
                status: 201,
                error: None,
                order_id: Some(order.order_id.to_string()),
            },
            Err(e) => Sample {
                sent,
                latency,
                status: 0,
                error: Some(e),
                order_id: None,
            },
        }
    }

    /// Whether the inventory consumer has decided order `id` (its ledger
    /// holds the decision).
    pub async fn decided(&self, id: &str) -> Result<bool, LabError> {
        Ok(self.decision(id).await?.is_some())
    }

    /// The ledger's record of order `id`, if it decided it.
    async fn decision(&self, id: &str) -> Result<Option<ReservationRecord>, LabError> {
        let id = OrderId::parse(id).map_err(|e| LabError::Store {
            what: "order id".to_owned(),
            message: e.to_string(),
        })?;
        self.ledger
            .reservation(&id)
            .await
            .map_err(|e| LabError::Store {
                what: "reading a reservation".to_owned(),
                message: e.to_string(),
            })
    }

    /// The quantity the ledger's records say was reserved for the orders
    /// `ids` (records of orders refused for stock count nothing): what
    /// the stock must have dropped by if each was taken once.
    pub async fn reserved_qty(&self, ids: &[String]) -> Result<u64, LabError> {
        let mut total = 0;
        for id in ids {
            let record = self.decision(id).await?;
            if let Some(r) = record
                && matches!(r.outcome, ReserveOutcome::Reserved { .. })
            {
                total += u64::from(r.qty.get());
            }
        }
        Ok(total)
    }

    /// Waits until every order of `ids` has its output record on the
    /// inventory topic, or a dead letter (the ledger's decision comes
    /// before the transaction that writes the output commits), for up to
    /// `deadline`; an order still without either is then read as `lost`.
    pub async fn wait_output(&self, ids: &[String], deadline: Duration) {
        let settled = || async {
            self.readings_of(ids)
                .await
                .is_ok_and(|read| read.iter().all(|(_, r)| r.outputs > 0 || r.dead_lettered))
        };
        if let Err(e) = crate::wait::until("every order's output record", deadline, settled).await {
            tracing::warn!(error = %e, "orders without an output record");
        }
    }

    /// What became of each order of `samples` (placed with
    /// [`place`](Self::place)), by id: see [`readings_of`](Self::readings_of);
    /// an order Kafka did not acknowledge is `failed`.
    pub async fn readings(
        &self,
        samples: &[Sample],
    ) -> Result<Vec<(String, OrderReading)>, LabError> {
        let read = self.readings_of(&accepted(samples)).await?;
        Ok(with_refused(samples, read))
    }

    /// What became of each order of `ids`, read order by order: its
    /// records on the inventory topic(s) (the output: one per order when
    /// each is processed exactly once; their status says reserved or
    /// failed), the ledger's decision, and whether the order is among the
    /// dead letters of the order topic. Call it once the experiment has
    /// waited for the orders to be decided: an order without an output
    /// record (nor a dead letter) is then `lost`.
    pub async fn readings_of(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, OrderReading)>, LabError> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let k = &self.config.kafka;
        let mut outputs: HashMap<String, Vec<InventoryStatus>> = HashMap::new();
        for topic in std::iter::once(&k.inventory_topic).chain(k.failed_topic.as_ref()) {
            let scan = self
                .transport
                .scan_topic(topic, |_, _| true)
                .await
                .map_err(|e| LabError::Store {
                    what: format!("reading {topic}"),
                    message: e.to_string(),
                })?;
            for record in scan.kept {
                let Ok(event) = serde_json::from_slice::<InventoryEvent>(&record.message.body)
                else {
                    continue;
                };
                let id = event.order_id.to_string();
                if wanted.contains(id.as_str()) {
                    outputs.entry(id).or_default().push(event.status);
                }
            }
        }
        let dead: HashSet<String> = self
            .transport
            .dead_letters(&Route::ORDER_PLACED, usize::MAX)
            .await
            .map_err(|e| LabError::Store {
                what: "listing the order topic's dead letters".to_owned(),
                message: e.to_string(),
            })?
            .iter()
            .filter_map(|d| {
                d.message.key.clone().or_else(|| {
                    serde_json::from_slice::<OrderEvent>(&d.message.body)
                        .ok()
                        .map(|o| o.order_id.to_string())
                })
            })
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let written = outputs.get(id).map_or(&[][..], Vec::as_slice);
            let mut r = OrderReading {
                accepted: true,
                settle: true,
                outputs: u32::try_from(written.len()).unwrap_or(u32::MAX),
                dead_lettered: dead.contains(id),
                ..OrderReading::default()
            };
            if let Some(status) = written.first() {
                // The ledger says what was decided; an output record without
                // a decision behind it says it on its own.
                let decided = self.decision(id).await?;
                let reserved = match decided.map(|d| d.outcome) {
                    Some(ReserveOutcome::Reserved { .. }) => true,
                    Some(_) => false,
                    None => *status == InventoryStatus::Success,
                };
                if reserved {
                    r.reserved = 1;
                } else {
                    r.refused = true;
                }
            }
            out.push((id.clone(), r));
        }
        Ok(out)
    }

    /// Decisions in the ledger.
    pub async fn decisions(&self) -> Result<u64, LabError> {
        self.ledger
            .reservation_count()
            .await
            .map_err(|e| LabError::Store {
                what: "counting reservations".to_owned(),
                message: e.to_string(),
            })
    }

    /// The stock left in the ledger, summed over items.
    pub async fn stock_total(&self) -> Result<u64, LabError> {
        self.ledger
            .stock()
            .await
            .map(|s| s.values().sum())
            .map_err(|e| LabError::Store {
                what: "reading the stock".to_owned(),
                message: e.to_string(),
            })
    }

    /// The end of `topic` (its high watermarks, summed over partitions):
    /// grows with every record and transaction marker written to it.
    pub async fn topic_end(&self, topic: &str) -> Result<i64, LabError> {
        Ok(offsets::lag(
            &self.transport,
            &self.options.analytics.group,
            &[topic.to_owned()],
        )
        .await
        .map_err(streaming_err("reading the topic's end"))?
        .iter()
        .flat_map(|g| g.partitions.iter().map(|p| p.high_watermark))
        .sum())
    }

    /// The lag of `group` on `topic`, summed over partitions.
    pub async fn lag(&self, group: &str, topic: &str) -> Result<i64, LabError> {
        Ok(offsets::lag(&self.transport, group, &[topic.to_owned()])
            .await
            .map_err(streaming_err("reading lag"))?
            .iter()
            .map(offsets::GroupTopicLag::total)
            .sum())
    }

    /// Resets the (stopped) analytics group to `to` on both topics.
    pub async fn reset_analytics(&self, to: ResetTarget) -> Result<(), LabError> {
        let topics =
            offsets::topics_for_group(&self.config.kafka, &self.options.analytics.group.clone());
        offsets::reset(&self.transport, &self.options.analytics.group, &topics, to)
            .await
            .map(drop)
            .map_err(streaming_err("resetting the analytics group"))
    }

    /// Samples the lag of each `(group, topic)` every `every` on its own
    /// task until [`LagSampler::finish`].
    pub fn sample_lag(
        &self,
        pairs: Vec<(String, String)>,
        every: Duration,
        origin: Instant,
    ) -> LagSampler {
        let transport = self.transport.clone();
        let task = BackgroundTask::spawn(|mut stop| async move {
            let mut series = vec![Vec::new(); pairs.len()];
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let last = tokio::select! {
                    _ = ticker.tick() => false,
                    () = stop.stopped() => true,
                };
                for (points, (group, topic)) in series.iter_mut().zip(&pairs) {
                    match transport.lag(group, topic).await {
                        Ok(parts) => {
                            let lag: i64 = parts.iter().map(|p| p.lag).sum();
                            points.push([origin.elapsed().as_secs_f64(), lag as f64]);
                        }
                        Err(e) => tracing::debug!(error = %e, "lag sample left out"),
                    }
                }
                if last {
                    return series;
                }
            }
        });
        LagSampler { task }
    }

    /// A gauge of the ledger's decisions (reservation records), to sample
    /// on its own task ([`Gauge::sample`]).
    pub fn decisions_gauge(&self) -> Gauge {
        Gauge::Reservations(self.ledger.clone())
    }

    /// Watches the ledger, from now on, for the orders handed to
    /// [`DecisionWatcher::watch`], and notes when each is first decided
    /// (polled every millisecond, only the orders not yet seen); gives up
    /// after `deadline`.
    pub fn watch_decisions(&self, deadline: Duration) -> DecisionWatcher {
        let ledger = self.ledger.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            let end = Instant::now() + deadline;
            let mut pending: Vec<String> = Vec::new();
            let mut seen = HashMap::new();
            let mut open = true;
            loop {
                while open {
                    match rx.try_recv() {
                        Ok(id) => pending.push(id),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                    }
                }
                let mut still = Vec::with_capacity(pending.len());
                for id in pending {
                    let oid = OrderId::parse(&id).map_err(|e| LabError::Store {
                        what: "order id".to_owned(),
                        message: e.to_string(),
                    })?;
                    let decided = ledger
                        .reservation(&oid)
                        .await
                        .map_err(|e| LabError::Store {
                            what: "reading a reservation".to_owned(),
                            message: e.to_string(),
                        })?;
                    if decided.is_some() {
                        seen.insert(id, Instant::now());
                    } else {
                        still.push(id);
                    }
                }
                pending = still;
                if !open && pending.is_empty() {
                    return Ok(seen);
                }
                if Instant::now() >= end {
                    return Err(LabError::Deadline {
                        what: format!("{} Kafka orders decided", pending.len()),
                        after: deadline,
                    });
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        DecisionWatcher { ids: tx, task }
    }

    /// Stops both consumers and deletes the run's topics (dead-letter
    /// topics included).
    pub async fn stop(mut self) {
        self.stop_analytics().await;
        self.stop_inventory().await;
        let deleted = match self.transport.topics_containing(&self.suffix).await {
            Ok(topics) if topics.is_empty() => Ok(()),
            Ok(topics) => self.transport.delete_topics(&topics).await,
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            tracing::warn!(error = %e, suffix = %self.suffix, "could not delete the run's topics");
        }
    }
}

/// Orders being watched for their decision ([`PartC::watch_decisions`]).
#[derive(Debug)]
pub struct DecisionWatcher {
    ids: mpsc::UnboundedSender<String>,
    task: JoinHandle<Result<HashMap<String, Instant>, LabError>>,
}

impl DecisionWatcher {
    /// Watches order `id` too.
    pub fn watch(&self, id: &str) {
        // The task only ends after `finish` drops the sender, or on an
        // error that `finish` reports.
        let _ = self.ids.send(id.to_owned());
    }

    /// Waits until every watched order is decided and returns when each
    /// first was.
    pub async fn finish(self) -> Result<HashMap<String, Instant>, LabError> {
        drop(self.ids);
        self.task.await?
    }
}

/// Lag being sampled ([`PartC::sample_lag`]).
#[derive(Debug)]
pub struct LagSampler {
    task: BackgroundTask<Vec<Vec<[f64; 2]>>>,
}

impl LagSampler {
    /// Stops sampling (after one last reading) and returns one series of
    /// `[seconds since origin, lag]` per `(group, topic)`, in order.
    pub async fn finish(self) -> Result<Vec<Vec<[f64; 2]>>, LabError> {
        Ok(self.task.stop().await?)
    }
}

/// Waits up to `deadline` until every order of `ids` is decided, polling
/// every 5 ms, and returns when each was first seen decided.
pub async fn wait_decided(
    c: &PartC,
    ids: &[String],
    deadline: Duration,
) -> Result<Vec<(String, Instant)>, LabError> {
    let end = Instant::now() + deadline;
    let mut pending: Vec<String> = ids.to_vec();
    let mut done = Vec::with_capacity(ids.len());
    while !pending.is_empty() {
        let mut still = Vec::with_capacity(pending.len());
        for id in pending {
            if c.decided(&id).await? {
                done.push((id, Instant::now()));
            } else {
                still.push(id);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= end {
            return Err(LabError::Deadline {
                what: format!("{} Kafka orders decided", pending.len()),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(done)
}
