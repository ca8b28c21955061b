//! The registry: every experiment the lab knows, in the order `run all`
//! runs them. To add one (B1 …): write `b1_<topic>.rs` with a unit struct
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

use crate::experiment::Experiment;

mod a1_baseline;
mod a2_delay;
mod a3_failure;
mod a4_breaker;
mod common;

pub use a1_baseline::A1Baseline;
pub use a2_delay::A2Delay;
pub use a3_failure::A3Failure;
pub use a4_breaker::A4Breaker;

/// Every experiment, in run order.
pub fn all() -> Vec<Box<dyn Experiment>> {
    vec![
        Box::new(A1Baseline),
        Box::new(A2Delay),
        Box::new(A3Failure),
        Box::new(A4Breaker),
    ]
}
