//! Part B — asynchronous RabbitMQ.
//!
//! ```sh
//! scripts/brokers.sh up rabbitmq
//! cargo run --release --example async_rabbitmq                  # Order :8001, Inventory :5003, Notification
//! cargo run --release --example async_rabbitmq -- inventory     # one service per process: order | inventory | notification
//! cargo run --release --example async_rabbitmq -- dlq list      # dead letters: list | show ID | replay ID | replay-all
//! ```
//!
//! `CAMPUSFOOD_DATA_DIR` and `CAMPUSFOOD_STOCK` as in every example; every
//! flag also reads the environment variable `--help` shows.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use campusfood_core::Config;
use campusfood_core::config::{RabbitConfig, redact_url};
use campusfood_core::group_commit::{DEFER_LIMIT, Flush};
use campusfood_core::transport::{DeadLetters, Route};
use campusfood_services::async_rabbitmq::{
    AsyncOptions, AsyncPart, AsyncStores, AsyncSystem, Observability,
};
use campusfood_services::stores::Stores;
use campusfood_transport::rabbitmq::RabbitTransport;
use clap::{Parser, Subcommand};

#[path = "../common/mod.rs"]
mod common;

/// mimalloc instead of the system allocator: a service allocates per
/// message (records, headers, spans), from several threads at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[path = "../common/dlq.rs"]
mod dlq_args;

use dlq_args::DlqAction;

#[derive(Parser, Debug)]
#[command(
    about = "campusfood Part B: OrderService -> RabbitMQ -> InventoryService -> RabbitMQ -> NotificationService"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// AMQP URL of the broker.
    #[arg(
        long,
        env = "CAMPUSFOOD_RABBITMQ_URL",
        default_value_t = RabbitConfig::default().url,
        global = true,
        hide_env_values = true
    )]
    url: String,
    /// OrderService port.
    #[arg(
        long,
        env = "CAMPUSFOOD_ORDER_PORT",
        default_value_t = RabbitConfig::default().order_port,
        global = true
    )]
    order_port: u16,
    /// InventoryService port.
    #[arg(
        long,
        env = "CAMPUSFOOD_INVENTORY_PORT",
        default_value_t = RabbitConfig::default().inventory_port,
        global = true
    )]
    inventory_port: u16,
    /// Unacknowledged deliveries per consumer.
    #[arg(
        long,
        env = "CAMPUSFOOD_PREFETCH",
        default_value_t = campusfood_services::async_rabbitmq::DEFAULT_PREFETCH,
        global = true
    )]
    prefetch: u16,
    /// Attempts before a failing message is dead-lettered.
    #[arg(
        long,
        env = "CAMPUSFOOD_MAX_ATTEMPTS",
        default_value_t = AsyncOptions::from_config(&Config::default()).max_attempts,
        global = true
    )]
    max_attempts: u32,
    /// Seconds before a failed message is retried.
    #[arg(
        long,
        env = "CAMPUSFOOD_RETRY_DELAY",
        default_value_t = AsyncOptions::from_config(&Config::default()).retry_delay.as_secs_f64(),
        global = true
    )]
    retry_delay: f64,
    /// Milliseconds a consumer's durable write (inventory's reservation,
    /// an order's status, a sent notification) may wait to share an
    /// `fsync` before it is answered and its message acked; 0 syncs each
    /// batch at once. Longer answers placed orders sooner and reaches
    /// `notified` later.
    #[arg(
        long,
        env = "CAMPUSFOOD_DEFER_MS",
        default_value_t = DEFER_LIMIT.as_secs_f64() * 1e3,
        global = true
    )]
    defer_ms: f64,
    /// Log as JSON lines.
    #[arg(long, env = "CAMPUSFOOD_LOG_JSON", global = true)]
    log_json: bool,
    #[command(flatten)]
    stores: common::StoreArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// OrderService only.
    Order,
    /// InventoryService only.
    Inventory,
    /// NotificationService only.
    Notification,
    /// Inspect and replay dead-lettered orders (`orders.dlq`).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _logging = common::init_logging(cli.log_json, "campusfood-async-rabbitmq");
    let mut config = Config::from_env()?;
    config.rabbitmq.url.clone_from(&cli.url);
    config.rabbitmq.order_port = cli.order_port;
    config.rabbitmq.inventory_port = cli.inventory_port;
    cli.stores.apply(&mut config);
    config.rabbitmq.store_flush = Flush::sharing_within(
        Duration::try_from_secs_f64(cli.defer_ms / 1e3)
            .context("--defer-ms must be a number of milliseconds >= 0")?,
    );
    let transport = Arc::new(
        RabbitTransport::connect(&config.rabbitmq)
            .await
            .with_context(|| {
                format!(
                    "RabbitMQ at {} (start it with `scripts/brokers.sh up rabbitmq`)",
                    redact_url(&cli.url)
                )
            })?,
    );
    let part = match cli.command {
        None => AsyncPart::All,
        Some(Command::Order) => AsyncPart::Order,
        Some(Command::Inventory) => AsyncPart::Inventory,
        Some(Command::Notification) => AsyncPart::Notification,
        Some(Command::Dlq { action }) => return dlq(&transport, action).await,
    };
    let mut options = AsyncOptions::from_config(&config);
    options.prefetch = cli.prefetch;
    options.max_attempts = cli.max_attempts;
    options.retry_delay = Duration::try_from_secs_f64(cli.retry_delay)
        .context("--retry-delay must be >= 0 seconds")?;
    tracing::info!(?part, stores = %common::StoreArgs::describe(&config), stock = %config.stock, url = %redact_url(&cli.url), flush = ?config.rabbitmq.store_flush, "starting Part B (RabbitMQ)");
    let stores = Stores::open(&config).await?;
    let stores = AsyncStores::open(&stores, &config, part).await?;
    let observability = Observability {
        prometheus: campusfood_services::metrics::install_prometheus()?,
        backlog: Some(transport.clone()),
    };
    let system = AsyncSystem::start_observed(
        &config,
        part,
        &options,
        transport,
        stores,
        Some(observability),
    )
    .await?;
    common::shutdown_signal().await;
    tracing::info!("shutting down");
    system.stop().await;
    Ok(())
}

/// The dead-letter tools print to stdout: they are a command-line tool's output.
#[allow(clippy::print_stdout)]
async fn dlq(transport: &RabbitTransport, action: DlqAction) -> anyhow::Result<()> {
    let route = Route::ORDER_PLACED;
    match action {
        DlqAction::List { limit } => {
            let letters = transport.dead_letters(&route, limit).await?;
            println!(
                "{} dead letter(s) on {}",
                letters.len(),
                transport.config().dead_letter_queue
            );
            for d in letters {
                println!(
                    "{}\tattempts={}\t{}\t{}",
                    d.id,
                    d.attempts,
                    d.reason,
                    String::from_utf8_lossy(&d.message.body)
                );
            }
        }
        DlqAction::Show { id } => {
            let letter = transport
                .dead_letters(&route, usize::MAX)
                .await?
                .into_iter()
                .find(|d| d.id == id)
                .with_context(|| format!("no dead letter {id}"))?;
            println!(
                "id:       {}\nreason:   {}\nattempts: {}\nkey:      {:?}\nheaders:  {:?}\nbody:     {}",
                letter.id,
                letter.reason,
                letter.attempts,
                letter.message.key,
                letter.message.headers,
                String::from_utf8_lossy(&letter.message.body)
            );
        }
        DlqAction::Replay { id } => {
            anyhow::ensure!(transport.replay(&route, &id).await?, "no dead letter {id}");
            println!("replayed {id}");
        }
        DlqAction::ReplayAll => {
            let letters = transport.dead_letters(&route, usize::MAX).await?;
            for d in &letters {
                transport.replay(&route, &d.id).await?;
            }
            println!("replayed {}", letters.len());
        }
    }
    Ok(())
}
