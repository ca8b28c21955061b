//! Part B settings: the broker URL, service ports and the contract's
//! topology names.

/// RabbitMQ settings and topology names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitConfig {
    /// AMQP URL of the broker.
    pub url: String,
    /// OrderService (async) port.
    pub order_port: u16,
    /// InventoryService (async) port.
    pub inventory_port: u16,
    /// Exchange orders are published to (direct, durable).
    pub orders_exchange: String,
    /// Routing key of `OrderPlaced`.
    pub order_placed_key: String,
    /// Queue inventory consumes orders from.
    pub reserve_queue: String,
    /// Dead-letter exchange of the reserve queue.
    pub dead_letter_exchange: String,
    /// Dead-letter queue.
    pub dead_letter_queue: String,
    /// Exchange inventory outcomes are published to.
    pub inventory_exchange: String,
    /// Routing key of `InventoryReserved`.
    pub reserved_key: String,
    /// Routing key of `InventoryFailed`.
    pub failed_key: String,
    /// Queue notification consumes reservations from.
    pub notify_queue: String,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672".to_owned(),
            order_port: 8001,
            inventory_port: 5003,
            orders_exchange: "orders".to_owned(),
            order_placed_key: "order.placed".to_owned(),
            reserve_queue: "orders.reserve".to_owned(),
            dead_letter_exchange: "orders.dlx".to_owned(),
            dead_letter_queue: "orders.dlq".to_owned(),
            inventory_exchange: "inventory".to_owned(),
            reserved_key: "inventory.reserved".to_owned(),
            failed_key: "inventory.failed".to_owned(),
            notify_queue: "inventory.notify".to_owned(),
        }
    }
}
