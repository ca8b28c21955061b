//! C3 — offset reset and replay: the analytics consumer is stopped, its
//! group rewound to the earliest offsets, and started again; it re-reads
//! everything and comes to the same totals.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_streaming_kafka::offsets::ResetTarget;
use campusfood_streaming_kafka::{MetricsSnapshot, Totals};

use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Legend, Outcome, Series, Table};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::streaming_kafka::{PartC, PartCOptions};
use crate::wait::until;

/// C3 — reset and replay.
#[derive(Debug, Clone, Copy)]
pub struct C3Replay;

/// How often lag is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// See C2: trailing transaction markers on `inventory-events`.
const MARKER_LAG: i64 = 3 * 6;

/// The analytics group's lag on (order-events, inventory-events).
type Lag = (i64, i64);

struct Measured {
    n: u64,
    first: MetricsSnapshot,
    replay: MetricsSnapshot,
    lag_before_reset: Lag,
    lag_after_reset: Lag,
    lag_after_replay: Lag,
    /// The inventory side before the reset and after the replay.
    inventory: (InventorySide, InventorySide),
    lag: Vec<Vec<[f64; 2]>>,
    /// Since the origin: analytics stopped, offsets being reset, analytics
    /// started again, replay counted.
    marks: [f64; 4],
    readings: Vec<(String, OrderReading)>,
}

/// What the inventory consumer has done, read three independent ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InventorySide {
    /// Reservation records in its ledger.
    records: u64,
    /// Stock left in its ledger.
    stock: u64,
    /// The end of `inventory-events`: every decision it publishes (and
    /// every transaction's marker) moves it.
    events_end: i64,
}

impl InventorySide {
    async fn read(c: &PartC) -> Result<Self, LabError> {
        Ok(Self {
            records: c.decisions().await?,
            stock: c.stock_total().await?,
            events_end: c.topic_end(&c.config().kafka.inventory_topic).await?,
        })
    }
}

/// "The inventory consumer decides nothing again": no new ledger record,
/// no stock taken and no event published between `before` and `after`. An
/// idempotent ledger keeps the record count even if the consumer decided
/// again, so the stock and the topic are checked beside it.
fn decided_nothing_again(before: InventorySide, after: InventorySide) -> bool {
    before == after
}

async fn wait_counted(c: &PartC, n: u64, what: &str) -> Result<(), LabError> {
    let analytics = c
        .analytics()
        .ok_or_else(|| LabError::Unavailable {
            needs: "the analytics consumer".to_owned(),
            hint: "Part C started without it".to_owned(),
        })?
        .analytics()
        .clone();
    until(what, Duration::from_secs(120), move || {
        let t = analytics.totals();
        let done = t.orders >= n && t.inventory_events >= n;
        async move { done }
    })
    .await
}

/// Waits until the analytics group's committed offsets are at the end of
/// both topics (up to the trailing transaction markers).
async fn caught_up(c: &PartC, what: &str) -> Result<(), LabError> {
    until(what, Duration::from_secs(30), move || async move {
        lag(c).await.is_ok_and(|(o, i)| o == 0 && i <= MARKER_LAG)
    })
    .await
}

async fn lag(c: &PartC) -> Result<Lag, LabError> {
    let group = &c.options().analytics.group;
    let k = &c.config().kafka;
    Ok((
        c.lag(group, &k.order_topic).await?,
        c.lag(group, &k.inventory_topic).await?,
    ))
}

async fn snapshot(c: &PartC) -> Result<MetricsSnapshot, LabError> {
    match c.analytics() {
        Some(a) => Ok(a.metrics().await),
        None => Err(LabError::Unavailable {
            needs: "the analytics consumer".to_owned(),
            hint: "Part C started without it".to_owned(),
        }),
    }
}

async fn measure(ctx: &Context, c: &mut PartC, n: u64) -> Result<Measured, LabError> {
    let origin = Instant::now();
    let group = c.options().analytics.group.clone();
    let k = c.config().kafka.clone();
    let sampler = c.sample_lag(
        vec![
            (group.clone(), k.order_topic.clone()),
            (group.clone(), k.inventory_topic.clone()),
        ],
        SAMPLE_EVERY,
        origin,
    );
    let orders = c.orders(usize::try_from(n).unwrap_or(usize::MAX));
    let ids: Vec<String> = orders.iter().map(|o| o.order_id.to_string()).collect();
    let run = async {
        let bar = ctx.bar(2, "first run, then the replay");
        c.produce(&orders).await?;
        wait_counted(c, n, "the first run to count everything").await?;
        caught_up(c, "the first run's offsets committed").await?;
        bar.inc(1);
        let first = snapshot(c).await?;
        let inventory_before = InventorySide::read(c).await?;
        c.stop_analytics().await;
        let stopped = origin.elapsed().as_secs_f64();
        let lag_before_reset = lag(c).await?;
        let reset = origin.elapsed().as_secs_f64();
        c.reset_analytics(ResetTarget::Earliest).await?;
        let lag_after_reset = lag(c).await?;
        // Stopped, rewound: a moment of the full lag on the chart.
        tokio::time::sleep(SAMPLE_EVERY * 3).await;
        c.start_analytics().await?;
        let restarted = origin.elapsed().as_secs_f64();
        wait_counted(c, n, "the replay to count everything").await?;
        let counted = origin.elapsed().as_secs_f64();
        caught_up(c, "the replay's offsets committed").await?;
        bar.finish_and_clear();
        tokio::time::sleep(SAMPLE_EVERY * 3).await;
        Ok::<_, LabError>((
            first,
            snapshot(c).await?,
            lag_before_reset,
            lag_after_reset,
            lag(c).await?,
            (inventory_before, InventorySide::read(c).await?),
            [stopped, reset, restarted, counted],
        ))
    }
    .await;
    let lag_series = sampler.finish().await?;
    let (first, replay, lag_before_reset, lag_after_reset, lag_after_replay, inventory, marks) =
        run?;
    Ok(Measured {
        readings: c.readings_of(&ids).await?,
        n,
        first,
        replay,
        lag_before_reset,
        lag_after_reset,
        lag_after_replay,
        inventory,
        lag: lag_series,
        marks,
    })
}

fn totals_rows(t: &mut Table, first: &Totals, replay: &Totals) {
    let rows: [(&str, u64, u64); 6] = [
        ("totals.orders", first.orders, replay.orders),
        (
            "totals.inventory_events",
            first.inventory_events,
            replay.inventory_events,
        ),
        ("totals.successes", first.successes, replay.successes),
        ("totals.failures", first.failures, replay.failures),
        (
            "totals.duplicates_dropped",
            first.duplicates_dropped,
            replay.duplicates_dropped,
        ),
        ("totals.malformed", first.malformed, replay.malformed),
    ];
    for (name, a, b) in rows {
        t.row(vec![
            name.into(),
            a.into(),
            b.into(),
            if a == b { "identical" } else { "differs" }.into(),
        ]);
    }
}

#[async_trait]
impl Experiment for C3Replay {
    fn id(&self) -> &'static str {
        "C3"
    }

    fn title(&self) -> &'static str {
        "Offset reset and replay"
    }

    fn shows(&self) -> &'static str {
        "The assignment's third streaming test: after the analytics consumer has counted a \
         burst, it is stopped, its consumer group is reset to the earliest offsets on both \
         topics (the lab's `offsets reset`, equivalent to `kafka-consumer-groups \
         --reset-offsets --to-earliest --execute`), and it is started again. The lag jumps \
         back to the whole topic, the consumer re-reads every record, and its deterministic \
         totals come out identical — the events are the same, and the inventory consumer, \
         whose group was not reset, decides nothing again. The rolling-window numbers depend \
         on when records arrive, so they may differ, as the assignment's notes predicted."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.size("c3.orders", 5000, 400)?;
        let mut c = ctx.part_c(PartCOptions::default()).await?;
        let measured = measure(ctx, &mut c, n).await;
        c.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("orders", m.n);
        out.setup("fail_rate", c_fail_rate());
        out.setup("reset_to", "earliest");
        let mut t = Table::new(
            "before-after",
            "analytics /metrics: first run vs replay after the reset",
            &["Metric", "First run", "Replay", ""],
        );
        totals_rows(&mut t, &m.first.totals, &m.replay.totals);
        for (name, a, b) in [
            (
                "orders_per_min (window)",
                m.first.orders_per_min,
                m.replay.orders_per_min,
            ),
            (
                "failure_rate_pct (window)",
                m.first.failure_rate_pct,
                m.replay.failure_rate_pct,
            ),
        ] {
            t.row(vec![
                name.into(),
                a.into(),
                b.into(),
                if (a - b).abs() < 1e-9 {
                    "identical"
                } else {
                    "differs (timing)"
                }
                .into(),
            ]);
        }
        out.table(t);
        let mut l = Table::new(
            "lag",
            "The analytics group's lag (records)",
            &["When", "order-events", "inventory-events"],
        );
        for (when, (o, i)) in [
            ("first run counted, consumer stopped", m.lag_before_reset),
            ("after the reset to earliest", m.lag_after_reset),
            ("replay counted", m.lag_after_replay),
        ] {
            l.row(vec![when.into(), o.into(), Cell::Int(i)]);
        }
        out.table(l);
        out.metric("orders", m.n as f64);
        out.metric("first.totals.orders", m.first.totals.orders as f64);
        out.metric("replay.totals.orders", m.replay.totals.orders as f64);
        out.metric("first.totals.failures", m.first.totals.failures as f64);
        out.metric("replay.totals.failures", m.replay.totals.failures as f64);
        out.metric("lag_after_reset.order_events", m.lag_after_reset.0 as f64);
        out.metric("replay_s", m.marks[3] - m.marks[2]);

        let [stopped, reset, restarted, counted] = m.marks;
        let mut chart = Chart::new(
            "lag",
            "C3: the analytics group's lag through stop, reset to earliest, and replay",
            Axis::linear("time since the burst (s)"),
            Axis::linear("lag (records)"),
        )
        .with_guide(Guide::x("analytics stopped", stopped))
        .with_guide(Guide::x("offsets reset to earliest", reset))
        .with_guide(Guide::x("analytics restarted", restarted))
        .with_guide(Guide::x("replay counted", counted))
        .with_legend(Legend::UpperRight);
        for (name, points) in ["order-events", "inventory-events"].iter().zip(&m.lag) {
            chart = chart.with_series(Series::line(name, points.clone()));
        }
        out.chart(chart);

        let n = m.n as i64;
        out.conclude(
            "The reset rewinds the stopped group to the start of both topics",
            m.lag_before_reset.0 == 0 && m.lag_after_reset.0 == n && m.lag_after_reset.1 >= n,
            format!(
                "lag on order-events {} → {} (the whole topic: {n}); on inventory-events {} → {} \
                 (plus commit markers)",
                m.lag_before_reset.0,
                m.lag_after_reset.0,
                m.lag_before_reset.1,
                m.lag_after_reset.1
            ),
        );
        out.conclude(
            "The replay reproduces identical totals",
            m.first.totals == m.replay.totals && m.replay.totals.orders == m.n,
            format!(
                "first run {}; replay {}",
                fmt_totals(&m.first.totals),
                fmt_totals(&m.replay.totals)
            ),
        );
        let (before, after) = m.inventory;
        out.conclude(
            "Only the reset group re-reads: the inventory consumer decides nothing again",
            decided_nothing_again(before, after),
            format!(
                "before the reset → after the replay: ledger records {} → {}, stock {} → {}, \
                 end of inventory-events {} → {}",
                before.records,
                after.records,
                before.stock,
                after.stock,
                before.events_end,
                after.events_end
            ),
        );
        out.note(format!(
            "After the replay the group's lag is {} on order-events and {} on inventory-events \
             (the run waited for it to catch up; up to {MARKER_LAG} on inventory-events are \
             transaction markers).",
            m.lag_after_replay.0, m.lag_after_replay.1
        ));
        out.note(
            "orders_per_min and failure_rate_pct are a rolling window over arrival time: the \
             replay reads the whole topic at once, so the window holds everything again when it \
             is read right away, and different numbers later — what the assignment's notes \
             call timing-dependent. The totals are a function of the records alone.",
        );
        out.orders(
            OrderOutcomes::new(
                "the burst, after the replay",
                &[OrderClass::Reserved, OrderClass::Failed],
            )
            .record_all(&m.readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

/// Totals in a sentence.
fn fmt_totals(t: &Totals) -> String {
    format!(
        "{} orders, {} inventory events ({} successes, {} failures), {} duplicates dropped, {} \
         malformed",
        t.orders, t.inventory_events, t.successes, t.failures, t.duplicates_dropped, t.malformed
    )
}

/// The inventory consumer's `FAIL_RATE` in this experiment (the default).
fn c_fail_rate() -> f64 {
    PartCOptions::default().fail_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: InventorySide = InventorySide {
        records: 400,
        stock: 4600,
        events_end: 420,
    };

    #[test]
    fn deciding_again_is_seen_even_by_an_idempotent_ledger() {
        assert!(decided_nothing_again(BEFORE, BEFORE));
        // The ledger kept its count but took stock again.
        let decremented = InventorySide {
            stock: BEFORE.stock - 1,
            ..BEFORE
        };
        assert!(!decided_nothing_again(BEFORE, decremented));
        // The ledger kept its count but the decision was published again.
        let republished = InventorySide {
            events_end: BEFORE.events_end + 2,
            ..BEFORE
        };
        assert!(!decided_nothing_again(BEFORE, republished));
        let recorded = InventorySide {
            records: BEFORE.records + 1,
            ..BEFORE
        };
        assert!(!decided_nothing_again(BEFORE, recorded));
    }
}
