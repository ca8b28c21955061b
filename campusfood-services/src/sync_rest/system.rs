//! Part A assembled: bind the three services, run them, stop them. The
//! `sync_rest` example is a thin shell over [`SyncRest::start`]; tests call
//! it with port 0 and read the bound addresses back.

use std::sync::Arc;
use std::time::Duration;

use campusfood_core::Config;
use campusfood_core::fault::FaultInjector;
use campusfood_core::group_commit::Flush;
use campusfood_core::ledger::InventoryLedger;
use campusfood_core::outbox::Outbox;
use campusfood_core::task::BackgroundTask;
use campusfood_core::transport::Transport;
use campusfood_transport::http::HttpTransport;
use metrics_exporter_prometheus::PrometheusHandle;

use super::order::{OrderOptions, OrderService};
use super::routers::{notification_router, order_router};
use crate::inventory::InventoryService;
use crate::metrics::{Metered, sample_every, with_metrics};
use crate::notification::NotificationService;
use crate::server::{Running, Server, StartError, inventory_router};
use crate::stores::ProcessedIds;
use crate::stores::{Stores, names};

/// How often the order service's outbox size is sampled when observed.
const OUTBOX_SAMPLE: Duration = Duration::from_secs(1);

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPart {
    /// All three.
    All,
    /// OrderService only (inventory and notification are elsewhere).
    Order,
    /// InventoryService only.
    Inventory,
    /// NotificationService only.
    Notification,
}

/// Part A, running.
#[derive(Debug)]
pub struct SyncRest {
    /// InventoryService, when this process runs it.
    pub inventory: Option<Running<InventoryService>>,
    /// NotificationService, when this process runs it.
    pub notification: Option<Running<NotificationService>>,
    /// OrderService, when this process runs it.
    pub order: Option<Running<OrderService>>,
    retrier: Option<BackgroundTask>,
    sampler: Option<BackgroundTask>,
}

/// Part A's stores; each is needed only by the service that uses it.
#[derive(Debug, Clone, Default)]
pub struct SyncStores {
    /// InventoryService's ledger.
    pub ledger: Option<Arc<dyn InventoryLedger>>,
    /// OrderService's kept notifications (failed sends, retried).
    pub outbox: Option<Arc<dyn Outbox>>,
    /// NotificationService's orders already notified (each is sent once).
    pub notified: Option<Arc<dyn ProcessedIds>>,
}

impl SyncStores {
    /// The stores of the services `part` runs, from `stores`.
    pub async fn open(
        stores: &Stores,
        config: &Config,
        part: SyncPart,
    ) -> Result<Self, StartError> {
        let mut this = Self::open_without_ledger(stores, part)?;
        if matches!(part, SyncPart::All | SyncPart::Inventory) {
            this.ledger = Some(
                stores
                    .ledger(names::SYNC_LEDGER, &config.stock, Flush::Each)
                    .await?,
            );
        }
        Ok(this)
    }

    /// The outbox and sent-set of the services `part` runs.
    fn open_without_ledger(stores: &Stores, part: SyncPart) -> Result<Self, StartError> {
        let mut this = Self::default();
        if matches!(part, SyncPart::All | SyncPart::Order) {
            this.outbox = Some(stores.outbox(names::SYNC_NOTIFICATION_OUTBOX)?);
        }
        if matches!(part, SyncPart::All | SyncPart::Notification) {
            this.notified = Some(stores.processed(names::SYNC_NOTIFIED, Flush::Each)?);
        }
        Ok(this)
    }
}

impl SyncRest {
    /// Starts `part` on `config`'s host and ports, with the stores
    /// [`Stores::open`] chooses: redb files in `config.data_dir`, or the
    /// shared Postgres database. Opens only the stores of the services
    /// `part` runs. When inventory or notification run in this process, the
    /// order service calls them at their bound addresses (so port 0 works).
    ///
    /// ```
    /// use campusfood_core::Config;
    /// use campusfood_services::sync_rest::{SyncPart, SyncRest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let data = tempfile::tempdir()?;
    /// let mut config = Config::default();
    /// config.data_dir = data.path().to_owned();
    /// config.http.host = "127.0.0.1".to_owned();
    /// (config.http.order_port, config.http.inventory_port, config.http.notification_port) = (0, 0, 0);
    /// let system = SyncRest::start(&config, SyncPart::All).await?;
    /// let order = system.order.as_ref().map(|o| o.server.addr()).ok_or("no order service")?;
    /// assert_ne!(order.port(), 0); // POST http://{order}/order places an order
    /// system.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(config: &Config, part: SyncPart) -> Result<Self, StartError> {
        let stores = SyncStores::open(&Stores::open(config).await?, config, part).await?;
        Self::start_with_stores(config, part, stores).await
    }

    /// Like [`start`](Self::start), with the ledger given (e.g. a
    /// `MemoryLedger`); `ledger` is used only when inventory runs here.
    pub async fn start_with(
        config: &Config,
        part: SyncPart,
        ledger: Option<Arc<dyn InventoryLedger>>,
    ) -> Result<Self, StartError> {
        let stores = SyncStores {
            ledger,
            ..SyncStores::open_without_ledger(&Stores::open(config).await?, part)?
        };
        Self::start_with_stores(config, part, stores).await
    }

    /// Like [`start`](Self::start), with Prometheus metrics: every service
    /// serves `GET /metrics` from `prometheus`
    /// ([`install_prometheus`](crate::metrics::install_prometheus)), the
    /// order service counts its calls to inventory and notification
    /// ([`Metered`]) and keeps the outbox-size gauge current. The
    /// `sync_rest` example runs this.
    pub async fn start_observed(
        config: &Config,
        part: SyncPart,
        prometheus: PrometheusHandle,
    ) -> Result<Self, StartError> {
        let stores = SyncStores::open(&Stores::open(config).await?, config, part).await?;
        Self::start_inner(config, part, stores, Some(prometheus)).await
    }

    /// Like [`start`](Self::start), with the stores given: each is used
    /// when its service runs here (and must then be given).
    pub async fn start_with_stores(
        config: &Config,
        part: SyncPart,
        stores: SyncStores,
    ) -> Result<Self, StartError> {
        Self::start_inner(config, part, stores, None).await
    }

    async fn start_inner(
        config: &Config,
        part: SyncPart,
        stores: SyncStores,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        let SyncStores {
            ledger,
            outbox,
            notified,
        } = stores;
        let http = &config.http;
        let bind = |port: u16| format!("{}:{port}", http.host);
        let mut this = Self {
            inventory: None,
            notification: None,
            order: None,
            retrier: None,
            sampler: None,
        };
        let prometheus = prometheus.as_ref();
        if matches!(part, SyncPart::All | SyncPart::Inventory) {
            let ledger = ledger.ok_or(StartError::MissingStore {
                service: "inventory",
                store: "ledger",
            })?;
            let service = Arc::new(InventoryService::new(
                ledger,
                Arc::new(FaultInjector::default()),
            ));
            let router = with_metrics(
                inventory_router(service.clone(), http.max_body_bytes),
                prometheus,
            );
            let server =
                Server::start_with("inventory", &bind(http.inventory_port), router, http.server)
                    .await?;
            this.inventory = Some(Running { service, server });
        }
        if matches!(part, SyncPart::All | SyncPart::Notification) {
            let notified = notified.ok_or(StartError::MissingStore {
                service: "notification",
                store: "sent-set",
            })?;
            let service = Arc::new(
                NotificationService::new(Arc::new(FaultInjector::default()))
                    .with_sent_set(notified),
            );
            let router = with_metrics(
                notification_router(service.clone(), http.max_body_bytes),
                prometheus,
            );
            let server = Server::start_with(
                "notification",
                &bind(http.notification_port),
                router,
                http.server,
            )
            .await?;
            this.notification = Some(Running { service, server });
        }
        if matches!(part, SyncPart::All | SyncPart::Order) {
            let mut http = http.clone();
            if let Some(inv) = &this.inventory {
                http.inventory_url = format!("http://{}", inv.server.addr());
            }
            if let Some(n) = &this.notification {
                http.notification_url = format!("http://{}", n.server.addr());
            }
            let mut transport: Arc<dyn Transport> = Arc::new(HttpTransport::sync_rest(&http)?);
            if prometheus.is_some() {
                transport = Arc::new(Metered::new(transport));
            }
            let outbox = outbox.ok_or(StartError::MissingStore {
                service: "order",
                store: "notification outbox",
            })?;
            let service = Arc::new(OrderService::new(
                transport,
                outbox,
                OrderOptions::from(&http),
            ));
            let retrier = service.clone();
            this.retrier = Some(BackgroundTask::spawn(|stop| {
                retrier.run_retrier(stop.into_stopped())
            }));
            if prometheus.is_some() {
                let sampled = service.clone();
                this.sampler = Some(BackgroundTask::spawn(|stop| {
                    sample_every(OUTBOX_SAMPLE, stop.into_stopped(), move || {
                        let service = sampled.clone();
                        async move {
                            match service.kept_calls().await {
                                Ok(n) => campusfood_core::metric::outbox_size(n),
                                Err(e) => tracing::debug!(error = %e, "outbox size unavailable"),
                            }
                        }
                    })
                }));
            }
            let router = with_metrics(
                order_router(service.clone(), http.max_body_bytes),
                prometheus,
            );
            let server =
                Server::start_with("order", &bind(http.order_port), router, http.server).await?;
            this.order = Some(Running { service, server });
        }
        Ok(this)
    }

    /// Stops everything: order first (no new downstream calls), then the
    /// services it calls.
    pub async fn stop(self) {
        if let Some(o) = self.order {
            o.server.stop().await;
        }
        if let Some(retrier) = self.retrier {
            let _ = retrier.stop().await;
        }
        if let Some(sampler) = self.sampler {
            let _ = sampler.stop().await;
        }
        if let Some(n) = self.notification {
            n.server.stop().await;
        }
        if let Some(i) = self.inventory {
            i.server.stop().await;
        }
    }
}
