//! Part A assembled: bind the three services, run them, stop them. The
//! `sync_rest` example is a thin shell over [`SyncRest::start`]; tests call
//! it with port 0 and read the bound addresses back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use campusfood_core::Config;
use campusfood_core::config::ServerLimits;
use campusfood_core::fault::FaultInjector;
use campusfood_core::ledger::{InventoryLedger, LedgerError};
use campusfood_core::outbox::{Outbox, OutboxError};
use campusfood_core::transport::TransportError;
use campusfood_transport::http::HttpTransport;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::inventory::InventoryService;
use crate::notification::NotificationService;
use crate::processed::ProcessedIds;
use crate::server::routes::{inventory_router, notification_router, order_router};
use crate::stores::{Stores, StoresError, names};
use crate::sync_rest::order::{OrderOptions, OrderService};

/// Why Part A could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A port could not be bound (in use, or not permitted).
    #[error("{service}: cannot listen on {addr}: {source}")]
    Bind {
        /// Which service.
        service: &'static str,
        /// The address tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A service's store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::order_store::StoreError),
    /// A transport could not be set up (HTTP client, broker subscription).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stores' backend (the shared database) could not be used.
    #[error(transparent)]
    Stores(#[from] StoresError),
    /// A service needs a store it was not given.
    #[error("{service} needs its {store}, which was not given")]
    MissingStore {
        /// Which service.
        service: &'static str,
        /// Which store.
        store: &'static str,
    },
}

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

/// An HTTP server running on its own task, holding its clients to
/// [`ServerLimits`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    stop_timeout: Duration,
}

impl Server {
    /// Binds `addr` (`host:port`; port 0 picks a free one) and serves
    /// `router` there, with the default [`ServerLimits`].
    pub async fn start(
        service: &'static str,
        addr: &str,
        router: axum::Router,
    ) -> Result<Self, StartError> {
        Self::start_with(service, addr, router, ServerLimits::default()).await
    }

    /// Like [`start`](Self::start), with `limits`.
    pub async fn start_with(
        service: &'static str,
        addr: &str,
        router: axum::Router,
        limits: ServerLimits,
    ) -> Result<Self, StartError> {
        let bind_err = |source| StartError::Bind {
            service,
            addr: addr.to_owned(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let (stop, mut rx) = watch::channel(false);
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(campusfood_transport::http::serve(
            listener, router, limits, shutdown,
        ));
        tracing::info!(service, %addr, "listening");
        Ok(Self {
            addr,
            stop,
            task,
            stop_timeout: limits.stop_timeout,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish for up to
    /// [`ServerLimits::stop_timeout`], closes the connections still open
    /// after that, and returns. (Should the server not end within twice
    /// that — a handler blocking its thread — its task is aborted.)
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.stop_timeout * 2, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!(addr = %self.addr, "server did not stop in time; aborting it");
                self.task.abort();
            }
        }
    }
}

/// A running service and its server.
#[derive(Debug)]
pub struct Running<S> {
    /// The service, for direct calls and inspection.
    pub service: Arc<S>,
    /// Its HTTP server.
    pub server: Server,
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
    retrier: Option<(watch::Sender<bool>, JoinHandle<()>)>,
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
            this.ledger = Some(stores.ledger(names::SYNC_LEDGER, &config.stock).await?);
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
            this.notified = Some(stores.processed(names::SYNC_NOTIFIED)?);
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

    /// Like [`start`](Self::start), with the stores given: each is used
    /// when its service runs here (and must then be given).
    pub async fn start_with_stores(
        config: &Config,
        part: SyncPart,
        stores: SyncStores,
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
        };
        if matches!(part, SyncPart::All | SyncPart::Inventory) {
            let ledger = ledger.ok_or(StartError::MissingStore {
                service: "inventory",
                store: "ledger",
            })?;
            let service = Arc::new(InventoryService::new(
                ledger,
                Arc::new(FaultInjector::default()),
            ));
            let router = inventory_router(service.clone(), http.max_body_bytes);
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
            let router = notification_router(service.clone(), http.max_body_bytes);
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
            let transport = Arc::new(HttpTransport::sync_rest(&http)?);
            let outbox = outbox.ok_or(StartError::MissingStore {
                service: "order",
                store: "notification outbox",
            })?;
            let service = Arc::new(OrderService::new(
                transport,
                outbox,
                OrderOptions::from(&http),
            ));
            let (stop, mut rx) = watch::channel(false);
            let retrier = tokio::spawn(service.clone().run_retrier(async move {
                let _ = rx.wait_for(|s| *s).await;
            }));
            this.retrier = Some((stop, retrier));
            let router = order_router(service.clone(), http.max_body_bytes);
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
        if let Some((stop, task)) = self.retrier {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(n) = self.notification {
            n.server.stop().await;
        }
        if let Some(i) = self.inventory {
            i.server.stop().await;
        }
    }
}
