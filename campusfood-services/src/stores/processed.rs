//! Processed message ids: how a consumer with an external side effect (the
//! notification) recognises a redelivery and does not repeat itself.

use std::fmt;

use async_trait::async_trait;

use super::StoreError;

/// A set of processed ids.
#[async_trait]
pub trait ProcessedIds: Send + Sync + fmt::Debug + 'static {
    /// Whether `id` was already recorded.
    async fn contains(&self, id: &str) -> Result<bool, StoreError>;
    /// Records `id` durably; returns whether it was new.
    async fn record(&self, id: &str) -> Result<bool, StoreError>;
    /// How many ids are recorded.
    async fn len(&self) -> Result<u64, StoreError>;
    /// Whether none is recorded.
    async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len().await? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::{MemoryProcessedIds, RedbProcessedIds};

    async fn exercise(ids: &dyn ProcessedIds) {
        assert!(!ids.contains("a").await.unwrap());
        assert!(ids.record("a").await.unwrap());
        assert!(!ids.record("a").await.unwrap());
        assert!(ids.contains("a").await.unwrap());
        assert_eq!(ids.len().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn memory_and_redb() {
        exercise(&MemoryProcessedIds::new()).await;
        let dir = tempfile::tempdir().unwrap();
        exercise(&RedbProcessedIds::open(dir.path().join("p.redb")).unwrap()).await;
        assert!(
            RedbProcessedIds::open(dir.path().join("p.redb"))
                .unwrap()
                .contains("a")
                .await
                .unwrap()
        );
    }
}
