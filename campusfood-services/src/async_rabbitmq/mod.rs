//! Part B — asynchronous messaging: the OrderService records an order and
//! its event in one transaction, a relay publishes it, and Inventory and
//! Notification act on the events they consume. The `async_rabbitmq`
//! example runs it over RabbitMQ; tests also run it over the in-memory
//! transport.
//!
//! # Layout
//! - [`order`]: the asynchronous OrderService (transactional outbox and
//!   relay).
//! - [`workers`]: the message handlers: reserve, notify, order status.
//! - `system` (feature `http`): the services assembled over any
//!   publish/subscribe transport ([`AsyncSystem`]).
//!
//! The assembly lives in its own file rather than here because it needs
//! feature `http`, while the services and workers run over any transport.

pub mod order;
#[cfg(feature = "http")]
mod system;
pub mod workers;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use system::*;
