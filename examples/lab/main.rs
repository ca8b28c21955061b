//! The campusfood lab: runs the experiments against the real services and
//! writes `reports/<name>/report.md`, `report.json` and SVG charts.
//!
//! ```sh
//! cargo run --release --example lab -- list
//! cargo run --release --example lab -- run all --name example
//! cargo run --release --example lab -- run A2 A4 --fast --out /tmp/lab
//! cargo run --release --example lab -- run A1 --orders 2000 --name big-baseline
//! # open loop: 200 orders/s on a fixed schedule, latencies from the planned send
//! cargo run --release --example lab -- run A1 B1 X1 --open-loop-rate 200
//! # against services already running (experiments that must reconfigure or
//! # restart a service are skipped):
//! cargo run --release --example lab -- run A1 A2 A3 \
//!     --order-url http://127.0.0.1:8000 --inventory-url http://127.0.0.1:5001
//! # the six headline figures from the shipped binaries (scripts/perf.sh
//! # installs wrk, starts the brokers and builds the examples first):
//! cargo run --release --example lab -- perf [A B C]
//! ```
//!
//! Exit status: 0 when every experiment ran in full and every conclusion
//! held; 1 when a conclusion did not hold or an experiment could not
//! measure; 2 when nothing failed but an experiment was skipped or only
//! partly measured (e.g. no broker) — such a run is not a pass. Logs go to stderr (`RUST_LOG`, default
//! `warn`, the services' provoked warnings hidden); progress bars too, when
//! stderr is a terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use campusfood_lab::perf::PerfOptions;
use campusfood_lab::report::{Status, Verdict};
use campusfood_lab::{RunConfig, Services, Settings};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "campusfood lab: run the experiments against the real services, write a report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the experiments.
    List,
    /// Run experiments and write a report.
    Run(Box<RunArgs>),
    /// The six headline figures from the shipped binaries, beside the
    /// original's and this machine's limits (`scripts/perf.sh` runs it).
    Perf(PerfArgs),
}

#[derive(Args, Debug)]
struct PerfArgs {
    /// Parts to measure: A, B, C (default: all three).
    parts: Vec<String>,
    /// Where the shipped binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The wrk executable.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before each measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Part B: seconds of load while inventory is stopped.
    #[arg(long, default_value_t = 5)]
    drain_load: u64,
    /// Part C: orders in the burst.
    #[arg(long, default_value_t = campusfood_lab::perf::DEFINED_BURST)]
    burst: u64,
    /// Criterion's results of `cargo bench --bench limits`.
    #[arg(long, default_value = "target/criterion")]
    criterion_dir: PathBuf,
    /// Where the services' logs and the figures (`perf.json`) go.
    #[arg(long, default_value = "target/perf")]
    out: PathBuf,
}

async fn perf(args: PerfArgs) -> anyhow::Result<ExitCode> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("this binary's folder")?
            .to_owned(),
    };
    let parts: Vec<String> = args.parts.iter().map(|p| p.to_uppercase()).collect();
    if let Some(bad) = parts
        .iter()
        .find(|p| !["A", "B", "C"].contains(&p.as_str()))
    {
        anyhow::bail!("part {bad:?}: expected A, B or C");
    }
    let wants = |p: &str| parts.is_empty() || parts.iter().any(|q| q == p);
    let options = PerfOptions {
        bin_dir,
        wrk: args.wrk,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        drain_load: Duration::from_secs(args.drain_load),
        burst: args.burst,
        criterion_dir: args.criterion_dir,
        logs: args.out.join("logs"),
        part_a: wants("A"),
        part_b: wants("B"),
        part_c: wants("C"),
    };
    let report = campusfood_lab::perf::run(&options).await;
    println!("{}", report.markdown());
    let json = args.out.join("perf.json");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "figures: {}; the services' logs: {}",
        json.display(),
        options.logs.display()
    );
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Experiment ids (A1 …), a part's letter (A), or `all`.
    #[arg(required = true)]
    experiments: Vec<String>,
    /// Small sizes and short durations (seconds instead of minutes).
    #[arg(long)]
    fast: bool,
    /// Where reports go; this run's goes to OUT/NAME.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// The run's name (default: run-<UTC time>).
    #[arg(long)]
    name: Option<String>,
    /// A1 and A2's baseline: orders sent one after another.
    #[arg(long)]
    orders: Option<u64>,
    /// A2: delay injected into inventory, seconds.
    #[arg(long)]
    delay: Option<f64>,
    /// A2: orders sent while the delay is in force.
    #[arg(long)]
    delayed_orders: Option<u64>,
    /// A3: orders sent while inventory fails every call.
    #[arg(long)]
    failure_orders: Option<u64>,
    /// A3: orders sent while inventory is slower than the timeout.
    #[arg(long)]
    timeout_orders: Option<u64>,
    /// A3: the order service's downstream timeout, seconds (with
    /// --order-url: the running service's timeout).
    #[arg(long)]
    timeout: Option<f64>,
    /// A4: the order service's downstream timeout, seconds.
    #[arg(long)]
    breaker_timeout: Option<f64>,
    /// A4: how long inventory is down, seconds.
    #[arg(long)]
    outage: Option<f64>,
    /// A4: orders per second.
    #[arg(long)]
    rate: Option<f64>,
    /// A1, A2, B1, X1 and X2: send the orders on a fixed schedule of N per
    /// second (open loop; each latency from its planned send time) instead
    /// of one after another.
    #[arg(long, value_name = "N")]
    open_loop_rate: Option<f64>,
    /// The item ordered.
    #[arg(long)]
    item: Option<String>,
    /// A knob of an experiment, KEY=VALUE (e.g. a4.open_for_ms=500); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Use a running OrderService instead of starting one in process.
    #[arg(long)]
    order_url: Option<String>,
    /// The running InventoryService (for /configure and stock).
    #[arg(long, requires = "order_url")]
    inventory_url: Option<String>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{flag} {v}: not a duration"))
}

fn config(args: RunArgs) -> anyhow::Result<RunConfig> {
    let services = match args.order_url {
        Some(order_url) => Services::External {
            order_url,
            inventory_url: args.inventory_url,
        },
        None => Services::InProcess,
    };
    let mut s = Settings::for_run(args.fast, &services);
    if let Some(v) = args.orders {
        s.orders = v;
    }
    if let Some(v) = args.delay {
        s.delay = seconds("delay", v)?;
    }
    if let Some(v) = args.delayed_orders {
        s.delayed_orders = v;
    }
    if let Some(v) = args.failure_orders {
        s.failure_orders = v;
    }
    if let Some(v) = args.timeout_orders {
        s.timeout_orders = v;
    }
    if let Some(v) = args.timeout {
        s.timeout = seconds("timeout", v)?;
    }
    if let Some(v) = args.breaker_timeout {
        s.breaker_timeout = seconds("breaker-timeout", v)?;
    }
    if let Some(v) = args.outage {
        s.outage = seconds("outage", v)?;
    }
    if let Some(v) = args.rate {
        s.rate = v;
    }
    if args.open_loop_rate.is_some() {
        s.open_loop_rate = args.open_loop_rate;
    }
    if let Some(v) = args.item {
        s.item = v;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        s.params.insert(k.to_owned(), v.to_owned());
    }
    let mut config = RunConfig::new(s);
    config.services = services;
    config.out_dir = args.out;
    if let Some(name) = args.name {
        anyhow::ensure!(
            !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
            "--name {name:?}: must be a plain folder name"
        );
        config.name = name;
    }
    config.progress = !args.no_progress;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    config.command_line = format!("cargo run --release --example lab -- {}", argv.join(" "));
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The services' own warnings (circuit opened …) are what
                // the experiments provoke; the report tells the story.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,campusfood_services=error,campusfood_transport=error",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::List => {
            for e in campusfood_lab::list() {
                println!("{:<4} {}\n     {}\n", e.id, e.title, e.shows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let names = args.experiments.clone();
            let config = config(*args)?;
            let report = campusfood_lab::run(&config, &names).await?;
            for e in &report.experiments {
                println!("{} {} — {}", e.status.badge(), e.id, e.title);
                if let Some(r) = &e.reason {
                    println!("     {r}");
                }
                for c in &e.conclusions {
                    println!("     {} {}", if c.held { "✅" } else { "❌" }, c.claim);
                    if !c.held || matches!(e.status, Status::Failed) {
                        println!("        {}", c.evidence);
                    }
                }
            }
            println!("\n{}", report.summary_line());
            println!(
                "report: {}",
                config.report_dir().join("report.md").display()
            );
            Ok(match report.verdict() {
                Verdict::Passed => ExitCode::SUCCESS,
                Verdict::Failed => ExitCode::FAILURE,
                Verdict::Incomplete => ExitCode::from(2),
            })
        }
        Command::Perf(args) => perf(args).await,
    }
}
