//! The limits, read from `cargo bench --bench limits`'s criterion results:
//! what the raw libraries do on this machine for each figure's work.

use std::path::Path;

use serde::Deserialize;

use super::FigureId;

/// Criterion's `new/estimates.json`, the part read here.
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// Criterion's `new/benchmark.json`, the part read here.
#[derive(Deserialize)]
struct Benchmark {
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
enum Throughput {
    Elements(u64),
    #[serde(other)]
    Other,
}

/// One bench's median: seconds per iteration, and elements per second
/// when it declared a throughput.
#[derive(Clone, Copy, Debug)]
struct Median {
    seconds: f64,
    per_second: Option<f64>,
}

fn median(criterion: &Path, id: &str) -> Option<Median> {
    let dir = criterion.join(id).join("new");
    let estimates: Estimates =
        serde_json::from_slice(&std::fs::read(dir.join("estimates.json")).ok()?).ok()?;
    let seconds = estimates.median.point_estimate / 1e9;
    let per_second = std::fs::read(dir.join("benchmark.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Benchmark>(&b).ok())
        .and_then(|b| match b.throughput {
            Some(Throughput::Elements(n)) => Some(n as f64 / seconds),
            _ => None,
        });
    Some(Median {
        seconds,
        per_second,
    })
}

/// The benches (`<group>/<function>/<parameter>` under `target/criterion`)
/// behind each figure's limit.
pub(super) const BENCHES: [(&str, &str); 8] = [
    (
        HTTP_3_HOPS,
        "three loopback HTTP exchanges, axum + reqwest, 1 connection",
    ),
    (HTTP_3_HOPS_16, "the same, 16 connections"),
    (HTTP_1_HOP, "one loopback HTTP exchange"),
    (REDB_COMMIT, "one redb commit, Durability::Immediate"),
    (
        RABBITMQ_PIPE,
        "amqprs: consume, publish with confirm, ack, prefetch as ours",
    ),
    (
        KAFKA_PRODUCE,
        "rdkafka: 10,000 records, idempotent, acks=all",
    ),
    (KAFKA_CONSUME, "rdkafka: 10,000 records read committed"),
    (
        KAFKA_TX_PIPE,
        "rdkafka: consume → produce in transactions, batched as Part C's inventory by default",
    ),
];

const HTTP_3_HOPS: &str = "limits_http/three_hops/1_connection";
const HTTP_3_HOPS_16: &str = "limits_http/three_hops/16_connections";
const HTTP_1_HOP: &str = "limits_http/one_hop/1_connection";
const REDB_COMMIT: &str = "limits_redb/durable_commit/1_writer";
const RABBITMQ_PIPE: &str = "limits_rabbitmq/consume_publish_confirm_ack/20000";
const KAFKA_PRODUCE: &str = "limits_kafka/produce/10000";
const KAFKA_CONSUME: &str = "limits_kafka/consume/10000";
const KAFKA_TX_PIPE: &str = "limits_kafka/transactional_pipe/10000";

/// How many messages the broker moves for one order of Part B's drain,
/// each as one element of the raw pipe (consumed, acked, published with a
/// confirm): `orders.reserve`; the reserved event into the order service's
/// and notification's queues; notification's event back to the order
/// service. Three of the four are publishes (the reserved event is one
/// publish routed to two queues), so the ceiling this gives is a little
/// low and the share a little high.
const B_MESSAGES_PER_ORDER: f64 = 4.0;

/// `figure`'s limit, in the figure's unit, and how it is made up; `None`
/// when the benches behind it have not run.
pub(super) fn limit(criterion: &Path, figure: FigureId) -> Option<(f64, &'static str)> {
    let m = |id| median(criterion, id);
    let ms = |s: f64| s * 1e3;
    match figure {
        // Inventory's ledger and notification's sent-set each commit
        // durably before answering.
        FigureId::APostP50 => Some((
            ms(m(HTTP_3_HOPS)?.seconds + 2.0 * m(REDB_COMMIT)?.seconds),
            "3 HTTP exchanges + 2 redb commits (ledger, sent-set)",
        )),
        FigureId::AOrdersPerSecond => Some((
            m(HTTP_3_HOPS_16)?.per_second?,
            "3 HTTP exchanges, 16 connections (no commit)",
        )),
        FigureId::BAcceptanceP50 => Some((
            ms(m(HTTP_1_HOP)?.seconds + m(REDB_COMMIT)?.seconds),
            "1 HTTP exchange + 1 redb commit",
        )),
        FigureId::BDrain => Some((
            m(RABBITMQ_PIPE)?.per_second? / B_MESSAGES_PER_ORDER,
            "raw amqprs consume → confirmed publish → ack, per message, ÷ 4 messages per order",
        )),
        FigureId::CProduce => Some((
            m(KAFKA_PRODUCE)?.seconds,
            "raw rdkafka produce of 10,000 (no process start)",
        )),
        FigureId::CSteady => Some((
            m(KAFKA_TX_PIPE)?.per_second?,
            "raw rdkafka transactional consume → produce (no ledger)",
        )),
    }
}

/// The medians of every limits bench that has run, for the report.
pub(super) fn all(criterion: &Path) -> Vec<(&'static str, &'static str, f64, Option<f64>)> {
    BENCHES
        .iter()
        .filter_map(|(id, what)| {
            median(criterion, id).map(|m| (*id, *what, m.seconds, m.per_second))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(dir: &Path, id: &str, median_ns: f64, elements: Option<u64>) {
        let new = dir.join(id).join("new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("estimates.json"),
            format!(
                r#"{{"mean":{{"point_estimate":1.0}},"median":{{"point_estimate":{median_ns}}}}}"#
            ),
        )
        .unwrap();
        let throughput = match elements {
            Some(n) => format!(r#"{{"Elements":{n}}}"#),
            None => "null".to_owned(),
        };
        std::fs::write(
            new.join("benchmark.json"),
            format!(r#"{{"group_id":"g","throughput":{throughput}}}"#),
        )
        .unwrap();
    }

    #[test]
    fn limits_add_up_the_benches_behind_them() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            limit(dir.path(), FigureId::APostP50).is_none(),
            "nothing run yet"
        );
        write(dir.path(), HTTP_3_HOPS, 300_000.0, None);
        assert!(
            limit(dir.path(), FigureId::APostP50).is_none(),
            "the commit is missing"
        );
        write(dir.path(), REDB_COMMIT, 150_000.0, None);
        let (ms, _) = limit(dir.path(), FigureId::APostP50).unwrap();
        assert!((ms - 0.6).abs() < 1e-9, "{ms}");
        write(dir.path(), RABBITMQ_PIPE, 2e9, Some(20_000));
        // 10,000 messages/s through the raw pipe: 2,500 orders/s.
        let (rate, _) = limit(dir.path(), FigureId::BDrain).unwrap();
        assert!((rate - 2_500.0).abs() < 1e-6, "{rate}");
        assert_eq!(all(dir.path()).len(), 3);
    }
}
