//! Part C — Kafka streaming.
//!
//! ```sh
//! scripts/brokers.sh up kafka
//! cargo run --release --example streaming_kafka                  # inventory + analytics consumers, GET :8080/metrics (JSON), :8080/prometheus
//! cargo run --release --example streaming_kafka -- inventory --metrics-port 9464   # its Prometheus metrics at :9464/metrics
//! MODE=burst TOTAL_EVENTS=10000 cargo run --release --example streaming_kafka -- producer
//! cargo run --release --example streaming_kafka -- analytics     # one consumer per process: inventory | analytics
//! cargo run --release --example streaming_kafka -- offsets lag
//! cargo run --release --example streaming_kafka -- offsets reset --group analytics-consumer --to earliest
//! cargo run --release --example streaming_kafka -- dlq list       # dead letters: list | show ID | replay ID | replay-all [--topic T]
//! cargo run --release --example streaming_kafka -- asyncapi       # the AsyncAPI 3.0 document of the topics (no broker needed)
//! cargo run --release --example streaming_kafka -- trace ORD-1FAF9FA0D7D0 [--json]   # where is order X?
//! ```
//!
//! Every setting is a flag and reads the environment variable `--help`
//! shows (the original's names: `BOOTSTRAP_SERVERS`, `MODE`, `FAIL_RATE`,
//! `WINDOW_SEC`, …). `GROUP_ID`, `THROTTLE_MS` and `GROUP_INSTANCE_ID`
//! belong to one consumer, so they apply to the `inventory` and `analytics`
//! subcommands; running both in one process reads `INVENTORY_*` /
//! `ANALYTICS_*` instead. Without `CAMPUSFOOD_STOCK`, the inventory stocks
//! `item-1` … `item-<ITEM_COUNT>` at `ITEM_STOCK` each.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use campusfood_core::config::{HttpConfig, KafkaConfig, STOCK_ENV};
use campusfood_core::{Config, OrderId};
use campusfood_kafka::KafkaTransport;
use campusfood_kafka::TransactionalOptions;
use campusfood_streaming_kafka::dlq::{self, DlqTarget};
use campusfood_streaming_kafka::offsets::{self, ResetTarget, topics_for_group};
use campusfood_streaming_kafka::producer::{self, ProducerMode, ProducerOptions};
use campusfood_streaming_kafka::trace;
use campusfood_streaming_kafka::{
    AnalyticsOptions, ConnectRetry, InventoryOptions, StreamingOptions, StreamingPart,
    StreamingSystem, item_stock,
};
use clap::{Args, Parser, Subcommand};

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
    about = "campusfood Part C: producer -> order-events -> inventory consumer -> inventory-events -> analytics consumer (/metrics)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    inventory: InventoryArgs,
    #[command(flatten)]
    analytics: AnalyticsArgs,
    /// The inventory consumer's group (both consumers in one process).
    #[arg(long, env = "INVENTORY_GROUP_ID", default_value_t = KafkaConfig::default().inventory_group)]
    inventory_group: String,
    /// The analytics consumer's group (both consumers in one process).
    #[arg(long, env = "ANALYTICS_GROUP_ID", default_value_t = KafkaConfig::default().analytics_group)]
    analytics_group: String,
    /// Milliseconds the inventory consumer pauses before each order.
    #[arg(long, env = "INVENTORY_THROTTLE_MS", default_value_t = 0)]
    inventory_throttle_ms: u64,
    /// Milliseconds the analytics consumer pauses before each record.
    #[arg(long, env = "ANALYTICS_THROTTLE_MS", default_value_t = 0)]
    analytics_throttle_ms: u64,
    /// Static membership for the analytics consumer.
    #[arg(long, env = "ANALYTICS_GROUP_INSTANCE_ID")]
    analytics_group_instance_id: Option<String>,
}

#[derive(Args, Debug)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "BOOTSTRAP_SERVERS",
        default_value_t = KafkaConfig::default().bootstrap_servers,
        global = true
    )]
    bootstrap_servers: String,
    /// The orders topic.
    #[arg(
        long,
        env = "ORDER_TOPIC",
        default_value_t = KafkaConfig::default().order_topic,
        global = true
    )]
    order_topic: String,
    /// The inventory outcomes topic.
    #[arg(
        long,
        env = "INVENTORY_TOPIC",
        default_value_t = KafkaConfig::default().inventory_topic,
        global = true
    )]
    inventory_topic: String,
    /// Where a group without committed offsets starts.
    #[arg(long, env = "AUTO_OFFSET_RESET", default_value_t = KafkaConfig::default().auto_offset_reset,
          value_parser = ["earliest", "latest"], global = true)]
    auto_offset_reset: String,
    /// Connection attempts at startup (with backoff) before giving up.
    #[arg(
        long,
        env = "CAMPUSFOOD_KAFKA_CONNECT_ATTEMPTS",
        default_value_t = 5,
        global = true
    )]
    connect_attempts: u32,
    /// Log as JSON lines.
    #[arg(long, env = "CAMPUSFOOD_LOG_JSON", global = true)]
    log_json: bool,
    #[command(flatten)]
    stores: common::StoreArgs,
}

#[derive(Args, Debug, Clone)]
struct InventoryArgs {
    /// Share of orders failed by injection (0..1), drawn per order id.
    #[arg(long, env = "FAIL_RATE", default_value_t = 0.05)]
    fail_rate: f64,
    /// Seed of the failure draw: the same seed fails the same orders.
    #[arg(long, env = "FAIL_SEED", default_value_t = campusfood_streaming_kafka::inventory::DEFAULT_SEED)]
    seed: u64,
    /// A plain consumer group instead of Kafka transactions.
    #[arg(long, env = "AT_LEAST_ONCE")]
    at_least_once: bool,
    /// Consumers in the group in this process (one per partition of the order topic).
    #[arg(long, env = "INVENTORY_WORKERS", default_value_t = 6)]
    workers: usize,
    /// Most orders per Kafka transaction (exactly-once mode).
    #[arg(long, env = "INVENTORY_MAX_BATCH", default_value_t = campusfood_streaming_kafka::inventory::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Prefix of the workers' transactional ids; must differ between
    /// processes running at once (default: the group, then this process's
    /// pid and a random number).
    #[arg(long, env = "TRANSACTIONAL_ID")]
    transactional_id: Option<String>,
    /// Without CAMPUSFOOD_STOCK: stock item-1 … item-<ITEM_COUNT>.
    #[arg(long, env = "ITEM_COUNT", default_value_t = 50)]
    item_count: u32,
    /// Without CAMPUSFOOD_STOCK: the stock of each of those items.
    #[arg(long, env = "ITEM_STOCK", default_value_t = 1_000_000)]
    item_stock: u64,
    /// Serve the inventory consumer's Prometheus metrics at GET /metrics on this port (off when absent).
    #[arg(long, env = "INVENTORY_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Address the inventory consumer's /metrics listens on.
    #[arg(long, env = "INVENTORY_METRICS_HOST", default_value_t = HttpConfig::default().host)]
    metrics_host: String,
}

#[derive(Args, Debug, Clone)]
struct AnalyticsArgs {
    /// The rolling window of /metrics, seconds.
    #[arg(long, env = "WINDOW_SEC", default_value_t = 60)]
    window_sec: u64,
    /// Address /metrics listens on.
    #[arg(long, env = "HTTP_HOST", default_value_t = HttpConfig::default().host)]
    http_host: String,
    /// Port of /metrics.
    #[arg(long, env = "HTTP_PORT", default_value_t = KafkaConfig::default().analytics_port)]
    http_port: u16,
    /// Seconds between summary log lines (0: none).
    #[arg(long, env = "REPORT_INTERVAL_SEC", default_value_t = 10)]
    report_interval_sec: u64,
}

/// `GROUP_ID`, `THROTTLE_MS`, `GROUP_INSTANCE_ID`: one consumer's.
#[derive(Args, Debug, Clone)]
struct MemberArgs {
    /// The consumer group (default: inventory-consumer / analytics-consumer).
    #[arg(long, env = "GROUP_ID")]
    group_id: Option<String>,
    /// Milliseconds to pause before each record.
    #[arg(long, env = "THROTTLE_MS", default_value_t = 0)]
    throttle_ms: u64,
    /// Static membership: a restart takes the partitions back at once.
    #[arg(long, env = "GROUP_INSTANCE_ID")]
    group_instance_id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce orders to the order topic: MODE=idle|once|burst.
    Producer(ProducerArgs),
    /// The inventory consumer only.
    Inventory {
        #[command(flatten)]
        inventory: InventoryArgs,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// The analytics consumer only (GET /metrics).
    Analytics {
        #[command(flatten)]
        analytics: AnalyticsArgs,
        #[command(flatten)]
        member: MemberArgs,
    },
    /// Consumer-group lag and offset resets, without the Kafka CLI.
    Offsets {
        #[command(subcommand)]
        action: OffsetsAction,
    },
    /// Inspect and replay dead letters (`order-events.dlq`, `inventory-events.dlq`).
    Dlq {
        /// One topic, or its .dlq topic (default: both).
        #[arg(long, global = true)]
        topic: Option<String>,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Print the AsyncAPI 3.0 document of the topics, as the settings name them.
    Asyncapi,
    /// Where is order X? Its records in the order, inventory and dead-letter
    /// topics (partition, offset, time), the ledger's decision, replays.
    /// Exit status: 0 found, 1 found nowhere, 2 bad input or Kafka unreachable.
    Trace(TraceArgs),
}

#[derive(Args, Debug)]
struct TraceArgs {
    /// The order id (`ORD-…`, or another producer's, such as `order-17`).
    #[arg(value_parser = OrderId::parse)]
    order_id: OrderId,
    /// Print JSON instead of the timeline.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ProducerArgs {
    /// idle (one order every SLEEP_MS until stopped), once, or burst (TOTAL_EVENTS, then exit).
    #[arg(long, env = "MODE", default_value = "idle")]
    mode: ProducerMode,
    /// Orders in a burst.
    #[arg(long, env = "TOTAL_EVENTS", default_value_t = 10_000)]
    total_events: usize,
    /// Log progress every this many orders.
    #[arg(long, env = "PRINT_EVERY", default_value_t = 1_000)]
    print_every: usize,
    /// Milliseconds between orders in idle mode.
    #[arg(long, env = "SLEEP_MS", default_value_t = 1_000)]
    sleep_ms: u64,
    /// Items are item-1 … item-<ITEM_COUNT>.
    #[arg(long, env = "ITEM_COUNT", default_value_t = 50)]
    item_count: u32,
    /// Quantities are 1 … MAX_QTY.
    #[arg(long, env = "MAX_QTY", default_value_t = 5)]
    max_qty: u32,
}

#[derive(Subcommand, Debug)]
enum OffsetsAction {
    /// Committed offset, high watermark and lag per partition.
    Lag {
        /// One group (default: both consumers' groups).
        #[arg(long)]
        group: Option<String>,
        /// Topics (default: those the group consumes).
        #[arg(long)]
        topic: Vec<String>,
    },
    /// Move a stopped group's offsets.
    Reset {
        /// The group; its consumers must be stopped.
        #[arg(long)]
        group: String,
        /// earliest | latest | <offset> | <epoch ms> | <RFC 3339 time>.
        #[arg(long)]
        to: ResetTarget,
        /// Topics (default: those the group consumes).
        #[arg(long)]
        topic: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let _logging = common::init_logging(cli.kafka.log_json, "campusfood-streaming-kafka");
    if let Some(Command::Trace(args)) = &cli.command {
        return Ok(trace_order(&cli, args).await);
    }
    let mut config = build_config(&cli)?;
    if let Some(Command::Asyncapi) = cli.command {
        return print_asyncapi(&config.kafka).map(|()| ExitCode::SUCCESS);
    }
    let transport = connect(&cli, &config).await?;

    let mut options = StreamingOptions {
        inventory: inventory_options(&cli.inventory, &cli.inventory_group),
        analytics: analytics_options(&cli.analytics, &cli.analytics_group),
    };
    options.inventory.throttle = Duration::from_millis(cli.inventory_throttle_ms);
    options.analytics.throttle = Duration::from_millis(cli.analytics_throttle_ms);
    options.analytics.group_instance_id = cli.analytics_group_instance_id.clone();
    let (part, items) = match cli.command {
        None => {
            for name in ["GROUP_ID", "THROTTLE_MS", "GROUP_INSTANCE_ID"] {
                if std::env::var_os(name).is_some() {
                    tracing::warn!(
                        "{name} applies to the `inventory` and `analytics` subcommands; \
                         with both in one process use INVENTORY_{name} / ANALYTICS_{name}"
                    );
                }
            }
            (StreamingPart::All, cli.inventory.clone())
        }
        Some(Command::Inventory { inventory, member }) => {
            let group = member.group_id.as_deref().unwrap_or(&cli.inventory_group);
            options.inventory = inventory_options(&inventory, group);
            options.inventory.throttle = Duration::from_millis(member.throttle_ms);
            options.inventory.group_instance_id = member.group_instance_id;
            (StreamingPart::Inventory, inventory)
        }
        Some(Command::Analytics { analytics, member }) => {
            let group = member.group_id.as_deref().unwrap_or(&cli.analytics_group);
            options.analytics = analytics_options(&analytics, group);
            options.analytics.throttle = Duration::from_millis(member.throttle_ms);
            options.analytics.group_instance_id = member.group_instance_id;
            (StreamingPart::Analytics, cli.inventory.clone())
        }
        Some(Command::Producer(args)) => {
            return produce(&transport, args).await.map(|()| ExitCode::SUCCESS);
        }
        Some(Command::Offsets { action }) => {
            return offsets(&transport, &config, action)
                .await
                .map(|()| ExitCode::SUCCESS);
        }
        Some(Command::Dlq { topic, action }) => {
            let targets = dlq::targets(&config.kafka, topic.as_deref())?;
            return dead_letters(&transport, &targets, action)
                .await
                .map(|()| ExitCode::SUCCESS);
        }
        // Handled before connecting: a document needs no broker, a trace
        // connects on its own.
        Some(Command::Asyncapi | Command::Trace(_)) => unreachable!("handled above"),
    };
    if std::env::var_os(STOCK_ENV).is_none() {
        config.stock = item_stock(items.item_count, items.item_stock)?;
    }
    tracing::info!(
        ?part,
        bootstrap = %config.kafka.bootstrap_servers,
        stores = %common::StoreArgs::describe(&config),
        items = config.stock.levels().len(),
        "starting Part C (Kafka)"
    );
    let system = StreamingSystem::start(&config, part, &options, &transport).await?;
    common::shutdown_signal().await;
    tracing::info!("shutting down");
    system.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// The configuration the flags and the environment give.
fn build_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::from_env()?;
    cli.kafka.stores.apply(&mut config);
    let k = &mut config.kafka;
    k.bootstrap_servers.clone_from(&cli.kafka.bootstrap_servers);
    k.order_topic.clone_from(&cli.kafka.order_topic);
    k.inventory_topic.clone_from(&cli.kafka.inventory_topic);
    k.auto_offset_reset.clone_from(&cli.kafka.auto_offset_reset);
    k.inventory_group.clone_from(&cli.inventory_group);
    k.analytics_group.clone_from(&cli.analytics_group);
    Ok(config)
}

/// Connects to Kafka, retrying as `--connect-attempts` says.
async fn connect(cli: &Cli, config: &Config) -> anyhow::Result<KafkaTransport> {
    let retry = ConnectRetry {
        attempts: cli.kafka.connect_attempts,
        ..ConnectRetry::default()
    };
    campusfood_streaming_kafka::connect(&config.kafka, &retry)
        .await
        .with_context(|| {
            format!(
                "Kafka at {} (start it with `scripts/brokers.sh up kafka`)",
                cli.kafka.bootstrap_servers
            )
        })
}

/// `trace ORDER_ID`: the trace goes to stdout, why it failed to stderr;
/// exit 0 when the order was found, 1 when it was found nowhere, 2 when the
/// input or Kafka failed (clap exits 2 for bad arguments too).
#[allow(clippy::print_stdout, clippy::print_stderr)]
async fn trace_order(cli: &Cli, args: &TraceArgs) -> ExitCode {
    let traced = async {
        let config = build_config(cli)?;
        let transport = connect(cli, &config).await?;
        let inventory = inventory_options(&cli.inventory, &cli.inventory_group);
        anyhow::Ok(trace::trace(&transport, &config, &inventory, &args.order_id).await?)
    };
    let found = match traced.await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&found) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: cannot encode the trace: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{found}");
    }
    if found.found {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "order {} not found in any topic ({} record(s) read)",
            found.order_id,
            found.scanned.iter().map(|s| s.records).sum::<u64>()
        );
        ExitCode::from(1)
    }
}

fn inventory_options(args: &InventoryArgs, group: &str) -> InventoryOptions {
    InventoryOptions {
        group: group.to_owned(),
        fail_rate: args.fail_rate,
        seed: args.seed,
        exactly_once: !args.at_least_once,
        workers: args.workers,
        max_batch: args.max_batch,
        transactional_id: args
            .transactional_id
            .clone()
            .unwrap_or_else(|| TransactionalOptions::process_unique_id(group)),
        metrics_addr: args
            .metrics_port
            .map(|port| format!("{}:{port}", args.metrics_host)),
        ..InventoryOptions::default()
    }
}

fn analytics_options(args: &AnalyticsArgs, group: &str) -> AnalyticsOptions {
    AnalyticsOptions {
        group: group.to_owned(),
        window: Duration::from_secs(args.window_sec),
        report_interval: Duration::from_secs(args.report_interval_sec),
        http_addr: format!("{}:{}", args.http_host, args.http_port),
        ..AnalyticsOptions::default()
    }
}

/// The document goes to stdout: it is the command's output.
#[allow(clippy::print_stdout)]
fn print_asyncapi(config: &KafkaConfig) -> anyhow::Result<()> {
    let doc = campusfood_streaming_kafka::asyncapi::document(config);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// The producer's final report goes to stdout: it is the command's output.
#[allow(clippy::print_stdout)]
async fn produce(transport: &KafkaTransport, args: ProducerArgs) -> anyhow::Result<()> {
    let options = ProducerOptions {
        mode: args.mode,
        total_events: args.total_events,
        print_every: args.print_every,
        sleep: Duration::from_millis(args.sleep_ms),
        item_count: args.item_count,
        max_qty: args.max_qty,
    };
    let report = producer::run(transport, &options, common::shutdown_signal()).await?;
    println!(
        "MODE={} produced {} events in {:.3} s: {:.0} events/s",
        report.mode,
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_sec()
    );
    Ok(())
}

/// Lag tables and reset results go to stdout: they are the command's output.
#[allow(clippy::print_stdout)]
async fn offsets(
    transport: &KafkaTransport,
    config: &Config,
    action: OffsetsAction,
) -> anyhow::Result<()> {
    let k = &config.kafka;
    let topics_of = |group: &str, topics: &[String]| {
        if topics.is_empty() {
            topics_for_group(k, group)
        } else {
            topics.to_vec()
        }
    };
    match action {
        OffsetsAction::Lag { group, topic } => {
            let groups = match group {
                Some(g) => vec![g],
                None => vec![k.inventory_group.clone(), k.analytics_group.clone()],
            };
            println!(
                "{:<24} {:<24} {:>9} {:>12} {:>12} {:>10}",
                "GROUP", "TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"
            );
            for g in &groups {
                for t in offsets::lag(transport, g, &topics_of(g, &topic)).await? {
                    for p in &t.partitions {
                        let committed = p.committed.map_or("-".to_owned(), |c| c.to_string());
                        println!(
                            "{:<24} {:<24} {:>9} {:>12} {:>12} {:>10}",
                            t.group, t.topic, p.partition, committed, p.high_watermark, p.lag
                        );
                    }
                    println!(
                        "{:<24} {:<24} {:>9} {:>12} {:>12} {:>10}",
                        t.group,
                        t.topic,
                        "total",
                        "",
                        "",
                        t.total()
                    );
                }
            }
        }
        OffsetsAction::Reset { group, to, topic } => {
            let topics = topics_of(&group, &topic);
            let done = offsets::reset(transport, &group, &topics, to)
                .await
                .with_context(|| format!("resetting group {group} to {to}"))?;
            for (t, partitions) in done {
                for p in partitions {
                    println!(
                        "{group} {t} partition {} -> offset {}",
                        p.partition, p.offset
                    );
                }
            }
        }
    }
    Ok(())
}

/// Dead letters go to stdout: they are the command's output.
#[allow(clippy::print_stdout)]
async fn dead_letters(
    transport: &KafkaTransport,
    targets: &[DlqTarget],
    action: DlqAction,
) -> anyhow::Result<()> {
    match action {
        DlqAction::List { limit } => {
            for listing in dlq::list(transport, targets, limit).await? {
                print!("{listing}");
            }
        }
        DlqAction::Show { id } => print!("{}", dlq::find(transport, targets, &id).await?),
        DlqAction::Replay { id } => {
            let target = dlq::replay(transport, targets, &id).await?;
            println!(
                "replayed {id} from {} to {}",
                target.dead_letters, target.topic
            );
        }
        DlqAction::ReplayAll => {
            for (target, n) in dlq::replay_all(transport, targets).await? {
                println!(
                    "replayed {n} from {} to {}",
                    target.dead_letters, target.topic
                );
            }
        }
    }
    Ok(())
}
