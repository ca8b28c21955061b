//! X1 — the headline: what a client placing an order sees while inventory
//! is healthy, slow, or down, for each architecture: sync REST (Part A),
//! RabbitMQ (Part B) and Kafka (Part C).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::fault::FaultUpdate;

use super::common::{accepted_ids, secs, statuses, summary};
use crate::async_rabbitmq::PartBOptions;
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::load::{Pacing, Sample, count_status};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::{LatencySummary, ms};
use crate::streaming_kafka::{DecisionWatcher, PartC, PartCOptions, wait_decided};
use crate::sync_rest::OutageKind;

/// X1 — REST vs queue vs stream under inventory faults.
#[derive(Debug, Clone, Copy)]
pub struct X1Headline;

/// The inventory conditions, in order.
const CONDITIONS: [&str; 3] = ["healthy", "slow", "down"];

/// Acceptance "unaffected" by a slow inventory: its p50 stays under this
/// share of the injected delay…
const UNAFFECTED_SHARE: f64 = 0.1;

/// What one architecture did under one condition.
#[derive(Debug, Clone)]
struct Cond {
    /// Every order as the client saw it.
    samples: Vec<Sample>,
    /// For each accepted order whose stock was reserved: from sending it
    /// until then.
    reserved: Vec<Duration>,
    /// Accepted orders whose client had its answer before their stock was
    /// reserved (each order's own latency against its own reservation).
    answered_first: usize,
    /// What became of each order.
    readings: Vec<(String, OrderReading)>,
}

/// One architecture's three conditions, or why it was not measured.
#[derive(Debug)]
struct Arch {
    name: &'static str,
    key: &'static str,
    /// What "placing an order" is for it.
    place: &'static str,
    result: Result<Vec<Cond>, String>,
}

impl Arch {
    fn is_async(&self) -> bool {
        self.key != "rest"
    }
}

fn until_reserved(
    samples: &[Sample],
    at: &HashMap<String, Instant>,
    origin: Instant,
) -> Vec<Duration> {
    super::common::end_to_end(samples, at, origin)
}

/// How many accepted orders were answered before their stock was
/// reserved: the client's latency against the time from sending until the
/// reservation, both timed per order (the reservation by the services'
/// probe or the ledger watcher, not by the client).
fn answered_first(samples: &[Sample], at: &HashMap<String, Instant>, origin: Instant) -> usize {
    let pairs: Vec<(Duration, Duration)> = samples
        .iter()
        .filter(|s| s.ok())
        .filter_map(|s| {
            let reserved = at.get(s.order_id.as_deref()?)?;
            Some((
                s.latency,
                reserved.saturating_duration_since(origin + s.sent),
            ))
        })
        .collect();
    count_answered_first(&pairs)
}

/// Of `(client latency, until reserved)` pairs, those answered first.
fn count_answered_first(pairs: &[(Duration, Duration)]) -> usize {
    pairs
        .iter()
        .filter(|(latency, reserved)| latency < reserved)
        .count()
}

/// Part A: the client's own latency is the work's (a 201 means reserved).
async fn rest(ctx: &Context, n: u64, delay: Duration) -> Result<Vec<Cond>, LabError> {
    let mut app = ctx.part_a(|_| {}).await?;
    let client = app.client().clone();
    let pacing = ctx.pacing();
    let run = async {
        let mut conds = Vec::new();
        let done = |samples: Vec<Sample>| {
            let reserved = samples
                .iter()
                .filter(|s| s.ok())
                .map(|s| s.latency)
                .collect();
            // A 201 is the reservation: never answered before it.
            Cond {
                samples,
                reserved,
                answered_first: 0,
                readings: Vec::new(),
            }
        };
        let bar = ctx.bar(n * 3, "REST: healthy, slow, down");
        let send = |bar| pacing.send(n, Instant::now(), bar, |o| client.order(o));
        conds.push(done(send(&bar).await));
        client
            .configure_inventory(FaultUpdate {
                delay: Some(delay.as_secs_f64()),
                ..FaultUpdate::default()
            })
            .await?;
        let slow = send(&bar).await;
        client.heal_inventory().await?;
        conds.push(done(slow));
        let outage = app.inventory_outage(OutageKind::Refused).await?;
        let down = send(&bar).await;
        app.end_outage(outage).await?;
        conds.push(done(down));
        bar.finish_and_clear();
        for c in &mut conds {
            c.readings = app.readings(&c.samples).await?;
        }
        Ok::<_, LabError>(conds)
    }
    .await;
    app.stop().await;
    run
}

/// Part B: `POST /order` → 201 `placed`; reserved when inventory's
/// consumer acknowledged the `OrderPlaced`.
async fn rabbitmq(ctx: &Context, n: u64, delay: Duration) -> Result<Vec<Cond>, LabError> {
    let mut b = ctx.part_b(PartBOptions::default()).await?;
    let client = b.client().clone();
    let deadline = Duration::from_secs(30) + delay * 2;
    let run = async {
        let mut conds = Vec::new();
        let bar = ctx.bar(n * 3, "RabbitMQ: healthy, slow, down");
        for cond in CONDITIONS {
            match cond {
                "slow" => b.configure_inventory(&FaultUpdate {
                    delay: Some(delay.as_secs_f64()),
                    ..FaultUpdate::default()
                })?,
                "down" => b.stop_inventory().await,
                _ => {}
            }
            let origin = Instant::now();
            let samples = ctx
                .pacing()
                .send(n, origin, &bar, |o| client.order(o))
                .await;
            let ids = accepted_ids(&samples);
            if cond == "down" {
                // The downtime: inventory stays away as long as the slow
                // condition's delay, then comes back.
                tokio::time::sleep(delay).await;
                b.start_inventory().await?;
            }
            b.wait_reserved(&ids, deadline).await?;
            if cond == "slow" {
                b.configure_inventory(&FaultUpdate {
                    delay: Some(0.0),
                    ..FaultUpdate::default()
                })?;
            }
            let reserved_at = b.reserved_at();
            let reserved = until_reserved(&samples, &reserved_at, origin);
            let answered_first = answered_first(&samples, &reserved_at, origin);
            // Settled: notified too, before what became of each is read.
            b.wait_notified(&ids, deadline).await?;
            conds.push(Cond {
                readings: b.readings(&samples).await?,
                samples,
                reserved,
                answered_first,
            });
        }
        bar.finish_and_clear();
        Ok::<_, LabError>(conds)
    }
    .await;
    b.stop().await;
    run
}

/// `n` orders on Part C's producer, paced as `pacing` says, each watched
/// for its decision from the moment it is acknowledged.
async fn place_all(
    c: &PartC,
    n: u64,
    origin: Instant,
    bar: &indicatif::ProgressBar,
    watcher: &DecisionWatcher,
    pacing: Pacing,
) -> Vec<Sample> {
    pacing
        .send(n, origin, bar, |o| async move {
            let s = c.place(o).await;
            if let Some(id) = &s.order_id {
                watcher.watch(id);
            }
            s
        })
        .await
}

/// Part C: producing one `OrderEvent` (acknowledged by Kafka); reserved
/// when the inventory consumer's ledger holds the decision. A slow
/// inventory is the consumer's `THROTTLE_MS`; down is the consumer stopped.
async fn kafka(ctx: &Context, n: u64, delay: Duration) -> Result<Vec<Cond>, LabError> {
    let mut c = ctx
        .part_c(PartCOptions {
            fail_rate: 0.0,
            analytics: false,
            ..PartCOptions::default()
        })
        .await?;
    let deadline = Duration::from_secs(60) + delay * 2 * u32::try_from(n).unwrap_or(1);
    let run = async {
        let mut conds = Vec::new();
        let bar = ctx.bar(n * 3, "Kafka: healthy, slow, down");
        for cond in CONDITIONS {
            match cond {
                "slow" => {
                    c.stop_inventory().await;
                    c.start_inventory_with(delay).await?;
                }
                "down" => c.stop_inventory().await,
                _ => {}
            }
            if cond != "down" {
                // One order first, so the measured ones do not include the
                // consumer joining its group.
                let warm = c.place(Instant::now()).await;
                if let Some(id) = warm.order_id {
                    wait_decided(&c, &[id], deadline).await?;
                }
            }
            let origin = Instant::now();
            let watcher = c.watch_decisions(deadline);
            let samples = place_all(&c, n, origin, &bar, &watcher, ctx.pacing()).await;
            if cond == "down" {
                // The downtime, as for RabbitMQ.
                tokio::time::sleep(delay).await;
                c.start_inventory_with(Duration::ZERO).await?;
            }
            let at = watcher.finish().await?;
            let reserved = until_reserved(&samples, &at, origin);
            let answered_first = answered_first(&samples, &at, origin);
            c.wait_output(&accepted_ids(&samples), deadline).await;
            conds.push(Cond {
                readings: c.readings(&samples).await?,
                samples,
                reserved,
                answered_first,
            });
        }
        bar.finish_and_clear();
        Ok::<_, LabError>(conds)
    }
    .await;
    c.stop().await;
    run
}

fn zero() -> LatencySummary {
    LatencySummary {
        count: 0,
        min_ms: 0.0,
        avg_ms: 0.0,
        p50_ms: 0.0,
        p95_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
    }
}

#[async_trait]
impl Experiment for X1Headline {
    fn id(&self) -> &'static str {
        "X1"
    }

    fn title(&self) -> &'static str {
        "REST vs RabbitMQ vs Kafka while inventory is healthy, slow, down"
    }

    fn shows(&self) -> &'static str {
        "The headline comparison, on the same workload: one client places N orders while \
         inventory is healthy, slowed down by the injected delay, and down, for each \
         architecture — sync REST (`POST /order`, which calls inventory before answering), \
         RabbitMQ (`POST /order` to the async OrderService, which stores the order and its \
         event and answers 201 at once) and Kafka (producing an `OrderEvent`, acknowledged by \
         the broker). What the client waits for and whether it succeeds is the point: a slow \
         inventory blocks a REST caller for the whole delay, while a queue's or a stream's \
         producer is not slowed at all; with inventory down, REST fails (503) while the \
         asynchronous architectures accept — the work happens later, when inventory can do \
         it. The second chart shows that later: how long until each order's stock was \
         reserved."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let n = ctx.size("x1.orders", 20, 5)?;
        let delay = ctx.settings().delay;
        let mut archs = Vec::new();
        let measured = [
            (
                "REST (Part A)",
                "rest",
                "POST /order → 201 confirmed (after reserve + notify)",
            ),
            ("RabbitMQ (Part B)", "rabbitmq", "POST /order → 201 placed"),
            (
                "Kafka (Part C)",
                "kafka",
                "produce an OrderEvent → broker ack",
            ),
        ];
        for (name, key, place) in measured {
            let result = match key {
                "rest" => rest(ctx, n, delay).await,
                "rabbitmq" => rabbitmq(ctx, n, delay).await,
                _ => kafka(ctx, n, delay).await,
            };
            let result = match result {
                Ok(c) => Ok(c),
                Err(e) if e.is_unavailable() && key != "rest" => Err(e.to_string()),
                Err(e) => return Err(e),
            };
            archs.push(Arch {
                name,
                key,
                place,
                result,
            });
        }
        if archs
            .iter()
            .filter(|a| a.is_async())
            .all(|a| a.result.is_err())
        {
            return Err(LabError::Unavailable {
                needs: "RabbitMQ or Kafka".to_owned(),
                hint: "start them with `scripts/brokers.sh up all`".to_owned(),
            });
        }

        let mut out = Outcome::default();
        out.setup("orders_per_condition", n);
        out.setup("load", ctx.pacing().describe());
        if ctx.pacing() == Pacing::Closed {
            out.setup("clients", 1);
        }
        out.setup("delay_ms", ms(delay));
        out.setup("kafka_fail_rate", 0.0);
        let mut t = Table::new(
            "x1",
            &ctx.pacing().title(
                "What the client sees, and when the work is done, per architecture and inventory condition",
            ),
            &[
                "Architecture",
                "Inventory",
                "Orders",
                "Statuses",
                "Success (%)",
                "P50 (ms)",
                "P95 (ms)",
                "Max (ms)",
                "Reserved",
                "Until reserved P50 (ms)",
            ],
        );
        let mut client_chart = Chart::new(
            "client-p50",
            &ctx.pacing().title(&format!(
                "X1: client-visible p50 latency of placing an order (inventory delay {})",
                secs(delay)
            )),
            Axis::categories("inventory", &CONDITIONS),
            Axis::log("p50 latency (ms, log scale)"),
        )
        .with_guide(Guide::y("injected delay", ms(delay)));
        let mut work_chart = Chart::new(
            "reserved-p50",
            "X1: p50 time from placing an order until its stock was reserved",
            Axis::categories("inventory", &CONDITIONS),
            Axis::log("p50 until reserved (ms, log scale)"),
        )
        .with_guide(Guide::y("injected delay", ms(delay)));
        let mut s: HashMap<(&str, &str), (LatencySummary, f64, usize, LatencySummary)> =
            HashMap::new();
        let mut first: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, a) in archs.iter().enumerate() {
            let offset = (i as f64 - 1.0) * 0.15;
            let conds = match &a.result {
                Ok(c) => c,
                Err(e) => {
                    out.unmeasured(format!("{}: {e}", a.name));
                    continue;
                }
            };
            let mut client_points = Vec::new();
            let mut failed_points = Vec::new();
            let mut work_points = Vec::new();
            for (j, (cond, c)) in CONDITIONS.iter().zip(conds).enumerate() {
                let sum = summary(&c.samples);
                let ok = count_status(&c.samples, 201);
                let rate = 100.0 * ok as f64 / c.samples.len().max(1) as f64;
                let work = LatencySummary::of(c.reserved.iter().copied()).unwrap_or_else(zero);
                t.row(vec![
                    a.name.into(),
                    (*cond).into(),
                    c.samples.len().into(),
                    statuses(&c.samples).into(),
                    rate.into(),
                    sum.p50_ms.into(),
                    sum.p95_ms.into(),
                    sum.max_ms.into(),
                    c.reserved.len().into(),
                    work.p50_ms.into(),
                ]);
                let x = (j + 1) as f64 + offset;
                if ok == 0 {
                    failed_points.push([x, sum.p50_ms]);
                } else {
                    client_points.push([x, sum.p50_ms]);
                }
                if !c.reserved.is_empty() {
                    work_points.push([x, work.p50_ms]);
                }
                out.metrics(sum.metrics(&format!("{}.{cond}", a.key)));
                out.metric(format!("{}.{cond}.success_pct", a.key), rate);
                out.metric(
                    format!("{}.{cond}.reserved", a.key),
                    c.reserved.len() as f64,
                );
                out.metric(
                    format!("{}.{cond}.until_reserved.p50_ms", a.key),
                    work.p50_ms,
                );
                s.insert((a.key, cond), (sum, rate, c.reserved.len(), work));
                first.insert((a.key, cond), c.answered_first);
            }
            client_chart = client_chart.with_series(Series::points(a.name, client_points));
            if !failed_points.is_empty() {
                client_chart = client_chart.with_series(Series::points(
                    &format!("{}: failed, nothing placed", a.name),
                    failed_points,
                ));
            }
            work_chart = work_chart.with_series(Series::points(a.name, work_points));
        }
        out.table(t);
        let mut how = Table::new(
            "what",
            "What “placing an order” and “reserved” are for each",
            &[
                "Architecture",
                "Placing an order (the client waits for)",
                "Slow / down inventory",
            ],
        );
        for a in &archs {
            let faults = match a.key {
                "rest" => "`POST /configure {\"delay\"}` / inventory stopped (connection refused)",
                "rabbitmq" => "the same delay in the inventory consumer / its consumer stopped",
                _ => "the inventory consumer's `THROTTLE_MS` / the consumer stopped",
            };
            how.row(vec![a.name.into(), a.place.into(), faults.into()]);
        }
        out.table(how);
        out.chart(client_chart);
        out.chart(work_chart);

        let delay_ms = ms(delay);
        let get = |arch: &str, cond: &str| s.get(&(arch, cond)).copied();
        let nn = usize::try_from(n).unwrap_or(usize::MAX);
        let healthy_ok = archs.iter().filter(|a| a.result.is_ok()).all(|a| {
            get(a.key, "healthy")
                .is_some_and(|(_, rate, reserved, _)| rate == 100.0 && reserved == nn)
        });
        out.conclude(
            "Healthy, every architecture places every order",
            healthy_ok,
            archs
                .iter()
                .filter_map(|a| {
                    let (sum, rate, _, _) = get(a.key, "healthy")?;
                    Some(format!(
                        "{}: {rate:.0} % at p50 {:.2} ms",
                        a.name, sum.p50_ms
                    ))
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
        if let Some((slow, _, _, _)) = get("rest", "slow") {
            out.conclude(
                "A slow inventory blocks the REST caller for the whole delay",
                slow.min_ms >= delay_ms,
                format!(
                    "REST with a {delay_ms:.0} ms delay: min {:.2} ms, p50 {:.2} ms (healthy p50 {:.2} ms)",
                    slow.min_ms,
                    slow.p50_ms,
                    get("rest", "healthy").map_or(0.0, |h| h.0.p50_ms)
                ),
            );
        }
        let measured_async: Vec<&Arch> = archs
            .iter()
            .filter(|a| a.is_async() && a.result.is_ok())
            .collect();
        let mut unaffected = true;
        let mut evidence = Vec::new();
        for a in &measured_async {
            if let (Some(h), Some(sl)) = (get(a.key, "healthy"), get(a.key, "slow")) {
                unaffected &= sl.0.p50_ms < delay_ms * UNAFFECTED_SHARE && sl.1 == 100.0;
                evidence.push(format!(
                    "{}: p50 {:.2} ms healthy → {:.2} ms slow, {:.0} % accepted",
                    a.name, h.0.p50_ms, sl.0.p50_ms, sl.1
                ));
            }
        }
        out.conclude(
            "The queue's and the stream's producers are not slowed by a slow inventory",
            unaffected && !evidence.is_empty(),
            format!(
                "{} (claim: p50 under {:.0} % of the {delay_ms:.0} ms delay)",
                evidence.join("; "),
                UNAFFECTED_SHARE * 100.0
            ),
        );
        let rest_down = get("rest", "down");
        let mut down_ok = rest_down.is_some_and(|(_, rate, _, _)| rate == 0.0);
        let mut evidence = vec![match archs.iter().find(|a| a.key == "rest") {
            Some(Arch {
                result: Ok(conds), ..
            }) => format!("REST: {}", statuses(&conds[2].samples)),
            _ => "REST: not measured".to_owned(),
        }];
        for a in &measured_async {
            if let Some((_, rate, _, _)) = get(a.key, "down") {
                down_ok &= rate == 100.0;
                evidence.push(format!("{}: {rate:.0} % accepted", a.name));
            }
        }
        out.conclude(
            "With inventory down, REST fails while the asynchronous architectures accept",
            down_ok,
            evidence.join("; "),
        );
        let mut later_ok = !measured_async.is_empty();
        let mut evidence = Vec::new();
        for a in &measured_async {
            for cond in ["slow", "down"] {
                let (reserved, ahead) = (
                    get(a.key, cond).map_or(0, |c| c.2),
                    first.get(&(a.key, cond)).copied().unwrap_or(0),
                );
                later_ok &= reserved == nn && ahead == nn;
                evidence.push(format!(
                    "{} {cond}: {reserved}/{nn} reserved, {ahead}/{nn} answered before their \
                     reservation",
                    a.name
                ));
            }
        }
        out.conclude(
            "The asynchronous client is answered before the work is done, and the work is all \
             done later",
            later_ok,
            evidence.join("; "),
        );
        for a in &measured_async {
            if let Some(sl) = get(a.key, "slow") {
                out.note(format!(
                    "{}, slow inventory: the orders were reserved {:.1} s to {:.1} s after they \
                     were placed (p50 {:.1} s) — the work queues up behind the slow consumer, \
                     {}; the producer does not notice.",
                    a.name,
                    sl.3.min_ms / 1000.0,
                    sl.3.max_ms / 1000.0,
                    sl.3.p50_ms / 1000.0,
                    if a.key == "kafka" {
                        "which, throttled, decides one order at a time per worker (all of a \
                         worker's partitions one after another)"
                    } else {
                        "which takes up to its prefetch of deliveries at once"
                    }
                ));
            }
        }
        out.note(
            "“Reserved” is when the stock was taken: for REST, the 201 itself (inventory reserves \
             before the order service answers); for RabbitMQ, when inventory's consumer \
             acknowledged the `OrderPlaced` (the decision durable in its ledger and \
             `InventoryReserved` published); for Kafka, when the inventory consumer's ledger holds \
             the decision (each order watched from its acknowledgement, polled every millisecond). Kafka's inventory consumer runs with FAIL_RATE 0 \
             here, so every order is reserved. Kafka's producer waits up to 5 ms to batch \
             records (`linger.ms=5`), which is most of its acknowledgement time.",
        );
        out.note(format!(
            "REST down is inventory stopped (connection refused): the order service answers 503 \
             at once. An *unresponsive* inventory would make it wait for its {} timeout before \
             the 504 (see A3 and A4).",
            secs(campusfood_core::config::HttpConfig::default().downstream_timeout)
        ));
        out.note(format!(
            "“Down” for the asynchronous architectures: inventory's consumer is stopped while \
             the orders are placed and stays away {} more (as long as the slow condition's \
             delay), then starts again; REST has nothing to come back to — its orders failed.",
            secs(delay)
        ));
        out.note(
            "Kafka's consumer is restarted to change its throttle and after being down; one \
             order is placed and decided first each time, so that joining the consumer group is \
             not counted in the measured orders.",
        );
        for a in &archs {
            let Ok(conds) = &a.result else { continue };
            for (cond, c) in CONDITIONS.iter().zip(conds) {
                let expected = match (a.key, *cond) {
                    ("rest", "down") => OrderClass::Failed,
                    ("rest", _) | ("rabbitmq", _) => OrderClass::Notified,
                    _ => OrderClass::Reserved,
                };
                out.orders(
                    OrderOutcomes::new(&format!("{}, {cond}", a.name), &[expected])
                        .record_all(&c.readings),
                );
            }
        }
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_waits_for_the_reservation_is_not_answered_first() {
        let ms = Duration::from_millis;
        // Asynchronous: answered in 1 ms, reserved 2 s later.
        assert_eq!(
            count_answered_first(&[(ms(1), ms(2000)), (ms(1), ms(2001))]),
            2
        );
        // A service that answers only once the stock is taken (REST, or a
        // broken "asynchronous" one): never first.
        assert_eq!(
            count_answered_first(&[(ms(2001), ms(2000)), (ms(5), ms(5))]),
            0
        );
    }
}
