//! C2 — a throttled analytics consumer: its lag builds up during a burst
//! and drains afterwards, while the inventory consumer keeps up.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Legend, Outcome, Series, Table};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::ms;
use crate::streaming_kafka::{PartC, PartCOptions};
use crate::wait::until;

/// C2 — throttle and lag.
#[derive(Debug, Clone, Copy)]
pub struct C2Throttle;

/// How often lag is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The lag a drained consumer of the transactional `inventory-events` may
/// still show: one commit marker per partition (3) per transaction open at
/// once (6 inventory workers). See the README's Part C notes.
const MARKER_LAG: i64 = 3 * 6;

struct Measured {
    n: u64,
    produced: f64,
    /// When the run's wait for inventory ended (for the chart only: the
    /// claim reads the lag samples).
    inventory_waited: f64,
    drained: f64,
    /// analytics on order-events, analytics on inventory-events, inventory
    /// on order-events.
    lag: Vec<Vec<[f64; 2]>>,
    totals: (u64, u64),
    final_lag: (i64, i64, i64),
    readings: Vec<(String, OrderReading)>,
}

fn peak(points: &[[f64; 2]]) -> f64 {
    points.iter().map(|p| p[1]).fold(0.0, f64::max)
}

async fn measure(ctx: &Context, c: &PartC, n: u64) -> Result<Measured, LabError> {
    let analytics = c
        .analytics()
        .ok_or_else(|| LabError::Unavailable {
            needs: "the analytics consumer".to_owned(),
            hint: "Part C started without it".to_owned(),
        })?
        .analytics()
        .clone();
    let k = &c.config().kafka;
    let (agroup, igroup) = (
        c.options().analytics.group.clone(),
        c.options().inventory.group.clone(),
    );
    let (otopic, itopic) = (k.order_topic.clone(), k.inventory_topic.clone());
    // One order first: both consumers in their groups before the burst.
    let warm = c.orders(1);
    c.produce(&warm).await?;
    let a = analytics.clone();
    until(
        "analytics to count a first order",
        Duration::from_secs(60),
        move || {
            let t = a.totals();
            let done = t.orders >= 1 && t.inventory_events >= 1;
            async move { done }
        },
    )
    .await?;
    let total = n + 1;
    let origin = Instant::now();
    let sampler = c.sample_lag(
        vec![
            (agroup.clone(), otopic.clone()),
            (agroup.clone(), itopic.clone()),
            (igroup.clone(), otopic.clone()),
        ],
        SAMPLE_EVERY,
        origin,
    );
    let bar = ctx.bar(n, "orders through a throttled analytics consumer");
    let orders = c.orders(usize::try_from(n).unwrap_or(usize::MAX));
    let run = async {
        c.produce(&orders).await?;
        let produced = origin.elapsed().as_secs_f64();
        let (ig, ot, at) = (igroup.as_str(), otopic.as_str(), itopic.as_str());
        let ag = agroup.as_str();
        until(
            "the inventory consumer to catch up",
            Duration::from_secs(120),
            move || async move { c.lag(ig, ot).await.is_ok_and(|l| l == 0) },
        )
        .await?;
        let inventory_caught_up = origin.elapsed().as_secs_f64();
        let a = analytics.clone();
        let bar = bar.clone();
        until(
            "the analytics lag to drain",
            Duration::from_secs(300),
            move || {
                let a = a.clone();
                let bar = bar.clone();
                async move {
                    let t = a.totals();
                    bar.set_position(t.orders.saturating_sub(1));
                    t.orders >= total
                        && t.inventory_events >= total
                        && c.lag(ag, ot).await.is_ok_and(|l| l == 0)
                        && c.lag(ag, at).await.is_ok_and(|l| l <= MARKER_LAG)
                }
            },
        )
        .await?;
        let drained = origin.elapsed().as_secs_f64();
        // The drained state for a moment on the chart.
        tokio::time::sleep(SAMPLE_EVERY * 3).await;
        Ok::<_, LabError>((produced, inventory_caught_up, drained))
    }
    .await;
    bar.finish_and_clear();
    let lag = sampler.finish().await?;
    let (produced, inventory_caught_up, drained) = run?;
    let t = analytics.totals();
    let ids: Vec<String> = warm
        .iter()
        .chain(&orders)
        .map(|o| o.order_id.to_string())
        .collect();
    Ok(Measured {
        readings: c.readings_of(&ids).await?,
        n,
        produced,
        inventory_waited: inventory_caught_up,
        drained,
        lag,
        totals: (t.orders - 1, t.inventory_events - 1),
        final_lag: (
            c.lag(&agroup, &otopic).await?,
            c.lag(&agroup, &itopic).await?,
            c.lag(&igroup, &otopic).await?,
        ),
    })
}

#[async_trait]
impl Experiment for C2Throttle {
    fn id(&self) -> &'static str {
        "C2"
    }

    fn title(&self) -> &'static str {
        "A throttled analytics consumer: lag builds up and drains"
    }

    fn shows(&self) -> &'static str {
        "The assignment's second streaming test: the analytics consumer is slowed down \
         (`THROTTLE_MS`, a pause before every record) and a burst is produced. Its consumer \
         group falls behind — *lag*, the records between its committed offsets and the end of \
         each topic, grows — while the inventory consumer, unthrottled, keeps up: the backlog \
         accumulates only where the slow consumer is. After the burst the lag drains to zero \
         at the throttled pace, and nothing is lost: analytics ends up counting every order. \
         Lag is read with the lab's own offset tools (the same numbers \
         `kafka-consumer-groups --describe` shows)."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.size("c2.orders", 3000, 600)?;
        let throttle = ctx.millis(
            "c2.throttle_ms",
            Duration::from_millis(2),
            Duration::from_millis(3),
        )?;
        let c = ctx
            .part_c(PartCOptions {
                analytics_throttle: throttle,
                ..PartCOptions::default()
            })
            .await?;
        let measured = measure(ctx, &c, n).await;
        c.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("orders", m.n);
        out.setup("analytics_throttle_ms", ms(throttle));
        out.setup("lag_sampled_every_ms", ms(SAMPLE_EVERY));
        let [a_orders, a_inventory, inventory] =
            [0, 1, 2].map(|i| m.lag.get(i).cloned().unwrap_or_default());
        let peak_a = peak(&a_orders);
        let peak_i = peak(&inventory);
        // When the samples (not the run's waits, which are one after the
        // other) saw inventory caught up, and how far behind analytics was.
        let kept_up = caught_up_while_behind(&inventory, &a_orders, m.produced);
        let inventory_caught_up = kept_up.map(|(at, _)| at);
        let mut t = Table::new(
            "lag",
            "Lag (records behind) of each consumer group",
            &[
                "Group / topic",
                "Peak lag",
                "Lag at the end",
                "Caught up after (s)",
            ],
        );
        t.row(vec![
            "analytics / order-events".into(),
            (peak_a as u64).into(),
            m.final_lag.0.into(),
            m.drained.into(),
        ]);
        t.row(vec![
            "analytics / inventory-events".into(),
            (peak(&a_inventory) as u64).into(),
            m.final_lag.1.into(),
            m.drained.into(),
        ]);
        t.row(vec![
            "inventory / order-events".into(),
            (peak_i as u64).into(),
            m.final_lag.2.into(),
            inventory_caught_up.map_or_else(|| "never".into(), Cell::from),
        ]);
        out.table(t);
        out.metric("orders", m.n as f64);
        out.metric("analytics.peak_lag", peak_a);
        out.metric("inventory.peak_lag", peak_i);
        out.metric("produced_s", m.produced);
        if let Some(at) = inventory_caught_up {
            out.metric("inventory.caught_up_s", at);
        }
        out.metric("analytics.drained_s", m.drained);

        out.chart(
            Chart::new(
                "lag",
                &format!(
                    "C2: consumer lag during a burst of {}, analytics throttled {} ms/record",
                    m.n,
                    ms(throttle)
                ),
                Axis::linear("time since the burst was produced (s)"),
                Axis::linear("lag (records)"),
            )
            .with_series(Series::line("analytics on order-events", a_orders.clone()))
            .with_series(Series::line("analytics on inventory-events", a_inventory))
            .with_series(Series::line("inventory on order-events", inventory))
            .with_guide(Guide::x("burst produced", m.produced))
            .with_guide(Guide::x("inventory caught up", m.inventory_waited))
            .with_guide(Guide::x("analytics drained", m.drained))
            .with_legend(Legend::UpperRight),
        );

        let nf = m.n as f64;
        out.conclude(
            "The throttled analytics group builds up lag during the burst",
            peak_a >= nf * 0.25,
            format!(
                "peak lag {peak_a:.0} records on order-events for a burst of {} (claim: at least \
                 a quarter of it)",
                m.n
            ),
        );
        out.conclude(
            "The unthrottled inventory consumer keeps up: the backlog is only where the slow \
             consumer is",
            kept_up.is_some_and(|(_, behind)| behind >= nf * 0.1),
            match kept_up {
                Some((at, behind)) => format!(
                    "the lag samples show inventory at 0 {at:.2} s after the burst began \
                     (produced after {:.2} s), when analytics was still {behind:.0} records \
                     behind on order-events (claim: at least a tenth of the burst, {:.0})",
                    m.produced,
                    nf * 0.1
                ),
                None => format!(
                    "no lag sample after the burst was produced ({:.2} s) shows inventory at 0",
                    m.produced
                ),
            },
        );
        out.conclude(
            "Analytics counts every order once: nothing lost or doubled through the lag",
            m.totals.0 == m.n && m.totals.1 == m.n,
            format!(
                "analytics counted {} orders and {} inventory events of {} produced (it drained \
                 after {:.2} s; final lag {} on order-events, {} on inventory-events, ≤ \
                 {MARKER_LAG} being transaction markers)",
                m.totals.0, m.totals.1, m.n, m.drained, m.final_lag.0, m.final_lag.1
            ),
        );
        out.note(format!(
            "Each analytics record waits {} ms, so {} records take at least {:.1} s per topic: \
             the drain's slope is the throttle, not Kafka.",
            ms(throttle),
            m.n,
            nf * throttle.as_secs_f64()
        ));
        out.note(
            "A drained group can show a few records of lag on `inventory-events`: that topic \
             is written in Kafka transactions, each leaving a commit marker after its last \
             record, and the consumer commits “last record + 1”.",
        );
        out.orders(
            OrderOutcomes::new(
                "the burst (and the first order)",
                &[OrderClass::Reserved, OrderClass::Failed],
            )
            .record_all(&m.readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

/// From the sampled lags (`[seconds, records]`): the first reading at or
/// after `produced` (the whole burst sent) with inventory's lag at 0, and
/// analytics' lag at its first reading from then on. `None` when inventory
/// never caught up in the samples.
fn caught_up_while_behind(
    inventory: &[[f64; 2]],
    analytics: &[[f64; 2]],
    produced: f64,
) -> Option<(f64, f64)> {
    let at = inventory.iter().find(|p| p[0] >= produced && p[1] <= 0.0)?[0];
    let behind = analytics.iter().find(|p| p[0] >= at).map_or(0.0, |p| p[1]);
    Some((at, behind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_up_needs_inventory_at_zero_while_analytics_is_behind() {
        let analytics = [
            [0.0, 0.0],
            [0.5, 400.0],
            [1.0, 500.0],
            [2.0, 300.0],
            [4.0, 0.0],
        ];
        let inventory = [[0.0, 0.0], [0.5, 200.0], [1.0, 0.0], [2.0, 0.0]];
        assert_eq!(
            caught_up_while_behind(&inventory, &analytics, 0.6),
            Some((1.0, 500.0))
        );
        // A consumer that never catches up.
        let stuck = [[0.0, 0.0], [0.5, 200.0], [1.0, 150.0], [2.0, 100.0]];
        assert_eq!(caught_up_while_behind(&stuck, &analytics, 0.6), None);
        // Caught up only once analytics had drained too: nothing behind.
        let late = [[0.5, 200.0], [4.0, 0.0]];
        assert_eq!(
            caught_up_while_behind(&late, &analytics, 0.6),
            Some((4.0, 0.0))
        );
        // A lag of 0 before the burst was produced does not count.
        assert_eq!(
            caught_up_while_behind(&inventory[..2], &analytics, 0.6),
            None
        );
    }
}
