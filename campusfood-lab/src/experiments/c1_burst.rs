//! C1 — a burst of orders into Kafka (the assignment's 10k test): producer
//! throughput, end-to-end processing, and the analytics metrics sampled
//! while it happens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::fault::decide;
use campusfood_streaming_kafka::inventory::DEFAULT_SEED;
use campusfood_streaming_kafka::{MetricsSnapshot, Totals};

use super::common::secs;
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Chart, Experiment, Guide, Legend, Outcome, Series, Table};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::ms;
use crate::streaming_kafka::{PartC, PartCOptions};
use crate::wait::until;

/// C1 — 10k burst.
#[derive(Debug, Clone, Copy)]
pub struct C1Burst;

/// The inventory consumer's `FAIL_RATE` (the contract's default).
const FAIL_RATE: f64 = 0.05;

/// How often analytics is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One reading of analytics.
struct Reading {
    at: f64,
    snapshot: MetricsSnapshot,
}

struct Measured {
    n: usize,
    produce: Duration,
    /// Since the origin (the first order queued): every order and outcome
    /// counted by analytics.
    all_counted: f64,
    /// Since the origin: the window has passed and the readings stop.
    readings: Vec<Reading>,
    totals: Totals,
    predicted_failures: usize,
    decisions: u64,
    inventory_lag: i64,
    order_readings: Vec<(String, OrderReading)>,
}

fn counted(t: &Totals, n: u64) -> bool {
    t.orders >= n && t.inventory_events >= n
}

async fn measure(
    ctx: &Context,
    c: &PartC,
    n: usize,
    window: Duration,
) -> Result<Measured, LabError> {
    let analytics = c
        .analytics()
        .ok_or_else(|| LabError::Unavailable {
            needs: "the analytics consumer".to_owned(),
            hint: "Part C started without it".to_owned(),
        })?
        .analytics()
        .clone();
    // One order first, so the burst does not include the consumers joining
    // their groups.
    let warm = c.orders(1);
    c.produce(&warm).await?;
    let a = analytics.clone();
    until(
        "analytics to count a first order",
        Duration::from_secs(60),
        move || {
            let done = counted(&a.totals(), 1);
            async move { done }
        },
    )
    .await?;
    let base = analytics.totals();
    let total = n as u64 + base.orders;
    let orders = c.orders(n);
    let predicted_failures = orders
        .iter()
        .filter(|o| decide(DEFAULT_SEED, o.order_id.as_str(), 1) < FAIL_RATE)
        .count();
    let bar = ctx.bar(n as u64, "orders counted by analytics");
    let stop = AtomicBool::new(false);
    let origin = Instant::now();
    let sampling = async {
        let mut readings = Vec::new();
        loop {
            let snapshot = analytics.snapshot();
            bar.set_position(snapshot.totals.orders.saturating_sub(base.orders));
            readings.push(Reading {
                at: origin.elapsed().as_secs_f64(),
                snapshot,
            });
            if stop.load(Ordering::SeqCst) {
                return readings;
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    };
    let work = async {
        c.produce(&orders).await?;
        let produce = origin.elapsed();
        let a = analytics.clone();
        until(
            &format!("analytics to count {n} orders and outcomes"),
            Duration::from_secs(120),
            move || {
                let done = counted(&a.totals(), total);
                async move { done }
            },
        )
        .await?;
        let all_counted = origin.elapsed().as_secs_f64();
        // Keep reading until the burst has left the window, so the chart
        // shows orders_per_min fall back (the window's own length).
        tokio::time::sleep(window + Duration::from_secs(1)).await;
        stop.store(true, Ordering::SeqCst);
        Ok::<_, LabError>((produce, all_counted))
    };
    let (readings, work) = tokio::join!(sampling, work);
    bar.finish_and_clear();
    let (produce, all_counted) = match work {
        Ok(w) => w,
        Err(e) => return Err(e),
    };
    let t = analytics.totals();
    let ids: Vec<String> = warm
        .iter()
        .chain(&orders)
        .map(|o| o.order_id.to_string())
        .collect();
    Ok(Measured {
        order_readings: c.readings_of(&ids).await?,
        n,
        produce,
        all_counted,
        readings,
        totals: Totals {
            orders: t.orders - base.orders,
            inventory_events: t.inventory_events - base.inventory_events,
            successes: t.successes - base.successes,
            failures: t.failures - base.failures,
            duplicates_dropped: t.duplicates_dropped - base.duplicates_dropped,
            malformed: t.malformed - base.malformed,
        },
        predicted_failures,
        decisions: c.decisions().await?,
        inventory_lag: c
            .lag(&c.options().inventory.group, &c.config().kafka.order_topic)
            .await?,
    })
}

#[async_trait]
impl Experiment for C1Burst {
    fn id(&self) -> &'static str {
        "C1"
    }

    fn title(&self) -> &'static str {
        "A 10k burst through Kafka"
    }

    fn shows(&self) -> &'static str {
        "The assignment's first streaming test: a burst of orders produced to `order-events` \
         as fast as Kafka takes them, decided by the inventory consumer (exactly once: \
         Kafka transactions, the durable ledger) into `inventory-events`, and counted by the \
         analytics consumer from both topics, whose `/metrics` are read every 100 ms. The \
         producer is done in a blink; processing follows at the consumers' pace; \
         `orders_per_min` jumps with the burst and falls back once the burst leaves the \
         rolling window; `failure_rate_pct` tracks `FAIL_RATE` — and since failures are a \
         seeded function of the order id, the lab predicts exactly which orders fail."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = usize::try_from(ctx.size("c1.orders", 10_000, 1_000)?).unwrap_or(usize::MAX);
        let window = ctx.millis(
            "c1.window_ms",
            Duration::from_secs(10),
            Duration::from_secs(2),
        )?;
        let window = Duration::from_secs(window.as_secs().max(1));
        let c = ctx
            .part_c(PartCOptions {
                fail_rate: FAIL_RATE,
                window,
                ..PartCOptions::default()
            })
            .await?;
        let measured = measure(ctx, &c, n, window).await;
        c.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("orders", m.n);
        out.setup("fail_rate", FAIL_RATE);
        out.setup("fail_seed", DEFAULT_SEED);
        out.setup("window_s", window.as_secs());
        out.setup("items", crate::streaming_kafka::ITEMS);
        let produce_rate = m.n as f64 / m.produce.as_secs_f64().max(f64::MIN_POSITIVE);
        let e2e_rate = m.n as f64 / m.all_counted.max(f64::MIN_POSITIVE);
        let peak_per_min = m
            .readings
            .iter()
            .map(|r| r.snapshot.orders_per_min)
            .fold(0.0, f64::max);
        let last_per_min = m.readings.last().map_or(0.0, |r| r.snapshot.orders_per_min);
        let share = m.totals.failures as f64 / m.totals.inventory_events.max(1) as f64;

        let mut t = Table::new(
            "burst",
            "The burst",
            &[
                "Orders",
                "Produced in (ms)",
                "Producer events/s",
                "All counted by analytics after (ms)",
                "End-to-end orders/s",
                "Peak orders_per_min",
                "orders_per_min at the end",
            ],
        );
        t.row(vec![
            m.n.into(),
            ms(m.produce).into(),
            produce_rate.into(),
            (m.all_counted * 1000.0).into(),
            e2e_rate.into(),
            peak_per_min.into(),
            last_per_min.into(),
        ]);
        out.table(t);
        let mut o = Table::new(
            "outcomes",
            "What analytics counted (totals of this burst)",
            &[
                "Orders",
                "Inventory events",
                "Successes",
                "Failures",
                "Failures predicted by the seed",
                "Failure rate (%)",
                "Duplicates dropped",
                "Malformed",
            ],
        );
        o.row(vec![
            m.totals.orders.into(),
            m.totals.inventory_events.into(),
            m.totals.successes.into(),
            m.totals.failures.into(),
            m.predicted_failures.into(),
            (share * 100.0).into(),
            m.totals.duplicates_dropped.into(),
            m.totals.malformed.into(),
        ]);
        out.table(o);
        out.metric("orders", m.n as f64);
        out.metric("produce_ms", ms(m.produce));
        out.metric("produce_per_s", produce_rate);
        out.metric("all_counted_ms", m.all_counted * 1000.0);
        out.metric("e2e_per_s", e2e_rate);
        out.metric("orders_per_min.peak", peak_per_min);
        out.metric("failures", m.totals.failures as f64);
        out.metric("failures.predicted", m.predicted_failures as f64);
        out.metric("failure_rate_pct", share * 100.0);

        let series = |f: &dyn Fn(&MetricsSnapshot) -> f64| -> Vec<[f64; 2]> {
            m.readings.iter().map(|r| [r.at, f(&r.snapshot)]).collect()
        };
        // The counting chart stops a little after everything was counted
        // (the readings go on through the window for the next chart).
        let until_counted = m.all_counted * 1.5 + 0.3;
        let counting = |f: &dyn Fn(&MetricsSnapshot) -> f64| -> Vec<[f64; 2]> {
            series(f)
                .into_iter()
                .filter(|p| p[0] <= until_counted)
                .collect()
        };
        let base_orders = m.readings.first().map_or(0, |r| r.snapshot.totals.orders);
        let base_events = m
            .readings
            .first()
            .map_or(0, |r| r.snapshot.totals.inventory_events);
        out.chart(
            Chart::new(
                "counted",
                &format!("C1: a burst of {} orders — produced, decided, counted", m.n),
                Axis::linear("time since the first order was queued (s)"),
                Axis::linear("orders"),
            )
            .with_series(Series::line(
                "orders counted by analytics",
                counting(&|s| s.totals.orders.saturating_sub(base_orders) as f64),
            ))
            .with_series(Series::line(
                "inventory events counted by analytics",
                counting(&|s| s.totals.inventory_events.saturating_sub(base_events) as f64),
            ))
            .with_guide(Guide::x("producer done", m.produce.as_secs_f64()))
            .with_guide(Guide::x("all counted", m.all_counted))
            .with_legend(Legend::LowerRight),
        );
        out.chart(
            Chart::new(
                "metrics",
                &format!(
                    "C1: /metrics over time — orders_per_min ({} window)",
                    secs(window)
                ),
                Axis::linear("time since the first order was queued (s)"),
                Axis::linear("orders_per_min"),
            )
            .with_series(Series::line(
                "orders_per_min",
                series(&|s| s.orders_per_min),
            ))
            .with_guide(Guide::x("all counted", m.all_counted))
            .with_legend(Legend::UpperRight),
        );
        out.chart(
            Chart::new(
                "failure-rate",
                "C1: /metrics over time — failure_rate_pct",
                Axis::linear("time since the first order was queued (s)"),
                Axis::linear("failure_rate_pct (%)"),
            )
            .with_series(Series::line(
                "failure_rate_pct",
                m.readings
                    .iter()
                    .filter(|r| r.snapshot.inventory_events > 0)
                    .map(|r| [r.at, r.snapshot.failure_rate_pct])
                    .collect(),
            ))
            .with_guide(Guide::y("FAIL_RATE", FAIL_RATE * 100.0)),
        );

        let n64 = m.n as u64;
        out.conclude(
            "Every order is decided and counted exactly once",
            m.totals.orders == n64
                && m.totals.inventory_events == n64
                && m.totals.duplicates_dropped == 0
                && m.inventory_lag == 0,
            format!(
                "analytics counted {} orders and {} inventory events for {} produced; {} \
                 duplicates dropped; the inventory group's lag is {}",
                m.totals.orders,
                m.totals.inventory_events,
                m.n,
                m.totals.duplicates_dropped,
                m.inventory_lag
            ),
        );
        out.conclude(
            "The producer finishes long before the processing does (in at most half the time)",
            producer_long_before(m.produce.as_secs_f64(), m.all_counted),
            format!(
                "{} orders produced in {:.0} ms ({produce_rate:.0}/s); all decided and counted \
                 after {:.0} ms ({e2e_rate:.0}/s) — the producer took {:.0} % of that (claim: \
                 at most 50 %)",
                m.n,
                ms(m.produce),
                m.all_counted * 1000.0,
                100.0 * m.produce.as_secs_f64() / m.all_counted.max(f64::MIN_POSITIVE)
            ),
        );
        let expected_peak = m.n as f64 * 60.0 / window.as_secs_f64();
        out.conclude(
            "orders_per_min jumps with the burst and falls back once it leaves the window",
            peak_per_min >= expected_peak * 0.5 && last_per_min <= peak_per_min * 0.1,
            format!(
                "peak {peak_per_min:.0} (all of the burst in the window would be {} × 60 / {} s \
                 = {expected_peak:.0}; claim: at least half of it); {last_per_min:.0} once the \
                 window has passed (claim: at most a tenth of the peak)",
                m.n,
                window.as_secs()
            ),
        );
        out.conclude(
            "The failures are exactly the seeded draw's",
            m.totals.failures as usize == m.predicted_failures,
            format!(
                "{} failures counted, {} predicted by decide(seed {DEFAULT_SEED}, order id) < \
                 {FAIL_RATE}",
                m.totals.failures, m.predicted_failures,
            ),
        );
        let (low, high) = fail_rate_band(FAIL_RATE, m.totals.inventory_events);
        out.conclude(
            "The failure rate is about FAIL_RATE (within 3 standard errors for this sample)",
            (low..=high).contains(&share),
            format!(
                "{:.2} % of {} decisions failed; FAIL_RATE {:.0} % ± 3·√(p(1−p)/n) is {:.2}–{:.2} %",
                share * 100.0,
                m.totals.inventory_events,
                FAIL_RATE * 100.0,
                low * 100.0,
                high * 100.0
            ),
        );
        out.note(format!(
            "The window is {} here (the contract's default is 60 s) so that the fall is seen \
             within the run; `--set c1.window_ms=60000` for the original. An injected failure \
             is an outcome, not a retry: the ledger holds a reservation only for the \
             successful orders ({} records, the warm-up order included).",
            secs(window),
            m.decisions
        ));
        out.orders(
            OrderOutcomes::new(
                "the burst (and the first order)",
                &[OrderClass::Reserved, OrderClass::Failed],
            )
            .record_all(&m.order_readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

/// "Long before": the producer was done in at most half the time it took
/// until the last order was decided and counted (both since the burst's
/// first send). The processing cannot end before the producing, so a mere
/// `<` would always hold.
fn producer_long_before(produce_s: f64, all_counted_s: f64) -> bool {
    produce_s * 2.0 <= all_counted_s
}

/// The band a failure share of `n` independent draws at rate `p` falls in
/// about 99.7 % of the time: `p ± 3·√(p(1−p)/n)`, clamped to 0–1 (empty
/// for no draws).
fn fail_rate_band(p: f64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (1.0, 0.0);
    }
    let se = (p * (1.0 - p) / n as f64).sqrt();
    ((p - 3.0 * se).max(0.0), (p + 3.0 * se).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_that_only_just_finishes_first_is_not_long_before() {
        assert!(producer_long_before(0.112, 0.513));
        assert!(!producer_long_before(0.4, 0.5));
        assert!(!producer_long_before(0.5, 0.5));
    }

    #[test]
    fn the_fail_rate_band_narrows_with_the_sample_and_excludes_other_rates() {
        let (low, high) = fail_rate_band(0.05, 10_000);
        assert!((0.043..0.044).contains(&low) && (0.056..0.057).contains(&high));
        assert!(!(low..=high).contains(&0.10), "twice the rate is outside");
        assert!(
            !(low..=high).contains(&0.0),
            "no failures at all is outside"
        );
        let (low, high) = fail_rate_band(0.05, 1_000);
        assert!(low > 0.02 && high < 0.08, "{low} {high}");
        let (low, high) = fail_rate_band(0.05, 0);
        assert!(low > high, "nothing decided: no share is about FAIL_RATE");
    }
}
