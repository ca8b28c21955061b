//! Part B as an experiment drives it: a [`PartB`] handle that runs the
//! asynchronous architecture in this process over a real RabbitMQ — every
//! exchange and queue under a prefix unique to the run, durable redb stores
//! in a temporary directory — with each service started on its own, so that
//! an experiment can stop and restart inventory; optionally through a
//! cuttable TCP proxy, so that the broker can "go down" for this run only.
//!
//! A [`Probe`] sits between the services and the broker and records every
//! delivery a consumer handled: when, for which order, which attempt, and
//! what the handler answered. That is how the lab knows, to the
//! millisecond, when an order became `notified` (the order service's status
//! consumer acknowledged its `order.notified`, after the store recorded it),
//! and how often a duplicate was delivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::config::RabbitConfig;
use campusfood_core::events::OrderPlaced;
use campusfood_core::fault::FaultUpdate;
use campusfood_core::ledger::InventoryLedger;
use campusfood_core::task::BackgroundTask;
use campusfood_core::transport::{
    DeadLetter, DeadLetters, Delivery, Disposition, ForwardTransport, Handler, Message, Route,
    SubscribeOptions, Subscription, Transport, TransportError,
};
use campusfood_core::{Config, Item, OrderId, OrderStatus};
use campusfood_services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood_services::inventory::InventoryService;
use campusfood_services::server::StartError;
use campusfood_services::stores::OrderStore;
use campusfood_services::stores::{Stores, names};
use campusfood_testkit::Outage;
use campusfood_transport::rabbitmq::RabbitTransport;
use tokio::sync::Notify;

use crate::context::Settings;
use crate::error::LabError;
use crate::sync_rest::OrderClient;

/// How to get a broker when there is none.
pub const RABBITMQ_HINT: &str = "start it with `scripts/brokers.sh up rabbitmq`";

/// The `--set` key of the broker's AMQP URL.
pub const RABBITMQ_URL_KEY: &str = "rabbitmq.url";

/// How a [`PartB`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartBOptions {
    /// Connect the services through a cuttable proxy ([`PartB::cut_broker`]).
    pub through_proxy: bool,
    /// Deliveries in flight per consumer.
    pub prefetch: u16,
    /// Attempts before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before a failed message is delivered again.
    pub retry_delay: Duration,
}

impl Default for PartBOptions {
    fn default() -> Self {
        Self {
            through_proxy: false,
            prefetch: campusfood_services::async_rabbitmq::DEFAULT_PREFETCH,
            max_attempts: 3,
            retry_delay: Duration::from_millis(100),
        }
    }
}

/// A queue of the run's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// `orders.reserve`: `OrderPlaced` waiting for inventory.
    Reserve,
    /// `inventory.notify`: `InventoryReserved` waiting for notification.
    Notify,
    /// `orders.dlq`: dead letters of `orders.reserve`.
    DeadLetters,
}

/// Part B, running in this process over RabbitMQ, for one experiment.
#[derive(Debug)]
pub struct PartB {
    config: Config,
    options: AsyncOptions,
    /// A direct connection for the lab's own calls (queue depths, dead
    /// letters, publishing test messages, teardown): it stays up while the
    /// services' connection is cut.
    admin: Arc<RabbitTransport>,
    /// The services' connection (through the proxy, when there is one).
    bus: Arc<RabbitTransport>,
    probe: Arc<Probe>,
    stores: AsyncStores,
    /// Inventory's ledger (also in `stores`).
    ledger: Arc<dyn InventoryLedger>,
    /// The OrderService's orders and outbox (also in `stores`).
    orders: Arc<dyn OrderStore>,
    order: Option<AsyncSystem>,
    inventory: Option<AsyncSystem>,
    notification: Option<AsyncSystem>,
    client: OrderClient,
    proxy: Option<Outage>,
    item: Item,
    /// Holds the redb files; removed on drop.
    _data: tempfile::TempDir,
}

/// `host:port` of an AMQP URL (`amqp://user:pass@host:port/vhost`).
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5672")
    }
}

fn broker_err(what: &str) -> impl FnOnce(TransportError) -> LabError + '_ {
    move |source| LabError::Broker {
        what: what.to_owned(),
        source,
    }
}

fn store_err(what: &str) -> impl FnOnce(String) -> LabError + '_ {
    move |message| LabError::Store {
        what: what.to_owned(),
        message,
    }
}

impl PartB {
    /// Connects to RabbitMQ (the URL under `--set rabbitmq.url=…`, default
    /// the contract's), declares a topology under a prefix unique to this
    /// run, opens durable stores in a temp dir with plenty of stock of
    /// `settings.item`, and starts the three services (order on port 0).
    ///
    /// # Errors
    /// [`LabError::Unavailable`] when RabbitMQ cannot be reached (the
    /// experiment is then skipped); others when a service cannot start.
    pub async fn start(
        settings: &Settings,
        experiment: &str,
        opts: PartBOptions,
    ) -> Result<Self, LabError> {
        let url = settings.param(RABBITMQ_URL_KEY, RabbitConfig::default().url)?;
        let prefix = format!(
            "lab-{}-{:012x}",
            experiment.to_ascii_lowercase(),
            fastrand::u64(..) & 0xffff_ffff_ffff
        );
        let direct = RabbitConfig {
            url: url.clone(),
            ..RabbitConfig::with_prefix(&prefix)
        };
        let admin = match RabbitTransport::connect(&direct).await {
            Ok(t) => Arc::new(t),
            Err(e) => {
                return Err(LabError::Unavailable {
                    needs: format!("RabbitMQ ({e})"),
                    hint: RABBITMQ_HINT.to_owned(),
                });
            }
        };
        let (bus, proxy, rabbit) = if opts.through_proxy {
            let proxy = Outage::start(&authority(&url));
            let mut c = direct.clone();
            c.url = proxy.amqp_url();
            // Come back quickly once the broker is back.
            c.reconnect_backoff = Duration::from_millis(50);
            c.reconnect_backoff_max = Duration::from_millis(500);
            c.publish_attempts = 2;
            c.confirm_timeout = Duration::from_secs(2);
            let bus = RabbitTransport::connect(&c)
                .await
                .map_err(broker_err("connecting through the proxy"))?;
            (Arc::new(bus), Some(proxy), c)
        } else {
            (admin.clone(), None, direct)
        };
        let data = tempfile::Builder::new()
            .prefix("campusfood-lab-b-")
            .tempdir()
            .map_err(|source| LabError::Io {
                what: "creating a temp data dir".to_owned(),
                source,
            })?;
        let item = Item::parse(&settings.item).map_err(|e| LabError::Setting {
            key: "item".to_owned(),
            message: e.to_string(),
        })?;
        let stock = format!("{item}=100000000")
            .parse()
            .map_err(|e| LabError::Setting {
                key: "item".to_owned(),
                message: format!("{e}"),
            })?;
        let config = Config {
            data_dir: data.path().to_path_buf(),
            stock,
            rabbitmq: rabbit,
            ..Config::default()
        };
        let mut options = AsyncOptions::from_config(&config);
        options.order_port = 0;
        options.inventory_port = 0;
        options.prefetch = opts.prefetch;
        options.max_attempts = opts.max_attempts;
        options.retry_delay = opts.retry_delay;
        options.relay_poll = Duration::from_millis(50);
        let embedded = Stores::embedded(&config.data_dir);
        let ledger = embedded
            .ledger(names::ASYNC_LEDGER, &config.stock)
            .await
            .map_err(StartError::from)?;
        let orders = embedded
            .order_store(names::ASYNC_ORDERS)
            .map_err(StartError::from)?;
        let stores = AsyncStores {
            ledger: Some(ledger.clone()),
            orders: Some(orders.clone()),
            notified: Some(
                embedded
                    .processed(names::ASYNC_NOTIFIED)
                    .map_err(StartError::from)?,
            ),
        };
        let probe = Arc::new(Probe::new(bus.clone()));
        let mut this = Self {
            client: OrderClient::new("http://127.0.0.1:1", None, item.as_str())?,
            config,
            options,
            admin,
            bus,
            probe,
            stores,
            ledger,
            orders,
            order: None,
            inventory: None,
            notification: None,
            proxy,
            item,
            _data: data,
        };
        let started = this.start_all().await;
        if let Err(e) = started {
            this.stop().await;
            return Err(e);
        }
        tracing::info!(%prefix, order_url = this.client.order_url(), "Part B started in process");
        Ok(this)
    }

    async fn start_all(&mut self) -> Result<(), LabError> {
        self.notification = Some(self.start_part(AsyncPart::Notification).await?);
        self.start_inventory().await?;
        let order = self.start_part(AsyncPart::Order).await?;
        let addr = order
            .order
            .as_ref()
            .map(|o| o.server.addr())
            .ok_or_else(|| LabError::Unavailable {
                needs: "an async order service".to_owned(),
                hint: "AsyncSystem started without one".to_owned(),
            })?;
        self.order = Some(order);
        self.client = OrderClient::new(&format!("http://{addr}"), None, self.item.as_str())?;
        Ok(())
    }

    async fn start_part(&self, part: AsyncPart) -> Result<AsyncSystem, LabError> {
        Ok(AsyncSystem::start(
            &self.config,
            part,
            &self.options,
            self.probe.clone(),
            self.stores.clone(),
        )
        .await?)
    }

    /// The client of the async OrderService (`POST /order` → 201 `placed`).
    pub fn client(&self) -> &OrderClient {
        &self.client
    }

    /// The probe on the services' connection.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The configuration the services run with (names, prefix, URL).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The consumers' options (prefetch, attempts, retry delay).
    pub fn options(&self) -> &AsyncOptions {
        &self.options
    }

    /// The item ordered.
    pub fn item(&self) -> &Item {
        &self.item
    }

    /// The running InventoryService, if it is running.
    pub fn inventory(&self) -> Option<&Arc<InventoryService>> {
        self.inventory
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|r| &r.service)
    }

    /// Stops the InventoryService (its consumer drains what it holds);
    /// `OrderPlaced` events then wait in `orders.reserve`.
    pub async fn stop_inventory(&mut self) {
        if let Some(s) = self.inventory.take() {
            s.stop().await;
            tracing::info!("Part B inventory stopped");
        }
    }

    /// Starts the InventoryService (again), on the same ledger.
    pub async fn start_inventory(&mut self) -> Result<(), LabError> {
        if self.inventory.is_none() {
            self.inventory = Some(self.start_part(AsyncPart::Inventory).await?);
            tracing::info!("Part B inventory started");
        }
        Ok(())
    }

    /// Injects faults into the running InventoryService.
    pub fn configure_inventory(&self, update: &FaultUpdate) -> Result<(), LabError> {
        let service = self.inventory().ok_or_else(|| LabError::Unavailable {
            needs: "a running Part B inventory".to_owned(),
            hint: "start it first".to_owned(),
        })?;
        service
            .faults()
            .configure(update)
            .map(|_| ())
            .map_err(|e| LabError::Setting {
                key: "inventory faults".to_owned(),
                message: e.to_string(),
            })
    }

    /// The broker "goes down" for this run's services (connections cut,
    /// reconnections refused). Needs [`PartBOptions::through_proxy`].
    pub fn cut_broker(&self) -> Result<(), LabError> {
        self.proxy()?.cut();
        Ok(())
    }

    /// The broker is back for this run's services.
    pub fn restore_broker(&self) -> Result<(), LabError> {
        self.proxy()?.restore();
        Ok(())
    }

    /// Connections the proxy refused while the broker was cut.
    pub fn refused_connections(&self) -> u32 {
        self.proxy.as_ref().map_or(0, Outage::refused)
    }

    fn proxy(&self) -> Result<&Outage, LabError> {
        self.proxy.as_ref().ok_or_else(|| LabError::Unavailable {
            needs: "a proxy in front of the broker".to_owned(),
            hint: "start Part B with through_proxy".to_owned(),
        })
    }

    fn queue_name(&self, queue: Queue) -> &str {
        let c = &self.config.rabbitmq;
        match queue {
            Queue::Reserve => &c.reserve_queue,
            Queue::Notify => &c.notify_queue,
            Queue::DeadLetters => &c.dead_letter_queue,
        }
    }

    /// Messages ready in `queue` (delivered, unacknowledged ones not
    /// counted), asked over the lab's own connection.
    pub async fn depth(&self, queue: Queue) -> Result<u64, LabError> {
        let name = self.queue_name(queue).to_owned();
        self.admin
            .queue_depth(&name)
            .await
            .map(u64::from)
            .map_err(broker_err(&format!("depth of {name}")))
    }

    /// The dead letters of `orders.reserve`, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, LabError> {
        self.admin
            .dead_letters(&Route::ORDER_PLACED, limit)
            .await
            .map_err(broker_err("listing dead letters"))
    }

    /// Moves dead letter `id` back into `orders.reserve`.
    pub async fn replay(&self, id: &str) -> Result<bool, LabError> {
        self.admin
            .replay(&Route::ORDER_PLACED, id)
            .await
            .map_err(broker_err("replaying a dead letter"))
    }

    /// Publishes `body` as an `OrderPlaced` (with `key`, if any), as a
    /// redelivery, a republish or a broken producer would.
    pub async fn publish_order_placed(
        &self,
        body: impl Into<String>,
        key: Option<&str>,
    ) -> Result<(), LabError> {
        let message = Message {
            key: key.map(str::to_owned),
            body: body.into().into(),
            ..Message::default()
        };
        self.admin
            .publish(&Route::ORDER_PLACED, message)
            .await
            .map_err(broker_err("publishing an OrderPlaced"))
    }

    /// The order's status in the OrderService's store.
    pub async fn status(&self, id: &str) -> Result<Option<OrderStatus>, LabError> {
        let id = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
        let order = self
            .orders
            .get(&id)
            .await
            .map_err(|e| store_err("reading an order")(e.to_string()))?;
        Ok(order.map(|o| o.status))
    }

    /// How many of `ids` the OrderService's store says are `notified`.
    pub async fn notified_in_store(&self, ids: &[String]) -> Result<usize, LabError> {
        let mut n = 0;
        for id in ids {
            if self.status(id).await? == Some(OrderStatus::Notified) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The stock of the ordered item in inventory's ledger.
    pub async fn stock(&self) -> Result<u64, LabError> {
        let stock = self
            .ledger
            .stock()
            .await
            .map_err(|e| store_err("reading the ledger's stock")(e.to_string()))?;
        Ok(stock.get(&self.item).copied().unwrap_or(0))
    }

    /// How many reservation records the ledger holds (one per order
    /// decided, whatever the number of deliveries).
    pub async fn reservation_count(&self) -> Result<u64, LabError> {
        self.ledger
            .reservation_count()
            .await
            .map_err(|e| store_err("counting reservations")(e.to_string()))
    }

    /// Whether the ledger holds a reservation record for order `id`.
    pub async fn has_reservation(&self, id: &str) -> Result<bool, LabError> {
        let id = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
        self.ledger
            .reservation(&id)
            .await
            .map(|r| r.is_some())
            .map_err(|e| store_err("reading a reservation")(e.to_string()))
    }

    /// Orders still in the OrderService's outbox (accepted, not yet
    /// published with a confirm).
    pub async fn outbox_len(&self) -> Result<u64, LabError> {
        self.orders
            .outbox_len()
            .await
            .map_err(|e| store_err("reading the outbox")(e.to_string()))
    }

    /// A gauge of `queue`'s depth, to sample on its own task.
    pub fn queue_gauge(&self, queue: Queue) -> Gauge {
        Gauge::Queue {
            admin: self.admin.clone(),
            name: self.queue_name(queue).to_owned(),
        }
    }

    /// A gauge of the ledger's reservation count, to sample on its own task.
    pub fn reservations_gauge(&self) -> Gauge {
        Gauge::Reservations(self.ledger.clone())
    }

    /// A gauge of the outbox's length, to sample on its own task.
    pub fn outbox_gauge(&self) -> Gauge {
        Gauge::Outbox(self.orders.clone())
    }

    /// The `OrderPlaced` event of order `id` as the relay published it,
    /// rebuilt from the order store (to publish it again).
    pub async fn order_placed_json(&self, id: &str) -> Result<String, LabError> {
        let oid = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
        let order = self
            .orders
            .get(&oid)
            .await
            .map_err(|e| store_err("reading an order")(e.to_string()))?
            .ok_or_else(|| store_err("reading an order")(format!("no order {id}")))?;
        Ok(serde_json::to_string(&OrderPlaced::from(&order))?)
    }

    /// Confirmations the NotificationService sent (logged).
    pub fn notifications_sent(&self) -> u64 {
        self.notification
            .as_ref()
            .and_then(|s| s.notification.as_ref())
            .map_or(0, |n| n.sent())
    }

    /// Waits until the probe saw every order of `ids` become `notified`,
    /// or fails after `deadline`.
    pub async fn wait_notified(&self, ids: &[String], deadline: Duration) -> Result<(), LabError> {
        let group = self.options.status_group.clone();
        crate::sync_rest::until(&format!("{} orders notified", ids.len()), deadline, || {
            let done = self
                .probe
                .count_first_acks(&Route::ORDER_NOTIFIED, Some(&group), ids)
                == ids.len();
            async move { done }
        })
        .await
    }

    /// Waits until inventory has decided every order of `ids` (its
    /// consumer acknowledged the order's `OrderPlaced`: the decision is in
    /// the ledger and its event published), or fails after `deadline`.
    pub async fn wait_reserved(&self, ids: &[String], deadline: Duration) -> Result<(), LabError> {
        crate::sync_rest::until(&format!("{} orders reserved", ids.len()), deadline, || {
            let done = self.probe.count_first_acks(&Route::ORDER_PLACED, None, ids) == ids.len();
            async move { done }
        })
        .await
    }

    /// When inventory decided each order (see [`wait_reserved`](Self::wait_reserved)).
    pub fn reserved_at(&self) -> HashMap<String, Instant> {
        self.probe.first_acks(&Route::ORDER_PLACED, None)
    }

    /// When each order became `notified` (the order service's status
    /// consumer acknowledged its `order.notified`), by order id.
    pub fn notified_at(&self) -> HashMap<String, Instant> {
        self.probe
            .first_acks(&Route::ORDER_NOTIFIED, Some(&self.options.status_group))
    }

    /// Stops every service, deletes the run's exchanges and queues, and
    /// closes the connections.
    pub async fn stop(mut self) {
        if let Some(proxy) = &self.proxy {
            proxy.restore();
        }
        for s in [
            self.order.take(),
            self.inventory.take(),
            self.notification.take(),
        ]
        .into_iter()
        .flatten()
        {
            s.stop().await;
        }
        // Through a proxy the services' connection is a transport of its
        // own, which declared the consumers' retry and dead-letter queues.
        if self.proxy.is_some()
            && let Err(e) = self.bus.teardown().await
        {
            tracing::warn!(error = %e, "could not delete the services' queues");
        }
        if let Err(e) = self.admin.teardown().await {
            tracing::warn!(error = %e, "could not delete the run's queues");
        }
        self.bus.close().await;
        self.admin.close().await;
    }
}

/// Something to sample over time: a queue's depth, the outbox's length.
#[derive(Debug, Clone)]
pub enum Gauge {
    /// Ready messages of a queue.
    Queue {
        /// The lab's connection.
        admin: Arc<RabbitTransport>,
        /// The queue.
        name: String,
    },
    /// Orders accepted and not yet published.
    Outbox(Arc<dyn OrderStore>),
    /// Reservation records in inventory's ledger.
    Reservations(Arc<dyn InventoryLedger>),
}

impl Gauge {
    /// The current value.
    pub async fn read(&self) -> Result<u64, LabError> {
        match self {
            Self::Queue { admin, name } => admin
                .queue_depth(name)
                .await
                .map(u64::from)
                .map_err(broker_err(&format!("depth of {name}"))),
            Self::Outbox(store) => store
                .outbox_len()
                .await
                .map_err(|e| store_err("reading the outbox")(e.to_string())),
            Self::Reservations(ledger) => ledger
                .reservation_count()
                .await
                .map_err(|e| store_err("counting reservations")(e.to_string())),
        }
    }

    /// Reads the gauge every `every` on its own task until
    /// [`Sampler::finish`]; points are `[seconds since origin, value]`.
    /// A read that fails (the broker away) is left out.
    pub fn sample(self, every: Duration, origin: Instant) -> Sampler {
        let task = BackgroundTask::spawn(|mut stop| async move {
            let mut points = Vec::new();
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.stopped() => break,
                }
                match self.read().await {
                    Ok(v) => points.push([origin.elapsed().as_secs_f64(), v as f64]),
                    Err(e) => tracing::debug!(error = %e, "sample left out"),
                }
            }
            // One last reading, so the series ends at the final value.
            if let Ok(v) = self.read().await {
                points.push([origin.elapsed().as_secs_f64(), v as f64]);
            }
            points
        });
        Sampler { task }
    }
}

/// A gauge being sampled ([`Gauge::sample`]).
#[derive(Debug)]
pub struct Sampler {
    task: BackgroundTask<Vec<[f64; 2]>>,
}

impl Sampler {
    /// Stops sampling and returns the points.
    pub async fn finish(self) -> Result<Vec<[f64; 2]>, LabError> {
        Ok(self.task.stop().await?)
    }
}

/// What a consumer's handler answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// Done: acknowledged.
    Ack,
    /// To be delivered again, with the reason.
    Retry(String),
    /// Set aside, with the reason.
    DeadLetter(String),
}

/// One delivery a consumer handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// When the handler answered.
    pub at: Instant,
    /// The route consumed.
    pub route: Route,
    /// The consumer group (`None`: the route's default consumer).
    pub group: Option<String>,
    /// The order, from the message's key or its body's `order_id`.
    pub order_id: Option<String>,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// What the handler answered.
    pub outcome: Handling,
}

#[derive(Debug, Default)]
struct ProbeLog {
    events: Vec<Handled>,
    /// (route, group, order) → when it was first acknowledged.
    first_ack: HashMap<(Route, Option<String>, String), Instant>,
}

/// A [`Transport`] that forwards everything to another and records every
/// delivery its subscribers handle ([`Handled`]).
#[derive(Debug)]
pub struct Probe {
    inner: Arc<dyn Transport>,
    log: Arc<Mutex<ProbeLog>>,
    /// Woken after every delivery handled.
    handled: Arc<Notify>,
}

impl Probe {
    /// A probe in front of `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            log: Arc::default(),
            handled: Arc::default(),
        }
    }

    /// Waits until `group`'s consumer of `route` has acknowledged order
    /// `order_id` (woken by every delivery handled, no polling), and returns
    /// when it first did; fails after `deadline`.
    pub async fn first_ack(
        &self,
        route: &Route,
        group: Option<&str>,
        order_id: &str,
        deadline: Duration,
    ) -> Result<Instant, LabError> {
        let key = (route.clone(), group.map(str::to_owned), order_id.to_owned());
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let woken = self.handled.notified();
            tokio::pin!(woken);
            // Registered before looking, so a delivery handled in between
            // still wakes us.
            woken.as_mut().enable();
            if let Some(at) = self.with_log(|l| l.first_ack.get(&key).copied()) {
                return Ok(at);
            }
            if tokio::time::timeout_at(end, woken).await.is_err() {
                return Err(LabError::Deadline {
                    what: format!("{route} of {order_id} acknowledged"),
                    after: deadline,
                });
            }
        }
    }

    fn with_log<T>(&self, f: impl FnOnce(&ProbeLog) -> T) -> T {
        f(&self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Every delivery handled so far, in order.
    pub fn events(&self) -> Vec<Handled> {
        self.with_log(|l| l.events.clone())
    }

    /// The deliveries of `route` handled so far for `order_id`.
    pub fn deliveries(&self, route: &Route, order_id: &str) -> Vec<Handled> {
        self.with_log(|l| {
            l.events
                .iter()
                .filter(|e| e.route == *route && e.order_id.as_deref() == Some(order_id))
                .cloned()
                .collect()
        })
    }

    /// When each order was first acknowledged on `route` by `group`'s
    /// consumer.
    pub fn first_acks(&self, route: &Route, group: Option<&str>) -> HashMap<String, Instant> {
        self.with_log(|l| {
            l.first_ack
                .iter()
                .filter(|((r, g, _), _)| r == route && g.as_deref() == group)
                .map(|((_, _, id), at)| (id.clone(), *at))
                .collect()
        })
    }

    /// How many of `ids` `group`'s consumer has acknowledged on `route`.
    pub fn count_first_acks(&self, route: &Route, group: Option<&str>, ids: &[String]) -> usize {
        self.with_log(|l| {
            let group = group.map(str::to_owned);
            ids.iter()
                .filter(|id| {
                    l.first_ack
                        .contains_key(&(route.clone(), group.clone(), (*id).clone()))
                })
                .count()
        })
    }
}

/// The order a message is about: its key, else its body's `order_id`.
pub fn order_of(message: &Message) -> Option<String> {
    message.key.clone().or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&message.body)
            .ok()?
            .get("order_id")?
            .as_str()
            .map(str::to_owned)
    })
}

struct Probed {
    inner: Arc<dyn Handler>,
    route: Route,
    group: Option<String>,
    log: Arc<Mutex<ProbeLog>>,
    handled: Arc<Notify>,
}

#[async_trait]
impl Handler for Probed {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let order_id = order_of(&delivery.message);
        let attempt = delivery.attempt;
        let disposition = self.inner.handle(delivery).await;
        let at = Instant::now();
        let outcome = match &disposition {
            Disposition::Ack => Handling::Ack,
            Disposition::Retry { reason } => Handling::Retry(reason.clone()),
            Disposition::DeadLetter { reason } => Handling::DeadLetter(reason.clone()),
        };
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Handling::Ack, Some(id)) = (&outcome, &order_id) {
            log.first_ack
                .entry((self.route.clone(), self.group.clone(), id.clone()))
                .or_insert(at);
        }
        log.events.push(Handled {
            at,
            route: self.route.clone(),
            group: self.group.clone(),
            order_id,
            attempt,
            outcome,
        });
        drop(log);
        self.handled.notify_waiters();
        disposition
    }
}

#[async_trait]
impl ForwardTransport for Probe {
    fn inner(&self) -> &dyn Transport {
        &*self.inner
    }

    async fn forward_subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        let probed = Arc::new(Probed {
            inner: handler,
            route: route.clone(),
            group: options.group.clone(),
            log: self.log.clone(),
            handled: self.handled.clone(),
        });
        self.inner.subscribe(route, probed, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_amqp_urls() {
        assert_eq!(
            authority("amqp://guest:guest@127.0.0.1:5672"),
            "127.0.0.1:5672"
        );
        assert_eq!(authority("amqp://broker/vhost"), "broker:5672");
        assert_eq!(authority("amqp://u:p@h:1/%2f"), "h:1");
    }
}
