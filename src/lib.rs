//! # campusfood
//!
//! Campus food ordering over synchronous HTTP, RabbitMQ and Kafka, with the
//! same business logic on each. This facade re-exports the workspace's
//! crates; see each for its design:
//! - [`core`]: domain types, the idempotent ledger, the `Transport` trait,
//!   fault injection, configuration.
//! - [`transport`]: the transports (in-memory, HTTP, RabbitMQ, and Kafka
//!   from `campusfood-kafka`).
//! - [`services`]: the Order, Inventory and Notification services.

pub use campusfood_core as core;

/// The services: [`campusfood_services`]'s (Parts A and B, and what every
/// part shares), and (feature `kafka`) Part C, [`campusfood_streaming_kafka`],
/// as `services::streaming_kafka`.
pub mod services {
    pub use campusfood_services::*;

    #[cfg(feature = "kafka")]
    pub use campusfood_streaming_kafka as streaming_kafka;
}

/// The transports: [`campusfood_transport`]'s, and (feature `kafka`)
/// [`campusfood_kafka`] as `transport::kafka`.
pub mod transport {
    pub use campusfood_transport::*;

    #[cfg(feature = "kafka")]
    pub use campusfood_kafka as kafka;
}
