//! The stores in embedded redb files, one file per store, open in one
//! process at a time; writes are group-committed (many callers, one
//! `fsync`).

mod orders;
mod processed;

use std::fmt;
use std::sync::Arc;

use std::path::Path;

use ::redb::{ReadTransaction, ReadableDatabase, TableError, WriteTransaction};
use campusfood_core::group_commit::{GroupCommit, SharedDb};

use super::StoreError;

pub use orders::RedbOrderStore;
pub use processed::RedbProcessedIds;

/// Opens (creating) the redb file at `path` and, in one committed write,
/// the tables `create` opens (creating those missing).
fn open_file(
    path: &Path,
    create: impl FnOnce(&WriteTransaction) -> Result<(), TableError>,
) -> Result<Arc<SharedDb>, StoreError> {
    let db = SharedDb::open_path(path)?;
    let txn = db
        .get()?
        .begin_write()
        .map_err(|e| StoreError(e.to_string()))?;
    create(&txn).map_err(|e| StoreError(e.to_string()))?;
    txn.commit().map_err(|e| StoreError(e.to_string()))?;
    Ok(db)
}

/// What every redb store is made of: its file, read from any task, and the
/// one writer that group-commits its writes `W` (answering `A`).
struct Committed<W, A> {
    db: Arc<SharedDb>,
    writer: GroupCommit<W, A>,
}

impl<W, A> fmt::Debug for Committed<W, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl<W, A> Committed<W, A> {
    /// Runs `f` in a read transaction on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.get()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError(e.to_string()))?
        .map_err(StoreError)
    }
}
