//! The consumer loop behind [`Transport::subscribe`](super::Transport):
//! one `StreamConsumer`, one record at a time, offsets stored after the
//! handler is done and committed in the background, on revocation and on
//! stop. At a commit tick (and on stop) no record is in flight, so the
//! consumer's position — past the transaction markers that follow a
//! partition's last record — is stored too: a drained consumer of a
//! transactional topic shows lag 0. See the [module docs](super) for the
//! semantics.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use campusfood_core::bounded;
use campusfood_core::config::KafkaConfig;
use campusfood_core::transport::{
    Delivery, Disposition, Handler, Message, Route, StopSignal, SubscribeOptions, Subscription,
    TransportError, headers,
};
use futures::FutureExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use super::context::{KafkaContext, commit_stored};
use super::{
    KafkaProducer, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER, ORIGIN_TOPIC_HEADER, base_config,
    kafka_headers, unavailable,
};

/// How long to wait before trying again after the broker failed us (a
/// receive error, a dead-letter topic that cannot be written).
const BACKOFF: Duration = Duration::from_secs(1);

/// A record, detached from the consumer.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) message: Message,
}

impl Record {
    /// Copies what the handler needs out of `m`. Never fails: keys and
    /// header values that are not UTF-8 are converted lossily, a missing
    /// value is an empty body.
    pub(super) fn from_kafka(m: &BorrowedMessage<'_>) -> Self {
        let mut hdrs = BTreeMap::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                hdrs.insert(h.key.to_owned(), value.into_owned());
            }
        }
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            message: Message {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: hdrs,
                body: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            },
        }
    }
}

/// How handling a record ended.
enum Step {
    /// Acked or dead-lettered: its offset may be committed.
    Done,
    /// A stop came before the record was done: leave it uncommitted.
    Interrupted,
}

/// A subscription's consumer and everything its loop needs.
pub(super) struct Worker {
    consumer: Arc<StreamConsumer<KafkaContext>>,
    producer: KafkaProducer,
    route: Route,
    topic: String,
    dead_letters: String,
    group: String,
    handler: Arc<dyn Handler>,
    options: SubscribeOptions,
    commit_interval: Duration,
    close_timeout: Duration,
    /// How long a stop waits for the handler of the record in flight.
    drain_timeout: Duration,
}

/// Consumer settings for `group`: manual offset storage and commits.
pub(super) fn consumer_config(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = base_config(config);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &config.auto_offset_reset)
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            config.heartbeat_interval.as_millis().to_string(),
        );
    if let Some(id) = &config.group_instance_id {
        c.set("group.instance.id", id);
    }
    c
}

impl Worker {
    /// Creates the consumer and subscribes it to `topic` in `group`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: &KafkaConfig,
        producer: KafkaProducer,
        route: Route,
        topic: String,
        dead_letters: String,
        group: String,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Self, TransportError> {
        let consumer: StreamConsumer<KafkaContext> = consumer_config(config, &group)
            .create_with_context(KafkaContext)
            .map_err(|e| unavailable(&route, format!("cannot create a consumer: {e}")))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| unavailable(&route, format!("cannot subscribe to {topic}: {e}")))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            producer,
            route,
            topic,
            dead_letters,
            group,
            handler,
            options,
            commit_interval: config.commit_interval,
            close_timeout: config.request_timeout * 3,
            drain_timeout: config.drain_timeout,
        })
    }

    async fn run(self, mut stop: StopSignal) {
        tracing::info!("consumer started");
        let mut tick = tokio::time::interval(self.commit_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut dirty = false;
        // The next offset stored per partition, by this loop.
        let mut stored: HashMap<i32, i64> = HashMap::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.stopped() => {
                    // Nothing in flight: the position is all done.
                    self.store_positions(&mut stored);
                    break;
                }
                _ = tick.tick() => {
                    // Nothing in flight: every record before the position
                    // is done, and the position is past the transaction
                    // markers that follow them.
                    dirty |= self.store_positions(&mut stored);
                    if dirty {
                        commit_stored(&*self.consumer, CommitMode::Async);
                        dirty = false;
                    }
                    continue;
                }
                m = self.consumer.recv() => m.map(|m| Record::from_kafka(&m)),
            };
            let record = match next {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "receive failed");
                    tokio::select! {
                        _ = stop.stopped() => break,
                        _ = tokio::time::sleep(BACKOFF) => continue,
                    }
                }
            };
            match self.process(&record, &mut stop).await {
                Step::Done => {
                    // Stores offset + 1: the next record to read.
                    if let Err(e) =
                        self.consumer
                            .store_offset(&record.topic, record.partition, record.offset)
                    {
                        // The partition was revoked meanwhile: its next owner
                        // gets the record again (at least once).
                        tracing::warn!(
                            partition = record.partition,
                            offset = record.offset,
                            error = %e,
                            "cannot store offset"
                        );
                    } else {
                        stored.insert(record.partition, record.offset + 1);
                    }
                    dirty = true;
                }
                Step::Interrupted => break,
            }
        }
        self.close().await;
    }

    /// Stores the consumer's position for each assigned partition where it
    /// is past what this loop stored (`stored`, updated). Only to be called
    /// with no record in flight: the position is past every record handed
    /// out, and past the control records (transaction markers) librdkafka
    /// skipped after them. Whether anything new was stored.
    fn store_positions(&self, stored: &mut HashMap<i32, i64>) -> bool {
        let positions = match self.consumer.position() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "no position");
                return false;
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut ahead = Vec::new();
        for e in positions.elements() {
            let Offset::Offset(position) = e.offset() else {
                continue;
            };
            if stored
                .get(&e.partition())
                .is_some_and(|&done| done >= position)
            {
                continue;
            }
            if tpl
                .add_partition_offset(e.topic(), e.partition(), Offset::Offset(position))
                .is_ok()
            {
                ahead.push((e.partition(), position));
            }
        }
        if ahead.is_empty() {
            return false;
        }
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {
                stored.extend(ahead);
                true
            }
            Err(e) => {
                // Revoked meanwhile: its next owner starts from the last
                // commit, at worst before a few markers.
                tracing::debug!(error = %e, "cannot store the position");
                false
            }
        }
    }

    /// Hands `record` to the handler until it is acked or dead-lettered, or
    /// a stop interrupts a retry wait.
    async fn process(&self, record: &Record, stop: &mut StopSignal) -> Step {
        let max = self.options.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let delivery = Delivery {
                message: record.message.clone(),
                attempt,
            };
            let handled = AssertUnwindSafe(self.handler.handle(delivery)).catch_unwind();
            let disposition = tokio::select! {
                biased;
                d = handled => d.unwrap_or_else(|_| Disposition::Retry {
                    reason: "handler panicked".to_owned(),
                }),
                () = abandon_after(stop, self.drain_timeout) => {
                    tracing::warn!(
                        partition = record.partition,
                        offset = record.offset,
                        after = ?self.drain_timeout,
                        "handler still running at stop: abandoned, the record stays uncommitted"
                    );
                    return Step::Interrupted;
                }
            };
            match disposition {
                Disposition::Ack => return Step::Done,
                Disposition::Retry { reason } if attempt < max => {
                    let reason = bounded::reason(&reason);
                    tracing::debug!(
                        partition = record.partition,
                        offset = record.offset,
                        attempt,
                        %reason,
                        "retry later"
                    );
                    tokio::select! {
                        _ = stop.stopped() => return Step::Interrupted,
                        _ = tokio::time::sleep(self.options.retry_delay) => {}
                    }
                    attempt += 1;
                }
                Disposition::Retry { reason } => {
                    let reason = format!("gave up after {max} attempts: {reason}");
                    return self.dead_letter(record, attempt, &reason, stop).await;
                }
                Disposition::DeadLetter { reason } => {
                    return self.dead_letter(record, attempt, &reason, stop).await;
                }
            }
        }
    }

    /// Produces `record` to the dead-letter topic, trying until the broker
    /// acknowledges it or a stop comes.
    async fn dead_letter(
        &self,
        record: &Record,
        attempts: u32,
        reason: &str,
        stop: &mut StopSignal,
    ) -> Step {
        // Bounded, so that a reason quoting its record cannot push the dead
        // letter past the broker's record size limit.
        let reason = bounded::reason(reason);
        tracing::warn!(
            partition = record.partition,
            offset = record.offset,
            attempts,
            %reason,
            dead_letters = %self.dead_letters,
            "dead-lettered"
        );
        let mut message = record.message.clone();
        for (name, value) in [
            (headers::DEATH_REASON, reason.into_owned()),
            (headers::ATTEMPTS, attempts.to_string()),
            (ORIGIN_TOPIC_HEADER, record.topic.clone()),
            (ORIGIN_PARTITION_HEADER, record.partition.to_string()),
            (ORIGIN_OFFSET_HEADER, record.offset.to_string()),
        ] {
            message.headers.insert(name.to_owned(), value);
        }
        loop {
            let rec = super::record(
                &self.dead_letters,
                &message,
                kafka_headers(&self.route, &message),
            );
            match self.producer.send(rec, BACKOFF).await {
                Ok(_) => return Step::Done,
                Err((e, _)) => {
                    tracing::error!(error = %e, "cannot write the dead letter; keeping the record");
                    tokio::select! {
                        _ = stop.stopped() => return Step::Interrupted,
                        _ = tokio::time::sleep(BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// Commits what is done and closes the consumer (leaving the group), off
    /// the async threads since librdkafka blocks for both.
    async fn close(self) {
        let consumer = self.consumer;
        let closing = tokio::task::spawn_blocking(move || {
            commit_stored(&*consumer, CommitMode::Sync);
            consumer.unsubscribe();
            drop(consumer);
        });
        match tokio::time::timeout(self.close_timeout, closing).await {
            Ok(Ok(())) => tracing::info!("consumer stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "closing the consumer failed"),
            Err(_) => tracing::warn!(after = ?self.close_timeout, "consumer still closing"),
        }
    }
}

/// Resolves `limit` after a stop is asked for.
async fn abandon_after(stop: &mut StopSignal, limit: Duration) {
    stop.stopped().await;
    tokio::time::sleep(limit).await;
}

/// Runs `worker` until its subscription is stopped.
pub(super) fn spawn(worker: Worker) -> Result<Subscription, TransportError> {
    let span = tracing::info_span!(
        "kafka_consumer",
        route = %worker.route,
        topic = %worker.topic,
        group = %worker.group
    );
    Ok(Subscription::spawn(move |stop| {
        worker.run(stop).instrument(span)
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_group_settings_come_from_the_config() {
        let config = KafkaConfig {
            session_timeout: Duration::from_secs(12),
            heartbeat_interval: Duration::from_millis(300),
            ..KafkaConfig::default()
        };
        let c = consumer_config(&config, "g");
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("session.timeout.ms"), Some("12000"));
        assert_eq!(c.get("heartbeat.interval.ms"), Some("300"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
