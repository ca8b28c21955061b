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

use campusfood::core::ledger::{InventoryLedger, MemoryLedger, RedbLedger};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{BODY, STOCK, order_service_in_memory, post, runtime, sync_rest_on_http};

const CONCURRENCY: usize = 16;
const PER_CLIENT: usize = 50;

fn sync_rest(c: &mut Criterion) {
    let rt = runtime();
    let data = tempfile::tempdir().expect("tempdir");
    let (system, url) = sync_rest_on_http(&rt, data.path());
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
        let order = order_service_in_memory(ledger);
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
