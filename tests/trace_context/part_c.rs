//! Part C over a real Kafka broker: the producer starts a trace per order;
//! the inventory consumer decides it in that trace and writes its event in
//! it; analytics counts both records in it. Topics and groups of the
//! test's own.

use std::time::Duration;

use campusfood::core::Config;
use campusfood::core::config::KafkaConfig;
use campusfood::services::streaming_kafka::producer::{self, ProducerMode, ProducerOptions};
use campusfood::services::streaming_kafka::{
    ConnectRetry, StreamingOptions, StreamingPart, StreamingSystem, connect, item_stock,
};
use campusfood::transport::kafka::KafkaTransport;
use opentelemetry::trace::{SpanId, SpanKind};

use super::*;

const KAFKA_DOWN: &str =
    "Kafka is not running on 127.0.0.1:9092: start it with `scripts/brokers.sh up kafka`";

/// Deletes the test's topics when dropped.
struct Topics(KafkaTransport, String);

impl Drop for Topics {
    fn drop(&mut self) {
        let (transport, suffix) = (self.0.clone(), std::mem::take(&mut self.1));
        let deleted = campusfood_testkit::on_own_runtime(async move {
            let topics = transport.topics_containing(&suffix).await?;
            transport.delete_topics(&topics).await
        });
        if !matches!(deleted, Some(Ok(()))) {
            eprintln!("could not delete the test's topics: {deleted:?}");
        }
    }
}

/// Produces one order with the producer's `once` mode while inventory
/// (exactly once, or at least once) and analytics consume, and checks the
/// order's trace from the producer to analytics.
async fn one_trace_from_producer_to_analytics(test: &str, exactly_once: bool) {
    init();
    let suffix = campusfood_testkit::unique(test);
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        stock: item_stock(5, 1_000_000).unwrap(),
        kafka: KafkaConfig {
            request_timeout: Duration::from_secs(5),
            commit_interval: Duration::from_millis(200),
            ..KafkaConfig::default()
        }
        .with_suffix(&suffix),
        ..Config::default()
    };
    config.http.host = "127.0.0.1".to_owned();
    let once = ConnectRetry {
        attempts: 1,
        ..ConnectRetry::default()
    };
    let transport = match connect(&config.kafka, &once).await {
        Ok(t) => t,
        Err(e) => panic!("{KAFKA_DOWN} ({e})"),
    };
    let _topics = Topics(transport.clone(), suffix);
    let mut options = StreamingOptions::default();
    options.inventory = options
        .inventory
        .in_group(config.kafka.inventory_group.clone());
    options.inventory.exactly_once = exactly_once;
    options.analytics.group = config.kafka.analytics_group.clone();
    options.analytics.http_addr = "127.0.0.1:0".to_owned();
    options.analytics.report_interval = Duration::ZERO;
    let system = StreamingSystem::start(&config, StreamingPart::All, &options, &transport)
        .await
        .unwrap();

    let producing = ProducerOptions {
        mode: ProducerMode::Once,
        item_count: 5,
        ..ProducerOptions::default()
    };
    let report = producer::run(&transport, &producing, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.events, 1);

    let (orders, events) = (&config.kafka.order_topic, &config.kafka.inventory_topic);
    // The producer's span is the only one sending to this test's topic.
    let send = format!("send {orders}");
    let sent: Vec<Seen> = finished().into_iter().filter(|s| s.name == send).collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let root = &sent[0];
    assert_eq!(root.kind, SpanKind::Producer);
    assert_eq!(
        root.parent,
        SpanId::INVALID,
        "the producer starts the trace"
    );
    assert_eq!(root.attr("messaging.system"), Some("kafka"));
    let trace_id = root.trace_id.clone();

    let (process_orders, process_events) =
        (format!("process {orders}"), format!("process {events}"));
    until_spans(&trace_id, &process_events, 1).await;
    until_spans(&trace_id, &process_orders, 2).await;
    let spans = trace(&trace_id);
    let by_group = |name: &str, group: &str| -> Seen {
        let found: Vec<&Seen> = spans
            .iter()
            .filter(|s| s.name == name && s.attr("messaging.consumer.group.name") == Some(group))
            .collect();
        assert_eq!(found.len(), 1, "{name} by {group} in {:#?}", names(&spans));
        found[0].clone()
    };
    // Inventory decides the order in its trace, as a child of the record's
    // context, and writes its event in it.
    let decide = by_group(&process_orders, &options.inventory.group);
    assert_eq!(decide.kind, SpanKind::Consumer);
    assert_eq!(decide.attr("campusfood.disposition"), Some("ack"));
    assert_eq!(decide.parent, root.span_id);
    let produce = if exactly_once { "create" } else { "send" };
    let event = one(&spans, &format!("{produce} {events}"), SpanKind::Producer);
    assert_eq!(event.parent, decide.span_id);
    // Analytics counts the order and its event, each in the order's trace.
    let counted_order = by_group(&process_orders, &options.analytics.group);
    assert_eq!(counted_order.parent, root.span_id);
    let counted_event = by_group(&process_events, &options.analytics.group);
    assert_eq!(counted_event.parent, event.span_id);
    assert_eq!(counted_event.attr("campusfood.disposition"), Some("ack"));
    all_of_order_in(root.order_id().unwrap(), &trace_id);
    print_trace(&trace_id);

    if exactly_once {
        // The transaction's batch has a span of its own, linked to the
        // trace of every order in it.
        let batch: Vec<Seen> = finished()
            .into_iter()
            .filter(|s| {
                s.name == process_orders && s.attr("messaging.batch.message_count").is_some()
            })
            .collect();
        assert!(!batch.is_empty(), "no batch span");
        assert!(batch.iter().all(|b| b.trace_id != trace_id));
        assert!(
            batch.iter().any(|b| b.links.contains(&trace_id)),
            "a batch span links the order's trace: {batch:#?}"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn one_trace_from_producer_to_analytics_exactly_once() {
    one_trace_from_producer_to_analytics("trace-c", true).await;
}

#[tokio::test]
async fn one_trace_from_producer_to_analytics_at_least_once() {
    one_trace_from_producer_to_analytics("trace-c-alo", false).await;
}
