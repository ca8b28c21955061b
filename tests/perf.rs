//! `lab perf` as a user runs it (`scripts/perf.sh` runs the same binary):
//! the shipped binaries started one per service, wrk's load, Kafka's
//! watermarks — every figure measured, none left empty, and the table and
//! `perf.json` written. Short runs and debug builds: this checks that the
//! tool measures, not how fast anything is (that is `scripts/perf.sh`'s
//! job, on a quiet machine).
//!
//! Needs wrk (`scripts/test.sh` installs it), RabbitMQ and Kafka
//! (`scripts/brokers.sh up rabbitmq`, `scripts/brokers.sh up kafka`).

use std::process::Command;

use campusfood_testkit::example_binary;

#[test]
fn lab_perf_measures_all_six_figures_from_the_shipped_binaries() {
    assert!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is missing: `apt-get install wrk` (scripts/test.sh and scripts/perf.sh install it)"
    );
    let out = tempfile::tempdir().unwrap();
    // Limits as `cargo bench --bench limits` leaves them, so that the
    // table's last columns are filled in from criterion's files.
    let criterion = out.path().join("criterion");
    for (id, median_ns, elements) in [
        ("limits_http/three_hops/1_connection", 200_000.0, None),
        ("limits_redb/durable_commit/1_writer", 150_000.0, None),
        ("limits_kafka/produce/10000", 25_000_000.0, None),
        (
            "limits_rabbitmq/consume_publish_confirm_ack/20000",
            2e9,
            Some(20_000),
        ),
    ] {
        let dir = criterion.join(id).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("estimates.json"),
            format!(r#"{{"median":{{"point_estimate":{median_ns}}}}}"#),
        )
        .unwrap();
        let throughput = elements.map_or("null".to_owned(), |n| format!(r#"{{"Elements":{n}}}"#));
        std::fs::write(
            dir.join("benchmark.json"),
            format!(r#"{{"throughput":{throughput}}}"#),
        )
        .unwrap();
    }
    let output = Command::new(example_binary("lab"))
        .args([
            "perf",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--drain-load",
            "1",
        ])
        .args(["--burst", "2000", "--out"])
        .arg(out.path().join("perf"))
        .arg("--criterion-dir")
        .arg(&criterion)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "lab perf failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("perf/perf.json")).unwrap()).unwrap();
    let figures = json["figures"].as_array().unwrap();
    let ids: Vec<&str> = figures
        .iter()
        .map(|f| f["spec"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "APostP50",
            "AOrdersPerSecond",
            "BAcceptanceP50",
            "BDrain",
            "CProduce",
            "CSteady"
        ]
    );
    for f in figures {
        let value = f["value"].as_f64();
        assert!(
            value.is_some_and(|v| v.is_finite() && v > 0.0) && f["error"].is_null(),
            "{f}\n{stdout}"
        );
    }
    // A p50 (3 HTTP exchanges + 2 commits = 0.5 ms), B's acceptance has
    // no one-hop limit here, the drain's limit is 10,000 messages/s:
    // 2,500 orders/s at four messages per order.
    assert!((figures[0]["limit"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert!(figures[2]["limit"].is_null());
    assert!((figures[3]["limit"].as_f64().unwrap() - 2_500.0).abs() < 1e-6);
    assert!((figures[4]["limit"].as_f64().unwrap() - 0.025).abs() < 1e-9);
    assert!(stdout.contains("| figure | original | ours |"), "{stdout}");
    assert!(
        stdout.contains("run `cargo bench --bench limits`"),
        "{stdout}"
    );
    // The burst is what the producer was asked for, counted at the
    // watermarks; the steady rate read every output record.
    assert!(
        figures[4]["detail"]
            .as_str()
            .unwrap()
            .starts_with("2000 records")
    );
    let steady = figures[5]["detail"].as_str().unwrap();
    assert!(steady.starts_with("2000 output records"), "{steady}");
    // Where the span lies, from the records' own timestamps.
    assert!(steady.ends_with("after the consumer's spawn"), "{steady}");
    // The services' logs are kept for the reader.
    let logs = out.path().join("perf/logs");
    for service in [
        "sync_rest",
        "async_rabbitmq-order",
        "async_rabbitmq-inventory",
        "streaming_kafka-inventory",
    ] {
        assert!(
            logs.join(format!("{service}.log")).exists(),
            "{service}'s log"
        );
    }
}
