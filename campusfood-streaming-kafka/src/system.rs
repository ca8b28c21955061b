//! Part C assembled: the inventory and analytics consumers over one
//! [`KafkaTransport`], as `streaming_kafka` runs them without arguments (or
//! one of them, with `inventory` / `analytics`), and as the tests and
//! benchmarks do.
//!
//! The inventory ledger is the store [`names::STREAMING_LEDGER`]: a redb
//! file in `CAMPUSFOOD_DATA_DIR`, or rows in the shared Postgres database
//! with `CAMPUSFOOD_DATABASE_URL` (so several inventory processes in one
//! group decide against one stock), created with `CAMPUSFOOD_STOCK` the
//! first time (a later run keeps the levels it had). The producer's items are
//! `item-1` … `item-<ITEM_COUNT>`: a stock that holds none of them makes
//! every order a `Failure`, which is logged as a warning at start.

use std::sync::Arc;

use campusfood_core::Config;
use campusfood_core::group_commit::Flush;
use campusfood_core::ledger::InventoryLedger;
use campusfood_kafka::KafkaTransport;

use super::StreamingError;
use super::analytics::{AnalyticsConsumer, AnalyticsOptions};
use super::inventory::{InventoryConsumer, InventoryOptions};
use campusfood_services::stores::{Stores, names};

/// Which consumers this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingPart {
    /// Inventory and analytics.
    All,
    /// The inventory consumer only.
    Inventory,
    /// The analytics consumer only.
    Analytics,
}

impl StreamingPart {
    fn runs_inventory(self) -> bool {
        matches!(self, Self::All | Self::Inventory)
    }

    fn runs_analytics(self) -> bool {
        matches!(self, Self::All | Self::Analytics)
    }
}

/// Both consumers' settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamingOptions {
    /// The inventory consumer's.
    pub inventory: InventoryOptions,
    /// The analytics consumer's.
    pub analytics: AnalyticsOptions,
}

/// Part C, running.
#[derive(Debug)]
pub struct StreamingSystem {
    /// The inventory consumer, when run here.
    pub inventory: Option<InventoryConsumer>,
    /// The analytics consumer, when run here.
    pub analytics: Option<AnalyticsConsumer>,
    ledger: Option<Arc<dyn InventoryLedger>>,
}

impl StreamingSystem {
    /// Starts `part` over `transport`, with the ledger of [`Stores::open`]
    /// (redb in `config.data_dir`, or the shared database) when the
    /// inventory consumer runs.
    ///
    /// # Errors
    /// [`StreamingError::Ledger`] when the ledger cannot be opened (in use
    /// by another process, not writable), or what the consumers' `start`
    /// returns.
    pub async fn start(
        config: &Config,
        part: StreamingPart,
        options: &StreamingOptions,
        transport: &KafkaTransport,
    ) -> Result<Self, StreamingError> {
        let ledger: Option<Arc<dyn InventoryLedger>> = if part.runs_inventory() {
            let stores = Stores::open(config).await?;
            Some(
                stores
                    .ledger(names::STREAMING_LEDGER, &config.stock, Flush::Each)
                    .await?,
            )
        } else {
            None
        };
        Self::start_with(part, options, transport, ledger).await
    }

    /// Starts `part` over `transport` with the given ledger (required when
    /// the inventory consumer runs; a [`MemoryLedger`] works too).
    ///
    /// [`MemoryLedger`]: campusfood_core::ledger::MemoryLedger
    ///
    /// # Errors
    /// [`StreamingError::Invalid`] when the inventory consumer runs without
    /// a ledger; what the consumers' `start` returns.
    pub async fn start_with(
        part: StreamingPart,
        options: &StreamingOptions,
        transport: &KafkaTransport,
        ledger: Option<Arc<dyn InventoryLedger>>,
    ) -> Result<Self, StreamingError> {
        let mut this = Self {
            inventory: None,
            analytics: None,
            ledger: None,
        };
        if part.runs_inventory() {
            let Some(ledger) = ledger else {
                return Err(StreamingError::Invalid {
                    name: "ledger",
                    reason: "the inventory consumer needs a ledger".to_owned(),
                });
            };
            warn_without_items(ledger.as_ref()).await?;
            this.inventory = Some(
                InventoryConsumer::start(transport, ledger.clone(), &options.inventory).await?,
            );
            this.ledger = Some(ledger);
        }
        if part.runs_analytics() {
            match AnalyticsConsumer::start(transport, &options.analytics).await {
                Ok(a) => this.analytics = Some(a),
                Err(e) => {
                    this.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(this)
    }

    /// The inventory ledger, when the inventory consumer runs here.
    pub fn ledger(&self) -> Option<&Arc<dyn InventoryLedger>> {
        self.ledger.as_ref()
    }

    /// Stops the inventory consumer first (its last batch commits), then
    /// analytics; the ledger is closed when this returns.
    pub async fn stop(self) {
        if let Some(i) = self.inventory {
            i.stop().await;
        }
        if let Some(a) = self.analytics {
            a.stop().await;
        }
    }
}

/// Warns when the stock holds none of the producer's `item-<n>` ids.
async fn warn_without_items(ledger: &dyn InventoryLedger) -> Result<(), StreamingError> {
    let stock = ledger.stock().await?;
    if !stock.keys().any(|item| item.as_str().starts_with("item-")) {
        tracing::warn!(
            stock = ?stock,
            "the inventory ledger holds no item-<n>: every order of the producer will be a Failure \
             (unset CAMPUSFOOD_STOCK for item-1..item-<ITEM_COUNT>, or list them, and start from a \
             fresh ledger file)"
        );
    }
    Ok(())
}
