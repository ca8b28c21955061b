//! [`BackgroundTask`]: a task on the runtime with a stop signal — every
//! consumer loop, relay, sampler and server of the workspace runs as one.
//!
//! The task is handed a [`StopSignal`]; [`BackgroundTask::stop`] asks it to
//! stop and waits for what it returns, so it can drain first. Dropping the
//! handle asks it to stop without waiting.
//!
//! [`Deadline`] paces every condition wait with a deadline: [`wait_until`]
//! (the lab's waits) and the test kit's `until` are built on it.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

/// Tells a running task to stop: resolves when a stop was asked for or its
/// [`BackgroundTask`] was dropped.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Waits until stop is asked for.
    pub async fn stopped(&mut self) {
        // An error means the sender was dropped: also a stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether stop has been asked for.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves when stop is asked for, owning the signal: a shutdown
    /// future to hand to a loop that takes one.
    pub async fn into_stopped(mut self) {
        self.stopped().await;
    }
}

/// A task running on its own until asked to stop. Stop it with
/// [`stop`](Self::stop), which waits for its output; dropping it asks it to
/// stop without waiting.
#[derive(Debug)]
#[must_use = "dropping a BackgroundTask stops it"]
pub struct BackgroundTask<T = ()> {
    stop: StopOnDrop,
    task: JoinHandle<T>,
}

/// Asks for the stop when dropped: the task's handle was let go.
#[derive(Debug)]
struct StopOnDrop(watch::Sender<bool>);

impl StopOnDrop {
    fn ask(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.ask();
    }
}

impl<T: Send + 'static> BackgroundTask<T> {
    /// Runs `run` on a task, handing it its stop signal.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(StopSignal(rx)));
        Self {
            stop: StopOnDrop(stop),
            task,
        }
    }

    /// Asks the task to stop without waiting for it; [`stop`](Self::stop)
    /// then waits.
    pub fn ask_stop(&self) {
        self.stop.ask();
    }

    /// Asks the task to stop and waits for its output (an error when it
    /// panicked or was aborted).
    pub async fn stop(self) -> Result<T, JoinError> {
        self.stop.ask();
        self.task.await
    }

    /// Like [`stop`](Self::stop), but waits at most `limit`: a task still
    /// running then is aborted and `None` returned.
    pub async fn stop_within(mut self, limit: Duration) -> Option<Result<T, JoinError>> {
        self.stop.ask();
        match tokio::time::timeout(limit, &mut self.task).await {
            Ok(ended) => Some(ended),
            Err(_) => {
                self.task.abort();
                None
            }
        }
    }

    /// Whether the task has ended (stopped, or ended on its own).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A condition did not hold within its deadline ([`wait_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the condition did not hold within {0:?}")]
pub struct TimedOut(pub Duration);

/// The pace and the end of a condition wait: check, then
/// [`tick`](Self::tick) until the condition holds. Measured on Tokio's
/// clock, so paused time (`tokio::time::pause`) advances it too.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: tokio::time::Instant,
    every: Duration,
    limit: Duration,
}

impl Deadline {
    /// A wait of at most `limit`, checking every `every`.
    pub fn after(limit: Duration, every: Duration) -> Self {
        Self {
            end: tokio::time::Instant::now() + limit,
            every,
            limit,
        }
    }

    /// Sleeps until the next check, or fails when the deadline has passed.
    pub async fn tick(&self) -> Result<(), TimedOut> {
        if tokio::time::Instant::now() >= self.end {
            return Err(TimedOut(self.limit));
        }
        tokio::time::sleep(self.every).await;
        Ok(())
    }
}

/// Waits until `cond` holds, checking it at once and then every `every`;
/// fails after `deadline` ([`Deadline`]).
pub async fn wait_until<F, Fut>(
    deadline: Duration,
    every: Duration,
    mut cond: F,
) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let pace = Deadline::after(deadline, every);
    while !cond().await {
        pace.tick().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_waits_for_the_output() {
        let task = BackgroundTask::spawn(|mut stop| async move {
            stop.stopped().await;
            7
        });
        assert!(!task.is_finished());
        assert_eq!(task.stop().await.unwrap(), 7);
    }

    #[tokio::test]
    async fn dropping_asks_to_stop() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = BackgroundTask::spawn(|stop| async move {
            stop.into_stopped().await;
            let _ = tx.send(());
        });
        drop(task);
        rx.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_the_condition_holds_or_the_deadline() {
        let mut n = 0;
        let counted = wait_until(Duration::from_secs(1), Duration::from_millis(10), || {
            n += 1;
            std::future::ready(n == 3)
        })
        .await;
        assert_eq!((counted, n), (Ok(()), 3));
        let never = wait_until(
            Duration::from_secs(1),
            Duration::from_millis(10),
            || async { false },
        );
        assert_eq!(never.await, Err(TimedOut(Duration::from_secs(1))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_does_not_stop_is_aborted() {
        let task = BackgroundTask::spawn(|_stop| std::future::pending::<()>());
        assert!(task.stop_within(Duration::from_secs(1)).await.is_none());
    }
}
