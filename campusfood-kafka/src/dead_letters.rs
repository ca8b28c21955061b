//! Dead letters listed, shown and replayed: [`DeadLetters`] for
//! [`KafkaTransport`].
//!
//! See the [crate docs](crate#dead-letters) for ids, reading and replay.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::config::KafkaConfig;
use campusfood_core::transport::{
    DeadLetter, DeadLetters, Route, Transport as _, TransportError, headers,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::{blocking, err, existing_partitions, watermarks};
use super::consumer::Record;
use super::context::KafkaContext;
use super::scan::ScannedPartition;
use super::{
    DELIVERY_TIMEOUT, KafkaTransport, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER,
    ORIGIN_TOPIC_HEADER, ROUTE_HEADER, base_config, unavailable,
};

/// Appended to a dead-letter topic's name to name the topic of its replay
/// markers (`order-events.dlq.replayed`).
pub const REPLAYED_SUFFIX: &str = ".replayed";

/// The headers a dead letter carries beyond its original record; a replay
/// removes them.
pub const DEATH_HEADERS: [&str; 5] = [
    headers::DEATH_REASON,
    headers::ATTEMPTS,
    ORIGIN_TOPIC_HEADER,
    ORIGIN_PARTITION_HEADER,
    ORIGIN_OFFSET_HEADER,
];

/// The group id of the dead-letter reader: librdkafka's `assign` needs one,
/// but the reader never joins the group nor commits, so the broker never
/// holds such a group.
pub const READER_GROUP: &str = "campusfood-dead-letter-reader";

/// How long a read may go without a record or an end-of-partition event
/// before it is given up, in multiples of
/// [`KafkaConfig::request_timeout`].
const IDLE_TIMEOUTS: u32 = 2;

/// Where a dead letter is in its dead-letter topic, which is its id:
/// displayed and parsed as `<partition>-<offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeadLetterId {
    /// The partition of the dead-letter topic.
    pub partition: i32,
    /// The record's offset in that partition.
    pub offset: i64,
}

impl DeadLetterId {
    /// Parses `<partition>-<offset>`; `None` for anything else.
    pub fn parse(id: &str) -> Option<Self> {
        let (partition, offset) = id.split_once('-')?;
        let partition: i32 = partition.parse().ok()?;
        let offset: i64 = offset.parse().ok()?;
        (partition >= 0 && offset >= 0).then_some(Self { partition, offset })
    }
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.partition, self.offset)
    }
}

/// A dead letter as read, with what orders it among the others.
struct Found {
    /// The record's timestamp, milliseconds since the epoch.
    timestamp: i64,
    id: DeadLetterId,
    record: Record,
}

impl Found {
    fn from_kafka(m: &BorrowedMessage<'_>) -> Self {
        Self {
            timestamp: m.timestamp().to_millis().unwrap_or_default(),
            id: DeadLetterId {
                partition: m.partition(),
                offset: m.offset(),
            },
            record: Record::from_kafka(m),
        }
    }

    /// The dead letter of `route`: reason and attempts from the death
    /// headers (the message keeps them all), the route from the record's
    /// route header.
    fn into_dead_letter(self, route: &Route) -> DeadLetter {
        let message = self.record.message;
        let header = |name: &str| message.headers.get(name);
        DeadLetter {
            id: self.id.to_string(),
            route: header(ROUTE_HEADER).map_or_else(|| route.clone(), Route::new),
            reason: header(headers::DEATH_REASON).cloned().unwrap_or_default(),
            attempts: header(headers::ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1),
            message,
        }
    }
}

/// A consumer that joins no group: it is assigned partitions (never
/// subscribes), reports the end of each, and never commits.
pub(super) fn reader(config: &KafkaConfig) -> Result<BaseConsumer<KafkaContext>, String> {
    let mut c = base_config(config);
    c.set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    c.create_with_context(KafkaContext)
        .map_err(|e| format!("cannot create a reader: {e}"))
}

/// Hands the records of `topic` to `visit`, in offset order per partition,
/// from `from` (that record's partition only; `None`: every partition from
/// its oldest record) up to the end as of the call, or until `visit`
/// returns `false`. A topic that does not exist has no records (`None`);
/// else the partitions looked at, each with the low and high watermarks
/// the read was bounded by.
pub(super) fn read(
    consumer: &BaseConsumer<KafkaContext>,
    config: &KafkaConfig,
    topic: &str,
    from: Option<DeadLetterId>,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> Result<Option<Vec<ScannedPartition>>, String> {
    let timeout = config.request_timeout;
    let Some(ids) = existing_partitions(consumer, topic, timeout)? else {
        return Ok(None);
    };
    let mut bounds = Vec::with_capacity(ids.len());
    let mut tpl = TopicPartitionList::new();
    // Per partition still being read: the offset of its last record.
    let mut last = std::collections::HashMap::new();
    for p in ids {
        let (low, high) = watermarks(consumer, topic, p, timeout)?;
        let start = match from {
            None => low,
            Some(id) if id.partition == p => id.offset.max(low),
            Some(_) => continue,
        };
        bounds.push(ScannedPartition {
            partition: p,
            low_watermark: low,
            high_watermark: high,
        });
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(err("bad offset"))?;
            last.insert(p, high - 1);
        }
    }
    if last.is_empty() {
        return Ok(Some(bounds));
    }
    consumer
        .assign(&tpl)
        .map_err(err("cannot assign the partitions"))?;
    let idle = timeout * IDLE_TIMEOUTS;
    let mut progress = Instant::now();
    while !last.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            None if progress.elapsed() > idle => {
                return Err(format!("no records from {topic} for {idle:?}"));
            }
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last.remove(&p);
            }
            Some(Err(e)) => return Err(format!("cannot read {topic}: {e}")),
            Some(Ok(m)) => {
                if last
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() >= end)
                {
                    last.remove(&m.partition());
                }
                if !visit(&m) {
                    return Ok(Some(bounds));
                }
            }
        }
        progress = Instant::now();
    }
    Ok(Some(bounds))
}

/// The ids replayed from `dead_letters` (the markers' keys).
fn replayed(
    consumer: &BaseConsumer<KafkaContext>,
    config: &KafkaConfig,
    dead_letters: &str,
) -> Result<HashSet<DeadLetterId>, String> {
    let mut done = HashSet::new();
    read(
        consumer,
        config,
        &KafkaTransport::replay_marker_topic(dead_letters),
        None,
        |m| {
            let id = m.key().and_then(|k| std::str::from_utf8(k).ok());
            done.extend(id.and_then(DeadLetterId::parse));
            true
        },
    )?;
    Ok(done)
}

/// The pending dead letters of `dead_letters`, oldest first, at most
/// `limit`.
fn pending(config: &KafkaConfig, dead_letters: &str, limit: usize) -> Result<Vec<Found>, String> {
    let consumer = reader(config)?;
    let done = replayed(&consumer, config, dead_letters)?;
    let mut found = Vec::new();
    read(&consumer, config, dead_letters, None, |m| {
        let f = Found::from_kafka(m);
        if !done.contains(&f.id) {
            found.push(f);
        }
        true
    })?;
    found.sort_by_key(|f| (f.timestamp, f.id.partition, f.id.offset));
    found.truncate(limit);
    Ok(found)
}

/// The dead letter `id` of `dead_letters` if it is there and pending.
fn pending_one(
    config: &KafkaConfig,
    dead_letters: &str,
    id: DeadLetterId,
) -> Result<Option<Found>, String> {
    let consumer = reader(config)?;
    if replayed(&consumer, config, dead_letters)?.contains(&id) {
        return Ok(None);
    }
    let mut found = None;
    read(&consumer, config, dead_letters, Some(id), |m| {
        // The first record read is at `id` unless `id` is a transaction
        // marker, an aborted record or gone.
        if m.offset() == id.offset {
            found = Some(Found::from_kafka(m));
        }
        false
    })?;
    Ok(found)
}

impl KafkaTransport {
    /// The topic of the replay markers of dead-letter topic `dead_letters`.
    pub fn replay_marker_topic(dead_letters: &str) -> String {
        format!("{dead_letters}{REPLAYED_SUFFIX}")
    }

    /// The dead-letter topic of `route`, where its dead letters are.
    ///
    /// # Errors
    /// As [`topic_for`](Self::topic_for).
    pub fn dead_letter_topic_for(&self, route: &Route) -> Result<String, TransportError> {
        self.topic_for(route).map(|t| Self::dead_letter_topic(&t))
    }

    /// The pending dead letter `id` of `route` (see the
    /// [crate docs](crate#dead-letters) for ids), `None` if there is none: an unknown or
    /// malformed id, or one already replayed.
    ///
    /// # Errors
    /// [`TransportError::UnknownRoute`] for a route without a topic,
    /// [`TransportError::Unavailable`] when the broker does not answer.
    pub async fn dead_letter(
        &self,
        route: &Route,
        id: &str,
    ) -> Result<Option<DeadLetter>, TransportError> {
        let topic = self.dead_letter_topic_for(route)?;
        let Some(id) = DeadLetterId::parse(id) else {
            return Ok(None);
        };
        let (config, t) = (self.config().clone(), topic.clone());
        let found = blocking(&topic, move || pending_one(&config, &t, id)).await?;
        Ok(found.map(|f| f.into_dead_letter(route)))
    }

    /// Replays every pending dead letter of `route`, oldest first, and
    /// returns how many were replayed (one replayed meanwhile by someone
    /// else is not counted).
    ///
    /// # Errors
    /// As [`DeadLetters::replay`]; the dead letters before the failing one
    /// stay replayed.
    pub async fn replay_all(&self, route: &Route) -> Result<usize, TransportError> {
        let mut replayed = 0;
        for letter in self.dead_letters(route, usize::MAX).await? {
            if self.replay(route, &letter.id).await? {
                replayed += 1;
            }
        }
        Ok(replayed)
    }
}

#[async_trait]
impl DeadLetters for KafkaTransport {
    /// The pending dead letters of `route`'s topic (not yet replayed),
    /// oldest first by record timestamp, at most `limit`. Reads the whole
    /// dead-letter topic without joining a consumer group (see the
    /// [crate docs](crate#dead-letters)); a dead-letter topic that does not exist yet
    /// has none.
    async fn dead_letters(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError> {
        let topic = self.dead_letter_topic_for(route)?;
        let (config, t) = (self.config().clone(), topic.clone());
        let found = blocking(&topic, move || pending(&config, &t, limit)).await?;
        Ok(found
            .into_iter()
            .map(|f| f.into_dead_letter(route))
            .collect())
    }

    /// Publishes the pending dead letter `id` to `route`'s topic without its
    /// death headers, then records the replay (see the [crate docs](crate#dead-letters)).
    /// `false` if there is no such pending dead letter.
    async fn replay(&self, route: &Route, id: &str) -> Result<bool, TransportError> {
        let Some(letter) = self.dead_letter(route, id).await? else {
            return Ok(false);
        };
        let id = letter.id;
        let mut message = letter.message;
        for name in DEATH_HEADERS {
            message.headers.remove(name);
        }
        self.publish(route, message).await?;
        let markers = Self::replay_marker_topic(&self.dead_letter_topic_for(route)?);
        self.create_topic(&markers, 1).await?;
        let origin = self.topic_for(route)?;
        let marker = FutureRecord::to(&markers)
            .key(id.as_str())
            .payload(origin.as_bytes());
        self.producer()
            .send(marker, DELIVERY_TIMEOUT)
            .await
            .map_err(|(e, _)| {
                unavailable(route, format!("cannot record the replay of {id}: {e}"))
            })?;
        tracing::info!(%route, id, topic = %origin, "dead letter replayed");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_anything_else() {
        let id = DeadLetterId {
            partition: 2,
            offset: 17,
        };
        assert_eq!(id.to_string(), "2-17");
        assert_eq!(DeadLetterId::parse("2-17"), Some(id));
        for bad in ["", "2", "2-", "-17", "a-1", "1-b", "1--2", "-1-2", "1-2-3"] {
            assert_eq!(DeadLetterId::parse(bad), None, "{bad}");
        }
    }
}
