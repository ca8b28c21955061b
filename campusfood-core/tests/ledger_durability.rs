//! Crash durability of [`RedbLedger`]: a process that is SIGKILLed keeps
//! every reservation it answered.
//!
//! The parent test re-executes this very test binary as a child, running
//! only [`child_reserves_until_killed`] with `LEDGER_CHILD_DB` set. The child
//! reserves orders from several tasks and prints one `CONFIRMED <order> <qty>`
//! line per answered reservation, forever. The parent reads confirmations,
//! `kill -9`s the child at an arbitrary point, reopens the file and checks
//! that every confirmed order is there and that stock plus every recorded
//! reservation adds up to the initial stock exactly. It does that for several
//! kill/restart rounds on the same file.
//!
//! Also holds an `#[ignore]`d throughput report, run by hand:
//! `cargo test -p campusfood-core --release --features redb --test ledger_durability -- --ignored --nocapture throughput`.
#![cfg(all(unix, feature = "redb"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use campusfood_core::ledger::{InventoryLedger, RedbLedger, ReserveOutcome};
use campusfood_core::stock::StockSpec;
use campusfood_core::{Item, OrderId, Quantity};

/// Set (to the database path) only in the child process.
const CHILD_ENV: &str = "LEDGER_CHILD_DB";
/// The child-mode test, as `--exact` names it.
const CHILD_TEST: &str = "child_reserves_until_killed";
/// Confirmations to wait for before each kill.
const CONFIRMATIONS_PER_ROUND: usize = 200;
/// Kill/restart rounds on the same file.
const ROUNDS: usize = 3;
/// Longest wait for the confirmations of one round, or for the end of output.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
/// Enough that the child never runs out.
const INITIAL_BURGERS: u64 = 1_000_000_000;

fn initial() -> StockSpec {
    format!("burger={INITIAL_BURGERS}").parse().unwrap()
}

fn burger() -> Item {
    Item::parse("burger").unwrap()
}

/// Child mode. Does nothing in a normal test run (`LEDGER_CHILD_DB` unset):
/// it exists so that [`sigkill_keeps_every_confirmed_reservation`] can run
/// this binary as a separate process that it can SIGKILL.
#[test]
fn child_reserves_until_killed() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let ledger = Arc::new(RedbLedger::open(&path, &initial()).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    loop {
                        let order = OrderId::generate();
                        let n = fastrand::u64(1..=3);
                        let r = ledger
                            .reserve(&order, &burger(), Quantity::new(n).unwrap())
                            .await
                            .unwrap();
                        assert!(matches!(r.outcome(), ReserveOutcome::Reserved { .. }));
                        // Printed only once the decision is answered, hence durable.
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "CONFIRMED {order} {n}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        // The tasks never end; if one fails, fail the child at once.
        let (ended, _, _) = futures::future::select_all(tasks).await;
        panic!("a reservation task ended: {:?}", ended.err());
    });
}

/// Runs the child on `db` until it has confirmed
/// [`CONFIRMATIONS_PER_ROUND`] reservations, SIGKILLs it, and returns every
/// confirmation it printed (including those printed after the threshold).
fn run_child_and_kill(db: &Path) -> Vec<(OrderId, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let parse = |line: &str| -> Option<(OrderId, u64)> {
        let mut parts = line.strip_prefix("CONFIRMED ")?.split(' ');
        let order = OrderId::parse(parts.next()?).unwrap();
        let n = parts.next()?.parse().unwrap();
        Some((order, n))
    };

    let mut confirmed = Vec::new();
    let deadline = Instant::now() + ROUND_DEADLINE;
    while confirmed.len() < CONFIRMATIONS_PER_ROUND {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => confirmed.extend(parse(&line)),
            Err(RecvTimeoutError::Timeout) => {
                child.kill().unwrap();
                panic!(
                    "child confirmed only {} reservations in {ROUND_DEADLINE:?}",
                    confirmed.len()
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "child exited early ({:?}) after {} confirmations",
                    child.wait().unwrap(),
                    confirmed.len()
                );
            }
        }
    }

    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child was not SIGKILLed: {status:?}"
    );
    // Lines already in the pipe were answered before the kill: they count.
    let deadline = Instant::now() + ROUND_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => confirmed.extend(parse(&line)),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("child's stdout did not close"),
        }
    }
    reader.join().unwrap();
    confirmed
}

#[test]
fn sigkill_keeps_every_confirmed_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.redb");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut confirmed = BTreeMap::new();

    for round in 1..=ROUNDS {
        for (order, n) in run_child_and_kill(&db) {
            assert!(
                confirmed.insert(order, n).is_none(),
                "order confirmed twice"
            );
        }

        runtime.block_on(async {
            let ledger = RedbLedger::open(&db, &initial()).unwrap();
            for (order, &n) in &confirmed {
                let record = ledger
                    .reservation(order)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("confirmed {order} lost after kill -9"));
                assert_eq!(u64::from(record.qty.get()), n, "{order}");
                assert_eq!(record.item, burger());
                assert!(matches!(record.outcome, ReserveOutcome::Reserved { .. }));
            }
            // In-flight reservations may or may not have made it, so count
            // what is recorded, not what was confirmed.
            let records = ledger.records().await.unwrap();
            assert!(records.len() >= confirmed.len());
            assert_eq!(
                ledger.reservation_count().await.unwrap(),
                records.len() as u64
            );
            let reserved: u64 = records
                .iter()
                .map(|r| {
                    assert!(matches!(r.outcome, ReserveOutcome::Reserved { .. }));
                    u64::from(r.qty.get())
                })
                .sum();
            let stock = ledger.stock().await.unwrap()[&burger()];
            assert_eq!(
                stock + reserved,
                INITIAL_BURGERS,
                "stock {stock} + reserved {reserved} != initial"
            );
            println!(
                "round {round}: {} confirmed so far, {} recorded, stock {stock}",
                confirmed.len(),
                records.len()
            );
        });
    }
}

/// Latency and throughput, printed. Not an assertion: run by hand with
/// `--release --ignored --nocapture` (see the module docs).
#[test]
#[ignore = "measurement, run by hand"]
fn throughput_report() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let spec: StockSpec = "burger=1000000000".parse().unwrap();
        let ledger = Arc::new(RedbLedger::open(dir.path().join("bench.redb"), &spec).unwrap());
        let one = Quantity::new(1).unwrap();

        // Sequential: one request per commit.
        let n = 2000;
        let mut latencies = Vec::with_capacity(n);
        let (commits, started) = (ledger.commits(), Instant::now());
        for _ in 0..n {
            let t = Instant::now();
            ledger
                .reserve(&OrderId::generate(), &burger(), one)
                .await
                .unwrap();
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "sequential: {n} reserves in {elapsed:.2?}: p50 {:?}, p99 {:?}, {:.0}/s, {} commits",
            latencies[n / 2],
            latencies[n * 99 / 100],
            n as f64 / elapsed.as_secs_f64(),
            ledger.commits() - commits,
        );

        for concurrency in [16, 64] {
            let per_task = 2000;
            let (commits, started) = (ledger.commits(), Instant::now());
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(per_task);
                        for _ in 0..per_task {
                            let t = Instant::now();
                            ledger
                                .reserve(&OrderId::generate(), &burger(), one)
                                .await
                                .unwrap();
                            latencies.push(t.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            let elapsed = started.elapsed();
            latencies.sort();
            let total = concurrency * per_task;
            let batches = ledger.commits() - commits;
            println!(
                "concurrency {concurrency}: {total} reserves in {elapsed:.2?}: {:.0}/s, \
                 p50 {:?}, p99 {:?}, {batches} commits (mean batch {:.1})",
                total as f64 / elapsed.as_secs_f64(),
                latencies[total / 2],
                latencies[total * 99 / 100],
                total as f64 / batches as f64,
            );
        }
    });
}
