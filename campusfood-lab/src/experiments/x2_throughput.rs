//! X2 — throughput of each architecture on the same workload: N orders from
//! C concurrent clients; orders accepted per second, and orders whose stock
//! was reserved per second.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::common::{accepted_ids, cumulative, since, statuses, summary};
use crate::async_rabbitmq::PartBOptions;
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Chart, Experiment, Legend, Outcome, Series, Table};
use crate::load::{Pacing, Sample, concurrent, count_status};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::streaming_kafka::{PartC, PartCOptions, wait_decided};
use crate::wait::until;

/// X2 — throughput.
#[derive(Debug, Clone, Copy)]
pub struct X2Throughput;

/// One architecture's run.
struct Run {
    samples: Vec<Sample>,
    /// When each accepted order's stock was reserved, since the origin.
    reserved_at: Vec<f64>,
    /// Ledger records for the run (REST: the stock taken, its ledger is
    /// not the lab's to read).
    reservations: u64,
    /// Stock taken during the run.
    stock_taken: u64,
    /// What it should be if each order took its quantity once (REST and
    /// RabbitMQ: one per order; Kafka: the quantities its ledger recorded).
    expected_stock: u64,
    /// Confirmations sent, where the architecture sends them (RabbitMQ).
    notifications: Option<u64>,
    /// What became of each order.
    readings: Vec<(String, OrderReading)>,
}

/// "Each exactly once", three ways where the architecture allows: ledger
/// records, stock taken and (RabbitMQ) notifications each equal the
/// accepted orders. An idempotent ledger keeps its record count even if an
/// order was decided twice; the stock and the notifications do not.
fn each_exactly_once(accepted: u64, r: &Run) -> bool {
    r.reservations == accepted
        && r.stock_taken == r.expected_stock
        && r.notifications.is_none_or(|sent| sent == accepted)
}

async fn rest(ctx: &Context, n: u64, clients: u64) -> Result<Run, LabError> {
    let app = ctx.part_a(|_| {}).await?;
    let client = app.client().clone();
    let run = async {
        let before = client.stock().await?;
        let bar = ctx.bar(n, "REST orders");
        let origin = Instant::now();
        let samples = match ctx.pacing() {
            Pacing::Closed => concurrent(&client, n, clients, origin, &bar).await?,
            open => open.send(n, origin, &bar, |o| client.order(o)).await,
        };
        bar.finish_and_clear();
        let reserved_at = samples
            .iter()
            .filter(|s| s.ok())
            .map(|s| s.answered().as_secs_f64())
            .collect();
        let after = client.stock().await?;
        let accepted = count_status(&samples, 201) as u64;
        Ok::<_, LabError>(Run {
            reserved_at,
            reservations: before.saturating_sub(after),
            stock_taken: before.saturating_sub(after),
            expected_stock: accepted,
            notifications: None,
            readings: app.readings(&samples).await?,
            samples,
        })
    }
    .await;
    app.stop().await;
    run
}

async fn rabbitmq(ctx: &Context, n: u64, clients: u64) -> Result<Run, LabError> {
    let b = ctx.part_b(PartBOptions::default()).await?;
    let run = async {
        let bar = ctx.bar(n, "RabbitMQ orders");
        let stock_before = b.stock().await?;
        let origin = Instant::now();
        let samples = match ctx.pacing() {
            Pacing::Closed => concurrent(b.client(), n, clients, origin, &bar).await?,
            open => open.send(n, origin, &bar, |o| b.client().order(o)).await,
        };
        bar.finish_and_clear();
        let ids = accepted_ids(&samples);
        b.wait_reserved(&ids, Duration::from_secs(120)).await?;
        b.wait_notified(&ids, Duration::from_secs(120)).await?;
        let at = b.reserved_at();
        let reserved_at = ids
            .iter()
            .filter_map(|id| at.get(id))
            .map(|t| since(origin, *t))
            .collect();
        Ok::<_, LabError>(Run {
            reserved_at,
            reservations: b.reservation_count().await?,
            stock_taken: stock_before.saturating_sub(b.stock().await?),
            expected_stock: ids.len() as u64,
            notifications: Some(b.notifications_sent()),
            readings: b.readings(&samples).await?,
            samples,
        })
    }
    .await;
    b.stop().await;
    run
}

async fn kafka(ctx: &Context, n: u64, clients: u64) -> Result<Run, LabError> {
    let c = ctx
        .part_c(PartCOptions {
            fail_rate: 0.0,
            analytics: false,
            ..PartCOptions::default()
        })
        .await?;
    let run = async {
        // One order first, so the run does not include the consumer
        // joining its group.
        let warm = c.place(Instant::now()).await;
        if let Some(id) = warm.order_id {
            wait_decided(&c, &[id], Duration::from_secs(60)).await?;
        }
        let before = c.decisions().await?;
        let stock_before = c.stock_total().await?;
        let bar = ctx.bar(n, "Kafka orders");
        let origin = Instant::now();
        // Reservations over time: the ledger's count, every few ms (cheap,
        // whatever the number of orders in flight).
        let decided = c.decisions_gauge().sample(COUNT_EVERY, origin);
        let samples = match ctx.pacing() {
            Pacing::Closed => place_concurrently(&c, n, clients, origin, &bar).await,
            open => open.send(n, origin, &bar, |o| c.place(o)).await,
        };
        bar.finish_and_clear();
        let want = before + count_status(&samples, 201) as u64;
        until(
            "every Kafka order decided",
            Duration::from_secs(120),
            || async { c.decisions().await.is_ok_and(|d| d >= want) },
        )
        .await?;
        let counts = decided.finish().await?;
        let expected_stock = c.reserved_qty(&accepted_ids(&samples)).await?;
        c.wait_output(&accepted_ids(&samples), Duration::from_secs(60))
            .await;
        Ok::<_, LabError>(Run {
            readings: c.readings(&samples).await?,
            samples,
            reserved_at: steps(&counts, before, n),
            reservations: c.decisions().await?.saturating_sub(before),
            stock_taken: stock_before.saturating_sub(c.stock_total().await?),
            expected_stock,
            notifications: None,
        })
    }
    .await;
    c.stop().await;
    run
}

/// How often X2 reads Kafka's ledger count.
const COUNT_EVERY: Duration = Duration::from_millis(5);

/// A time for each unit a sampled count rose above `base`, at most `max`:
/// `[t, count]` points to the times the reservations happened (to the
/// sampling interval).
fn steps(points: &[[f64; 2]], base: u64, max: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut seen = base;
    for p in points {
        let count = p[1] as u64;
        while seen < count && (out.len() as u64) < max {
            out.push(p[0]);
            seen += 1;
        }
    }
    out
}

/// `clients` producers, each placing its next order once Kafka
/// acknowledged its previous one.
async fn place_concurrently(
    c: &PartC,
    n: u64,
    clients: u64,
    origin: Instant,
    bar: &indicatif::ProgressBar,
) -> Vec<Sample> {
    let clients = clients.clamp(1, n.max(1));
    let per = |k: u64| {
        (k..n)
            .step_by(usize::try_from(clients).unwrap_or(1))
            .count()
    };
    let loops = (0..clients).map(|k| async move {
        let mut samples = Vec::with_capacity(per(k));
        for _ in 0..per(k) {
            samples.push(c.place(origin).await);
            bar.inc(1);
        }
        samples
    });
    let mut samples: Vec<Sample> = futures::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect();
    samples.sort_by_key(|s| s.sent);
    samples
}

#[async_trait]
impl Experiment for X2Throughput {
    fn id(&self) -> &'static str {
        "X2"
    }

    fn title(&self) -> &'static str {
        "Throughput of each architecture on the same workload"
    }

    fn shows(&self) -> &'static str {
        "How many orders each architecture takes per second on the same workload — N orders \
         from C concurrent clients, each sending its next order once the previous one is \
         answered — and how many it *processes* per second (stock reserved). For REST the two \
         are the same thing: a 201 means reserved and notified. For RabbitMQ and Kafka, \
         accepting is storing (an fsync'd outbox) or appending (a broker acknowledgement) \
         and the reservation follows; the gap between the two curves is work queued for later."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.size("x2.orders", 2000, 200)?;
        let clients = ctx.size("x2.clients", 16, 8)?;
        let mut runs = Vec::new();
        for (name, key) in [
            ("REST (Part A)", "rest"),
            ("RabbitMQ (Part B)", "rabbitmq"),
            ("Kafka (Part C)", "kafka"),
        ] {
            let run = match key {
                "rest" => rest(ctx, n, clients).await,
                "rabbitmq" => rabbitmq(ctx, n, clients).await,
                _ => kafka(ctx, n, clients).await,
            };
            match run {
                Ok(r) => runs.push((name, key, Ok(r))),
                Err(e) if e.is_unavailable() && key != "rest" => {
                    runs.push((name, key, Err(e.to_string())));
                }
                Err(e) => return Err(e),
            }
        }

        let mut out = Outcome::default();
        out.setup("orders", n);
        out.setup("load", ctx.pacing().describe());
        let title = match ctx.pacing() {
            Pacing::Closed => {
                out.setup("clients", clients);
                format!("X2: {n} orders from {clients} clients — accepted and reserved over time")
            }
            open => format!(
                "X2: {n} orders, {} — accepted and reserved over time",
                open.describe()
            ),
        };
        let mut t = Table::new(
            "throughput",
            &match ctx.pacing() {
                Pacing::Closed => "N orders from C concurrent clients — closed loop".to_owned(),
                open => open.title("N orders"),
            },
            &[
                "Architecture",
                "Statuses",
                "Accept P50 (ms)",
                "Accept P99 (ms)",
                "All accepted after (s)",
                "Accepted/s",
                "All reserved after (s)",
                "Reserved/s",
                "Reservations",
            ],
        );
        let mut chart = Chart::new(
            "progress",
            &title,
            Axis::linear("time since the first order (s)"),
            Axis::linear("orders"),
        )
        .with_legend(Legend::LowerRight);
        let mut held = true;
        let mut evidence = Vec::new();
        let mut rates = Vec::new();
        for (name, key, run) in &runs {
            let r = match run {
                Ok(r) => r,
                Err(e) => {
                    out.unmeasured(format!("{name}: {e}"));
                    continue;
                }
            };
            let ok = count_status(&r.samples, 201);
            let s = summary(&r.samples);
            let accepted_after = r
                .samples
                .iter()
                .map(|s| s.answered().as_secs_f64())
                .fold(0.0, f64::max);
            let reserved_after = r.reserved_at.iter().copied().fold(0.0, f64::max);
            let accepted_per_s = ok as f64 / accepted_after.max(f64::MIN_POSITIVE);
            let reserved_per_s = r.reserved_at.len() as f64 / reserved_after.max(f64::MIN_POSITIVE);
            t.row(vec![
                (*name).into(),
                statuses(&r.samples).into(),
                s.p50_ms.into(),
                s.p99_ms.into(),
                accepted_after.into(),
                accepted_per_s.into(),
                reserved_after.into(),
                reserved_per_s.into(),
                r.reservations.into(),
            ]);
            out.metrics(s.metrics(&format!("{key}.accept")));
            out.metric(format!("{key}.accepted_per_s"), accepted_per_s);
            out.metric(format!("{key}.reserved_per_s"), reserved_per_s);
            out.metric(format!("{key}.reservations"), r.reservations as f64);
            let accepted: Vec<f64> = r
                .samples
                .iter()
                .filter(|s| s.ok())
                .map(|s| s.answered().as_secs_f64())
                .collect();
            chart = chart.with_series(Series::line(
                &format!("{name}: accepted"),
                cumulative(accepted, 0.0),
            ));
            if *key != "rest" {
                chart = chart.with_series(Series::line(
                    &format!("{name}: reserved"),
                    cumulative(r.reserved_at.clone(), 0.0),
                ));
            }
            let all = ok as u64 == n
                && r.reserved_at.len() as u64 == n
                && each_exactly_once(ok as u64, r);
            held &= all;
            evidence.push(format!(
                "{name}: {ok}/{n} accepted, {} reserved, {} ledger records, stock down by {} \
                 (their quantities: {}){}",
                r.reserved_at.len(),
                r.reservations,
                r.stock_taken,
                r.expected_stock,
                r.notifications
                    .map(|sent| format!(", {sent} notifications"))
                    .unwrap_or_default()
            ));
            rates.push((*name, accepted_per_s, reserved_per_s));
        }
        out.table(t);
        out.chart(chart);
        out.conclude(
            "Every architecture accepts and processes every order, each exactly once (ledger \
             records, stock and, for RabbitMQ, notifications)",
            held && !evidence.is_empty(),
            evidence.join("; "),
        );
        if let (Some(fast_in), Some(fast_done)) = (
            rates.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
            rates.iter().max_by(|a, b| a.2.total_cmp(&b.2)),
        ) {
            out.note(format!(
                "Most orders accepted per second: {} ({:.0}/s); most processed per second: {} \
                 ({:.0}/s). On this machine the services, the brokers and the load generator \
                 share {} cores, so these are relative numbers, not capacities.",
                fast_in.0,
                fast_in.1,
                fast_done.0,
                fast_done.2,
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ));
        }
        out.note(
            "“Reserved” as in X1: REST's 201; RabbitMQ's inventory consumer acknowledging the \
             `OrderPlaced`; Kafka's inventory consumer's ledger holding the decision (its \
             count read every 5 ms, FAIL_RATE 0). Kafka's accepting client is a producer awaiting each \
             acknowledgement (`acks=all`, idempotent), not the batched burst of C1.",
        );
        for (name, key, run) in &runs {
            let Ok(r) = run else { continue };
            let expected = match *key {
                "kafka" => OrderClass::Reserved,
                _ => OrderClass::Notified,
            };
            out.orders(OrderOutcomes::new(name, &[expected]).record_all(&r.readings));
        }
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_turn_counts_into_times() {
        let points = [
            [0.0, 10.0],
            [0.1, 10.0],
            [0.2, 12.0],
            [0.3, 13.0],
            [0.4, 20.0],
        ];
        assert_eq!(steps(&points, 10, 3), [0.2, 0.2, 0.3]);
        assert_eq!(steps(&points, 10, 100).len(), 10);
        assert!(steps(&[], 0, 5).is_empty());
    }

    #[test]
    fn a_ledger_that_decrements_twice_is_not_exactly_once() {
        let run = |reservations, stock_taken, notifications| Run {
            samples: Vec::new(),
            reserved_at: Vec::new(),
            reservations,
            stock_taken,
            expected_stock: 100,
            notifications,
            readings: Vec::new(),
        };
        assert!(each_exactly_once(100, &run(100, 100, Some(100))));
        assert!(each_exactly_once(100, &run(100, 100, None)));
        // Idempotent records, but the stock was taken twice for some orders.
        assert!(!each_exactly_once(100, &run(100, 103, Some(100))));
        // Reserved once, confirmed twice.
        assert!(!each_exactly_once(100, &run(100, 100, Some(101))));
        assert!(!each_exactly_once(100, &run(99, 100, None)));
    }
}
