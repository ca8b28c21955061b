//! Resilience for a synchronous hop: retry with jittered backoff, a circuit
//! breaker and a bulkhead. Each is off unless configured, so the original
//! experiments reproduce exactly; the lab turns them on to show the
//! difference.
//!
//! Time comes from [`tokio::time`], so tests drive the breaker's cool-down
//! with paused time instead of sleeping.

use std::sync::Mutex;
use std::time::Duration;

use campusfood_core::config::{BreakerConfig, RetryConfig};
use campusfood_core::metric::{self, BreakerStateValue};
use tokio::time::Instant;

/// The backoff before attempt `next_attempt` (2 for the first retry): full
/// jitter over an exponentially growing cap, `random(0..=min(max, base·2ⁿ⁻²))`.
/// Hand-written because it is full jitter: backon's `with_jitter` adds a
/// random part on top of the delay, so retrying callers never spread below it.
pub fn backoff(config: &RetryConfig, next_attempt: u32) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(20);
    let cap = config
        .base_delay
        .saturating_mul(1u32 << exp)
        .min(config.max_delay);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// Where a circuit breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive failures are counted.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls fail fast until the cool-down ends.
    Open {
        /// When a probe may go through.
        until: Instant,
    },
    /// One probe call is in flight; others fail fast until it answers.
    HalfOpen,
}

/// A call refused because the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: the downstream service is failing, calls are refused until it recovers")]
pub struct CircuitOpen;

/// A consecutive-failure circuit breaker: opens after
/// [`BreakerConfig::failure_threshold`] failures in a row, refuses calls for
/// [`BreakerConfig::open_for`], then lets one probe through — success
/// closes it, failure opens it again. Its state is the gauge
/// [`metric::BREAKER_STATE`], labelled with the hop it guards.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    hop: &'static str,
    state: Mutex<BreakerState>,
}

impl CircuitBreaker {
    /// A closed breaker on the hop `downstream`.
    pub fn new(config: BreakerConfig) -> Self {
        Self::named("downstream", config)
    }

    /// A closed breaker on `hop` (the `hop` label of its gauge).
    pub fn named(hop: &'static str, config: BreakerConfig) -> Self {
        let this = Self {
            config,
            hop,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        };
        this.publish(&BreakerState::Closed { failures: 0 });
        this
    }

    /// Sets the gauge to `state`.
    fn publish(&self, state: &BreakerState) {
        let value = match state {
            BreakerState::Closed { .. } => BreakerStateValue::Closed,
            BreakerState::Open { .. } => BreakerStateValue::Open,
            BreakerState::HalfOpen => BreakerStateValue::HalfOpen,
        };
        metric::breaker_state(self.hop, value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.lock()
    }

    /// Asks to make a call: `Ok` with the call's [`BreakerCall`] to go
    /// ahead (then report how it went on it), `Err` to fail fast.
    pub fn try_acquire(&self) -> Result<BreakerCall<'_>, CircuitOpen> {
        let mut state = self.lock();
        let probe = match *state {
            BreakerState::Closed { .. } => false,
            BreakerState::Open { until } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen;
                self.publish(&state);
                tracing::info!("circuit half-open: letting a probe through");
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => return Err(CircuitOpen),
        };
        Ok(BreakerCall {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// Reports a successful call: closes the circuit.
    fn on_success(&self) {
        let mut state = self.lock();
        if !matches!(*state, BreakerState::Closed { failures: 0 }) {
            if matches!(*state, BreakerState::HalfOpen) {
                tracing::info!("circuit closed: probe succeeded");
            }
            *state = BreakerState::Closed { failures: 0 };
            self.publish(&state);
        }
    }

    /// Reports a failed call: counts it, and opens the circuit at the
    /// threshold or when a probe fails.
    fn on_failure(&self) {
        let mut state = self.lock();
        let open = BreakerState::Open {
            until: Instant::now() + self.config.open_for,
        };
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 >= self.config.failure_threshold => {
                tracing::warn!(failures = failures + 1, "circuit opened");
                open
            }
            BreakerState::Closed { failures } => BreakerState::Closed {
                failures: failures + 1,
            },
            BreakerState::HalfOpen => {
                tracing::warn!("circuit re-opened: probe failed");
                open
            }
            // A call admitted before the circuit opened: already open.
            open @ BreakerState::Open { .. } => open,
        };
        self.publish(&state);
    }
}

/// A call the [`CircuitBreaker`] let through, to be settled with
/// [`succeeded`](Self::succeeded) or [`failed`](Self::failed).
///
/// A call can also end without a verdict: its future is dropped (a caller
/// that gave up, a timeout wrapped around the order, a server dropping the
/// handler of a closed connection). Then, on drop:
///
/// - **the half-open probe counts as a failure**: the circuit opens again
///   for [`BreakerConfig::open_for`] and the next call after that is the
///   next probe. An unknown outcome of the call that was to prove the
///   downstream healthy is not taken as proof; and without a verdict the
///   breaker would stay half-open, refusing every call, until restart.
/// - **any other call counts as nothing**: a caller's impatience is not the
///   downstream's failure, and a closed circuit has no slot to free.
#[derive(Debug)]
#[must_use = "settle the call with succeeded() or failed(); dropping it counts a probe as failed"]
pub struct BreakerCall<'a> {
    breaker: &'a CircuitBreaker,
    /// Whether this is the half-open probe (the one call that decides).
    probe: bool,
    /// Whether a verdict was given (drop then does nothing).
    reported: bool,
}

impl BreakerCall<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded: the circuit closes.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.on_success();
    }

    /// The call failed: counted, and the circuit opens at the threshold or
    /// when this was the probe.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.on_failure();
    }
}

impl Drop for BreakerCall<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            tracing::warn!("circuit probe abandoned before it answered: counted as failed");
            self.breaker.on_failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(2),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_threshold_probes_after_cooldown_and_closes() {
        let b = breaker();
        for _ in 0..2 {
            b.try_acquire().unwrap().failed();
        }
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        b.try_acquire().unwrap().failed();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(b.try_acquire().err(), Some(CircuitOpen));
        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        // Only one probe at a time.
        assert_eq!(b.try_acquire().err(), Some(CircuitOpen));
        probe.succeeded();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(!b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_success_resets_the_count() {
        let b = breaker();
        b.on_failure();
        b.on_failure();
        b.on_success();
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
        b.on_failure();
        b.on_failure();
        tokio::time::advance(Duration::from_secs(2)).await;
        b.try_acquire().unwrap().failed();
        assert_eq!(b.try_acquire().err(), Some(CircuitOpen));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_counts_as_failed_and_a_later_probe_decides() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // The probe's future is dropped before it answers.
        drop(b.try_acquire().unwrap());
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert_eq!(b.try_acquire().err(), Some(CircuitOpen));
        // After another cool-down the next call probes, and settles it.
        tokio::time::advance(Duration::from_secs(2)).await;
        b.try_acquire().unwrap().succeeded();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        // A dropped call of a closed circuit counts as nothing.
        b.on_failure();
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), BreakerState::Closed { failures: 1 });
    }

    #[test]
    fn the_gauge_follows_the_state() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let gauge = || {
            handle
                .render()
                .lines()
                .find_map(|l| l.strip_prefix(r#"campusfood_breaker_state{hop="inventory"} "#))
                .map(str::to_owned)
        };
        metrics::with_local_recorder(&recorder, || {
            let b = CircuitBreaker::named(
                "inventory",
                BreakerConfig {
                    failure_threshold: 1,
                    open_for: Duration::ZERO,
                },
            );
            assert_eq!(gauge().as_deref(), Some("0"));
            b.try_acquire().unwrap().failed();
            assert_eq!(gauge().as_deref(), Some("1"));
            let probe = b.try_acquire().unwrap();
            assert_eq!(gauge().as_deref(), Some("2"));
            probe.succeeded();
            assert_eq!(gauge().as_deref(), Some("0"));
        });
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let c = RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for attempt in 2..12 {
            for _ in 0..100 {
                assert!(backoff(&c, attempt) <= Duration::from_millis(300));
            }
        }
        assert!(backoff(&c, 2) <= Duration::from_millis(100));
        let draws: std::collections::HashSet<_> = (0..50).map(|_| backoff(&c, 5)).collect();
        assert!(draws.len() > 1, "backoff must be jittered");
    }
}
