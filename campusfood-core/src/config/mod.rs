//! The one place that owns ports, queue and topic names, and defaults.
//! Examples turn flags and environment variables into a [`Config`]; nothing
//! else spells a port or a broker name.
//!
//! Two settings are fixed by name because lab and benchmark clients set
//! them from outside, for every architecture: [`DATA_DIR_ENV`] and
//! [`STOCK_ENV`].

use std::path::PathBuf;

use thiserror::Error;

use crate::stock::{StockError, StockSpec};

mod http;
mod kafka;
mod rabbitmq;

pub use http::{BreakerConfig, HttpConfig, RetryConfig};
pub use kafka::KafkaConfig;
pub use rabbitmq::RabbitConfig;

/// Where the embedded (redb) files live.
pub const DATA_DIR_ENV: &str = "CAMPUSFOOD_DATA_DIR";
/// Initial stock, `item=qty,item=qty,…`.
pub const STOCK_ENV: &str = "CAMPUSFOOD_STOCK";
/// Default of [`DATA_DIR_ENV`].
pub const DEFAULT_DATA_DIR: &str = "./data";

/// A setting from the environment that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `CAMPUSFOOD_STOCK` is not a valid stock specification.
    #[error("{STOCK_ENV}: {0}")]
    Stock(#[from] StockError),
    /// A variable is not valid Unicode.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
}

/// Everything a campusfood process needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where durable stores (ledger, outbox, processed ids) live.
    pub data_dir: PathBuf,
    /// Initial stock of a fresh inventory.
    pub stock: StockSpec,
    /// Part A: synchronous REST.
    pub http: HttpConfig,
    /// Part B: RabbitMQ.
    pub rabbitmq: RabbitConfig,
    /// Part C: Kafka.
    pub kafka: KafkaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            stock: StockSpec::default(),
            http: HttpConfig::default(),
            rabbitmq: RabbitConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, overridden by `CAMPUSFOOD_DATA_DIR` and `CAMPUSFOOD_STOCK`
    /// where set.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
            config.data_dir = PathBuf::from(dir);
        }
        match std::env::var(STOCK_ENV) {
            Ok(spec) => config.stock = spec.parse()?,
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::NotUnicode(STOCK_ENV));
            }
        }
        Ok(config)
    }
}
