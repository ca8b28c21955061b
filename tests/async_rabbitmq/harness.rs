//! One harness, three buses: the same scenarios run over the in-memory
//! transport, over a real RabbitMQ broker (unique exchange and queue names
//! per test, so tests run in parallel on one broker) and over a real Kafka
//! broker (unique topics and groups per test).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood::core::config::{KafkaConfig, RabbitConfig};
use campusfood::core::ledger::MemoryLedger;
use campusfood::core::order::OrderStatus;
use campusfood::core::transport::{DeadLetter, DeadLetters, Route, Transport};
use campusfood::core::{Config, Item, OrderId};
use campusfood::services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood::services::stores::MemoryOrderStore;
use campusfood::services::stores::MemoryProcessedIds;
use campusfood::transport::kafka::KafkaTransport;
use campusfood::transport::memory::MemoryTransport;
use campusfood::transport::rabbitmq::RabbitTransport;
use serde_json::Value;

pub const KAFKA_DOWN: &str =
    "Kafka is not running on 127.0.0.1:9092: start it with `scripts/brokers.sh up kafka`";
pub const RABBITMQ_DOWN: &str =
    "RabbitMQ is not running on 127.0.0.1:5672: start it with `scripts/brokers.sh up rabbitmq`";
const SPARE_DOWN: &str = "the spare RabbitMQ node is not running on 127.0.0.1:5673: start it \
    with `scripts/brokers.sh up rabbitmq-spare`";

/// What a scenario needs of a bus beyond the `Transport` trait.
#[async_trait]
pub trait Bus: Send + Sync {
    /// The transport services get.
    fn transport(&self) -> Arc<dyn Transport>;
    /// Messages of `route` waiting for its default consumer.
    async fn depth(&self, route: &Route) -> u64;
    /// Dead letters of `route`.
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter>;
    /// Replays dead letter `id` of `route`.
    async fn replay(&self, route: &Route, id: &str) -> bool;
}

pub struct Memory(pub MemoryTransport);

#[async_trait]
impl Bus for Memory {
    fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.0.clone())
    }
    async fn depth(&self, route: &Route) -> u64 {
        self.0.depth(route, None)
    }
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter> {
        self.0.dead_letters(route, 100).await.unwrap()
    }
    async fn replay(&self, route: &Route, id: &str) -> bool {
        self.0.replay(route, id).await.unwrap()
    }
}

pub struct Rabbit(pub Arc<RabbitTransport>);

#[async_trait]
impl Bus for Rabbit {
    fn transport(&self) -> Arc<dyn Transport> {
        self.0.clone()
    }
    async fn depth(&self, route: &Route) -> u64 {
        let c = self.0.config();
        let queue = if *route == Route::ORDER_PLACED {
            &c.reserve_queue
        } else {
            &c.notify_queue
        };
        u64::from(self.0.queue_depth(queue).await.unwrap())
    }
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter> {
        self.0.dead_letters(route, 100).await.unwrap()
    }
    async fn replay(&self, route: &Route, id: &str) -> bool {
        self.0.replay(route, id).await.unwrap()
    }
}

/// Kafka, with failures on a topic of their own
/// ([`KafkaConfig::failed_topic`]): the flow needs distinct routes.
pub struct Kafka(pub KafkaTransport);

#[async_trait]
impl Bus for Kafka {
    fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.0.clone())
    }
    /// The lag of the route's default group.
    async fn depth(&self, route: &Route) -> u64 {
        let topic = self.0.topic_for(route).unwrap();
        let lag = self.0.lag(&self.0.config().default_group, &topic).await;
        lag.unwrap()
            .iter()
            .map(|p| u64::try_from(p.lag).unwrap_or(0))
            .sum()
    }
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter> {
        self.0.dead_letters(route, 100).await.unwrap()
    }
    async fn replay(&self, route: &Route, id: &str) -> bool {
        self.0.replay(route, id).await.unwrap()
    }
}

pub struct App {
    pub config: Config,
    pub options: AsyncOptions,
    pub bus: Box<dyn Bus>,
    pub stores: AsyncStores,
    pub client: reqwest::Client,
    /// Deletes the test's queues and exchanges when the app is dropped.
    _leftovers: Option<Leftovers>,
    /// Deletes the test's topics when the app is dropped.
    _topics: Option<campusfood_testkit::CleanUp>,
}

/// The management API of the broker `scripts/brokers.sh up rabbitmq` starts.
use campusfood_testkit::rabbitmq::{MANAGEMENT, unique_prefix};

/// The spare RabbitMQ node (`scripts/brokers.sh up rabbitmq-spare`): a
/// broker of its own for the test that restarts one.
pub const SPARE_AMQP: &str = "amqp://guest:guest@127.0.0.1:5673/%2f";
/// The spare node's management API.
pub const SPARE_MANAGEMENT: &str = "http://127.0.0.1:15673/api";

/// When dropped, deletes every queue and exchange whose name starts with
/// the prefix: also after a failed assertion, so that runs do not pile up
/// durable queues the broker must recover at its next start. (Leftovers
/// of a killed test run expire through the broker policy on `cftest-`
/// queues that `scripts/brokers.sh up` sets.)
pub struct Leftovers {
    management: &'static str,
    prefix: String,
}

impl Leftovers {
    /// For the names of `config`, all under one `with_prefix` prefix, on
    /// the main node or the spare one.
    pub fn of(config: &RabbitConfig) -> Self {
        let management = if config.url == SPARE_AMQP {
            SPARE_MANAGEMENT
        } else {
            MANAGEMENT
        };
        let (prefix, _) = config
            .orders_exchange
            .split_once('.')
            .expect("a prefixed test configuration");
        assert!(prefix.starts_with("cftest-"), "{prefix}: not a test prefix");
        Self {
            management,
            prefix: format!("{prefix}."),
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let (management, prefix) = (self.management, std::mem::take(&mut self.prefix));
        let deleted = campusfood_testkit::on_own_runtime(async move {
            campusfood_testkit::rabbitmq::delete_prefixed(management, &prefix).await
        });
        if !matches!(deleted, Some(Some(()))) {
            eprintln!(
                "could not delete the test's RabbitMQ queues; the broker policy expires them"
            );
        }
    }
}

pub fn base(stock: &str) -> (Config, AsyncStores) {
    let config = Config {
        stock: stock.parse().unwrap(),
        ..Config::default()
    };
    let stores = AsyncStores {
        ledger: Some(Arc::new(MemoryLedger::new(&config.stock))),
        orders: Some(Arc::new(MemoryOrderStore::new())),
        notified: Some(Arc::new(MemoryProcessedIds::new())),
    };
    (config, stores)
}

fn options(config: &Config) -> AsyncOptions {
    let mut options = AsyncOptions::from_config(config);
    options.order_port = 0;
    options.inventory_port = 0;
    options.retry_delay = Duration::from_millis(50);
    options.max_attempts = 3;
    options.relay_poll = Duration::from_millis(20);
    options
}

pub fn memory(stock: &str) -> App {
    let (config, stores) = base(stock);
    App {
        options: options(&config),
        config,
        bus: Box::new(Memory(MemoryTransport::new())),
        stores,
        client: reqwest::Client::new(),
        _leftovers: None,
        _topics: None,
    }
}

/// An app over Kafka: every topic and group of the test's own, failures on
/// a topic of their own.
pub async fn kafka(test: &str, stock: &str) -> App {
    kafka_with(test, stock, Some("inventory-failed")).await
}

/// An app over Kafka with Part C's one inventory topic.
pub async fn kafka_with_one_inventory_topic(test: &str, stock: &str) -> App {
    kafka_with(test, stock, None).await
}

async fn kafka_with(test: &str, stock: &str, failed_topic: Option<&str>) -> App {
    let (config, stores) = base(stock);
    let suffix = campusfood_testkit::unique(test);
    let kafka = KafkaConfig {
        failed_topic: failed_topic.map(str::to_owned),
        request_timeout: Duration::from_secs(5),
        commit_interval: Duration::from_millis(200),
        ..KafkaConfig::default()
    }
    .with_suffix(&suffix);
    let transport = match KafkaTransport::connect(&kafka).await {
        Ok(t) => t,
        Err(e) => panic!("{KAFKA_DOWN} ({e})"),
    };
    let mut options = options(&config);
    options.status_group = format!("orders-status-{suffix}");
    App {
        options,
        config,
        bus: Box::new(Kafka(transport.clone())),
        stores,
        client: reqwest::Client::new(),
        _leftovers: None,
        _topics: Some(campusfood_testkit::CleanUp::new(
            "the test's topics",
            async move {
                let topics = transport.topics_containing(&suffix).await?;
                transport.delete_topics(&topics).await
            },
        )),
    }
}

/// RabbitMQ settings for one test: every name under a unique prefix.
pub fn rabbit_config(test: &str) -> RabbitConfig {
    RabbitConfig::with_prefix(&unique_prefix(test))
}

pub async fn connect_rabbit(config: &RabbitConfig) -> Arc<RabbitTransport> {
    match RabbitTransport::connect(config).await {
        Ok(t) => Arc::new(t),
        Err(e) if config.url == SPARE_AMQP => panic!("{SPARE_DOWN} ({e})"),
        Err(e) => panic!("{RABBITMQ_DOWN} ({e})"),
    }
}

pub async fn rabbitmq(test: &str, stock: &str) -> App {
    let (mut config, stores) = base(stock);
    config.rabbitmq = rabbit_config(test);
    rabbitmq_with(config, stores).await
}

/// An app over RabbitMQ with `config` as given (e.g. a URL through a
/// cuttable proxy).
pub async fn rabbitmq_with(config: Config, stores: AsyncStores) -> App {
    let transport = connect_rabbit(&config.rabbitmq).await;
    App {
        options: options(&config),
        _leftovers: Some(Leftovers::of(&config.rabbitmq)),
        config,
        bus: Box::new(Rabbit(transport)),
        stores,
        client: reqwest::Client::new(),
        _topics: None,
    }
}

impl App {
    /// Inventory's ledger (every harness gives one).
    pub fn ledger(&self) -> &Arc<dyn campusfood::core::ledger::InventoryLedger> {
        self.stores
            .ledger
            .as_ref()
            .expect("the harness gives a ledger")
    }

    /// The order store (every harness gives one).
    pub fn orders(&self) -> &Arc<dyn campusfood::services::stores::OrderStore> {
        self.stores
            .orders
            .as_ref()
            .expect("the harness gives an order store")
    }

    pub async fn start(&self, part: AsyncPart) -> AsyncSystem {
        self.start_on(part, self.bus.transport()).await
    }

    pub async fn start_on(&self, part: AsyncPart, transport: Arc<dyn Transport>) -> AsyncSystem {
        AsyncSystem::start(
            &self.config,
            part,
            &self.options,
            transport,
            self.stores.clone(),
        )
        .await
        .unwrap()
    }

    pub async fn order(&self, system: &AsyncSystem, body: Value) -> (u16, Value) {
        let url = format!(
            "http://{}/order",
            system.order.as_ref().unwrap().server.addr()
        );
        let resp = self.client.post(url).json(&body).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    pub async fn status(&self, id: &str) -> OrderStatus {
        self.orders()
            .get(&OrderId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .status
    }

    pub async fn stock(&self, item: &str) -> u64 {
        self.ledger().stock().await.unwrap()[&Item::parse(item).unwrap()]
    }

    /// Waits until every order of `ids` is notified.
    pub async fn all_notified(&self, ids: &[String], deadline: Duration) {
        for id in ids {
            until("notified", deadline, async || {
                self.status(id).await == OrderStatus::Notified
            })
            .await;
        }
    }
}

pub use campusfood_testkit::until;
