//! The end of a topic (its high watermarks, summed), read often and
//! cheaply: one client kept open, polled on a blocking thread.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::process::process_err;
use crate::LabError;

/// A client that reads one topic's high watermarks.
pub(super) struct TopicEnd {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    timeout: Duration,
}

impl TopicEnd {
    /// Opens a client on `bootstrap` and reads `topic`'s partitions, once
    /// every partition has a leader that answers (a topic created a moment
    /// ago may not have them yet: a producer started then waits out
    /// librdkafka's retry backoff, up to a second, and the figure would
    /// time that instead of producing).
    pub(super) fn open(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Self, LabError> {
        let what = || format!("reading the end of {topic}");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| process_err(what(), e))?;
        let mut this = Self {
            consumer,
            topic: topic.to_owned(),
            partitions: Vec::new(),
            timeout,
        };
        let start = Instant::now();
        loop {
            let metadata = this
                .consumer
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| process_err(what(), e))?;
            let all: Vec<_> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter())
                .collect();
            let led = all
                .iter()
                .filter(|p| p.error().is_none() && p.leader() >= 0)
                .count();
            this.partitions = all.iter().map(|p| p.id()).collect();
            if !all.is_empty() && led == all.len() && this.end().is_ok() {
                return Ok(this);
            }
            if start.elapsed() > timeout {
                return Err(process_err(
                    what(),
                    format!(
                        "{led} of its {} partitions have a leader after {timeout:?}",
                        all.len()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sum of the partitions' high watermarks, in one request (a
    /// `ListOffsets` for the latest offset of every partition).
    pub(super) fn end(&self) -> Result<i64, LabError> {
        let what = || format!("reading the end of {}", self.topic);
        let mut latest = TopicPartitionList::new();
        for &p in &self.partitions {
            latest
                .add_partition_offset(&self.topic, p, Offset::End)
                .map_err(|e| process_err(what(), e))?;
        }
        let ends = self
            .consumer
            .offsets_for_times(latest, self.timeout)
            .map_err(|e| process_err(what(), e))?;
        ends.elements()
            .iter()
            .try_fold(0, |sum, e| match e.offset() {
                Offset::Offset(high) if e.error().is_ok() => Ok(sum + high),
                other => Err(process_err(
                    what(),
                    format!("partition {}: {other:?} {:?}", e.partition(), e.error()),
                )),
            })
    }

    /// Polls [`end`](Self::end) every `every` until it reaches `target`;
    /// the instant it was seen there. Blocking: run it on the blocking
    /// pool. Each poll is a request the broker answers on the cores the
    /// measured services use: poll often only when the instant is the
    /// figure.
    pub(super) fn wait_for(
        &self,
        target: i64,
        deadline: Duration,
        every: Duration,
    ) -> Result<Instant, LabError> {
        let start = Instant::now();
        loop {
            if self.end()? >= target {
                return Ok(Instant::now());
            }
            if start.elapsed() > deadline {
                return Err(LabError::Deadline {
                    what: format!("{} to reach {target} records", self.topic),
                    after: deadline,
                });
            }
            std::thread::sleep(every);
        }
    }
}
