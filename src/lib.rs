//! # campusfood
//!
//! Campus food ordering over synchronous HTTP, RabbitMQ and Kafka, with the
//! same business logic on each. This facade re-exports the workspace's
//! crates; see each for its design:
//! - [`core`]: domain types, the idempotent ledger, the `Transport` trait,
//!   fault injection, configuration.
//! - [`transport`]: the transports (in-memory, HTTP, RabbitMQ, Kafka).
//! - [`services`]: the Order, Inventory and Notification services.

pub use campusfood_core as core;
pub use campusfood_services as services;
pub use campusfood_transport as transport;
