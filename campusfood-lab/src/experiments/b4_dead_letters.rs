//! B4 — dead letters: poison messages go straight to `orders.dlq` with
//! their reasons while valid orders keep flowing; an injected failure is
//! retried a bounded number of times, dead-lettered, and replayed once
//! fixed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::OrderStatus;
use campusfood_core::fault::FaultUpdate;
use campusfood_core::transport::{DeadLetter, Route};
use serde_json::json;

use super::common::since;
use crate::async_rabbitmq::{Handled, Handling, PartB, PartBOptions, Queue, order_of};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::ms;
use crate::wait::until;

/// B4 — dead letters and poison.
#[derive(Debug, Clone, Copy)]
pub struct B4DeadLetters;

/// How often the DLQ's depth is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// A poison message: what is wrong, its body, and what its dead-letter
/// reason must mention.
struct Poison {
    kind: &'static str,
    body: String,
    names: &'static str,
}

/// A JSON object with its fields in the order given (the field that is
/// wrong first, so the report's excerpt shows it).
fn object(fields: &[(&str, serde_json::Value)]) -> String {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", fields.join(","))
}

fn poison() -> Vec<Poison> {
    let rest = |order: &str| {
        vec![
            ("order_id", json!(order)),
            ("request_id", json!("5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f")),
            ("item", json!("burger")),
            ("qty", json!(1)),
            ("status", json!("placed")),
            ("created_at", json!("2025-01-01T00:00:00Z")),
        ]
    };
    // `fields` with `name` set to `value` (first), or left out.
    let with = |order: &str, name: &str, value: Option<serde_json::Value>| {
        let mut fields: Vec<(&str, serde_json::Value)> = Vec::new();
        if let Some(v) = value {
            fields.push((name, v));
        }
        fields.extend(rest(order).into_iter().filter(|(k, _)| *k != name));
        object(&fields)
    };
    vec![
        Poison {
            kind: "malformed JSON",
            body: "{\"order_id\": \"ORD-00000000000A\", not json".to_owned(),
            names: "invalid JSON",
        },
        Poison {
            kind: "missing order_id",
            body: with("", "order_id", None),
            names: "`order_id`",
        },
        Poison {
            kind: "missing item",
            body: with("ORD-00000000000B", "item", None),
            names: "`item`",
        },
        Poison {
            kind: "qty of the wrong type",
            body: with("ORD-00000000000C", "qty", Some(json!("two"))),
            names: "`qty`",
        },
        Poison {
            kind: "qty out of range",
            body: with("ORD-00000000000D", "qty", Some(json!(0))),
            names: "`qty`",
        },
        Poison {
            kind: "malformed order_id",
            body: with("", "order_id", Some(json!("not an id!"))),
            names: "order_id",
        },
    ]
}

struct Measured {
    poison: Vec<(Poison, Option<DeadLetter>)>,
    poison_deliveries: usize,
    valid_notified: bool,
    stock_before: u64,
    stock_after_valid: u64,
    failing_id: String,
    dead: Option<DeadLetter>,
    attempts: Vec<Handled>,
    status_while_dead: Option<OrderStatus>,
    stock_while_dead: u64,
    replayed: bool,
    replayed_notified: bool,
    stock_after: u64,
    dlq_after: usize,
    depth: Vec<[f64; 2]>,
    marks: [f64; 3],
    failing_sent: Instant,
    /// What became of the valid order, of the failing one while it was
    /// dead-lettered, and of the failing one once replayed.
    readings: [Vec<(String, OrderReading)>; 3],
}

fn body_of(d: &DeadLetter) -> String {
    String::from_utf8_lossy(&d.message.body).into_owned()
}

async fn measure(b: &PartB) -> Result<Measured, LabError> {
    let origin = Instant::now();
    let sampler = b
        .queue_gauge(Queue::DeadLetters)
        .sample(SAMPLE_EVERY, origin);
    let stock_before = b.stock().await?;
    tokio::time::sleep(SAMPLE_EVERY * 2).await;

    // 1. Poison, then a valid order behind it.
    let poisoned = since(origin, Instant::now());
    let kinds = poison();
    for p in &kinds {
        b.publish_order_placed(p.body.clone(), None).await?;
    }
    let valid = b.client().order(origin).await;
    let valid_id = valid.order_id.clone().unwrap_or_default();
    b.wait_notified(std::slice::from_ref(&valid_id), Duration::from_secs(10))
        .await?;
    let want = kinds.len();
    // Waiting on the depth, not by listing: a listing takes the messages
    // out for a moment (and puts them back), which the chart would show.
    let depth_at_least = |n: usize| {
        move || async move {
            b.depth(Queue::DeadLetters)
                .await
                .is_ok_and(|d| d >= n as u64)
        }
    };
    until(
        &format!("{want} dead letters"),
        Duration::from_secs(10),
        depth_at_least(want),
    )
    .await?;
    let stock_after_valid = b.stock().await?;
    let mut letters = b.dead_letters(100).await?;
    let mut matched = Vec::new();
    for p in kinds {
        let at = letters.iter().position(|d| body_of(d) == p.body);
        matched.push((p, at.map(|i| letters.remove(i))));
    }
    let poison_deliveries = b
        .probe()
        .events()
        .iter()
        .filter(|h| h.route == Route::ORDER_PLACED && matches!(h.outcome, Handling::DeadLetter(_)))
        .count();

    // 2. Inventory fails every call: bounded retries, then the DLQ.
    let injected = since(origin, Instant::now());
    b.configure_inventory(&FaultUpdate {
        failure_rate: Some(1.0),
        ..FaultUpdate::default()
    })?;
    let failing_sent = Instant::now();
    let failing = b.client().order(origin).await;
    let failing_id = failing.order_id.clone().unwrap_or_default();
    let find = |letters: Vec<DeadLetter>| {
        letters
            .into_iter()
            .find(|d| order_of(&d.message).as_deref() == Some(failing_id.as_str()))
    };
    until(
        "the failing order in the DLQ",
        Duration::from_secs(15),
        depth_at_least(want + 1),
    )
    .await?;
    let dead = find(b.dead_letters(100).await?);
    let read_while_dead = b.readings_of(std::slice::from_ref(&failing_id)).await?;
    let status_while_dead = b.status(&failing_id).await?;
    let stock_while_dead = b.stock().await?;

    // 3. Fixed: replay it.
    let fixed = since(origin, Instant::now());
    b.configure_inventory(&FaultUpdate {
        failure_rate: Some(0.0),
        ..FaultUpdate::default()
    })?;
    let replayed = match &dead {
        Some(d) => b.replay(&d.id).await?,
        None => false,
    };
    b.wait_notified(std::slice::from_ref(&failing_id), Duration::from_secs(10))
        .await?;
    let replayed_notified = b.status(&failing_id).await? == Some(OrderStatus::Notified);
    let dlq_after = b.dead_letters(100).await?.len();
    tokio::time::sleep(SAMPLE_EVERY * 3).await;
    let depth = sampler.finish().await?;
    let readings = [
        b.readings_of(std::slice::from_ref(&valid_id)).await?,
        read_while_dead,
        b.readings_of(std::slice::from_ref(&failing_id)).await?,
    ];
    Ok(Measured {
        readings,
        poison: matched,
        poison_deliveries,
        valid_notified: b.status(&valid_id).await? == Some(OrderStatus::Notified),
        stock_before,
        stock_after_valid,
        attempts: b.probe().deliveries(&Route::ORDER_PLACED, &failing_id),
        failing_id,
        dead,
        status_while_dead,
        stock_while_dead,
        replayed,
        replayed_notified,
        stock_after: b.stock().await?,
        dlq_after,
        depth,
        marks: [poisoned, injected, fixed],
        failing_sent,
    })
}

#[async_trait]
impl Experiment for B4DeadLetters {
    fn id(&self) -> &'static str {
        "B4"
    }

    fn title(&self) -> &'static str {
        "Dead letters: poison, bounded retries, replay"
    }

    fn shows(&self) -> &'static str {
        "Two kinds of message that cannot be processed, and what the queue does with each. \
         *Poison* — malformed JSON, a missing `order_id` or `item`, a `qty` of the wrong type \
         or out of range, a malformed `order_id` — can never succeed: it is dead-lettered at once (no retries) into \
         `orders.dlq` with a reason naming what is wrong, and a valid order published behind \
         it still completes. A *failure* that may pass (inventory failing every call) is \
         retried a bounded number of times with a delay — never the original's hot requeue \
         loop — then dead-lettered with its reason; once fixed, replaying it from the DLQ \
         completes the order."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let options = PartBOptions {
            max_attempts: 3,
            retry_delay: Duration::from_millis(200),
            // `--set b4.hot_requeue=true` runs the services with the
            // original's requeue loop, to see the spacing claim fail.
            hot_requeue: ctx.settings().param("b4.hot_requeue", false)?,
            ..PartBOptions::default()
        };
        let b = ctx.part_b(options.clone()).await?;
        let measured = measure(&b).await;
        b.stop().await;
        let m = measured?;

        let mut out = Outcome::default();
        out.setup("poison_kinds", m.poison.len());
        out.setup("max_attempts", options.max_attempts);
        out.setup("retry_delay_ms", ms(options.retry_delay));
        out.setup("hot_requeue", options.hot_requeue);

        let mut t = Table::new(
            "poison",
            "Poison messages in orders.dlq",
            &[
                "Kind",
                "Body",
                "Reason (x-death-reason)",
                "Attempts",
                "Reason names the problem",
            ],
        );
        let mut named = 0;
        let mut at_once = 0;
        for (p, d) in &m.poison {
            let reason = d
                .as_ref()
                .map_or("(not in the DLQ)".to_owned(), |d| d.reason.clone());
            let ok = d.as_ref().is_some_and(|d| d.reason.contains(p.names));
            named += usize::from(ok);
            at_once += usize::from(d.as_ref().is_some_and(|d| d.attempts <= 1));
            let body: String = p.body.chars().take(70).collect();
            t.row(vec![
                p.kind.into(),
                format!("`{}`", body.replace('`', "'")).into(),
                reason.into(),
                d.as_ref().map_or(0, |d| u64::from(d.attempts)).into(),
                if ok { "✅" } else { "❌" }.into(),
            ]);
        }
        out.table(t);

        let mut f = Table::new(
            "failure",
            "The order whose reservation fails: attempts, dead letter, replay",
            &["Step", "At (ms after it was placed)", "What happened"],
        );
        let mut failed = 0;
        for h in &m.attempts {
            let step = if failed >= options.max_attempts {
                format!("after the replay: attempt {}", h.attempt)
            } else {
                format!("attempt {}", h.attempt)
            };
            let what = match &h.outcome {
                Handling::Ack => "acknowledged (reserved)".to_owned(),
                Handling::Retry(r) => format!("retry: {r}"),
                Handling::DeadLetter(r) => format!("dead letter: {r}"),
            };
            f.row(vec![
                step.into(),
                ms(h.at.saturating_duration_since(m.failing_sent)).into(),
                what.into(),
            ]);
            if matches!(h.outcome, Handling::Retry(_)) {
                failed += 1;
                if failed == options.max_attempts
                    && let Some(d) = &m.dead
                {
                    f.row(vec![
                        "dead-lettered".into(),
                        "".into(),
                        format!(
                            "in orders.dlq after {} attempts: {}; then fixed and replayed",
                            d.attempts, d.reason
                        )
                        .into(),
                    ]);
                }
            }
        }
        out.table(f);

        let poison_ok = m.poison.iter().filter(|(_, d)| d.is_some()).count();
        out.metric("poison.published", m.poison.len() as f64);
        out.metric("poison.dead_lettered", poison_ok as f64);
        out.metric("poison.reason_names_problem", named as f64);
        out.metric(
            "failure.attempts",
            m.dead.as_ref().map_or(0.0, |d| f64::from(d.attempts)),
        );
        out.metric("dlq.after_replay", m.dlq_after as f64);

        let [poisoned, injected, fixed] = m.marks;
        out.chart(
            Chart::new(
                "dlq-depth",
                "B4: orders.dlq depth over the experiment",
                Axis::linear("time since start (s)"),
                Axis::linear("messages in orders.dlq"),
            )
            .with_series(Series::line("orders.dlq depth", m.depth.clone()))
            .with_guide(Guide::x("poison published", poisoned))
            .with_guide(Guide::x("failure injected", injected))
            .with_guide(Guide::x("fixed, dead letter replayed", fixed)),
        );

        out.conclude(
            "Every poison message lands in orders.dlq with a reason naming what is wrong",
            poison_ok == m.poison.len() && named == m.poison.len(),
            format!(
                "{poison_ok}/{} in the DLQ, {named} with a reason naming the problem",
                m.poison.len()
            ),
        );
        out.conclude(
            "Poison is dead-lettered at once, not retried",
            at_once == m.poison.len() && m.poison_deliveries == m.poison.len(),
            format!(
                "{at_once}/{} dead-lettered on their first attempt; {} poison deliveries in all",
                m.poison.len(),
                m.poison_deliveries
            ),
        );
        out.conclude(
            "Valid orders keep flowing past the poison",
            m.valid_notified && m.stock_before - m.stock_after_valid == 1,
            format!(
                "the order placed behind the poison is notified; stock {} → {}",
                m.stock_before, m.stock_after_valid
            ),
        );
        let retries = m
            .attempts
            .iter()
            .filter(|h| matches!(h.outcome, Handling::Retry(_)))
            .count();
        let attempts = m.dead.as_ref().map_or(0, |d| d.attempts);
        let gap = min_gap_ms(
            &m.attempts
                .iter()
                .filter(|h| matches!(h.outcome, Handling::Retry(_)))
                .map(|h| h.at)
                .collect::<Vec<_>>(),
        );
        out.conclude(
            "The retries are spaced by at least the retry delay",
            gap.is_some_and(|g| g >= ms(options.retry_delay)),
            format!(
                "shortest measured gap between two failed attempts {} (retry delay {} ms)",
                gap.map_or("— (fewer than two attempts)".to_owned(), |g| format!(
                    "{g:.0} ms"
                )),
                ms(options.retry_delay)
            ),
        );
        out.conclude(
            "A failing order is retried a bounded number of times, then dead-lettered",
            attempts == options.max_attempts
                && retries == usize::try_from(options.max_attempts).unwrap_or(0)
                && m.status_while_dead == Some(OrderStatus::Placed)
                && m.stock_while_dead == m.stock_after_valid,
            format!(
                "{retries} failed attempts, then orders.dlq with {attempts} attempts and reason \
                 {:?}; meanwhile the order stays {} and nothing is reserved",
                m.dead.as_ref().map_or("", |d| d.reason.as_str()),
                m.status_while_dead
                    .map_or("unknown".to_owned(), |s| format!("{s:?}").to_lowercase())
            ),
        );
        out.conclude(
            "Once fixed, replaying it from the DLQ completes the order",
            m.replayed
                && m.replayed_notified
                && m.stock_while_dead - m.stock_after == 1
                && m.dlq_after == m.poison.len(),
            format!(
                "replayed: {}; order {} notified: {}; stock {} → {}; orders.dlq holds {} (the \
                 poison) afterwards",
                m.replayed,
                m.failing_id,
                m.replayed_notified,
                m.stock_while_dead,
                m.stock_after,
                m.dlq_after
            ),
        );
        out.note(
            "The poison stays in orders.dlq on purpose: there is nothing to replay it into. \
             `cargo run --example async_rabbitmq -- dlq list | show ID | replay ID` are the \
             same operations by hand.",
        );
        // Each poison message is an order as far as the queue knows: it
        // must end among the dead letters, not vanish.
        let poison_read: Vec<(String, OrderReading)> = m
            .poison
            .iter()
            .map(|(p, letter)| {
                let r = OrderReading {
                    accepted: true,
                    settle: true,
                    dead_lettered: letter.is_some(),
                    ..OrderReading::default()
                };
                (format!("poison: {}", p.kind), r)
            })
            .collect();
        let [valid, while_dead, replayed] = &m.readings;
        for (scenario, expected, read) in [
            ("poison", OrderClass::DeadLettered, &poison_read),
            ("valid order behind the poison", OrderClass::Notified, valid),
            (
                "failing order, before the replay",
                OrderClass::DeadLettered,
                while_dead,
            ),
            ("failing order, replayed", OrderClass::Notified, replayed),
        ] {
            out.orders(OrderOutcomes::new(scenario, &[expected]).record_all(read));
        }
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

/// The shortest gap between consecutive moments, in ms (`None` for fewer
/// than two).
fn min_gap_ms(at: &[std::time::Instant]) -> Option<f64> {
    at.windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]).as_secs_f64() * 1000.0)
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_gap_is_the_shortest_measured_one() {
        let t = Instant::now();
        let at = [
            t,
            t + Duration::from_millis(210),
            t + Duration::from_millis(250),
        ];
        // Retried 40 ms after the previous attempt: under a 200 ms delay.
        assert_eq!(min_gap_ms(&at).map(f64::round), Some(40.0));
        assert_eq!(min_gap_ms(&at[..1]), None);
    }
}
