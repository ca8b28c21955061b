//! Runtime fault injection: an added delay and a failure rate, changeable
//! while the service runs (`POST /configure`), optionally seeded so that a
//! run is reproducible.
//!
//! With a seed, whether a call fails is a pure function of
//! `(seed, key, attempt)` — see [`decide`] — so a replay of the same orders
//! reproduces the same failures, and a retry (next attempt) gets a fresh
//! draw. Without a seed, each call draws at random.
//!
//! The delay is bounded ([`FaultConfig::MAX_DELAY`]) and can be taken back:
//! a call waiting out a delay follows the setting while it waits, so
//! `{"delay": 0}` ends every wait in progress at once (in Part B each
//! waiting delivery holds a prefetch slot, which it then gives back).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a fault setting was refused. The caller's fault.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum FaultError {
    /// `delay` is negative, above [`FaultConfig::MAX_DELAY`] or not a
    /// number.
    #[error("delay must be a number of seconds from 0 to {max}, got {0}", max = FaultConfig::MAX_DELAY.as_secs())]
    Delay(f64),
    /// `failure_rate` is outside `0..=1`.
    #[error("failure_rate must be between 0 and 1, got {0}")]
    FailureRate(f64),
}

impl FaultError {
    /// The setting that was refused, as the `/configure` body names it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Delay(_) => "delay",
            Self::FailureRate(_) => "failure_rate",
        }
    }
}

/// A validated fault setting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    delay: Duration,
    failure_rate: f64,
    seed: Option<u64>,
}

impl FaultConfig {
    /// The longest delay accepted: long enough for any timeout experiment,
    /// short enough that a forgotten setting cannot hold calls for hours.
    pub const MAX_DELAY: Duration = Duration::from_secs(60);

    /// A setting of `delay_secs` seconds of added latency and a
    /// `failure_rate` share of failed calls, optionally seeded.
    pub fn new(delay_secs: f64, failure_rate: f64, seed: Option<u64>) -> Result<Self, FaultError> {
        Ok(Self {
            delay: delay_from_secs(delay_secs)?,
            failure_rate: check_rate(failure_rate)?,
            seed,
        })
    }

    /// The added delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The share of calls that fail, in `0..=1`.
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// The seed, if draws are deterministic.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// Whether the call identified by `key` fails on its `attempt`-th try.
    pub fn fails(&self, key: &str, attempt: u32) -> bool {
        if self.failure_rate <= 0.0 {
            return false;
        }
        let draw = match self.seed {
            Some(seed) => decide(seed, key, attempt),
            None => fastrand::f64(),
        };
        draw < self.failure_rate
    }

    /// Applies a partial update; fields left `None` keep their value.
    pub fn updated(&self, update: &FaultUpdate) -> Result<Self, FaultError> {
        Ok(Self {
            delay: match update.delay {
                Some(d) => delay_from_secs(d)?,
                None => self.delay,
            },
            failure_rate: match update.failure_rate {
                Some(r) => check_rate(r)?,
                None => self.failure_rate,
            },
            seed: update.seed.or(self.seed),
        })
    }

    /// The setting as the contract reports it: `{delay, failure_rate}` (plus
    /// `seed` when set).
    pub fn view(&self) -> FaultView {
        FaultView {
            delay: self.delay.as_secs_f64(),
            failure_rate: self.failure_rate,
            seed: self.seed,
        }
    }
}

fn delay_from_secs(s: f64) -> Result<Duration, FaultError> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| *d <= FaultConfig::MAX_DELAY)
        .ok_or(FaultError::Delay(s))
}

fn check_rate(r: f64) -> Result<f64, FaultError> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(FaultError::FailureRate(r))
    }
}

/// A partial update, as `POST /configure` takes it: any key may be absent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    /// New delay in seconds.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 60))]
    pub delay: Option<f64>,
    /// New failure rate in `0..=1`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub failure_rate: Option<f64>,
    /// New seed for deterministic draws: a whole number (`7` or `7.0`).
    #[serde(default, deserialize_with = "whole_seed")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::seed))]
    pub seed: Option<u64>,
}

/// A seed as JSON Schema's `integer` reads it (see
/// [`whole_number`](crate::order::whole_number)); `null` is no seed.
fn whole_seed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        v => crate::order::whole_number(&v).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "seed must be a whole number from 0 to {}, got {}",
                u64::MAX,
                crate::bounded::preview_display(&v)
            ))
        }),
    }
}

/// The wire view of a [`FaultConfig`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    /// Delay in seconds.
    pub delay: f64,
    /// Failure rate in `0..=1`.
    pub failure_rate: f64,
    /// Seed, when draws are deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// The injected failure a call suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("injected failure")]
pub struct InjectedFailure;

/// A shared, runtime-changeable [`FaultConfig`]. Calls waiting out a delay
/// watch the setting and follow it: see [`apply`](Self::apply).
#[derive(Debug)]
pub struct FaultInjector {
    config: watch::Sender<FaultConfig>,
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self::new(FaultConfig::default())
    }
}

impl FaultInjector {
    /// An injector starting from `config`.
    pub fn new(config: FaultConfig) -> Self {
        Self {
            config: watch::Sender::new(config),
        }
    }

    /// The setting in force.
    pub fn current(&self) -> FaultConfig {
        *self.config.borrow()
    }

    /// Applies a partial update atomically; on error nothing changes. Calls
    /// waiting out a delay see the new setting at once.
    pub fn configure(&self, update: &FaultUpdate) -> Result<FaultConfig, FaultError> {
        let mut result = None;
        self.config.send_if_modified(|config| {
            let next = config.updated(update);
            if let Ok(next) = next {
                *config = next;
            }
            let changed = next.is_ok();
            result = Some(next);
            changed
        });
        // The closure above always runs.
        result.unwrap_or_else(|| Ok(self.current()))
    }

    /// Calls waiting out an injected delay right now.
    pub fn delayed_calls(&self) -> usize {
        // Only a waiting `apply` holds a receiver.
        self.config.receiver_count()
    }

    /// Waits the configured delay, then fails the call with the configured
    /// probability. `key` and `attempt` feed the seeded draw.
    ///
    /// The wait follows the setting: when it changes, the call waits until
    /// its start plus the *new* delay, so a lower delay (or 0) cuts waits in
    /// progress short. The failure draw uses the setting in force when the
    /// wait ends.
    pub async fn apply(&self, key: &str, attempt: u32) -> Result<(), InjectedFailure> {
        let mut config = self.current();
        if !config.delay.is_zero() {
            let start = Instant::now();
            let mut setting = self.config.subscribe();
            config = *setting.borrow_and_update();
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(start + config.delay) => break,
                    changed = setting.changed() => match changed {
                        Ok(()) => config = *setting.borrow_and_update(),
                        // The injector is gone: nothing left to follow.
                        Err(_) => break,
                    },
                }
            }
        }
        if config.fails(key, attempt) {
            Err(InjectedFailure)
        } else {
            Ok(())
        }
    }
}

/// A uniform draw in `[0, 1)` that is a pure function of its inputs: the
/// same seed, key and attempt give the same number on every machine and
/// run. FNV-1a over the inputs, then the SplitMix64 finaliser.
pub fn decide(seed: u64, key: &str, attempt: u32) -> f64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for b in seed
        .to_le_bytes()
        .iter()
        .chain(key.as_bytes())
        .chain(&attempt.to_le_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // 53 random bits into the mantissa.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(FaultConfig::new(-0.1, 0.0, None).is_err());
        assert!(FaultConfig::new(f64::NAN, 0.0, None).is_err());
        assert!(FaultConfig::new(f64::INFINITY, 0.0, None).is_err());
        assert!(FaultConfig::new(60.0, 0.0, None).is_ok());
        for too_long in [60.001, 1e9] {
            let e = FaultConfig::new(too_long, 0.0, None).unwrap_err();
            assert_eq!(e, FaultError::Delay(too_long));
            assert!(e.to_string().contains("0 to 60"), "{e}");
        }
        assert!(FaultConfig::new(0.0, 1.01, None).is_err());
        assert!(FaultConfig::new(0.0, -0.01, None).is_err());
        assert!(FaultConfig::new(2.0, 1.0, Some(7)).is_ok());
    }

    #[test]
    fn partial_update_keeps_other_fields_and_rejects_atomically() {
        let inj = FaultInjector::new(FaultConfig::new(1.0, 0.5, None).unwrap());
        inj.configure(&FaultUpdate {
            failure_rate: Some(0.25),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(inj.current().delay(), Duration::from_secs(1));
        assert_eq!(inj.current().failure_rate(), 0.25);
        let bad = FaultUpdate {
            delay: Some(3.0),
            failure_rate: Some(2.0),
            seed: None,
        };
        assert!(inj.configure(&bad).is_err());
        assert_eq!(inj.current().delay(), Duration::from_secs(1));
    }

    #[test]
    fn seeded_draws_are_reproducible_and_near_the_rate() {
        let cfg = FaultConfig::new(0.0, 0.3, Some(42)).unwrap();
        let keys: Vec<String> = (0..10_000).map(|i| format!("ORD-{i:012X}")).collect();
        let a: Vec<bool> = keys.iter().map(|k| cfg.fails(k, 1)).collect();
        let b: Vec<bool> = keys.iter().map(|k| cfg.fails(k, 1)).collect();
        assert_eq!(a, b);
        let share = a.iter().filter(|&&f| f).count() as f64 / keys.len() as f64;
        assert!((share - 0.3).abs() < 0.02, "share {share}");
        // A retry draws afresh.
        let retried: Vec<bool> = keys.iter().map(|k| cfg.fails(k, 2)).collect();
        assert_ne!(a, retried);
    }

    #[test]
    fn extremes_are_exact() {
        let never = FaultConfig::new(0.0, 0.0, None).unwrap();
        let always = FaultConfig::new(0.0, 1.0, None).unwrap();
        assert!((0..1000).all(|i| !never.fails(&i.to_string(), 1)));
        assert!((0..1000).all(|i| always.fails(&i.to_string(), 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_setting_cuts_short_the_delays_in_progress() {
        let inj = std::sync::Arc::new(FaultInjector::new(
            FaultConfig::new(60.0, 0.0, None).unwrap(),
        ));
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let inj = inj.clone();
                tokio::spawn(async move { inj.apply(&i.to_string(), 1).await })
            })
            .collect();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(inj.delayed_calls(), 3);
        inj.configure(&FaultUpdate {
            delay: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the waits ran their full 60 s: {:?}",
            start.elapsed()
        );
        assert_eq!(inj.delayed_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_delay_counts_from_the_start_of_the_wait() {
        let inj = std::sync::Arc::new(FaultInjector::new(
            FaultConfig::new(60.0, 0.0, None).unwrap(),
        ));
        let call = {
            let inj = inj.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                inj.apply("k", 1).await.unwrap();
                start.elapsed()
            })
        };
        tokio::time::advance(Duration::from_secs(1)).await;
        inj.configure(&FaultUpdate {
            delay: Some(5.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(call.await.unwrap(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_is_applied() {
        let inj = FaultInjector::new(FaultConfig::new(2.0, 0.0, None).unwrap());
        let start = tokio::time::Instant::now();
        inj.apply("k", 1).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2));
    }
}
