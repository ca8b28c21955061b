//! # campusfood-services
//!
//! The Order, Inventory and Notification services, written once against
//! [`Transport`](campusfood_core::transport::Transport) and
//! [`RequestHandler`](campusfood_core::transport::RequestHandler).
//!
//! ## Layout
//! - [`inventory`]: reserve through the idempotent ledger, after injected
//!   faults — the decision logic every architecture shares.
//! - [`metrics`]: a metering decorator for any transport, queue-depth
//!   sampling, Prometheus exposition.
//! - [`notification`]: send (log) confirmations.
//! - [`order`]: the synchronous orchestrator (Part A), with timeout, retry,
//!   circuit breaker, bulkhead, and an outbox for failed notifications.
//! - [`order_store`]: the async OrderService's orders, status and
//!   transactional outbox (memory, redb with group commit).
//! - [`async_order`]: the asynchronous OrderService (transactional outbox
//!   and relay).
//! - [`async_system`] (feature `http`): the async architecture assembled
//!   over any publish/subscribe transport.
//! - [`workers`]: the message handlers of the async architectures: reserve,
//!   notify, order status.
//! - [`processed`]: processed-id sets for idempotent side effects.
//! - [`resilience`]: the breaker and backoff used by `order`.
//! - [`stores`]: where state lives — redb files per process, or (feature
//!   `postgres`) one database shared by every instance.
//! - [`http`] (feature `http`): axum routers on the contract's paths.
//! - [`openapi`]: the OpenAPI documents they serve.
//! - [`sync_rest`] (feature `http`): Part A assembled, as the example and
//!   tests run it.
//! - [`streaming`] (feature `kafka`): Part C — the Kafka order producer,
//!   the exactly-once inventory consumer, the analytics consumer with
//!   `/metrics`, offset tools, and their assembly.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod async_order;
#[cfg(feature = "http")]
pub mod async_system;
#[cfg(feature = "http")]
pub mod http;
pub mod inventory;
pub mod metrics;
pub mod notification;
#[cfg(feature = "http")]
pub mod openapi;
pub mod order;
pub mod order_store;
pub mod processed;
mod reply;
pub mod resilience;
pub mod stores;
#[cfg(feature = "kafka")]
pub mod streaming;
#[cfg(feature = "http")]
pub mod sync_rest;
pub mod workers;
