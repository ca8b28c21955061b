//! B1 — baseline flow over RabbitMQ: N orders from one client, nothing
//! injected; how long the client waits (acceptance) and how long the work
//! takes (end to end).

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::common::{accepted_ids, end_to_end, latencies, statuses, summary, summary_cells};
use crate::async_rabbitmq::{PartB, PartBOptions};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Outcome, Series, Table};
use crate::load::{Pacing, count_status};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::{LatencySummary, cdf, ms};

/// As in A1: a healthy p50 above this means something is wrong.
const HEALTHY_P50_MS: f64 = 50.0;

/// B1 — baseline flow.
#[derive(Debug, Clone, Copy)]
pub struct B1Baseline;

struct Measured {
    samples: Vec<crate::load::Sample>,
    e2e: Vec<Duration>,
    wall: Duration,
    notified_in_store: usize,
    stock: (u64, u64),
    reservations: u64,
    sent: u64,
    readings: Vec<(String, OrderReading)>,
}

async fn measure(ctx: &Context, b: &PartB, n: u64) -> Result<Measured, LabError> {
    let client = b.client().clone();
    let before = b.stock().await?;
    let bar = ctx.bar(n, &ctx.pacing().title("orders"));
    let origin = Instant::now();
    let samples = {
        let client = &client;
        ctx.pacing()
            .send(n, origin, &bar, |o| client.order(o))
            .await
    };
    bar.finish_and_clear();
    let ids = accepted_ids(&samples);
    b.wait_notified(
        &ids,
        Duration::from_secs(30) + Duration::from_millis(20) * ids.len() as u32,
    )
    .await?;
    let wall = origin.elapsed();
    let e2e = end_to_end(&samples, &b.notified_at(), origin);
    Ok(Measured {
        notified_in_store: b.notified_in_store(&ids).await?,
        stock: (before, b.stock().await?),
        reservations: b.reservation_count().await?,
        sent: b.notifications_sent(),
        readings: b.readings(&samples).await?,
        samples,
        e2e,
        wall,
    })
}

fn row(name: &str, what: &str, s: &LatencySummary) -> Vec<Cell> {
    let mut r = vec![name.into(), what.into(), s.count.into()];
    r.extend(summary_cells(s));
    r
}

#[async_trait]
impl Experiment for B1Baseline {
    fn id(&self) -> &'static str {
        "B1"
    }

    fn title(&self) -> &'static str {
        "Baseline flow over RabbitMQ"
    }

    fn shows(&self) -> &'static str {
        "The asynchronous architecture when everything is healthy: N orders from one client to \
         the async OrderService. *Acceptance* is what the client waits for — `POST /order` → \
         201 `placed`, once the order and its `OrderPlaced` event are durably stored \
         (transactional outbox). *End to end* is what the work takes: from sending the order \
         until its status is `notified` — published with a confirm to `orders.reserve`, \
         reserved in the durable ledger, `InventoryReserved` to `inventory.notify`, the \
         confirmation sent, and the status recorded. The client only ever waits for the first."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.size("b1.orders", 200, 50)?;
        let b = ctx.part_b(PartBOptions::default()).await?;
        let prefix = b.config().rabbitmq.reserve_queue.clone();
        let measured = measure(ctx, &b, n).await;
        b.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("orders", n);
        out.setup("load", ctx.pacing().describe());
        if ctx.pacing() == Pacing::Closed {
            out.setup("clients", 1);
        }
        out.setup("item", ctx.settings().item.as_str());
        out.setup("reserve_queue", prefix);
        let ok = count_status(&m.samples, 201);
        let accept = summary(&m.samples);
        let e2e = LatencySummary::of(m.e2e.iter().copied()).unwrap_or(accept);

        let mut t = Table::new(
            "latency",
            &ctx.pacing().title("Acceptance vs end to end, N orders"),
            &[
                "Measure",
                "From → to",
                "Orders",
                "Min (ms)",
                "Avg (ms)",
                "P50 (ms)",
                "P95 (ms)",
                "P99 (ms)",
                "Max (ms)",
            ],
        );
        t.row(row("Acceptance", "POST /order → 201 placed", &accept));
        t.row(row("End to end", "POST /order → status notified", &e2e));
        out.table(t);
        let mut c = Table::new(
            "outcome",
            "What happened to the orders",
            &[
                "Statuses",
                "Notified (store)",
                "Ledger reservations",
                "Stock before → after",
                "Confirmations sent",
                if ctx.pacing() == Pacing::Closed {
                    "Orders/s (one client)"
                } else {
                    "Orders/s"
                },
            ],
        );
        let throughput = n as f64 / m.wall.as_secs_f64();
        c.row(vec![
            statuses(&m.samples).into(),
            m.notified_in_store.into(),
            m.reservations.into(),
            format!("{} → {}", m.stock.0, m.stock.1).into(),
            m.sent.into(),
            throughput.into(),
        ]);
        out.table(c);
        out.metrics(accept.metrics("accept"));
        out.metrics(e2e.metrics("e2e"));
        out.metric("orders", n as f64);
        out.metric("accepted", ok as f64);
        out.metric("notified", m.notified_in_store as f64);
        out.metric("reservations", m.reservations as f64);
        out.metric("throughput_per_s", throughput);

        out.chart(
            Chart::new(
                "latency-cdf",
                &ctx.pacing().title(&format!(
                    "B1: acceptance vs end-to-end latency of {n} orders (CDF)"
                )),
                Axis::log("latency (ms, log scale)"),
                Axis::linear("orders within (%)"),
            )
            .with_series(Series::line(
                "acceptance (POST → 201)",
                cdf(&latencies(&m.samples), 400),
            ))
            .with_series(Series::line(
                "end to end (POST → notified)",
                cdf(&m.e2e, 400),
            )),
        );

        out.conclude(
            "Every order is accepted (201 placed)",
            ok as u64 == n,
            format!("{ok}/{n} answered 201 ({})", statuses(&m.samples)),
        );
        out.conclude(
            "Every accepted order is processed to the end (status notified)",
            m.notified_in_store == ok && m.e2e.len() == ok,
            format!(
                "{} of {ok} accepted orders are notified in the order store",
                m.notified_in_store
            ),
        );
        let used = m.stock.0.saturating_sub(m.stock.1);
        out.conclude(
            "Each order is reserved exactly once and confirmed once",
            m.reservations == ok as u64 && used == ok as u64 && m.sent == ok as u64,
            format!(
                "{} ledger records, stock {} → {} (−{used}), {} confirmations, for {ok} orders",
                m.reservations, m.stock.0, m.stock.1, m.sent
            ),
        );
        out.conclude(
            "The client waits only for acceptance, not for the work",
            accept.p50_ms < e2e.p50_ms,
            format!(
                "acceptance p50 {:.2} ms < end-to-end p50 {:.2} ms ({:.1}× shorter)",
                accept.p50_ms,
                e2e.p50_ms,
                e2e.p50_ms / accept.p50_ms.max(f64::MIN_POSITIVE)
            ),
        );
        out.conclude(
            "A healthy async order service accepts in milliseconds",
            accept.p50_ms < HEALTHY_P50_MS,
            format!(
                "acceptance p50 {:.2} ms, p99 {:.2} ms (claim: p50 < {HEALTHY_P50_MS} ms)",
                accept.p50_ms, accept.p99_ms
            ),
        );
        out.note(format!(
            "Acceptance includes one durable write (the order and its event, group-committed \
             with any concurrent orders); end to end adds the relay's publish with a broker \
             confirm, the reservation's durable write, two more confirmed publishes and the \
             status update. Total wall time {:.0} ms for {n} orders.",
            ms(m.wall)
        ));
        out.note(
            "“Notified” is timed when the order service's status consumer acknowledged \
             `order.notified` — after the store recorded it, so a `GET /orders/{id}` from then \
             on says `notified`; the order store is then checked for every order.",
        );
        out.orders(
            OrderOutcomes::new("healthy flow", &[OrderClass::Notified]).record_all(&m.readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}
