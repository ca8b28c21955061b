//! Part C — Kafka streaming: an order producer, an inventory consumer that
//! decides each order and writes the outcome back to Kafka, and an
//! analytics consumer that reads both topics and serves `GET /metrics`.
//!
//! ```text
//! producer ──OrderEvent──▶ order-events (6) ──▶ inventory consumer ──InventoryEvent──▶ inventory-events (3)
//!                               │              (ledger + faults,                               │
//!                               │               exactly once)                                  │
//!                               └──────────────────────▶ analytics consumer ◀──────────────────┘
//!                                                        (dedupe, window, totals, lag)
//! ```
//!
//! # Layout
//! - [`producer`]: `MODE` = idle | once | burst; a burst is queued in one go
//!   with [`KafkaTransport::publish_many`].
//! - [`inventory`]: decides every order with the same
//!   [`InventoryService::reserve`](campusfood_services::inventory::InventoryService::reserve)
//!   as Parts A and B, and writes `Success`/`Failure`.
//! - [`analytics`]: the contract's rolling-window metrics plus
//!   deterministic totals and lag.
//! - [`offsets`]: lag and offset resets for the two groups, without the
//!   Kafka CLI.
//! - [`dlq`]: the two topics' dead letters listed, shown and replayed.
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the topics, generated from
//!   the record types.
//! - [`trace`]: "where is order X?" — its records in every topic, the
//!   ledger's decision, its dead letters.
//! - [`system`]: the consumers assembled, as the example and tests run them.
//!
//! # Why failures are deterministic
//! The original drew `random() < FAIL_RATE` per event, so replaying a topic
//! produced different outcomes and nothing could be compared. Here the
//! injected failure is [`fault::decide`](campusfood_core::fault::decide)`(seed,
//! order_id, 1) < FAIL_RATE`: a pure function of the order id and the seed
//! (`FAIL_SEED`, default [`inventory::DEFAULT_SEED`]). Every order is decided
//! on attempt 1 — an injected failure is an outcome (`Failure`), not a
//! reason to retry — so the same order gets the same draw on every
//! redelivery, replay and machine. Orders that are not failed by injection
//! go to the idempotent stock ledger, which records the first decision per
//! order id and answers a redelivered order with that decision
//! ([`Reservation::Repeat`](campusfood_core::ledger::Reservation::Repeat)).
//! So, given the stock, the `status` of an order is a pure function of
//! (order id, seed), and with ample stock exactly the orders with
//! `decide(seed, id, 1) < FAIL_RATE` fail.
//!
//! # How exactly-once works here
//! By default the inventory consumer runs in Kafka transactions
//! ([`TransactionalProcessor`](campusfood_kafka::TransactionalProcessor)):
//! it reads `order-events` with `isolation.level=read_committed`, and for a
//! batch of orders produces their `InventoryEvent`s *and* commits the
//! consumed offsets in one transaction. A crash (even `kill -9`) aborts the
//! open transaction: its events never become visible to `read_committed`
//! readers and its offsets are not committed, so the batch is processed
//! again after the restart. The one side effect outside Kafka, the stock
//! reservation, is made idempotent by the ledger (keyed by order id, durable
//! before the transaction commits), so the second processing takes no
//! stock and writes the same event. Net effect: `inventory-events`
//! (read committed) holds each order exactly once, and stock plus reserved
//! always equals the initial stock. `--at-least-once` switches to a plain
//! consumer group subscription: after a crash some events are written
//! twice (same content), and the analytics consumer drops the duplicates.
//!
//! # What a replay reproduces
//! Resetting the analytics group to `earliest` (with `offsets reset`, or
//! Kafka's own `kafka-consumer-groups --reset-offsets --to-earliest`) and
//! restarting it re-reads the same records, so its deterministic
//! [`Totals`] — orders, inventory events, successes,
//! failures, duplicates dropped, malformed — come out identical. The rolling
//! window (`orders_per_min` …) depends on when records arrive and differs, as
//! the original's notes say it must. Re-running the *inventory* consumer over
//! the same orders reproduces the same statuses, by the argument above.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod analytics;
pub mod asyncapi;
pub mod dlq;
pub mod inventory;
pub mod offsets;
pub mod producer;
pub mod system;
pub mod trace;

use std::time::Duration;

use campusfood_core::codec::CodecError;
use campusfood_core::config::KafkaConfig;
use campusfood_core::ledger::LedgerError;
use campusfood_core::order::Item;
use campusfood_core::stock::StockSpec;
use campusfood_core::transport::{Transport, TransportError};
use campusfood_kafka::KafkaTransport;
use thiserror::Error;
use tokio::time::Instant;

use campusfood_services::server::StartError;

pub use analytics::{AnalyticsConsumer, AnalyticsOptions, MetricsSnapshot, Totals};
pub use inventory::{InventoryConsumer, InventoryCounts, InventoryOptions};
pub use offsets::{GroupTopicLag, ResetTarget};
pub use producer::{OrderGenerator, ProducerMode, ProducerOptions, ProducerReport};
pub use system::{StreamingOptions, StreamingPart, StreamingSystem};

/// Why a streaming component could not start or finish, grouped by what
/// the caller should do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StreamingError {
    /// No broker answered at the bootstrap address, even after retrying
    /// with backoff. Start Kafka, or fix `BOOTSTRAP_SERVERS`.
    #[error(
        "no Kafka broker reachable at {bootstrap} ({attempts} attempt(s) over {waited:.1?}): {reason}"
    )]
    Unreachable {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long was spent trying.
        waited: Duration,
        /// The last failure.
        reason: String,
    },
    /// A setting is out of range. Fix the input.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting (its environment variable name).
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Kafka refused or failed an operation (publish, subscribe, offsets).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The inventory ledger could not be opened or read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The analytics HTTP server could not start (port in use …).
    #[error(transparent)]
    Http(#[from] StartError),
    /// The shared database could not be used.
    #[error(transparent)]
    Stores(#[from] campusfood_services::stores::StoresError),
    /// An event could not be encoded.
    #[error("cannot encode an event: {0}")]
    Codec(#[from] CodecError),
    /// The Prometheus recorder could not be installed (the process
    /// installed another one): turn the consumer's Prometheus off.
    #[error(transparent)]
    Metrics(#[from] campusfood_services::metrics::MetricsError),
}

/// A transport whose consumers use `instance` as `group.instance.id`: the
/// given one when it already does, else a new connection.
async fn with_instance_id(
    transport: &KafkaTransport,
    instance: Option<String>,
) -> Result<KafkaTransport, StreamingError> {
    if transport.config().group_instance_id == instance {
        return Ok(transport.clone());
    }
    let mut config = transport.config().clone();
    config.group_instance_id = instance;
    Ok(KafkaTransport::connect(&config).await?)
}

/// `transport`, counting its consumers' deliveries and timing their
/// handlers ([`Metered`](campusfood_services::metrics::Metered); free
/// without a recorder).
fn metered(transport: KafkaTransport) -> std::sync::Arc<dyn Transport> {
    std::sync::Arc::new(campusfood_services::metrics::Metered::new(
        std::sync::Arc::new(transport),
    ))
}

/// `<id>` for a single member, `<id>-<n>` for member `n` of several.
fn member_instance_id(id: Option<&str>, n: usize, members: usize) -> Option<String> {
    id.map(|id| {
        if members > 1 {
            format!("{id}-{n}")
        } else {
            id.to_owned()
        }
    })
}

/// How [`connect`] retries an unreachable broker at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRetry {
    /// Attempts before giving up (at least 1).
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one TCP probe of a bootstrap address may take.
    pub probe_timeout: Duration,
}

impl Default for ConnectRetry {
    /// 5 attempts, 250 ms doubling up to 4 s (about 8 s in all), 2 s probes.
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// Connects to Kafka, retrying with exponential backoff while no broker
/// answers. Each attempt first opens a TCP connection to the bootstrap
/// addresses (fast and explicit when nothing listens), then
/// [`KafkaTransport::connect`]s (metadata, topic creation).
///
/// # Errors
/// [`StreamingError::Unreachable`], naming the address and the last
/// failure, after [`ConnectRetry::attempts`] failed attempts.
pub async fn connect(
    config: &KafkaConfig,
    retry: &ConnectRetry,
) -> Result<KafkaTransport, StreamingError> {
    let started = Instant::now();
    let attempts = retry.attempts.max(1);
    let mut backoff = retry.initial_backoff;
    let mut reason = String::new();
    for attempt in 1..=attempts {
        match probe(&config.bootstrap_servers, retry.probe_timeout).await {
            Ok(()) => match KafkaTransport::connect(config).await {
                Ok(transport) => return Ok(transport),
                Err(e) => reason = e.to_string(),
            },
            Err(e) => reason = e,
        }
        if attempt < attempts {
            tracing::warn!(
                bootstrap = %config.bootstrap_servers,
                attempt,
                of = attempts,
                retry_in = ?backoff,
                %reason,
                "Kafka unreachable; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(retry.max_backoff);
        }
    }
    Err(StreamingError::Unreachable {
        bootstrap: config.bootstrap_servers.clone(),
        attempts,
        waited: started.elapsed(),
        reason,
    })
}

/// Opens a TCP connection to any of the comma-separated bootstrap
/// addresses.
async fn probe(bootstrap: &str, timeout: Duration) -> Result<(), String> {
    let mut failures = Vec::new();
    for addr in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let host_port = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(host_port)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => failures.push(format!("{host_port}: {e}")),
            Err(_) => failures.push(format!("{host_port}: no answer within {timeout:?}")),
        }
    }
    if failures.is_empty() {
        Err("no bootstrap address given".to_owned())
    } else {
        Err(failures.join("; "))
    }
}

/// The item ids the producer draws from: `item-1` … `item-<item_count>`.
///
/// # Errors
/// [`StreamingError::Invalid`] if `item_count` is 0.
pub fn item_ids(item_count: u32) -> Result<Vec<Item>, StreamingError> {
    if item_count == 0 {
        return Err(StreamingError::Invalid {
            name: "ITEM_COUNT",
            reason: "must be at least 1".to_owned(),
        });
    }
    (1..=item_count)
        .map(|n| {
            Item::parse(&format!("item-{n}")).map_err(|e| StreamingError::Invalid {
                name: "ITEM_COUNT",
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Stock of `per_item` for each of `item-1` … `item-<item_count>`: what the
/// inventory consumer starts with when `CAMPUSFOOD_STOCK` is not set, so
/// that the producer's orders find their items.
///
/// # Errors
/// [`StreamingError::Invalid`] if `item_count` is 0.
pub fn item_stock(item_count: u32, per_item: u64) -> Result<StockSpec, StreamingError> {
    Ok(StockSpec::from_levels(
        item_ids(item_count)?
            .into_iter()
            .map(|item| (item, per_item)),
    ))
}
