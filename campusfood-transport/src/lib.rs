//! # campusfood-transport
//!
//! Implementations of [`campusfood_core::transport::Transport`], each behind
//! a cargo feature:
//! - [`memory`] (feature `memory`): in-process queues and handlers, for
//!   tests and embedding.
//! - [`http`] (feature `http`): request/reply over HTTP — a pooled reqwest
//!   client, and an axum adapter that serves any `RequestHandler`.
//! - `rabbitmq` (feature `rabbitmq`; not linked, so that these docs build
//!   without it): publish/subscribe over RabbitMQ with amqprs — the
//!   contract's topology, publisher confirms, manual acks, delayed bounded
//!   retries through retry queues, dead-letter queues that can be listed
//!   and replayed, reconnection.
//!
//! Kafka is the crate `campusfood-kafka`: librdkafka is a C build of
//! minutes, which a crate of its own spares every build that doesn't use it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory;
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub mod rabbitmq;
