//! A1 — baseline latency: N orders from one client, nothing injected.

use std::time::Instant;

use async_trait::async_trait;

use super::common::{latencies, statuses, summary, summary_cells};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Chart, Experiment, Outcome, Series, Table};
use crate::load::{Pacing, count_status};
use crate::outcomes::{OrderClass, OrderOutcomes};
use crate::stats::cdf;

/// A healthy p50 above this would mean something is wrong with the chain,
/// not that it is a little slow: two local HTTP hops take about a
/// millisecond.
const HEALTHY_P50_MS: f64 = 50.0;

/// A1 — baseline latency.
#[derive(Debug, Clone, Copy)]
pub struct A1Baseline;

#[async_trait]
impl Experiment for A1Baseline {
    fn id(&self) -> &'static str {
        "A1"
    }

    fn title(&self) -> &'static str {
        "Baseline latency"
    }

    fn shows(&self) -> &'static str {
        "What one client waits for an order when every service is healthy: the cost of the \
         synchronous chain Order → Inventory (reserve) → Notification (send), two HTTP hops \
         and a durable reservation, measured end to end over N orders sent one after another \
         (keep-alive, one connection). This is the yardstick the other experiments compare to."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.settings().orders;
        let app = ctx.part_a(|_| {}).await?;
        let client = app.client().clone();
        let stock_before = client.stock().await.ok();
        let pacing = ctx.pacing();
        let bar = ctx.bar(n, &pacing.title("orders"));
        let origin = Instant::now();
        let samples = {
            let client = &client;
            pacing.send(n, origin, &bar, |o| client.order(o)).await
        };
        let wall = origin.elapsed();
        bar.finish_and_clear();
        let stock_after = client.stock().await.ok();
        let readings = app.readings(&samples).await;
        app.stop().await;
        let readings = readings?;

        let mut out = Outcome::default();
        out.setup("orders", n);
        out.setup("load", pacing.describe());
        if pacing == Pacing::Closed {
            out.setup("clients", 1);
        }
        out.setup("item", client.item());
        let s = summary(&samples);
        let ok = count_status(&samples, 201);
        let throughput = n as f64 / wall.as_secs_f64();

        let mut t = Table::new(
            "latency",
            &pacing.title("Latency of N orders"),
            &[
                "Orders", "Statuses", "Min (ms)", "Avg (ms)", "P50 (ms)", "P95 (ms)", "P99 (ms)",
                "Max (ms)", "Orders/s",
            ],
        );
        let mut row = vec![n.into(), statuses(&samples).into()];
        row.extend(summary_cells(&s));
        row.push(throughput.into());
        t.row(row);
        out.table(t);
        out.metrics(s.metrics("latency"));
        out.metric("orders", n as f64);
        out.metric("confirmed", ok as f64);
        out.metric("throughput_per_s", throughput);

        out.chart(
            Chart::new(
                "latency-cdf",
                &pacing.title(&format!("A1: latency of {n} orders (CDF)")),
                Axis::log("latency (ms, log scale)"),
                Axis::linear("orders answered within (%)"),
            )
            .with_series(Series::line(
                "healthy chain",
                cdf(&latencies(&samples), 400),
            )),
        );

        out.conclude(
            "Every order is confirmed when all services are healthy",
            ok as u64 == n,
            format!("{ok}/{n} answered 201 ({})", statuses(&samples)),
        );
        match (stock_before, stock_after) {
            (Some(before), Some(after)) => {
                let used = before.saturating_sub(after);
                out.conclude(
                    "Each confirmed order reserved its stock exactly once",
                    used == ok as u64,
                    format!(
                        "stock went {before} → {after}: {used} reserved for {ok} confirmed orders"
                    ),
                );
            }
            _ => out.note("Stock was not checked: the inventory service's URL is not known."),
        }
        out.orders(
            OrderOutcomes::new("healthy chain", &[OrderClass::Notified]).record_all(&readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        out.conclude(
            "A healthy synchronous chain answers in milliseconds",
            s.p50_ms < HEALTHY_P50_MS,
            format!(
                "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms (claim: p50 < {HEALTHY_P50_MS} ms)",
                s.p50_ms, s.p95_ms, s.p99_ms
            ),
        );
        out.note(format!(
            "The first order also opens the client's connection; the max ({:.2} ms) is usually \
             that order or a scheduling hiccup, which is why p50/p95 are the numbers to compare.",
            s.max_ms
        ));
        Ok(out)
    }
}
