//! Part B settings: the broker URL, service ports, the contract's topology
//! names, and how the RabbitMQ transport names what the contract leaves
//! open (retry and dead-letter queues, consumer groups).
//!
//! Every exchange and queue the RabbitMQ transport touches is named here or
//! derived here ([`RabbitConfig::retry_queue`],
//! [`RabbitConfig::dead_letter_queue_of`], [`RabbitConfig::group_queue`]);
//! [`RabbitConfig::with_prefix`] moves all of them under a prefix so that
//! tests and labs can share one broker without colliding.

use std::time::Duration;

use crate::group_commit::Flush;

/// RabbitMQ settings and topology names. `Debug` shows the URL without
/// its password.
#[derive(Clone, PartialEq, Eq)]
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
    /// Routing key of `OrderNotified` (on the orders exchange): the
    /// notification service tells the order service a customer was
    /// notified. Not in the original contract.
    pub order_notified_key: String,
    /// Consumer group the order service follows inventory outcomes and
    /// notifications with, so that its order status moves `placed` →
    /// `reserved` | `failed` → `notified`. Its queues,
    /// `<status_group>.<reserved_key>`, `<status_group>.<failed_key>` and
    /// `<status_group>.<order_notified_key>` ([`RabbitConfig::group_queue`]),
    /// are declared with the rest of the topology, so an event published
    /// before the order service first subscribes waits for it (and every
    /// event always has a queue to land in). Subscribing to
    /// `inventory.failed` or `order.notified` without a group uses this
    /// group's queue; `inventory.reserved` without a group is notification's
    /// `inventory.notify`, so the order service must name this group.
    pub status_group: String,
    /// Appended to a consumed queue's name to name its retry queue, where a
    /// message waits out the retry delay before it returns to the queue.
    pub retry_suffix: String,
    /// Appended to a consumed queue's name to name its dead-letter queue
    /// (bound to [`dead_letter_exchange`](Self::dead_letter_exchange) with
    /// its own name as routing key). The reserve queue uses the contract's
    /// [`dead_letter_queue`](Self::dead_letter_queue) instead.
    pub dead_letter_suffix: String,
    /// How long a publish waits for the broker's confirm before it reports
    /// the broker unavailable.
    pub confirm_timeout: Duration,
    /// How many times a publish tries (reconnecting in between) before it
    /// reports the broker unavailable; callers such as an outbox relay retry
    /// later.
    pub publish_attempts: u32,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// First pause before a consumer reconnects after losing the broker;
    /// doubles on each failure up to
    /// [`reconnect_backoff_max`](Self::reconnect_backoff_max).
    pub reconnect_backoff: Duration,
    /// Longest pause between a consumer's reconnection attempts.
    pub reconnect_backoff_max: Duration,
    /// Longest a stopping subscription waits for its in-flight handlers
    /// before closing its channel anyway (the broker then redelivers what
    /// they had not acknowledged).
    pub drain_timeout: Duration,
    /// Most message-body bytes one subscription's running handlers hold at
    /// once: the prefetch window in bytes. RabbitMQ bounds prefetch only in
    /// messages (it does not implement `basic.qos` prefetch-size), so the
    /// consumer starts a delivery only when its body fits in what is left
    /// of this budget (a single larger message runs alone). Bodies received
    /// but not yet started are bounded by the prefetch count times the
    /// broker's `max_message_size`.
    pub max_inflight_bytes: usize,
    /// How the stores Part B's consumers write — inventory's ledger, the
    /// order store's status advances, notification's sent set — reach the
    /// disk. [`Flush::Shared`] by default: a write is answered (and its
    /// message acked or its event published) once an `fsync` covers it,
    /// and writes share `fsync`s within [`DEFER_LIMIT`]. A longer limit
    /// answers placed orders sooner and reaches `notified` later;
    /// [`Flush::Each`] syncs every batch at once. Placed orders are always
    /// synced before their 201.
    ///
    /// [`DEFER_LIMIT`]: crate::group_commit::DEFER_LIMIT
    pub store_flush: Flush,
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &super::redact_url(&self.url))
            .field("order_port", &self.order_port)
            .field("inventory_port", &self.inventory_port)
            .field("orders_exchange", &self.orders_exchange)
            .field("reserve_queue", &self.reserve_queue)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("inventory_exchange", &self.inventory_exchange)
            .field("notify_queue", &self.notify_queue)
            .field("status_group", &self.status_group)
            .field("store_flush", &self.store_flush)
            .finish_non_exhaustive()
    }
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
            order_notified_key: "order.notified".to_owned(),
            status_group: "orders.status".to_owned(),
            retry_suffix: ".retry".to_owned(),
            dead_letter_suffix: ".dlq".to_owned(),
            confirm_timeout: Duration::from_secs(10),
            publish_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            reconnect_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            max_inflight_bytes: 16 * 1024 * 1024,
            store_flush: Flush::Shared,
        }
    }
}

impl RabbitConfig {
    /// The defaults with every exchange, queue and group name prefixed with
    /// `<prefix>.` (routing keys stay as they are: they only matter within
    /// an exchange). Tests give each case a unique prefix so that they run
    /// in parallel on one broker.
    pub fn with_prefix(prefix: &str) -> Self {
        Self::default().prefixed(prefix)
    }

    /// This configuration with every exchange, queue and group name
    /// prefixed with `<prefix>.`.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        for name in [
            &mut self.orders_exchange,
            &mut self.reserve_queue,
            &mut self.dead_letter_exchange,
            &mut self.dead_letter_queue,
            &mut self.inventory_exchange,
            &mut self.notify_queue,
            &mut self.status_group,
        ] {
            *name = format!("{prefix}.{name}");
        }
        self
    }

    /// The queue consumer group `group` reads `routing_key`'s messages from:
    /// `<group>.<routing_key>`.
    pub fn group_queue(&self, group: &str, routing_key: &str) -> String {
        format!("{group}.{routing_key}")
    }

    /// The retry queue of `queue`: `<queue><retry_suffix>`.
    pub fn retry_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.retry_suffix)
    }

    /// The dead-letter queue of `queue`: the contract's
    /// [`dead_letter_queue`](Self::dead_letter_queue) for the reserve queue,
    /// `<queue><dead_letter_suffix>` for any other.
    pub fn dead_letter_queue_of(&self, queue: &str) -> String {
        if queue == self.reserve_queue {
            self.dead_letter_queue.clone()
        } else {
            format!("{queue}{}", self.dead_letter_suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_moves_names_but_not_routing_keys() {
        let c = RabbitConfig::with_prefix("t1");
        assert_eq!(c.orders_exchange, "t1.orders");
        assert_eq!(c.reserve_queue, "t1.orders.reserve");
        assert_eq!(c.dead_letter_queue, "t1.orders.dlq");
        assert_eq!(c.order_placed_key, "order.placed");
        assert_eq!(
            c.group_queue(&c.status_group, &c.failed_key),
            "t1.orders.status.inventory.failed"
        );
        assert_eq!(c.retry_queue(&c.reserve_queue), "t1.orders.reserve.retry");
        assert_eq!(c.dead_letter_queue_of(&c.reserve_queue), "t1.orders.dlq");
        assert_eq!(
            c.dead_letter_queue_of(&c.notify_queue),
            "t1.inventory.notify.dlq"
        );
    }
}
