//! # campusfood-services
//!
//! The Order, Inventory and Notification services, written once against
//! [`Transport`](campusfood_core::transport::Transport) and
//! [`RequestHandler`](campusfood_core::transport::RequestHandler).
//!
//! ## Layout
//! One folder per architecture, named as its example is (the assignment's
//! Part A, B and C), beside the pieces they all share:
//! - [`sync_rest`]: Part A — the synchronous orchestrator with its
//!   resilience, and (feature `http`) its assembly.
//! - [`async_rabbitmq`]: Part B — the asynchronous OrderService, the
//!   message workers, and (feature `http`) their assembly over any
//!   publish/subscribe transport.
//! - Part C, `streaming_kafka`, is the crate `campusfood-streaming-kafka`
//!   (`campusfood::services::streaming_kafka` in the facade): it needs
//!   librdkafka, a C build of minutes that Parts A and B should not wait
//!   for.
//!
//! Shared by all three:
//! - [`inventory`]: reserve through the idempotent ledger, after injected
//!   faults — the decision logic every architecture shares.
//! - [`notification`]: send (log) confirmations.
//! - [`stores`]: every store trait — the async orders with their
//!   transactional outbox, processed-id sets, and core's ledger and outbox
//!   — with their memory and redb implementations, and where state lives:
//!   redb files per process, or (feature `postgres`) one database shared by
//!   every instance.
//! - [`server`] (feature `http`): the HTTP server every service runs on
//!   and the routes they share.
//! - [`metrics`]: Prometheus exposition of the vocabulary in
//!   `campusfood_core::metric`: a metering decorator for any transport, HTTP
//!   handler timing, gauges sampled in the background.
//! - [`openapi`] (feature `http`): the OpenAPI documents the services
//!   serve.
//! - [`asyncapi`] (feature `http`): the AsyncAPI documents of the message
//!   flows (Part B's served at `GET /asyncapi.json`).
//! - [`timeline`]: "where is order X?" — an order's hops, as
//!   `GET /orders/{id}/timeline` answers.
//! - [`telemetry`]: the OpenTelemetry pipeline a process installs so that
//!   one trace follows each order; OTLP export with the feature `otel`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod async_rabbitmq;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod asyncapi;
pub mod inventory;
pub mod metrics;
pub mod notification;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod openapi;

mod reply;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod server;
pub mod stores;
pub mod sync_rest;
pub mod telemetry;
pub mod timeline;
