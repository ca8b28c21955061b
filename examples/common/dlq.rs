//! The `dlq` subcommands of the examples with dead letters (`async_rabbitmq`,
//! `streaming_kafka`): the same words for both brokers.

use clap::Subcommand;

/// What to do with the dead letters.
#[derive(Subcommand, Debug)]
pub enum DlqAction {
    /// List pending dead letters with their reasons, oldest first.
    List {
        /// At most this many (per dead-letter queue or topic).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one dead letter in full.
    Show {
        /// Its id, as `list` shows it.
        id: String,
    },
    /// Put one dead letter back where it came from, for another round of attempts.
    Replay {
        /// Its id, as `list` shows it.
        id: String,
    },
    /// Put every pending dead letter back where it came from.
    ReplayAll,
}
