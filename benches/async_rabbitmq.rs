//! Part B over a real RabbitMQ (`scripts/brokers.sh up rabbitmq`).
//!
//! ```sh
//! cargo bench --bench async_rabbitmq
//! ```
//!
//! - `rabbitmq/accept_order/1_connection`: `POST /order` → 201 on the async
//!   OrderService, one request at a time: the order and its event are
//!   group-committed to redb (one fsync), the relay publishes afterwards.
//! - `rabbitmq/drain_backlog/{2000,20000}`: N `OrderPlaced` wait in
//!   `orders.reserve` with no consumer; the inventory consumer starts and
//!   the time until all N are decided in the durable ledger is measured:
//!   the backlog drain rate (their events are published with confirms and
//!   the deliveries acked, in coalesced batches, as they go).
//! - `rabbitmq/drain_backlog_postgres/{1,2}_instances`: the same with a
//!   10,000 backlog, drained by one or two inventory instances (each its
//!   own connection pool, as separate processes) deciding against one
//!   shared Postgres ledger (`scripts/brokers.sh up postgres`).
//!
//! Without a broker it says so and measures nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use campusfood::core::Config;
use campusfood::core::config::{DatabaseConfig, RabbitConfig};
use campusfood::core::events::OrderPlaced;
use campusfood::core::group_commit::Flush;
use campusfood::core::ledger::{InventoryLedger, RedbLedger};
use campusfood::core::order::{Order, OrderStatus, PlaceOrder};
use campusfood::core::transport::{Message, Route, Transport};
use campusfood::services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood::services::stores::RedbOrderStore;
use campusfood::services::stores::RedbProcessedIds;
use campusfood::services::stores::Stores;
use campusfood::services::stores::postgres::Postgres;
use campusfood::transport::rabbitmq::RabbitTransport;
mod common;
use common::runtime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Backlog sizes: one the consumer's prefetch window (1,024) swallows in
/// two gulps, and one ten times larger, where the steady rate shows.
const BACKLOGS: [u64; 2] = [2_000, 20_000];

struct Setup {
    config: Config,
    options: AsyncOptions,
    transport: Arc<RabbitTransport>,
    _data: tempfile::TempDir,
}

async fn setup(name: &str) -> Option<Setup> {
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        stock: "burger=1000000000".parse().expect("stock"),
        ..Config::default()
    };
    config.rabbitmq = RabbitConfig::with_prefix(&format!("bench-{name}-{:08x}", fastrand::u32(..)));
    let transport = match RabbitTransport::connect(&config.rabbitmq).await {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!(
                "RabbitMQ benchmarks skipped: {e} (start it with `scripts/brokers.sh up rabbitmq`)"
            );
            return None;
        }
    };
    let mut options = AsyncOptions::from_config(&config);
    options.order_port = 0;
    options.inventory_port = 0;
    Some(Setup {
        config,
        options,
        transport,
        _data: data,
    })
}

fn stores(config: &Config, tag: &str) -> AsyncStores {
    let dir = &config.data_dir;
    AsyncStores {
        ledger: Some(Arc::new(
            RedbLedger::open_with(
                dir.join(format!("{tag}-ledger.redb")),
                &config.stock,
                Flush::Shared,
            )
            .expect("ledger"),
        )),
        orders: Some(Arc::new(
            RedbOrderStore::open_with(dir.join(format!("{tag}-orders.redb")), Flush::Shared)
                .expect("orders"),
        )),
        notified: Some(Arc::new(
            RedbProcessedIds::open_with(dir.join(format!("{tag}-notified.redb")), Flush::Shared)
                .expect("notified"),
        )),
    }
}

fn accept(c: &mut Criterion) {
    let rt = runtime();
    // amqprs closes its connection and channels on drop from within tokio.
    let _in_runtime = rt.enter();
    let Some(s) = rt.block_on(setup("accept")) else {
        return;
    };
    let system = rt
        .block_on(AsyncSystem::start(
            &s.config,
            AsyncPart::Order,
            &s.options,
            s.transport.clone(),
            stores(&s.config, "accept"),
        ))
        .expect("order service");
    let url = format!(
        "http://{}/order",
        system.order.as_ref().expect("order").server.addr()
    );
    let client = reqwest::Client::new();
    let mut g = c.benchmark_group("rabbitmq/accept_order");
    g.bench_function("1_connection", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"item":"burger","qty":1}"#)
                .send()
                .await
                .expect("sent");
            assert_eq!(resp.status().as_u16(), 201);
        })
    });
    g.finish();
    rt.block_on(system.stop());
    rt.block_on(s.transport.teardown()).ok();
}

fn placed() -> Message {
    let burger = PlaceOrder::from_json(br#"{"item": "burger", "qty": 1}"#).expect("order");
    let order = Order::new(burger, OrderStatus::Placed);
    Message::json(&OrderPlaced::from(&order))
        .expect("encode")
        .with_key(order.order_id.as_str())
}

fn drain(c: &mut Criterion) {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let Some(s) = rt.block_on(setup("drain")) else {
        return;
    };
    let mut g = c.benchmark_group("rabbitmq/drain_backlog");
    g.sample_size(10);
    let mut round = 0;
    for backlog in BACKLOGS {
        g.throughput(Throughput::Elements(backlog));
        g.bench_function(backlog.to_string(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    total += rt.block_on(async {
                        publish_backlog(&s.transport, backlog).await;
                        let stores = stores(&s.config, &format!("drain-{round}"));
                        let ledger = stores.ledger.clone().expect("ledger");
                        time_drain(&s, &[ledger], backlog).await
                    });
                }
                total
            })
        });
    }
    g.finish();
    rt.block_on(s.transport.teardown()).ok();
}

/// Starts one inventory instance per ledger (the same ledger may be
/// given several times, or shared underneath) and times until the first
/// holds `backlog` decisions; then stops them.
async fn time_drain(s: &Setup, ledgers: &[Arc<dyn InventoryLedger>], backlog: u64) -> Duration {
    let start = Instant::now();
    let mut running = Vec::new();
    for ledger in ledgers {
        let stores = AsyncStores {
            ledger: Some(ledger.clone()),
            ..AsyncStores::default()
        };
        running.push(
            AsyncSystem::start(
                &s.config,
                AsyncPart::Inventory,
                &s.options,
                s.transport.clone(),
                stores,
            )
            .await
            .expect("inventory"),
        );
    }
    while ledgers[0].reservation_count().await.expect("count") < backlog {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    for r in running {
        r.stop().await;
    }
    took
}

/// Publishes `backlog` `OrderPlaced` with confirms, 256 at a time.
async fn publish_backlog(transport: &RabbitTransport, backlog: u64) {
    let messages: Vec<Message> = (0..backlog).map(|_| placed()).collect();
    for chunk in messages.chunks(256) {
        let sends = chunk
            .iter()
            .map(|m| async { transport.publish(&Route::ORDER_PLACED, m.clone()).await });
        for r in futures::future::join_all(sends).await {
            r.expect("published");
        }
    }
}

fn drain_postgres(c: &mut Criterion) {
    const BACKLOG: u64 = 10_000;
    let rt = runtime();
    let _in_runtime = rt.enter();
    let Some(s) = rt.block_on(setup("drainpg")) else {
        return;
    };
    let schema = campusfood_testkit::postgres::TestSchema::new("bench_drain");
    let database = DatabaseConfig {
        url: Some(campusfood_testkit::postgres::url()),
        schema: schema.name().to_owned(),
        ..DatabaseConfig::default()
    };
    if let Err(e) = rt.block_on(Postgres::connect(&database)) {
        eprintln!(
            "Postgres drain benchmarks skipped: {e} (start it with `scripts/brokers.sh up postgres`)"
        );
        return;
    }
    let mut g = c.benchmark_group("rabbitmq/drain_backlog_postgres");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BACKLOG));
    let mut round = 0;
    for instances in [1, 2] {
        g.bench_function(format!("{instances}_instances"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    total += rt.block_on(async {
                        publish_backlog(&s.transport, BACKLOG).await;
                        let name = format!("drain-{round}");
                        let mut ledgers = Vec::new();
                        for _ in 0..instances {
                            let pg = Stores::Postgres(
                                Postgres::connect(&database).await.expect("postgres"),
                            );
                            ledgers.push(
                                pg.ledger(&name, &s.config.stock, Flush::Shared)
                                    .await
                                    .expect("ledger"),
                            );
                        }
                        time_drain(&s, &ledgers, BACKLOG).await
                    });
                }
                total
            })
        });
    }
    g.finish();
    rt.block_on(s.transport.teardown()).ok();
}

criterion_group!(benches, accept, drain, drain_postgres);
criterion_main!(benches);
