//! Feeds each topic's records into the [`Analytics`] model.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::bounded;
use campusfood_core::events::{InventoryEvent, OrderEvent};
use campusfood_core::transport::{Delivery, Disposition, Handler};

use super::window::Analytics;

/// Which topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Orders,
    Inventory,
}

/// Feeds one topic's records into [`Analytics`].
#[derive(Debug)]
pub(super) struct AnalyticsHandler {
    pub(super) analytics: Arc<Analytics>,
    pub(super) source: Source,
    pub(super) throttle: Duration,
}

#[async_trait]
impl Handler for AnalyticsHandler {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        if !self.throttle.is_zero() {
            tokio::time::sleep(self.throttle).await;
        }
        let message = &delivery.message;
        match self.source {
            Source::Orders => match message.decode::<OrderEvent>() {
                Ok(order) => {
                    if self.analytics.record_order(&order) {
                        campusfood_core::metric::order_placed();
                    }
                }
                Err(e) => {
                    self.analytics.record_malformed();
                    tracing::warn!(key = ?message.key, error = %e, "malformed order event: skipped");
                }
            },
            Source::Inventory => match message.decode::<InventoryEvent>() {
                Ok(event) => {
                    self.analytics.record_inventory(&event);
                }
                Err(e) => {
                    self.analytics.record_malformed();
                    return Disposition::DeadLetter {
                        reason: bounded::reason_owned(format!("not an InventoryEvent: {e}")),
                    };
                }
            },
        }
        Disposition::Ack
    }
}
