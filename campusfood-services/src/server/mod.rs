//! What every architecture's HTTP side shares: the [`Server`] each service
//! runs on (port 0 works; the bound address is read back), the [`Running`]
//! pair of a service and its server, [`StartError`], and the routes the
//! services answer alike — `/health`, `/openapi.json`, `/configure`,
//! inventory's router and `GET /orders/{id}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use campusfood_core::config::ServerLimits;
use campusfood_core::ledger::LedgerError;
use campusfood_core::outbox::OutboxError;
use campusfood_core::task::BackgroundTask;
use campusfood_core::transport::TransportError;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::stores::StoresError;

mod routes;

pub(crate) use routes::configure_route;
pub use routes::{
    OrderLookup, get_order, get_timeline, health_route, inventory_router, openapi_route,
    order_routes,
};

/// Why a service could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    Store(#[from] crate::stores::StoreError),
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

/// An HTTP server running on its own task, holding its clients to
/// [`ServerLimits`], timing every handler
/// ([`time_handlers`](crate::metrics::time_handlers)).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: BackgroundTask<std::io::Result<()>>,
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
        let router = crate::metrics::time_handlers(router);
        let task = BackgroundTask::spawn(|stop| {
            campusfood_transport::http::serve(listener, router, limits, stop.into_stopped())
        });
        tracing::info!(service, %addr, "listening");
        Ok(Self {
            addr,
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
    pub async fn stop(self) {
        match self.task.stop_within(self.stop_timeout * 2).await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Some(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            None => {
                tracing::warn!(addr = %self.addr, "server did not stop in time; aborted it");
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
