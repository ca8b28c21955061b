//! Part C settings: bootstrap servers, topics, groups and the analytics
//! endpoint.

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
    /// Consumer group of the inventory consumer.
    pub inventory_group: String,
    /// Consumer group of the analytics consumer.
    pub analytics_group: String,
    /// Analytics `/metrics` port (`HTTP_PORT`).
    pub analytics_port: u16,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            order_topic: "order-events".to_owned(),
            order_partitions: 6,
            inventory_topic: "inventory-events".to_owned(),
            inventory_partitions: 3,
            inventory_group: "inventory-consumer".to_owned(),
            analytics_group: "analytics-consumer".to_owned(),
            analytics_port: 8080,
        }
    }
}
