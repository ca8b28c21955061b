//! # campusfood-lab
//!
//! Runs the assignment's experiments against the real services and writes a
//! report a person can read, share and compare between runs:
//! `reports/<name>/report.md`, `report.json` and one SVG per chart.
//!
//! ```sh
//! cargo run --release --example lab -- list
//! cargo run --release --example lab -- run all --name example
//! cargo run --release --example lab -- run A2 A4 --fast
//! ```
//!
//! ## Layout
//! - [`experiment`]: the [`Experiment`] trait and what a run of one yields,
//!   an [`Outcome`]: tables, chart series, metrics and checked
//!   [`Conclusion`]s. Nothing in it knows about Markdown or SVG.
//! - [`experiments`]: the registry ([`experiments::all`]) and one file per
//!   experiment (`a1_baseline.rs` …). Adding one means adding a file and a
//!   line in the registry; the runner does not change.
//! - [`context`]: what an experiment gets to work with: its settings, the
//!   services ([`Services`]: started in process per experiment, or running
//!   ones), the parts started for it, and progress bars.
//! - [`settings`]: [`Settings`], the sizes and durations (`--fast`).
//! - [`load`]: the load every part is driven with: an [`OrderClient`] that
//!   turns every answer into a [`Sample`], sequential, concurrent and
//!   fixed-rate senders, and the open loop of `--open-loop-rate`
//!   ([`Pacing`](load::Pacing)).
//! - [`outcomes`]: what became of each order an experiment placed
//!   ([`OrderOutcomes`](outcomes::OrderOutcomes)), and "nothing lost,
//!   nothing twice" read off it.
//! - [`sends`]: the notifier's sent-set counting, per order, the
//!   confirmations sent.
//! - [`gauge`]: values sampled over time (queue depth, outbox, reservations).
//! - [`wait`]: waiting for a condition with a deadline.
//!
//! One module per architecture, named as its example is (the assignment's
//! Part A, B and C); each depends on the modules above, never on
//! [`context`], which depends on them:
//! - [`sync_rest`]: Part A as an experiment drives it: a [`PartA`] handle
//!   (in process or external) and inventory outages.
//! - [`async_rabbitmq`]: Part B as an experiment drives it: a [`PartB`] handle
//!   (the async services in process over RabbitMQ, names under a prefix
//!   unique to the run, each service stoppable, optionally through a
//!   cuttable proxy) and a [`Probe`](async_rabbitmq::Probe) that records every
//!   delivery a consumer handled.
//! - [`streaming_kafka`]: Part C as an experiment drives it: a [`PartC`] handle
//!   (the Kafka inventory and analytics consumers in process, topics and
//!   groups under a suffix unique to the run, each consumer stoppable), a
//!   producer, lag and offset resets.
//! - [`stats`]: latency summaries (hdrhistogram) and CDFs, in milliseconds.
//! - [`chart`]: SVG rendering with plotters (no system fonts needed).
//! - [`report`]: the report's data model (serde, stable keys, ms) and its
//!   Markdown rendering.
//! - [`runner`]: selects experiments, runs them one after another, writes
//!   the report after each, and returns it.
//! - [`progress`]: indicatif bars on stderr, hidden when it is not a TTY.

pub mod async_rabbitmq;
pub mod chart;
pub mod context;
pub mod error;
pub mod experiment;
pub mod experiments;
pub mod gauge;
pub mod load;
pub mod outcomes;
pub mod perf;
pub mod progress;
pub mod report;
pub mod runner;
pub mod sends;
pub mod settings;
pub mod stats;
pub mod streaming_kafka;
pub mod sync_rest;
pub mod wait;

pub use async_rabbitmq::{PartB, PartBOptions};
pub use context::{Context, Services};
pub use error::LabError;
pub use experiment::{Cell, Chart, Conclusion, Experiment, Outcome, Series, Table};
pub use load::{OrderClient, Sample};
pub use report::Report;
pub use runner::{RunConfig, list, run, select};
pub use settings::Settings;
pub use streaming_kafka::{PartC, PartCOptions};
pub use sync_rest::PartA;
