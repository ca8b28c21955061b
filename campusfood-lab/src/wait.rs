//! Waiting for a condition, with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::LabError;

/// Waits until `cond` holds, polling every 20 ms, or fails after `deadline`.
pub async fn until<F, Fut>(what: &str, deadline: Duration, mut cond: F) -> Result<(), LabError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(LabError::Deadline {
                what: what.to_owned(),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
