//! Part A — synchronous REST.
//!
//! ```sh
//! cargo run --release --example sync_rest                  # all three services: 8000, 5001, 5002
//! cargo run --release --example sync_rest -- inventory     # one service per process
//! cargo run --release --example sync_rest -- --breaker --retry 3 order
//! ```
//!
//! Each service serves Prometheus metrics at `GET /metrics`.
//! `CAMPUSFOOD_DATA_DIR` and `CAMPUSFOOD_STOCK` set the data directory and
//! initial stock; every flag also reads the environment variable shown by
//! `--help`. Logs go to stderr (`RUST_LOG`, `--log-json`).

use std::time::Duration;

use anyhow::Context;
use campusfood_core::Config;
use campusfood_core::config::{BreakerConfig, HttpConfig, RetryConfig};
use campusfood_services::sync_rest::{SyncPart, SyncRest};
use clap::{Parser, Subcommand};

#[path = "../common/mod.rs"]
mod common;

/// mimalloc instead of the system allocator: a service allocates per
/// message (records, headers, spans), from several threads at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    about = "campusfood Part A: OrderService -> InventoryService -> NotificationService over blocking HTTP"
)]
struct Cli {
    #[command(subcommand)]
    part: Option<Part>,
    /// Address to bind.
    #[arg(
        long,
        env = "CAMPUSFOOD_HOST",
        default_value_t = HttpConfig::default().host,
        global = true
    )]
    host: String,
    /// OrderService port.
    #[arg(
        long,
        env = "CAMPUSFOOD_ORDER_PORT",
        default_value_t = HttpConfig::ORDER_PORT,
        global = true
    )]
    order_port: u16,
    /// InventoryService port.
    #[arg(
        long,
        env = "CAMPUSFOOD_INVENTORY_PORT",
        default_value_t = HttpConfig::INVENTORY_PORT,
        global = true
    )]
    inventory_port: u16,
    /// NotificationService port.
    #[arg(
        long,
        env = "CAMPUSFOOD_NOTIFICATION_PORT",
        default_value_t = HttpConfig::NOTIFICATION_PORT,
        global = true
    )]
    notification_port: u16,
    /// Where OrderService calls inventory (default: this host's inventory port).
    #[arg(long, env = "CAMPUSFOOD_INVENTORY_URL", global = true)]
    inventory_url: Option<String>,
    /// Where OrderService calls notification (default: this host's notification port).
    #[arg(long, env = "CAMPUSFOOD_NOTIFICATION_URL", global = true)]
    notification_url: Option<String>,
    /// Timeout of each downstream call, in seconds.
    #[arg(
        long,
        env = "CAMPUSFOOD_DOWNSTREAM_TIMEOUT",
        default_value_t = HttpConfig::default().downstream_timeout.as_secs_f64(),
        global = true
    )]
    downstream_timeout: f64,
    /// Retry the idempotent reserve call up to N attempts in all (off: 1).
    #[arg(long, env = "CAMPUSFOOD_RETRY", default_value_t = 1, global = true)]
    retry: u32,
    /// Turn on the circuit breaker on the inventory hop.
    #[arg(long, env = "CAMPUSFOOD_BREAKER", global = true)]
    breaker: bool,
    /// Consecutive failures that open the breaker.
    #[arg(
        long,
        env = "CAMPUSFOOD_BREAKER_THRESHOLD",
        default_value_t = BreakerConfig::default().failure_threshold,
        global = true
    )]
    breaker_threshold: u32,
    /// Seconds the breaker stays open before a probe.
    #[arg(
        long,
        env = "CAMPUSFOOD_BREAKER_OPEN_FOR",
        default_value_t = BreakerConfig::default().open_for.as_secs_f64(),
        global = true
    )]
    breaker_open_for: f64,
    /// Bulkhead: at most N orders in flight (off when absent).
    #[arg(long, env = "CAMPUSFOOD_MAX_IN_FLIGHT", global = true)]
    max_in_flight: Option<usize>,
    /// Log as JSON lines.
    #[arg(long, env = "CAMPUSFOOD_LOG_JSON", global = true)]
    log_json: bool,
    #[command(flatten)]
    stores: common::StoreArgs,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Part {
    /// OrderService only.
    Order,
    /// InventoryService only.
    Inventory,
    /// NotificationService only.
    Notification,
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::from_env()?;
    cli.stores.apply(&mut config);
    let http = &mut config.http;
    http.host.clone_from(&cli.host);
    http.order_port = cli.order_port;
    http.inventory_port = cli.inventory_port;
    http.notification_port = cli.notification_port;
    http.inventory_url = cli
        .inventory_url
        .clone()
        .unwrap_or_else(|| format!("http://{}:{}", cli.host, cli.inventory_port));
    http.notification_url = cli
        .notification_url
        .clone()
        .unwrap_or_else(|| format!("http://{}:{}", cli.host, cli.notification_port));
    http.downstream_timeout = Duration::try_from_secs_f64(cli.downstream_timeout)
        .context("--downstream-timeout must be a non-negative number of seconds")?;
    if cli.retry > 1 {
        http.retry = Some(RetryConfig {
            max_attempts: cli.retry,
            ..RetryConfig::default()
        });
    }
    if cli.breaker {
        http.breaker = Some(BreakerConfig {
            failure_threshold: cli.breaker_threshold.max(1),
            open_for: Duration::try_from_secs_f64(cli.breaker_open_for)
                .context("--breaker-open-for must be a non-negative number of seconds")?,
        });
    }
    http.max_in_flight = cli.max_in_flight;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _logging = common::init_logging(cli.log_json, "campusfood-sync-rest");
    let config = config(&cli)?;
    let part = match cli.part {
        None => SyncPart::All,
        Some(Part::Order) => SyncPart::Order,
        Some(Part::Inventory) => SyncPart::Inventory,
        Some(Part::Notification) => SyncPart::Notification,
    };
    tracing::info!(?part, stores = %common::StoreArgs::describe(&config), stock = %config.stock, "starting Part A (sync REST)");
    let prometheus = campusfood_services::metrics::install_prometheus()?;
    let system = SyncRest::start_observed(&config, part, prometheus).await?;
    common::shutdown_signal().await;
    tracing::info!("shutting down");
    system.stop().await;
    Ok(())
}
