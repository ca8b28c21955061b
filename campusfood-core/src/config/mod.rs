//! The one place that owns ports, queue and topic names, and defaults.
//! Examples turn flags and environment variables into a [`Config`]; nothing
//! else spells a port or a broker name.
//!
//! Two settings are fixed by name because lab and benchmark clients set
//! them from outside, for every architecture: [`DATA_DIR_ENV`] and
//! [`STOCK_ENV`].
//!
//! # Stability
//! Every config type implements `Default`, and new fields (always with a
//! default) may come in minor releases. Build them with struct update
//! syntax, `KafkaConfig { bootstrap_servers, ..KafkaConfig::default() }`,
//! or by assigning fields of a default, and no new field breaks your code.
//! They are deliberately not `#[non_exhaustive]`: that would forbid the
//! struct update syntax outside this crate.

use std::path::PathBuf;

use thiserror::Error;

use crate::stock::{StockError, StockSpec};

mod database;
mod http;
mod kafka;
mod rabbitmq;

pub use database::{
    DATABASE_SCHEMA_ENV, DATABASE_URL_ENV, DEFAULT_DATABASE_SCHEMA, DatabaseConfig, redact_url,
};
pub use http::{BreakerConfig, HttpConfig, PageLimits, RetryConfig, ServerLimits};
pub use kafka::KafkaConfig;
pub use rabbitmq::RabbitConfig;

/// Where the embedded (redb) files live.
pub const DATA_DIR_ENV: &str = "CAMPUSFOOD_DATA_DIR";
/// Initial stock, `item=qty,item=qty,…`.
pub const STOCK_ENV: &str = "CAMPUSFOOD_STOCK";
/// `CAMPUSFOOD_RABBITMQ_PREFIX`: puts every exchange and queue of Part B
/// under `<prefix>.`, so several deployments (or tests) share one broker.
pub const RABBITMQ_PREFIX_ENV: &str = "CAMPUSFOOD_RABBITMQ_PREFIX";
/// Default of [`DATA_DIR_ENV`].
pub const DEFAULT_DATA_DIR: &str = "./data";

/// A setting from the environment that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// State shared by several instances (Postgres), if any.
    pub database: DatabaseConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            stock: StockSpec::default(),
            http: HttpConfig::default(),
            rabbitmq: RabbitConfig::default(),
            kafka: KafkaConfig::default(),
            database: DatabaseConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, overridden where set by `CAMPUSFOOD_DATA_DIR`,
    /// `CAMPUSFOOD_STOCK`, `CAMPUSFOOD_DATABASE_URL`,
    /// `CAMPUSFOOD_DATABASE_SCHEMA` and `CAMPUSFOOD_RABBITMQ_PREFIX`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
            config.data_dir = PathBuf::from(dir);
        }
        if let Some(spec) = env_string(STOCK_ENV)? {
            config.stock = spec.parse()?;
        }
        config.database.url = env_string(DATABASE_URL_ENV)?.filter(|u| !u.is_empty());
        if let Some(schema) = env_string(DATABASE_SCHEMA_ENV)? {
            config.database.schema = schema;
        }
        if let Some(prefix) = env_string(RABBITMQ_PREFIX_ENV)?.filter(|p| !p.is_empty()) {
            config.rabbitmq = config.rabbitmq.prefixed(&prefix);
        }
        Ok(config)
    }
}

/// The variable `name`, if set.
fn env_string(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode(name)),
    }
}
