//! B2 — backlog and recovery: inventory stopped, orders accepted anyway and
//! waiting in `orders.reserve`; inventory restarted after the downtime, the
//! queue drains, each order reserved exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::common::{accepted_ids, secs, since, statuses, summary};
use crate::async_rabbitmq::{PartB, PartBOptions, Queue};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::load::{concurrent, count_status};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::ms;
use crate::wait::until;

/// B2 — backlog and recovery.
#[derive(Debug, Clone, Copy)]
pub struct B2Backlog;

/// How often the queue's depth is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

struct Measured {
    samples: Vec<crate::load::Sample>,
    depth: Vec<[f64; 2]>,
    reserved: Vec<[f64; 2]>,
    /// Since the origin: inventory stopped, orders all accepted, inventory
    /// restarted, queue empty again, every order notified.
    stopped: f64,
    accepted: f64,
    restarted: f64,
    drained: f64,
    notified: f64,
    peak_while_down: u64,
    depth_at_restart: u64,
    reserved_while_down: u64,
    stock_before: u64,
    stock_at_restart: u64,
    stock_after: u64,
    reservations: u64,
    notified_in_store: usize,
    depth_after: u64,
    readings: Vec<(String, OrderReading)>,
}

async fn measure(
    ctx: &Context,
    b: &mut PartB,
    n: u64,
    downtime: Duration,
) -> Result<Measured, LabError> {
    let origin = Instant::now();
    let sampler = b.queue_gauge(Queue::Reserve).sample(SAMPLE_EVERY, origin);
    let reserved = b.reservations_gauge().sample(SAMPLE_EVERY, origin);
    let stock_before = b.stock().await?;
    // A moment of the healthy, empty queue first, so the chart starts at 0.
    tokio::time::sleep(SAMPLE_EVERY * 3).await;
    b.stop_inventory().await;
    let stopped_at = Instant::now();
    let bar = ctx.bar(n, "orders while inventory is down");
    let samples = concurrent(b.client(), n, n.min(8), origin, &bar).await?;
    bar.finish_and_clear();
    let accepted = origin.elapsed().as_secs_f64();
    let ids = accepted_ids(&samples);
    let want = ids.len() as u64;
    let peak = AtomicU64::new(0);
    {
        let (peak, b) = (&peak, &*b);
        until(
            &format!("a backlog of {want} in orders.reserve"),
            Duration::from_secs(10),
            move || async move {
                let depth = b.depth(Queue::Reserve).await.unwrap_or(0);
                peak.fetch_max(depth, Ordering::SeqCst).max(depth) >= want
            },
        )
        .await?;
    }
    let mut peak = peak.load(Ordering::SeqCst);
    // The downtime itself: inventory stays away this long (counted from
    // when it stopped), whatever else happens.
    tokio::time::sleep_until((stopped_at + downtime).into()).await;
    let depth_at_restart = b.depth(Queue::Reserve).await?;
    let reserved_while_down = b.reservation_count().await?;
    let stock_at_restart = b.stock().await?;
    peak = peak.max(depth_at_restart);
    let restarted = origin.elapsed().as_secs_f64();
    b.start_inventory().await?;
    {
        let b = &*b;
        until(
            "orders.reserve drains",
            Duration::from_secs(30),
            move || async move { b.depth(Queue::Reserve).await.is_ok_and(|d| d == 0) },
        )
        .await?;
    }
    let drained = origin.elapsed().as_secs_f64();
    b.wait_notified(&ids, Duration::from_secs(60)).await?;
    let notified_at = b.notified_at();
    let notified = ids
        .iter()
        .filter_map(|id| notified_at.get(id))
        .map(|at| since(origin, *at))
        .fold(drained, f64::max);
    // The queue staying empty after the drain, on the chart.
    tokio::time::sleep(SAMPLE_EVERY * 3).await;
    let depth = sampler.finish().await?;
    let reserved = reserved.finish().await?;
    Ok(Measured {
        reserved,
        depth_after: b.depth(Queue::Reserve).await?,
        reservations: b.reservation_count().await?,
        notified_in_store: b.notified_in_store(&ids).await?,
        readings: b.readings(&samples).await?,
        stock_after: b.stock().await?,
        samples,
        depth,
        stopped: since(origin, stopped_at),
        accepted,
        restarted,
        drained,
        notified,
        peak_while_down: peak,
        depth_at_restart,
        reserved_while_down,
        stock_before,
        stock_at_restart,
    })
}

#[async_trait]
impl Experiment for B2Backlog {
    fn id(&self) -> &'static str {
        "B2"
    }

    fn title(&self) -> &'static str {
        "Backlog and recovery"
    }

    fn shows(&self) -> &'static str {
        "What a queue buys when a consumer is down (the assignment's 60-second test): the \
         InventoryService is stopped, N orders are placed and every one is still accepted at \
         once; their `OrderPlaced` events wait in the durable `orders.reserve` queue, whose \
         depth grows to N and stays there for the downtime. When inventory starts again the \
         backlog drains to zero on its own, and each order is reserved exactly once — no order \
         lost while the consumer was away, none reserved twice when it came back."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.size("b2.orders", 50, 20)?;
        let downtime = ctx.millis(
            "b2.downtime_ms",
            Duration::from_secs(60),
            Duration::from_secs(2),
        )?;
        let mut b = ctx.part_b(PartBOptions::default()).await?;
        let measured = measure(ctx, &mut b, n, downtime).await;
        b.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("orders", n);
        out.setup("clients", n.min(8));
        out.setup("downtime_ms", ms(downtime));
        out.setup("depth_sampled_every_ms", ms(SAMPLE_EVERY));
        let ok = count_status(&m.samples, 201) as u64;
        let accept = summary(&m.samples);

        let mut t = Table::new(
            "timeline",
            "Timeline (seconds since the start)",
            &[
                "Event",
                "At (s)",
                "orders.reserve depth (last sample)",
                "Ledger reservations (last sample)",
            ],
        );
        // Every cell a reading: the samples of the depth and of the
        // ledger's count last taken at or before each moment.
        let rows = [
            ("inventory stopped", m.stopped),
            ("orders all accepted (201)", m.accepted),
            ("downtime over: inventory restarted", m.restarted),
            ("orders.reserve empty again", m.drained),
            ("every order notified", m.notified),
        ]
        .map(|(event, at)| {
            (
                event,
                at,
                sampled_at(&m.depth, at),
                sampled_at(&m.reserved, at),
            )
        });
        for (event, at, depth, reserved) in rows {
            t.row(vec![event.into(), at.into(), depth, reserved]);
        }
        out.table(t);
        let mut c = Table::new(
            "outcome",
            "Orders accepted while inventory was down, and what became of them",
            &[
                "Statuses",
                "Acceptance P50 (ms)",
                "Acceptance max (ms)",
                "Peak backlog",
                "Drained in (ms)",
                "Notified (store)",
                "Ledger reservations",
                "Stock before",
                "Stock after",
            ],
        );
        let drain_ms = (m.drained - m.restarted) * 1000.0;
        c.row(vec![
            statuses(&m.samples).into(),
            accept.p50_ms.into(),
            accept.max_ms.into(),
            m.peak_while_down.into(),
            drain_ms.into(),
            m.notified_in_store.into(),
            m.reservations.into(),
            m.stock_before.into(),
            m.stock_after.into(),
        ]);
        out.table(c);
        out.metrics(accept.metrics("accept"));
        out.metric("orders", n as f64);
        out.metric("accepted", ok as f64);
        out.metric("backlog.peak", m.peak_while_down as f64);
        out.metric("backlog.at_restart", m.depth_at_restart as f64);
        out.metric("drain_ms", drain_ms);
        out.metric(
            "all_notified_after_restart_ms",
            (m.notified - m.restarted) * 1000.0,
        );
        out.metric("reservations", m.reservations as f64);
        out.metric("notified", m.notified_in_store as f64);
        out.metric("downtime_ms", ms(downtime));

        out.chart(
            Chart::new(
                "queue-depth",
                &format!(
                    "B2: orders.reserve depth, inventory down for {}",
                    secs(downtime)
                ),
                Axis::linear("time since start (s)"),
                Axis::linear("messages / reservations"),
            )
            .with_series(Series::line("orders.reserve depth", m.depth.clone()))
            .with_series(Series::line("ledger reservations", m.reserved.clone()))
            .with_guide(Guide::x("inventory stopped", m.stopped))
            .with_guide(Guide::x("inventory restarted", m.restarted)),
        );

        out.conclude(
            "Orders are accepted while inventory is down",
            ok == n,
            format!(
                "{ok}/{n} answered 201 ({}), acceptance p50 {:.2} ms",
                statuses(&m.samples),
                accept.p50_ms
            ),
        );
        out.conclude(
            "The backlog grew to N while inventory was down, and nothing was reserved",
            m.peak_while_down == ok
                && m.depth_at_restart == ok
                && m.reserved_while_down == 0
                && m.stock_at_restart == m.stock_before,
            format!(
                "peak depth {}, depth when the downtime ended {} (N = {ok}); {} reservations \
                 and stock {} → {} during the downtime",
                m.peak_while_down,
                m.depth_at_restart,
                m.reserved_while_down,
                m.stock_before,
                m.stock_at_restart
            ),
        );
        // What the run waited for is a reading, not a claim.
        out.note(format!(
            "Once inventory was back the queue was empty {drain_ms:.0} ms after the restart \
             ({} at the end); every order notified {:.0} ms after the restart.",
            m.depth_after,
            (m.notified - m.restarted) * 1000.0
        ));
        let used = m.stock_before.saturating_sub(m.stock_after);
        out.conclude(
            "Each order is reserved exactly once",
            m.reservations == ok && used == ok && m.notified_in_store as u64 == ok,
            format!(
                "{} ledger records, stock −{used}, {} notified, for {ok} accepted orders",
                m.reservations, m.notified_in_store
            ),
        );
        out.note(
            "Depth is the queue's *ready* messages (a passive declare): once inventory is back \
             it takes them up to its prefetch at a time, so the curve falls as fast as they are \
             delivered and the reservations finish just after (see “every order notified”).",
        );
        out.orders(
            OrderOutcomes::new("accepted while inventory was down", &[OrderClass::Notified])
                .record_all(&m.readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

/// The value of the last sample (`[seconds, value]`) taken at or before
/// `at`, or "not sampled yet".
fn sampled_at(points: &[[f64; 2]], at: f64) -> Cell {
    points
        .iter()
        .take_while(|p| p[0] <= at)
        .last()
        .map_or_else(|| "not sampled yet".into(), |p| Cell::from(p[1] as u64))
}
