//! Placing an order end to end, on every transport, on the same workload.
//!
//! ```sh
//! scripts/brokers.sh up all        # without a broker, its benchmarks say so and are skipped
//! cargo bench --bench transports   # about 2 minutes once built
//! ```
//!
//! "End to end" is until the order's stock is reserved, as the lab's X1 and
//! X2 define it, for every transport:
//!
//! - `memory`: the synchronous OrderService over the in-memory transport
//!   (no network): `place` → 201, i.e. reserved in the durable redb ledger
//!   and notified.
//! - `http`: Part A on loopback HTTP: `POST /order` → 201 (reserved and
//!   notified before the answer).
//! - `rabbitmq`: Part B over the local RabbitMQ: `POST /order` → 201
//!   `placed` (order and event group-committed to redb), then until
//!   inventory's consumer acknowledged the `OrderPlaced` (relay publish with
//!   confirm, delivery, reservation in the redb ledger,
//!   `InventoryReserved` published with confirm) — observed by the lab's
//!   probe, woken by each delivery, no polling.
//! - `kafka`: Part C over the local Kafka: one `OrderEvent` produced and
//!   acknowledged (`acks=all`), then until the exactly-once inventory
//!   consumer's redb ledger holds the decision (polled every millisecond,
//!   tokio's timer resolution: up to 1 ms of the figure is the poll).
//!
//! Groups: `transports/latency/<transport>` — one order at a time, one
//! client; `transports/throughput/<transport>` — 256 orders from 16
//! concurrent clients per iteration, reported as orders/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use campusfood::core::ledger::{InventoryLedger, RedbLedger};
use campusfood::core::transport::Route;
use campusfood_lab::{PartB, PartBOptions, PartC, PartCOptions, Settings};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{BODY, STOCK, order_service_in_memory, post, runtime, sync_rest_on_http};

/// Concurrent clients of the throughput benchmarks.
const CLIENTS: usize = 16;
/// Orders per throughput iteration.
const ORDERS: usize = 256;
/// The longest one order may take before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `one` `ORDERS` times from `CLIENTS` concurrent clients (client k
/// places orders k, k + 16, …), each waiting for its previous order.
async fn concurrently<F, Fut>(one: F)
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = ()>,
{
    let clients = (0..CLIENTS).map(|k| {
        let one = one.clone();
        async move {
            for _ in (k..ORDERS).step_by(CLIENTS) {
                one().await;
            }
        }
    });
    futures::future::join_all(clients).await;
}

fn memory(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let data = tempfile::tempdir().expect("tempdir");
    let stock = STOCK.parse().expect("stock");
    let ledger: Arc<dyn InventoryLedger> =
        Arc::new(RedbLedger::open(data.path().join("bench.redb"), &stock).expect("ledger"));
    let order = order_service_in_memory(ledger);
    let place = || async {
        let reply = order.place(BODY.as_bytes(), None).await;
        assert_eq!(reply.status, 201);
    };
    let mut g = c.benchmark_group("transports/latency");
    g.bench_function("memory", |b| b.to_async(rt).iter(place));
    g.finish();
    let mut g = c.benchmark_group("transports/throughput");
    g.throughput(Throughput::Elements(ORDERS as u64));
    g.bench_function("memory", |b| b.to_async(rt).iter(|| concurrently(place)));
    g.finish();
}

fn http(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let data = tempfile::tempdir().expect("tempdir");
    let (system, url) = sync_rest_on_http(rt, data.path());
    let client = reqwest::Client::new();
    let place = || post(&client, &url);
    let mut g = c.benchmark_group("transports/latency");
    g.bench_function("http", |b| b.to_async(rt).iter(place));
    g.finish();
    let mut g = c.benchmark_group("transports/throughput");
    g.sample_size(30);
    g.throughput(Throughput::Elements(ORDERS as u64));
    g.bench_function("http", |b| b.to_async(rt).iter(|| concurrently(place)));
    g.finish();
    rt.block_on(system.stop());
}

fn rabbitmq(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let b = match rt.block_on(PartB::start(
        &Settings::fast(),
        "bench",
        PartBOptions::default(),
    )) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("RabbitMQ benchmarks skipped: {e}");
            return;
        }
    };
    let place = || async {
        let sample = b.client().order(Instant::now()).await;
        let id = sample.order_id.expect("201 with an order id");
        b.probe()
            .first_ack(&Route::ORDER_PLACED, None, &id, DEADLINE)
            .await
            .expect("reserved");
    };
    let mut g = c.benchmark_group("transports/latency");
    g.sample_size(30);
    g.bench_function("rabbitmq", |bench| bench.to_async(rt).iter(place));
    g.finish();
    let mut g = c.benchmark_group("transports/throughput");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ORDERS as u64));
    g.bench_function("rabbitmq", |bench| {
        bench.to_async(rt).iter(|| concurrently(place))
    });
    g.finish();
    rt.block_on(b.stop());
}

fn kafka(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let options = PartCOptions {
        fail_rate: 0.0,
        analytics: false,
        ..PartCOptions::default()
    };
    let part = match rt.block_on(PartC::start(&Settings::fast(), "bench", options)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Kafka benchmarks skipped: {e}");
            return;
        }
    };
    let place = || async {
        let sample = part.place(Instant::now()).await;
        let id = sample.order_id.expect("acknowledged");
        let end = Instant::now() + DEADLINE;
        while !part.decided(&id).await.expect("ledger") {
            assert!(Instant::now() < end, "{id} not decided within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    // The consumer group settles before anything is measured.
    rt.block_on(place());
    let mut g = c.benchmark_group("transports/latency");
    g.sample_size(20);
    g.bench_function("kafka", |bench| bench.to_async(rt).iter(place));
    g.finish();
    let mut g = c.benchmark_group("transports/throughput");
    g.sample_size(10);
    // About a second an iteration.
    g.measurement_time(Duration::from_secs(12));
    g.throughput(Throughput::Elements(ORDERS as u64));
    g.bench_function("kafka", |bench| {
        bench.to_async(rt).iter(|| concurrently(place))
    });
    g.finish();
    rt.block_on(part.stop());
}

fn transports(c: &mut Criterion) {
    let rt = runtime();
    // amqprs and rdkafka clean up on drop from within tokio.
    let _in_runtime = rt.enter();
    memory(c, &rt);
    http(c, &rt);
    rabbitmq(c, &rt);
    kafka(c, &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = transports
}
criterion_main!(benches);
