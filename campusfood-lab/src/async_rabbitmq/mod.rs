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
//!
//! # Layout
//! - here: the [`PartB`] handle — start, stop and restart services, cut
//!   the broker, queues and dead letters.
//! - `readers`: what an experiment reads of it — statuses, stock, the
//!   outbox, gauges ([`Gauge`](crate::gauge::Gauge)) and waits.
//! - `probe`: the [`Probe`] transport.

use std::sync::Arc;
use std::time::Duration;

use campusfood_core::config::RabbitConfig;
use campusfood_core::fault::FaultUpdate;
use campusfood_core::ledger::InventoryLedger;
use campusfood_core::transport::{DeadLetter, DeadLetters, Message, Route, Transport};
use campusfood_core::{Config, Item};
use campusfood_services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood_services::inventory::InventoryService;
use campusfood_services::server::StartError;
use campusfood_services::stores::OrderStore;
use campusfood_services::stores::{Stores, names};
use campusfood_testkit::Outage;
use campusfood_transport::rabbitmq::RabbitTransport;

use crate::error::{LabError, broker_err};
use crate::load::OrderClient;
use crate::sends::SendLog;
use crate::settings::Settings;

mod probe;
mod readers;

pub use probe::{Handled, Handling, Probe, order_of};

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
    /// Break the services on purpose: their consumers retry at once,
    /// ignoring `retry_delay` (see [`Probe::with_hot_requeue`]).
    pub hot_requeue: bool,
}

impl Default for PartBOptions {
    fn default() -> Self {
        Self {
            through_proxy: false,
            prefetch: campusfood_services::async_rabbitmq::DEFAULT_PREFETCH,
            max_attempts: 3,
            retry_delay: Duration::from_millis(100),
            hot_requeue: false,
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
    /// The notifier's sent-set (also in `stores`), counting the
    /// confirmations sent per order.
    sends: Arc<SendLog>,
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
            .ledger(
                names::ASYNC_LEDGER,
                &config.stock,
                config.rabbitmq.store_flush,
            )
            .await
            .map_err(StartError::from)?;
        let orders = embedded
            .order_store(names::ASYNC_ORDERS, config.rabbitmq.store_flush)
            .map_err(StartError::from)?;
        let sends = Arc::new(SendLog::new(
            embedded
                .processed(names::ASYNC_NOTIFIED, config.rabbitmq.store_flush)
                .map_err(StartError::from)?,
        ));
        let stores = AsyncStores {
            ledger: Some(ledger.clone()),
            orders: Some(orders.clone()),
            notified: Some(sends.clone()),
        };
        let probe = Arc::new(Probe::new(bus.clone()).with_hot_requeue(opts.hot_requeue));
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
            sends,
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
