//! The asynchronous architecture assembled over any publish/subscribe
//! [`Transport`]: OrderService (HTTP in, outbox relay out, status
//! consumers), InventoryService (HTTP for `/configure` and `/inventory`,
//! the reserve consumer) and NotificationService (the notify consumer).
//! The `async_rabbitmq` example runs it over RabbitMQ; tests also run it
//! over the in-memory transport and over Kafka (with
//! [`KafkaConfig::failed_topic`](campusfood_core::config::KafkaConfig::failed_topic)
//! set: the flow needs distinct routes,
//! [`Capabilities::distinct_routes`](campusfood_core::transport::Capabilities::distinct_routes)).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use campusfood_core::Config;
use campusfood_core::OrderId;
use campusfood_core::fault::FaultInjector;
use campusfood_core::group_commit::Flush;
use campusfood_core::ledger::InventoryLedger;
use campusfood_core::order::Order;
use campusfood_core::task::BackgroundTask;
use campusfood_core::telemetry::Traced;
use campusfood_core::transport::{
    Route, SubscribeOptions, Subscription, Transport, TransportError,
};

use super::order::AsyncOrderService;
use super::workers::{NotifyWorker, ReserveWorker};
use crate::inventory::InventoryService;
use crate::metrics::{Metered, sample_backlog, sample_every, with_metrics};
use crate::notification::NotificationService;
use crate::server::{OrderLookup, Running, Server, StartError, inventory_router, order_routes};
use crate::stores::OrderStore;
use crate::stores::ProcessedIds;
use crate::stores::{Stores, names};
use crate::timeline::Timeline;

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncPart {
    /// All three.
    All,
    /// OrderService only.
    Order,
    /// InventoryService only.
    Inventory,
    /// NotificationService only.
    Notification,
}

impl AsyncPart {
    fn runs_order(self) -> bool {
        matches!(self, Self::All | Self::Order)
    }
    fn runs_inventory(self) -> bool {
        matches!(self, Self::All | Self::Inventory)
    }
    fn runs_notification(self) -> bool {
        matches!(self, Self::All | Self::Notification)
    }
}

/// Deliveries each consumer has in flight by default. A wide window keeps
/// the group-committing ledger's batches and the coalesced acks large: on
/// the project's 2-core machine a 20,000-order backlog drains at about
/// 5,600 orders/s with 256 and 6,400 with 1,024 (`cargo bench --bench
/// async_rabbitmq`). The wider it is, the less evenly several instances of
/// one consumer share a queue.
pub const DEFAULT_PREFETCH: u16 = 1024;

/// How the consumers consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncOptions {
    /// OrderService HTTP port.
    pub order_port: u16,
    /// InventoryService HTTP port.
    pub inventory_port: u16,
    /// Deliveries in flight per consumer.
    pub prefetch: u16,
    /// Attempts before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before a failed message is retried.
    pub retry_delay: Duration,
    /// How often the relay looks at the outbox when nothing wakes it.
    pub relay_poll: Duration,
    /// The consumer group the OrderService follows events in. It must
    /// differ from the consumers that act on those events (notification
    /// reads `inventory.reserved` too): each group gets every event.
    pub status_group: String,
}

impl AsyncOptions {
    /// The defaults, on the RabbitMQ ports of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            order_port: config.rabbitmq.order_port,
            inventory_port: config.rabbitmq.inventory_port,
            prefetch: DEFAULT_PREFETCH,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            relay_poll: Duration::from_millis(500),
            status_group: config.rabbitmq.status_group.clone(),
        }
    }

    fn subscribe(&self, group: Option<&str>) -> SubscribeOptions {
        SubscribeOptions {
            prefetch: self.prefetch,
            max_attempts: self.max_attempts,
            retry_delay: self.retry_delay,
            group: group.map(str::to_owned),
        }
    }
}

/// The stores the services keep their state in; each is needed only by
/// the service that uses it.
#[derive(Debug, Clone, Default)]
pub struct AsyncStores {
    /// Inventory's ledger.
    pub ledger: Option<Arc<dyn InventoryLedger>>,
    /// Orders and outbox.
    pub orders: Option<Arc<dyn OrderStore>>,
    /// Notified orders.
    pub notified: Option<Arc<dyn ProcessedIds>>,
}

impl AsyncStores {
    /// The stores of the services `part` runs, from `stores` (redb files or
    /// the shared database): a process running one service opens only
    /// that service's store.
    ///
    /// The consumers' writes are flushed as
    /// [`RabbitConfig::store_flush`](campusfood_core::config::RabbitConfig::store_flush)
    /// says: by default they share `fsync`s ([`Flush::Shared`]), each
    /// waiting up to [`DEFER_LIMIT`](campusfood_core::group_commit::DEFER_LIMIT)
    /// for its durable commit, which costs nothing while many deliveries
    /// are in flight (RabbitMQ's prefetch). Over a transport that hands a
    /// subscription one message at a time (Kafka), use
    /// [`open_with`](Self::open_with) and [`Flush::Each`].
    pub async fn open(
        stores: &Stores,
        config: &Config,
        part: AsyncPart,
    ) -> Result<Self, StartError> {
        Self::open_with(stores, config, part, config.rabbitmq.store_flush).await
    }

    /// [`open`](Self::open), the consumers' writes (the inventory ledger,
    /// the order store's status advances, notification's sent set) flushed
    /// as `flush` says.
    pub async fn open_with(
        stores: &Stores,
        config: &Config,
        part: AsyncPart,
        flush: Flush,
    ) -> Result<Self, StartError> {
        let mut this = Self::default();
        if part.runs_inventory() {
            this.ledger = Some(
                stores
                    .ledger(names::ASYNC_LEDGER, &config.stock, flush)
                    .await?,
            );
        }
        if part.runs_order() {
            this.orders = Some(stores.order_store(names::ASYNC_ORDERS, flush)?);
        }
        if part.runs_notification() {
            this.notified = Some(stores.processed(names::ASYNC_NOTIFIED, flush)?);
        }
        Ok(this)
    }

    fn need<T: ?Sized>(
        store: &Option<Arc<T>>,
        service: &'static str,
        name: &'static str,
    ) -> Result<Arc<T>, StartError> {
        store.clone().ok_or(StartError::MissingStore {
            service,
            store: name,
        })
    }
}

/// How often the gauges (queue depth, outbox size) are sampled.
const SAMPLE: Duration = Duration::from_secs(1);

/// What a process exposes about itself: Prometheus metrics at
/// `GET /metrics` (on the order and inventory servers), a queue-depth
/// gauge sampled from `backlog` and the order service's outbox size, each
/// every second.
#[derive(Debug, Clone)]
pub struct Observability {
    /// The installed recorder's handle ([`crate::metrics::install_prometheus`]).
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// Where queue depths come from, if the transport can tell.
    pub backlog: Option<Arc<dyn campusfood_core::transport::Backlog>>,
}

/// The async architecture, running.
#[derive(Debug)]
pub struct AsyncSystem {
    /// OrderService and its HTTP server, when run here.
    pub order: Option<Running<AsyncOrderService>>,
    /// InventoryService and its HTTP server, when run here.
    pub inventory: Option<Running<InventoryService>>,
    /// NotificationService, when run here.
    pub notification: Option<Arc<NotificationService>>,
    subscriptions: Vec<Subscription>,
    relay: Option<BackgroundTask>,
    sampler: Option<BackgroundTask>,
    outbox_sampler: Option<BackgroundTask>,
}

impl AsyncSystem {
    /// Starts `part` over `transport` with `stores`.
    ///
    /// Over the in-memory transport with memory stores (the
    /// `async_rabbitmq` example passes a `RabbitTransport` and
    /// [`AsyncStores::open`]):
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use campusfood_core::Config;
    /// use campusfood_core::ledger::MemoryLedger;
    /// use campusfood_services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
    /// use campusfood_services::stores::{MemoryOrderStore, MemoryProcessedIds};
    /// use campusfood_transport::memory::MemoryTransport;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = Config::default();
    /// config.http.host = "127.0.0.1".to_owned();
    /// let mut options = AsyncOptions::from_config(&config);
    /// (options.order_port, options.inventory_port) = (0, 0);
    /// let stores = AsyncStores {
    ///     ledger: Some(Arc::new(MemoryLedger::new(&config.stock))),
    ///     orders: Some(Arc::new(MemoryOrderStore::new())),
    ///     notified: Some(Arc::new(MemoryProcessedIds::new())),
    /// };
    /// let transport = Arc::new(MemoryTransport::new());
    /// let system = AsyncSystem::start(&config, AsyncPart::All, &options, transport, stores).await?;
    /// assert!(system.order.is_some() && system.notification.is_some());
    /// system.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`StartError::Transport`] with [`TransportError::Unsupported`] when
    /// the order service or notification is to run over a transport whose
    /// routes are not distinct
    /// ([`Capabilities::distinct_routes`](campusfood_core::transport::Capabilities::distinct_routes)),
    /// or a port, store or subscription fails.
    pub async fn start(
        config: &Config,
        part: AsyncPart,
        options: &AsyncOptions,
        transport: Arc<dyn Transport>,
        stores: AsyncStores,
    ) -> Result<Self, StartError> {
        Self::start_observed(config, part, options, transport, stores, None).await
    }

    /// Like [`start`](Self::start), counting the traffic ([`Metered`]) and
    /// serving it at `GET /metrics` when `observability` is given.
    pub async fn start_observed(
        config: &Config,
        part: AsyncPart,
        options: &AsyncOptions,
        transport: Arc<dyn Transport>,
        stores: AsyncStores,
        observability: Option<Observability>,
    ) -> Result<Self, StartError> {
        if (part.runs_order() || part.runs_notification())
            && !transport.capabilities().distinct_routes
        {
            // The order service and notification tell `inventory.reserved`
            // from `inventory.failed` by the route they subscribe to.
            return Err(StartError::Transport(TransportError::Unsupported {
                transport: transport.name(),
                operation: "distinct event routes (inventory.reserved apart from inventory.failed)",
            }));
        }
        let transport: Arc<dyn Transport> = match &observability {
            Some(_) => Arc::new(Metered::new(transport)),
            None => transport,
        };
        // Every publish and every handler in the order's trace.
        let transport: Arc<dyn Transport> = Arc::new(Traced::new(transport));
        let prometheus = observability.as_ref().map(|o| &o.prometheus);
        let host = &config.http.host;
        let max_body = config.http.max_body_bytes;
        let mut this = Self {
            order: None,
            inventory: None,
            notification: None,
            subscriptions: Vec::new(),
            relay: None,
            sampler: None,
            outbox_sampler: None,
        };
        if let Some(backlog) = observability.as_ref().and_then(|o| o.backlog.clone()) {
            let routes = vec![Route::ORDER_PLACED, Route::INVENTORY_RESERVED];
            this.sampler = Some(BackgroundTask::spawn(|stop| {
                sample_backlog(backlog, routes, SAMPLE, stop.into_stopped())
            }));
        }
        let subscribe = |route: Route, handler, group: Option<&str>| {
            let transport = transport.clone();
            let opts = options.subscribe(group);
            async move { transport.subscribe(&route, handler, opts).await }
        };
        if part.runs_inventory() {
            let service = Arc::new(InventoryService::new(
                AsyncStores::need(&stores.ledger, "inventory", "ledger")?,
                Arc::new(FaultInjector::default()),
            ));
            let worker = Arc::new(ReserveWorker::new(service.clone(), transport.clone()));
            this.subscriptions
                .push(subscribe(Route::ORDER_PLACED, worker, None).await?);
            let router = with_metrics(inventory_router(service.clone(), max_body), prometheus);
            let server = Server::start_with(
                "inventory",
                &format!("{host}:{}", options.inventory_port),
                router,
                config.http.server,
            )
            .await?;
            this.inventory = Some(Running { service, server });
        }
        if part.runs_notification() {
            let service = Arc::new(NotificationService::new(Arc::new(FaultInjector::default())));
            let worker = Arc::new(NotifyWorker::new(
                service.clone(),
                AsyncStores::need(&stores.notified, "notification", "notified set")?,
                transport.clone(),
            ));
            this.subscriptions
                .push(subscribe(Route::INVENTORY_RESERVED, worker, None).await?);
            this.notification = Some(service);
        }
        if part.runs_order() {
            let service = Arc::new(AsyncOrderService::new(
                AsyncStores::need(&stores.orders, "order", "order store")?,
                transport.clone(),
            ));
            for (route, worker) in service.status_workers() {
                this.subscriptions
                    .push(subscribe(route, worker, Some(&options.status_group)).await?);
            }
            if observability.is_some() {
                let store = service.store().clone();
                this.outbox_sampler = Some(BackgroundTask::spawn(|stop| {
                    sample_every(SAMPLE, stop.into_stopped(), move || {
                        let store = store.clone();
                        async move {
                            match store.outbox_len().await {
                                Ok(n) => campusfood_core::metric::outbox_size(n),
                                Err(e) => tracing::debug!(error = %e, "outbox size unavailable"),
                            }
                        }
                    })
                }));
            }
            let (relay, poll) = (service.clone(), options.relay_poll);
            this.relay = Some(BackgroundTask::spawn(|stop| {
                relay.run_relay(poll, stop.into_stopped())
            }));
            let server = Server::start_with(
                "order",
                &format!("{host}:{}", options.order_port),
                with_metrics(
                    async_order_router(service.clone(), max_body)
                        .route("/asyncapi.json", asyncapi_route(config, options)),
                    prometheus,
                ),
                config.http.server,
            )
            .await?;
            this.order = Some(Running { service, server });
        }
        Ok(this)
    }

    /// Stops HTTP first, then the relay, then the consumers (each drains).
    pub async fn stop(self) {
        if let Some(o) = self.order {
            o.server.stop().await;
        }
        if let Some(relay) = self.relay {
            let _ = relay.stop().await;
        }
        for s in self.subscriptions {
            s.stop().await;
        }
        for sampler in [self.sampler, self.outbox_sampler].into_iter().flatten() {
            let _ = sampler.stop().await;
        }
        if let Some(i) = self.inventory {
            i.server.stop().await;
        }
    }
}

/// `GET /asyncapi.json`: the AsyncAPI document of the RabbitMQ topology
/// these options and `config` name ([`crate::asyncapi::async_rabbitmq`]).
fn asyncapi_route(config: &Config, options: &AsyncOptions) -> axum::routing::MethodRouter {
    let doc = crate::asyncapi::async_rabbitmq(&crate::asyncapi::RabbitDoc {
        config: &config.rabbitmq,
        status_group: &options.status_group,
        max_attempts: options.max_attempts,
        retry_delay_ms: options.retry_delay.as_millis(),
    });
    crate::server::openapi_route(doc)
}

/// OrderService (async): `POST /order`, `GET /orders/{id}`, `GET /health`,
/// `GET /openapi.json`.
pub fn async_order_router(service: Arc<AsyncOrderService>, max_body_bytes: usize) -> Router {
    let doc = crate::openapi::async_order();
    order_routes(&service, max_body_bytes, "async-order-service", doc).with_state(service)
}

/// Orders are read from the store, which may fail.
impl OrderLookup for AsyncOrderService {
    type Order = Order;
    const MISSING: &'static str = "no order";

    async fn lookup(&self, id: &OrderId) -> Result<Option<Order>, String> {
        self.order(id).await.map_err(|e| e.to_string())
    }
    async fn timeline(&self, id: &OrderId) -> Result<Option<Timeline>, String> {
        AsyncOrderService::timeline(self, id)
            .await
            .map_err(|e| e.to_string())
    }
}
