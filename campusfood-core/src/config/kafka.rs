//! Part C settings: bootstrap servers, topics, groups and the analytics
//! endpoint.

use std::time::Duration;

/// Kafka settings and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// `ORDER_TOPIC`.
    pub order_topic: String,
    /// Partitions of the order topic.
    pub order_partitions: i32,
    /// `INVENTORY_TOPIC`.
    pub inventory_topic: String,
    /// Partitions of the inventory topic.
    pub inventory_partitions: i32,
    /// The topic of [`Route::INVENTORY_FAILED`](crate::transport::Route::INVENTORY_FAILED)
    /// when it is not [`inventory_topic`](Self::inventory_topic): `None`
    /// (Part C's contract: one inventory topic, `status: Success|Failure`)
    /// or a topic of its own, so that routes stay distinct (Part B's flow
    /// over Kafka).
    pub failed_topic: Option<String>,
    /// The topic of [`Route::ORDER_NOTIFIED`](crate::transport::Route::ORDER_NOTIFIED).
    pub notified_topic: String,
    /// Consumer group of the inventory consumer.
    pub inventory_group: String,
    /// Consumer group of the analytics consumer.
    pub analytics_group: String,
    /// Analytics `/metrics` port (`HTTP_PORT`).
    pub analytics_port: u16,
    /// The group a subscriber joins when it names none, so that every
    /// subscription is resumable from committed offsets.
    pub default_group: String,
    /// `AUTO_OFFSET_RESET`: where a group with no committed offset starts,
    /// `earliest` (replay what the topic retains) or `latest` (only new
    /// records).
    pub auto_offset_reset: String,
    /// `GROUP_INSTANCE_ID`: static membership, so a restarted consumer gets
    /// its partitions back without a rebalance. `None`: dynamic membership.
    pub group_instance_id: Option<String>,
    /// Partitions of topics created on first use (routes named after a
    /// topic, dead-letter topics).
    pub default_partitions: i32,
    /// How long to wait for the broker when connecting and for admin calls
    /// (metadata, topic creation, offsets).
    pub request_timeout: Duration,
    /// How often a consumer commits the offsets of records it has finished
    /// (it also commits when partitions are revoked and when it stops).
    pub commit_interval: Duration,
    /// `session.timeout.ms`: how long a consumer that stopped heart-beating
    /// (a killed process) keeps its partitions before the group hands them
    /// to the others. librdkafka's 45 s default would stall a killed
    /// instance's share of the stream that long.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`: how soon a member hears that its group
    /// rebalances. When a second consumer (another worker, another
    /// instance) joins, the first one keeps every partition until its
    /// next heartbeat: at librdkafka's 3 s default, a 10k backlog is
    /// drained by one worker while five wait.
    pub heartbeat_interval: Duration,
    /// Longest a stopping subscription waits for the handler of the record
    /// in flight; a handler still running then is abandoned, its record
    /// left uncommitted for the group's next consumer.
    pub drain_timeout: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            order_topic: "order-events".to_owned(),
            order_partitions: 6,
            inventory_topic: "inventory-events".to_owned(),
            inventory_partitions: 3,
            failed_topic: None,
            notified_topic: "order.notified".to_owned(),
            inventory_group: "inventory-consumer".to_owned(),
            analytics_group: "analytics-consumer".to_owned(),
            analytics_port: 8080,
            default_group: "campusfood".to_owned(),
            auto_offset_reset: "earliest".to_owned(),
            group_instance_id: None,
            default_partitions: 3,
            request_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl KafkaConfig {
    /// The analytics consumer's Prometheus text (its
    /// [`HttpConfig::METRICS_PATH`](crate::config::HttpConfig::METRICS_PATH)
    /// is the contract's JSON).
    pub const PROMETHEUS_PATH: &'static str = "/prometheus";

    /// The same settings with `suffix` appended to every topic and group
    /// name (`order-events` → `order-events-<suffix>`), so tests and
    /// parallel runs on one broker never see each other's records.
    pub fn with_suffix(mut self, suffix: &str) -> Self {
        for name in [
            &mut self.order_topic,
            &mut self.inventory_topic,
            &mut self.inventory_group,
            &mut self.analytics_group,
            &mut self.default_group,
            &mut self.notified_topic,
        ]
        .into_iter()
        .chain(self.failed_topic.as_mut())
        {
            name.push('-');
            name.push_str(suffix);
        }
        self
    }
}
