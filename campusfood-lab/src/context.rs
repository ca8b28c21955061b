//! What an experiment works with: [`Settings`] (sizes and durations),
//! [`Services`] (start them in process, or use running ones) and progress
//! bars, bundled in a [`Context`].

use std::time::Duration;

use campusfood_core::config::HttpConfig;
use indicatif::ProgressBar;

use crate::async_rabbitmq::{PartB, PartBOptions};
use crate::error::LabError;
use crate::load::Pacing;
use crate::progress::Progress;
pub use crate::settings::{Services, Settings};
use crate::streaming_kafka::{PartC, PartCOptions};
use crate::sync_rest::PartA;

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

    /// How the latency experiments send their orders: one after another,
    /// or on the schedule of `--open-loop-rate`.
    pub fn pacing(&self) -> Pacing {
        Pacing::from_rate(self.settings.open_loop_rate)
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
