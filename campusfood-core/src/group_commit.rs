//! Group commit for redb: many concurrent callers, one durable commit.
//!
//! A durable commit costs one `fsync` (~0.25 ms here), which would cap a
//! store at a few thousand writes per second if every write committed
//! alone. [`GroupCommit`] runs one writer thread that takes every operation
//! queued at that moment (up to [`MAX_BATCH`]), applies them in
//! one write transaction in arrival order, commits once with
//! `Durability::Immediate`, and only then answers every caller. Idle, an
//! operation costs one `fsync`; under load, hundreds share one.
//!
//! If a batch cannot be applied or committed, every operation in it gets the
//! error and the transaction is dropped uncommitted (redb 4: a failed
//! `commit` may still have become durable, and the database then refuses
//! writes until reopened — callers' operations should be idempotent so a
//! retry after a restart is safe).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use redb::{Database, Durability, WriteTransaction};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Why an operation was not committed.
#[derive(Debug, Clone, Error)]
pub enum CommitError {
    /// The batch could not be applied or committed; nothing of it was.
    #[error("{0}")]
    Storage(String),
    /// The writer has stopped.
    #[error("store is closed")]
    Closed,
}

/// Applies a batch of operations inside one write transaction, returning
/// one answer per operation in order. An `Err` dooms the whole batch.
pub type ApplyBatch<Op, Out> =
    Box<dyn Fn(&WriteTransaction, &[Op]) -> Result<Vec<Out>, String> + Send + 'static>;

/// Whether an operation must be on disk before it is answered. A batch is
/// committed with an `fsync` when any of its operations says so; a batch of
/// only lazy operations is committed without one (it becomes durable with
/// the next durable commit). For bookkeeping whose loss after a crash is
/// harmless, such as forgetting an event that was already published.
pub type NeedsSync<Op> = Box<dyn Fn(&Op) -> bool + Send + 'static>;

struct Request<Op, Out> {
    op: Op,
    reply: oneshot::Sender<Result<Out, CommitError>>,
}

/// A group-committing writer over a redb [`Database`]. See the
/// [module docs](self). Dropping it lets the writer finish what is queued,
/// and waits for it, so the file can be reopened right after.
pub struct GroupCommit<Op, Out> {
    name: &'static str,
    requests: Option<mpsc::Sender<Request<Op, Out>>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl<Op, Out> fmt::Debug for GroupCommit<Op, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("name", &self.name)
            .field("commits", &self.commits.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The most operations applied in one transaction.
pub const MAX_BATCH: usize = 1024;

impl<Op: Send + 'static, Out: Send + 'static> GroupCommit<Op, Out> {
    /// Starts the writer thread `name` over `db`, applying batches with
    /// `apply`; every batch is committed durably.
    pub fn spawn(
        name: &'static str,
        db: Arc<Database>,
        apply: ApplyBatch<Op, Out>,
    ) -> Result<Self, CommitError> {
        Self::spawn_with(name, db, apply, Box::new(|_| true))
    }

    /// Like [`spawn`](Self::spawn), committing a batch durably only when
    /// one of its operations `needs_sync`.
    pub fn spawn_with(
        name: &'static str,
        db: Arc<Database>,
        apply: ApplyBatch<Op, Out>,
        needs_sync: NeedsSync<Op>,
    ) -> Result<Self, CommitError> {
        let (requests, queue) = mpsc::channel(4 * MAX_BATCH);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let writer = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run_writer(name, &db, queue, &apply, &needs_sync, &counter))
            .map_err(|e| CommitError::Storage(format!("starting {name}: {e}")))?;
        Ok(Self {
            name,
            requests: Some(requests),
            writer: Some(writer),
            commits,
        })
    }

    /// Applies `op` durably (in some batch) and returns its answer.
    pub async fn submit(&self, op: Op) -> Result<Out, CommitError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(CommitError::Closed)?;
        requests
            .send(Request { op, reply })
            .await
            .map_err(|_| CommitError::Closed)?;
        answer.await.map_err(|_| CommitError::Closed)?
    }

    /// Diagnostic: batches committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl<Op, Out> Drop for GroupCommit<Op, Out> {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(writer = self.name, "writer thread panicked");
            }
        }
    }
}

fn run_writer<Op, Out>(
    name: &str,
    db: &Database,
    mut queue: mpsc::Receiver<Request<Op, Out>>,
    apply: &ApplyBatch<Op, Out>,
    needs_sync: &NeedsSync<Op>,
    commits: &AtomicU64,
) {
    let mut batch: Vec<Request<Op, Out>> = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.drain(..).map(|r| (r.op, r.reply)).unzip();
        let durable = ops.iter().any(needs_sync);
        match commit_batch(db, apply, &ops, durable) {
            Ok(answers) => {
                commits.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(
                    writer = name,
                    batch = ops.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that went away (cancelled) changes nothing:
                    // the operation stands.
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(error) => {
                tracing::error!(writer = name, batch = ops.len(), %error, "batch failed, nothing committed");
                for reply in replies {
                    let _ = reply.send(Err(CommitError::Storage(error.clone())));
                }
            }
        }
    }
}

fn commit_batch<Op, Out>(
    db: &Database,
    apply: &ApplyBatch<Op, Out>,
    ops: &[Op],
    durable: bool,
) -> Result<Vec<Out>, String> {
    let mut txn = db
        .begin_write()
        .map_err(|e| format!("beginning write transaction: {e}"))?;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|e| format!("setting commit durability: {e}"))?;
    let answers = apply(&txn, ops)?;
    if answers.len() != ops.len() {
        return Err(format!(
            "applied {} answers for {} operations",
            answers.len(),
            ops.len()
        ));
    }
    txn.commit()
        .map_err(|e| format!("committing {} operations: {e}", ops.len()))?;
    Ok(answers)
}

/// Opens (creating) a redb file at `path`, with its parent folders.
pub fn open_database(path: &std::path::Path) -> Result<Database, CommitError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| CommitError::Storage(format!("creating {}: {e}", parent.display())))?;
    }
    Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => CommitError::Storage(in_use(path)),
        e => CommitError::Storage(format!("opening {}: {e}", path.display())),
    })
}

/// What to say when another process holds `path` open: the file, and the
/// two ways out.
fn in_use(path: &std::path::Path) -> String {
    format!(
        "{} is in use by another process. Run this one from another folder \
         (or set {} to another directory), or share the state through Postgres \
         (set {})",
        path.display(),
        crate::config::DATA_DIR_ENV,
        crate::config::DATABASE_URL_ENV,
    )
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<'_, u64, u64> = TableDefinition::new("t");

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_ops_share_commits_and_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open_database(&dir.path().join("x.redb")).unwrap());
        let gc: Arc<GroupCommit<u64, u64>> = Arc::new(
            GroupCommit::spawn(
                "test-writer",
                db.clone(),
                Box::new(|txn, ops| {
                    let mut t = txn.open_table(T).map_err(|e| e.to_string())?;
                    ops.iter()
                        .map(|&k| t.insert(k, k * 2).map(|_| k * 2).map_err(|e| e.to_string()))
                        .collect()
                }),
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..1000u64)
            .map(|k| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.submit(k).await.unwrap() })
            })
            .collect();
        for (k, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), k as u64 * 2);
        }
        assert!(gc.commits() < 500, "{} commits for 1000 ops", gc.commits());
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        assert_eq!(t.get(999).unwrap().unwrap().value(), 1998);
    }

    #[tokio::test]
    async fn a_failing_batch_fails_every_op_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open_database(&dir.path().join("x.redb")).unwrap());
        let gc: GroupCommit<u64, ()> = GroupCommit::spawn(
            "failing",
            db,
            Box::new(|_, _| Err("disk on fire".to_owned())),
        )
        .unwrap();
        assert!(matches!(gc.submit(1).await, Err(CommitError::Storage(e)) if e == "disk on fire"));
    }
}
