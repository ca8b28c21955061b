//! The AsyncAPI documents as users get them — Part B's from the shipped
//! `async_rabbitmq` binary's `GET /asyncapi.json`, Part C's from
//! `streaming_kafka -- asyncapi` — validated by the AsyncAPI CLI
//! (`asyncapi validate --fail-severity warn`: warnings fail too), and held
//! to what the system really declares: every queue and exchange the
//! running Part B services declared on the broker is in the document, and
//! every queue the document names was declared.
//!
//! The CLI (npm `@asyncapi/cli`, pinned) is installed by `scripts/test.sh`
//! into `.asyncapi-cli/` (path exported as `CAMPUSFOOD_ASYNCAPI_CLI`). Its
//! anonymous usage metrics are switched off for every run.
//!
//! Run: `cargo build --examples && cargo test --test asyncapi` (RabbitMQ
//! running: `scripts/brokers.sh up rabbitmq`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use campusfood_testkit::rabbitmq::{MANAGEMENT, delete_prefixed, unique_prefix};
use serde_json::Value;

/// Where scripts/test.sh installs the CLI, and the variable it exports.
const CLI_VAR: &str = "CAMPUSFOOD_ASYNCAPI_CLI";

fn cli() -> PathBuf {
    let dir = std::env::var_os(CLI_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".asyncapi-cli"));
    let bin = dir.join("node_modules").join(".bin").join("asyncapi");
    assert!(
        bin.is_file(),
        "the AsyncAPI CLI is not installed at {}: run scripts/test.sh once (it installs it), \
         or point {CLI_VAR} at a folder where `npm install --prefix <folder> @asyncapi/cli` ran",
        bin.display()
    );
    bin
}

/// `asyncapi validate` of `doc` (written to `dir/name`): the CLI's report
/// when it is not valid.
fn validate(doc: &Value, dir: &Path, name: &str) -> Result<(), String> {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    // No usage metrics: an analytics setting of our own, and CI=true.
    let analytics = dir.join("asyncapi-analytics.json");
    std::fs::write(
        &analytics,
        r#"{"analyticsEnabled":"false","infoMessageShown":"true"}"#,
    )
    .unwrap();
    let out = Command::new(cli())
        .args(["validate", "--fail-severity", "warn"])
        .arg(&file)
        .env("ASYNCAPI_METRICS_CONFIG_PATH", &analytics)
        .env("CI", "true")
        .output()
        .expect("the AsyncAPI CLI runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && report.contains("is valid") {
        Ok(())
    } else {
        Err(format!("{name} ({}):\n{report}", out.status))
    }
}

/// A document the CLI must refuse: an operation whose action is neither
/// `send` nor `receive`. Shows that validation can fail.
fn corrupted(doc: &Value) -> Value {
    let mut bad = doc.clone();
    let ops = bad["operations"].as_object_mut().unwrap();
    let first = ops.values_mut().next().unwrap();
    first["action"] = "publish".into();
    bad
}

fn addresses(doc: &Value, amqp_is: Option<&str>) -> BTreeSet<String> {
    doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| amqp_is.is_none_or(|is| c["bindings"]["amqp"]["is"] == is))
        .map(|c| c["address"].as_str().unwrap().to_owned())
        .collect()
}

/// A child process, SIGKILLed and reaped on drop (also when the test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Names of the default vhost's queues or exchanges starting with `prefix`.
async fn on_broker(kind: &str, prefix: &str) -> BTreeSet<String> {
    let names: Vec<Value> = reqwest::Client::new()
        .get(format!("{MANAGEMENT}/{kind}/%2F?columns=name"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    names
        .iter()
        .filter_map(|v| v["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_b_serves_a_valid_document_of_every_queue_it_declares() {
    cli();
    let reachable = reqwest::Client::new()
        .get(format!("{MANAGEMENT}/overview"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(
        reachable,
        "RabbitMQ's management API does not answer at {MANAGEMENT}: start the broker with \
         `scripts/brokers.sh up rabbitmq`"
    );
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("asyncapi");
    // Dropped after the services (declared later, dropped first).
    let _cleanup = {
        let prefix = prefix.clone();
        campusfood_testkit::CleanUp::new("the test's queues and exchanges", async move {
            delete_prefixed(MANAGEMENT, &prefix)
                .await
                .ok_or("the management API did not answer")
        })
    };
    let order_port = free_port();
    let log = std::fs::File::create(dir.path().join("async_rabbitmq.log")).unwrap();
    let _services = Killed(
        Command::new(campusfood_testkit::example_binary("async_rabbitmq"))
            .env("CAMPUSFOOD_RABBITMQ_PREFIX", &prefix)
            .env("CAMPUSFOOD_ORDER_PORT", order_port.to_string())
            .env("CAMPUSFOOD_INVENTORY_PORT", free_port().to_string())
            .env("CAMPUSFOOD_DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let url = format!("http://127.0.0.1:{order_port}/asyncapi.json");
    let client = reqwest::Client::new();
    let mut doc = Value::Null;
    campusfood_testkit::until(
        "the order service's /asyncapi.json",
        Duration::from_secs(60),
        async || match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                doc = r.json().await.unwrap();
                true
            }
            _ => false,
        },
    )
    .await;
    if let Err(report) = validate(&doc, dir.path(), "async_rabbitmq.json") {
        panic!("{report}");
    }
    assert!(validate(&corrupted(&doc), dir.path(), "corrupted.json").is_err());

    // Every subscription declares its queue, retry and dead-letter queue
    // when it starts; wait until all five have.
    let queues = addresses(&doc, Some("queue"));
    assert_eq!(queues.len(), 15, "{queues:?}");
    assert!(queues.iter().all(|q| q.starts_with(&prefix)), "{queues:?}");
    let mut declared = BTreeSet::new();
    campusfood_testkit::until(
        "the services' queues on the broker",
        Duration::from_secs(30),
        async || {
            declared = on_broker("queues", &prefix).await;
            declared.len() >= queues.len()
        },
    )
    .await;
    assert_eq!(declared, queues, "queues on the broker vs in the document");

    let exchanges: BTreeSet<String> = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|c| c["bindings"]["amqp"]["exchange"]["name"].as_str())
        .map(str::to_owned)
        .collect();
    let mut declared = on_broker("exchanges", &prefix).await;
    let dead_letter_exchange = format!("{prefix}.orders.dlx");
    assert!(declared.remove(&dead_letter_exchange), "{declared:?}");
    assert!(doc.to_string().contains(&dead_letter_exchange));
    assert_eq!(
        declared, exchanges,
        "exchanges on the broker vs in the document"
    );
}

#[test]
fn part_c_prints_a_valid_document_of_the_topics_it_is_given() {
    cli();
    let dir = tempfile::tempdir().unwrap();
    let (orders, inventory) = (
        campusfood_testkit::unique("asyncapi-orders"),
        campusfood_testkit::unique("asyncapi-inventory"),
    );
    // No broker needed: the document is printed before connecting.
    let out = Command::new(campusfood_testkit::example_binary("streaming_kafka"))
        .arg("asyncapi")
        .env("ORDER_TOPIC", &orders)
        .env("INVENTORY_TOPIC", &inventory)
        .env("BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Err(report) = validate(&doc, dir.path(), "streaming_kafka.json") {
        panic!("{report}");
    }
    assert!(validate(&corrupted(&doc), dir.path(), "corrupted.json").is_err());
    let topics = addresses(&doc, None);
    for t in [
        orders.clone(),
        inventory.clone(),
        format!("{orders}.dlq"),
        format!("{inventory}.dlq"),
    ] {
        assert!(topics.contains(&t), "{t} in {topics:?}");
    }
    assert_eq!(doc["servers"]["kafka0"]["host"], "127.0.0.1:1");
}
