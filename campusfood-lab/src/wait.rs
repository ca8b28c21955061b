//! Waiting for a condition, with a deadline.

use std::future::Future;
use std::time::Duration;

use crate::error::LabError;

/// Waits until `cond` holds, polling every 20 ms, or fails after `deadline`
/// ([`wait_until`](campusfood_core::task::wait_until), as a [`LabError`]).
pub async fn until<F, Fut>(what: &str, deadline: Duration, cond: F) -> Result<(), LabError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    campusfood_core::task::wait_until(deadline, Duration::from_millis(20), cond)
        .await
        .map_err(|_| LabError::Deadline {
            what: what.to_owned(),
            after: deadline,
        })
}
