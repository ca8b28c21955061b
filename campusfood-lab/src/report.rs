//! The report: its data model ([`Report`], serialized as `report.json`
//! with stable keys and milliseconds everywhere) and its Markdown
//! rendering (`report.md`). Comparing two runs is comparing two
//! `report.json` files key by key: `experiments[id].metrics` holds the
//! headline numbers under names that do not change between runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::context::{Services, Settings};
use crate::experiment::{Cell, Chart, Conclusion, Table};
use crate::outcomes::OrderOutcomes;

/// Version of `report.json`'s layout; bumped when a key changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When, where and how the run was made.
    pub metadata: Metadata,
    /// One entry per experiment, in the order run.
    pub experiments: Vec<ExperimentReport>,
}

impl Report {
    /// The experiment `id` (case-insensitive).
    pub fn experiment(&self, id: &str) -> Option<&ExperimentReport> {
        self.experiments
            .iter()
            .find(|e| e.id.eq_ignore_ascii_case(id))
    }

    /// Whether every experiment ran in full and every conclusion held: a
    /// skipped or partial experiment measured nothing (or not everything),
    /// so a run with one is not a pass.
    pub fn all_passed(&self) -> bool {
        self.verdict() == Verdict::Passed
    }

    /// The run as a whole: failed if anything failed or could not
    /// measure, incomplete if nothing failed but something was skipped
    /// or only partly measured, passed only when everything ran and held.
    pub fn verdict(&self) -> Verdict {
        let count = |s: Status| self.experiments.iter().filter(|e| e.status == s).count();
        if count(Status::Failed) + count(Status::Error) > 0 {
            Verdict::Failed
        } else if count(Status::Skipped) + count(Status::Partial) > 0 {
            Verdict::Incomplete
        } else {
            Verdict::Passed
        }
    }

    /// One line for the end of a run: how many experiments passed,
    /// failed, were skipped or partial, and what that makes the run.
    pub fn summary_line(&self) -> String {
        let count = |s: Status| self.experiments.iter().filter(|e| e.status == s).count();
        let verdict = match self.verdict() {
            Verdict::Passed => "PASSED: every experiment ran and every conclusion held",
            Verdict::Incomplete => {
                "INCOMPLETE: nothing failed, but not everything was measured — not a full pass"
            }
            Verdict::Failed => "FAILED",
        };
        format!(
            "{} passed, {} failed, {} error, {} skipped, {} partial — {verdict}",
            count(Status::Passed),
            count(Status::Failed),
            count(Status::Error),
            count(Status::Skipped),
            count(Status::Partial),
        )
    }
}

/// What a run amounts to (see [`Report::verdict`]); the lab's exit status
/// is 0, 2 and 1 for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every experiment ran in full; every conclusion held.
    Passed,
    /// Nothing failed, but an experiment was skipped or partly measured.
    Incomplete,
    /// A conclusion did not hold, or an experiment could not measure.
    Failed,
}

/// When, where and how a run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The run's name: its folder under the output directory.
    pub name: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC; absent while the run is still going.
    pub finished_at: Option<String>,
    /// Wall time so far, ms.
    pub duration_ms: f64,
    /// The commit the lab was built from, if in a git work tree.
    pub git: Option<GitInfo>,
    /// The machine.
    pub machine: Machine,
    /// The command that ran it.
    pub command_line: String,
    /// `release` or `debug` (latencies of a debug build are not
    /// comparable with a release build's).
    pub build: String,
    /// `full` or `fast`.
    pub mode: String,
    /// Where the services were.
    pub services: Services,
    /// Sizes and durations.
    pub settings: Settings,
    /// Version of campusfood-lab.
    pub lab_version: String,
}

/// The git commit of the work tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    /// `git rev-parse HEAD`.
    pub commit: String,
    /// Whether tracked files had uncommitted changes.
    pub dirty: bool,
}

impl GitInfo {
    /// Reads the commit of the current directory's work tree, if any.
    pub fn current() -> Option<Self> {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| o.status.success() && !o.stdout.is_empty())
            .unwrap_or(false);
        Some(Self { commit, dirty })
    }
}

/// The machine the run was made on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Cores available to the process.
    pub cores: usize,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`x86_64`).
    pub arch: String,
    /// CPU model, where the OS tells it.
    pub cpu: Option<String>,
}

impl Machine {
    /// This machine.
    pub fn current() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            });
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpu,
        }
    }
}

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran; every conclusion held.
    Passed,
    /// Ran; at least one conclusion did not hold.
    Failed,
    /// Not run: this run lacks what it needs (see `reason`).
    Skipped,
    /// Ran, and every conclusion it could check held, but part of what it
    /// sets out to measure was not (see `reason`): not a pass.
    Partial,
    /// Could not measure (see `reason`).
    Error,
}

impl Status {
    /// The report's badge.
    pub fn badge(self) -> &'static str {
        match self {
            Self::Passed => "✅ passed",
            Self::Failed => "❌ failed",
            Self::Skipped => "⏭️ skipped",
            Self::Partial => "⚠️ partial",
            Self::Error => "💥 error",
        }
    }
}

/// One experiment's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    /// `A1`.
    pub id: String,
    /// `Baseline latency`.
    pub title: String,
    /// What it shows.
    pub shows: String,
    /// How it ended.
    pub status: Status,
    /// Why it was skipped or could not measure.
    pub reason: Option<String>,
    /// Wall time, ms.
    pub duration_ms: f64,
    /// Parameters used.
    pub setup: BTreeMap<String, serde_json::Value>,
    /// Tables.
    pub tables: Vec<Table>,
    /// What became of each order placed, by scenario: counts per class
    /// and the ids of the orders not in an expected class.
    #[serde(default)]
    pub orders: Vec<OrderOutcomes>,
    /// Charts, with the SVG file each was drawn to.
    pub charts: Vec<ChartFile>,
    /// Headline numbers, stable keys, units in the key.
    pub metrics: BTreeMap<String, f64>,
    /// Checked claims.
    pub conclusions: Vec<Conclusion>,
    /// Observations.
    pub notes: Vec<String>,
}

/// A chart and the SVG file it was drawn to (relative to the report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartFile {
    /// File name next to `report.md`.
    pub file: String,
    /// The chart's data.
    #[serde(flatten)]
    pub chart: Chart,
}

/// `1.23 s`, `2 min 05 s`.
pub fn human_duration(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 1.0 {
        format!("{ms:.0} ms")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let total = s.round() as u64;
        format!("{} min {:02} s", total / 60, total % 60)
    }
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Int(v) => v.to_string(),
        Cell::Num(v) => format!("{v:.2}"),
        Cell::Text(t) => escape(t),
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn json_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Report {
    /// `report.md`.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.metadata;
        let _ = writeln!(md, "# campusfood lab report: `{}`\n", m.name);
        let _ = writeln!(
            md,
            "Written by `campusfood-lab` {}; the same data is in [`report.json`](report.json).\n",
            m.lab_version
        );
        md.push_str("| | |\n|---|---|\n");
        let finished = m.finished_at.as_deref().unwrap_or("(still running)");
        let _ = writeln!(
            md,
            "| date | {} → {} ({}) |",
            m.started_at,
            finished,
            human_duration(m.duration_ms)
        );
        let git = match &m.git {
            Some(g) if g.dirty => format!("`{}` (with uncommitted changes)", g.commit),
            Some(g) => format!("`{}`", g.commit),
            None => "(not a git work tree)".to_owned(),
        };
        let _ = writeln!(md, "| git commit | {git} |");
        let mc = &m.machine;
        let _ = writeln!(
            md,
            "| machine | {} cores, {} {}{} |",
            mc.cores,
            mc.os,
            mc.arch,
            mc.cpu
                .as_deref()
                .map(|c| format!(", {}", escape(c)))
                .unwrap_or_default()
        );
        let _ = writeln!(md, "| command | `{}` |", escape(&m.command_line));
        let _ = writeln!(md, "| build | {} |", m.build);
        let _ = writeln!(md, "| mode | {} |", m.mode);
        let _ = writeln!(md, "| services | {} |", escape(&m.services.describe()));
        if m.build != "release" {
            md.push_str(
                "\n> ⚠️ A debug build: latencies are not comparable with a release build's.\n",
            );
        }

        md.push_str("\n## Summary\n\n| experiment | title | result | conclusions held | took |\n|---|---|---|---|---|\n");
        for e in &self.experiments {
            let held = e.conclusions.iter().filter(|c| c.held).count();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}/{} | {} |",
                e.id,
                escape(&e.title),
                e.status.badge(),
                held,
                e.conclusions.len(),
                human_duration(e.duration_ms)
            );
        }
        let _ = writeln!(md, "\n**{}**", self.summary_line());
        md.push_str(
            "\nHow to read it: each experiment below says what it shows, the setup it used, \
             its numbers (milliseconds unless a column says otherwise), a chart (SVG, next to \
             this file), and the claims it checked against those numbers: ✅ held, ❌ did not, \
             each with its evidence.\n",
        );

        for e in &self.experiments {
            let _ = writeln!(md, "\n## {} — {}\n", e.id, escape(&e.title));
            let _ = writeln!(md, "**What it shows.** {}\n", e.shows);
            let _ = writeln!(
                md,
                "**Result:** {} in {}.",
                e.status.badge(),
                human_duration(e.duration_ms)
            );
            if let Some(r) = &e.reason {
                let _ = writeln!(md, "\n> {}", escape(r));
            }
            if !e.setup.is_empty() {
                let setup: Vec<String> = e
                    .setup
                    .iter()
                    .map(|(k, v)| format!("`{k}` = {}", json_value(v)))
                    .collect();
                let _ = writeln!(md, "\n**Setup:** {}.", setup.join(", "));
            }
            let orders = (!e.orders.is_empty()).then(|| crate::outcomes::table(&e.orders));
            for t in e.tables.iter().chain(&orders) {
                let _ = writeln!(md, "\n### {}\n", escape(&t.title));
                let _ = writeln!(md, "| {} |", t.columns.join(" | "));
                let _ = writeln!(md, "|{}", "---|".repeat(t.columns.len()));
                for r in &t.rows {
                    let cells: Vec<String> = r.iter().map(cell).collect();
                    let _ = writeln!(md, "| {} |", cells.join(" | "));
                }
            }
            for c in &e.charts {
                let _ = writeln!(
                    md,
                    "\n### Chart: {}\n\n![{}]({})\n\n[{}]({})",
                    escape(&c.chart.title),
                    escape(&c.chart.title),
                    c.file,
                    c.file,
                    c.file
                );
            }
            if !e.conclusions.is_empty() {
                md.push_str("\n### Conclusions\n\n");
                for c in &e.conclusions {
                    let mark = if c.held { "✅" } else { "❌" };
                    let _ = writeln!(md, "- {mark} **{}** — {}", c.claim, c.evidence);
                }
            }
            if !e.notes.is_empty() {
                md.push_str("\n### Notes\n\n");
                for n in &e.notes {
                    let _ = writeln!(md, "- {n}");
                }
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(350.0), "350 ms");
        assert_eq!(human_duration(2500.0), "2.5 s");
        assert_eq!(human_duration(125_000.0), "2 min 05 s");
        assert_eq!(cell(&Cell::Num(1.0)), "1.00");
        assert_eq!(cell(&Cell::Text("a|b".into())), "a\\|b");
    }

    fn with_statuses(statuses: &[Status]) -> Report {
        let settings = Settings::fast();
        Report {
            schema_version: SCHEMA_VERSION,
            metadata: Metadata {
                name: "t".into(),
                started_at: String::new(),
                finished_at: None,
                duration_ms: 0.0,
                git: None,
                machine: Machine::current(),
                command_line: String::new(),
                build: "debug".into(),
                mode: "fast".into(),
                services: Services::InProcess,
                settings,
                lab_version: String::new(),
            },
            experiments: statuses
                .iter()
                .enumerate()
                .map(|(i, s)| ExperimentReport {
                    id: format!("A{i}"),
                    title: String::new(),
                    shows: String::new(),
                    status: *s,
                    reason: None,
                    duration_ms: 0.0,
                    setup: BTreeMap::new(),
                    tables: Vec::new(),
                    orders: Vec::new(),
                    charts: Vec::new(),
                    metrics: BTreeMap::new(),
                    conclusions: Vec::new(),
                    notes: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_per_order_table_is_in_the_markdown_and_the_odd_ids_in_the_json() {
        use crate::outcomes::{OrderClass, OrderOutcomes};
        let mut r = with_statuses(&[Status::Passed]);
        let mut o = OrderOutcomes::new("healthy", &[OrderClass::Notified]);
        o.record("a", OrderClass::Notified);
        o.record("lost-one", OrderClass::Lost);
        r.experiments[0].orders.push(o);
        let md = r.to_markdown();
        assert!(md.contains("### What became of each order"), "{md}");
        assert!(
            md.contains("| healthy | 2 | 0 | 0 | 0 | 1 ✓ | 0 | 0 | 1 | 1 |"),
            "{md}"
        );
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(
            json["experiments"][0]["orders"][0]["unexpected"]["lost"][0],
            "lost-one"
        );
    }

    #[test]
    fn a_run_with_a_skip_or_a_partial_experiment_is_not_a_pass() {
        use Status::*;
        assert_eq!(with_statuses(&[Passed, Passed]).verdict(), Verdict::Passed);
        for other in [Skipped, Partial] {
            let r = with_statuses(&[Passed, other]);
            assert_eq!(r.verdict(), Verdict::Incomplete);
            assert!(!r.all_passed());
            assert!(
                r.summary_line().contains("not a full pass"),
                "{}",
                r.summary_line()
            );
        }
        for bad in [Failed, Error] {
            assert_eq!(with_statuses(&[Skipped, bad]).verdict(), Verdict::Failed);
        }
    }
}
