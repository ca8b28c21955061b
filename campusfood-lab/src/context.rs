//! What an experiment works with: [`Settings`] (sizes and durations),
//! [`Services`] (start them in process, or use running ones) and progress
//! bars, bundled in a [`Context`].

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use campusfood_core::config::HttpConfig;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::async_rabbitmq::{PartB, PartBOptions};
use crate::error::LabError;
use crate::progress::Progress;
use crate::streaming_kafka::{PartC, PartCOptions};
use crate::sync_rest::PartA;

/// Sizes and durations of a run. [`Settings::full`] reproduces the
/// assignment's numbers (2 s delay, 5 s timeout); [`Settings::fast`] is
/// small enough for the test suite. Every field has a command-line flag;
/// experiments added later read their own knobs from [`params`](Self::params)
/// (`--set b1.orders=1000`, read with [`Context::size`] and
/// [`Context::millis`]). Durations serialize as milliseconds.
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

/// What an experiment gets: settings, services, progress bars.
#[derive(Debug, Clone)]
pub struct Context {
    settings: Settings,
    services: Services,
    progress: Progress,
    experiment: String,
}

impl Context {
    /// A context for the experiment `id`.
    pub fn new(settings: Settings, services: Services, progress: Progress, id: &str) -> Self {
        Self {
            settings,
            services,
            progress,
            experiment: id.to_owned(),
        }
    }

    /// Sizes and durations.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where the services are.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Part A with the order service's HTTP settings changed by `tune`
    /// (timeout, breaker …). In process: started fresh, the caller stops it
    /// with [`PartA::stop`]. External: returned as is when `tune` changes
    /// nothing the running service does not already have (its timeout is
    /// [`Settings::timeout`]), else [`LabError::Unavailable`].
    pub async fn part_a(&self, tune: impl FnOnce(&mut HttpConfig)) -> Result<PartA, LabError> {
        match &self.services {
            Services::InProcess => PartA::start(&self.settings, tune).await,
            Services::External {
                order_url,
                inventory_url,
            } => {
                let base = HttpConfig {
                    downstream_timeout: self.settings.timeout,
                    ..HttpConfig::default()
                };
                let mut tuned = base.clone();
                tune(&mut tuned);
                if tuned != base {
                    return Err(LabError::Unavailable {
                        needs: "in-process services".to_owned(),
                        hint: "it configures the order service itself; run without --order-url"
                            .to_owned(),
                    });
                }
                PartA::external(order_url, inventory_url.as_deref(), &self.settings.item)
            }
        }
    }

    /// Part B started in process over RabbitMQ for this experiment (see
    /// [`PartB::start`]): always in process, whatever [`Services`] says
    /// (they are Part A's). [`LabError::Unavailable`] without a broker.
    pub async fn part_b(&self, options: PartBOptions) -> Result<PartB, LabError> {
        PartB::start(&self.settings, &self.experiment, options).await
    }

    /// Part C started in process over Kafka for this experiment (see
    /// [`PartC::start`]). [`LabError::Unavailable`] without a broker.
    pub async fn part_c(&self, options: PartCOptions) -> Result<PartC, LabError> {
        PartC::start(&self.settings, &self.experiment, options).await
    }

    /// The experiment's id.
    pub fn id(&self) -> &str {
        &self.experiment
    }

    /// A size: `--set <key>=N`, else `full` (or `fast` with `--fast`).
    pub fn size(&self, key: &str, full: u64, fast: u64) -> Result<u64, LabError> {
        let n = self
            .settings
            .param(key, if self.settings.fast { fast } else { full })?;
        if n == 0 {
            return Err(LabError::Setting {
                key: key.to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
        Ok(n)
    }

    /// A duration in milliseconds: `--set <key>=MS`, else `full` (or `fast`
    /// with `--fast`).
    pub fn millis(&self, key: &str, full: Duration, fast: Duration) -> Result<Duration, LabError> {
        let default = if self.settings.fast { fast } else { full };
        let ms: u64 = self
            .settings
            .param(key, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))?;
        Ok(Duration::from_millis(ms))
    }

    /// A progress bar of `len` steps, labelled with the experiment's id.
    pub fn bar(&self, len: u64, message: &str) -> ProgressBar {
        self.progress.bar(&self.experiment, len, message)
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
