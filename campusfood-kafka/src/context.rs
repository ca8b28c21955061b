//! The librdkafka client context shared by every client this module makes:
//! librdkafka's log lines and errors go to `tracing`, and a consumer commits
//! the offsets it has stored before its partitions are taken away.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The librdkafka client context of this module's clients: forwards
/// librdkafka's logs to `tracing`, and makes a consumer commit the offsets it
/// has stored before its partitions are revoked.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaContext;

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A reader that asked for end-of-partition events (the dead-letter
        // and scan readers) sometimes gets one as a global error: the end
        // it waits for, not a failure.
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::debug!(target: "librdkafka", %error, "{reason}");
        } else {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // Offsets are stored only once a record is finished, so
            // committing them now hands the next owner of these partitions
            // exactly the records not yet done.
            Rebalance::Revoke(tpl) => {
                tracing::debug!(partitions = tpl.count(), "partitions revoked: committing");
                commit_stored(consumer, CommitMode::Sync);
            }
            Rebalance::Assign(tpl) => {
                tracing::debug!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// Commits the offsets the consumer has stored; having nothing to commit is
/// not an error.
pub(crate) fn commit_stored<C: Consumer<KafkaContext>>(consumer: &C, mode: CommitMode) {
    match consumer.commit_consumer_state(mode) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "committing offsets failed"),
    }
}
