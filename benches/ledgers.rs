//! Reservations per second of the durable ledgers, with 1 and 16 callers.
//!
//! ```sh
//! cargo bench --bench ledgers
//! ```
//!
//! - `ledger/redb/{1,16}_callers`: the redb file ledger (one process; the
//!   group-committing writer thread, one fsync per batch).
//! - `ledger/postgres/{1,16}_callers`: the Postgres ledger that several
//!   instances share (`scripts/brokers.sh up postgres`; the database from
//!   `CAMPUSFOOD_TEST_DATABASE_URL` or the script's default), calls made
//!   together sharing one transaction and one commit.
//!
//! Each iteration reserves [`PER_ITERATION`] fresh orders spread over the
//! callers; throughput is in reservations. Without Postgres its half says
//! so and measures nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use campusfood::core::OrderId;
use campusfood::core::config::DatabaseConfig;
use campusfood::core::ledger::{InventoryLedger, RedbLedger};
use campusfood::core::order::{Item, Quantity};
use campusfood::core::stock::StockSpec;
use campusfood::services::stores::postgres::{PgLedger, Postgres};
use campusfood_testkit::postgres::{TestSchema, url};
mod common;
use common::runtime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Reservations per iteration.
const PER_ITERATION: u64 = 1_600;
const CALLERS: [usize; 2] = [1, 16];

fn stock() -> StockSpec {
    "burger=1000000000".parse().expect("stock")
}

/// `PER_ITERATION` reservations from `callers` tasks at once; the time
/// until the last is answered.
async fn reserve_all(ledger: &Arc<dyn InventoryLedger>, callers: usize) -> Duration {
    let item = Item::parse("burger").expect("item");
    let per_caller = PER_ITERATION as usize / callers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (ledger, item) = (ledger.clone(), item.clone());
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    ledger
                        .reserve(&OrderId::generate(), &item, Quantity::new(1).expect("qty"))
                        .await
                        .expect("reserved");
                }
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.expect("caller");
    }
    start.elapsed()
}

fn bench_ledger(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    ledger: Arc<dyn InventoryLedger>,
) {
    let mut g = c.benchmark_group(format!("ledger/{name}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(PER_ITERATION));
    for callers in CALLERS {
        g.bench_function(format!("{callers}_callers"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(reserve_all(&ledger, callers)))
                    .sum()
            })
        });
    }
    g.finish();
}

fn ledgers(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let redb: Arc<dyn InventoryLedger> =
        Arc::new(RedbLedger::open(dir.path().join("bench.redb"), &stock()).expect("ledger"));
    bench_ledger(c, "redb", &rt, redb);

    let schema = TestSchema::new("bench_ledger");
    let config = DatabaseConfig {
        url: Some(url()),
        schema: schema.name().to_owned(),
        ..DatabaseConfig::default()
    };
    let pg = match rt.block_on(Postgres::connect(&config)) {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!(
                "Postgres benchmarks skipped: {e} (start it with `scripts/brokers.sh up postgres`)"
            );
            return;
        }
    };
    let ledger: Arc<dyn InventoryLedger> = Arc::new(
        rt.block_on(PgLedger::open(&pg, "bench", &stock()))
            .expect("ledger"),
    );
    bench_ledger(c, "postgres", &rt, ledger);
}

criterion_group!(benches, ledgers);
criterion_main!(benches);
