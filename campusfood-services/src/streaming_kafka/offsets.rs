//! Consumer-group operations for the two groups, without the Kafka CLI
//! (`streaming_kafka offsets lag | reset`). They read and write the same
//! committed offsets as `kafka-consumer-groups --describe` and
//! `--reset-offsets`, so either tool sees the other's work.
//!
//! Which topics a group has offsets on: the inventory group consumes the
//! order topic only; the analytics group, and any other group, both topics.

use std::fmt;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use campusfood_core::config::KafkaConfig;
use campusfood_transport::kafka::{KafkaTransport, OffsetReset, PartitionLag, PartitionOffset};

use super::StreamingError;

/// Integers from this value on are times (epoch milliseconds, 2001-09-09
/// and later), below it offsets.
pub const EPOCH_MS_THRESHOLD: i64 = 1_000_000_000_000;

/// Where `offsets reset --to` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// `earliest`: the oldest record still held.
    Earliest,
    /// `latest`: the end; only new records are read.
    Latest,
    /// An offset (an integer below [`EPOCH_MS_THRESHOLD`]), clamped to each
    /// partition's range.
    Offset(i64),
    /// A time: RFC 3339 (`2025-01-31T12:00:00Z`) or epoch milliseconds; the
    /// first record at or after it.
    Time(i64),
}

impl ResetTarget {
    /// The transport's equivalent.
    pub fn to_offset_reset(self) -> OffsetReset {
        match self {
            Self::Earliest => OffsetReset::Earliest,
            Self::Latest => OffsetReset::Latest,
            Self::Offset(o) => OffsetReset::Offset(o),
            Self::Time(ms) => OffsetReset::Timestamp(ms),
        }
    }
}

impl FromStr for ResetTarget {
    type Err = StreamingError;

    /// `earliest` | `latest` | an offset | epoch milliseconds (13+ digits)
    /// | an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "earliest" => return Ok(Self::Earliest),
            "latest" => return Ok(Self::Latest),
            _ => {}
        }
        if let Ok(n) = s.parse::<i64>() {
            return if n < 0 {
                Err(invalid(s, "an offset or time cannot be negative"))
            } else if n >= EPOCH_MS_THRESHOLD {
                Ok(Self::Time(n))
            } else {
                Ok(Self::Offset(n))
            };
        }
        let time = humantime::parse_rfc3339_weak(s).map_err(|e| invalid(s, &e.to_string()))?;
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| invalid(s, "before 1970"))?
            .as_millis();
        Ok(Self::Time(
            i64::try_from(ms).map_err(|_| invalid(s, "too far in the future"))?,
        ))
    }
}

fn invalid(s: &str, why: &str) -> StreamingError {
    StreamingError::Invalid {
        name: "--to",
        reason: format!(
            "{s:?}: {why} (expected earliest, latest, an offset, epoch milliseconds or an RFC 3339 time)"
        ),
    }
}

impl fmt::Display for ResetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Earliest => f.write_str("earliest"),
            Self::Latest => f.write_str("latest"),
            Self::Offset(o) => write!(f, "offset {o}"),
            Self::Time(ms) => write!(f, "time {ms} ms"),
        }
    }
}

/// The topics `group` has offsets on: the order topic for the inventory
/// group, both topics otherwise.
pub fn topics_for_group(config: &KafkaConfig, group: &str) -> Vec<String> {
    if group == config.inventory_group {
        vec![config.order_topic.clone()]
    } else {
        vec![config.order_topic.clone(), config.inventory_topic.clone()]
    }
}

/// A group's position on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTopicLag {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// Per partition: committed offset, watermarks, lag.
    pub partitions: Vec<PartitionLag>,
}

impl GroupTopicLag {
    /// The lag summed over partitions.
    pub fn total(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// The lag of `group` on each of `topics`.
///
/// # Errors
/// [`StreamingError::Transport`] when a topic does not exist or Kafka does
/// not answer.
pub async fn lag(
    transport: &KafkaTransport,
    group: &str,
    topics: &[String],
) -> Result<Vec<GroupTopicLag>, StreamingError> {
    let mut out = Vec::with_capacity(topics.len());
    for topic in topics {
        out.push(GroupTopicLag {
            group: group.to_owned(),
            topic: topic.clone(),
            partitions: transport.lag(group, topic).await?,
        });
    }
    Ok(out)
}

/// Moves the stopped `group` to `to` on each of `topics`, and returns the
/// offsets committed per topic.
///
/// # Errors
/// [`StreamingError::Transport`] when the group still has members ("stop
/// its consumers first"), a topic does not exist, or Kafka does not answer.
/// Topics before the failing one have been reset.
pub async fn reset(
    transport: &KafkaTransport,
    group: &str,
    topics: &[String],
    to: ResetTarget,
) -> Result<Vec<(String, Vec<PartitionOffset>)>, StreamingError> {
    let mut out = Vec::with_capacity(topics.len());
    for topic in topics {
        let offsets = transport
            .reset_offsets(group, topic, to.to_offset_reset())
            .await?;
        out.push((topic.clone(), offsets));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reset_targets() {
        let p = |s: &str| s.parse::<ResetTarget>();
        assert_eq!(p("earliest").unwrap(), ResetTarget::Earliest);
        assert_eq!(p("LATEST").unwrap(), ResetTarget::Latest);
        assert_eq!(p("42").unwrap(), ResetTarget::Offset(42));
        assert_eq!(
            p("1700000000000").unwrap(),
            ResetTarget::Time(1_700_000_000_000)
        );
        assert_eq!(
            p("2023-11-14T22:13:20Z").unwrap(),
            ResetTarget::Time(1_700_000_000_000)
        );
        assert!(p("-1").is_err());
        assert!(p("yesterday").is_err());
    }

    #[test]
    fn the_inventory_group_has_offsets_on_the_order_topic_only() {
        let c = KafkaConfig::default();
        assert_eq!(topics_for_group(&c, "inventory-consumer"), ["order-events"]);
        assert_eq!(
            topics_for_group(&c, "analytics-consumer"),
            ["order-events", "inventory-events"]
        );
    }
}
