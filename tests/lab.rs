//! The lab end to end: every experiment in fast mode against real services
//! on ephemeral ports, asserting the experiments' own conclusions held and
//! that the report (Markdown, JSON, SVGs) was written.
//!
//! `cargo test --test lab`; `TEST_LOG=1 RUST_LOG=info` shows the logs.

use std::path::Path;

use campusfood::core::Config;
use campusfood::services::sync_rest::{SyncPart, SyncRest};
use campusfood_lab::report::{Report, Status};
use campusfood_lab::{LabError, RunConfig, Services, Settings};

fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn config(out: &Path, name: &str, settings: Settings) -> RunConfig {
    let mut config = RunConfig::new(settings);
    config.out_dir = out.to_path_buf();
    config.name = name.to_owned();
    config.command_line = "cargo test --test lab".to_owned();
    config
}

/// Every conclusion of `id`, with its evidence, for assertion messages.
fn explain(report: &Report, id: &str) -> String {
    let Some(e) = report.experiment(id) else {
        return format!("{id} missing from the report");
    };
    let mut s = format!(
        "{id}: {:?} {}\n",
        e.status,
        e.reason.as_deref().unwrap_or("")
    );
    for c in &e.conclusions {
        s += &format!(
            "  {} {} — {}\n",
            if c.held { "✅" } else { "❌" },
            c.claim,
            c.evidence
        );
    }
    s
}

fn assert_svg(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{} is not an SVG: {}",
        path.display(),
        &svg[..svg.len().min(80)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_experiment_holds_its_conclusions_in_fast_mode_and_is_reported() {
    init_logging();
    let out = tempfile::tempdir().unwrap();
    let settings = Settings::fast();
    // The sizes the experiments run at in the test suite.
    assert_eq!(settings.orders, 50);
    assert_eq!(settings.delay.as_millis(), 300);
    assert_eq!(settings.timeout.as_millis(), 200);
    let config = config(out.path(), "fast", settings);
    let report = campusfood_lab::run(&config, &["all".to_owned()])
        .await
        .unwrap();

    let ids: Vec<&str> = campusfood_lab::list().iter().map(|e| e.id).collect();
    assert!(ids.len() >= 4, "{ids:?}");
    for id in &ids {
        let e = report
            .experiment(id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(e.status, Status::Passed, "{}", explain(&report, id));
        assert!(!e.conclusions.is_empty(), "{id} checked nothing");
        assert!(
            e.conclusions.iter().all(|c| c.held),
            "{}",
            explain(&report, id)
        );
        assert!(!e.tables.is_empty(), "{id} has no table");
        assert!(!e.charts.is_empty(), "{id} has no chart");
        assert!(!e.metrics.is_empty(), "{id} has no metrics");
    }
    assert!(report.all_passed());

    let dir = config.report_dir();
    // report.md: metadata first, then every experiment with its charts.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.starts_with("# campusfood lab report"), "{md}");
    for needle in ["| date |", "| git commit |", "| machine |", "| command |"] {
        assert!(md.contains(needle), "report.md lacks {needle}");
    }
    for e in &report.experiments {
        assert!(
            md.contains(&format!("## {} — ", e.id)),
            "report.md lacks {}",
            e.id
        );
        for c in &e.charts {
            assert!(
                md.contains(&format!("({})", c.file)),
                "report.md does not link {}",
                c.file
            );
            assert_svg(&dir.join(&c.file));
        }
    }
    assert!(md.contains("✅"));

    // report.json: parses, has every experiment, and is the report returned.
    let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let in_json: Vec<&str> = value["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(in_json, ids);
    assert_eq!(value["metadata"]["mode"], "fast");
    assert!(value["metadata"]["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(value["experiments"][0]["metrics"]["latency.p50_ms"].is_f64());
    // It also reads back into the lab's own types (floats may differ in
    // the last digit, so compare what a reader compares).
    let parsed: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.experiments.len(), report.experiments.len());
    for (p, r) in parsed.experiments.iter().zip(&report.experiments) {
        assert_eq!(
            (&p.id, p.status, &p.conclusions),
            (&r.id, r.status, &r.conclusions)
        );
        assert_eq!(
            p.metrics.keys().collect::<Vec<_>>(),
            r.metrics.keys().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn running_services_are_used_and_experiments_that_restart_them_are_skipped() {
    init_logging();
    let data = tempfile::tempdir().unwrap();
    let mut service_config = Config {
        data_dir: data.path().to_path_buf(),
        stock: "burger=1000".parse().unwrap(),
        ..Config::default()
    };
    service_config.http.order_port = 0;
    service_config.http.inventory_port = 0;
    service_config.http.notification_port = 0;
    let system = SyncRest::start(&service_config, SyncPart::All)
        .await
        .unwrap();
    let url = |addr: std::net::SocketAddr| format!("http://{addr}");
    let services = Services::External {
        order_url: url(system.order.as_ref().unwrap().server.addr()),
        inventory_url: Some(url(system.inventory.as_ref().unwrap().server.addr())),
    };
    let mut settings = Settings::for_run(true, &services);
    // A running order service keeps the contract's 5 s timeout.
    assert_eq!(settings.timeout.as_secs(), 5);
    settings.orders = 20;
    let out = tempfile::tempdir().unwrap();
    let mut config = config(out.path(), "external", settings);
    config.services = services;
    let report = campusfood_lab::run(&config, &["A1".to_owned(), "A4".to_owned()])
        .await
        .unwrap();
    system.stop().await;

    assert_eq!(report.experiments.len(), 2);
    let a1 = report.experiment("A1").unwrap();
    assert_eq!(a1.status, Status::Passed, "{}", explain(&report, "A1"));
    assert_eq!(a1.metrics["confirmed"], 20.0);
    let a4 = report.experiment("A4").unwrap();
    assert_eq!(a4.status, Status::Skipped, "{}", explain(&report, "A4"));
    assert!(
        a4.reason.as_deref().unwrap().contains("in-process"),
        "{:?}",
        a4.reason
    );
    assert!(report.all_passed(), "skipped experiments do not fail a run");
    assert!(config.report_dir().join("report.md").exists());
    assert!(config.report_dir().join("a1-latency-cdf.svg").exists());
}

#[tokio::test]
async fn an_unknown_experiment_is_refused_before_anything_runs() {
    let out = tempfile::tempdir().unwrap();
    let config = config(out.path(), "nothing", Settings::fast());
    let err = campusfood_lab::run(&config, &["Z9".to_owned()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LabError::UnknownExperiment(ref id) if id == "Z9"),
        "{err}"
    );
    assert!(!config.report_dir().exists());
}
