//! Part C's figures: `streaming_kafka producer` (burst) and
//! `streaming_kafka inventory` (exactly once, redb ledger), one process
//! each, on topics of their own (created as the examples create them, with
//! the default partition counts), deleted afterwards.

use std::time::{Duration, Instant};

use campusfood_core::config::KafkaConfig;
use campusfood_core::events::now_millis;
use campusfood_kafka::KafkaTransport;

use super::kafka_end::TopicEnd;
use super::process::{Service, Workdir, process_err};
use super::{FigureId, Measured, PerfOptions};
use crate::LabError;
use crate::error::broker_err;

/// How long one figure may take before it is given up.
const DEADLINE: Duration = Duration::from_secs(180);

/// How often the steady figure looks whether the output is complete.
const STEADY_POLL: Duration = Duration::from_millis(50);

pub(super) async fn measure(options: &PerfOptions) -> Vec<Measured> {
    let prefix = format!("perf-{}", now_millis());
    let config = KafkaConfig {
        order_topic: format!("{prefix}.order-events"),
        inventory_topic: format!("{prefix}.inventory-events"),
        inventory_group: format!("{prefix}.inventory"),
        ..KafkaConfig::default()
    };
    let transport = match KafkaTransport::connect(&config).await {
        Ok(t) => t,
        Err(e) => {
            let e = LabError::Unavailable {
                needs: format!("Kafka at {}: {e}", config.bootstrap_servers),
                hint: "scripts/brokers.sh up kafka".to_owned(),
            };
            return vec![
                Measured::failed(FigureId::CProduce, &e),
                Measured::failed(FigureId::CSteady, &e),
            ];
        }
    };
    let figures = run(options, &config, &transport).await;
    match transport.topics_containing(&prefix).await {
        Ok(topics) => {
            if let Err(e) = transport.delete_topics(&topics).await {
                tracing::warn!(error = %e, "could not delete the run's topics");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list the run's topics"),
    }
    figures
}

/// The environment that points a shipped binary at this run's topics.
fn env(config: &KafkaConfig) -> Vec<(&'static str, String)> {
    vec![
        ("BOOTSTRAP_SERVERS", config.bootstrap_servers.clone()),
        ("ORDER_TOPIC", config.order_topic.clone()),
        ("INVENTORY_TOPIC", config.inventory_topic.clone()),
    ]
}

/// Both figures; the steady rate needs the produced backlog, so it fails
/// with the produce figure's error when that failed.
async fn run(
    options: &PerfOptions,
    config: &KafkaConfig,
    transport: &KafkaTransport,
) -> Vec<Measured> {
    let produced = match Workdir::new(&options.logs) {
        Ok(work) => produce(options, config, &work).await.map(|p| (work, p)),
        Err(e) => Err(e),
    };
    match produced {
        Ok((work, (took, records))) => vec![
            Measured::ok(
                FigureId::CProduce,
                took.as_secs_f64(),
                format!(
                    "{records} records at the high watermarks of the order topic ({} partitions), process start included",
                    config.order_partitions
                ),
            ),
            steady(options, config, transport, &work)
                .await
                .unwrap_or_else(|e| Measured::failed(FigureId::CSteady, &e)),
        ],
        Err(e) => vec![
            Measured::failed(FigureId::CProduce, &e),
            Measured::failed(FigureId::CSteady, &e),
        ],
    }
}

/// Starts the producer and times it to the watermarks; the records seen.
async fn produce(
    options: &PerfOptions,
    config: &KafkaConfig,
    work: &Workdir,
) -> Result<(Duration, i64), LabError> {
    let end = open(config, &config.order_topic).await?;
    let (end, before) = blocking(move || {
        let before = end.end()?;
        Ok((end, before))
    })
    .await?;
    let target = before + options.burst as i64;
    let log = work.log("streaming_kafka-producer")?;
    let mut env = env(config);
    env.push(("MODE", "burst".to_owned()));
    env.push(("TOTAL_EVENTS", options.burst.to_string()));
    let started = Instant::now();
    let producer = Service::spawn(
        &options.bin_dir.join("streaming_kafka"),
        &["producer"],
        &env,
        work.path(),
        &log,
    )?;
    // The instant is the figure: polled every millisecond.
    let reached =
        blocking(move || end.wait_for(target, DEADLINE, Duration::from_millis(1))).await?;
    let status = producer.wait(Duration::from_secs(60)).await?;
    if !status.success() {
        return Err(process_err(
            "the producer",
            format!("exited {status}; its log: {}", log.display()),
        ));
    }
    Ok((reached - started, target - before))
}

/// Starts inventory on the backlog and reads the rate off its output.
async fn steady(
    options: &PerfOptions,
    config: &KafkaConfig,
    transport: &KafkaTransport,
    work: &Workdir,
) -> Result<Measured, LabError> {
    let end = open(config, &config.inventory_topic).await?;
    let log = work.log("streaming_kafka-inventory")?;
    let mut env = env(config);
    env.push(("GROUP_ID", config.inventory_group.clone()));
    let started = Instant::now();
    // The records' timestamps are wall-clock: the spawn's too, to put the
    // last record against it.
    let spawned_at = i64::try_from(now_millis()).unwrap_or(i64::MAX);
    let mut inventory = Service::spawn(
        &options.bin_dir.join("streaming_kafka"),
        &["inventory"],
        &env,
        work.path(),
        &log,
    )?;
    let want = options.burst as usize;
    // The end counts transaction markers too: it is a lower bound to wait
    // for, the read committed scan then counts the records.
    let end = std::sync::Arc::new(end);
    let stamps = loop {
        inventory.check_running(&log)?;
        let e = end.clone();
        // The figure comes from the records' timestamps: polling the end
        // only says when to read them, and polling it often would take
        // the cores being measured.
        blocking(move || e.wait_for(want as i64, DEADLINE, STEADY_POLL)).await?;
        let scan = transport
            .scan_topic(&config.inventory_topic, |_, _| true)
            .await
            .map_err(broker_err("reading the inventory topic"))?;
        if scan.kept.len() >= want {
            break scan
                .kept
                .iter()
                .filter_map(|r| r.timestamp)
                .collect::<Vec<_>>();
        }
        if started.elapsed() > DEADLINE {
            return Err(LabError::Deadline {
                what: format!("{want} records on {}", config.inventory_topic),
                after: DEADLINE,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    inventory.stop().await?;
    let (Some(first), Some(last)) = (stamps.iter().min(), stamps.iter().max()) else {
        return Err(process_err(
            "the inventory topic",
            "records without timestamps",
        ));
    };
    let span = Duration::from_millis((last - first).max(1) as u64);
    Ok(Measured::ok(
        FigureId::CSteady,
        stamps.len() as f64 / span.as_secs_f64(),
        steady_detail(stamps.len(), span, spawned_at, *first, *last),
    ))
}

/// The steady figure's detail: the span it is read over, and where that
/// span lies after the consumer's spawn (`spawned_at`, `first` and `last`
/// in milliseconds since the epoch). The span leaves out the start (the
/// process, joining the group) and the deciding of the first
/// transactions, whose outputs are all stamped when they are produced.
fn steady_detail(records: usize, span: Duration, spawned_at: i64, first: i64, last: i64) -> String {
    let secs = |ms: i64| ms as f64 / 1000.0;
    format!(
        "{records} output records over {:.3} s of timestamps; the first {:.2} s, the last {:.2} s after the consumer's spawn",
        span.as_secs_f64(),
        secs(first - spawned_at),
        secs(last - spawned_at),
    )
}

async fn open(config: &KafkaConfig, topic: &str) -> Result<TopicEnd, LabError> {
    let (bootstrap, topic, timeout) = (
        config.bootstrap_servers.clone(),
        topic.to_owned(),
        config.request_timeout,
    );
    blocking(move || TopicEnd::open(&bootstrap, &topic, timeout)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LabError> + Send + 'static,
) -> Result<T, LabError> {
    tokio::task::spawn_blocking(f).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_detail_places_the_span_after_the_spawn() {
        let spawned = 1_800_000_000_000;
        let detail = steady_detail(
            10_000,
            Duration::from_millis(600),
            spawned,
            spawned + 250,
            spawned + 850,
        );
        assert_eq!(
            detail,
            "10000 output records over 0.600 s of timestamps; the first 0.25 s, the last 0.85 s \
             after the consumer's spawn"
        );
    }
}
