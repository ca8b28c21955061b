//! A4 — circuit breaker off vs on during an inventory outage, for two kinds
//! of outage: an unresponsive inventory (accepts, never answers) and a
//! stopped one (connections refused).
//!
//! Each of the four runs starts a fresh Part A, sends orders at a fixed
//! rate for `before + outage + after`, takes inventory down after `before`
//! and brings it back (same address, same ledger) after `outage`. Orders
//! are classified by when they were *sent*.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::config::BreakerConfig;
use campusfood_services::sync_rest::resilience::CircuitOpen;

use super::common::{statuses, summary};
use crate::context::Context;
use crate::error::LabError;
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::load::{Sample, fixed_rate, peak_in_flight};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading};
use crate::stats::ms;
use crate::sync_rest::OutageKind;

/// A4 — circuit breaker during an outage.
#[derive(Debug, Clone, Copy)]
pub struct A4Breaker;

/// An order that took at least this share of the timeout "waited for the
/// timeout".
const WAITED: f64 = 0.9;

/// The timeline and breaker of the runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    timeout: Duration,
    before: Duration,
    outage: Duration,
    after: Duration,
    rate: f64,
    breaker: BreakerConfig,
}

impl Plan {
    fn from(ctx: &Context) -> Result<Self, LabError> {
        let s = ctx.settings();
        let (before_ms, open_for_ms) = if s.fast { (500, 300) } else { (2000, 2000) };
        let before = Duration::from_millis(s.param("a4.before_ms", before_ms)?);
        let open_for = Duration::from_millis(s.param("a4.open_for_ms", open_for_ms)?);
        let threshold = s.param("a4.threshold", BreakerConfig::default().failure_threshold)?;
        // Long enough after recovery for an open breaker's next probe to
        // get through and close it, with margin.
        let after = (open_for * 2 + s.breaker_timeout).max(Duration::from_secs(1));
        Ok(Self {
            timeout: s.breaker_timeout,
            before,
            outage: s.outage,
            after,
            rate: s.rate,
            breaker: BreakerConfig {
                failure_threshold: threshold,
                open_for,
            },
        })
    }

    /// How long after recovery the outage can still be felt: a call
    /// admitted during it times out, and may re-open the breaker.
    fn settle(&self) -> Duration {
        self.timeout + self.breaker.open_for
    }

    /// The most orders that may still wait for the timeout with the
    /// breaker on: those sent before the first `failure_threshold` failures
    /// came back (a timeout's worth at the rate, plus the threshold), and
    /// one probe per cycle of open-for plus a timed-out probe through the
    /// outage, plus one.
    fn breaker_waited_bound(&self) -> usize {
        let admitted = (self.rate * self.timeout.as_secs_f64()).ceil() as usize
            + self.breaker.failure_threshold as usize;
        let cycle = (self.breaker.open_for + self.timeout).as_secs_f64();
        let probes = (self.outage.as_secs_f64() / cycle.max(f64::MIN_POSITIVE)).ceil() as usize;
        admitted + probes + 1
    }

    fn total(&self) -> Duration {
        self.before + self.outage + self.after
    }
}

/// One run: outage kind × breaker.
struct RunResult {
    kind: OutageKind,
    breaker: bool,
    samples: Vec<Sample>,
    /// What became of each order.
    readings: Vec<(String, OrderReading)>,
    /// When inventory started going down, since the origin.
    down: Duration,
    /// When it was back.
    up: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    During,
    After,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::During => "during",
            Self::After => "after",
        }
    }
}

impl RunResult {
    fn label(&self) -> &'static str {
        if self.breaker {
            "breaker on"
        } else {
            "breaker off"
        }
    }

    fn key(&self) -> String {
        format!(
            "{}.{}",
            self.kind.name(),
            if self.breaker {
                "breaker_on"
            } else {
                "breaker_off"
            }
        )
    }

    /// The orders of phase `p`: *before* = answered before inventory went
    /// down; *during* = the rest of those sent before it was back (an order
    /// sent just before the outage and caught by it counts as during);
    /// *after* = sent once it was back.
    fn phase(&self, p: Phase) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|s| {
                let ph = if s.answered() < self.down {
                    Phase::Before
                } else if s.sent < self.up {
                    Phase::During
                } else {
                    Phase::After
                };
                ph == p
            })
            .cloned()
            .collect()
    }

    /// Orders sent during the outage that waited for the timeout.
    fn waited(&self, timeout: Duration) -> usize {
        self.phase(Phase::During)
            .iter()
            .filter(|s| s.latency.as_secs_f64() >= timeout.as_secs_f64() * WAITED)
            .count()
    }

    /// Orders sent during the outage that the breaker refused without
    /// calling inventory: their 503 says the circuit is open.
    fn shed(&self) -> usize {
        let open = CircuitOpen.to_string();
        self.phase(Phase::During)
            .iter()
            .filter(|s| s.status == 503 && s.error.as_deref() == Some(open.as_str()))
            .count()
    }

    /// How long after inventory returned the first order sent was
    /// confirmed, and whether every order sent once the outage had settled
    /// was. The outage settles `settle` after recovery: a call admitted
    /// during it may still time out up to a timeout later, and with a
    /// breaker that late failure re-opens it for one cool-down.
    fn recovery(&self, settle: Duration) -> Option<(Duration, bool)> {
        let after = self.phase(Phase::After);
        let first = after.iter().position(Sample::ok)?;
        let since = after[first].sent.saturating_sub(self.up);
        let settled = (self.up + settle).max(after[first].sent);
        let all = after.iter().filter(|s| s.sent >= settled).all(Sample::ok);
        Some((since, all))
    }
}

async fn run_once(
    ctx: &Context,
    plan: &Plan,
    kind: OutageKind,
    breaker: bool,
) -> Result<RunResult, LabError> {
    let mut app = ctx
        .part_a(|h| {
            h.downstream_timeout = plan.timeout;
            h.breaker = breaker.then_some(plan.breaker);
        })
        .await?;
    let client = app.client().clone();
    let expected = (plan.rate * plan.total().as_secs_f64()).ceil() as u64;
    let bar = ctx.bar(
        expected,
        &format!(
            "{} inventory, breaker {}",
            kind.name(),
            if breaker { "on" } else { "off" }
        ),
    );
    let origin = Instant::now();
    let load = {
        let (client, bar, plan) = (client.clone(), bar.clone(), *plan);
        tokio::spawn(
            async move { fixed_rate(&client, plan.rate, plan.total(), origin, &bar).await },
        )
    };
    let timeline = async {
        // These sleeps are the experiment's timeline (healthy, down, back),
        // not waits for a condition.
        tokio::time::sleep_until((origin + plan.before).into()).await;
        let down = origin.elapsed();
        let outage = app.inventory_outage(kind).await?;
        tokio::time::sleep_until((origin + plan.before + plan.outage).into()).await;
        app.end_outage(outage).await?;
        let up = origin.elapsed();
        Ok::<_, LabError>((down, up))
    }
    .await;
    let samples = load.await;
    bar.finish_and_clear();
    let samples = match samples {
        Ok(Ok(samples)) => samples,
        Ok(Err(e)) => {
            app.stop().await;
            return Err(e);
        }
        Err(e) => {
            app.stop().await;
            return Err(e.into());
        }
    };
    let readings = app.readings(&samples).await;
    app.stop().await;
    let (down, up) = timeline?;
    Ok(RunResult {
        kind,
        breaker,
        readings: readings?,
        samples,
        down,
        up,
    })
}

#[async_trait]
impl Experiment for A4Breaker {
    fn id(&self) -> &'static str {
        "A4"
    }

    fn title(&self) -> &'static str {
        "Circuit breaker during an inventory outage"
    }

    fn shows(&self) -> &'static str {
        "What a circuit breaker on the Order → Inventory hop buys while inventory is down. \
         Orders arrive at a fixed rate (users do not wait for each other) before, during and \
         after an outage, with the breaker off and on. The outage that shows the breaker's \
         value is an *unresponsive* inventory — the host accepts connections and never \
         answers, like a hung process or a dead network path: without a breaker every order \
         holds a client, a connection and a task for the full downstream timeout, and they \
         pile up; with it, after a few failures the circuit opens and orders fail at once \
         (503) without calling inventory, then a probe closes it when inventory is back. \
         The same runs with a *stopped* inventory (connections refused) show the contrast: a \
         refusal is already fast, so there the breaker saves load on inventory, not latency."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let plan = Plan::from(ctx)?;
        let mut runs = Vec::new();
        for kind in [OutageKind::Unresponsive, OutageKind::Refused] {
            for breaker in [false, true] {
                runs.push(run_once(ctx, &plan, kind, breaker).await?);
            }
        }
        let timeout_ms = ms(plan.timeout);

        let mut out = Outcome::default();
        out.setup("rate_per_s", plan.rate);
        out.setup("downstream_timeout_ms", timeout_ms);
        out.setup("before_ms", ms(plan.before));
        out.setup("outage_ms", ms(plan.outage));
        out.setup("after_ms", ms(plan.after));
        out.setup("breaker_threshold", plan.breaker.failure_threshold);
        out.setup("breaker_open_for_ms", ms(plan.breaker.open_for));

        let mut phases = Table::new(
            "phases",
            "Orders before, during and after the outage (before: answered before it began; during: sent before inventory was back; after: sent after)",
            &[
                "Outage", "Breaker", "Phase", "Orders", "Statuses", "P50 (ms)", "P95 (ms)",
                "Max (ms)",
            ],
        );
        let mut glance = Table::new(
            "during",
            "During the outage, at a glance",
            &[
                "Outage",
                "Breaker",
                "P50 during (ms)",
                "Waited for the timeout",
                "Peak orders in flight",
                "First 201 after recovery (ms)",
                "Every order after it 201",
            ],
        );
        for r in &runs {
            for p in [Phase::Before, Phase::During, Phase::After] {
                let samples = r.phase(p);
                let s = summary(&samples);
                phases.row(vec![
                    r.kind.name().into(),
                    r.label().into(),
                    p.name().into(),
                    samples.len().into(),
                    statuses(&samples).into(),
                    s.p50_ms.into(),
                    s.p95_ms.into(),
                    s.max_ms.into(),
                ]);
                out.metrics(
                    s.metrics(&format!("{}.{}", r.key(), p.name()))
                        .into_iter()
                        .filter(|(k, _)| !k.ends_with("p99_ms")),
                );
            }
            let during = r.phase(Phase::During);
            let recovery = r.recovery(plan.settle());
            glance.row(vec![
                r.kind.name().into(),
                r.label().into(),
                summary(&during).p50_ms.into(),
                format!("{} of {}", r.waited(plan.timeout), during.len()).into(),
                peak_in_flight(&r.samples).into(),
                recovery.map_or(Cell::Text("never".into()), |(d, _)| ms(d).into()),
                recovery
                    .map_or("-", |(_, all)| if all { "yes" } else { "no" })
                    .into(),
            ]);
            out.metric(
                format!("{}.during.waited_for_timeout", r.key()),
                r.waited(plan.timeout) as f64,
            );
            out.metric(
                format!("{}.peak_in_flight", r.key()),
                peak_in_flight(&r.samples) as f64,
            );
            if let Some((d, _)) = recovery {
                out.metric(format!("{}.recovered_after_ms", r.key()), ms(d));
            }
        }
        out.table(glance);
        out.table(phases);

        for kind in [OutageKind::Unresponsive, OutageKind::Refused] {
            let of_kind: Vec<&RunResult> = runs.iter().filter(|r| r.kind == kind).collect();
            let Some(first) = of_kind.first() else {
                continue;
            };
            let mut chart = Chart::new(
                &format!("latency-{}", kind.name()),
                &format!(
                    "A4: latency of each order, {} inventory, breaker off vs on",
                    kind.name()
                ),
                Axis::linear("order sent at (s)"),
                Axis::log("latency (ms, log scale)"),
            );
            for r in &of_kind {
                chart = chart.with_series(Series::points(
                    r.label(),
                    r.samples
                        .iter()
                        .map(|s| [s.sent.as_secs_f64(), ms(s.latency)])
                        .collect(),
                ));
            }
            chart = chart
                .with_guide(Guide::x("inventory down", first.down.as_secs_f64()))
                .with_guide(Guide::x("inventory back", first.up.as_secs_f64()))
                .with_guide(Guide::y("downstream timeout", timeout_ms));
            out.chart(chart);
        }

        let find = |kind, breaker| runs.iter().find(|r| r.kind == kind && r.breaker == breaker);
        let during_p50 = |r: &RunResult| summary(&r.phase(Phase::During)).p50_ms;
        if let (Some(off), Some(on)) = (
            find(OutageKind::Unresponsive, false),
            find(OutageKind::Unresponsive, true),
        ) {
            let (p_off, p_on) = (during_p50(off), during_p50(on));
            let d_off = off.phase(Phase::During);
            let d_on = on.phase(Phase::During);
            out.conclude(
                "Without a breaker, an unresponsive inventory makes orders wait for the full timeout",
                p_off >= timeout_ms * WAITED,
                format!(
                    "breaker off: p50 {p_off:.2} ms against a {timeout_ms:.0} ms timeout; {} of \
                     {} orders sent during the outage waited for it ({}); up to {} orders in \
                     flight at once",
                    off.waited(plan.timeout),
                    d_off.len(),
                    statuses(&d_off),
                    peak_in_flight(&off.samples)
                ),
            );
            out.conclude(
                "With the breaker on, the same outage fails fast: p50 far below the off case",
                p_on * 10.0 < p_off,
                format!(
                    "p50 during the outage: {p_on:.2} ms with the breaker vs {p_off:.2} ms \
                     without ({:.0}× faster); breaker on: {}",
                    p_off / p_on.max(0.001),
                    statuses(&d_on)
                ),
            );
            let reset = d_off.iter().filter(|s| s.status != 504).count();
            if reset > 0 {
                out.note(format!(
                    "Breaker off, unresponsive: the {reset} orders of the outage that were not \
                     504s are the ones still waiting when inventory came back — the stand-in \
                     closed their connections, so they failed (503) just before their timeout; \
                     about rate × timeout of them ({:.0}) are in flight at any moment.",
                    plan.rate * plan.timeout.as_secs_f64()
                ));
            }
            out.conclude(
                "Once open, the breaker stops sending orders into the hung inventory",
                // "Once open": it did open (orders refused by it), and
                // then only the bounded few still waited. A bound alone
                // grows with the threshold until it cannot fail.
                on.shed() > 0 && on.waited(plan.timeout) <= plan.breaker_waited_bound(),
                format!(
                    "with the breaker, {} of {} orders of the outage were refused by the open \
                     circuit (503 \"circuit open\", inventory not called) and {} waited for the \
                     timeout (claim: at most {} — a timeout's worth at {}/s and {} failures \
                     before it opens, then one probe per open-for + timeout, plus one) vs {} of \
                     {} without",
                    on.shed(),
                    d_on.len(),
                    on.waited(plan.timeout),
                    plan.breaker_waited_bound(),
                    plan.rate,
                    plan.breaker.failure_threshold,
                    off.waited(plan.timeout),
                    d_off.len()
                ),
            );
        }
        if let Some(refused) = find(OutageKind::Refused, false) {
            let p = during_p50(refused);
            out.conclude(
                "A stopped inventory (connection refused) fails fast even without a breaker",
                p * 10.0 < timeout_ms,
                format!(
                    "breaker off, refused: p50 {p:.2} ms during the outage, against a \
                     {timeout_ms:.0} ms timeout — so a refusal shows the breaker's value only \
                     as load kept off inventory; the unresponsive outage shows it in latency"
                ),
            );
        }
        let recovered: Vec<String> = runs
            .iter()
            .map(|r| match r.recovery(plan.settle()) {
                Some((d, all)) => format!(
                    "{}, {}: first 201 {:.0} ms after inventory returned{}",
                    r.kind.name(),
                    r.label(),
                    ms(d),
                    if all {
                        ""
                    } else {
                        ", but not every order once the outage had settled"
                    }
                ),
                None => format!("{}, {}: no order succeeded", r.kind.name(), r.label()),
            })
            .collect();
        out.conclude(
            "After recovery orders succeed again, with the breaker off and on",
            runs.iter()
                .all(|r| r.recovery(plan.settle()).is_some_and(|(_, all)| all)),
            recovered.join("; "),
        );
        let before_ok = runs
            .iter()
            .all(|r| r.phase(Phase::Before).iter().all(Sample::ok));
        let before: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "{}, {}: {}",
                    r.kind.name(),
                    r.label(),
                    statuses(&r.phase(Phase::Before))
                )
            })
            .collect();
        out.conclude(
            "Before the outage every order is confirmed",
            before_ok,
            before.join("; "),
        );
        for r in &runs {
            out.orders(
                OrderOutcomes::new(
                    &format!("{}, {}", r.kind.name(), r.label()),
                    &[OrderClass::Notified, OrderClass::Failed],
                )
                .record_all(&r.readings),
            );
        }
        out.conclude_nothing_lost_nothing_twice();
        out.note(format!(
            "With the breaker on, the orders sent in the first {} of an unresponsive outage \
             still wait: they are admitted while the circuit is closed, because the first \
             failure is only known when the first call times out. The breaker opens after {} \
             consecutive failures, so what it saves grows with the length of the outage.",
            super::common::secs(plan.timeout),
            plan.breaker.failure_threshold
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_that_lets_the_outage_through_exceeds_its_bound() {
        let plan = Plan {
            timeout: Duration::from_millis(200),
            before: Duration::from_millis(500),
            outage: Duration::from_millis(1500),
            after: Duration::from_secs(1),
            rate: 50.0,
            breaker: BreakerConfig {
                failure_threshold: 5,
                open_for: Duration::from_millis(300),
            },
        };
        // 10 in flight at 50/s × 0.2 s, 5 to open it, 3 probes, 1.
        assert_eq!(plan.breaker_waited_bound(), 19);
        // Without a breaker every order of the outage waits: 75.
        assert!(75 > plan.breaker_waited_bound());
    }
}
