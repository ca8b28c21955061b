//! The shipped example binaries run as users run them: one service per OS
//! process, several processes from one folder, several instances of a
//! service sharing one Postgres database, an instance SIGKILLed and
//! restarted, and the database unreachable at start-up and in the middle
//! of a run.
//!
//! The binaries are those `cargo test` (or `cargo build --examples`)
//! builds in `target/<profile>/examples/`. Each test uses free ports, its
//! own folder, its own RabbitMQ prefix and its own Postgres schema, and
//! removes them when it ends, also when it fails (the children are
//! SIGKILLed first, and the tails of their logs printed).
//!
//! Needs RabbitMQ (`scripts/brokers.sh up rabbitmq`) and PostgreSQL
//! (`scripts/brokers.sh up postgres`, `CAMPUSFOOD_TEST_DATABASE_URL`).

// With fewer features some tests are left out, and helpers only they use.
#![cfg_attr(
    not(all(feature = "http", feature = "rabbitmq", feature = "postgres")),
    allow(dead_code, unused_imports, unused_variables)
)]

mod helpers;
mod metrics;

use std::time::Duration;

use campusfood_testkit::postgres::{TestSchema, url as test_database_url};
use helpers::*;

/// How long a process may take to come up (debug builds, a busy machine).
const READY: Duration = Duration::from_secs(60);

/// Part B's three shipped processes from one folder (stock burger=100),
/// on RabbitMQ names of their own and free ports; order and inventory
/// healthy (notification serves no HTTP: orders reaching `notified` show
/// it is up).
#[cfg(feature = "rabbitmq")]
struct PartB {
    order_url: String,
    inventory_url: String,
}

#[cfg(feature = "rabbitmq")]
impl PartB {
    /// Starts the three with queue names under `test`.
    async fn start(c: &mut Cluster, test: &str) -> Self {
        Self::start_with(c, test, &[]).await
    }

    /// [`start`](Self::start), every process also given `extra`.
    async fn start_with(c: &mut Cluster, test: &str, extra: &[(String, String)]) -> Self {
        let bin = example("async_rabbitmq");
        let rabbit = RabbitNames::new(test);
        let (order_port, inventory_port) = (free_port(), free_port());
        let mut env = part_b_env(&rabbit, "burger=100", order_port, inventory_port);
        env.extend_from_slice(extra);
        c.rabbit = Some(rabbit);
        let order = c.start(c.spec("order", &bin, &["order"]).envs(&env));
        let inventory = c.start(c.spec("inventory", &bin, &["inventory"]).envs(&env));
        c.start(c.spec("notification", &bin, &["notification"]).envs(&env));
        let this = Self {
            order_url: base(order_port),
            inventory_url: base(inventory_port),
        };
        c.wait_healthy(order, &this.order_url, READY).await;
        c.wait_healthy(inventory, &this.inventory_url, READY).await;
        this
    }
}

/// Part A's three shipped processes from one folder (stock burger=100), on
/// free ports, healthy.
#[cfg(feature = "http")]
struct PartA {
    order_url: String,
    inventory_url: String,
    notification_url: String,
}

#[cfg(feature = "http")]
impl PartA {
    /// Starts inventory, notification, and the order service with
    /// `order_args` (its subcommand and flags), and waits until all three
    /// answer `/health`.
    async fn start(c: &mut Cluster, order_args: &[&str]) -> Self {
        Self::start_logging(c, order_args, "warn").await
    }

    /// [`start`](Self::start), the notification service logging at
    /// `notification_log` (`RUST_LOG`).
    async fn start_logging(c: &mut Cluster, order_args: &[&str], notification_log: &str) -> Self {
        let bin = example("sync_rest");
        let (order_port, inventory_port, notification_port) =
            (free_port(), free_port(), free_port());
        let env: Vec<(String, String)> = [
            ("CAMPUSFOOD_STOCK", "burger=100".to_owned()),
            ("CAMPUSFOOD_ORDER_PORT", order_port.to_string()),
            ("CAMPUSFOOD_INVENTORY_PORT", inventory_port.to_string()),
            (
                "CAMPUSFOOD_NOTIFICATION_PORT",
                notification_port.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let inventory = c.start(c.spec("inventory", &bin, &["inventory"]).envs(&env));
        let notification = c.start(
            c.spec("notification", &bin, &["notification"])
                .envs(&env)
                .env("RUST_LOG", notification_log),
        );
        let order = c.start(c.spec("order", &bin, order_args).envs(&env));
        let this = Self {
            order_url: base(order_port),
            inventory_url: base(inventory_port),
            notification_url: base(notification_port),
        };
        c.wait_healthy(inventory, &this.inventory_url, READY).await;
        c.wait_healthy(notification, &this.notification_url, READY)
            .await;
        c.wait_healthy(order, &this.order_url, READY).await;
        this
    }
}

/// The environment every Part B process of a test shares.
fn part_b_env(
    rabbit: &RabbitNames,
    stock: &str,
    order: u16,
    inventory: u16,
) -> Vec<(String, String)> {
    vec![
        ("CAMPUSFOOD_STOCK".into(), stock.into()),
        ("CAMPUSFOOD_RABBITMQ_PREFIX".into(), rabbit.prefix.clone()),
        ("CAMPUSFOOD_ORDER_PORT".into(), order.to_string()),
        ("CAMPUSFOOD_INVENTORY_PORT".into(), inventory.to_string()),
    ]
}

/// Postgres settings for a test's schema, at `url`.
fn pg_env(schema: &TestSchema, url: &str) -> Vec<(String, String)> {
    vec![
        ("CAMPUSFOOD_DATABASE_URL".into(), url.to_owned()),
        (
            "CAMPUSFOOD_DATABASE_SCHEMA".into(),
            schema.name().to_owned(),
        ),
    ]
}

/// Waits until every order of `ids` has a status in `done` on `base`,
/// failing at once if a process of `c` exits; on timeout, says how many
/// are left in which status.
async fn wait_statuses(
    c: &mut Cluster,
    base: &str,
    ids: &[String],
    done: &[&str],
    deadline: Duration,
) -> Result<(), String> {
    let end = std::time::Instant::now() + deadline;
    let mut pending: Vec<&String> = ids.iter().collect();
    loop {
        let mut left = Vec::new();
        let mut by_status = std::collections::BTreeMap::<String, usize>::new();
        for id in pending {
            let status = order_status(&c.client, base, id).await;
            if !status.as_deref().is_some_and(|s| done.contains(&s)) {
                left.push(id);
                *by_status.entry(format!("{status:?}")).or_default() += 1;
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > end {
            return Err(format!(
                "after {deadline:?}, {} of {} orders are not {done:?}: by status {by_status:?}, e.g. {:?}",
                left.len(),
                ids.len(),
                &left[..left.len().min(5)]
            ));
        }
        c.assert_all_running();
        pending = left;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Part B, one service per process, all three from one folder with the
/// default data directory (`./data`): each process opens only its own
/// redb file, so all three come up, and orders flow to `notified`.
#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_b_three_processes_from_one_folder() {
    let mut c = Cluster::new();
    let PartB {
        order_url,
        inventory_url,
    } = PartB::start(&mut c, "scale").await;
    c.assert_all_running();

    let mut ids = Vec::new();
    for _ in 0..20 {
        let (status, body) = place(&c.client, &order_url, "burger", 1).await;
        assert_eq!(status, 201, "POST /order: {body}");
        assert_eq!(body["status"], "placed", "{body}");
        ids.push(body["order_id"].as_str().expect("an order_id").to_owned());
    }
    wait_statuses(&mut c, &order_url, &ids, &["notified"], READY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stock(&c.client, &inventory_url, "burger").await, 80);
    // Where each order has been, across the three processes.
    let expected = [
        ("accepted", "order-service"),
        ("published", "order-service"),
        ("reserved", "inventory-service"),
        ("notified", "notification-service"),
    ];
    for id in &ids {
        let hops = timeline(&c.client, &order_url, id).await;
        let hops: Vec<(&str, &str)> = hops.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(hops, expected, "{id}");
    }
    let data = c.cwd().join("data");
    for file in [
        "async-orders.redb",
        "async-inventory.redb",
        "async-notified.redb",
    ] {
        assert!(
            data.join(file).is_file(),
            "{} is missing",
            data.join(file).display()
        );
    }
    c.assert_all_running();
}

/// `CAMPUSFOOD_DEFER_MS` reaches each Part B process's stores (their
/// start line says how they flush), orders flow with it, and a value that
/// is not a duration stops a process with an error naming the setting.
#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_b_defer_setting_reaches_every_process() {
    let mut c = Cluster::new();
    let defer = [
        ("CAMPUSFOOD_DEFER_MS".to_owned(), "20".to_owned()),
        // The start line, at INFO, says how the stores flush.
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ];
    let PartB { order_url, .. } = PartB::start_with(&mut c, "defer", &defer).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (status, body) = place(&c.client, &order_url, "burger", 1).await;
        assert_eq!(status, 201, "POST /order: {body}");
        ids.push(body["order_id"].as_str().expect("an order_id").to_owned());
    }
    wait_statuses(&mut c, &order_url, &ids, &["notified"], READY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for p in &c.procs {
        let out = p.output();
        assert!(
            out.contains("flush=SharedWithin(20ms)"),
            "a process does not flush as CAMPUSFOOD_DEFER_MS=20 says:\n{out}"
        );
    }

    for (value, expected) in [("-1", "--defer-ms must be"), ("soon", "invalid value")] {
        let spec = c
            .spec(
                &format!("bad-defer{value}"),
                &example("async_rabbitmq"),
                &["inventory"],
            )
            .env("CAMPUSFOOD_DEFER_MS", value);
        let i = c.start(spec);
        let status = c.procs[i].wait_exit(Duration::from_secs(30)).await;
        let out = c.procs[i].output();
        assert!(
            !status.success(),
            "CAMPUSFOOD_DEFER_MS={value}: {status}\n{out}"
        );
        assert!(
            out.contains(expected),
            "CAMPUSFOOD_DEFER_MS={value}: the error does not say `{expected}`:\n{out}"
        );
    }
}

/// Part A, one service per process, all three from one folder: 20 orders
/// confirmed synchronously. The notification service logs at the default
/// level: each order's line names it through the service's span, without
/// the spans made for the traces (their attributes go to the traces).
#[cfg(feature = "http")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_a_three_processes_from_one_folder() {
    let mut c = Cluster::new();
    let PartA {
        order_url,
        inventory_url,
        ..
    } = PartA::start_logging(&mut c, &["order"], "info").await;
    c.assert_all_running();

    let mut last = String::new();
    for _ in 0..20 {
        let (status, body) = place(&c.client, &order_url, "burger", 1).await;
        assert_eq!(status, 201, "POST /order: {body}");
        assert_eq!(body["status"], "confirmed", "{body}");
        let id = body["order_id"].as_str().expect("an order_id");
        let hops = timeline(&c.client, &order_url, id).await;
        let hops: Vec<(&str, &str)> = hops.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            hops,
            [
                ("accepted", "order-service"),
                ("reserved", "inventory-service"),
                ("notified", "notification-service")
            ],
            "{id}"
        );
        last = id.to_owned();
    }
    assert_eq!(stock(&c.client, &inventory_url, "burger").await, 80);

    // The log is written by a thread of its own: wait for the last line.
    let log = c.logs.join("notification.log");
    let named = format!("notify{{order_id={last} ");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    campusfood_testkit::until("the last order's log line", READY, async || {
        read()
            .lines()
            .any(|l| l.contains(&named) && l.contains("notification sent"))
    })
    .await;
    let lines = read();
    assert!(
        !lines.contains("otel.name") && !lines.contains("http.route"),
        "a trace span in the log lines: {lines}"
    );
    let data = c.cwd().join("data");
    for file in ["sync-inventory.redb", "sync-order-outbox.redb"] {
        assert!(
            data.join(file).is_file(),
            "{} is missing",
            data.join(file).display()
        );
    }
    c.assert_all_running();
}

/// Part B scaled out on one Postgres database: 2 order processes, 3
/// inventory processes, 1 notification process; 5,000 orders of 1 burger
/// against a stock of 3,000 from 8 clients, one inventory process
/// SIGKILLed and restarted in the middle. Exactly 3,000 are notified and
/// 2,000 failed, the stock is 0 in every instance's eyes, and either
/// order service answers for every order.
#[cfg(all(feature = "rabbitmq", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn part_b_scale_out_on_postgres() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use futures::StreamExt as _;

    const ORDERS: usize = 5_000;
    const STOCK: usize = 3_000;
    const CLIENTS: usize = 8;
    const KILL_AFTER: usize = 1_500;

    let bin = example("async_rabbitmq");
    let mut c = Cluster::new();
    let schema = test_schema().await;
    let rabbit = RabbitNames::new("scale");
    let order_ports = [free_port(), free_port()];
    let inventory_ports = [free_port(), free_port(), free_port()];
    let mut shared = part_b_env(&rabbit, &format!("burger={STOCK}"), 0, 0);
    shared.retain(|(k, _)| !k.ends_with("_PORT"));
    shared.extend(pg_env(&schema, &test_database_url()));
    c.schema = Some(schema);
    c.rabbit = Some(rabbit);

    let port_env = |order: u16, inventory: u16| {
        vec![
            ("CAMPUSFOOD_ORDER_PORT".to_owned(), order.to_string()),
            (
                "CAMPUSFOOD_INVENTORY_PORT".to_owned(),
                inventory.to_string(),
            ),
        ]
    };
    let mut inventories = Vec::new();
    for (i, &port) in inventory_ports.iter().enumerate() {
        let spec = c
            .spec(&format!("inventory-{i}"), &bin, &["inventory"])
            .envs(&shared)
            .envs(&port_env(free_port(), port));
        inventories.push(c.start(spec));
    }
    let mut orders = Vec::new();
    for (i, &port) in order_ports.iter().enumerate() {
        let spec = c
            .spec(&format!("order-{i}"), &bin, &["order"])
            .envs(&shared)
            .envs(&port_env(port, free_port()));
        orders.push(c.start(spec));
    }
    c.start(
        c.spec("notification", &bin, &["notification"])
            .envs(&shared)
            .envs(&port_env(free_port(), free_port())),
    );
    for (&i, &port) in inventories.iter().zip(&inventory_ports) {
        c.wait_healthy(i, &base(port), READY).await;
    }
    for (&i, &port) in orders.iter().zip(&order_ports) {
        c.wait_healthy(i, &base(port), READY).await;
    }
    c.assert_all_running();

    let order_urls: Arc<[String; 2]> = Arc::new(order_ports.map(base));
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let loaders: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (urls, next, accepted, finished) = (
                order_urls.clone(),
                next.clone(),
                accepted.clone(),
                finished.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("an HTTP client");
                let mut answers = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= ORDERS {
                        break;
                    }
                    let (status, body) = place(&client, &urls[n % 2], "burger", 1).await;
                    if status == 201 {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    answers.push((n, status, body));
                }
                finished.fetch_add(1, Ordering::SeqCst);
                answers
            })
        })
        .collect();

    // An inventory instance dies with deliveries in hand while orders flow.
    until(
        &format!("{KILL_AFTER} orders accepted"),
        Duration::from_secs(120),
        async || {
            accepted.load(Ordering::SeqCst) >= KILL_AFTER
                || finished.load(Ordering::SeqCst) == CLIENTS
        },
    )
    .await;
    let victim = inventories[0];
    c.procs[victim].restart();
    let killed_at = accepted.load(Ordering::SeqCst);
    c.wait_healthy(victim, &base(inventory_ports[0]), READY)
        .await;

    let mut answers = Vec::with_capacity(ORDERS);
    for loader in loaders {
        answers.extend(loader.await.expect("a client task"));
    }
    let accepted_in = started.elapsed();
    answers.sort_by_key(|(n, _, _)| *n);
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, s, _)| *s != 201)
        .take(5)
        .collect();
    assert!(
        refused.is_empty(),
        "orders not answered 201, e.g. {refused:?}"
    );
    assert_eq!(answers.len(), ORDERS);
    let ids: Vec<(usize, String)> = answers
        .iter()
        .map(|(n, _, body)| {
            (
                *n,
                body["order_id"].as_str().expect("an order_id").to_owned(),
            )
        })
        .collect();
    eprintln!(
        "{ORDERS} orders accepted in {accepted_in:.1?} ({:.0}/s); inventory-0 killed and restarted after {killed_at}",
        ORDERS as f64 / accepted_in.as_secs_f64()
    );

    // Every order settles: notified or failed.
    let settle = Duration::from_secs(300);
    let end = Instant::now() + settle;
    let mut pending = ids.clone();
    let mut report = Instant::now();
    while !pending.is_empty() {
        let client = &c.client;
        let urls = &order_urls;
        let checked: Vec<_> = futures::stream::iter(pending)
            .map(|(n, id)| async move {
                let status = order_status(client, &urls[n % 2], &id).await;
                (n, id, status)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        pending = checked
            .iter()
            .filter(|(_, _, s)| !matches!(s.as_deref(), Some("notified" | "failed")))
            .map(|(n, id, _)| (*n, id.clone()))
            .collect();
        if pending.is_empty() {
            break;
        }
        if Instant::now() > end {
            let sample: Vec<_> = checked
                .iter()
                .filter(|(_, _, s)| !matches!(s.as_deref(), Some("notified" | "failed")))
                .take(5)
                .collect();
            panic!(
                "after {settle:?}, {} orders are not settled, e.g. {sample:?}",
                pending.len()
            );
        }
        if report.elapsed() > Duration::from_secs(10) {
            eprintln!("{} orders not settled yet", pending.len());
            report = Instant::now();
        }
        c.assert_all_running();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled_in = started.elapsed();
    eprintln!(
        "all {ORDERS} orders settled in {settled_in:.1?} ({:.0} orders/s end to end)",
        ORDERS as f64 / settled_in.as_secs_f64()
    );

    for &port in &inventory_ports {
        assert_eq!(
            stock(&c.client, &base(port), "burger").await,
            0,
            "GET /inventory on :{port}"
        );
    }
    // Either order service answers for every order, the same.
    let client = &c.client;
    let urls = &order_urls;
    let both: Vec<_> = futures::stream::iter(&ids)
        .map(|(_, id)| async move {
            let a = order_status(client, &urls[0], id).await;
            let b = order_status(client, &urls[1], id).await;
            (id, a, b)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let differ: Vec<_> = both
        .iter()
        .filter(|(_, a, b)| a.is_none() || a != b)
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "the order services disagree, e.g. {differ:?}"
    );
    let count = |s: &str| {
        both.iter()
            .filter(|(_, a, _)| a.as_deref() == Some(s))
            .count()
    };
    assert_eq!(count("notified"), STOCK, "orders notified");
    assert_eq!(count("failed"), ORDERS - STOCK, "orders failed");
    c.assert_all_running();
}

/// A database that cannot be reached at start-up is one clear error:
/// the process exits non-zero, naming the URL without its password and
/// how to start Postgres.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_at_startup_is_a_clear_error() {
    let mut c = Cluster::new();
    let rabbit = RabbitNames::new("scale");
    let part_b = part_b_env(&rabbit, "burger=10", free_port(), free_port());
    c.rabbit = Some(rabbit);
    #[cfg(feature = "rabbitmq")]
    exits_naming_the_database(&mut c, "async_rabbitmq", &part_b).await;
    #[cfg(feature = "http")]
    {
        let part_a: Vec<(String, String)> = [
            "CAMPUSFOOD_ORDER_PORT",
            "CAMPUSFOOD_INVENTORY_PORT",
            "CAMPUSFOOD_NOTIFICATION_PORT",
        ]
        .iter()
        .map(|k| ((*k).to_owned(), free_port().to_string()))
        .collect();
        exits_naming_the_database(&mut c, "sync_rest", &part_a).await;
    }
}

/// `<example> inventory` on an unreachable database exits non-zero,
/// naming the URL without its password and how to start Postgres.
#[cfg(feature = "postgres")]
async fn exits_naming_the_database(c: &mut Cluster, example_name: &str, env: &[(String, String)]) {
    const URL: &str = "postgres://campusfood:s3cret-pw@127.0.0.1:1/campusfood";
    const SHOWN: &str = "postgres://campusfood:***@127.0.0.1:1/campusfood";
    let name = example_name;
    let spec = c
        .spec(&format!("{name}-inventory"), &example(name), &["inventory"])
        .envs(env)
        .env("CAMPUSFOOD_DATABASE_URL", URL)
        .env("CAMPUSFOOD_DATABASE_SCHEMA", format!("t_{}", hex()));
    let i = c.start(spec);
    let status = c.procs[i].wait_exit(Duration::from_secs(30)).await;
    let out = c.procs[i].output();
    assert!(
        !status.success(),
        "{name} inventory exited with {status}:\n{out}"
    );
    assert!(
        out.contains(SHOWN),
        "{name}: the error does not name {SHOWN}:\n{out}"
    );
    assert!(
        !out.contains("s3cret-pw"),
        "{name}: the error shows the password:\n{out}"
    );
    assert!(
        out.contains("scripts/brokers.sh up postgres"),
        "{name}: the error does not say how to start Postgres:\n{out}"
    );
}

/// The broker's password never shows: not in `--help` (which would print
/// the variable's value), not in the start-up error of an unreachable
/// broker, not in the log.
#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn broker_passwords_never_show() {
    const URL: &str = "amqp://guest:s3cret-amqp@127.0.0.1:1/%2f";
    let bin = example("async_rabbitmq");
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .env("CAMPUSFOOD_RABBITMQ_URL", URL)
        .env(
            "CAMPUSFOOD_DATABASE_URL",
            "postgres://u:s3cret-pg@127.0.0.1:1/db",
        )
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("CAMPUSFOOD_RABBITMQ_URL"), "{help}");
    assert!(!help.contains("s3cret"), "--help shows a password:\n{help}");

    let mut c = Cluster::new();
    let spec = c
        .spec("async-inventory", &bin, &["inventory"])
        .env("CAMPUSFOOD_RABBITMQ_URL", URL)
        .env("CAMPUSFOOD_INVENTORY_PORT", free_port().to_string())
        .env("RUST_LOG", "info");
    let i = c.start(spec);
    let status = c.procs[i].wait_exit(Duration::from_secs(30)).await;
    let out = c.procs[i].output();
    assert!(!status.success(), "started without a broker:\n{out}");
    assert!(
        out.contains("amqp://guest:***@127.0.0.1:1"),
        "the error does not name the broker:\n{out}"
    );
    assert!(
        !out.contains("s3cret"),
        "the output shows the password:\n{out}"
    );
}

/// Postgres goes away in the middle of a run (a cuttable proxy in front of
/// it): `POST /order` answers 503 at once instead of hanging or 500; once
/// it is back, every order answered 201 ends notified. Inventory is paused
/// just before the cut, so that the outage meets a backlog. The outage
/// outlasts the consumers' retries (5 attempts, 1 s apart): a store that
/// does not answer must not use them up (`workers::STORE_PATIENCE`).
#[cfg(all(feature = "rabbitmq", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_mid_run_loses_no_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    const BEFORE: usize = 50;
    const BACKLOG: usize = 100;
    const AFTER: usize = 100;
    /// Longer than a consumer's default retries last (5 attempts, 1 s apart).
    const OUTAGE: Duration = Duration::from_secs(8);
    /// A refusal must come well before a client gives up.
    const ANSWER_WITHIN: Duration = Duration::from_secs(15);

    let bin = example("async_rabbitmq");
    let mut c = Cluster::new();
    let schema = test_schema().await;
    let direct = test_database_url();
    let proxy = campusfood_testkit::Outage::start(&host_port(&direct));
    let url = with_host_port(&direct, &format!("127.0.0.1:{}", proxy.port()));
    let rabbit = RabbitNames::new("scale");
    let (order_port, inventory_port) = (free_port(), free_port());
    let mut env = part_b_env(&rabbit, "burger=10000", order_port, inventory_port);
    env.extend(pg_env(&schema, &url));
    let prefix = rabbit.prefix.clone();
    c.schema = Some(schema);
    c.rabbit = Some(rabbit);

    let order = c.start(c.spec("order", &bin, &["order"]).envs(&env));
    let inventory = c.start(c.spec("inventory", &bin, &["inventory"]).envs(&env));
    c.start(c.spec("notification", &bin, &["notification"]).envs(&env));
    let order_url = base(order_port);
    c.wait_healthy(order, &order_url, READY).await;
    c.wait_healthy(inventory, &base(inventory_port), READY)
        .await;

    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (accepted, stop, url) = (accepted.clone(), stop.clone(), order_url.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client");
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let (status, body) = place(&client, &url, "burger", 1).await;
                let took = sent.elapsed();
                if status == 201 {
                    accepted.fetch_add(1, Ordering::SeqCst);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answers.push((status, body, took));
            }
            answers
        })
    };
    until("orders before the outage", READY, async || {
        accepted.load(Ordering::SeqCst) >= BEFORE
    })
    .await;
    // A backlog for the outage to meet: inventory pauses (a slow consumer)
    // while orders keep coming, and resumes as the database goes away.
    c.procs[inventory].signal("STOP");
    until("a backlog of orders", READY, async || {
        accepted.load(Ordering::SeqCst) >= BEFORE + BACKLOG
    })
    .await;
    proxy.cut();
    let cut_at = accepted.load(Ordering::SeqCst);
    c.procs[inventory].signal("CONT");
    // The outage itself: how long the database stays away is the thing
    // under test, not a wait for a condition.
    tokio::time::sleep(OUTAGE).await;
    let during = accepted.load(Ordering::SeqCst) - cut_at;
    proxy.restore();
    let restored_at = accepted.load(Ordering::SeqCst);
    until("orders after the outage", READY, async || {
        accepted.load(Ordering::SeqCst) >= restored_at + AFTER
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let answers = loader.await.expect("the client task");

    let unexpected: Vec<_> = answers
        .iter()
        .filter(|(s, _, _)| *s != 201 && *s != 503)
        .take(5)
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than 201 or 503: {unexpected:?}"
    );
    let slow: Vec<_> = answers
        .iter()
        .filter(|(_, _, took)| *took > ANSWER_WITHIN)
        .take(5)
        .collect();
    assert!(
        slow.is_empty(),
        "answers slower than {ANSWER_WITHIN:?}: {slow:?}"
    );
    let refused = answers.iter().filter(|(s, _, _)| *s == 503).count();
    assert!(refused > 0, "no 503 while the database was cut");
    assert!(
        during <= 1,
        "{during} orders accepted while the database was cut"
    );
    let ids: Vec<String> = answers
        .iter()
        .filter(|(s, _, _)| *s == 201)
        .map(|(_, body, _)| body["order_id"].as_str().expect("an order_id").to_owned())
        .collect();
    eprintln!(
        "{} orders accepted, {refused} refused with 503 during a {OUTAGE:?} outage",
        ids.len()
    );
    if let Err(e) = wait_statuses(&mut c, &order_url, &ids, &["notified"], READY).await {
        let dead = dead_letters(&c.client, &prefix).await;
        panic!("{e}; dead letters: {dead:?}");
    }
    c.assert_all_running();
}
