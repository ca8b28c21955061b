//! Part A settings: ports, the downstream timeout and the resilience
//! switches (all off by default, so the original experiments reproduce);
//! and the limits of every HTTP server ([`ServerLimits`]) and of
//! `GET /orders` pages ([`PageLimits`]).

use std::time::Duration;

/// Synchronous REST settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Address the services bind to.
    pub host: String,
    /// OrderService port.
    pub order_port: u16,
    /// InventoryService port.
    pub inventory_port: u16,
    /// NotificationService port.
    pub notification_port: u16,
    /// Base URL the OrderService calls inventory at.
    pub inventory_url: String,
    /// Base URL the OrderService calls notification at.
    pub notification_url: String,
    /// Per-hop timeout of OrderService's downstream calls.
    pub downstream_timeout: Duration,
    /// Retry of the (idempotent) reserve call; `None` = off.
    pub retry: Option<RetryConfig>,
    /// Circuit breaker on the inventory hop; `None` = off.
    pub breaker: Option<BreakerConfig>,
    /// Bulkhead: at most this many orders in flight; `None` = unbounded.
    pub max_in_flight: Option<usize>,
    /// How often the OrderService's kept calls (failed notifications,
    /// releases of failed orders) are retried from its outbox.
    pub notification_retry_interval: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Timeouts, connection limit and stop deadline of the HTTP servers.
    pub server: ServerLimits,
    /// Page sizes of the OrderService's `GET /orders`.
    pub orders_page: PageLimits,
}

impl HttpConfig {
    /// OrderService: place an order.
    pub const ORDER_PATH: &'static str = "/order";
    /// InventoryService: reserve stock.
    pub const RESERVE_PATH: &'static str = "/reserve";
    /// InventoryService: release an order's reservation (compensation).
    pub const RELEASE_PATH: &'static str = "/release";
    /// NotificationService: send a notification.
    pub const SEND_PATH: &'static str = "/send";
    /// Every service: Prometheus metrics in text (Part C's analytics
    /// consumer serves them at [`KafkaConfig::PROMETHEUS_PATH`](crate::config::KafkaConfig::PROMETHEUS_PATH)).
    pub const METRICS_PATH: &'static str = "/metrics";
    /// OrderService's default port.
    pub const ORDER_PORT: u16 = 8000;
    /// InventoryService's default port.
    pub const INVENTORY_PORT: u16 = 5001;
    /// NotificationService's default port.
    pub const NOTIFICATION_PORT: u16 = 5002;
}

impl Default for HttpConfig {
    fn default() -> Self {
        let host = "127.0.0.1".to_owned();
        Self {
            inventory_url: format!("http://{host}:{}", Self::INVENTORY_PORT),
            notification_url: format!("http://{host}:{}", Self::NOTIFICATION_PORT),
            host,
            order_port: Self::ORDER_PORT,
            inventory_port: Self::INVENTORY_PORT,
            notification_port: Self::NOTIFICATION_PORT,
            downstream_timeout: Duration::from_secs(5),
            retry: None,
            breaker: None,
            max_in_flight: None,
            notification_retry_interval: Duration::from_secs(1),
            max_body_bytes: 16 * 1024,
            server: ServerLimits::default(),
            orders_page: PageLimits::default(),
        }
    }
}

/// What an HTTP server grants its clients, so that slow or many clients
/// cannot hold it (or its stopping) forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A connection must send a request's complete headers within this,
    /// counted from when the server starts waiting for them — so it is also
    /// how long an idle keep-alive connection stays open. Else it is
    /// closed.
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this, counted from its
    /// headers; else the request is answered 408.
    pub body_read_timeout: Duration,
    /// Connections served at once. Further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// How long stopping waits for requests in flight before it closes
    /// their connections (dropping their handlers).
    pub stop_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// Page sizes of a listing (`?limit=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Items in a page when the caller does not say.
    pub default: usize,
    /// The most items a caller may ask for in one page.
    pub max: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        Self {
            default: 100,
            max: 1000,
        }
    }
}

/// Retry with jittered exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time, full jitter.
    pub base_delay: Duration,
    /// Backoff never exceeds this.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// A circuit breaker: opens after consecutive failures, fails fast while
/// open, lets one probe through after the cool-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(2),
        }
    }
}
