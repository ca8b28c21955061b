//! Administration without the Kafka CLI: topics (created once per process,
//! listed, deleted) and consumer groups (lag per partition, offset resets —
//! the same committed offsets as `kafka-consumer-groups --describe` /
//! `--reset-offsets`).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use campusfood_core::config::KafkaConfig;
use campusfood_core::transport::{Route, TransportError};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::consumer_config;
use super::context::KafkaContext;
use super::{KafkaTransport, cluster_route, unavailable};

/// A consumer group's position in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (the next record it will read), `None`
    /// if it never committed in this partition.
    pub committed: Option<i64>,
    /// The oldest offset the partition still holds.
    pub low_watermark: i64,
    /// The offset the next record written will get.
    pub high_watermark: i64,
    /// Records not yet consumed: high watermark minus committed offset, or
    /// minus the low watermark when nothing is committed (a group starting
    /// from the earliest record would read all of them).
    pub lag: i64,
}

/// Where [`KafkaTransport::reset_offsets`] moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest record still held: everything is consumed again.
    Earliest,
    /// The end: only records written from now on are consumed.
    Latest,
    /// This offset in every partition (clamped to what the partition holds).
    Offset(i64),
    /// The first record at or after this time, in milliseconds since the
    /// Unix epoch (the end where there is none).
    Timestamp(i64),
}

/// An offset committed for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    /// The partition.
    pub partition: i32,
    /// The committed offset: the next record the group reads there.
    pub offset: i64,
}

/// The set of topics known to exist.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single insert/lookup critical sections: poison cannot leave them
    // half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KafkaTransport {
    /// Topic operations wait [`KafkaConfig::request_timeout`] for the
    /// broker, and as long for the operation.
    fn admin_options(&self) -> AdminOptions {
        let timeout = Some(self.inner.config.request_timeout);
        AdminOptions::new()
            .request_timeout(timeout)
            .operation_timeout(timeout)
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1)
    /// unless it exists; an existing topic is left as it is.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the broker refuses or does not
    /// answer.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TransportError> {
        if lock(&self.inner.ensured).contains(topic) {
            return Ok(());
        }
        let route = Route::new(topic);
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let opts = self.admin_options();
        let results = self
            .inner
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| unavailable(&route, format!("cannot create topic: {e}")))?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(unavailable(
                        &route,
                        format!("cannot create topic {name}: {code}"),
                    ));
                }
            }
        }
        lock(&self.inner.ensured).insert(topic.to_owned());
        Ok(())
    }

    /// The names of the broker's topics that contain `part`: a test's or a
    /// lab run's, when it named them with a unique
    /// [`with_suffix`](KafkaConfig::with_suffix).
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when no broker answers.
    pub async fn topics_containing(&self, part: &str) -> Result<Vec<String>, TransportError> {
        let route = cluster_route();
        let probe = self.inner.producer.clone();
        let timeout = self.inner.config.request_timeout;
        let metadata =
            tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
                .await
                .map_err(|e| unavailable(&route, e))?
                .map_err(|e| unavailable(&route, format!("cannot list topics: {e}")))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|name| name.contains(part))
            .map(str::to_owned)
            .collect())
    }

    /// Deletes `topics` with every record in them; one that does not exist
    /// is no error. For tests and labs on suffixed names
    /// ([`KafkaConfig::with_suffix`]); never on a shared topic. A broker
    /// keeps each partition's files open, so topics left behind by many
    /// runs slow its start and can exhaust its file descriptors.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the broker refuses or does not
    /// answer.
    pub async fn delete_topics(&self, topics: &[String]) -> Result<(), TransportError> {
        if topics.is_empty() {
            return Ok(());
        }
        let route = cluster_route();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let opts = self.admin_options();
        let results = self
            .inner
            .admin
            .delete_topics(&names, &opts)
            .await
            .map_err(|e| unavailable(&route, format!("cannot delete topics: {e}")))?;
        for result in results {
            match result {
                Ok(name) => {
                    lock(&self.inner.ensured).remove(&name);
                    tracing::debug!(topic = %name, "deleted topic");
                }
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => {
                    return Err(unavailable(
                        &route,
                        format!("cannot delete topic {name}: {code}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The topic of `route`, created with the default partition count if it
    /// is not one of the configured topics and does not exist yet.
    pub(super) async fn ensure_route_topic(&self, route: &Route) -> Result<String, TransportError> {
        let topic = self.topic_for(route)?;
        self.create_topic(&topic, self.inner.config.default_partitions)
            .await?;
        Ok(topic)
    }
}

impl KafkaTransport {
    /// The lag of consumer group `group` on `topic`, per partition, by
    /// partition number. Sum [`PartitionLag::lag`] for the total.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the topic does not exist or the
    /// broker does not answer.
    pub async fn lag(&self, group: &str, topic: &str) -> Result<Vec<PartitionLag>, TransportError> {
        let (config, group, t) = (self.config().clone(), group.to_owned(), topic.to_owned());
        blocking(topic, move || lag_blocking(&config, &group, &t)).await
    }

    /// Moves consumer group `group` on `topic` to `to` in every partition
    /// and returns the offsets committed. The group must be stopped (no
    /// member running): a running member would overwrite the reset with its
    /// next commit.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the group has active members,
    /// the topic does not exist or the broker does not answer.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: OffsetReset,
    ) -> Result<Vec<PartitionOffset>, TransportError> {
        let (config, g, t) = (self.config().clone(), group.to_owned(), topic.to_owned());
        let offsets = blocking(topic, move || reset_blocking(&config, &g, &t, to)).await?;
        tracing::info!(topic, group, ?to, "offsets reset");
        Ok(offsets)
    }
}

/// Runs a blocking admin call on the blocking pool, reporting failures on
/// `topic`'s route.
pub(super) async fn blocking<T, F>(topic: &str, f: F) -> Result<T, TransportError>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    let route = Route::new(topic);
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(&route, e))?
        .map_err(|e| unavailable(&route, e))
}

/// A consumer in `group` that never subscribes: it only reads and commits
/// offsets.
fn group_client(config: &KafkaConfig, group: &str) -> Result<BaseConsumer<KafkaContext>, String> {
    consumer_config(config, group)
        .create_with_context(KafkaContext)
        .map_err(|e| format!("cannot create a consumer: {e}"))
}

fn partitions(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, String> {
    existing_partitions(consumer, topic, timeout)?
        .ok_or_else(|| format!("topic {topic} does not exist"))
}

/// The partition numbers of `topic`, in order; `None` if it does not exist.
pub(super) fn existing_partitions(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("no metadata: {e}"))?;
    let Some(found) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(Some(ids))
}

/// How long [`watermarks`] waits between asks while a partition has no
/// leader yet.
const LEADER_RETRY: Duration = Duration::from_millis(50);

/// The low and high watermarks of one partition. A topic created a moment
/// ago may not have a leader for every partition yet (the broker answers
/// `NotLeaderForPartition`, `LeaderNotAvailable` or
/// `UnknownTopicOrPartition`); those answers are asked again until
/// `timeout` has passed, any other error is returned at once.
pub(super) fn watermarks(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match consumer.fetch_watermarks(topic, partition, left.max(LEADER_RETRY)) {
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition,
            )) if left > LEADER_RETRY => std::thread::sleep(LEADER_RETRY),
            other => {
                return other.map_err(|e| {
                    format!("cannot read the watermarks of {topic}/{partition}: {e}")
                });
            }
        }
    }
}

pub(super) fn err(what: &str) -> impl Fn(KafkaError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn lag_blocking(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<Vec<PartitionLag>, String> {
    let timeout = config.request_timeout;
    let consumer = group_client(config, group)?;
    let ids = partitions(&consumer, topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for &p in &ids {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(err("cannot read committed offsets"))?;
    ids.into_iter()
        .map(|partition| {
            let (low, high) = watermarks(&consumer, topic, partition, timeout)?;
            let committed =
                committed
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            Ok(PartitionLag {
                partition,
                committed,
                low_watermark: low,
                high_watermark: high,
                lag: (high - committed.unwrap_or(low)).max(0),
            })
        })
        .collect()
}

fn reset_blocking(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    to: OffsetReset,
) -> Result<Vec<PartitionOffset>, String> {
    let timeout = config.request_timeout;
    let consumer = group_client(config, group)?;
    let groups = consumer
        .fetch_group_list(Some(group), timeout)
        .map_err(err("cannot describe the group"))?;
    if let Some(g) = groups.groups().iter().find(|g| g.name() == group) {
        if !g.members().is_empty() {
            return Err(format!(
                "group {group} has {} active member(s) (state {}): stop its consumers first",
                g.members().len(),
                g.state()
            ));
        }
    }
    let ids = partitions(&consumer, topic, timeout)?;
    let mut by_time = None;
    if let OffsetReset::Timestamp(ts) = to {
        let mut query = TopicPartitionList::new();
        for &p in &ids {
            query
                .add_partition_offset(topic, p, Offset::Offset(ts))
                .map_err(err("bad timestamp"))?;
        }
        by_time = Some(
            consumer
                .offsets_for_times(query, timeout)
                .map_err(err("cannot look offsets up by time"))?,
        );
    }
    let mut target = TopicPartitionList::new();
    let mut result = Vec::with_capacity(ids.len());
    for partition in ids {
        let (low, high) = watermarks(&consumer, topic, partition, timeout)?;
        let offset = match to {
            OffsetReset::Earliest => low,
            OffsetReset::Latest => high,
            OffsetReset::Offset(o) => o.clamp(low, high),
            OffsetReset::Timestamp(_) => by_time
                .as_ref()
                .and_then(|tpl| tpl.find_partition(topic, partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(high),
        };
        target
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(err("bad offset"))?;
        result.push(PartitionOffset { partition, offset });
    }
    consumer
        .assign(&target)
        .map_err(err("cannot assign the partitions"))?;
    consumer
        .commit(&target, CommitMode::Sync)
        .map_err(err("cannot commit the offsets"))?;
    Ok(result)
}
