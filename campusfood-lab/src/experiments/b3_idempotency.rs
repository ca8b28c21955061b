//! B3 — idempotency: the same `OrderPlaced` published again (and again):
//! one ledger record, one decrement, one notification.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::transport::Route;

use crate::async_rabbitmq::{Handling, PartB, PartBOptions};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::wait::until;

/// B3 — idempotency.
#[derive(Debug, Clone, Copy)]
pub struct B3Idempotency;

/// Between one publish of the duplicate and the next, so the chart shows
/// each arrive (pacing, not a wait for a condition).
const SPACING: Duration = Duration::from_millis(150);

/// How often the counts are read for the chart.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

struct Counts {
    /// `[s, value]` series: deliveries of the order's `OrderPlaced` to
    /// inventory, ledger records, confirmations sent.
    deliveries: Vec<[f64; 2]>,
    records: Vec<[f64; 2]>,
    confirmations: Vec<[f64; 2]>,
}

struct Measured {
    id: String,
    counts: Counts,
    republished_at: Vec<f64>,
    placed_deliveries: Vec<Handling>,
    reserved_deliveries: usize,
    notified_acks: usize,
    stock_before: u64,
    stock_first: u64,
    stock_after: u64,
    records: u64,
    sent_first: u64,
    sent_after: u64,
    has_record: bool,
    status_notified: bool,
    readings: Vec<(String, OrderReading)>,
}

/// Reads the three counts every [`SAMPLE_EVERY`] until `stop`.
async fn sample(b: &PartB, id: &str, origin: Instant, stop: &AtomicBool) -> Counts {
    let mut c = Counts {
        deliveries: Vec::new(),
        records: Vec::new(),
        confirmations: Vec::new(),
    };
    loop {
        let t = origin.elapsed().as_secs_f64();
        let deliveries = b.probe().deliveries(&Route::ORDER_PLACED, id).len();
        c.deliveries.push([t, deliveries as f64]);
        if let Ok(r) = b.reservation_count().await {
            c.records.push([t, r as f64]);
        }
        c.confirmations.push([t, b.notifications_sent() as f64]);
        if stop.load(Ordering::SeqCst) {
            return c;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

async fn measure(ctx: &Context, b: &PartB, duplicates: u64) -> Result<Measured, LabError> {
    let origin = Instant::now();
    let stock_before = b.stock().await?;
    let first = b.client().order(origin).await;
    let id = first.order_id.clone().ok_or_else(|| LabError::Unexpected {
        what: "placing the order".to_owned(),
        status: first.status,
        body: first.error.clone().unwrap_or_default(),
    })?;
    let stop = AtomicBool::new(false);
    let counting = sample(b, &id, origin, &stop);
    let work = async {
        b.wait_notified(std::slice::from_ref(&id), Duration::from_secs(10))
            .await?;
        let stock_first = b.stock().await?;
        let sent_first = b.notifications_sent();
        let event = b.order_placed_json(&id).await?;
        let bar = ctx.bar(duplicates, "duplicates published");
        let mut republished_at = Vec::new();
        for _ in 0..duplicates {
            tokio::time::sleep(SPACING).await;
            b.publish_order_placed(event.clone(), Some(&id)).await?;
            republished_at.push(origin.elapsed().as_secs_f64());
            bar.inc(1);
        }
        bar.finish_and_clear();
        let want = usize::try_from(duplicates + 1).unwrap_or(usize::MAX);
        // Every copy delivered and handled, and each one's repeated outcome
        // (InventoryReserved) handled by notification.
        until(
            "every copy handled by inventory and notification",
            Duration::from_secs(10),
            || {
                let p = b.probe();
                let done = p.deliveries(&Route::ORDER_PLACED, &id).len() >= want
                    && p.deliveries(&Route::INVENTORY_RESERVED, &id)
                        .iter()
                        .filter(|h| h.group.is_none())
                        .count()
                        >= want;
                async move { done }
            },
        )
        .await?;
        // A little of the settled state on the chart.
        tokio::time::sleep(SPACING).await;
        stop.store(true, Ordering::SeqCst);
        Ok::<_, LabError>((stock_first, sent_first, republished_at))
    };
    let (counts, work) = tokio::join!(counting, work);
    let (stock_first, sent_first, republished_at) = match work {
        Ok(w) => w,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            return Err(e);
        }
    };
    let p = b.probe();
    let placed_deliveries = p
        .deliveries(&Route::ORDER_PLACED, &id)
        .into_iter()
        .map(|h| h.outcome)
        .collect();
    let reserved_deliveries = p
        .deliveries(&Route::INVENTORY_RESERVED, &id)
        .iter()
        .filter(|h| h.group.is_none())
        .count();
    let notified_acks = p
        .deliveries(&Route::ORDER_NOTIFIED, &id)
        .iter()
        .filter(|h| h.outcome == Handling::Ack)
        .count();
    Ok(Measured {
        stock_after: b.stock().await?,
        records: b.reservation_count().await?,
        sent_after: b.notifications_sent(),
        has_record: b.has_reservation(&id).await?,
        readings: b.readings_of(std::slice::from_ref(&id)).await?,
        status_notified: b.status(&id).await? == Some(campusfood_core::OrderStatus::Notified),
        id,
        counts,
        republished_at,
        placed_deliveries,
        reserved_deliveries,
        notified_acks,
        stock_before,
        stock_first,
        sent_first,
    })
}

#[async_trait]
impl Experiment for B3Idempotency {
    fn id(&self) -> &'static str {
        "B3"
    }

    fn title(&self) -> &'static str {
        "Idempotency: the same OrderPlaced again"
    }

    fn shows(&self) -> &'static str {
        "What happens when a message arrives twice — a broker redelivery, a relay that crashed \
         between publishing and bookkeeping, or (as in the assignment) someone re-publishing it \
         by hand. One order is placed and processed; then its exact `OrderPlaced` event is \
         published again, several times. Every copy is delivered to inventory and \
         acknowledged, but the ledger, keyed by `order_id`, records one reservation and \
         decrements the stock once; a repeat gets the first decision back, and the \
         notification service, which remembers what it sent, confirms once."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let duplicates = ctx.size("b3.duplicates", 3, 3)?;
        let b = ctx.part_b(PartBOptions::default()).await?;
        let measured = measure(ctx, &b, duplicates).await;
        b.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("duplicates", duplicates);
        out.setup("qty", 1);
        out.setup("order_id", m.id.as_str());
        let copies = duplicates + 1;
        let acked = m
            .placed_deliveries
            .iter()
            .filter(|h| **h == Handling::Ack)
            .count();
        let used = m.stock_before.saturating_sub(m.stock_after);
        let mut t = Table::new(
            "effects",
            "Deliveries of one order vs their effects",
            &["What", "Count", "Expected"],
        );
        let rows: [(&str, u64, u64); 7] = [
            (
                "OrderPlaced deliveries to inventory (the relay's and the duplicates)",
                m.placed_deliveries.len() as u64,
                copies,
            ),
            (
                "OrderPlaced deliveries to inventory (acknowledged)",
                acked as u64,
                copies,
            ),
            ("ledger reservation records for the order", m.records, 1),
            ("stock decrements (qty 1)", used, 1),
            (
                "InventoryReserved deliveries to notification (the first decision, repeated)",
                m.reserved_deliveries as u64,
                copies,
            ),
            ("confirmations sent", m.sent_after, 1),
            (
                "order.notified acknowledged by the order service (republished with each copy)",
                m.notified_acks as u64,
                copies,
            ),
        ];
        for (what, n, expected) in rows {
            t.row(vec![what.into(), n.into(), expected.into()]);
        }
        out.table(t);
        out.metric("copies", copies as f64);
        out.metric("deliveries", m.placed_deliveries.len() as f64);
        out.metric("reservation_records", m.records as f64);
        out.metric("stock_decrease", used as f64);
        out.metric("confirmations", m.sent_after as f64);

        let mut chart = Chart::new(
            "deliveries-vs-effects",
            "B3: deliveries of one OrderPlaced vs their effects (records and confirmations both stay at 1)",
            Axis::linear("time since the order was placed (s)"),
            Axis::linear("count"),
        )
        .with_series(Series::line(
            "OrderPlaced deliveries to inventory",
            m.counts.deliveries,
        ))
        .with_series(Series::line("ledger reservation records", m.counts.records))
        .with_series(Series::line("confirmations sent", m.counts.confirmations));
        if let (Some(first), Some(last)) = (m.republished_at.first(), m.republished_at.last()) {
            chart = chart
                .with_guide(Guide::x("first duplicate published", *first))
                .with_guide(Guide::x("last duplicate published", *last));
        }
        out.chart(chart);

        out.conclude(
            "Every copy is delivered and acknowledged (none stuck, none dead-lettered)",
            acked as u64 == copies && m.placed_deliveries.len() as u64 == copies,
            format!(
                "{} deliveries of {copies} copies, {acked} acknowledged",
                m.placed_deliveries.len()
            ),
        );
        out.conclude(
            "One ledger record and one decrement, however many copies",
            m.records == 1 && m.has_record && used == 1 && m.stock_first == m.stock_after,
            format!(
                "{} record(s); stock {} → {} after the first delivery → {} after {duplicates} \
                 duplicates",
                m.records, m.stock_before, m.stock_first, m.stock_after
            ),
        );
        out.conclude(
            "One notification",
            m.sent_first == 1 && m.sent_after == 1 && m.notified_acks >= 1 && m.status_notified,
            format!(
                "{} confirmation(s) after the first delivery, {} after the duplicates; the \
                 order is notified ({} OrderNotified handled: the notifier republishes it for \
                 each copy, as inventory republishes its decision, without sending again)",
                m.sent_first, m.sent_after, m.notified_acks
            ),
        );
        out.note(format!(
            "Each duplicate made inventory publish its first decision again (InventoryReserved \
             ×{}): republishing is how a reservation whose event was lost gets it out; \
             notification recognised the order and acknowledged without sending again.",
            m.reserved_deliveries
        ));
        out.orders(
            OrderOutcomes::new(
                &format!("one order, delivered {} times", m.placed_deliveries.len()),
                &[OrderClass::Notified],
            )
            .record_all(&m.readings),
        );
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}
