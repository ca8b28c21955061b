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
//! How soon an operation is made durable is its [`Persist`] class:
//! [`Now`](Persist::Now) (its own batch's `fsync`, for a caller that waits
//! on each write), [`Deferred`](Persist::Deferred) (answered once durable,
//! but sharing an `fsync` with what comes in the next [`DEFER_LIMIT`], for
//! consumers with many messages in flight) or [`Lazy`](Persist::Lazy)
//! (bookkeeping whose loss after a crash is harmless). A store picks the
//! class of its writes with a [`Flush`].
//!
//! If a batch cannot be applied or committed, every operation in it gets the
//! error and the transaction is dropped uncommitted (redb 4: a failed
//! `commit` may still have become durable — callers' operations should be
//! idempotent so a retry is safe). redb then refuses every write until the
//! file is reopened, so the writer reopens it ([`SharedDb`]) before the
//! next batch; until a batch commits again, [`GroupCommit::failure`] says
//! why the last one failed (services answer `GET /health` with 503 then).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Why an operation was not committed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
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

/// When an operation is made durable, and when it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Persist {
    /// Its batch is committed with an `fsync`, and it is answered then:
    /// the shortest wait, for a caller that waits on each write (an HTTP
    /// request).
    Now,
    /// Answered only once it is on disk, but it shares an `fsync` with
    /// what follows: its batch is committed without one (unless another
    /// operation in it is [`Now`](Self::Now)), and it is answered with the
    /// next durable commit — the next batch with a `Now` operation, or one
    /// the writer makes its defer limit ([`Flush::defer_limit`], by default
    /// [`DEFER_LIMIT`]) after the first operation still waiting. For callers with many writes in flight that can each wait a
    /// few milliseconds (a queue consumer acking after the durable effect).
    Deferred,
    /// Answered as soon as its batch is committed, which needs no `fsync`
    /// of its own: it becomes durable with the next durable commit. For
    /// bookkeeping whose loss after a crash is harmless, such as forgetting
    /// an event that was already published.
    Lazy,
}

/// The [`Persist`] class of each operation.
pub type PersistOf<Op> = Box<dyn Fn(&Op) -> Persist + Send + 'static>;

/// How a store's writes that must be durable before they are answered
/// reach the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flush {
    /// Each batch with its own `fsync` ([`Persist::Now`]): for a store
    /// whose callers wait on each write, such as a service answering HTTP
    /// requests.
    #[default]
    Each,
    /// Batches share `fsync`s, one at least every [`DEFER_LIMIT`]
    /// ([`Persist::Deferred`]): fewer `fsync`s, each answer a few
    /// milliseconds later. For a store written by queue consumers.
    Shared,
    /// Like [`Shared`](Self::Shared), with an `fsync` at least every given
    /// duration instead of [`DEFER_LIMIT`]: longer shares more and answers
    /// later. [`Flush::sharing_within`] makes one from a setting.
    SharedWithin(Duration),
}

impl Flush {
    /// The class of a durable write in a store flushed this way.
    pub fn persist(self) -> Persist {
        match self {
            Self::Each => Persist::Now,
            Self::Shared | Self::SharedWithin(_) => Persist::Deferred,
        }
    }

    /// The longest a deferred write waits for its `fsync`
    /// ([`DEFER_LIMIT`] unless [`SharedWithin`](Self::SharedWithin) says
    /// otherwise; a store flushed [`Each`](Self::Each) defers nothing).
    pub fn defer_limit(self) -> Duration {
        match self {
            Self::SharedWithin(limit) => limit,
            Self::Each | Self::Shared => DEFER_LIMIT,
        }
    }

    /// Writes sharing `fsync`s within `limit`; a zero `limit` is
    /// [`Each`](Self::Each) (every write synced at once).
    pub fn sharing_within(limit: Duration) -> Self {
        if limit.is_zero() {
            Self::Each
        } else {
            Self::SharedWithin(limit)
        }
    }
}

/// The longest a [`Persist::Deferred`] operation waits, after its commit,
/// for the durable commit that answers it.
///
/// Part B's three stores use it unless configured otherwise
/// (`RabbitConfig::store_flush`, `CAMPUSFOOD_DEFER_MS`), and it trades the order service's
/// acceptance against an order's time to `notified`. With 2, 5, 10 and
/// 20 ms the acceptance p50 (`lab perf B`, separate processes) was
/// 0.96–0.99, 0.83–0.89, 0.76–0.77 and 0.68–0.71 ms, against 1.28–1.37 ms
/// with every write synced at once; the lab's B1 (one client, in process)
/// measured an end-to-end p50 of 11.7–12.4, 16.0–16.1 and 23.2–26.2 ms
/// with 2, 5 and 10 ms, against 9.4–9.6 ms. 5 ms, like Part C's producer's
/// `linger.ms`.
pub const DEFER_LIMIT: Duration = Duration::from_millis(5);

/// Opens the database (again).
pub type Opener = Box<dyn Fn() -> Result<Database, String> + Send + Sync>;

/// A redb [`Database`] shared by a [`GroupCommit`] writer and readers, that
/// the writer reopens after a failed write. Readers take the current
/// handle for each read ([`SharedDb::get`]); while the file is being
/// reopened they get an error, and try again later.
pub struct SharedDb {
    slot: RwLock<Option<Arc<Database>>>,
    open: Opener,
    label: String,
}

impl fmt::Debug for SharedDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedDb")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// How long a reopen waits for readers to let go of the old handle.
const REOPEN_PATIENCE: Duration = Duration::from_secs(2);

impl SharedDb {
    /// The redb file at `path` (created with its folder), reopened from
    /// the same path after a failed write.
    pub fn open_path(path: &std::path::Path) -> Result<Arc<Self>, CommitError> {
        let owned = path.to_path_buf();
        Self::with_opener(
            &path.display().to_string(),
            Box::new(move || open_database(&owned).map_err(|e| e.to_string())),
        )
    }

    /// A database opened (and reopened) by `open`; `label` names it in
    /// errors.
    pub fn with_opener(label: &str, open: Opener) -> Result<Arc<Self>, CommitError> {
        let db = open().map_err(CommitError::Storage)?;
        Ok(Arc::new(Self {
            slot: RwLock::new(Some(Arc::new(db))),
            open,
            label: label.to_owned(),
        }))
    }

    /// The current handle.
    ///
    /// # Errors
    /// [`CommitError::Storage`] while the file is being reopened.
    pub fn get(&self) -> Result<Arc<Database>, CommitError> {
        self.slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                CommitError::Storage(format!(
                    "{} is being reopened after a failed write",
                    self.label
                ))
            })
    }

    /// Drops the current handle and opens the file again, waiting (at most
    /// [`REOPEN_PATIENCE`]) for readers to let go of the old one.
    fn reopen(&self) -> Result<(), String> {
        let old = self.slot.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
        let deadline = Instant::now() + REOPEN_PATIENCE;
        loop {
            match (self.open)() {
                Ok(db) => {
                    *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

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
    failure: Arc<Mutex<Option<String>>>,
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
    /// `apply`; every operation is made durable as `flush` says.
    pub fn spawn(
        name: &'static str,
        db: Arc<SharedDb>,
        apply: ApplyBatch<Op, Out>,
        flush: Flush,
    ) -> Result<Self, CommitError> {
        let persist = flush.persist();
        Self::spawn_with(
            name,
            db,
            apply,
            Box::new(move |_| persist),
            flush.defer_limit(),
        )
    }

    /// Like [`spawn`](Self::spawn), each operation made durable as its
    /// [`Persist`] class (`persist_of`) says; a [`Persist::Deferred`] one
    /// waits at most `defer_limit` for its `fsync`
    /// ([`Flush::defer_limit`]).
    pub fn spawn_with(
        name: &'static str,
        db: Arc<SharedDb>,
        apply: ApplyBatch<Op, Out>,
        persist_of: PersistOf<Op>,
        defer_limit: Duration,
    ) -> Result<Self, CommitError> {
        let (requests, queue) = mpsc::channel(4 * MAX_BATCH);
        let commits = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        // The writer waits for requests with a deadline (`defer_limit`) on
        // a timer of its own.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| CommitError::Storage(format!("starting {name}'s timer: {e}")))?;
        let writer = Writer {
            name,
            db,
            apply,
            persist_of,
            defer_limit,
            commits: commits.clone(),
            failure: failure.clone(),
            waiting: Vec::new(),
            due: None,
        };
        let writer = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || writer.run(&timer, queue))
            .map_err(|e| CommitError::Storage(format!("starting {name}: {e}")))?;
        Ok(Self {
            name,
            requests: Some(requests),
            writer: Some(writer),
            commits,
            failure,
        })
    }

    /// Why the last batch failed, while no batch has committed since: the
    /// store cannot write now (a full disk, an I/O error).
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

/// A caller's answer, waiting for the durable commit that releases it.
type Waiting<Out> = (oneshot::Sender<Result<Out, CommitError>>, Out);

/// The writer thread's state.
struct Writer<Op, Out> {
    name: &'static str,
    db: Arc<SharedDb>,
    apply: ApplyBatch<Op, Out>,
    persist_of: PersistOf<Op>,
    /// The longest a deferred operation waits ([`Flush::defer_limit`]).
    defer_limit: Duration,
    commits: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<String>>>,
    /// Deferred operations committed without an `fsync`, oldest first.
    waiting: Vec<Waiting<Out>>,
    /// When the oldest of `waiting` must be made durable.
    due: Option<Instant>,
}

impl<Op, Out> Writer<Op, Out> {
    fn run(mut self, timer: &tokio::runtime::Runtime, mut queue: mpsc::Receiver<Request<Op, Out>>) {
        let mut batch: Vec<Request<Op, Out>> = Vec::new();
        loop {
            let first = match self.due {
                None => queue.blocking_recv(),
                Some(due) => {
                    // The timeout is made inside the timer's runtime, whose
                    // clock it needs.
                    let next = timer.block_on(async {
                        tokio::time::timeout_at(due.into(), queue.recv()).await
                    });
                    match next {
                        Ok(next) => next,
                        Err(_) => {
                            // Nothing came to share an fsync with.
                            self.sync_waiting();
                            continue;
                        }
                    }
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let (ops, replies): (Vec<Op>, Vec<_>) =
                batch.drain(..).map(|r| (r.op, r.reply)).unzip();
            let classes: Vec<Persist> = ops.iter().map(&self.persist_of).collect();
            // `due` is set exactly while deferred operations wait.
            let durable =
                classes.contains(&Persist::Now) || self.due.is_some_and(|due| started >= due);
            match self.commit(&ops, durable) {
                Ok(answers) => {
                    tracing::trace!(
                        writer = self.name,
                        batch = ops.len(),
                        durable,
                        micros = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    for ((reply, answer), class) in replies.into_iter().zip(answers).zip(classes) {
                        if class == Persist::Deferred && !durable {
                            self.waiting.push((reply, answer));
                        } else {
                            // A caller that went away (cancelled) changes
                            // nothing: the operation stands.
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    if durable {
                        self.release_waiting();
                    } else if !self.waiting.is_empty() && self.due.is_none() {
                        self.due = Some(Instant::now() + self.defer_limit);
                    }
                }
                Err(error) => {
                    tracing::error!(writer = self.name, batch = ops.len(), %error, "batch failed, nothing committed");
                    // Earlier deferred operations were not made durable
                    // either.
                    let failed: Vec<_> = replies
                        .into_iter()
                        .chain(self.waiting.drain(..).map(|(reply, _)| reply))
                        .collect();
                    self.fail(failed, error);
                }
            }
        }
        // Closed: what is still waiting is made durable before the writer
        // stops.
        if !self.waiting.is_empty() {
            self.sync_waiting();
        }
    }

    /// Makes the waiting operations durable with a commit of its own, and
    /// answers them.
    fn sync_waiting(&mut self) {
        let started = Instant::now();
        match self.commit(&[], true) {
            Ok(_) => {
                tracing::trace!(
                    writer = self.name,
                    waiting = self.waiting.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "deferred operations made durable"
                );
                self.release_waiting();
            }
            Err(error) => {
                tracing::error!(writer = self.name, waiting = self.waiting.len(), %error, "deferred operations not made durable");
                let failed: Vec<_> = self.waiting.drain(..).map(|(reply, _)| reply).collect();
                self.fail(failed, error);
            }
        }
    }

    /// Answers the waiting operations: a durable commit has covered them.
    fn release_waiting(&mut self) {
        for (reply, answer) in self.waiting.drain(..) {
            let _ = reply.send(Ok(answer));
        }
        self.due = None;
    }

    /// Answers `replies` with `error`, and reopens the file: redb refuses
    /// every write after a failed one until then.
    fn fail(
        &mut self,
        replies: impl IntoIterator<Item = oneshot::Sender<Result<Out, CommitError>>>,
        error: String,
    ) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
        for reply in replies {
            let _ = reply.send(Err(CommitError::Storage(error.clone())));
        }
        self.due = None;
        match self.db.reopen() {
            Ok(()) => {
                tracing::warn!(writer = self.name, "reopened after a failed write")
            }
            Err(e) => {
                tracing::error!(writer = self.name, error = %e, "cannot reopen; trying again with the next batch")
            }
        }
    }

    /// One batch in one transaction, on the current handle (reopening
    /// first if an earlier reopen failed), with an `fsync` if `durable`.
    fn commit(&self, ops: &[Op], durable: bool) -> Result<Vec<Out>, String> {
        let db = match self.db.get() {
            Ok(db) => db,
            Err(_) => {
                self.db.reopen()?;
                self.db.get().map_err(|e| e.to_string())?
            }
        };
        let answers = commit_batch(&db, &self.apply, ops, durable)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(answers)
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
    // An empty batch only makes earlier commits durable.
    let answers = if ops.is_empty() {
        Vec::new()
    } else {
        apply(&txn, ops)?
    };
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
pub(crate) mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<'_, u64, u64> = TableDefinition::new("t");

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_ops_share_commits_and_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = SharedDb::open_path(&dir.path().join("x.redb")).unwrap();
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
                Flush::Each,
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
        let read = db.get().unwrap().begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        assert_eq!(t.get(999).unwrap().unwrap().value(), 1998);
    }

    #[tokio::test]
    async fn a_failing_batch_fails_every_op_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = SharedDb::open_path(&dir.path().join("x.redb")).unwrap();
        let gc: GroupCommit<u64, ()> = GroupCommit::spawn(
            "failing",
            db,
            Box::new(|_, _| Err("disk on fire".to_owned())),
            Flush::Each,
        )
        .unwrap();
        assert!(matches!(gc.submit(1).await, Err(CommitError::Storage(e)) if e == "disk on fire"));
    }

    /// An operation and its class, for the writers below.
    type Classed = (u64, Persist);

    /// Writes each operation's key (as its value), answering the key.
    fn write_keys(txn: &WriteTransaction, ops: &[Classed]) -> Result<Vec<u64>, String> {
        let mut t = txn.open_table(T).map_err(|e| e.to_string())?;
        ops.iter()
            .map(|&(k, _)| t.insert(k, k).map(|_| k).map_err(|e| e.to_string()))
            .collect()
    }

    /// A writer of `(key, class)` operations (each writes `key`) on
    /// `db`, deferred ones waiting at most `defer_limit`.
    fn classed_writer(db: Arc<SharedDb>, defer_limit: Duration) -> GroupCommit<Classed, u64> {
        GroupCommit::spawn_with(
            "classed-writer",
            db,
            Box::new(write_keys),
            Box::new(|&(_, class)| class),
            defer_limit,
        )
        .unwrap()
    }

    /// Waits (10 s at most) until `gc` has committed `n` transactions.
    async fn committed(gc: &GroupCommit<Classed, u64>, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while gc.commits() < n {
            assert!(
                Instant::now() < deadline,
                "{} commits, not {n}",
                gc.commits()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn each_class_is_answered_when_it_should_be() {
        let backend = FlakyBackend::default();
        let gc = classed_writer(backend.shared_db(), Duration::from_millis(5));
        let syncs = || backend.syncs.load(Ordering::SeqCst);

        let before = syncs();
        assert_eq!(gc.submit((1, Persist::Now)).await.unwrap(), 1);
        assert_eq!(syncs(), before + 1, "a Now operation has its own fsync");

        let before = syncs();
        assert_eq!(gc.submit((2, Persist::Lazy)).await.unwrap(), 2);
        assert_eq!(syncs(), before, "a Lazy operation waits for no fsync");

        // Alone, a deferred operation is made durable by the writer's own
        // commit once the limit has passed, and only then answered.
        let before = (syncs(), gc.commits());
        assert_eq!(gc.submit((3, Persist::Deferred)).await.unwrap(), 3);
        assert_eq!(syncs(), before.0 + 1, "answered after an fsync");
        assert_eq!(
            gc.commits(),
            before.1 + 2,
            "its batch, then an empty durable commit"
        );
    }

    #[test]
    fn a_flush_carries_its_defer_limit() {
        assert_eq!(Flush::sharing_within(Duration::ZERO), Flush::Each);
        let limit = Duration::from_millis(20);
        assert_eq!(Flush::sharing_within(limit), Flush::SharedWithin(limit));
        assert_eq!(Flush::SharedWithin(limit).defer_limit(), limit);
        assert_eq!(Flush::SharedWithin(limit).persist(), Persist::Deferred);
        assert_eq!(Flush::Shared.defer_limit(), DEFER_LIMIT);
        assert_eq!(Flush::Each.persist(), Persist::Now);
    }

    /// A writer of `(key, _)` operations whose class comes from `flush`
    /// (the class in the tuple is ignored).
    fn flushed_writer(db: Arc<SharedDb>, flush: Flush) -> GroupCommit<Classed, u64> {
        GroupCommit::spawn("flushed-writer", db, Box::new(write_keys), flush).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_spawned_with_a_flush_defers_as_long_as_it_says() {
        // A short limit: answered after the writer's own durable commit.
        let backend = FlakyBackend::default();
        let gc = flushed_writer(
            backend.shared_db(),
            Flush::SharedWithin(Duration::from_millis(20)),
        );
        let before = backend.syncs.load(Ordering::SeqCst);
        assert_eq!(gc.submit((1, Persist::Now)).await.unwrap(), 1);
        assert_eq!(backend.syncs.load(Ordering::SeqCst), before + 1);
        assert_eq!(gc.commits(), 2, "its batch, then an empty durable commit");

        // A limit no test waits for: committed, but not answered.
        let backend = FlakyBackend::default();
        let gc = Arc::new(flushed_writer(
            backend.shared_db(),
            Flush::SharedWithin(Duration::from_secs(600)),
        ));
        let before = backend.syncs.load(Ordering::SeqCst);
        let deferred = {
            let gc = gc.clone();
            tokio::spawn(async move { gc.submit((2, Persist::Now)).await })
        };
        committed(&gc, 1).await;
        // Not a wait for a condition: long enough that the default limit
        // would have answered it.
        tokio::time::sleep(DEFER_LIMIT * 4).await;
        assert!(
            !deferred.is_finished(),
            "answered before an fsync covers it"
        );
        assert_eq!(backend.syncs.load(Ordering::SeqCst), before);

        // Each: its own fsync, at once.
        let backend = FlakyBackend::default();
        let gc = flushed_writer(backend.shared_db(), Flush::sharing_within(Duration::ZERO));
        let before = backend.syncs.load(Ordering::SeqCst);
        assert_eq!(gc.submit((3, Persist::Deferred)).await.unwrap(), 3);
        assert_eq!(backend.syncs.load(Ordering::SeqCst), before + 1);
        assert_eq!(gc.commits(), 1, "one durable commit");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_operations_share_the_next_durable_commit() {
        let backend = FlakyBackend::default();
        // A limit no test waits for: only a Now operation can answer them.
        let gc = Arc::new(classed_writer(
            backend.shared_db(),
            Duration::from_secs(600),
        ));
        let before = backend.syncs.load(Ordering::SeqCst);
        // One at a time, each committed before the next is sent, so that
        // all three wait when the Now operation comes.
        let mut deferred = Vec::new();
        for k in 0..3u64 {
            let gc2 = gc.clone();
            deferred.push(tokio::spawn(async move {
                gc2.submit((k, Persist::Deferred)).await
            }));
            committed(&gc, k + 1).await;
        }
        tokio::task::yield_now().await;
        assert!(
            deferred.iter().all(|d| !d.is_finished()),
            "no deferred operation is answered before a durable commit"
        );
        assert_eq!(gc.submit((10, Persist::Now)).await.unwrap(), 10);
        for (k, d) in deferred.into_iter().enumerate() {
            assert_eq!(d.await.unwrap().unwrap(), k as u64);
        }
        assert_eq!(
            backend.syncs.load(Ordering::SeqCst),
            before + 1,
            "four operations, one fsync"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_operations_fail_with_the_commit_that_should_have_made_them_durable() {
        let backend = FlakyBackend::default();
        let gc = Arc::new(classed_writer(
            backend.shared_db(),
            Duration::from_secs(600),
        ));
        let deferred = {
            let gc = gc.clone();
            tokio::spawn(async move { gc.submit((1, Persist::Deferred)).await })
        };
        committed(&gc, 1).await;
        backend.failing.store(true, Ordering::SeqCst);
        assert!(
            gc.submit((2, Persist::Now)).await.is_err(),
            "the disk is full"
        );
        let answer = deferred.await.unwrap();
        assert!(
            matches!(&answer, Err(CommitError::Storage(e)) if e.contains("no space left")),
            "the deferred operation was never made durable: {answer:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closing_writer_makes_deferred_operations_durable_first() {
        let backend = FlakyBackend::default();
        // Held here, so that the file stays open after the writer stops
        // (closing it would sync it).
        let db = backend.shared_db();
        let gc = Arc::new(classed_writer(db.clone(), Duration::from_secs(600)));
        let deferred = {
            let gc = gc.clone();
            tokio::spawn(async move { gc.submit((7, Persist::Deferred)).await })
        };
        committed(&gc, 1).await;
        let before = backend.syncs.load(Ordering::SeqCst);
        // Its caller goes away: the operation stands, and nobody waits.
        deferred.abort();
        let _ = deferred.await;
        // The last handle: dropping it waits for the writer to stop.
        let gc = Arc::into_inner(gc).expect("the aborted task let go of its handle");
        tokio::task::spawn_blocking(move || drop(gc)).await.unwrap();
        assert_eq!(
            backend.syncs.load(Ordering::SeqCst),
            before + 1,
            "made durable before the writer stopped"
        );
        drop(db);
    }

    /// An in-memory redb backend whose writes fail while `failing` is set:
    /// a full disk, an I/O error. It counts its `fsync`s.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FlakyBackend {
        inner: Arc<redb::backends::InMemoryBackend>,
        pub(crate) failing: Arc<std::sync::atomic::AtomicBool>,
        pub(crate) syncs: Arc<AtomicU64>,
    }

    impl FlakyBackend {
        fn check(&self) -> Result<(), std::io::Error> {
            if self.failing.load(Ordering::SeqCst) {
                Err(std::io::Error::other("no space left on device"))
            } else {
                Ok(())
            }
        }

        /// A database on this backend, reopened on the same bytes.
        pub(crate) fn shared_db(&self) -> Arc<SharedDb> {
            let backend = self.clone();
            SharedDb::with_opener(
                "flaky",
                Box::new(move || {
                    Database::builder()
                        .create_with_backend(backend.clone())
                        .map_err(|e| e.to_string())
                }),
            )
            .unwrap()
        }
    }

    impl redb::StorageBackend for FlakyBackend {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.check()?;
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    #[tokio::test]
    async fn after_a_failed_write_the_store_reopens_and_writes_again() {
        let backend = FlakyBackend::default();
        let db = backend.shared_db();
        let gc: GroupCommit<u64, u64> = GroupCommit::spawn(
            "flaky-writer",
            db.clone(),
            Box::new(|txn, ops| {
                let mut t = txn.open_table(T).map_err(|e| e.to_string())?;
                ops.iter()
                    .map(|&k| t.insert(k, k).map(|_| k).map_err(|e| e.to_string()))
                    .collect()
            }),
            Flush::Each,
        )
        .unwrap();
        assert_eq!(gc.submit(1).await.unwrap(), 1);
        assert_eq!(gc.failure(), None);

        backend.failing.store(true, Ordering::SeqCst);
        assert!(gc.submit(2).await.is_err(), "the disk is full");
        let failure = gc.failure().expect("the failure is reported");
        assert!(failure.contains("no space left"), "{failure}");

        // The disk has room again: without a reopen redb would refuse
        // every write from now on (PreviousIo).
        backend.failing.store(false, Ordering::SeqCst);
        assert_eq!(gc.submit(3).await.unwrap(), 3);
        assert_eq!(gc.failure(), None, "healthy again");
        let read = db.get().unwrap().begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        assert_eq!(t.get(1).unwrap().unwrap().value(), 1);
        assert!(t.get(2).unwrap().is_none(), "the failed write is not there");
        assert_eq!(t.get(3).unwrap().unwrap().value(), 3);
    }
}
