//! `lab perf`: the six headline figures as a user sees them — the shipped
//! example binaries started with their defaults (default logging), one
//! process per service where the figure says so, load from `wrk` — each
//! beside the original assignment's figure and beside its limit on this
//! machine (`cargo bench --bench limits`).
//!
//! | figure | definition |
//! |---|---|
//! | A p50 | `POST /order` to `sync_rest`, `wrk -t1 -c1`, median latency |
//! | A orders/s | the same, `wrk -t2 -c16` |
//! | B acceptance p50 | `POST /order` on :8001, order, inventory and notification as separate `async_rabbitmq` processes, `wrk -t1 -c1` |
//! | B drain | inventory stopped, 5 s of `wrk -t2 -c16` load, inventory started: orders accepted during the load ÷ time from inventory's start until it has acked them all (the order service runs and consumes the status events meanwhile) |
//! | C produce | from starting `MODE=burst TOTAL_EVENTS=10000 streaming_kafka producer` until the order topic's high watermarks have grown by 10,000 |
//! | C steady | `streaming_kafka inventory` started on that 10,000-order backlog (exactly once, redb ledger): its output records ÷ the span of their timestamps |

mod kafka_end;
mod limits;
mod part_a;
mod part_b;
mod part_c;
mod process;
mod wrk;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::LabError;

/// The six figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FigureId {
    /// Part A: `POST /order` p50, one connection.
    APostP50,
    /// Part A: orders/s, 16 connections.
    AOrdersPerSecond,
    /// Part B: acceptance p50 on the order service.
    BAcceptanceP50,
    /// Part B: backlog drain rate.
    BDrain,
    /// Part C: 10,000 orders produced, to durable high watermarks.
    CProduce,
    /// Part C: the inventory consumer's steady rate.
    CSteady,
}

/// Whether a smaller or a larger value is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Better {
    /// A latency or a duration.
    Lower,
    /// A rate.
    Higher,
}

/// What a figure is and what it is compared with.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spec {
    /// Which figure.
    pub id: FigureId,
    /// What is measured, for the table.
    pub what: &'static str,
    /// The unit of the value.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// The original assignment's services, measured natively on this
    /// machine kind by issue 11 (they are not in this repository, so
    /// nothing here re-measures them).
    pub original: f64,
    /// The ratio to the original issue 11 aims at.
    pub aim_ratio: f64,
}

/// The figures, in the table's order.
pub const SPECS: [Spec; 6] = [
    Spec {
        id: FigureId::APostP50,
        what: "A: `POST /order` p50, 1 connection (`wrk -t1 -c1`)",
        unit: "ms",
        better: Better::Lower,
        original: 6.81,
        aim_ratio: 14.0,
    },
    Spec {
        id: FigureId::AOrdersPerSecond,
        what: "A: orders/s, 16 connections (`wrk -t2 -c16`)",
        unit: "/s",
        better: Better::Higher,
        original: 161.0,
        aim_ratio: 50.0,
    },
    Spec {
        id: FigureId::BAcceptanceP50,
        what: "B: acceptance p50 on :8001, services in separate processes",
        unit: "ms",
        better: Better::Lower,
        original: 15.4,
        aim_ratio: 25.0,
    },
    Spec {
        id: FigureId::BDrain,
        what: "B: backlog drain after 5 s of 16-connection load",
        unit: "/s",
        better: Better::Higher,
        original: 84.0,
        aim_ratio: 100.0,
    },
    Spec {
        id: FigureId::CProduce,
        what: "C: producer start → 10,000 orders at the high watermarks",
        unit: "s",
        better: Better::Lower,
        original: 0.32,
        aim_ratio: 2.0,
    },
    Spec {
        id: FigureId::CSteady,
        what: "C: inventory's steady rate on a 10k backlog (exactly once)",
        unit: "/s",
        better: Better::Higher,
        original: 2176.0,
        aim_ratio: 20.0,
    },
];

impl Spec {
    /// How many times better than the original `value` is.
    pub fn ratio(&self, value: f64) -> f64 {
        match self.better {
            Better::Lower => self.original / value,
            Better::Higher => value / self.original,
        }
    }

    /// How close `value` is to `limit`: 1.0 at the limit.
    pub fn share_of_limit(&self, value: f64, limit: f64) -> f64 {
        match self.better {
            Better::Lower => limit / value,
            Better::Higher => value / limit,
        }
    }
}

/// One figure as measured.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What it is.
    pub spec: Spec,
    /// The measured value, in `spec.unit`; `None` when it could not be
    /// measured (see `error`).
    pub value: Option<f64>,
    /// How it was measured: counts, the other percentiles.
    pub detail: String,
    /// Why it could not be measured.
    pub error: Option<String>,
    /// The limit on this machine, in `spec.unit`, when the limits bench has
    /// run.
    pub limit: Option<f64>,
    /// What the limit is made of.
    pub limit_of: Option<&'static str>,
}

/// What a part measured for one of its figures.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) id: FigureId,
    pub(crate) result: Result<(f64, String), String>,
}

impl Measured {
    fn ok(id: FigureId, value: f64, detail: String) -> Self {
        Self {
            id,
            result: Ok((value, detail)),
        }
    }

    fn failed(id: FigureId, error: &LabError) -> Self {
        Self {
            id,
            result: Err(error.to_string()),
        }
    }
}

/// Which parts to measure and how.
#[derive(Clone, Debug)]
pub struct PerfOptions {
    /// Where `sync_rest`, `async_rabbitmq` and `streaming_kafka` are.
    pub bin_dir: PathBuf,
    /// The wrk executable.
    pub wrk: PathBuf,
    /// Length of each measured wrk run (the figures' definitions: 10 s).
    pub duration: Duration,
    /// Load before each measured run, not measured.
    pub warmup: Duration,
    /// Part B: how long the load runs while inventory is stopped (5 s).
    pub drain_load: Duration,
    /// Part C: orders in the burst ([`DEFINED_BURST`]).
    pub burst: u64,
    /// `target/criterion`, where the limits bench left its results.
    pub criterion_dir: PathBuf,
    /// Where the services' logs go.
    pub logs: PathBuf,
    /// Measure Part A.
    pub part_a: bool,
    /// Measure Part B (needs RabbitMQ).
    pub part_b: bool,
    /// Measure Part C (needs Kafka).
    pub part_c: bool,
}

/// The run's figures, in [`SPECS`]' order (parts not measured left out).
#[derive(Clone, Debug, Serialize)]
pub struct PerfReport {
    /// The figures.
    pub figures: Vec<Figure>,
    /// What the table's labels do not say: Part C measured on a burst
    /// other than [`DEFINED_BURST`].
    pub note: Option<String>,
    /// Every limits bench that has run: id, what, seconds per iteration,
    /// elements per second.
    pub limits: Vec<(&'static str, &'static str, f64, Option<f64>)>,
}

/// The orders of the burst Part C's two figures are defined on.
pub const DEFINED_BURST: u64 = 10_000;

/// Measures the selected parts one after another (never two at once: they
/// share the cores) and reads the limits.
pub async fn run(options: &PerfOptions) -> PerfReport {
    let mut measured = Vec::new();
    if options.part_a {
        measured.extend(part_a::measure(options).await);
    }
    if options.part_b {
        measured.extend(part_b::measure(options).await);
    }
    if options.part_c {
        measured.extend(part_c::measure(options).await);
    }
    let figures = SPECS
        .iter()
        .filter_map(|spec| {
            let m = measured.iter().find(|m| m.id == spec.id)?;
            let limit = limits::limit(&options.criterion_dir, spec.id);
            let (value, detail, error) = match &m.result {
                Ok((v, d)) => (Some(*v), d.clone(), None),
                Err(e) => (None, String::new(), Some(e.clone())),
            };
            Some(Figure {
                spec: *spec,
                value,
                detail,
                error,
                limit: limit.map(|l| l.0),
                limit_of: limit.map(|l| l.1),
            })
        })
        .collect();
    let note = (options.part_c && options.burst != DEFINED_BURST).then(|| {
        format!(
            "Part C ran on a burst of {} orders, not the {} its two figures are defined on: \
             their labels, ratios and aims are those of the definitions.",
            thousands(options.burst),
            thousands(DEFINED_BURST),
        )
    });
    PerfReport {
        figures,
        note,
        limits: limits::all(&options.criterion_dir),
    }
}

/// `value` in `unit`, to three significant digits or so.
fn show(value: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{}/s", thousands(value.round() as u64)),
        "ms" if value < 10.0 => format!("{value:.2} ms"),
        "s" if value < 10.0 => format!("{value:.3} s"),
        _ => format!("{value:.1} {unit}"),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl PerfReport {
    /// Whether every figure was measured.
    pub fn complete(&self) -> bool {
        self.figures.iter().all(|f| f.value.is_some())
    }

    /// The table, then each figure's detail and the limits behind them.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if let Some(note) = &self.note {
            let _ = writeln!(out, "{note}\n");
        }
        out.push_str(
            "| figure | original | ours | ratio (aim) | limit here | share of limit |\n|---|---|---|---|---|---|\n",
        );
        for f in &self.figures {
            let s = &f.spec;
            let (ours, ratio) = match f.value {
                Some(v) => (
                    format!("**{}**", show(v, s.unit)),
                    format!("{:.1}× (≥ {}×)", s.ratio(v), s.aim_ratio),
                ),
                None => ("not measured".to_owned(), format!("(≥ {}×)", s.aim_ratio)),
            };
            let (limit, share) = match (f.limit, f.value) {
                (Some(l), Some(v)) => (
                    show(l, s.unit),
                    format!("{:.0} %", 100.0 * s.share_of_limit(v, l)),
                ),
                (Some(l), None) => (show(l, s.unit), String::new()),
                (None, _) => ("run `cargo bench --bench limits`".to_owned(), String::new()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {ours} | {ratio} | {limit} | {share} |",
                s.what,
                show(s.original, s.unit)
            );
        }
        out.push('\n');
        for f in &self.figures {
            match (&f.error, f.limit_of) {
                (Some(e), _) => {
                    let _ = writeln!(out, "- {}: not measured: {e}", f.spec.what);
                }
                (None, limit_of) => {
                    let _ = write!(out, "- {}: {}", f.spec.what, f.detail);
                    if let Some(l) = limit_of {
                        let _ = write!(out, "; limit: {l}");
                    }
                    out.push('\n');
                }
            }
        }
        if !self.limits.is_empty() {
            out.push_str("\nLimits (`cargo bench --bench limits`, criterion medians):\n\n");
            for (id, what, seconds, per_second) in &self.limits {
                let _ = write!(out, "- `{id}` ({what}): {}", show(seconds * 1e3, "ms"));
                if let Some(r) = per_second {
                    let _ = write!(out, " per iteration, {}", show(*r, "/s"));
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_shares_point_the_same_way_for_latencies_and_rates() {
        let p50 = SPECS[0];
        assert!((p50.ratio(0.681) - 10.0).abs() < 1e-9);
        assert!((p50.share_of_limit(1.0, 0.5) - 0.5).abs() < 1e-9);
        let rate = SPECS[1];
        assert!((rate.ratio(1610.0) - 10.0).abs() < 1e-9);
        assert!((rate.share_of_limit(5_000.0, 10_000.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_table_shows_what_was_not_measured() {
        let report = PerfReport {
            figures: vec![
                Figure {
                    spec: SPECS[0],
                    value: Some(0.5),
                    detail: "p99 1 ms".into(),
                    error: None,
                    limit: Some(0.4),
                    limit_of: Some("x"),
                },
                Figure {
                    spec: SPECS[3],
                    value: None,
                    detail: String::new(),
                    error: Some("needs RabbitMQ".into()),
                    limit: None,
                    limit_of: None,
                },
            ],
            note: Some("Part C ran on a burst of 50,000 orders".into()),
            limits: vec![],
        };
        let md = report.markdown();
        assert!(
            md.starts_with("Part C ran on a burst of 50,000 orders\n\n| figure |"),
            "{md}"
        );
        assert!(
            md.contains("| **0.50 ms** | 13.6× (≥ 14×) | 0.40 ms | 80 % |"),
            "{md}"
        );
        assert!(md.contains("not measured: needs RabbitMQ"), "{md}");
        assert!(!report.complete());
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
