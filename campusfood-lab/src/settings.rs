//! What a run is given: its sizes and durations ([`Settings`]) and where
//! the services are ([`Services`]). Every part and experiment reads them;
//! [`context`](crate::context) bundles them with the parts and progress
//! bars.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use campusfood_core::config::HttpConfig;
use serde::{Deserialize, Serialize};

use crate::error::LabError;

/// Sizes and durations of a run. [`Settings::full`] reproduces the
/// assignment's numbers (2 s delay, 5 s timeout); [`Settings::fast`] is
/// small enough for the test suite. Every field has a command-line flag;
/// experiments added later read their own knobs from [`params`](Self::params)
/// (`--set b1.orders=1000`, read with
/// [`Context::size`](crate::Context::size) and
/// [`Context::millis`](crate::Context::millis)). Durations serialize as
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Small sizes and short durations.
    pub fast: bool,
    /// The item every order asks for (one at a time).
    pub item: String,
    /// A1 (and A2's baseline): orders sent one after another.
    pub orders: u64,
    /// A2: the delay injected into inventory.
    #[serde(rename = "delay_ms", with = "duration_ms")]
    pub delay: Duration,
    /// A2: orders sent while the delay is in force.
    pub delayed_orders: u64,
    /// A3: orders sent while inventory fails every call.
    pub failure_orders: u64,
    /// A3: orders sent while inventory is slower than the timeout.
    pub timeout_orders: u64,
    /// A3: the order service's downstream timeout (the contract's 5 s; the
    /// timeout of the running order service with `--order-url`).
    #[serde(rename = "timeout_ms", with = "duration_ms")]
    pub timeout: Duration,
    /// A4: the order service's downstream timeout during the outage runs.
    #[serde(rename = "breaker_timeout_ms", with = "duration_ms")]
    pub breaker_timeout: Duration,
    /// A4: how long inventory is down.
    #[serde(rename = "outage_ms", with = "duration_ms")]
    pub outage: Duration,
    /// A4: orders per second, sent at a fixed rate whatever the answers.
    pub rate: f64,
    /// A1, A2, B1, X1 and X2: send the orders on a fixed schedule of this
    /// many per second (an open loop, latencies from each order's planned
    /// send time) instead of one after another (`None`, the default: a
    /// closed loop). See [`Pacing`](crate::load::Pacing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_loop_rate: Option<f64>,
    /// Knobs of other experiments, `key=value` (`--set`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl Settings {
    /// The assignment's sizes: A1 500 orders, A2 a 2 s delay, A3 a 10 s
    /// delay against the 5 s timeout, A4 an 8 s outage at 20 orders/s with
    /// a 1 s timeout.
    pub fn full() -> Self {
        Self {
            fast: false,
            item: "burger".to_owned(),
            orders: 500,
            delay: Duration::from_secs(2),
            delayed_orders: 10,
            failure_orders: 10,
            timeout_orders: 5,
            timeout: HttpConfig::default().downstream_timeout,
            breaker_timeout: Duration::from_secs(1),
            outage: Duration::from_secs(8),
            rate: 20.0,
            open_loop_rate: None,
            params: BTreeMap::new(),
        }
    }

    /// Sizes for the test suite: a few seconds in all.
    pub fn fast() -> Self {
        Self {
            fast: true,
            orders: 50,
            delay: Duration::from_millis(300),
            delayed_orders: 5,
            failure_orders: 10,
            timeout_orders: 3,
            timeout: Duration::from_millis(200),
            breaker_timeout: Duration::from_millis(300),
            outage: Duration::from_millis(1500),
            rate: 40.0,
            ..Self::full()
        }
    }

    /// [`fast`](Self::fast) or [`full`](Self::full), for `services`: a
    /// running order service has the contract's 5 s timeout unless told
    /// otherwise, even in fast mode.
    pub fn for_run(fast: bool, services: &Services) -> Self {
        let mut s = if fast { Self::fast() } else { Self::full() };
        if matches!(services, Services::External { .. }) {
            s.timeout = Self::full().timeout;
        }
        s
    }

    /// The knob `key` from [`params`](Self::params), parsed, or `default`.
    pub fn param<T: FromStr>(&self, key: &str, default: T) -> Result<T, LabError>
    where
        T::Err: std::fmt::Display,
    {
        match self.params.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| LabError::Setting {
                key: key.to_owned(),
                message: format!("{v:?}: {e}"),
            }),
        }
    }

    /// Checks that sizes and durations can be used.
    pub fn validate(&self) -> Result<(), LabError> {
        let bad = |key: &str, message: &str| {
            Err(LabError::Setting {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0) {
            return bad("rate", "must be between 0 and 1000 orders per second");
        }
        if let Some(r) = self.open_loop_rate
            && !(r.is_finite() && r > 0.0 && r <= 10_000.0)
        {
            return bad(
                "open-loop-rate",
                "must be between 0 and 10000 orders per second",
            );
        }
        if self.timeout.is_zero() || self.breaker_timeout.is_zero() {
            return bad("timeout", "must be above zero");
        }
        if self.orders == 0 || self.delayed_orders == 0 {
            return bad("orders", "must be at least 1");
        }
        if self.failure_orders == 0 || self.timeout_orders == 0 {
            return bad("failure-orders", "must be at least 1");
        }
        if campusfood_core::Item::parse(&self.item).is_err() {
            return bad("item", "not a valid item name");
        }
        Ok(())
    }
}

/// Where the services are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Services {
    /// Each experiment starts a fresh Part A in this process, on port 0,
    /// with the durable ledger in a temporary directory, and stops it after.
    InProcess,
    /// Services that are already running; experiments that must configure
    /// or restart a service are skipped.
    External {
        /// Base URL of the OrderService (`http://127.0.0.1:8000`).
        order_url: String,
        /// Base URL of the InventoryService, for `/configure` and stock.
        inventory_url: Option<String>,
    },
}

impl Services {
    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            Self::InProcess => {
                "in process: a fresh Part A per experiment (port 0, redb ledger in a \
                                 temp dir); Parts B and C over the local RabbitMQ and \
                                 Kafka (names under a suffix unique to the run, redb stores \
                                 in a temp dir)"
                    .to_owned()
            }
            Self::External {
                order_url,
                inventory_url,
            } => format!(
                "running services: order {order_url}, inventory {}",
                inventory_url.as_deref().unwrap_or("(not given)")
            ),
        }
    }
}

/// `Duration` as a number of milliseconds in JSON.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}
