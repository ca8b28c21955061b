//! What the benchmarks share: their runtime, and Part A set up in process
//! (over the in-memory transport) or on loopback HTTP. Each bench includes
//! it with `mod common;`; not every bench uses every item.
#![allow(dead_code, unused_imports)]

#[cfg(all(feature = "http", feature = "memory"))]
mod sync_rest;
#[cfg(all(feature = "http", feature = "memory"))]
pub use sync_rest::{order_service_in_memory, post, sync_rest_on_http};

/// The order every benchmark places.
pub const BODY: &str = r#"{"item":"burger","qty":1}"#;
/// Stock no benchmark runs out of.
pub const STOCK: &str = "burger=1000000000";

/// A multi-threaded runtime with I/O and timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
