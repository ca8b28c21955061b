//! The lab end to end: every experiment in fast mode against real services
//! on ephemeral ports, asserting the experiments' own conclusions held and
//! that the report (Markdown, JSON, SVGs) was written.
//!
//! `cargo test --test lab`; `TEST_LOG=1 RUST_LOG=info` shows the logs.

use std::path::Path;

use campusfood::core::Config;
use campusfood::services::sync_rest::{SyncPart, SyncRest};
use campusfood_lab::outcomes::OrderClass;
use campusfood_lab::report::{Report, Status, Verdict};
use campusfood_lab::{LabError, RunConfig, Services, Settings};
use campusfood_testkit::init_logging;

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

/// Runs `names` in fast mode into a fresh report and checks, for each
/// experiment run: passed, every conclusion held, tables, charts and
/// metrics present; then that `report.md` and `report.json` are well
/// formed and agree with the report returned.
async fn run_fast_and_check(names: &[&str], run: &str) -> (Report, tempfile::TempDir) {
    init_logging();
    let out = tempfile::tempdir().unwrap();
    let settings = Settings::fast();
    // The sizes the experiments run at in the test suite.
    assert_eq!(settings.orders, 50);
    assert_eq!(settings.delay.as_millis(), 300);
    assert_eq!(settings.timeout.as_millis(), 200);
    let config = config(out.path(), run, settings);
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let report = campusfood_lab::run(&config, &names).await.unwrap();
    let ids: Vec<&str> = campusfood_lab::select(&names)
        .unwrap()
        .iter()
        .map(|e| e.id())
        .collect();
    assert!(!ids.is_empty());
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
        // What became of each order: a table in every experiment, every
        // order placed accounted for, none lost, none applied twice.
        assert!(!e.orders.is_empty(), "{id} has no per-order table");
        for o in &e.orders {
            assert!(o.total() > 0, "{id}: {} accounts for no order", o.scenario);
            assert_eq!(o.count(OrderClass::Lost), 0, "{id}: {o:?}");
            assert_eq!(o.count(OrderClass::Duplicated), 0, "{id}: {o:?}");
        }
        assert!(
            e.conclusions
                .iter()
                .any(|c| c.claim.starts_with("Nothing lost, nothing twice") && c.held),
            "{}",
            explain(&report, id)
        );
        for t in &e.tables {
            assert!(
                t.rows.iter().all(|r| r.len() == t.columns.len()),
                "{id}: table {} has a row of the wrong width",
                t.id
            );
        }
        for c in &e.charts {
            assert!(
                c.chart.series.iter().any(|s| !s.points.is_empty()),
                "{id}: chart {} is empty",
                c.file
            );
        }
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
        let section = md
            .split(&format!("## {} — ", e.id))
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        assert!(
            section.contains("### What became of each order"),
            "{}: report.md has no per-order table",
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
    for e in value["experiments"].as_array().unwrap() {
        assert!(
            e["orders"].as_array().is_some_and(|o| !o.is_empty()),
            "{}: no per-order outcomes in report.json",
            e["id"]
        );
    }
    assert!(value["metadata"]["machine"]["cores"].as_u64().unwrap() >= 1);
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
    (report, out)
}

fn metric(report: &Report, id: &str, key: &str) -> f64 {
    *report
        .experiment(id)
        .unwrap()
        .metrics
        .get(key)
        .unwrap_or_else(|| panic!("{id} has no metric {key}"))
}

fn setup(report: &Report, id: &str, key: &str) -> serde_json::Value {
    report.experiment(id).unwrap().setup[key].clone()
}

// Parts A and B and the cross-architecture comparisons in one run, Part C
// (mostly waiting for Kafka consumer groups to settle) in another, in
// parallel: the lab suite stays well under a minute.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_a_b_and_the_comparisons_hold_their_conclusions_in_fast_mode() {
    let (report, _dir) = run_fast_and_check(&["A", "B", "X"], "fast-abx").await;
    assert!(report.experiments[0].metrics["latency.p50_ms"] > 0.0);
    // B2: a 2 s downtime, the whole backlog held and drained once.
    assert_eq!(setup(&report, "B2", "downtime_ms"), 2000.0);
    let n = metric(&report, "B2", "orders");
    assert_eq!(metric(&report, "B2", "backlog.peak"), n);
    assert_eq!(metric(&report, "B2", "reservations"), n);
    // B3: copies delivered, one effect.
    assert!(metric(&report, "B3", "deliveries") >= 4.0);
    assert_eq!(metric(&report, "B3", "reservation_records"), 1.0);
    assert_eq!(metric(&report, "B3", "confirmations"), 1.0);
    // B4: every poison kind dead-lettered with its reason, the failure after
    // its bounded attempts.
    assert_eq!(
        metric(&report, "B4", "poison.dead_lettered"),
        metric(&report, "B4", "poison.published")
    );
    assert_eq!(metric(&report, "B4", "failure.attempts"), 3.0);
    // B5: a 1 s outage, zero loss.
    assert_eq!(setup(&report, "B5", "outage_ms"), 1000.0);
    assert_eq!(
        metric(&report, "B5", "notified"),
        metric(&report, "B5", "accepted")
    );
    assert!(metric(&report, "B5", "refused_reconnections") > 0.0);
    // X1: the headline, in numbers.
    let delay = setup(&report, "X1", "delay_ms").as_f64().unwrap();
    assert!(metric(&report, "X1", "rest.slow.min_ms") >= delay);
    assert!(metric(&report, "X1", "rabbitmq.slow.p50_ms") < delay / 10.0);
    assert!(metric(&report, "X1", "kafka.slow.p50_ms") < delay / 10.0);
    assert_eq!(metric(&report, "X1", "rest.down.success_pct"), 0.0);
    assert_eq!(metric(&report, "X1", "rabbitmq.down.success_pct"), 100.0);
    assert_eq!(metric(&report, "X1", "kafka.down.success_pct"), 100.0);
    let x2 = setup(&report, "X2", "orders").as_f64().unwrap();
    for arch in ["rest", "rabbitmq", "kafka"] {
        assert_eq!(metric(&report, "X2", &format!("{arch}.reservations")), x2);
    }
    // X3: own ledgers oversell, the shared one is exact.
    let stock = setup(&report, "X3", "stock").as_f64().unwrap();
    assert!(metric(&report, "X3", "reserved_3_embedded") > stock);
    for run in ["1_embedded", "1_shared", "3_shared"] {
        assert_eq!(metric(&report, "X3", &format!("reserved_{run}")), stock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_c_holds_its_conclusions_in_fast_mode() {
    let (report, _dir) = run_fast_and_check(&["C"], "fast-c").await;
    let n = metric(&report, "C1", "orders");
    assert_eq!(
        metric(&report, "C1", "failures"),
        metric(&report, "C1", "failures.predicted")
    );
    assert!(metric(&report, "C1", "produce_per_s") > metric(&report, "C1", "e2e_per_s"));
    assert!(n >= 1000.0);
    assert!(
        metric(&report, "C2", "inventory.caught_up_s")
            < metric(&report, "C2", "analytics.drained_s")
    );
    assert_eq!(
        metric(&report, "C3", "first.totals.orders"),
        metric(&report, "C3", "replay.totals.orders")
    );
    assert_eq!(
        metric(&report, "C3", "lag_after_reset.order_events"),
        metric(&report, "C3", "orders")
    );
}

#[test]
fn the_two_fast_runs_cover_every_experiment() {
    let names = |n: &[&str]| -> Vec<String> { n.iter().map(|s| (*s).to_owned()).collect() };
    let mut covered: Vec<&str> = campusfood_lab::select(&names(&["A", "B", "X"]))
        .unwrap()
        .iter()
        .chain(campusfood_lab::select(&names(&["C"])).unwrap().iter())
        .map(|e| e.id())
        .collect();
    covered.sort_unstable();
    let mut all: Vec<&str> = campusfood_lab::list().iter().map(|e| e.id).collect();
    all.sort_unstable();
    assert_eq!(covered, all);
    assert!(all.len() >= 14, "{all:?}");
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
    assert!(
        !report.all_passed(),
        "a run with a skipped experiment is not a full pass"
    );
    assert_eq!(report.verdict(), Verdict::Incomplete);
    assert!(config.report_dir().join("report.md").exists());
    assert!(config.report_dir().join("a1-latency-cdf.svg").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_runs_say_so_and_hold_their_conclusions() {
    init_logging();
    let out = tempfile::tempdir().unwrap();
    let mut settings = Settings::fast();
    // Well below what a debug build serves on two busy cores: the test is
    // of the mode, not of capacity (above it, acceptance waits in a queue
    // and B1's "accepts in milliseconds" fails, as it should).
    settings.open_loop_rate = Some(40.0);
    let config = config(out.path(), "open-loop", settings);
    let names = ["A1", "B1", "X1"].map(str::to_owned);
    let report = campusfood_lab::run(&config, &names).await.unwrap();
    for id in ["A1", "B1", "X1"] {
        let e = report.experiment(id).unwrap();
        assert_eq!(e.status, Status::Passed, "{}", explain(&report, id));
        assert_eq!(e.setup["load"], "open loop at 40/s", "{id}");
        assert!(
            e.tables[0].title.ends_with("— open loop at 40/s"),
            "{id}: {}",
            e.tables[0].title
        );
        assert!(
            e.orders
                .iter()
                .all(|o| o.count(OrderClass::Lost) + o.count(OrderClass::Duplicated) == 0),
            "{id}: {:?}",
            e.orders
        );
    }
    // On schedule: 50 orders at 40/s are planned over 1.225 s, whatever
    // their answers.
    let a1 = report.experiment("A1").unwrap();
    assert_eq!(a1.metrics["confirmed"], 50.0);
    let md = std::fs::read_to_string(config.report_dir().join("report.md")).unwrap();
    assert!(md.contains("`load` = open loop at 40/s"), "{md}");
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

// The claims can fail: the same experiments against services broken on
// purpose, end to end, each turning exactly the claim about what was
// broken ❌ (and leaving the others standing).

/// Runs experiment `id` in fast mode with the `--set` knobs `params`.
async fn run_fast_with(id: &str, params: &[(&str, &str)]) -> Report {
    init_logging();
    let out = tempfile::tempdir().unwrap();
    let mut settings = Settings::fast();
    for (k, v) in params {
        settings.params.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = config(out.path(), &format!("broken-{id}"), settings);
    campusfood_lab::run(&config, &[id.to_owned()])
        .await
        .unwrap()
}

/// Whether the conclusion of `id` that starts with `claim` held (panics
/// when there is no such conclusion).
fn held(report: &Report, id: &str, claim: &str) -> bool {
    report
        .experiment(id)
        .and_then(|e| e.conclusions.iter().find(|c| c.claim.starts_with(claim)))
        .unwrap_or_else(|| panic!("no conclusion {claim:?}\n{}", explain(report, id)))
        .held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_breaker_claims_fail_when_the_breaker_never_opens() {
    // A failure threshold no outage reaches: "breaker on" is a breaker
    // that never opens.
    let report = run_fast_with("A4", &[("a4.threshold", "1000000")]).await;
    let why = explain(&report, "A4");
    assert_eq!(
        report.experiment("A4").unwrap().status,
        Status::Failed,
        "{why}"
    );
    assert!(
        !held(
            &report,
            "A4",
            "With the breaker on, the same outage fails fast"
        ),
        "{why}"
    );
    assert!(
        !held(&report, "A4", "Once open, the breaker stops sending"),
        "{why}"
    );
    // What was not broken still holds.
    assert!(
        held(
            &report,
            "A4",
            "Without a breaker, an unresponsive inventory"
        ),
        "{why}"
    );
    assert!(
        held(&report, "A4", "Before the outage every order is confirmed"),
        "{why}"
    );
    assert_eq!(report.verdict(), Verdict::Failed, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b4_spacing_claim_fails_against_consumers_that_retry_at_once() {
    // The services' consumers retry a failure at once, whatever the retry
    // delay (the original's requeue loop).
    let report = run_fast_with("B4", &[("b4.hot_requeue", "true")]).await;
    let why = explain(&report, "B4");
    assert_eq!(
        report.experiment("B4").unwrap().status,
        Status::Failed,
        "{why}"
    );
    assert!(
        !held(
            &report,
            "B4",
            "The retries are spaced by at least the retry delay"
        ),
        "{why}"
    );
    // Still bounded, still dead-lettered, still replayable; poison as ever.
    assert!(
        held(
            &report,
            "B4",
            "A failing order is retried a bounded number of times"
        ),
        "{why}"
    );
    assert!(held(&report, "B4", "Once fixed, replaying it"), "{why}");
    assert!(
        held(&report, "B4", "Every poison message lands in orders.dlq"),
        "{why}"
    );
}
