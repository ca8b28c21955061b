//! An outbox: messages that must reach a route eventually, kept until a
//! send succeeds. Part A keeps notifications that failed here and retries
//! them; nothing accepted into an outbox is dropped.
//!
//! [`MemoryOutbox`] for tests and embedding; [`RedbOutbox`] (feature
//! `redb`) survives restarts: an entry that [`Outbox::put`] accepted is on
//! disk when `put` returns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::transport::{Message, Route};

/// The outbox's store failed. Not the caller's fault; try again later.
#[derive(Debug, Error)]
#[error("outbox storage failed: {0}")]
pub struct OutboxError(pub String);

/// A message waiting in an outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique id of the entry (for a notification: the order id).
    pub id: String,
    /// Where it goes.
    pub route: String,
    /// Its key, if any.
    pub key: Option<String>,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// Its JSON body, as text.
    pub body: String,
    /// Failed sends so far.
    pub attempts: u32,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

impl OutboxEntry {
    /// An entry `id` holding `message` for `route`.
    pub fn new(id: impl Into<String>, route: &Route, message: &Message) -> Self {
        Self {
            id: id.into(),
            route: route.as_str().to_owned(),
            key: message.key.clone(),
            headers: message.headers.clone(),
            body: String::from_utf8_lossy(&message.body).into_owned(),
            attempts: 0,
            last_error: None,
        }
    }

    /// The route it goes to.
    pub fn route(&self) -> Route {
        Route::new(self.route.clone())
    }

    /// The message to send.
    pub fn message(&self) -> Message {
        Message {
            key: self.key.clone(),
            headers: self.headers.clone(),
            body: self.body.clone().into(),
        }
    }
}

/// Messages kept until delivered. Entries are keyed by id: putting an id
/// again replaces the entry (the attempt count and last error of a failed
/// send are recorded that way).
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug + 'static {
    /// Stores (or replaces) `entry`; durable when this returns.
    async fn put(&self, entry: OutboxEntry) -> Result<(), OutboxError>;
    /// Up to `limit` entries, in id order.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError>;
    /// Removes entry `id` (delivered). Removing a missing id is not an error.
    async fn remove(&self, id: &str) -> Result<(), OutboxError>;
    /// How many entries wait.
    async fn len(&self) -> Result<u64, OutboxError>;

    /// Whether nothing waits.
    async fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len().await? == 0)
    }
}

/// An in-memory [`Outbox`]; lost with the process.
#[derive(Debug, Default)]
pub struct MemoryOutbox(Mutex<BTreeMap<String, OutboxEntry>>);

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OutboxEntry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn put(&self, entry: OutboxEntry) -> Result<(), OutboxError> {
        self.lock().insert(entry.id.clone(), entry);
        Ok(())
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        Ok(self.lock().values().take(limit).cloned().collect())
    }

    async fn remove(&self, id: &str) -> Result<(), OutboxError> {
        self.lock().remove(id);
        Ok(())
    }

    async fn len(&self) -> Result<u64, OutboxError> {
        Ok(self.lock().len() as u64)
    }
}

#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
pub use self::durable::RedbOutbox;

#[cfg(feature = "redb")]
mod durable {
    use std::path::Path;
    use std::sync::Arc;

    use redb::{
        Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
        TableDefinition,
    };

    use super::*;

    const ENTRIES: TableDefinition<'_, &str, &str> = TableDefinition::new("outbox");

    /// A durable [`Outbox`] in a redb file. Writes are rare (a send failed),
    /// so each is its own durable commit, run off the async threads.
    #[derive(Clone)]
    pub struct RedbOutbox {
        db: Arc<Database>,
    }

    impl fmt::Debug for RedbOutbox {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedbOutbox").finish_non_exhaustive()
        }
    }

    fn err(context: &str) -> impl Fn(String) -> OutboxError + '_ {
        move |e| OutboxError(format!("{context}: {e}"))
    }

    impl RedbOutbox {
        /// Opens or creates the outbox file at `path` (and its folder).
        pub fn open(path: impl AsRef<Path>) -> Result<Self, OutboxError> {
            let db = crate::group_commit::open_database(path.as_ref())
                .map_err(|e| OutboxError(e.to_string()))?;
            let this = Self { db: Arc::new(db) };
            this.write(|t| t.open_table(ENTRIES).map(drop).map_err(|e| e.to_string()))?;
            Ok(this)
        }

        fn write(
            &self,
            f: impl FnOnce(&redb::WriteTransaction) -> Result<(), String>,
        ) -> Result<(), OutboxError> {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| e.to_string())
                .map_err(err("begin"))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| e.to_string())
                .map_err(err("durability"))?;
            f(&txn).map_err(err("write"))?;
            txn.commit()
                .map_err(|e| e.to_string())
                .map_err(err("commit"))
        }

        async fn blocking<T: Send + 'static>(
            &self,
            f: impl FnOnce(Self) -> Result<T, OutboxError> + Send + 'static,
        ) -> Result<T, OutboxError> {
            let this = self.clone();
            tokio::task::spawn_blocking(move || f(this))
                .await
                .map_err(|e| OutboxError(format!("outbox task failed: {e}")))?
        }
    }

    #[async_trait]
    impl Outbox for RedbOutbox {
        async fn put(&self, entry: OutboxEntry) -> Result<(), OutboxError> {
            let json = serde_json::to_string(&entry).map_err(|e| OutboxError(e.to_string()))?;
            self.blocking(move |this| {
                this.write(|t| {
                    let mut table = t.open_table(ENTRIES).map_err(|e| e.to_string())?;
                    table
                        .insert(entry.id.as_str(), json.as_str())
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            })
            .await
        }

        async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
            self.blocking(move |this| {
                let read = || -> Result<Vec<OutboxEntry>, String> {
                    let txn = this.db.begin_read().map_err(|e| e.to_string())?;
                    let table = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
                    let mut out = Vec::new();
                    for row in table.iter().map_err(|e| e.to_string())?.take(limit) {
                        let (_, v) = row.map_err(|e| e.to_string())?;
                        out.push(serde_json::from_str(v.value()).map_err(|e| e.to_string())?);
                    }
                    Ok(out)
                };
                read().map_err(err("read"))
            })
            .await
        }

        async fn remove(&self, id: &str) -> Result<(), OutboxError> {
            let id = id.to_owned();
            self.blocking(move |this| {
                this.write(|t| {
                    let mut table = t.open_table(ENTRIES).map_err(|e| e.to_string())?;
                    table
                        .remove(id.as_str())
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            })
            .await
        }

        async fn len(&self) -> Result<u64, OutboxError> {
            self.blocking(move |this| {
                let read = || -> Result<u64, String> {
                    let txn = this.db.begin_read().map_err(|e| e.to_string())?;
                    let table = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
                    table.len().map_err(|e| e.to_string())
                };
                read().map_err(err("read"))
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(outbox: &dyn Outbox) {
        let m = Message::json(&serde_json::json!({"a": 1}))
            .unwrap()
            .with_key("k");
        let mut e = OutboxEntry::new("ORD-000000000001", &Route::NOTIFY, &m);
        outbox.put(e.clone()).await.unwrap();
        e.attempts = 1;
        e.last_error = Some("down".into());
        outbox.put(e.clone()).await.unwrap();
        outbox
            .put(OutboxEntry::new("ORD-000000000002", &Route::NOTIFY, &m))
            .await
            .unwrap();
        assert_eq!(outbox.len().await.unwrap(), 2);
        let pending = outbox.pending(10).await.unwrap();
        assert_eq!(pending[0], e);
        assert_eq!(pending[0].message(), m);
        assert_eq!(pending[0].route(), Route::NOTIFY);
        outbox.remove("ORD-000000000001").await.unwrap();
        outbox.remove("missing").await.unwrap();
        assert_eq!(outbox.len().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn memory_outbox_keeps_replaces_and_removes() {
        exercise(&MemoryOutbox::new()).await;
    }

    #[cfg(feature = "redb")]
    #[tokio::test]
    async fn redb_outbox_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/outbox.redb");
        {
            let o = RedbOutbox::open(&path).unwrap();
            exercise(&o).await;
        }
        let o = RedbOutbox::open(&path).unwrap();
        assert_eq!(o.len().await.unwrap(), 1);
        assert_eq!(o.pending(10).await.unwrap()[0].id, "ORD-000000000002");
    }
}
