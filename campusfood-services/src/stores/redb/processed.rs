//! The durable [`ProcessedIds`] in a redb file, group-committed.

use std::path::Path;

use async_trait::async_trait;
use campusfood_core::group_commit::{Flush, GroupCommit};
use redb::{ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{Committed, open_file};
use crate::stores::{ProcessedIds, StoreError};

const IDS: TableDefinition<'_, &str, ()> = TableDefinition::new("processed");

/// Durable [`ProcessedIds`] in a redb file, group-committed.
#[derive(Debug)]
pub struct RedbProcessedIds {
    store: Committed<String, bool>,
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
    /// Opens (creating) the set at `path`; each batch of ids is made
    /// durable on its own ([`Flush::Each`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Flush::Each)
    }

    /// Opens (creating) the set at `path`, its batches made durable as
    /// `flush` says ([`Flush::Shared`] for a set written by queue
    /// consumers).
    pub fn open_with(path: impl AsRef<Path>, flush: Flush) -> Result<Self, StoreError> {
        let db = open_file(path.as_ref(), |txn| {
            txn.open_table(IDS)?;
            Ok(())
        })?;
        let writer =
            GroupCommit::spawn("processed-ids-writer", db.clone(), Box::new(apply), flush)?;
        Ok(Self {
            store: Committed { db, writer },
        })
    }
}

#[async_trait]
impl ProcessedIds for RedbProcessedIds {
    async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.store
            .read(move |txn| {
                let t = txn.open_table(IDS).map_err(|e| e.to_string())?;
                Ok(t.get(id.as_str()).map_err(|e| e.to_string())?.is_some())
            })
            .await
    }

    async fn record(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.store.writer.submit(id.to_owned()).await?)
    }

    async fn len(&self) -> Result<u64, StoreError> {
        self.store
            .read(|txn| {
                txn.open_table(IDS)
                    .map_err(|e| e.to_string())?
                    .len()
                    .map_err(|e| e.to_string())
            })
            .await
    }
}
