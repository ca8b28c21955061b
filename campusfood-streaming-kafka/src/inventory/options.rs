//! The inventory consumer's settings.

use std::time::Duration;

use campusfood_core::fault::FaultConfig;
use campusfood_kafka::TransactionalOptions;

use crate::StreamingError;

/// The default seed of the injected failures (`FAIL_SEED`).
pub const DEFAULT_SEED: u64 = 273;

/// The default of [`InventoryOptions::max_batch`] (`INVENTORY_MAX_BATCH`).
/// Under a backlog, 1,000 per transaction drained a 10,000-order burst
/// about a quarter faster than 500 (fewer commits and acknowledgement
/// waits per worker); with no backlog a transaction holds what has
/// arrived, so the limit costs nothing.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// The inventory consumer's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryOptions {
    /// `GROUP_ID`: its consumer group.
    pub group: String,
    /// `FAIL_RATE`: the share of orders failed by injection, `0..=1`.
    pub fail_rate: f64,
    /// `FAIL_SEED`: the seed of the failure draw.
    pub seed: u64,
    /// `THROTTLE_MS`: a pause before each order, to simulate a slow
    /// consumer.
    pub throttle: Duration,
    /// Kafka transactions (default) or a plain at-least-once subscription.
    pub exactly_once: bool,
    /// Consumers in the group run by this process (at most the order
    /// topic's partitions are useful).
    pub workers: usize,
    /// The prefix of the workers' `transactional.id`s (`<prefix>-<n>`).
    /// By default unique to the process
    /// ([`TransactionalOptions::process_unique_id`]), so any number of
    /// inventory processes share one group; zombies are fenced by the
    /// group's generation (KIP-447). A fixed prefix must differ between
    /// processes running at once: two with the same one fence each other.
    pub transactional_id: String,
    /// `GROUP_INSTANCE_ID` for static membership (`<id>-<n>` per worker
    /// when there are several): a restarted process takes its partitions
    /// back at once instead of waiting for the session timeout.
    pub group_instance_id: Option<String>,
    /// Exactly-once mode: the most orders decided in one transaction (a
    /// crash re-decides at most this many per worker).
    pub max_batch: usize,
    /// Attempts at an order whose reservation the ledger cannot answer,
    /// before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait between those attempts.
    pub retry_delay: Duration,
    /// `host:port` to serve Prometheus text at `GET /metrics` (with the
    /// group's lag on the order topic as `campusfood_consumer_lag`); `None`
    /// (the default) serves nothing.
    pub metrics_addr: Option<String>,
}

impl Default for InventoryOptions {
    /// Group `inventory-consumer`, `FAIL_RATE` 0.05, seed
    /// [`DEFAULT_SEED`], no throttle, exactly once, 6 workers (one per
    /// partition of `order-events`), up to [`DEFAULT_MAX_BATCH`] orders per
    /// transaction, transactional ids unique to this process, no metrics endpoint.
    fn default() -> Self {
        Self {
            group: "inventory-consumer".to_owned(),
            fail_rate: 0.05,
            seed: DEFAULT_SEED,
            throttle: Duration::ZERO,
            exactly_once: true,
            workers: 6,
            transactional_id: TransactionalOptions::process_unique_id("inventory-consumer"),
            group_instance_id: None,
            max_batch: DEFAULT_MAX_BATCH,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            metrics_addr: None,
        }
    }
}

impl InventoryOptions {
    /// The options with the group `group`, and transactional ids unique to
    /// this process that start with the group's name.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self.transactional_id = TransactionalOptions::process_unique_id(&self.group);
        self
    }

    /// The fault setting the decisions use: no delay, `fail_rate`, seeded.
    ///
    /// # Errors
    /// [`StreamingError::Invalid`] if `fail_rate` is outside `0..=1`.
    pub fn faults(&self) -> Result<FaultConfig, StreamingError> {
        FaultConfig::new(0.0, self.fail_rate, Some(self.seed)).map_err(|e| {
            StreamingError::Invalid {
                name: "FAIL_RATE",
                reason: e.to_string(),
            }
        })
    }
}
