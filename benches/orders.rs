//! Placing an order, end to end, per transport.
//!
//! ```sh
//! cargo bench --bench orders
//! ```
//!
//! - `sync_rest/post_order/1_connection`: `POST /order` through Order →
//!   Inventory (durable redb ledger, one fsync per commit) → Notification on
//!   loopback HTTP, one request at a time: per-order latency.
//! - `sync_rest/post_order/16_connections`: the same with 16 concurrent
//!   clients: throughput (orders/s), where group commit lets concurrent
//!   reservations share one fsync.
//! - `memory/place_order/*`: the same services and logic over the in-memory
//!   transport (no network), with the in-memory and the redb ledger.

use std::sync::Arc;
use std::time::Duration;

use campusfood::core::Config;
use campusfood::core::fault::FaultInjector;
use campusfood::core::ledger::{InventoryLedger, MemoryLedger, RedbLedger};
use campusfood::core::outbox::MemoryOutbox;
use campusfood::core::transport::Route;
use campusfood::services::inventory::InventoryService;
use campusfood::services::notification::NotificationService;
use campusfood::services::sync_rest::order::{OrderOptions, OrderService};
use campusfood::services::sync_rest::{SyncPart, SyncRest};
use campusfood::transport::memory::MemoryTransport;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BODY: &str = r#"{"item":"burger","qty":1}"#;
const STOCK: &str = "burger=1000000000";
const CONCURRENCY: usize = 16;
const PER_CLIENT: usize = 50;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn post(client: &reqwest::Client, url: &str) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect("order sent");
    assert_eq!(resp.status().as_u16(), 201);
    resp.bytes().await.expect("body read");
}

fn sync_rest(c: &mut Criterion) {
    let rt = runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        stock: STOCK.parse().expect("stock"),
        ..Config::default()
    };
    config.http.order_port = 0;
    config.http.inventory_port = 0;
    config.http.notification_port = 0;
    let system = rt
        .block_on(SyncRest::start(&config, SyncPart::All))
        .expect("Part A starts");
    let url = format!(
        "http://{}/order",
        system.order.as_ref().expect("order").server.addr()
    );
    let client = reqwest::Client::new();

    let mut g = c.benchmark_group("sync_rest/post_order");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("1_connection", |b| {
        b.to_async(&rt).iter(|| post(&client, &url))
    });
    g.throughput(Throughput::Elements((CONCURRENCY * PER_CLIENT) as u64));
    g.bench_function("16_connections", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        for _ in 0..PER_CLIENT {
                            post(&client, &url).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("client task");
            }
        })
    });
    g.finish();
    rt.block_on(system.stop());
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let stock = STOCK.parse().expect("stock");
    let ledgers: Vec<(&str, Arc<dyn InventoryLedger>)> = vec![
        ("memory_ledger", Arc::new(MemoryLedger::new(&stock))),
        (
            "redb_ledger",
            Arc::new(RedbLedger::open(data.path().join("bench.redb"), &stock).expect("ledger")),
        ),
    ];
    let mut g = c.benchmark_group("memory/place_order");
    for (name, ledger) in ledgers {
        let transport = MemoryTransport::new();
        transport.serve(
            Route::RESERVE,
            Arc::new(InventoryService::new(
                ledger,
                Arc::new(FaultInjector::default()),
            )),
        );
        transport.serve(
            Route::NOTIFY,
            Arc::new(NotificationService::new(Arc::new(FaultInjector::default()))),
        );
        let order = OrderService::new(
            Arc::new(transport),
            Arc::new(MemoryOutbox::new()),
            OrderOptions::default(),
        );
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let reply = order.place(BODY.as_bytes(), None).await;
                assert_eq!(reply.status, 201);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sync_rest, memory);
criterion_main!(benches);
