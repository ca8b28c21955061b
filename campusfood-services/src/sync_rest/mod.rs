//! Part A — synchronous REST: the OrderService calls InventoryService and
//! NotificationService over HTTP and answers the client when both have.
//!
//! # Layout
//! - [`order`]: the synchronous orchestrator, with timeout, retry, circuit
//!   breaker, bulkhead, and an outbox for failed notifications.
//! - [`resilience`]: the breaker and backoff used by [`order`].
//! - `routers` (feature `http`): NotificationService's and OrderService's
//!   routers ([`notification_router`], [`order_router`]).
//! - `system` (feature `http`): the three services bound, run and stopped
//!   ([`SyncRest`]), as the `sync_rest` example and tests run them.
//!
//! The assembly lives in its own file rather than here because it needs
//! feature `http`, while the orchestrator runs over any transport.

pub mod order;
pub mod resilience;
#[cfg(feature = "http")]
mod routers;
#[cfg(feature = "http")]
mod system;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use routers::{notification_router, order_router};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use system::*;
