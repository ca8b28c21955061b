//! A2 — delay injection: the same orders before and while inventory is
//! slowed down by `POST /configure {"delay": …}`.

use std::time::Instant;

use async_trait::async_trait;
use campusfood_core::fault::FaultUpdate;

use super::common::{latencies, secs, statuses, summary};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::load::{OrderClient, Sample, count_status};
use crate::outcomes::{OrderClass, OrderOutcomes};
use crate::stats::{cdf, ms};

/// The median increase may exceed the delay by this share plus
/// [`SLACK_MS`] (scheduling, the sleep's own slack) and still count as "the
/// delay, not more".
const SLACK: f64 = 0.1;
/// See [`SLACK`].
const SLACK_MS: f64 = 5.0;

/// "One for one": the median latency rose by the delay, give or take
/// [`SLACK`] of it plus [`SLACK_MS`] (the baseline's own noise; that no
/// order beat the delay is A2's first claim).
fn one_for_one(p50_increase_ms: f64, delay_ms: f64) -> bool {
    (p50_increase_ms - delay_ms).abs() <= delay_ms * SLACK + SLACK_MS
}

/// A2 — delay injection.
#[derive(Debug, Clone, Copy)]
pub struct A2Delay;

async fn measure(
    ctx: &Context,
    client: &OrderClient,
) -> Result<(Vec<Sample>, Vec<Sample>), LabError> {
    let s = ctx.settings();
    let pacing = ctx.pacing();
    client.heal_inventory().await?;
    let bar = ctx.bar(s.orders, "baseline orders");
    let baseline = pacing
        .send(s.orders, Instant::now(), &bar, |o| client.order(o))
        .await;
    bar.finish_and_clear();
    client
        .configure_inventory(FaultUpdate {
            delay: Some(s.delay.as_secs_f64()),
            failure_rate: None,
            seed: None,
        })
        .await?;
    let bar = ctx.bar(
        s.delayed_orders,
        &format!("orders, inventory delayed {}", secs(s.delay)),
    );
    let delayed = pacing
        .send(s.delayed_orders, Instant::now(), &bar, |o| client.order(o))
        .await;
    bar.finish_and_clear();
    Ok((baseline, delayed))
}

#[async_trait]
impl Experiment for A2Delay {
    fn id(&self) -> &'static str {
        "A2"
    }

    fn title(&self) -> &'static str {
        "Delay injection"
    }

    fn shows(&self) -> &'static str {
        "That a synchronous caller inherits every downstream delay: with a delay injected into \
         the InventoryService at runtime (`POST /configure {\"delay\": …}`), each order blocks \
         the client for the whole delay plus the baseline — latency rises by the delay, one \
         for one, and nothing in the OrderService can absorb it. Orders still succeed while \
         the delay stays under the 5 s downstream timeout (A3 shows what happens above it)."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let s = ctx.settings().clone();
        let app = ctx.part_a(|_| {}).await?;
        let timeout = app
            .config()
            .map_or(s.timeout, |c| c.http.downstream_timeout);
        if s.delay >= timeout {
            app.stop().await;
            return Err(LabError::Setting {
                key: "delay".to_owned(),
                message: format!(
                    "{} is not under the order service's timeout {}: A2 measures a slow, not a \
                     timed-out, inventory (A3 does that)",
                    secs(s.delay),
                    secs(timeout)
                ),
            });
        }
        let client = app.client().clone();
        let measured = measure(ctx, &client).await;
        let healed = client.heal_inventory().await;
        let readings = match &measured {
            Ok((baseline, delayed)) => {
                Some((app.readings(baseline).await, app.readings(delayed).await))
            }
            Err(_) => None,
        };
        app.stop().await;
        let (baseline, delayed) = measured?;
        healed?;
        let (read_baseline, read_delayed) = match readings {
            Some((b, d)) => (b?, d?),
            None => (Vec::new(), Vec::new()),
        };

        let mut out = Outcome::default();
        out.setup("baseline_orders", s.orders);
        out.setup("delayed_orders", s.delayed_orders);
        out.setup("delay_ms", ms(s.delay));
        out.setup("load", ctx.pacing().describe());
        out.setup("downstream_timeout_ms", ms(timeout));
        let b = summary(&baseline);
        let d = summary(&delayed);
        let delay_ms = ms(s.delay);
        let increase = d.avg_ms - b.avg_ms;

        let mut t = Table::new(
            "latency",
            &ctx.pacing().title("Baseline vs injected delay"),
            &[
                "Scenario", "Orders", "Statuses", "Min (ms)", "Avg (ms)", "P50 (ms)", "P95 (ms)",
                "Max (ms)",
            ],
        );
        for (name, samples, sum) in [
            ("Baseline".to_owned(), &baseline, &b),
            (format!("{} delay", secs(s.delay)), &delayed, &d),
        ] {
            t.row(vec![
                name.into(),
                samples.len().into(),
                statuses(samples).into(),
                sum.min_ms.into(),
                sum.avg_ms.into(),
                sum.p50_ms.into(),
                sum.p95_ms.into(),
                sum.max_ms.into(),
            ]);
        }
        t.row(vec![
            "Increase".into(),
            Cell::Text(String::new()),
            Cell::Text(String::new()),
            (d.min_ms - b.min_ms).into(),
            increase.into(),
            (d.p50_ms - b.p50_ms).into(),
            (d.p95_ms - b.p95_ms).into(),
            (d.max_ms - b.max_ms).into(),
        ]);
        out.table(t);
        out.metrics(b.metrics("baseline"));
        out.metrics(d.metrics("delayed"));
        out.metric("delay_ms", delay_ms);
        out.metric("increase.avg_ms", increase);

        out.chart(
            Chart::new(
                "latency-cdf",
                &ctx.pacing().title(&format!(
                    "A2: latency, baseline vs {} delay on inventory (CDF)",
                    secs(s.delay)
                )),
                Axis::log("latency (ms, log scale)"),
                Axis::linear("orders answered within (%)"),
            )
            .with_series(Series::line("baseline", cdf(&latencies(&baseline), 400)))
            .with_series(Series::line(
                &format!("{} delay", secs(s.delay)),
                cdf(&latencies(&delayed), 400),
            ))
            .with_guide(Guide::x("injected delay", delay_ms)),
        );

        out.conclude(
            "Every delayed order blocked the client for at least the injected delay",
            d.min_ms >= delay_ms,
            format!(
                "fastest delayed order {:.2} ms ≥ delay {delay_ms:.0} ms (baseline min {:.2} ms)",
                d.min_ms, b.min_ms
            ),
        );
        let p50_increase = d.p50_ms - b.p50_ms;
        out.conclude(
            "Latency rises by the delay, one for one — not less, not much more",
            one_for_one(p50_increase, delay_ms),
            format!(
                "p50 {:.2} → {:.2} ms: +{p50_increase:.2} ms for a {delay_ms:.0} ms delay \
                 (claim: the delay ± {:.0} % + {SLACK_MS:.0} ms, ± {:.1} ms)",
                b.p50_ms,
                d.p50_ms,
                SLACK * 100.0,
                delay_ms * SLACK + SLACK_MS
            ),
        );
        out.orders(
            OrderOutcomes::new("baseline", &[OrderClass::Notified]).record_all(&read_baseline),
        );
        out.orders(
            OrderOutcomes::new(&format!("{} delay", secs(s.delay)), &[OrderClass::Notified])
                .record_all(&read_delayed),
        );
        out.conclude_nothing_lost_nothing_twice();
        let ok_b = count_status(&baseline, 201);
        let ok_d = count_status(&delayed, 201);
        out.conclude(
            "Slow is not failed: every order still succeeds with the delay under the timeout",
            ok_b == baseline.len() && ok_d == delayed.len(),
            format!(
                "{ok_b}/{} baseline and {ok_d}/{} delayed orders answered 201; delay {} < \
                 timeout {}",
                baseline.len(),
                delayed.len(),
                secs(s.delay),
                secs(timeout)
            ),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_for_one_means_the_delay_and_little_more() {
        assert!(one_for_one(301.0, 300.0));
        assert!(one_for_one(334.0, 300.0));
        assert!(one_for_one(298.0, 300.0), "the baseline's noise");
        assert!(!one_for_one(250.0, 300.0), "well under the delay");
        assert!(
            !one_for_one(400.0, 300.0),
            "a third more is not one for one"
        );
        assert!(!one_for_one(600.0, 300.0), "the delay twice");
    }
}
