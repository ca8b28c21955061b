//! Exactly-once read-process-write: see [`TransactionalProcessor`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::bounded;
use campusfood_core::metric::{self, disposition};
use campusfood_core::transport::{
    Delivery, Message, Route, StopSignal, Subscription, TransportError, headers,
};
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::Instrument;

use super::consumer::{Record, consumer_config};
use super::context::KafkaContext;
use super::{
    KafkaProducer, KafkaTransport, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER,
    ORIGIN_TOPIC_HEADER, kafka_headers, producer_config, record, unavailable,
};

/// How long to wait before trying a batch again after Kafka failed it.
const BACKOFF: Duration = Duration::from_secs(1);

/// What a [`Processor`] makes of one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: produce these records (possibly none), atomically with the
    /// input record's offset.
    Emit(Vec<(Route, Message)>),
    /// Failed for a reason that may pass: hand the same record again after
    /// the retry delay (nothing after it in its partition goes first), until
    /// [`TransactionalOptions::max_attempts`], then dead-letter it.
    Retry {
        /// Why, for logs and the dead-letter headers.
        reason: String,
    },
    /// Can never succeed: write it to the dead-letter topic, atomically
    /// with its offset.
    DeadLetter {
        /// Why, for the dead-letter headers.
        reason: String,
    },
    /// The processor's own store does not answer — not the record's fault:
    /// hand the same record again after the retry delay, as for `Retry`,
    /// without counting an attempt, so an outage never dead-letters it.
    Unavailable {
        /// Why, for logs.
        reason: String,
    },
}

impl Outcome {
    /// Whether the record is to be handed again (`Retry` or
    /// `Unavailable`): nothing after it in its partition may go first.
    pub fn is_retry(&self) -> bool {
        matches!(self, Self::Retry { .. } | Self::Unavailable { .. })
    }
}

/// The processing step of a [`TransactionalProcessor`].
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Processes one input record. May be called again for the same record
    /// when a transaction is aborted, so effects outside Kafka must be
    /// idempotent.
    async fn process(&self, delivery: Delivery) -> Outcome;

    /// Processes a batch of input records (in offset order per partition),
    /// returning one [`Outcome`] per record, in the same order. The
    /// [`TransactionalProcessor`] calls this, once per transaction; outputs
    /// are produced in record order whatever order the work was done in.
    ///
    /// A processor may decide the records concurrently; records after one
    /// that ends in [`Outcome::Retry`] are not committed in this
    /// transaction and are handed again later (so, as with `process`,
    /// effects outside Kafka must be idempotent). Fewer outcomes than
    /// records: the first record without one counts as a `Retry`.
    ///
    /// The default calls [`process`](Self::process) for each record in
    /// turn and stops after the first `Retry`.
    async fn process_batch(&self, deliveries: Vec<Delivery>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let outcome = self.process(delivery).await;
            let retry = outcome.is_retry();
            outcomes.push(outcome);
            if retry {
                break;
            }
        }
        outcomes
    }
}

/// How a [`TransactionalProcessor`] consumes and commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionalOptions {
    /// The consumer group the input offsets are committed for.
    pub group: String,
    /// The producer's `transactional.id`: stable across restarts of one
    /// instance, distinct between instances running at once.
    pub transactional_id: String,
    /// Most input records in one transaction.
    pub max_batch: usize,
    /// How long to gather more records once the first of a batch arrived.
    pub max_batch_wait: Duration,
    /// Attempts before a record the processor keeps failing is
    /// dead-lettered.
    pub max_attempts: u32,
    /// How long to wait before handing a failed record again.
    pub retry_delay: Duration,
    /// `transaction.timeout.ms`: how long the broker lets a transaction stay
    /// open. A process killed mid-transaction holds back `read_committed`
    /// readers of its outputs (and the next owner of its partitions) until
    /// the broker aborts it after this long, so it is short; it must still
    /// exceed the time one batch takes.
    pub transaction_timeout: Duration,
}

impl TransactionalOptions {
    /// Options for `group` and `transactional_id`, with batches of up to
    /// 500 records gathered for up to 50 ms, and 5 attempts a second apart.
    pub fn new(group: impl Into<String>, transactional_id: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            transactional_id: transactional_id.into(),
            max_batch: 500,
            max_batch_wait: Duration::from_millis(50),
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            transaction_timeout: Duration::from_secs(15),
        }
    }

    /// A `transactional.id` for this process: `<prefix>-<pid>-<random>`.
    /// Distinct between processes running at once (on one host or several),
    /// so several instances in one group never fence each other; a zombie
    /// (a member whose partitions were reassigned) is fenced by the group
    /// generation its offsets are committed with instead (KIP-447).
    pub fn process_unique_id(prefix: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS's randomness, per process.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("{prefix}-{:x}-{:08x}", std::process::id(), random as u32)
    }
}

/// Exactly-once read-process-write: a consumer reading committed records
/// only (`isolation.level=read_committed`) and a transactional producer
/// (`transactional.id`). Per batch of input records:
///
/// 1. `begin_transaction`;
/// 2. hand the batch to the [`Processor`] ([`Processor::process_batch`])
///    and produce what it emits for each record (and dead letters), in
///    record order, inside the transaction;
/// 3. `send_offsets_to_transaction` with the consumer's group metadata —
///    the input offsets commit *in* the transaction;
/// 4. `commit_transaction`.
///
/// Either all of a batch's outputs and its input offsets become visible to
/// `read_committed` readers, or none do: on any failure the transaction is
/// aborted and the consumer rewound to the batch's first records, which are
/// then read and processed again. A stale member (after a rebalance) or a
/// second instance with the same `transactional.id` is fenced by the broker
/// and cannot commit. The processor's *own* side effects (outside Kafka)
/// are not covered, so it must be idempotent — as the stock ledger is.
/// Outputs of an aborted transaction may be in the log: readers of the
/// output topics must read with `isolation.level=read_committed`
/// (librdkafka's default, and what [`KafkaTransport`] subscriptions use).
///
/// `Retry` from the processor commits the records before the failing one,
/// rewinds to it and hands it again after the retry delay, up to the
/// maximum attempts; then it is dead-lettered, like `DeadLetter`, to
/// `<topic>.dlq` within the transaction.
///
/// Create with [`TransactionalProcessor::new`], run with
/// [`TransactionalProcessor::spawn`].
pub struct TransactionalProcessor {
    transport: KafkaTransport,
    consumer: Arc<StreamConsumer<RebalanceCount>>,
    producer: KafkaProducer,
    processor: Arc<dyn Processor>,
    options: TransactionalOptions,
    route: Route,
    topic: String,
    dead_letters: String,
    timeout: Duration,
    /// Failed attempts so far of records not yet done, by partition and
    /// offset.
    failures: HashMap<(i32, i64), u32>,
}

impl fmt::Debug for TransactionalProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalProcessor")
            .field("topic", &self.topic)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The transactional consumer's context: [`KafkaContext`]'s logging, and a
/// count of the rebalances the consumer has taken part in (each revoke and
/// each assignment), so that a batch gathered across one is told apart.
#[derive(Debug, Default)]
struct RebalanceCount(AtomicU64);

impl RebalanceCount {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ClientContext for RebalanceCount {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        KafkaContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        KafkaContext.error(error, reason);
    }
}

impl ConsumerContext for RebalanceCount {
    // Served inside the consumer's poll, before the records that follow it:
    // a record received after the count moved was fetched under the new
    // assignment. No offsets are stored to commit here: they commit in the
    // transactions.
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::debug!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Assign(tpl) => {
                tracing::debug!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// Records gathered for one transaction, all received under one
/// assignment, and the consumer's group metadata (member, generation) of
/// that assignment: the transaction's offsets are sent with it, so that a
/// rebalance since makes the broker refuse them.
struct Batch {
    records: Vec<Record>,
    group: Option<ConsumerGroupMetadata>,
}

/// How a batch ended.
enum BatchEnd {
    /// Committed, or aborted and rewound: carry on.
    Continue,
    /// A stop came while waiting to retry.
    Stopped,
    /// The producer cannot go on (fenced by a newer instance).
    Fatal,
}

/// What the processor made of a record, ready to produce.
enum Outputs {
    Records(Vec<(String, Route, Message)>),
    /// Hand the record again; `counted` if this used up an attempt.
    Retry {
        reason: String,
        counted: bool,
    },
}

fn txn_error(what: &str, e: &KafkaError) -> String {
    format!("{what}: {e}")
}

fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_fatal())
}

impl TransactionalProcessor {
    /// Subscribes a `read_committed` consumer in `options.group` to
    /// `input`'s topic and initialises a transactional producer (fencing
    /// any older instance with the same `transactional_id`).
    ///
    /// # Errors
    /// [`TransportError::UnknownRoute`] for a route with no topic,
    /// [`TransportError::Unavailable`] when Kafka refuses or does not
    /// answer.
    pub async fn new(
        transport: &KafkaTransport,
        input: &Route,
        processor: Arc<dyn Processor>,
        options: TransactionalOptions,
    ) -> Result<Self, TransportError> {
        let config = transport.config().clone();
        let topic = transport.ensure_route_topic(input).await?;
        let dead_letters = KafkaTransport::dead_letter_topic(&topic);
        transport.create_topic(&dead_letters, 1).await?;

        let mut pc = producer_config(&config);
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        let timeout_ms = options.transaction_timeout.as_millis().to_string();
        pc.set("transactional.id", &options.transactional_id)
            .set("transaction.timeout.ms", &timeout_ms)
            .set("message.timeout.ms", &timeout_ms);
        let producer: KafkaProducer = pc.create_with_context(KafkaContext).map_err(|e| {
            unavailable(
                input,
                format!("cannot create a transactional producer: {e}"),
            )
        })?;
        let p = producer.clone();
        let timeout = config.request_timeout;
        tokio::task::spawn_blocking(move || p.init_transactions(timeout))
            .await
            .map_err(|e| unavailable(input, e))?
            .map_err(|e| unavailable(input, txn_error("cannot initialise transactions", &e)))?;

        let mut cc = consumer_config(&config, &options.group);
        cc.set("isolation.level", "read_committed");
        let consumer: StreamConsumer<RebalanceCount> = cc
            .create_with_context(RebalanceCount::default())
            .map_err(|e| unavailable(input, format!("cannot create a consumer: {e}")))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| unavailable(input, format!("cannot subscribe to {topic}: {e}")))?;
        metric::register_consumer(input.as_str());
        Ok(Self {
            transport: transport.clone(),
            consumer: Arc::new(consumer),
            producer,
            processor,
            options,
            route: input.clone(),
            topic,
            dead_letters,
            timeout,
            failures: HashMap::new(),
        })
    }

    /// Runs the processor on a task until the returned subscription is
    /// stopped. Stopping finishes (commits) the batch in hand.
    pub fn spawn(self) -> Subscription {
        let span = tracing::info_span!(
            "kafka_transactional",
            topic = %self.topic,
            group = %self.options.group,
            transactional_id = %self.options.transactional_id
        );
        Subscription::spawn(move |stop| self.run(stop).instrument(span))
    }

    async fn run(mut self, mut stop: StopSignal) {
        tracing::info!("transactional processor started");
        while let Some(batch) = self.gather(&mut stop).await {
            match self.run_batch(&batch.records, batch.group, &mut stop).await {
                BatchEnd::Continue if !stop.is_stopped() => {}
                BatchEnd::Continue | BatchEnd::Stopped => break,
                BatchEnd::Fatal => {
                    tracing::error!("transactional producer failed fatally: stopping");
                    break;
                }
            }
        }
        let consumer = self.consumer;
        let closing = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        });
        if tokio::time::timeout(self.timeout * 3, closing)
            .await
            .is_err()
        {
            tracing::warn!("consumer still closing");
        }
        tracing::info!("transactional processor stopped");
    }

    /// Waits for a record, then gathers more for up to `max_batch_wait`.
    /// `None` when stopped before any record came.
    ///
    /// Every record of the batch was received under the assignment the
    /// batch started with. A rebalance is served inside the consumer's
    /// poll, so one can come in the middle of the gathering: the records
    /// received before it are dropped and their partitions rewound. They
    /// belong to whoever owns their partitions now, which reads them from
    /// the committed offsets. Deciding them here and committing them
    /// with the new generation, which the broker accepts from any of its
    /// members, would write their outputs twice.
    ///
    /// This relies on the eager assignment this consumer uses (librdkafka's
    /// default): every rebalance revokes every partition, and a partition
    /// handed back is read again from its committed offset, so a record
    /// dropped here is never skipped. An incremental protocol
    /// (cooperative-sticky, KIP-848) keeps partitions across a rebalance and
    /// would need the rewind to succeed for each of them.
    async fn gather(&self, stop: &mut StopSignal) -> Option<Batch> {
        loop {
            let batch = self.gather_once(stop).await?;
            if !batch.records.is_empty() {
                return Some(batch);
            }
        }
    }

    /// One try of [`gather`](Self::gather): empty when a rebalance at its
    /// end dropped what it had.
    async fn gather_once(&self, stop: &mut StopSignal) -> Option<Batch> {
        let mut batch = Vec::new();
        let mut epoch = self.rebalances();
        let mut group = None;
        let mut deadline = None;
        while batch.len() < self.options.max_batch.max(1) {
            // Without a record yet, only a record or a stop ends the wait.
            let until = deadline.unwrap_or_else(Instant::now);
            let next = tokio::select! {
                biased;
                _ = stop.stopped() => {
                    if batch.is_empty() {
                        return None;
                    }
                    break;
                }
                _ = tokio::time::sleep_until(until), if deadline.is_some() => break,
                m = self.consumer.recv() => m.map(|m| Record::from_kafka(&m)),
            };
            let record = match next {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "receive failed");
                    if !batch.is_empty() {
                        break;
                    }
                    tokio::select! {
                        _ = stop.stopped() => return None,
                        _ = tokio::time::sleep(BACKOFF) => continue,
                    }
                }
            };
            if self.rebalances() != epoch {
                epoch = self.rebalances();
                // This record came after the rebalance: it starts a batch of
                // its own, unless its partition was just rewound, which
                // hands it again.
                if self
                    .drop_stale(&mut batch)
                    .await
                    .contains(&record.partition)
                {
                    continue;
                }
            }
            if batch.is_empty() {
                group = self.consumer.group_metadata();
                deadline = Some(Instant::now() + self.options.max_batch_wait);
            }
            batch.push(record);
        }
        // A rebalance served by the last poll, with no record after it.
        if self.rebalances() != epoch {
            self.drop_stale(&mut batch).await;
        }
        Some(Batch {
            records: batch,
            group,
        })
    }

    /// Rebalances this consumer has taken part in so far.
    fn rebalances(&self) -> u64 {
        self.consumer.context().get()
    }

    /// Drops the records gathered before a rebalance and rewinds their
    /// partitions, so that those still (or again) this member's are read
    /// again; the others' new owners read them from the committed offsets.
    /// Returns the partitions rewound.
    async fn drop_stale(&self, batch: &mut Vec<Record>) -> HashSet<i32> {
        if batch.is_empty() {
            return HashSet::new();
        }
        tracing::debug!(
            records = batch.len(),
            "a rebalance came while gathering: the records before it are dropped"
        );
        let rewound = self.rewind(batch).await;
        batch.clear();
        rewound
    }

    /// Processes `batch` in one transaction. See the module docs.
    async fn run_batch(
        &mut self,
        batch: &[Record],
        group: Option<ConsumerGroupMetadata>,
        stop: &mut StopSignal,
    ) -> BatchEnd {
        if let Err(e) = self.producer.begin_transaction() {
            tracing::error!(error = %e, "cannot begin a transaction");
            if is_fatal(&e) {
                return BatchEnd::Fatal;
            }
            // Read again after the backoff, not skipped.
            self.rewind(batch).await;
            return self.backoff(stop).await;
        }
        let attempts: Vec<u32> = batch
            .iter()
            .map(|rec| {
                self.failures
                    .get(&(rec.partition, rec.offset))
                    .copied()
                    .unwrap_or(0)
                    + 1
            })
            .collect();
        let deliveries = batch
            .iter()
            .zip(&attempts)
            .map(|(rec, &attempt)| Delivery {
                message: rec.message.clone(),
                attempt,
            })
            .collect();
        // Where a transaction's time goes, in its debug line.
        let started = Instant::now();
        let mut outcomes = AssertUnwindSafe(self.processor.process_batch(deliveries))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                vec![Outcome::Retry {
                    reason: "processor panicked".to_owned(),
                }]
            })
            .into_iter();
        let decided = started.elapsed();
        let mut pending: Vec<DeliveryFuture> = Vec::new();
        let mut done = 0;
        let mut retry = None;
        for (rec, &attempt) in batch.iter().zip(&attempts) {
            let outcome = outcomes.next().unwrap_or_else(|| Outcome::Retry {
                reason: "no outcome from the processor".to_owned(),
            });
            let outputs = match self.outputs(rec, attempt, outcome).await {
                Outputs::Records(outputs) => outputs,
                Outputs::Retry { reason, counted } => {
                    retry = Some((rec, reason, counted));
                    break;
                }
            };
            for (topic, route, message) in &outputs {
                let r = record(topic, message, kafka_headers(route, message));
                match self.producer.send_result(r) {
                    Ok(delivery) => pending.push(delivery),
                    Err((e, _)) => {
                        // Part of this record's output may be in the
                        // transaction already: the whole batch goes.
                        let reason = format!("cannot produce to {topic}: {e}");
                        tracing::warn!(offset = rec.offset, %reason, "aborting the batch");
                        *self
                            .failures
                            .entry((rec.partition, rec.offset))
                            .or_default() += 1;
                        // Let what is already queued reach the log (the
                        // abort marks it aborted) rather than purging it
                        // mid-flight.
                        futures::future::join_all(pending).await;
                        return self
                            .abort_and_rewind(batch, stop, self.options.retry_delay)
                            .await;
                    }
                }
            }
            done += 1;
        }

        if done == 0 {
            self.abort(batch).await;
        } else {
            for result in futures::future::join_all(pending).await {
                let error = match result {
                    Ok(Ok(_)) => continue,
                    Ok(Err((e, _))) => e.to_string(),
                    Err(_) => "the producer was dropped".to_owned(),
                };
                tracing::warn!(%error, "an output was not acknowledged: aborting the batch");
                return self.abort_and_rewind(batch, stop, BACKOFF).await;
            }
            let acked = started.elapsed();
            match self
                .commit(&batch[..done], done == batch.len(), group)
                .await
            {
                Ok(()) => {
                    for rec in &batch[..done] {
                        self.failures.remove(&(rec.partition, rec.offset));
                    }
                    tracing::debug!(
                        records = done,
                        ?decided,
                        ?acked,
                        committed = ?started.elapsed(),
                        "transaction committed"
                    );
                }
                Err(e) if is_fatal(&e) => {
                    tracing::error!(error = %e, "cannot commit");
                    return BatchEnd::Fatal;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot commit: aborting the batch");
                    return self.abort_and_rewind(batch, stop, BACKOFF).await;
                }
            }
        }

        let Some((rec, reason, counted)) = retry else {
            return BatchEnd::Continue;
        };
        let reason = bounded::reason(&reason);
        let failed = self
            .failures
            .entry((rec.partition, rec.offset))
            .or_default();
        if counted {
            *failed += 1;
        } else {
            tracing::warn!(offset = rec.offset, %reason, "store unavailable: trying the record again later");
        }
        tracing::debug!(offset = rec.offset, attempt = *failed, %reason, "retry later");
        let rest = &batch[done..];
        self.rewind(rest).await;
        tokio::select! {
            _ = stop.stopped() => BatchEnd::Stopped,
            _ = tokio::time::sleep(self.options.retry_delay) => BatchEnd::Continue,
        }
    }

    /// Resolves what the processor made of `rec` (on `attempt`) to topics,
    /// and counts it ([`metric::delivery`]; a record decided again after an
    /// aborted transaction counts again).
    async fn outputs(&self, rec: &Record, attempt: u32, outcome: Outcome) -> Outputs {
        let max = self.options.max_attempts.max(1);
        let route = self.route.as_str();
        let (label, dead_lettered) = match &outcome {
            Outcome::Emit(_) => (disposition::ACK, false),
            Outcome::Retry { .. } => (disposition::RETRY, attempt >= max),
            Outcome::Unavailable { .. } => (disposition::RETRY, false),
            Outcome::DeadLetter { .. } => (disposition::DEAD_LETTER, true),
        };
        let outputs = self.resolve(rec, attempt, outcome).await;
        match &outputs {
            // An output route without a topic dead-letters an emit.
            Outputs::Records(records)
                if label == disposition::ACK
                    && records
                        .iter()
                        .any(|(topic, ..)| *topic == self.dead_letters) =>
            {
                metric::delivery(route, attempt, disposition::DEAD_LETTER, true);
            }
            _ => metric::delivery(route, attempt, label, dead_lettered),
        }
        outputs
    }

    /// What [`outputs`](Self::outputs) resolves.
    async fn resolve(&self, rec: &Record, attempt: u32, outcome: Outcome) -> Outputs {
        let max = self.options.max_attempts.max(1);
        let dead = |reason: String| {
            // Bounded, so that a reason quoting its record cannot push the
            // dead letter past the broker's record size limit.
            let reason = bounded::reason_owned(reason);
            tracing::warn!(offset = rec.offset, attempts = attempt, %reason, "dead-lettered");
            let mut m = rec.message.clone();
            let extra = [
                (headers::DEATH_REASON, reason),
                (headers::ATTEMPTS, attempt.to_string()),
                (ORIGIN_TOPIC_HEADER, rec.topic.clone()),
                (ORIGIN_PARTITION_HEADER, rec.partition.to_string()),
                (ORIGIN_OFFSET_HEADER, rec.offset.to_string()),
            ];
            m.headers
                .extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            Outputs::Records(vec![(self.dead_letters.clone(), self.route.clone(), m)])
        };
        match outcome {
            Outcome::Emit(outputs) => {
                let mut resolved = Vec::with_capacity(outputs.len());
                for (route, message) in outputs {
                    match self.transport.ensure_route_topic(&route).await {
                        Ok(topic) => resolved.push((topic, route, message)),
                        Err(TransportError::UnknownRoute(r)) => {
                            return dead(format!("no topic for output route {r}"));
                        }
                        Err(e) => {
                            return Outputs::Retry {
                                reason: e.to_string(),
                                counted: true,
                            };
                        }
                    }
                }
                Outputs::Records(resolved)
            }
            Outcome::Retry { reason } if attempt < max => Outputs::Retry {
                reason,
                counted: true,
            },
            Outcome::Unavailable { reason } => Outputs::Retry {
                reason,
                counted: false,
            },
            Outcome::Retry { reason } => dead(format!("gave up after {max} attempts: {reason}")),
            Outcome::DeadLetter { reason } => dead(reason),
        }
    }

    /// Commits the offsets after `done` and the transaction. When `whole`
    /// (every record read is done), a partition's offset is the consumer's
    /// position if that is further: past the transaction markers of a
    /// transactional input that follow its last record.
    /// The offsets go with `group`, the consumer's group metadata when the
    /// batch started: the broker refuses them if the group has moved on.
    async fn commit(
        &self,
        done: &[Record],
        whole: bool,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), KafkaError> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for rec in done {
            let o = next.entry(rec.partition).or_insert(rec.offset + 1);
            *o = (*o).max(rec.offset + 1);
        }
        if whole && let Ok(positions) = self.consumer.position() {
            for e in positions.elements() {
                if let (Some(o), Offset::Offset(position)) =
                    (next.get_mut(&e.partition()), e.offset())
                {
                    *o = (*o).max(position);
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        }
        // Not in the group when the batch started: nothing can be
        // committed for it.
        let group = group.ok_or(KafkaError::ConsumerCommit(
            RDKafkaErrorCode::UnknownMemberId,
        ))?;
        let producer = self.producer.clone();
        let timeout = self.timeout;
        let joined = tokio::task::spawn_blocking(move || {
            producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
            let mut tries = 0;
            loop {
                match producer.commit_transaction(timeout) {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 3 => {
                        tries += 1;
                    }
                    other => return other,
                }
            }
        })
        .await;
        joined.unwrap_or_else(|_| Err(KafkaError::Canceled))
    }

    /// Aborts the open transaction.
    async fn abort(&self, batch: &[Record]) {
        let producer = self.producer.clone();
        let timeout = self.timeout;
        match tokio::task::spawn_blocking(move || producer.abort_transaction(timeout)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, records = batch.len(), "abort failed"),
            Err(e) => tracing::warn!(error = %e, "abort failed"),
        }
    }

    /// Aborts, rewinds to the batch's first records and waits `delay`.
    async fn abort_and_rewind(
        &self,
        batch: &[Record],
        stop: &mut StopSignal,
        delay: Duration,
    ) -> BatchEnd {
        self.abort(batch).await;
        self.rewind(batch).await;
        tokio::select! {
            _ = stop.stopped() => BatchEnd::Stopped,
            _ = tokio::time::sleep(delay) => BatchEnd::Continue,
        }
    }

    async fn backoff(&self, stop: &mut StopSignal) -> BatchEnd {
        tokio::select! {
            _ = stop.stopped() => BatchEnd::Stopped,
            _ = tokio::time::sleep(BACKOFF) => BatchEnd::Continue,
        }
    }

    /// Moves the consumer back to the first of `records` in each of their
    /// partitions, so they are read again.
    async fn rewind(&self, records: &[Record]) -> HashSet<i32> {
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for rec in records {
            let o = first.entry(rec.partition).or_insert(rec.offset);
            *o = (*o).min(rec.offset);
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in first {
            if let Err(e) = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
            {
                tracing::warn!(error = %e, "cannot rewind");
            }
        }
        let consumer = self.consumer.clone();
        let timeout = self.timeout;
        let sought =
            tokio::task::spawn_blocking(move || consumer.seek_partitions(tpl, timeout)).await;
        let mut rewound = HashSet::new();
        match sought {
            Ok(Ok(tpl)) => {
                for e in tpl.elements() {
                    match e.error() {
                        Ok(()) => {
                            rewound.insert(e.partition());
                        }
                        // Not ours any more: its next owner reads from the
                        // committed offset anyway.
                        Err(err) => {
                            tracing::debug!(partition = e.partition(), error = %err, "not rewound");
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot rewind"),
            Err(e) => tracing::warn!(error = %e, "cannot rewind"),
        }
        rewound
    }
}
