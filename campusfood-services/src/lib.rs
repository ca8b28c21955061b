//! # campusfood-services
//!
//! The Order, Inventory and Notification services, written once against
//! [`Transport`](campusfood_core::transport::Transport) and
//! [`RequestHandler`](campusfood_core::transport::RequestHandler).
//!
//! ## Layout
//! - [`inventory`]: reserve through the idempotent ledger, after injected
//!   faults — the decision logic every architecture shares.
//! - [`notification`]: send (log) confirmations.
//! - [`order`]: the synchronous orchestrator (Part A), with timeout, retry,
//!   circuit breaker, bulkhead, and an outbox for failed notifications.
//! - [`resilience`]: the breaker and backoff used by `order`.
//! - [`http`] (feature `http`): axum routers on the contract's paths.
//! - [`openapi`]: the OpenAPI documents they serve.
//! - [`sync_rest`] (feature `http`): Part A assembled, as the example and
//!   tests run it.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "http")]
pub mod http;
pub mod inventory;
pub mod notification;
pub mod openapi;
pub mod order;
mod reply;
pub mod resilience;
#[cfg(feature = "http")]
pub mod sync_rest;
