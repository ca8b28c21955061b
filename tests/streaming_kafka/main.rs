//! Part C against a real Kafka (never mocked):
//!
//! ```text
//! scripts/brokers.sh up kafka
//! cargo test --test streaming_kafka
//! ```
//!
//! Every test has its own topics, groups and ledger (a random suffix), so
//! tests run in parallel and re-runs never see old records. Waits are
//! deadlines on a condition, never fixed sleeps. The SIGKILL test re-runs
//! this binary as the child process it kills (see [`child_inventory_consumer`]).
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod helpers;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use campusfood::core::events::{InventoryStatus, OrderEvent};
use campusfood::core::fault::decide;
use campusfood::core::ledger::{InventoryLedger, RedbLedger, ReserveOutcome};
use campusfood::core::transport::{DeadLetters, Route, headers};
use campusfood::services::stores::names;
use campusfood::services::streaming_kafka::analytics::{MetricsSnapshot, Totals};
use campusfood::services::streaming_kafka::inventory::DEFAULT_SEED;
use campusfood::services::streaming_kafka::offsets::{self, ResetTarget};
use campusfood::services::streaming_kafka::{AnalyticsConsumer, StreamingPart};
use campusfood::transport::kafka::KafkaTransport;
use helpers::*;

/// The orders `decide(seed, id, 1) < rate` fails: with ample stock,
/// exactly the failures.
fn predicted_failures(orders: &[OrderEvent], rate: f64) -> HashSet<String> {
    orders
        .iter()
        .filter(|o| decide(DEFAULT_SEED, o.order_id.as_str(), 1) < rate)
        .map(|o| o.order_id.to_string())
        .collect()
}

async fn metrics_over_http(addr: std::net::SocketAddr) -> MetricsSnapshot {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_burst_is_decided_exactly_once_and_counted() {
    const N: usize = 10_000;
    let h = harness("burst").await;
    let mut system = h.start(StreamingPart::All).await;
    let analytics = system.analytics.take().unwrap();
    let orders = h.produce(N).await;
    let started = Instant::now();

    until(
        "analytics to count every order and outcome",
        DEADLINE,
        async || {
            let t = analytics.totals();
            t.orders == N as u64 && t.inventory_events == N as u64
        },
    )
    .await;
    println!("10k burst processed end to end in {:?}", started.elapsed());

    // inventory-events, read committed: each order exactly once.
    let reader = h.reader(&Route::INVENTORY_RESERVED).await;
    until(
        "the reader to see every inventory event",
        DEADLINE,
        async || reader.count() >= N,
    )
    .await;
    let events = reader.inventory_events();
    assert_eq!(reader.count(), N, "no duplicates in inventory-events");
    let produced: HashSet<_> = orders.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(events.keys().cloned().collect::<HashSet<_>>(), produced);

    // Failures are exactly the seeded draw (stock is ample).
    let rate = h.options.inventory.fail_rate;
    let predicted = predicted_failures(&orders, rate);
    for (id, e) in &events {
        let expected = if predicted.contains(id.as_str()) {
            InventoryStatus::Failure
        } else {
            InventoryStatus::Success
        };
        assert_eq!(e[0].status, expected, "{id}");
    }
    let share = predicted.len() as f64 / N as f64;
    assert!(
        (share - rate).abs() < 0.01,
        "failure share {share} vs FAIL_RATE {rate}"
    );

    let t = analytics.totals();
    assert_eq!(
        t,
        Totals {
            orders: N as u64,
            inventory_events: N as u64,
            successes: (N - predicted.len()) as u64,
            failures: predicted.len() as u64,
            duplicates_dropped: 0,
            malformed: 0,
        }
    );

    // The contract's /metrics, plus totals and lag (drained once committed).
    let addr = analytics.addr();
    let m = metrics_over_http(addr).await;
    assert_eq!(m.window_seconds, 60);
    assert_eq!(m.orders_per_min, N as f64);
    assert_eq!(m.inventory_events, N as u64);
    assert_eq!(m.failures, predicted.len() as u64);
    assert!((m.failure_rate_pct - share * 100.0).abs() < 0.01);
    assert_eq!(m.totals, t);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let lag = metrics_over_http(addr).await.lag;
        if lag[h.order_topic()] == Some(0) && lag[h.inventory_topic()] == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "lag did not drain: {lag:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Scrapes never ask Kafka themselves: 200 at once are answered from the
    // value the background task keeps, which asks once a second at most.
    let (before, started) = (analytics.lag_refreshes(), Instant::now());
    let scrapes = (0..200).map(|_| metrics_over_http(addr));
    for m in futures::future::join_all(scrapes).await {
        assert_eq!(m.lag[h.order_topic()], Some(0));
    }
    let refreshes = analytics.lag_refreshes() - before;
    let allowed = 2 + started.elapsed().as_secs();
    assert!(
        refreshes <= allowed,
        "200 scrapes asked Kafka {refreshes} times (at most {allowed} background refreshes)"
    );
    let raw: serde_json::Value = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(raw["generated_at"].as_str().unwrap().ends_with('Z'));

    let counts = system.inventory.as_ref().unwrap().counts();
    assert!(counts.decided >= N as u64);
    analytics.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_analytics_consumer_builds_lag_that_drains() {
    const N: usize = 1_500;
    let mut h = harness("throttle").await;
    h.options.analytics.throttle = Duration::from_millis(3);
    let system = h.start(StreamingPart::All).await;
    let group = h.options.analytics.group.clone();
    h.produce(N).await;

    // Our lag API sees a backlog on the analytics group...
    until("analytics lag to build up", DEADLINE, || async {
        h.lag(&group, h.order_topic()).await > 200
    })
    .await;
    // ...and so does Kafka's own CLI, while the inventory consumer keeps up.
    let cli = cli_lag(&group);
    assert!(cli > 0, "kafka-consumer-groups --describe shows lag {cli}");
    let analytics = system.analytics.as_ref().unwrap();
    let m = analytics.metrics().await;
    assert!(m.lag.values().any(|l| l.unwrap_or(0) > 0), "{m:?}");
    let inventory_group = h.options.inventory.group.clone();
    until("the inventory consumer to keep up", DEADLINE, || async {
        h.lag(&inventory_group, h.order_topic()).await == 0
    })
    .await;

    // After the burst the backlog drains to zero, on the transactional
    // inventory topic too (the consumer commits past the commit markers).
    until("analytics lag to drain", DEADLINE, || async {
        h.lag(&group, h.order_topic()).await == 0 && h.lag(&group, h.inventory_topic()).await == 0
    })
    .await;
    let cli = cli_lag(&group);
    assert_eq!(
        cli, 0,
        "kafka-consumer-groups --describe: lag {cli} after the drain"
    );
    let t = analytics.totals();
    assert_eq!((t.orders, t.inventory_events), (N as u64, N as u64));
    system.stop().await;
}

/// How the analytics group is rewound between the two runs.
#[derive(Clone, Copy)]
enum Rewind {
    OurCommand,
    KafkaCli,
}

async fn replay_after_reset(test: &str, rewind: Rewind) {
    const N: usize = 400;
    let h = harness(test).await;
    let mut system = h.start(StreamingPart::All).await;
    let group = h.options.analytics.group.clone();
    let topics = h.both_topics();
    h.produce(N).await;
    let analytics = system.analytics.take().unwrap();
    until("the first run to count everything", DEADLINE, async || {
        let t = analytics.totals();
        t.orders == N as u64 && t.inventory_events == N as u64
    })
    .await;
    let first = analytics.totals();

    // A running group is refused.
    let refused = offsets::reset(&h.transport, &group, &topics, ResetTarget::Earliest)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("stop its consumers first"), "{refused}");

    analytics.stop().await;
    match rewind {
        Rewind::OurCommand => {
            let done = offsets::reset(&h.transport, &group, &topics, ResetTarget::Earliest)
                .await
                .unwrap();
            assert_eq!(done.len(), 2);
            assert!(done.iter().all(|(_, ps)| ps.iter().all(|p| p.offset == 0)));
        }
        Rewind::KafkaCli => {
            kafka_consumer_groups(&[
                "--group",
                &group,
                "--topic",
                &topics[0],
                "--topic",
                &topics[1],
                "--reset-offsets",
                "--to-earliest",
                "--execute",
            ]);
        }
    }
    let lag = offsets::lag(&h.transport, &group, &topics).await.unwrap();
    assert_eq!(lag[0].total(), N as i64, "every order is unread again");
    assert!(
        lag[1].total() >= N as i64,
        "every inventory event is unread again (plus commit markers): {}",
        lag[1].total()
    );

    let replay = AnalyticsConsumer::start(&h.transport, &h.options.analytics)
        .await
        .unwrap();
    until("the replay to count everything", DEADLINE, async || {
        let t = replay.totals();
        t.orders == N as u64 && t.inventory_events == N as u64
    })
    .await;
    assert_eq!(replay.totals(), first, "a replay gives identical totals");
    replay.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_with_our_command_replays_identical_totals() {
    replay_after_reset("replay-ours", Rewind::OurCommand).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_with_kafkas_cli_replays_identical_totals() {
    replay_after_reset("replay-cli", Rewind::KafkaCli).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_dead_lettered_and_counted() {
    let h = harness("malformed").await;
    let system = h.start(StreamingPart::All).await;
    let bad_orders: [&[u8]; 3] = [
        b"not json",
        // No item. (`order-1` and a float `ts` are an order: see below.)
        br#"{"order_id":"order-1","qty":1,"ts":1.5}"#,
        br#"{"order_id":"ORD-00000000ABCD","item_id":"item-1","qty":0,"ts":1}"#,
    ];
    for (i, body) in bad_orders.iter().enumerate() {
        h.publish_raw(&Route::ORDER_PLACED, &format!("bad-{i}"), body)
            .await;
    }
    h.publish_raw(&Route::INVENTORY_RESERVED, "bad-inv", b"{\"status\":")
        .await;
    h.produce(100).await;

    let analytics = system.analytics.as_ref().unwrap();
    until(
        "the valid events to flow past the bad ones",
        DEADLINE,
        async || {
            let t = analytics.totals();
            t.orders == 100 && t.inventory_events == 100 && t.malformed == 4
        },
    )
    .await;
    assert_eq!(system.inventory.as_ref().unwrap().counts().malformed, 3);

    let order_dlq = h
        .reader(&Route::new(KafkaTransport::dead_letter_topic(
            h.order_topic(),
        )))
        .await;
    let inventory_dlq = h
        .reader(&Route::new(KafkaTransport::dead_letter_topic(
            h.inventory_topic(),
        )))
        .await;
    until("the dead letters", DEADLINE, async || {
        order_dlq.count() == 3 && inventory_dlq.count() == 1
    })
    .await;
    for m in order_dlq.messages().iter().chain(&inventory_dlq.messages()) {
        assert!(m.headers.contains_key(headers::DEATH_REASON), "{m:?}");
    }
    let bodies: HashSet<Vec<u8>> = order_dlq
        .messages()
        .iter()
        .map(|m| m.body.to_vec())
        .collect();
    assert_eq!(bodies, bad_orders.iter().map(|b| b.to_vec()).collect());
    let events = h.reader(&Route::INVENTORY_RESERVED).await;
    until(
        "the inventory events of the valid orders",
        DEADLINE,
        async || events.count() >= 101,
    )
    .await;
    assert_eq!(events.count(), 101, "100 events and the bad record");
    system.stop().await;
}

/// An `order_id` of 700 KB: the dead letter's reason used to quote it
/// whole, the dead-letter record outgrew the broker's limit, and the
/// partition stalled behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_poison_is_dead_lettered_with_a_bounded_reason_and_the_partition_moves_on() {
    const HUGE: usize = 700 * 1024;
    let h = harness("oversized").await;
    let system = h.start(StreamingPart::All).await;
    let key = campusfood::core::OrderId::generate().to_string();
    let poison = format!(
        r#"{{"order_id": "{}", "item_id": "item-1", "qty": 1, "ts": 1764600000.5}}"#,
        "A".repeat(HUGE)
    );
    // Both on one key, so in one partition: the valid order waits behind
    // the poison.
    h.publish_raw(&Route::ORDER_PLACED, &key, poison.as_bytes())
        .await;
    let valid =
        format!(r#"{{"order_id": "{key}", "item_id": "item-1", "qty": 1, "ts": 1764600000.5}}"#);
    h.publish_raw(&Route::ORDER_PLACED, &key, valid.as_bytes())
        .await;

    let events = h.reader(&Route::INVENTORY_RESERVED).await;
    until("the valid order's inventory event", DEADLINE, async || {
        events.count() == 1
    })
    .await;
    assert_eq!(events.messages()[0].key.as_deref(), Some(key.as_str()));
    let dlq = h
        .reader(&Route::new(KafkaTransport::dead_letter_topic(
            h.order_topic(),
        )))
        .await;
    until(
        "the poison in the dead-letter topic",
        DEADLINE,
        async || dlq.count() == 1,
    )
    .await;
    let dead = &dlq.messages()[0];
    let reason = &dead.headers[headers::DEATH_REASON];
    assert!(reason.len() <= 1024, "{} bytes", reason.len());
    assert!(reason.contains("order_id"), "{reason}");
    assert!(reason.contains(&format!("…({HUGE} bytes)")), "{reason}");
    assert_eq!(dead.body.len(), poison.len(), "the record, whole");
    let analytics = system.analytics.as_ref().unwrap();
    until("analytics counts both", DEADLINE, async || {
        let t = analytics.totals();
        t.orders == 1 && t.malformed == 1
    })
    .await;
    system.stop().await;
}

/// What the original Part C producer writes: `json.dumps` of
/// `{'order_id': f"order-{i}", 'item_id': …, 'qty': …, 'ts': time.time()}`
/// keyed by the order id (float seconds, ids reused in every burst); and
/// what the original inventory consumer writes to `inventory-events` (the
/// order plus `status`). Orders and events, never malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_by_the_original_services_are_decided_and_counted() {
    const N: usize = 50;
    let h = harness("originals").await;
    let system = h.start(StreamingPart::All).await;
    for i in 1..=N {
        let value = format!(
            r#"{{"order_id": "order-{i}", "item_id": "item-{}", "qty": {}, "ts": 1764600000.{:06}}}"#,
            1 + i % 50,
            1 + i % 5,
            i * 7919
        );
        h.publish_raw(
            &Route::ORDER_PLACED,
            &format!("order-{i}"),
            value.as_bytes(),
        )
        .await;
    }
    let original_event = r#"{"order_id": "order-legacy-1", "item_id": "item-3", "qty": 2, "ts": 1764600000.25, "status": "Failure"}"#;
    h.publish_raw(
        &Route::INVENTORY_RESERVED,
        "order-legacy-1",
        original_event.as_bytes(),
    )
    .await;

    let analytics = system.analytics.as_ref().unwrap();
    until("every order decided and counted", DEADLINE, async || {
        let t = analytics.totals();
        t.orders == N as u64 && t.inventory_events == N as u64 + 1
    })
    .await;
    let t = analytics.totals();
    assert_eq!(t.malformed, 0, "{t:?}");
    assert_eq!(t.duplicates_dropped, 0, "{t:?}");
    let counts = system.inventory.as_ref().unwrap().counts();
    assert_eq!(counts.malformed, 0, "{counts:?}");
    assert_eq!(counts.decided, N as u64, "{counts:?}");
    let events = h.reader(&Route::INVENTORY_RESERVED).await;
    until("the inventory events", DEADLINE, async || {
        events.count() == N + 1
    })
    .await;
    let by_order = events.inventory_events();
    for i in 1..=N {
        let e = &by_order[&campusfood::core::OrderId::parse(&format!("order-{i}")).unwrap()];
        assert_eq!(e.len(), 1, "order-{i} once");
        // The order's time, kept: float seconds read as milliseconds.
        assert_eq!(
            e[0].ts,
            1_764_600_000_000 + (i as u64 * 7919) / 1000,
            "order-{i}"
        );
    }
    // `GET /health` answers as the original services did.
    let health: serde_json::Value = reqwest::get(format!("http://{}/health", analytics.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["service"], "analytics-consumer", "{health}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_mode_decides_every_order() {
    const N: usize = 300;
    let mut h = harness("alo").await;
    h.options.inventory.exactly_once = false;
    h.options.inventory.workers = 2;
    let system = h.start(StreamingPart::All).await;
    let orders = h.produce(N).await;
    let analytics = system.analytics.as_ref().unwrap();
    until("every outcome", DEADLINE, async || {
        analytics.totals().inventory_events == N as u64
    })
    .await;
    let t = analytics.totals();
    let predicted = predicted_failures(&orders, h.options.inventory.fail_rate);
    assert_eq!(t.failures, predicted.len() as u64);
    assert_eq!(t.successes + t.failures, N as u64);
    system.stop().await;
}

// ---------------------------------------------------------------------------
// kill -9 of the inventory consumer in the middle of a burst.

/// Set (to `<suffix> <data dir>`) only in the child process.
const CHILD_ENV: &str = "STREAMING_KAFKA_CHILD";
/// The child-mode test, as `--exact` names it.
const CHILD_TEST: &str = "child_inventory_consumer";
/// Static membership, so the restarted child gets its partitions back at
/// once instead of after the killed one's session timeout.
const CHILD_INSTANCE: &str = "inventory-child";
/// Pause per order in the child, so the burst is still running at the kill.
const CHILD_THROTTLE: Duration = Duration::from_millis(2);

/// Child mode. Does nothing in a normal test run (`STREAMING_KAFKA_CHILD`
/// unset): it exists so that [`sigkill_mid_burst_keeps_each_order_exactly_once`]
/// can run the inventory consumer in a process it can SIGKILL.
#[test]
fn child_inventory_consumer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (suffix, dir) = spec.split_once(' ').unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut h = harness_in(suffix, dir.into()).await;
        h.options.inventory.group_instance_id = Some(CHILD_INSTANCE.to_owned());
        h.options.inventory.throttle = CHILD_THROTTLE;
        // Small transactions, so events become visible gradually.
        h.options.inventory.max_batch = 50;
        let _system = h.start(StreamingPart::Inventory).await;
        println!("READY");
        std::future::pending::<()>().await;
    });
}

fn spawn_child(suffix: &str, dir: &std::path::Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{suffix} {}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("READY") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(DEADLINE)
        .expect("the child inventory consumer did not start");
    child
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "not SIGKILLed: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_keeps_each_order_exactly_once() {
    const N: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let suffix = unique("kill9");
    let mut h = harness_in(&suffix, dir.path().to_path_buf()).await;
    h.delete_topics_when_dropped(&suffix);
    let events = h.reader(&Route::INVENTORY_RESERVED).await;
    let orders = h.produce(N).await;

    let mut child = spawn_child(&suffix, dir.path());
    until(
        "the child to be part-way through the burst",
        DEADLINE,
        async || events.count() >= 300,
    )
    .await;
    kill9(&mut child);
    let at_kill = events.count();
    assert!(
        at_kill < N,
        "the burst was over before the kill ({at_kill})"
    );

    let mut child = spawn_child(&suffix, dir.path());
    until(
        "every order to be decided after the restart",
        DEADLINE,
        async || events.count() >= N,
    )
    .await;
    let group = h.options.inventory.group.clone();
    until("the group to commit the whole burst", DEADLINE, || async {
        h.lag(&group, h.order_topic()).await == 0
    })
    .await;
    kill9(&mut child);
    // Everything committed is visible to the reader by now; anything more
    // would be a duplicate. This grace period is the check itself: there is
    // no condition to wait on for a duplicate that must *not* arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let by_order = events.inventory_events();
    assert_eq!(by_order.len(), N, "every order decided");
    assert_eq!(
        events.count(),
        N,
        "each order exactly once in inventory-events"
    );
    println!("killed after {at_kill} of {N} events; {N} events, no duplicates");

    // The ledger took stock once per reserved order, and agrees with the
    // events.
    let ledger = RedbLedger::open(
        dir.path().join(names::file(names::STREAMING_LEDGER)),
        &h.config.stock,
    )
    .unwrap();
    let records = ledger.records().await.unwrap();
    let mut reserved: BTreeMap<_, u64> = BTreeMap::new();
    for r in &records {
        let status = by_order[&r.order_id][0].status;
        if let ReserveOutcome::Reserved { .. } = r.outcome {
            *reserved.entry(r.item.clone()).or_default() += u64::from(r.qty.get());
            assert_eq!(status, InventoryStatus::Success);
        } else {
            assert_eq!(status, InventoryStatus::Failure);
        }
    }
    let stock = ledger.stock().await.unwrap();
    for (item, initial) in h.config.stock.levels() {
        let taken = reserved.get(item).copied().unwrap_or(0);
        assert_eq!(
            stock[item] + taken,
            *initial,
            "{item}: stock + reserved = initial"
        );
    }
    let injected = predicted_failures(&orders, h.options.inventory.fail_rate);
    assert_eq!(
        records.len(),
        N - injected.len(),
        "one ledger record per non-injected order"
    );
    assert_eq!(
        ledger.reservation_count().await.unwrap(),
        records.len() as u64
    );
}

/// A shipped `streaming_kafka inventory` process on `h`'s topics and
/// group, its ledger in Postgres schema `schema`, its log in `log`.
fn spawn_inventory_process(h: &Harness, schema: &str, stock: &str, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(campusfood_testkit::example_binary("streaming_kafka"))
        .arg("inventory")
        .env("ORDER_TOPIC", h.order_topic())
        .env("INVENTORY_TOPIC", h.inventory_topic())
        .env("GROUP_ID", &h.options.inventory.group)
        .env("FAIL_RATE", "0")
        // Three consumers each: the two processes split the order topic's
        // six partitions, so the one killed owns some.
        .env("INVENTORY_WORKERS", "3")
        .env("CAMPUSFOOD_STOCK", stock)
        .env(
            "CAMPUSFOOD_DATABASE_URL",
            campusfood_testkit::postgres::url(),
        )
        .env("CAMPUSFOOD_DATABASE_SCHEMA", schema)
        .env("CAMPUSFOOD_DATA_DIR", std::env::temp_dir().join("unused"))
        .env("RUST_LOG", "warn")
        .env_remove("TRANSACTIONAL_ID")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Kills the children when dropped (also when the test fails).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inventory_processes_on_postgres_share_a_burst_and_survive_a_sigkill() {
    const N: usize = 10_000;
    const PER_ITEM: u64 = 100;
    let h = harness("scale").await;
    let schema = campusfood_testkit::postgres::TestSchema::new("scale_c");
    // Postgres must answer before the processes start: without it they
    // exit, and this would fail later on a timeout instead of saying
    // `scripts/brokers.sh up postgres`.
    drop(schema.session().await);
    let logs = tempfile::tempdir().unwrap();
    let stock: String = (1..=ITEMS)
        .map(|i| format!("item-{i}={PER_ITEM}"))
        .collect::<Vec<_>>()
        .join(",");
    let events = h.reader(&Route::INVENTORY_RESERVED).await;
    let orders = h.produce(N).await;

    // Two processes in one group, as a user scales out: default (per
    // process) transactional ids, so neither fences the other.
    let log = |n: usize| logs.path().join(format!("inventory-{n}.log"));
    let mut children = Children(vec![
        spawn_inventory_process(&h, schema.name(), &stock, &log(0)),
        spawn_inventory_process(&h, schema.name(), &stock, &log(1)),
    ]);
    let report = |logs: &tempfile::TempDir| {
        let mut all = String::new();
        for entry in std::fs::read_dir(logs.path()).unwrap() {
            let path = entry.unwrap().path();
            all.push_str(&format!(
                "--- {}\n{}\n",
                path.display(),
                std::fs::read_to_string(&path).unwrap_or_default()
            ));
        }
        all
    };
    until(
        "both processes to be part-way through the burst",
        DEADLINE,
        async || events.count() >= N / 5,
    )
    .await;
    kill9(&mut children.0[0]);
    let at_kill = events.count();
    assert!(
        at_kill < N,
        "the burst was over before the kill ({at_kill})"
    );
    children
        .0
        .push(spawn_inventory_process(&h, schema.name(), &stock, &log(2)));

    let deadline = Instant::now() + Duration::from_secs(150);
    while events.count() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} orders decided; logs:\n{}",
            events.count(),
            report(&logs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let group = h.options.inventory.group.clone();
    until("the group to commit the whole burst", DEADLINE, || async {
        h.lag(&group, h.order_topic()).await == 0
    })
    .await;
    // No duplicate can arrive once the group committed everything; this
    // grace period is the check that none does (nothing to wait on).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let by_order = events.inventory_events();
    assert_eq!(by_order.len(), N, "every order decided");
    assert_eq!(
        events.count(),
        N,
        "each order exactly once in inventory-events"
    );
    let logs_text = report(&logs);
    assert!(
        !logs_text.contains("fenced") && !logs_text.contains("failed fatally"),
        "an inventory process was fenced:\n{logs_text}"
    );

    // For no item do the successes exceed its stock; the shared ledger
    // agrees with the events.
    let mut sold: BTreeMap<String, u64> = BTreeMap::new();
    for e in by_order.values().map(|v| &v[0]) {
        if e.status == InventoryStatus::Success {
            *sold.entry(e.item_id.to_string()).or_default() += u64::from(e.qty.get());
        }
    }
    let session = schema.session().await;
    let rows = session
        .query(
            "SELECT item, level FROM stock WHERE ledger = $1",
            &[&names::STREAMING_LEDGER],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), ITEMS as usize);
    for row in rows {
        let (item, level): (String, i64) = (row.get(0), row.get(1));
        let sold = sold.get(&item).copied().unwrap_or(0);
        assert!(sold <= PER_ITEM, "{item}: sold {sold} of {PER_ITEM}");
        assert_eq!(
            sold + u64::try_from(level).unwrap(),
            PER_ITEM,
            "{item}: stock + sold = initial"
        );
    }
    let decided: i64 = session
        .query_one(
            "SELECT count(*) FROM reservations WHERE ledger = $1",
            &[&names::STREAMING_LEDGER],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(decided, N as i64, "one ledger decision per order");
    let failures = by_order
        .values()
        .filter(|v| v[0].status == InventoryStatus::Failure)
        .count();
    assert!(
        failures > 0,
        "small stocks must run out ({} orders)",
        orders.len()
    );
    println!(
        "killed one of two processes after {at_kill} of {N} events; {N} decided once each, {failures} out of stock"
    );
}

/// The shipped example's `dlq` subcommand on `h`'s topics; its stdout.
fn dlq_command(h: &Harness, args: &[&str]) -> String {
    let out = Command::new(campusfood_testkit::example_binary("streaming_kafka"))
        .arg("dlq")
        .args(args)
        .env("ORDER_TOPIC", h.order_topic())
        .env("INVENTORY_TOPIC", h.inventory_topic())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dlq {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_dlq_commands_list_show_and_replay_dead_letters() {
    let h = harness("dlqcli").await;
    let system = h.start(StreamingPart::Inventory).await;
    h.publish_raw(&Route::ORDER_PLACED, "bad-0", b"not json")
        .await;
    let mut letters = Vec::new();
    until("the dead letter", DEADLINE, async || {
        letters = h
            .transport
            .dead_letters(&Route::ORDER_PLACED, 10)
            .await
            .unwrap();
        !letters.is_empty()
    })
    .await;
    // Stopped, so that the replayed record is not dead-lettered again.
    system.stop().await;
    let (id, reason) = (&letters[0].id, &letters[0].reason);
    let order_dlq = KafkaTransport::dead_letter_topic(h.order_topic());
    let inventory_dlq = KafkaTransport::dead_letter_topic(h.inventory_topic());

    let listed = dlq_command(&h, &["list"]);
    assert!(
        listed.contains(&format!(
            "1 dead letter(s) on {order_dlq}\n{id}\tattempts=1\t{reason}\tnot json\n"
        )),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("0 dead letter(s) on {inventory_dlq}\n")),
        "{listed}"
    );
    let shown = dlq_command(&h, &["show", id, "--topic", h.order_topic()]);
    assert!(shown.contains(&format!("reason:   {reason}\n")), "{shown}");
    let replayed = dlq_command(&h, &["replay-all"]);
    assert!(
        replayed.contains(&format!(
            "replayed 1 from {order_dlq} to {}",
            h.order_topic()
        )),
        "{replayed}"
    );
    let listed = dlq_command(&h, &["list", "--topic", &order_dlq]);
    assert_eq!(listed, format!("0 dead letter(s) on {order_dlq}\n"));
}

/// The shipped example's `trace ORDER_ID --json` on `h`'s topics and
/// ledger: its exit code, its JSON (`Null` when stdout is not JSON) and
/// stderr.
fn trace_command(h: &Harness, id: &str) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(campusfood_testkit::example_binary("streaming_kafka"))
        .args(["trace", id, "--json"])
        .env("ORDER_TOPIC", h.order_topic())
        .env("INVENTORY_TOPIC", h.inventory_topic())
        .env("CAMPUSFOOD_DATA_DIR", &h.config.data_dir)
        .env_remove("CAMPUSFOOD_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where Kafka's own console consumer finds the first `n` records of
/// `topic` (read committed): key → (partition, offset) of each.
fn placed_by_kafkas_cli(topic: &str, n: usize) -> BTreeMap<String, Vec<(i64, i64)>> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/kafka-console-consumer"
    );
    let out = Command::new(script)
        .args(["--bootstrap-server", "127.0.0.1:9092", "--topic", topic])
        .args(["--from-beginning", "--isolation-level", "read_committed"])
        .args(["--max-messages", &n.to_string(), "--timeout-ms", "20000"])
        .args(["--formatter-property", "print.key=true"])
        .args(["--formatter-property", "print.partition=true"])
        .args(["--formatter-property", "print.offset=true"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut placed: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for line in stdout.lines() {
        let mut cols = line.split('\t');
        let (Some(p), Some(o), Some(key)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let (Some(p), Some(o)) = (p.strip_prefix("Partition:"), o.strip_prefix("Offset:")) else {
            continue;
        };
        placed
            .entry(key.to_owned())
            .or_default()
            .push((p.parse().unwrap(), o.parse().unwrap()));
    }
    assert_eq!(
        placed.values().map(Vec::len).sum::<usize>(),
        n,
        "kafka-console-consumer on {topic}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    placed
}

/// The hops of `kind` in a trace's JSON.
fn hops<'a>(trace: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    trace["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == kind)
        .collect()
}

fn place(hop: &serde_json::Value) -> (i64, i64) {
    (
        hop["partition"].as_i64().unwrap(),
        hop["offset"].as_i64().unwrap(),
    )
}

/// `streaming_kafka trace`, the shipped binary: an order found in both
/// topics where Kafka's own console consumer finds it, the decision from
/// the inventory event while the consumer holds the ledger and from the
/// ledger once it stopped; the original producer's `order-<i>`; a poison
/// order's dead letter with its origin, before and after its replay; an
/// unknown id (1), a malformed id and an unreachable broker (2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_trace_finds_an_order_in_every_topic_the_ledger_and_the_dead_letters() {
    let h = harness("trace").await;
    let system = h.start(StreamingPart::Inventory).await;
    let orders = h.produce(5).await;
    let original = "order-17";
    h.publish_raw(
        &Route::ORDER_PLACED,
        original,
        br#"{"order_id": "order-17", "item_id": "item-3", "qty": 2, "ts": 1764600000.25}"#,
    )
    .await;
    let poison = campusfood::core::OrderId::generate().to_string();
    let poison_body = format!(r#"{{"order_id":"{poison}","item_id":"item-1","qty":0,"ts":1}}"#);
    h.publish_raw(&Route::ORDER_PLACED, &poison, poison_body.as_bytes())
        .await;
    let events = h.reader(&Route::INVENTORY_RESERVED).await;
    until("6 inventory events", DEADLINE, async || events.count() == 6).await;
    until("the poison's dead letter", DEADLINE, async || {
        let letters = h.transport.dead_letters(&Route::ORDER_PLACED, 10).await;
        letters.unwrap().len() == 1
    })
    .await;
    let in_orders = placed_by_kafkas_cli(h.order_topic(), 7);
    let in_events = placed_by_kafkas_cli(h.inventory_topic(), 6);
    let statuses: BTreeMap<String, InventoryStatus> = events
        .inventory_events()
        .into_iter()
        .map(|(id, e)| (id.to_string(), e[0].status))
        .collect();

    // Not failed by injection, so the ledger has its decision.
    let order = orders
        .iter()
        .map(|o| o.order_id.to_string())
        .find(|id| decide(DEFAULT_SEED, id, 1) >= 0.05)
        .unwrap();
    let (code, running, stderr) = trace_command(&h, &order);
    assert_eq!(code, Some(0), "{stderr}");
    let placed_order = hops(&running, "order");
    assert_eq!(placed_order.len(), 1, "{running:#}");
    assert_eq!(placed_order[0]["topic"], h.order_topic());
    assert_eq!(vec![place(placed_order[0])], in_orders[&order]);
    assert_eq!(placed_order[0]["matched_by"], "key");
    assert_eq!(placed_order[0]["body"]["order_id"], order.as_str());
    let decided = hops(&running, "inventory_event");
    assert_eq!(decided.len(), 1, "{running:#}");
    assert_eq!(decided[0]["topic"], h.inventory_topic());
    assert_eq!(vec![place(decided[0])], in_events[&order]);
    let status = serde_json::to_value(statuses[&order]).unwrap();
    assert_eq!(decided[0]["status"], status);
    assert!(hops(&running, "dead_letter").is_empty(), "{running:#}");
    assert!(
        placed_order[0]["timestamp_ms"].as_i64() <= decided[0]["timestamp_ms"].as_i64(),
        "{running:#}"
    );
    // The running consumer holds the redb file: the event decides.
    assert_eq!(running["ledger"]["peek"]["state"], "in_use", "{running:#}");
    assert_eq!(running["decision"]["source"], "inventory_event");
    assert_eq!(running["decision"]["status"], status);
    let order_scan = running["scanned"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["topic"] == h.order_topic())
        .unwrap();
    assert_eq!(order_scan["records"], 7, "every record of the topic read");

    system.stop().await;
    let (code, stopped, stderr) = trace_command(&h, &order);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stopped["ledger"]["peek"]["state"], "decided", "{stopped:#}");
    assert_eq!(
        stopped["ledger"]["peek"]["record"]["order_id"],
        order.as_str()
    );
    assert_eq!(stopped["decision"]["source"], "ledger");
    assert_eq!(stopped["decision"]["status"], status);

    // The original producer's record: an `order-<i>` id and float seconds.
    let (code, seed, stderr) = trace_command(&h, original);
    assert_eq!(code, Some(0), "{stderr}");
    let (o, e) = (hops(&seed, "order"), hops(&seed, "inventory_event"));
    assert_eq!((o.len(), e.len()), (1, 1), "{seed:#}");
    assert_eq!(vec![place(o[0])], in_orders[original]);
    assert_eq!(vec![place(e[0])], in_events[original]);

    // The poison: its record, and its dead letter pointing back at it.
    let (code, dead, stderr) = trace_command(&h, &poison);
    assert_eq!(code, Some(0), "{stderr}");
    let (o, d) = (hops(&dead, "order"), hops(&dead, "dead_letter"));
    assert_eq!((o.len(), d.len()), (1, 1), "{dead:#}");
    assert!(hops(&dead, "inventory_event").is_empty(), "{dead:#}");
    assert_eq!(vec![place(o[0])], in_orders[&poison]);
    let letter = &d[0]["dead_letter"];
    assert_eq!(
        d[0]["topic"],
        KafkaTransport::dead_letter_topic(h.order_topic())
    );
    assert!(
        letter["reason"].as_str().unwrap().contains("qty"),
        "{letter}"
    );
    assert_eq!(letter["attempts"], 1);
    let (p, off) = place(o[0]);
    assert_eq!(letter["origin"], format!("{} {p}/{off}", h.order_topic()));
    assert_eq!(letter["replayed"], false);
    assert_eq!(d[0]["headers"][headers::DEATH_REASON], letter["reason"]);
    // Replayed: marked so, and the order topic holds it twice.
    let id = letter["id"].as_str().unwrap();
    dlq_command(&h, &["replay", id, "--topic", h.order_topic()]);
    let (code, replayed, stderr) = trace_command(&h, &poison);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(hops(&replayed, "order").len(), 2, "{replayed:#}");
    assert_eq!(
        hops(&replayed, "dead_letter")[0]["dead_letter"]["replayed"],
        true
    );

    // Found nowhere: 1, saying so. Not an order id, or no broker: 2.
    let unknown = campusfood::core::OrderId::generate().to_string();
    let (code, nowhere, stderr) = trace_command(&h, &unknown);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(nowhere["found"], false);
    assert!(
        stderr.contains(&format!("order {unknown} not found")),
        "{stderr}"
    );
    let (code, _, stderr) = trace_command(&h, "not an id!");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("order_id must be"), "{stderr}");
    let out = Command::new(campusfood_testkit::example_binary("streaming_kafka"))
        .args(["trace", &order])
        .env("BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("CAMPUSFOOD_KAFKA_CONNECT_ATTEMPTS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("scripts/brokers.sh up kafka"), "{said}");
}

/// A free loopback port: bound, read, released.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// `GET url` parsed as Prometheus text (`None` while nothing answers; the
/// test fails on a malformed line).
async fn prometheus(url: &str) -> Option<campusfood_testkit::prometheus::Scrape> {
    let resp = reqwest::get(url).await.ok()?;
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let text = resp.text().await.ok()?;
    Some(
        campusfood_testkit::prometheus::Scrape::parse(&text)
            .unwrap_or_else(|e| panic!("GET {url} is not Prometheus text: {e}\n{text}")),
    )
}

/// Part C as users run it, one consumer per process: `streaming_kafka
/// inventory --metrics-port P` and `streaming_kafka analytics`. After a
/// burst and one poison record, the inventory consumer's `/metrics` counts
/// its decisions — exactly the seeded draw's injected failures, the rest
/// reserved — its deliveries of `order.placed` (one dead letter) and their
/// handling time, and its group's
/// lag down to 0; the analytics consumer's `/prometheus` counts the orders
/// and its deliveries and shows its lag, while its `/metrics` stays the
/// contract's JSON. The names are spelled out: a rename must fail here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_consumers_serve_prometheus_metrics() {
    const N: usize = 40;
    const FAIL_RATE: f64 = 0.25;
    let h = harness("prom").await;
    let dir = tempfile::tempdir().unwrap();
    let (inventory_port, analytics_port) = (free_port(), free_port());
    let (inventory_group, analytics_group) = (
        h.options.inventory.group.clone(),
        h.options.analytics.group.clone(),
    );
    let spawn = |args: &[&str], group: &str, log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        Command::new(campusfood_testkit::example_binary("streaming_kafka"))
            .args(args)
            .current_dir(dir.path())
            .env("ORDER_TOPIC", h.order_topic())
            .env("INVENTORY_TOPIC", h.inventory_topic())
            .env("GROUP_ID", group)
            .env("FAIL_RATE", FAIL_RATE.to_string())
            .env("HTTP_PORT", analytics_port.to_string())
            .env("REPORT_INTERVAL_SEC", "0")
            .env("RUST_LOG", "warn")
            .env_remove("CAMPUSFOOD_STOCK")
            .env_remove("CAMPUSFOOD_DATABASE_URL")
            .env_remove("TRANSACTIONAL_ID")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let port = inventory_port.to_string();
    let _children = Children(vec![
        spawn(
            &["inventory", "--metrics-port", &port],
            &inventory_group,
            "inventory.log",
        ),
        spawn(&["analytics"], &analytics_group, "analytics.log"),
    ]);
    let logs = || {
        ["inventory.log", "analytics.log"]
            .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
            .join("\n")
    };
    let inventory_url = format!("http://127.0.0.1:{inventory_port}/metrics");
    let analytics_url = format!("http://127.0.0.1:{analytics_port}/prometheus");
    let orders = h.produce(N).await;
    // Poison: the inventory consumer dead-letters it; analytics skips it.
    h.publish_raw(&Route::ORDER_PLACED, "poison", b"not json")
        .await;
    let injected = predicted_failures(&orders, FAIL_RATE).len() as f64;
    assert!(injected > 0.0, "the draw fails some of {N} orders");

    let ack = [("route", "order.placed"), ("disposition", "ack")];
    let mut inv = None;
    let mut ana = None;
    until(
        &format!("both consumers to count {N} orders"),
        DEADLINE,
        async || {
            inv = prometheus(&inventory_url).await;
            ana = prometheus(&analytics_url).await;
            let (Some(i), Some(a)) = (&inv, &ana) else {
                return false;
            };
            i.sum("campusfood_deliveries_total", &ack) >= Some(N as f64)
                && i.sum(
                    "campusfood_dead_letters_total",
                    &[("route", "order.placed")],
                ) == Some(1.0)
                && a.sum("campusfood_orders_placed_total", &[]) == Some(N as f64)
        },
    )
    .await;
    let (i, a) = (inv.unwrap(), ana.unwrap());
    let context = || format!("inventory:\n{i:?}\nanalytics:\n{a:?}\nlogs:\n{}", logs());

    let outcome = |o| [("outcome", o)];
    assert_eq!(i.kind("campusfood_order_outcomes_total"), Some("counter"));
    assert_eq!(
        i.sum("campusfood_order_outcomes_total", &outcome("reserved")),
        Some(N as f64 - injected),
        "{}",
        context()
    );
    // Counted per decision: an order decided again after an aborted
    // transaction is counted again.
    assert!(
        i.sum(
            "campusfood_order_outcomes_total",
            &outcome("injected_failure")
        ) >= Some(injected),
        "{}",
        context()
    );
    let placed = [("route", "order.placed")];
    let dead = [("route", "order.placed"), ("disposition", "dead_letter")];
    assert_eq!(
        i.sum("campusfood_dead_letters_total", &placed),
        Some(1.0),
        "{}",
        context()
    );
    assert_eq!(i.sum("campusfood_deliveries_total", &dead), Some(1.0));
    assert!(i.sum("campusfood_redeliveries_total", &placed).is_some());
    assert_eq!(
        i.kind("campusfood_handler_duration_seconds"),
        Some("histogram")
    );
    let handled = [("handler", "order.placed")];
    assert!(
        i.sum("campusfood_handler_duration_seconds_count", &handled) >= Some(N as f64),
        "{}",
        context()
    );

    assert!(
        a.sum("campusfood_deliveries_total", &ack) >= Some(N as f64),
        "{}",
        context()
    );
    assert!(a.sum("campusfood_handler_duration_seconds_count", &handled) >= Some(N as f64));
    assert_eq!(a.kind("campusfood_consumer_lag"), Some("gauge"));

    // The lag gauges come from background refreshes (every second): they
    // reach 0 once both groups have committed the burst.
    let order_topic = h.order_topic().to_owned();
    let inventory_lag = [("group", inventory_group.as_str()), ("topic", &order_topic)];
    let analytics_lag = [("group", analytics_group.as_str()), ("topic", &order_topic)];
    until("both groups' lag gauges at 0", DEADLINE, async || {
        let (Some(i), Some(a)) = (
            prometheus(&inventory_url).await,
            prometheus(&analytics_url).await,
        ) else {
            return false;
        };
        i.sum("campusfood_consumer_lag", &inventory_lag) == Some(0.0)
            && a.sum("campusfood_consumer_lag", &analytics_lag) == Some(0.0)
    })
    .await;

    // The contract's /metrics is still its JSON.
    let json: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{analytics_port}/metrics"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    for field in [
        "orders_per_min",
        "inventory_events",
        "failures",
        "failure_rate_pct",
        "window_seconds",
        "generated_at",
    ] {
        assert!(json.get(field).is_some(), "/metrics lacks {field}: {json}");
    }
}
