//! Part A as an experiment drives it: a [`PartA`] handle (started in this
//! process, or running elsewhere) with its [`OrderClient`], and inventory
//! outages ([`OutageKind`]). The load it is driven with is in
//! [`load`](crate::load).

use std::net::SocketAddr;
use std::sync::Arc;

use campusfood_core::config::HttpConfig;
use campusfood_core::ledger::{InventoryLedger, ReserveOutcome};
use campusfood_core::{Config, OrderId};
use campusfood_services::inventory::InventoryService;
use campusfood_services::server::{Running, Server, StartError, inventory_router};
use campusfood_services::stores::Stores;
use campusfood_services::sync_rest::{SyncPart, SyncRest, SyncStores};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{LabError, store_err};
use crate::load::{OrderClient, Sample};
use crate::outcomes::OrderReading;
use crate::sends::SendLog;
use crate::settings::Settings;

/// Part A, as one experiment uses it.
#[derive(Debug)]
pub struct PartA {
    client: OrderClient,
    /// The services, when this process runs them.
    system: Option<SyncRest>,
    /// Their configuration, when this process runs them.
    config: Option<Config>,
    /// Inventory's ledger and the notifier's sent-set, when this process
    /// runs them: what became of each order.
    readers: Option<(Arc<dyn InventoryLedger>, Arc<SendLog>)>,
    /// Holds the ledger and outbox files; removed on drop.
    _data: Option<tempfile::TempDir>,
}

impl PartA {
    /// Starts all three services on port 0 with the ledger in a fresh temp
    /// dir, plenty of stock of `settings.item`, and `tune` applied to the
    /// HTTP settings.
    pub async fn start(
        settings: &Settings,
        tune: impl FnOnce(&mut HttpConfig),
    ) -> Result<Self, LabError> {
        let data = tempfile::Builder::new()
            .prefix("campusfood-lab-")
            .tempdir()
            .map_err(|source| LabError::Io {
                what: "creating a temp data dir".to_owned(),
                source,
            })?;
        let stock = format!("{}=100000000", settings.item)
            .parse()
            .map_err(|e| LabError::Setting {
                key: "item".to_owned(),
                message: format!("{e}"),
            })?;
        let mut config = Config {
            data_dir: data.path().to_path_buf(),
            stock,
            ..Config::default()
        };
        config.http.order_port = 0;
        config.http.inventory_port = 0;
        config.http.notification_port = 0;
        tune(&mut config.http);
        let mut stores = SyncStores::open(
            &Stores::open(&config).await.map_err(StartError::from)?,
            &config,
            SyncPart::All,
        )
        .await?;
        let sends = stores.notified.take().map(|n| Arc::new(SendLog::new(n)));
        stores.notified = sends.clone().map(|s| s as _);
        let readers = stores.ledger.clone().zip(sends);
        let system = SyncRest::start_with_stores(&config, SyncPart::All, stores).await?;
        let addr = |s: Option<SocketAddr>| s.map(|a| format!("http://{a}"));
        let order_url = addr(system.order.as_ref().map(|o| o.server.addr()));
        let inventory_url = addr(system.inventory.as_ref().map(|i| i.server.addr()));
        let order_url = order_url.ok_or_else(|| LabError::Unavailable {
            needs: "an order service".to_owned(),
            hint: "SyncRest started without one".to_owned(),
        })?;
        let client = OrderClient::new(&order_url, inventory_url.as_deref(), &settings.item)?;
        tracing::info!(%order_url, "Part A started in process");
        Ok(Self {
            client,
            system: Some(system),
            config: Some(config),
            readers,
            _data: Some(data),
        })
    }

    /// Services running elsewhere; orders ask for `item`.
    pub fn external(
        order_url: &str,
        inventory_url: Option<&str>,
        item: &str,
    ) -> Result<Self, LabError> {
        Ok(Self {
            client: OrderClient::new(order_url, inventory_url, item)?,
            system: None,
            config: None,
            readers: None,
            _data: None,
        })
    }

    /// The client.
    pub fn client(&self) -> &OrderClient {
        &self.client
    }

    /// The in-process services, if this process runs them.
    pub fn system(&self) -> Option<&SyncRest> {
        self.system.as_ref()
    }

    /// Their configuration, if this process runs them.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// What became of each order of `samples`, by id (`request #i`, from
    /// 1, for an order refused without one): its answer, the ledger's
    /// decision, the confirmations the notifier sent. Without in-process
    /// services only the answers are known: a 201 is `accepted`.
    pub async fn readings(
        &self,
        samples: &[Sample],
    ) -> Result<Vec<(String, OrderReading)>, LabError> {
        let mut out = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let mut r = OrderReading {
                accepted: s.ok(),
                settle: self.readers.is_some(),
                ..OrderReading::default()
            };
            let Some(id) = s.order_id.clone() else {
                out.push((format!("request #{}", i + 1), r));
                continue;
            };
            if let Some((ledger, sends)) = &self.readers {
                let oid = OrderId::parse(&id).map_err(|e| store_err("order id")(e.to_string()))?;
                let record = ledger
                    .reservation(&oid)
                    .await
                    .map_err(|e| store_err("reading a reservation")(e.to_string()))?;
                match record.map(|r| r.outcome) {
                    Some(ReserveOutcome::Reserved { .. }) => r.reserved = 1,
                    Some(_) => r.refused = true,
                    None => {}
                }
                r.notified = sends.new_records(&id);
            }
            out.push((id, r));
        }
        Ok(out)
    }

    /// Takes the inventory service down, the `kind` way, until
    /// [`end_outage`](Self::end_outage). Needs in-process services.
    pub async fn inventory_outage(&mut self, kind: OutageKind) -> Result<Outage, LabError> {
        let running = self
            .system
            .as_mut()
            .and_then(|s| s.inventory.take())
            .ok_or_else(|| LabError::Unavailable {
                needs: "an in-process inventory service".to_owned(),
                hint: "it stops and restarts inventory; run without --order-url".to_owned(),
            })?;
        let addr = running.server.addr();
        running.server.stop().await;
        let black_hole = match kind {
            OutageKind::Refused => None,
            OutageKind::Unresponsive => Some(black_hole(addr).await?),
        };
        tracing::info!(?kind, %addr, "inventory down");
        Ok(Outage {
            kind,
            addr,
            service: running.service,
            black_hole,
        })
    }

    /// Brings inventory back on the same address, with the same ledger.
    pub async fn end_outage(&mut self, outage: Outage) -> Result<(), LabError> {
        if let Some(hole) = outage.black_hole {
            // Dropping the task drops the listener and every accepted
            // connection: the callers waiting on them see a reset.
            hole.abort();
            let _ = hole.await;
        }
        let max_body = self
            .config
            .as_ref()
            .map_or(HttpConfig::default().max_body_bytes, |c| {
                c.http.max_body_bytes
            });
        let router = inventory_router(outage.service.clone(), max_body);
        let server = Server::start("inventory", &outage.addr.to_string(), router).await?;
        if let Some(system) = self.system.as_mut() {
            system.inventory = Some(Running {
                service: outage.service,
                server,
            });
        }
        tracing::info!(addr = %outage.addr, "inventory back");
        Ok(())
    }

    /// Stops the in-process services (waits for in-flight requests).
    pub async fn stop(self) {
        if let Some(system) = self.system {
            system.stop().await;
        }
    }
}

/// How inventory is down during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageKind {
    /// The process is gone: connections are refused at once.
    Refused,
    /// The host is up but hangs: connections are accepted and never
    /// answered (a stuck process, a full accept queue, a dead network
    /// path), so every caller waits for its timeout.
    Unresponsive,
}

impl OutageKind {
    /// A short name for tables and keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Unresponsive => "unresponsive",
        }
    }
}

/// An ongoing inventory outage; end it with [`PartA::end_outage`].
#[derive(Debug)]
pub struct Outage {
    /// How inventory is down.
    pub kind: OutageKind,
    addr: SocketAddr,
    service: Arc<InventoryService>,
    black_hole: Option<JoinHandle<()>>,
}

/// A listener on `addr` that accepts connections and never answers.
async fn black_hole(addr: SocketAddr) -> Result<JoinHandle<()>, LabError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| LabError::Io {
            what: format!("binding the unresponsive stand-in on {addr}"),
            source,
        })?;
    Ok(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    }))
}
