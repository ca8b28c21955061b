//! Shared helpers: a Part C harness on its own topics, groups and data
//! directory; a read-committed reader of any topic; waiting on conditions
//! with a deadline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use campusfood::core::Config;
use campusfood::core::OrderId;
use campusfood::core::config::KafkaConfig;
use campusfood::core::events::{InventoryEvent, OrderEvent};
use campusfood::core::transport::{
    Delivery, Disposition, Handler, Message, Route, SubscribeOptions, Subscription, Transport,
};
use campusfood::services::streaming_kafka::producer::{OrderGenerator, publish_orders};
use campusfood::services::streaming_kafka::{
    ConnectRetry, StreamingOptions, StreamingPart, StreamingSystem, connect, item_stock,
};
use campusfood::transport::kafka::KafkaTransport;

pub const NOT_RUNNING: &str =
    "Kafka is not running on 127.0.0.1:9092: start it with `scripts/brokers.sh up kafka`";
/// The longest any wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(45);
/// Stock of each item: ample, so only injected failures fail.
pub const ITEM_STOCK: u64 = 1_000_000;
/// Items the producer draws from.
pub const ITEMS: u32 = 50;

pub use campusfood_testkit::{init_logging, unique, until};

/// Kafka settings whose topics and groups carry `suffix`.
pub fn kafka_config(suffix: &str) -> KafkaConfig {
    KafkaConfig {
        request_timeout: Duration::from_secs(5),
        commit_interval: Duration::from_millis(200),
        ..KafkaConfig::default()
    }
    .with_suffix(suffix)
}

/// Connects, failing the test with how to start Kafka when it is absent.
pub async fn transport(config: &KafkaConfig) -> KafkaTransport {
    let once = ConnectRetry {
        attempts: 1,
        ..ConnectRetry::default()
    };
    match connect(config, &once).await {
        Ok(t) => t,
        Err(e) => panic!("{NOT_RUNNING} ({e})"),
    }
}

/// Part C on its own topics, groups and data directory.
pub struct Harness {
    pub config: Config,
    pub options: StreamingOptions,
    pub transport: KafkaTransport,
    pub generator: OrderGenerator,
    _data: Option<tempfile::TempDir>,
    /// Set by the process that owns the topics (not a child sharing them).
    _leftovers: Option<TopicLeftovers>,
}

/// When dropped, deletes the broker's topics whose names contain the
/// suffix: also after a failed assertion, so that runs do not pile up
/// partitions the broker keeps files open for.
pub struct TopicLeftovers {
    transport: KafkaTransport,
    suffix: String,
}

impl Drop for TopicLeftovers {
    fn drop(&mut self) {
        let (transport, suffix) = (self.transport.clone(), std::mem::take(&mut self.suffix));
        let deleted = campusfood_testkit::on_own_runtime(async move {
            let topics = transport.topics_containing(&suffix).await?;
            transport.delete_topics(&topics).await
        });
        if !matches!(deleted, Some(Ok(()))) {
            eprintln!("could not delete the test's topics: {deleted:?}");
        }
    }
}

pub async fn harness(test: &str) -> Harness {
    let suffix = unique(test);
    let data = tempfile::tempdir().unwrap();
    let mut h = harness_in(&suffix, data.path().to_path_buf()).await;
    h._data = Some(data);
    h.delete_topics_when_dropped(&suffix);
    h
}

/// The harness of topics `suffix`, with the ledger in `data_dir` (a child
/// process builds the same one as its parent).
pub async fn harness_in(suffix: &str, data_dir: PathBuf) -> Harness {
    init_logging();
    let mut config = Config {
        data_dir,
        stock: item_stock(ITEMS, ITEM_STOCK).unwrap(),
        kafka: kafka_config(suffix),
        ..Config::default()
    };
    config.http.host = "127.0.0.1".to_owned();
    let mut options = StreamingOptions::default();
    options.inventory = options
        .inventory
        .in_group(config.kafka.inventory_group.clone());
    options.inventory.retry_delay = Duration::from_millis(50);
    options.analytics.group = config.kafka.analytics_group.clone();
    options.analytics.http_addr = "127.0.0.1:0".to_owned();
    options.analytics.report_interval = Duration::ZERO;
    let transport = transport(&config.kafka).await;
    Harness {
        config,
        options,
        transport,
        generator: OrderGenerator::new(ITEMS, 5).unwrap(),
        _data: None,
        _leftovers: None,
    }
}

impl Harness {
    /// Deletes the topics named with `suffix` when the harness is dropped.
    pub fn delete_topics_when_dropped(&mut self, suffix: &str) {
        self._leftovers = Some(TopicLeftovers {
            transport: self.transport.clone(),
            suffix: suffix.to_owned(),
        });
    }

    pub async fn start(&self, part: StreamingPart) -> StreamingSystem {
        StreamingSystem::start(&self.config, part, &self.options, &self.transport)
            .await
            .unwrap()
    }

    /// Produces `n` fresh orders as one burst and returns them.
    pub async fn produce(&self, n: usize) -> Vec<OrderEvent> {
        let orders = self.generator.orders(n);
        assert_eq!(
            publish_orders(&self.transport, &orders, 0).await.unwrap(),
            n
        );
        orders
    }

    /// Publishes a raw record (any bytes) to `route`'s topic.
    pub async fn publish_raw(&self, route: &Route, key: &str, body: &[u8]) {
        let message = Message {
            key: Some(key.to_owned()),
            body: body.to_vec().into(),
            ..Message::default()
        };
        self.transport.publish(route, message).await.unwrap();
    }

    /// A read-committed reader of `route`'s topic from the beginning, in a
    /// group of its own.
    pub async fn reader(&self, route: &Route) -> Reader {
        let records = Arc::new(Records::default());
        let options = SubscribeOptions {
            group: Some(format!("reader-{}", unique("r"))),
            ..SubscribeOptions::default()
        };
        let subscription = self
            .transport
            .subscribe(route, records.clone(), options)
            .await
            .unwrap();
        Reader {
            records,
            _subscription: subscription,
        }
    }

    pub fn order_topic(&self) -> &str {
        &self.config.kafka.order_topic
    }

    pub fn inventory_topic(&self) -> &str {
        &self.config.kafka.inventory_topic
    }

    pub fn both_topics(&self) -> Vec<String> {
        vec![
            self.order_topic().to_owned(),
            self.inventory_topic().to_owned(),
        ]
    }

    /// Total lag of `group` on `topic`.
    pub async fn lag(&self, group: &str, topic: &str) -> i64 {
        self.transport
            .lag(group, topic)
            .await
            .unwrap()
            .iter()
            .map(|p| p.lag)
            .sum()
    }
}

/// Every record a [`Reader`] got.
#[derive(Default)]
pub struct Records(Mutex<Vec<Message>>);

#[async_trait]
impl Handler for Records {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        self.0.lock().unwrap().push(delivery.message);
        Disposition::Ack
    }
}

pub struct Reader {
    records: Arc<Records>,
    _subscription: Subscription,
}

impl Reader {
    pub fn count(&self) -> usize {
        self.records.0.lock().unwrap().len()
    }

    pub fn messages(&self) -> Vec<Message> {
        self.records.0.lock().unwrap().clone()
    }

    /// The inventory events read, by order id (more than one per id would
    /// be a duplicate).
    pub fn inventory_events(&self) -> HashMap<OrderId, Vec<InventoryEvent>> {
        let mut by_order: HashMap<OrderId, Vec<InventoryEvent>> = HashMap::new();
        for m in self.messages() {
            let e: InventoryEvent = m.decode().unwrap();
            assert_eq!(
                m.key.as_deref(),
                Some(e.order_id.as_str()),
                "keyed by order id"
            );
            by_order.entry(e.order_id.clone()).or_default().push(e);
        }
        by_order
    }
}

/// Runs Kafka's own `kafka-consumer-groups` with `args`; returns stdout.
pub fn kafka_consumer_groups(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-consumer-groups");
    let out = std::process::Command::new(script)
        .args(["--bootstrap-server", "127.0.0.1:9092"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-consumer-groups {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The summed LAG column of `kafka-consumer-groups --describe --group`.
pub fn cli_lag(group: &str) -> i64 {
    let out = kafka_consumer_groups(&["--describe", "--group", group]);
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .by_ref()
        .find(|l| l.starts_with("GROUP"))
        .unwrap_or_else(|| panic!("no header in {out}"))
        .split_whitespace()
        .collect();
    let col = header.iter().position(|h| *h == "LAG").unwrap();
    lines
        .map(|l| l.split_whitespace().nth(col).unwrap_or("-"))
        .filter_map(|v| v.parse::<i64>().ok())
        .sum()
}
