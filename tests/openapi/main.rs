//! Every HTTP service against its own `/openapi.json`, fuzzed by
//! schemathesis with every check: Part A's order, inventory and
//! notification services, Part B's order and inventory services (over the
//! in-memory bus) and Part C's analytics consumer (on Kafka). The documents
//! must tell the truth: any failure fails the test, with schemathesis'
//! report.
//!
//! schemathesis lives in a venv that `scripts/test.sh` makes
//! (`.venv-schemathesis`, path exported as `CAMPUSFOOD_SCHEMATHESIS_VENV`).
//!
//! `POST /configure` is fuzzed last, on its own: a fuzzed delay (up to the
//! 60 s bound) or failure rate would otherwise slow or fail the other
//! operations of the service (and of Part A's order service, which calls
//! inventory and notification).
//!
//! Run: `cargo test --test openapi` (after `scripts/test.sh` made the venv).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use campusfood::core::Config;
use campusfood::core::ledger::MemoryLedger;
use campusfood::services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood::services::stores::MemoryOrderStore;
use campusfood::services::stores::MemoryProcessedIds;
use campusfood::services::sync_rest::{SyncPart, SyncRest};
use campusfood::transport::memory::MemoryTransport;
use std::sync::Arc;

/// Where scripts/test.sh puts the venv, and the variable it exports.
const VENV_VAR: &str = "CAMPUSFOOD_SCHEMATHESIS_VENV";
/// Test cases per operation and phase: enough to find the disagreements
/// the documents had, few enough for the whole run to take seconds.
const MAX_EXAMPLES: &str = "25";

fn schemathesis_bin() -> PathBuf {
    let venv = std::env::var_os(VENV_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-schemathesis"));
    let bin = venv.join("bin").join("schemathesis");
    assert!(
        bin.is_file(),
        "schemathesis is not installed at {}: run scripts/test.sh once (it makes the venv), \
         or point {VENV_VAR} at a venv with schemathesis",
        bin.display()
    );
    bin
}

/// Which operations of a service one run fuzzes.
#[derive(Clone, Copy)]
enum Ops {
    /// All (the service has no `/configure`).
    All,
    /// All but `/configure`.
    AllButConfigure,
    /// `/configure` only.
    Configure,
}

/// Runs schemathesis against `base`'s document: its report when it found
/// failures.
async fn fuzz(service: &str, base: String, ops: Ops) -> Option<String> {
    let bin = schemathesis_bin();
    let service = service.to_owned();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/schemathesis.toml");
    let (status, report) = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(bin);
        cmd.arg("--no-color")
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(format!("{base}/openapi.json"))
            .args(["--checks", "all"])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--seed", "1"])
            // One worker: CPython 3.11's parser is not safe to share between
            // threads (hypothesis parses lambdas; "AST constructor recursion
            // depth mismatch").
            .args(["--workers", "1"])
            .args(["--request-timeout", "10"])
            .args(["--suppress-health-check", "all"]);
        match ops {
            Ops::All => &mut cmd,
            Ops::AllButConfigure => cmd.args(["--exclude-path", "/configure"]),
            Ops::Configure => cmd.args(["--include-path", "/configure"]),
        };
        let out = cmd.output().expect("schemathesis runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, report)
    })
    .await
    .unwrap();
    (!status.success()).then(|| format!("== {service} ({status}):\n{report}"))
}

fn url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_keeps_to_its_openapi_document() {
    // Before anything starts: fail at once, saying how to install it.
    schemathesis_bin();
    // Part A, on a durable ledger in a temp dir.
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        stock: "burger=100,pizza=5".parse().unwrap(),
        ..Config::default()
    };
    config.http.order_port = 0;
    config.http.inventory_port = 0;
    config.http.notification_port = 0;
    config.http.notification_retry_interval = Duration::from_millis(50);
    let a = SyncRest::start(&config, SyncPart::All).await.unwrap();
    let a_order = url(a.order.as_ref().unwrap().server.addr());
    let a_inventory = url(a.inventory.as_ref().unwrap().server.addr());
    let a_notification = url(a.notification.as_ref().unwrap().server.addr());

    // Part B, over the in-memory bus.
    let b_config = Config {
        stock: "burger=100,pizza=5".parse().unwrap(),
        ..Config::default()
    };
    let stores = AsyncStores {
        ledger: Some(Arc::new(MemoryLedger::new(&b_config.stock))),
        orders: Some(Arc::new(MemoryOrderStore::new())),
        notified: Some(Arc::new(MemoryProcessedIds::new())),
    };
    let mut options = AsyncOptions::from_config(&b_config);
    options.order_port = 0;
    options.inventory_port = 0;
    options.retry_delay = Duration::from_millis(50);
    options.relay_poll = Duration::from_millis(20);
    let b = AsyncSystem::start(
        &b_config,
        AsyncPart::All,
        &options,
        Arc::new(MemoryTransport::new()),
        stores,
    )
    .await
    .unwrap();
    let b_order = url(b.order.as_ref().unwrap().server.addr());
    let b_inventory = url(b.inventory.as_ref().unwrap().server.addr());

    #[cfg(feature = "kafka")]
    let analytics = kafka::Analytics::start().await;

    let mut runs = vec![
        fuzz(
            "A notification",
            a_notification.clone(),
            Ops::AllButConfigure,
        )
        .await,
        fuzz("A inventory", a_inventory.clone(), Ops::AllButConfigure).await,
        fuzz("A order", a_order, Ops::All).await,
        fuzz("B order", b_order, Ops::All).await,
        fuzz("B inventory", b_inventory.clone(), Ops::AllButConfigure).await,
    ];
    #[cfg(feature = "kafka")]
    runs.push(fuzz("C analytics", analytics.url(), Ops::All).await);
    runs.push(fuzz("A notification /configure", a_notification, Ops::Configure).await);
    runs.push(fuzz("A inventory /configure", a_inventory, Ops::Configure).await);
    runs.push(fuzz("B inventory /configure", b_inventory, Ops::Configure).await);
    let failures: Vec<String> = runs.into_iter().flatten().collect();

    #[cfg(feature = "kafka")]
    analytics.stop().await;
    b.stop().await;
    a.stop().await;
    assert!(
        failures.is_empty(),
        "schemathesis found failures:\n{}",
        failures.join("\n")
    );
}

#[cfg(feature = "kafka")]
mod kafka {
    use campusfood::core::config::KafkaConfig;
    use campusfood::services::streaming_kafka::analytics::{AnalyticsConsumer, AnalyticsOptions};
    use campusfood::services::streaming_kafka::{ConnectRetry, connect};
    use campusfood::transport::kafka::KafkaTransport;

    const NOT_RUNNING: &str =
        "Kafka is not running on 127.0.0.1:9092: start it with `scripts/brokers.sh up kafka`";

    /// Part C's analytics consumer on topics and a group of its own.
    pub struct Analytics {
        consumer: AnalyticsConsumer,
        transport: KafkaTransport,
        suffix: String,
    }

    impl Analytics {
        pub async fn start() -> Self {
            let suffix = format!("openapi-{:012x}", fastrand::u64(..) & 0xFFFF_FFFF_FFFF);
            let config = KafkaConfig::default().with_suffix(&suffix);
            let once = ConnectRetry {
                attempts: 1,
                ..ConnectRetry::default()
            };
            let transport = match connect(&config, &once).await {
                Ok(t) => t,
                Err(e) => panic!("{NOT_RUNNING} ({e})"),
            };
            let options = AnalyticsOptions {
                group: config.analytics_group.clone(),
                http_addr: "127.0.0.1:0".to_owned(),
                report_interval: std::time::Duration::ZERO,
                ..AnalyticsOptions::default()
            };
            let consumer = AnalyticsConsumer::start(&transport, &options)
                .await
                .unwrap();
            Self {
                consumer,
                transport,
                suffix,
            }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.consumer.addr())
        }

        /// Stops the consumer and deletes its topics.
        pub async fn stop(self) {
            self.consumer.stop().await;
            let topics = self
                .transport
                .topics_containing(&self.suffix)
                .await
                .unwrap();
            self.transport.delete_topics(&topics).await.unwrap();
        }
    }
}
