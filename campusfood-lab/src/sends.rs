//! [`SendLog`]: the notifier's sent-set, as the lab hands it to a
//! NotificationService, counting per order what the notifier did with
//! it — how the lab reads "notifications sent" order by order.
//!
//! Both notifiers record an order in the set around each confirmation
//! they send: Part A's records first and sends only when the order was
//! new ([`SendLog::new_records`]); Part B's worker sends first and records
//! right after each send ([`SendLog::records`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use campusfood_services::stores::{ProcessedIds, StoreError};

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Successful `record` calls.
    records: u32,
    /// Successful `record` calls that found the order new.
    new: u32,
}

/// A [`ProcessedIds`] that forwards to another and counts, per id, the
/// successful `record` calls and those that found the id new.
#[derive(Debug)]
pub struct SendLog {
    inner: Arc<dyn ProcessedIds>,
    counts: Mutex<HashMap<String, Counts>>,
}

impl SendLog {
    /// A log in front of `inner`.
    pub fn new(inner: Arc<dyn ProcessedIds>) -> Self {
        Self {
            inner,
            counts: Mutex::default(),
        }
    }

    fn get(&self, id: &str) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
            .unwrap_or_default()
    }

    /// How many times `id` was recorded (Part B: one per confirmation sent).
    pub fn records(&self, id: &str) -> u32 {
        self.get(id).records
    }

    /// How many times recording `id` found it new (Part A: one per
    /// confirmation sent).
    pub fn new_records(&self, id: &str) -> u32 {
        self.get(id).new
    }
}

#[async_trait]
impl ProcessedIds for SendLog {
    async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.contains(id).await
    }

    async fn record(&self, id: &str) -> Result<bool, StoreError> {
        let new = self.inner.record(id).await?;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let c = counts.entry(id.to_owned()).or_default();
        c.records += 1;
        c.new += u32::from(new);
        Ok(new)
    }

    async fn len(&self) -> Result<u64, StoreError> {
        self.inner.len().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use campusfood_services::stores::MemoryProcessedIds;

    use super::*;

    #[tokio::test]
    async fn counts_records_and_new_ones_per_id() {
        let log = SendLog::new(Arc::new(MemoryProcessedIds::new()));
        assert!(log.record("a").await.unwrap());
        assert!(!log.record("a").await.unwrap());
        assert!(log.record("b").await.unwrap());
        assert_eq!((log.records("a"), log.new_records("a")), (2, 1));
        assert_eq!((log.records("b"), log.new_records("b")), (1, 1));
        assert_eq!((log.records("c"), log.new_records("c")), (0, 0));
        assert!(log.contains("a").await.unwrap());
        assert_eq!(log.len().await.unwrap(), 2);
    }
}
