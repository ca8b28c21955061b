//! Runs experiments one after another and writes the report: after every
//! experiment (so an interrupted run still leaves what it measured) and at
//! the end. The runner knows experiments only through the
//! [`Experiment`] trait and the registry.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::chart::render_svg;
use crate::context::{Context, Services, Settings};
use crate::error::LabError;
use crate::experiment::Experiment;
use crate::experiments;
use crate::progress::Progress;
use crate::report::{
    ChartFile, ExperimentReport, GitInfo, Machine, Metadata, Report, SCHEMA_VERSION, Status,
};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The run's name: the report goes to `out_dir/name/`.
    pub name: String,
    /// Where reports go (`reports`).
    pub out_dir: PathBuf,
    /// Sizes and durations.
    pub settings: Settings,
    /// Where the services are.
    pub services: Services,
    /// The command line, for the report.
    pub command_line: String,
    /// Draw progress bars (on stderr, only when it is a terminal).
    pub progress: bool,
}

impl RunConfig {
    /// In-process services, `settings`, a name from the current time,
    /// `reports/`, no progress bars.
    pub fn new(settings: Settings) -> Self {
        Self {
            name: default_name(),
            out_dir: PathBuf::from("reports"),
            settings,
            services: Services::InProcess,
            command_line: String::new(),
            progress: false,
        }
    }

    /// The report's folder.
    pub fn report_dir(&self) -> PathBuf {
        self.out_dir.join(&self.name)
    }
}

/// `run-2025-01-31T12-00-00Z`: the current UTC time, usable as a folder.
pub fn default_name() -> String {
    format!(
        "run-{}",
        humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace(':', "-")
    )
}

/// An experiment's id, title and what it shows, for `lab list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExperimentInfo {
    /// `A1`.
    pub id: &'static str,
    /// `Baseline latency`.
    pub title: &'static str,
    /// What it shows.
    pub shows: &'static str,
}

/// Every experiment of the registry.
pub fn list() -> Vec<ExperimentInfo> {
    experiments::all()
        .iter()
        .map(|e| ExperimentInfo {
            id: e.id(),
            title: e.title(),
            shows: e.shows(),
        })
        .collect()
}

/// The experiments named: ids (`A1`, case-insensitive), a part's letter
/// (`A`: all of Part A) or `all` (also when `names` is empty), in registry
/// order, each once.
pub fn select(names: &[String]) -> Result<Vec<Box<dyn Experiment>>, LabError> {
    let all = experiments::all();
    if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case("all")) {
        return Ok(all);
    }
    for n in names {
        let known = all.iter().any(|e| {
            e.id().eq_ignore_ascii_case(n)
                || (n.len() == 1 && e.id().get(..1).is_some_and(|p| p.eq_ignore_ascii_case(n)))
        });
        if !known {
            return Err(LabError::UnknownExperiment(n.clone()));
        }
    }
    Ok(all
        .into_iter()
        .filter(|e| {
            names.iter().any(|n| {
                e.id().eq_ignore_ascii_case(n)
                    || (n.len() == 1 && e.id().get(..1).is_some_and(|p| p.eq_ignore_ascii_case(n)))
            })
        })
        .collect())
}

/// Runs the experiments `names` (see [`select`]) and writes the report.
pub async fn run(config: &RunConfig, names: &[String]) -> Result<Report, LabError> {
    run_experiments(config, select(names)?).await
}

/// Runs `experiments` in order and writes `report.md`, `report.json` and
/// the charts to [`RunConfig::report_dir`]. An experiment that fails to
/// measure is reported as such and the run goes on; the error returned is
/// only for a report that cannot be written or unusable settings.
pub async fn run_experiments(
    config: &RunConfig,
    experiments: Vec<Box<dyn Experiment>>,
) -> Result<Report, LabError> {
    config.settings.validate()?;
    let dir = config.report_dir();
    std::fs::create_dir_all(&dir).map_err(|source| LabError::Write {
        path: dir.clone(),
        source,
    })?;
    let progress = if config.progress {
        Progress::new(true)
    } else {
        Progress::hidden()
    };
    let start = Instant::now();
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        metadata: Metadata {
            name: config.name.clone(),
            started_at: now(),
            finished_at: None,
            duration_ms: 0.0,
            git: GitInfo::current(),
            machine: Machine::current(),
            command_line: config.command_line.clone(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
            mode: if config.settings.fast { "fast" } else { "full" }.to_owned(),
            services: config.services.clone(),
            settings: config.settings.clone(),
            lab_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        experiments: Vec::new(),
    };
    for experiment in experiments {
        let ctx = Context::new(
            config.settings.clone(),
            config.services.clone(),
            progress.clone(),
            experiment.id(),
        );
        tracing::info!(id = experiment.id(), "experiment starting");
        let began = Instant::now();
        let result = experiment.run(&ctx).await;
        let duration_ms = began.elapsed().as_secs_f64() * 1000.0;
        let mut entry = ExperimentReport {
            id: experiment.id().to_owned(),
            title: experiment.title().to_owned(),
            shows: experiment.shows().to_owned(),
            status: Status::Passed,
            reason: None,
            duration_ms,
            setup: Default::default(),
            tables: Vec::new(),
            orders: Vec::new(),
            charts: Vec::new(),
            metrics: Default::default(),
            conclusions: Vec::new(),
            notes: Vec::new(),
        };
        match result {
            Ok(outcome) => {
                entry.status = if !outcome.all_held() {
                    Status::Failed
                } else if !outcome.unmeasured.is_empty() {
                    entry.reason = Some(format!("not measured: {}", outcome.unmeasured.join("; ")));
                    Status::Partial
                } else {
                    Status::Passed
                };
                for chart in outcome.charts {
                    let file = format!(
                        "{}-{}.svg",
                        experiment.id().to_ascii_lowercase(),
                        chart.id.to_ascii_lowercase()
                    );
                    match render_svg(&chart) {
                        Ok(svg) => write(&dir.join(&file), svg.as_bytes())?,
                        Err(e) => {
                            tracing::warn!(error = %e, "chart not drawn");
                            entry.notes.push(format!("chart not drawn: {e}"));
                        }
                    }
                    entry.charts.push(ChartFile { file, chart });
                }
                entry.setup = outcome.setup;
                entry.tables = outcome.tables;
                entry.orders = outcome.orders;
                entry.metrics = outcome.metrics;
                entry.conclusions = outcome.conclusions;
                entry.notes.extend(outcome.notes);
            }
            Err(e) if e.is_unavailable() => {
                entry.status = Status::Skipped;
                entry.reason = Some(format!("skipped: {e}"));
            }
            Err(e) => {
                entry.status = Status::Error;
                entry.reason = Some(format!("could not measure: {e}"));
            }
        }
        tracing::info!(id = %entry.id, status = ?entry.status, "experiment done");
        report.experiments.push(entry);
        report.metadata.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        write_report(&dir, &report)?;
    }
    report.metadata.finished_at = Some(now());
    report.metadata.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    write_report(&dir, &report)?;
    Ok(report)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    std::fs::write(path, bytes).map_err(|source| LabError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `report.json` and `report.md` into `dir`.
pub fn write_report(dir: &Path, report: &Report) -> Result<(), LabError> {
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    write(&dir.join("report.json"), json.as_bytes())?;
    write(&dir.join("report.md"), report.to_markdown().as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selection_by_id_part_and_all() {
        let ids = |names: &[&str]| -> Vec<&'static str> {
            let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
            select(&names).unwrap().iter().map(|e| e.id()).collect()
        };
        assert_eq!(ids(&["a3", "A1", "A1"]), ["A1", "A3"]);
        assert_eq!(ids(&["all"]), ids(&[]));
        assert_eq!(ids(&["A"]), ["A1", "A2", "A3", "A4"]);
        assert!(matches!(
            select(&["Z9".to_owned()]),
            Err(LabError::UnknownExperiment(_))
        ));
        let listed = list();
        let mut unique: Vec<_> = listed.iter().map(|e| e.id).collect();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), listed.len());
    }
}
