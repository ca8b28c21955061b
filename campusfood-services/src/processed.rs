//! Processed message ids: how a consumer with an external side effect (the
//! notification) recognises a redelivery and does not repeat itself.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use campusfood_core::group_commit::{GroupCommit, SharedDb};
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition, WriteTransaction};

use crate::order_store::StoreError;

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

/// In-memory [`ProcessedIds`].
#[derive(Debug, Default)]
pub struct MemoryProcessedIds(Mutex<HashSet<String>>);

impl MemoryProcessedIds {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ProcessedIds for MemoryProcessedIds {
    async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().contains(id))
    }

    async fn record(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().insert(id.to_owned()))
    }

    async fn len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().len() as u64)
    }
}

const IDS: TableDefinition<'_, &str, ()> = TableDefinition::new("processed");

/// Durable [`ProcessedIds`] in a redb file, group-committed.
pub struct RedbProcessedIds {
    db: Arc<SharedDb>,
    writer: GroupCommit<String, bool>,
}

impl fmt::Debug for RedbProcessedIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbProcessedIds")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

fn apply(txn: &WriteTransaction, ids: &[String]) -> Result<Vec<bool>, String> {
    let mut t = txn.open_table(IDS).map_err(|e| e.to_string())?;
    ids.iter()
        .map(|id| {
            t.insert(id.as_str(), ())
                .map(|old| old.is_none())
                .map_err(|e| e.to_string())
        })
        .collect()
}

impl RedbProcessedIds {
    /// Opens (creating) the set at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = SharedDb::open_path(path.as_ref())?;
        let txn = db
            .get()?
            .begin_write()
            .map_err(|e| StoreError(e.to_string()))?;
        txn.open_table(IDS).map_err(|e| StoreError(e.to_string()))?;
        txn.commit().map_err(|e| StoreError(e.to_string()))?;
        let writer = GroupCommit::spawn("processed-ids-writer", db.clone(), Box::new(apply))?;
        Ok(Self { db, writer })
    }
}

#[async_trait]
impl ProcessedIds for RedbProcessedIds {
    async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let (db, id) = (self.db.get()?, id.to_owned());
        tokio::task::spawn_blocking(move || -> Result<bool, String> {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let t = txn.open_table(IDS).map_err(|e| e.to_string())?;
            Ok(t.get(id.as_str()).map_err(|e| e.to_string())?.is_some())
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?
        .map_err(StoreError)
    }

    async fn record(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.writer.submit(id.to_owned()).await?)
    }

    async fn len(&self) -> Result<u64, StoreError> {
        let db = self.db.get()?;
        tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            txn.open_table(IDS)
                .map_err(|e| e.to_string())?
                .len()
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?
        .map_err(StoreError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
