//! What RabbitMQ must survive without losing or duplicating an order: the
//! broker going away in the middle of a run, the broker down when an order
//! arrives, and the inventory process killed with SIGKILL mid-stream.
//!
//! Most outages go through a cuttable proxy (`campusfood_testkit::Outage`),
//! so one test's broker "goes down" without stopping the broker that every
//! other test shares. The broker restart is real: the test stops and starts
//! a RabbitMQ node of its own (`scripts/brokers.sh restart rabbitmq-spare`),
//! and what was queued in it must survive.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use campusfood::core::config::RabbitConfig;
use campusfood::core::fault::FaultUpdate;
use campusfood::core::ledger::{InventoryLedger, RedbLedger};
use campusfood::core::order::OrderStatus;
use campusfood::core::transport::Route;
use campusfood::services::async_rabbitmq::{AsyncPart, AsyncStores, AsyncSystem};
use campusfood_testkit::Outage;
use futures::future::join_all;
use serde_json::json;

use crate::harness::{
    App, SPARE_AMQP, SPARE_MANAGEMENT, base, connect_rabbit, rabbit_config, rabbitmq_with, until,
};

const BROKER: &str = "127.0.0.1:5672";

/// RabbitMQ settings through `proxy`, reconnecting quickly.
fn through(proxy: &Outage, test: &str) -> RabbitConfig {
    reconnecting(proxy.amqp_url(), test)
}

/// RabbitMQ settings on `url` for one test, reconnecting quickly after the
/// broker goes away.
fn reconnecting(url: String, test: &str) -> RabbitConfig {
    let mut c = rabbit_config(test);
    c.url = url;
    c.reconnect_backoff = Duration::from_millis(50);
    c.reconnect_backoff_max = Duration::from_millis(500);
    c.publish_attempts = 2;
    c.confirm_timeout = Duration::from_secs(2);
    c
}

async fn place_all(
    app: &App,
    system: &AsyncSystem,
    n: usize,
    concurrency: usize,
    accepted: &AtomicUsize,
) -> Vec<String> {
    let batches = join_all((0..concurrency).map(|client| async move {
        // Client c places orders c, c + concurrency, c + 2·concurrency, …
        let mine = (client..n).step_by(concurrency).count();
        let mut ids = Vec::with_capacity(mine);
        for _ in 0..mine {
            let (status, body) = app.order(system, json!({"item": "burger", "qty": 1})).await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["order_id"].as_str().unwrap().to_owned());
            accepted.fetch_add(1, Ordering::SeqCst);
        }
        ids
    }))
    .await;
    let ids: Vec<String> = batches.into_iter().flatten().collect();
    assert_eq!(ids.len(), n);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_run_loses_no_order_and_reserves_none_twice() {
    let proxy = Arc::new(Outage::start(BROKER));
    let (mut config, stores) = base("burger=5000");
    config.rabbitmq = through(&proxy, "outage");
    let app = rabbitmq_with(config, stores).await;
    let system = app.start(AsyncPart::All).await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let outage = {
        let (proxy, accepted) = (proxy.clone(), accepted.clone());
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while accepted.load(Ordering::SeqCst) < 300 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "300 orders were never accepted"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            proxy.cut();
            // The outage itself: the broker stays away for a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            proxy.restore();
        })
    };
    let ids = place_all(&app, &system, 1000, 16, &accepted).await;
    outage.await.unwrap();
    assert!(
        proxy.refused() > 0,
        "the outage must have refused reconnections"
    );
    app.all_notified(&ids, Duration::from_secs(60)).await;
    assert_eq!(app.ledger().reservation_count().await.unwrap(), 1000);
    assert_eq!(app.stock("burger").await, 4000);
    assert_eq!(app.orders().outbox_len().await.unwrap(), 0);
    system.stop().await;
}

/// Stops and starts the spare RabbitMQ node, as an operator would.
fn restart_spare_broker() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers.sh");
    let out = Command::new(script)
        .args(["restart", "rabbitmq-spare"])
        .output()
        .expect("run scripts/brokers.sh");
    assert!(
        out.status.success(),
        "scripts/brokers.sh restart rabbitmq-spare failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How long the spare node's Erlang VM has been up (its management API
/// reports it after its first statistics tick).
async fn spare_uptime() -> Duration {
    let mut uptime = None;
    until(
        "the spare node's uptime",
        Duration::from_secs(30),
        async || {
            let nodes: serde_json::Value = reqwest::Client::new()
                .get(format!("{SPARE_MANAGEMENT}/nodes"))
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            uptime = nodes[0]["uptime"].as_u64();
            uptime.is_some()
        },
    )
    .await;
    Duration::from_millis(uptime.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_broker_restart_mid_run_loses_no_order_and_reserves_none_twice() {
    let (mut config, stores) = base("burger=5000");
    config.rabbitmq = reconnecting(SPARE_AMQP.to_owned(), "restart");
    let mut app = rabbitmq_with(config, stores).await;
    // Few handlers and a slow inventory, so that a backlog waits in the
    // broker when it goes down.
    app.options.prefetch = 8;
    let system = app.start(AsyncPart::All).await;
    let inventory = system.inventory.as_ref().unwrap().service.clone();
    let slow = |delay: f64| FaultUpdate {
        delay: Some(delay),
        ..Default::default()
    };
    inventory.faults().configure(&slow(0.05)).unwrap();
    let accepted = AtomicUsize::new(0);
    let restart = async {
        until("300 orders accepted", Duration::from_secs(60), async || {
            accepted.load(Ordering::SeqCst) >= 300
        })
        .await;
        let backlog = app.bus.depth(&Route::ORDER_PLACED).await;
        let began = std::time::Instant::now();
        tokio::task::spawn_blocking(restart_spare_broker)
            .await
            .unwrap();
        eprintln!(
            "restarted the broker in {:?} with {backlog} orders waiting in it",
            began.elapsed()
        );
        (backlog, began)
    };
    let (ids, (backlog, restart_began)) =
        tokio::join!(place_all(&app, &system, 1000, 16, &accepted), restart);
    assert!(
        backlog > 0,
        "a backlog must have been waiting in the broker when it restarted"
    );
    assert!(
        spare_uptime().await < restart_began.elapsed(),
        "the broker process must have been restarted"
    );
    inventory.faults().configure(&slow(0.0)).unwrap();
    app.all_notified(&ids, Duration::from_secs(90)).await;
    assert_eq!(app.ledger().reservation_count().await.unwrap(), 1000);
    assert_eq!(app.stock("burger").await, 4000);
    assert_eq!(app.orders().outbox_len().await.unwrap(), 0);
    assert!(app.bus.dead_letters(&Route::ORDER_PLACED).await.is_empty());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_arriving_while_the_broker_is_down_are_accepted_and_published_on_its_return() {
    let proxy = Outage::start(BROKER);
    let (mut config, stores) = base("burger=100");
    config.rabbitmq = through(&proxy, "down-at-post");
    let app = rabbitmq_with(config, stores).await;
    let system = app.start(AsyncPart::All).await;
    proxy.cut();
    let accepted = AtomicUsize::new(0);
    let ids = place_all(&app, &system, 10, 1, &accepted).await;
    assert_eq!(
        app.orders().outbox_len().await.unwrap(),
        10,
        "kept while the broker is down"
    );
    for id in &ids {
        assert_eq!(app.status(id).await, OrderStatus::Placed);
    }
    proxy.restore();
    app.all_notified(&ids, Duration::from_secs(30)).await;
    assert_eq!(app.stock("burger").await, 90);
    system.stop().await;
}

// --- inventory killed with SIGKILL -------------------------------------------

const CHILD_PREFIX: &str = "ASYNC_INVENTORY_CHILD_PREFIX";
const CHILD_DATA: &str = "ASYNC_INVENTORY_CHILD_DATA";
const STOCK: &str = "burger=1000";

/// Not a test of its own: the entry point of the inventory process that
/// [`an_inventory_killed_mid_stream_loses_nothing_and_reserves_nothing_twice`]
/// starts (by running this test binary again with the variables set) and
/// kills. Without the variables it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_child() {
    let (Ok(prefix), Ok(data)) = (std::env::var(CHILD_PREFIX), std::env::var(CHILD_DATA)) else {
        return;
    };
    let mut config = campusfood::core::Config {
        stock: STOCK.parse().unwrap(),
        ..Default::default()
    };
    config.rabbitmq = RabbitConfig::with_prefix(&prefix);
    config.data_dir = data.into();
    let ledger: Arc<dyn InventoryLedger> =
        Arc::new(RedbLedger::open(config.data_dir.join("inventory.redb"), &config.stock).unwrap());
    let (_, stores) = base(STOCK);
    let stores = AsyncStores {
        ledger: Some(ledger),
        ..stores
    };
    let transport = connect_rabbit(&config.rabbitmq).await;
    let mut options = campusfood::services::async_rabbitmq::AsyncOptions::from_config(&config);
    options.inventory_port = 0;
    options.prefetch = 32;
    let system = AsyncSystem::start(&config, AsyncPart::Inventory, &options, transport, stores)
        .await
        .unwrap();
    // Slow enough that the kill lands mid-stream.
    let service = &system.inventory.as_ref().unwrap().service;
    service
        .faults()
        .configure(&campusfood::core::fault::FaultUpdate {
            delay: Some(0.005),
            ..Default::default()
        })
        .unwrap();
    println!("READY");
    std::future::pending::<()>().await;
}

fn spawn_inventory(prefix: &str, data: &std::path::Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rabbitmq_faults::inventory_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_PREFIX, prefix)
        .env(CHILD_DATA, data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.map(|l| l.contains("READY")).unwrap_or(false) {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("inventory child did not start");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_killed_mid_stream_loses_nothing_and_reserves_nothing_twice() {
    let prefix = campusfood_testkit::rabbitmq::unique_prefix("kill9");
    let data = tempfile::tempdir().unwrap();
    let (mut config, stores) = base(STOCK);
    config.rabbitmq = RabbitConfig::with_prefix(&prefix);
    let app = rabbitmq_with(config, stores).await;
    let front = app.start(AsyncPart::Order).await;
    let notifier = app.start(AsyncPart::Notification).await;
    let mut child = spawn_inventory(&prefix, data.path());
    let accepted = AtomicUsize::new(0);
    let ids = place_all(&app, &front, 300, 4, &accepted).await;
    let decided = async || {
        let mut n = 0;
        for id in &ids {
            if app.status(id).await != OrderStatus::Placed {
                n += 1;
            }
        }
        n
    };
    until("some orders decided", Duration::from_secs(30), async || {
        decided().await >= 30
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = decided().await;
    assert!(
        at_kill < 300,
        "the kill must land mid-stream ({at_kill} of 300 decided)"
    );
    let mut child = spawn_inventory(&prefix, data.path());
    app.all_notified(&ids, Duration::from_secs(60)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let ledger =
        RedbLedger::open(data.path().join("inventory.redb"), &STOCK.parse().unwrap()).unwrap();
    assert_eq!(ledger.reservation_count().await.unwrap(), 300);
    assert_eq!(
        ledger.stock().await.unwrap()[&campusfood::core::Item::parse("burger").unwrap()],
        700
    );
    for s in [front, notifier] {
        s.stop().await;
    }
}
