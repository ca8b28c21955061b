//! What can go wrong in the lab. An experiment whose *conclusions* do not
//! hold is not an error: that is a finding, reported with ❌. Errors are
//! what stops an experiment from measuring at all.

use std::path::PathBuf;
use std::time::Duration;

use campusfood_core::transport::TransportError;
use campusfood_services::server::StartError;
use thiserror::Error;

/// Why the lab, or one experiment, could not do its work.
#[derive(Debug, Error)]
pub enum LabError {
    /// The in-process services could not start.
    #[error("cannot start the services: {0}")]
    Start(#[from] StartError),
    /// A service could not be reached or its answer could not be read.
    #[error("{what}: {source}")]
    Http {
        /// The call.
        what: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A service answered, but not as the contract says.
    #[error("{what}: unexpected answer {status}: {body}")]
    Unexpected {
        /// The call.
        what: String,
        /// Its HTTP status.
        status: u16,
        /// Its body, for the reader.
        body: String,
    },
    /// The experiment needs something this run does not have (e.g. it must
    /// restart a service but the services are external). The runner reports
    /// the experiment as skipped with this reason.
    #[error("needs {needs} ({hint})")]
    Unavailable {
        /// What is missing.
        needs: String,
        /// How to get it.
        hint: String,
    },
    /// A condition did not come true before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Deadline {
        /// The condition.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// No experiment has this id.
    #[error("unknown experiment {0:?}; `lab list` shows them")]
    UnknownExperiment(String),
    /// A setting (`--set key=value` or a flag) cannot be used.
    #[error("setting {key}: {message}")]
    Setting {
        /// The setting.
        key: String,
        /// Why.
        message: String,
    },
    /// A report file could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("chart {id}: {message}")]
    Chart {
        /// The chart.
        id: String,
        /// Why.
        message: String,
    },
    /// The report could not be encoded.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A task of the experiment panicked or was cancelled.
    #[error("experiment task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A broker call (publish, queue depth, dead letters) failed.
    #[error("{what}: {source}")]
    Broker {
        /// What was tried.
        what: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A service's store (ledger, orders) could not be read.
    #[error("{what}: {message}")]
    Store {
        /// What was read.
        what: String,
        /// Why.
        message: String,
    },
    /// A shipped binary or a tool (`lab perf`'s services, wrk) could not
    /// run, or ran and failed.
    #[error("{what}: {message}")]
    Process {
        /// The process.
        what: String,
        /// Why.
        message: String,
    },
    /// A local socket (e.g. the unresponsive stand-in for inventory) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was tried.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl LabError {
    /// Whether the runner should report the experiment as skipped rather
    /// than failed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A [`LabError::Broker`] about `what`, for `map_err`.
pub(crate) fn broker_err(what: &str) -> impl FnOnce(TransportError) -> LabError + '_ {
    move |source| LabError::Broker {
        what: what.to_owned(),
        source,
    }
}

/// A [`LabError::Store`] about `what`, for `map_err`.
pub(crate) fn store_err(what: &str) -> impl FnOnce(String) -> LabError + '_ {
    move |message| LabError::Store {
        what: what.to_owned(),
        message,
    }
}
