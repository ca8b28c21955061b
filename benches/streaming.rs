//! Part C throughput against a real Kafka:
//!
//! ```sh
//! scripts/brokers.sh up kafka
//! cargo bench --bench streaming
//! ```
//!
//! - `producer/burst_10k`: one 10,000-order burst through
//!   `publish_many` (encode, queue, every acknowledgement), on a warm
//!   producer.
//! - `pipeline/burst_10k_exactly_once`: from the first order queued until
//!   the analytics consumer has counted all 10,000 inventory events: the
//!   inventory consumer (Kafka transactions, 6 workers, durable redb
//!   ledger) decided each one and committed it, and analytics read it
//!   (read committed).
//!
//! Without a broker the benchmarks print how to start one and are skipped.

use std::time::{Duration, Instant};

use campusfood::core::Config;
use campusfood::core::config::KafkaConfig;
use campusfood::services::streaming_kafka::producer::{OrderGenerator, publish_orders};
use campusfood::services::streaming_kafka::{
    ConnectRetry, StreamingOptions, StreamingPart, StreamingSystem, connect, item_stock,
};
use campusfood::transport::kafka::KafkaTransport;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const BURST: usize = 10_000;

fn config(test: &str) -> KafkaConfig {
    let suffix = format!("bench-{test}-{:08x}", fastrand::u32(..));
    KafkaConfig {
        commit_interval: Duration::from_millis(100),
        ..KafkaConfig::default()
    }
    .with_suffix(&suffix)
}

async fn kafka(config: &KafkaConfig) -> Option<KafkaTransport> {
    let once = ConnectRetry {
        attempts: 1,
        ..ConnectRetry::default()
    };
    match connect(config, &once).await {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!(
                "skipping the streaming benchmarks: {e}\nstart Kafka with `scripts/brokers.sh up kafka`"
            );
            None
        }
    }
}

fn streaming(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let generator = OrderGenerator::new(50, 5).unwrap();

    let producer_config = config("producer");
    let Some(producer) = rt.block_on(kafka(&producer_config)) else {
        return;
    };
    let mut group = c.benchmark_group("producer");
    group.throughput(Throughput::Elements(BURST as u64));
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("burst_10k", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (producer, generator) = (&producer, &generator);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let orders = generator.orders(BURST);
                    let started = Instant::now();
                    publish_orders(producer, &orders, 0).await.unwrap();
                    total += started.elapsed();
                }
                total
            }
        });
    });
    group.finish();

    let data = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: data.path().to_path_buf(),
        stock: item_stock(50, 1_000_000_000).unwrap(),
        kafka: config("pipeline"),
        ..Config::default()
    };
    cfg.http.host = "127.0.0.1".to_owned();
    let mut options = StreamingOptions::default();
    options.inventory = options
        .inventory
        .in_group(cfg.kafka.inventory_group.clone());
    options.analytics.group = cfg.kafka.analytics_group.clone();
    options.analytics.http_addr = "127.0.0.1:0".to_owned();
    options.analytics.report_interval = Duration::ZERO;
    let (transport, system) = rt.block_on(async {
        let transport = kafka(&cfg.kafka).await.unwrap();
        let system = StreamingSystem::start(&cfg, StreamingPart::All, &options, &transport)
            .await
            .unwrap();
        (transport, system)
    });
    let analytics = system.analytics.as_ref().unwrap().analytics().clone();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BURST as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("burst_10k_exactly_once", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (transport, generator, analytics) = (&transport, &generator, &analytics);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let orders = generator.orders(BURST);
                    let target = analytics.totals().inventory_events + BURST as u64;
                    let started = Instant::now();
                    publish_orders(transport, &orders, 0).await.unwrap();
                    while analytics.totals().inventory_events < target {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    total += started.elapsed();
                }
                total
            }
        });
    });
    group.finish();
    rt.block_on(system.stop());
}

criterion_group!(benches, streaming);
criterion_main!(benches);
