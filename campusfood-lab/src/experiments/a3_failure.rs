//! A3 — failure injection: inventory failing every call (→ 503), then
//! inventory slower than the order service's timeout (→ 504).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::fault::FaultUpdate;

use super::common::{by_order, first_error, secs, statuses, summary};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::load::{OrderClient, Sample, count_status, sequential};
use crate::outcomes::{OrderClass, OrderOutcomes};
use crate::stats::ms;

/// A3 — failure injection.
#[derive(Debug, Clone, Copy)]
pub struct A3Failure;

struct Measured {
    failed: Vec<Sample>,
    timed_out: Vec<Sample>,
    stock_start: u64,
    stock_after_failures: u64,
    /// Read once the injected delay had elapsed for every timed-out order.
    stock_after_timeouts: u64,
}

async fn measure(
    ctx: &Context,
    client: &OrderClient,
    delay: Duration,
) -> Result<Measured, LabError> {
    let s = ctx.settings();
    client.heal_inventory().await?;
    let stock_start = client.stock().await?;
    client
        .configure_inventory(FaultUpdate {
            delay: Some(0.0),
            failure_rate: Some(1.0),
            seed: None,
        })
        .await?;
    let bar = ctx.bar(s.failure_orders, "orders, inventory failing");
    let failed = sequential(client, s.failure_orders, Instant::now(), &bar).await;
    bar.finish_and_clear();
    let stock_after_failures = client.stock().await?;

    client
        .configure_inventory(FaultUpdate {
            delay: Some(delay.as_secs_f64()),
            failure_rate: Some(0.0),
            seed: None,
        })
        .await?;
    let bar = ctx.bar(
        s.timeout_orders,
        &format!("orders, inventory delayed {}", secs(delay)),
    );
    let origin = Instant::now();
    let timed_out = sequential(client, s.timeout_orders, origin, &bar).await;
    bar.finish_and_clear();
    client.heal_inventory().await?;
    // Part of the experiment, not a wait for a condition: let the injected
    // delay elapse for every timed-out order, then see whether inventory
    // went on to reserve after the order service gave up.
    let last_sent = timed_out.last().map_or(Duration::ZERO, |s| s.sent);
    tokio::time::sleep_until((origin + last_sent + delay + Duration::from_millis(200)).into())
        .await;
    let stock_after_timeouts = client.stock().await?;
    Ok(Measured {
        failed,
        timed_out,
        stock_start,
        stock_after_failures,
        stock_after_timeouts,
    })
}

#[async_trait]
impl Experiment for A3Failure {
    fn id(&self) -> &'static str {
        "A3"
    }

    fn title(&self) -> &'static str {
        "Failure injection: 503 and 504"
    }

    fn shows(&self) -> &'static str {
        "How downstream failures cascade to a synchronous caller. Inventory failing every call \
         (`failure_rate` 1.0) turns every order into a 503, quickly and without reserving \
         anything. Inventory slower than the OrderService's downstream timeout (a delay of \
         twice the timeout: 10 s against 5 s) turns every order into a 504 — after the \
         timeout, not after the delay: the timeout bounds how long a client is blocked, but \
         the client is still blocked that long on every order."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let s = ctx.settings().clone();
        let app = ctx.part_a(|h| h.downstream_timeout = s.timeout).await?;
        let timeout = app
            .config()
            .map_or(s.timeout, |c| c.http.downstream_timeout);
        let delay = timeout * 2;
        let client = app.client().clone();
        let measured = measure(ctx, &client, delay).await;
        let healed = client.heal_inventory().await;
        let readings = match &measured {
            Ok(m) => Some((
                app.readings(&m.failed).await,
                app.readings(&m.timed_out).await,
            )),
            Err(_) => None,
        };
        app.stop().await;
        let m = measured?;
        healed?;
        let (read_failed, read_timed_out) = match readings {
            Some((f, t)) => (f?, t?),
            None => (Vec::new(), Vec::new()),
        };

        let mut out = Outcome::default();
        out.setup("failure_orders", s.failure_orders);
        out.setup("timeout_orders", s.timeout_orders);
        out.setup("downstream_timeout_ms", ms(timeout));
        out.setup("delay_ms", ms(delay));
        let f = summary(&m.failed);
        let t = summary(&m.timed_out);

        let mut table = Table::new(
            "outcomes",
            "Orders while inventory fails or is too slow",
            &[
                "Scenario",
                "Injected",
                "Orders",
                "Statuses",
                "Min (ms)",
                "Avg (ms)",
                "P95 (ms)",
                "Max (ms)",
                "Stock change",
            ],
        );
        table.row(vec![
            "Inventory fails".into(),
            "failure_rate 1.0".into(),
            m.failed.len().into(),
            statuses(&m.failed).into(),
            f.min_ms.into(),
            f.avg_ms.into(),
            f.p95_ms.into(),
            f.max_ms.into(),
            Cell::Int(m.stock_after_failures as i64 - m.stock_start as i64),
        ]);
        table.row(vec![
            "Inventory too slow".into(),
            format!("delay {} > timeout {}", secs(delay), secs(timeout)).into(),
            m.timed_out.len().into(),
            statuses(&m.timed_out).into(),
            t.min_ms.into(),
            t.avg_ms.into(),
            t.p95_ms.into(),
            t.max_ms.into(),
            Cell::Int(m.stock_after_timeouts as i64 - m.stock_after_failures as i64),
        ]);
        out.table(table);
        out.metrics(f.metrics("failure"));
        out.metrics(t.metrics("timeout"));
        out.metric("failure.status_503", count_status(&m.failed, 503) as f64);
        out.metric("timeout.status_504", count_status(&m.timed_out, 504) as f64);
        out.metric("timeout_ms", ms(timeout));
        out.metric("delay_ms", ms(delay));

        out.chart(
            Chart::new(
                "latency-per-order",
                "A3: latency of each order, inventory failing vs too slow",
                Axis::linear("order #"),
                Axis::linear("latency (ms)"),
            )
            .with_series(Series::points(
                "failure_rate 1.0 → 503",
                by_order(&m.failed),
            ))
            .with_series(Series::points(
                &format!("delay {} → 504", secs(delay)),
                by_order(&m.timed_out),
            ))
            .with_guide(Guide::y("downstream timeout", ms(timeout)))
            .with_guide(Guide::y("injected delay", ms(delay))),
        );

        let n503 = count_status(&m.failed, 503);
        out.conclude(
            "Inventory failing → every order is a 503",
            n503 == m.failed.len(),
            format!(
                "{n503}/{} answered 503 ({}) in {:.2} ms on average; e.g. {:?}",
                m.failed.len(),
                statuses(&m.failed),
                f.avg_ms,
                first_error(&m.failed).unwrap_or("-")
            ),
        );
        out.conclude(
            "Nothing is reserved for an order that failed",
            m.stock_after_failures == m.stock_start,
            format!(
                "stock {} before and {} after the failed orders",
                m.stock_start, m.stock_after_failures
            ),
        );
        let n504 = count_status(&m.timed_out, 504);
        out.conclude(
            "Inventory slower than the timeout → every order is a 504",
            n504 == m.timed_out.len(),
            format!(
                "{n504}/{} answered 504 ({})",
                m.timed_out.len(),
                statuses(&m.timed_out)
            ),
        );
        out.conclude(
            "The 504 comes at the timeout, not after the full delay",
            t.min_ms >= ms(timeout) && t.max_ms < ms(delay),
            format!(
                "504s took {:.2}–{:.2} ms: at least the {:.0} ms timeout and less than the \
                 {:.0} ms delay",
                t.min_ms,
                t.max_ms,
                ms(timeout),
                ms(delay)
            ),
        );
        out.orders(
            OrderOutcomes::new("inventory fails (503)", &[OrderClass::Failed])
                .record_all(&read_failed),
        );
        out.orders(
            OrderOutcomes::new("inventory too slow (504)", &[OrderClass::Failed])
                .record_all(&read_timed_out),
        );
        out.conclude_nothing_lost_nothing_twice();
        let leaked = m
            .stock_after_failures
            .saturating_sub(m.stock_after_timeouts);
        out.metric("timeout.reserved_after_504", leaked as f64);
        if leaked > 0 {
            out.note(format!(
                "A 504 does not mean nothing happened: inventory kept working after the order \
                 service gave up, and once its delay elapsed it reserved stock for {leaked} of \
                 the {} orders answered 504 (stock {} → {}). The client cannot tell from a \
                 timeout whether its order took effect; only a retry with the same order id \
                 (reserve is idempotent) is safe either way.",
                m.timed_out.len(),
                m.stock_after_failures,
                m.stock_after_timeouts
            ));
        } else {
            out.note(format!(
                "The 504s left nothing reserved: when the order service gave up it closed the \
                 connection, and the inventory server dropped the request while it was still \
                 in its injected delay, before reserving (stock {} once the delay had elapsed \
                 for every order). The client cannot tell that from a 504 alone; only a retry \
                 with the same order id (reserve is idempotent) is safe either way.",
                m.stock_after_timeouts
            ));
        }
        Ok(out)
    }
}
