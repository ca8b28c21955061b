//! The registry: every experiment the lab knows, in the order `run all`
//! runs them. To add one (X3 …): write `x3_<topic>.rs` with a unit struct
//! implementing [`Experiment`], declare the module here and add it to
//! [`all`]. Nothing else changes: the runner, the report and the CLI pick
//! it up by its id.
//!
//! | id | file | what |
//! |---|---|---|
//! | A1 | `a1_baseline.rs` | baseline latency of the synchronous chain |
//! | A2 | `a2_delay.rs` | a delay injected into inventory blocks the caller |
//! | A3 | `a3_failure.rs` | inventory failing → 503; slower than the timeout → 504 |
//! | A4 | `a4_breaker.rs` | circuit breaker off vs on during an inventory outage |
//! | B1 | `b1_baseline.rs` | async acceptance vs end-to-end latency over RabbitMQ |
//! | B2 | `b2_backlog.rs` | inventory down: a backlog that grows, then drains exactly once |
//! | B3 | `b3_idempotency.rs` | the same `OrderPlaced` again: one record, one decrement, one notification |
//! | B4 | `b4_dead_letters.rs` | poison to the DLQ with reasons; bounded retries, DLQ, replay |
//! | B5 | `b5_broker_outage.rs` | the broker cut mid-run: every 201 ends notified, reserved once |
//! | C1 | `c1_burst.rs` | a 10k burst through Kafka: throughput, metrics over time |
//! | C2 | `c2_throttle.rs` | a throttled analytics consumer: lag builds up and drains |
//! | C3 | `c3_replay.rs` | offset reset to earliest and replay: identical totals |
//! | X1 | `x1_headline.rs` | REST vs RabbitMQ vs Kafka while inventory is healthy, slow, down |
//! | X2 | `x2_throughput.rs` | orders accepted and processed per second, same workload |
//! | X3 | `x3_scale_out.rs` | 1 vs 3 inventory instances: own ledgers oversell, a shared one is exact |

use crate::experiment::Experiment;

mod a1_baseline;
mod a2_delay;
mod a3_failure;
mod a4_breaker;
mod b1_baseline;
mod b2_backlog;
mod b3_idempotency;
mod b4_dead_letters;
mod b5_broker_outage;
mod c1_burst;
mod c2_throttle;
mod c3_replay;
mod common;
mod x1_headline;
mod x2_throughput;
mod x3_scale_out;

pub use a1_baseline::A1Baseline;
pub use a2_delay::A2Delay;
pub use a3_failure::A3Failure;
pub use a4_breaker::A4Breaker;
pub use b1_baseline::B1Baseline;
pub use b2_backlog::B2Backlog;
pub use b3_idempotency::B3Idempotency;
pub use b4_dead_letters::B4DeadLetters;
pub use b5_broker_outage::B5BrokerOutage;
pub use c1_burst::C1Burst;
pub use c2_throttle::C2Throttle;
pub use c3_replay::C3Replay;
pub use x1_headline::X1Headline;
pub use x2_throughput::X2Throughput;
pub use x3_scale_out::X3ScaleOut;

/// Every experiment, in run order.
pub fn all() -> Vec<Box<dyn Experiment>> {
    vec![
        Box::new(A1Baseline),
        Box::new(A2Delay),
        Box::new(A3Failure),
        Box::new(A4Breaker),
        Box::new(B1Baseline),
        Box::new(B2Backlog),
        Box::new(B3Idempotency),
        Box::new(B4DeadLetters),
        Box::new(B5BrokerOutage),
        Box::new(C1Burst),
        Box::new(C2Throttle),
        Box::new(C3Replay),
        Box::new(X1Headline),
        Box::new(X2Throughput),
        Box::new(X3ScaleOut),
    ]
}
