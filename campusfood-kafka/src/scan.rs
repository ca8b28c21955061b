//! Looking a record up by what it holds: [`KafkaTransport::scan_topic`]
//! reads a whole topic, bounded by its high watermarks as of the call,
//! with the same group-less reader as the dead letters (see the
//! [crate docs](crate#reading)), and keeps the records a filter accepts.
//!
//! Kafka has no index but the offset, so finding an order means reading.
//! The key's partition is not enough: records written by other producers
//! (Java's and kafka-python's murmur2, librdkafka's CRC32
//! `consistent_random`), without a key, or before partitions were added
//! can be in any partition; so every partition is read.

use campusfood_core::transport::{Message, TransportError};
use rdkafka::message::Message as _;

use super::KafkaTransport;
use super::admin::blocking;
use super::consumer::Record;
use super::dead_letters::{read, reader};

/// One record kept by [`KafkaTransport::scan_topic`].
#[derive(Debug, Clone)]
pub struct ScannedRecord {
    /// The partition.
    pub partition: i32,
    /// The record's offset there.
    pub offset: i64,
    /// The record's timestamp (create or log-append time, as the topic
    /// says), milliseconds since the Unix epoch; `None` if it has none.
    pub timestamp: Option<i64>,
    /// Key, headers (not UTF-8: converted lossily) and value.
    pub message: Message,
}

/// One partition as a scan saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedPartition {
    /// The partition.
    pub partition: i32,
    /// The oldest offset it still held.
    pub low_watermark: i64,
    /// The offset the next record will get, as of the start of the scan:
    /// the scan stopped before it.
    pub high_watermark: i64,
}

/// What [`KafkaTransport::scan_topic`] read and kept.
#[derive(Debug, Clone, Default)]
pub struct TopicScan {
    /// The topic.
    pub topic: String,
    /// Whether the topic exists (one that does not has no records).
    pub exists: bool,
    /// Every partition, by number, with the bounds of the read.
    pub partitions: Vec<ScannedPartition>,
    /// Records read (committed ones; transaction markers and records of
    /// aborted transactions are not records).
    pub scanned: u64,
    /// The records kept, in the order read (offset order per partition).
    pub kept: Vec<ScannedRecord>,
}

impl KafkaTransport {
    /// Reads every partition of `topic` from its oldest record up to its
    /// high watermark as of the call (records written meanwhile are not
    /// read, so the scan ends), read committed, without joining a consumer
    /// group or committing anything, and keeps the records for which
    /// `keep(key, value)` is true. Runs on the blocking pool.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the broker does not answer, or
    /// sends nothing for twice [`request_timeout`] in the middle of the
    /// read.
    ///
    /// [`request_timeout`]: campusfood_core::config::KafkaConfig::request_timeout
    pub async fn scan_topic<F>(&self, topic: &str, mut keep: F) -> Result<TopicScan, TransportError>
    where
        F: FnMut(Option<&[u8]>, &[u8]) -> bool + Send + 'static,
    {
        let (config, name) = (self.config().clone(), topic.to_owned());
        blocking(topic, move || {
            let consumer = reader(&config)?;
            let mut scanned = 0u64;
            let mut kept = Vec::new();
            let bounds = read(&consumer, &config, &name, None, |m| {
                scanned += 1;
                if keep(m.key(), m.payload().unwrap_or_default()) {
                    let record = Record::from_kafka(m);
                    kept.push(ScannedRecord {
                        partition: record.partition,
                        offset: record.offset,
                        timestamp: m.timestamp().to_millis(),
                        message: record.message,
                    });
                }
                true
            })?;
            let exists = bounds.is_some();
            let partitions = bounds.unwrap_or_default();
            Ok(TopicScan {
                topic: name,
                exists,
                partitions,
                scanned,
                kept,
            })
        })
        .await
    }
}
