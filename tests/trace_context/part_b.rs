//! Part B over a real RabbitMQ broker: `POST /order` → the outbox → the
//! relay's publish → inventory → notification and the order's status,
//! every exchange and queue under a prefix of the test's own.

use std::sync::Arc;
use std::time::Duration;

use campusfood::core::Config;
use campusfood::core::config::RabbitConfig;
use campusfood::core::ledger::MemoryLedger;
use campusfood::services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood::services::stores::{MemoryOrderStore, MemoryProcessedIds};
use campusfood::transport::rabbitmq::RabbitTransport;
use campusfood_testkit::rabbitmq::{MANAGEMENT, delete_prefixed, unique_prefix};
use opentelemetry::trace::{SpanId, SpanKind};
use serde_json::{Value, json};

use super::*;

const RABBITMQ_DOWN: &str =
    "RabbitMQ is not running on 127.0.0.1:5672: start it with `scripts/brokers.sh up rabbitmq`";

/// Deletes the test's queues and exchanges when dropped.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let prefix = std::mem::take(&mut self.0);
        let deleted = campusfood_testkit::on_own_runtime(async move {
            delete_prefixed(MANAGEMENT, &prefix).await
        });
        if !matches!(deleted, Some(Some(()))) {
            eprintln!(
                "could not delete the test's RabbitMQ queues; the broker policy expires them"
            );
        }
    }
}

/// The three services over RabbitMQ, under a prefix of `test`'s own.
async fn start(test: &str) -> (AsyncSystem, Leftovers) {
    init();
    let prefix = unique_prefix(test);
    let config = Config {
        stock: "burger=100".parse().unwrap(),
        rabbitmq: RabbitConfig::with_prefix(&prefix),
        ..Config::default()
    };
    let leftovers = Leftovers(format!("{prefix}."));
    let transport = match RabbitTransport::connect(&config.rabbitmq).await {
        Ok(t) => Arc::new(t),
        Err(e) => panic!("{RABBITMQ_DOWN} ({e})"),
    };
    let mut options = AsyncOptions::from_config(&config);
    (options.order_port, options.inventory_port) = (0, 0);
    options.relay_poll = Duration::from_millis(20);
    let stores = AsyncStores {
        ledger: Some(Arc::new(MemoryLedger::new(&config.stock))),
        orders: Some(Arc::new(MemoryOrderStore::new())),
        notified: Some(Arc::new(MemoryProcessedIds::new())),
    };
    let system = AsyncSystem::start(&config, AsyncPart::All, &options, transport, stores)
        .await
        .unwrap();
    (system, leftovers)
}

/// Places an order, with `traceparent` when given: the answer's
/// `traceparent` and body.
async fn order(system: &AsyncSystem, traceparent: Option<&str>) -> (String, Value) {
    let addr = system.order.as_ref().unwrap().server.addr();
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/order"))
        .json(&json!({"item": "burger", "qty": 1}));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let tp = resp
        .headers()
        .get("traceparent")
        .expect("the order's answer carries its traceparent")
        .to_str()
        .unwrap()
        .to_owned();
    (tp, resp.json().await.unwrap())
}

/// Every hop of an order, down to its status becoming `notified`, is in
/// the trace its answer names; returns the order service's server span.
async fn assert_one_trace(traceparent: &str, body: &Value) -> Seen {
    let trace_id = trace_id(traceparent);
    until_spans(&trace_id, "process order.notified", 1).await;
    until_spans(&trace_id, "process inventory.reserved", 2).await;
    let spans = trace(&trace_id);
    let server = one(&spans, "POST /order", SpanKind::Server).clone();
    assert_eq!(traceparent, format!("00-{trace_id}-{}-01", server.span_id));
    // The relay published from another task, later: the context came
    // through the outbox with the event.
    let placed = one(&spans, "publish order.placed", SpanKind::Producer);
    assert_eq!(placed.parent, server.span_id);
    let reserve = one(&spans, "process order.placed", SpanKind::Consumer);
    assert_eq!(
        reserve.parent, placed.span_id,
        "continues the message's context"
    );
    let reserved = one(&spans, "publish inventory.reserved", SpanKind::Producer);
    assert_eq!(reserved.parent, reserve.span_id);
    // Notification and the order's status both consume the event.
    let consumers: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == "process inventory.reserved")
        .collect();
    assert_eq!(consumers.len(), 2, "{:#?}", names(&spans));
    assert!(consumers.iter().all(|c| c.parent == reserved.span_id));
    let notified = one(&spans, "publish order.notified", SpanKind::Producer);
    let status = one(&spans, "process order.notified", SpanKind::Consumer);
    assert_eq!(status.parent, notified.span_id);
    for s in [placed, reserve, reserved, notified, status] {
        assert_eq!(s.attr("messaging.system"), Some("rabbitmq"), "{s:?}");
        assert_eq!(
            s.attr("messaging.destination.name"),
            Some(&s.name[s.name.find(' ').unwrap() + 1..])
        );
    }
    assert_eq!(placed.attr("messaging.operation.type"), Some("send"));
    assert_eq!(reserve.attr("messaging.operation.type"), Some("process"));
    assert_eq!(reserve.attr("campusfood.disposition"), Some("ack"));
    all_of_order_in(body["order_id"].as_str().unwrap(), &trace_id);
    server
}

#[tokio::test]
async fn one_trace_from_order_to_notification_over_rabbitmq() {
    let (system, _leftovers) = start("trace-b").await;
    let (traceparent, body) = order(&system, None).await;
    let server = assert_one_trace(&traceparent, &body).await;
    print_trace(&super::trace_id(&traceparent));
    assert_eq!(
        server.parent,
        SpanId::INVALID,
        "the order started the trace"
    );
    system.stop().await;
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued_over_rabbitmq() {
    let (system, _leftovers) = start("trace-b-in").await;
    let (trace_id, parent, callers) = callers_context();
    let (traceparent, body) = order(&system, Some(&callers)).await;
    assert_eq!(super::trace_id(&traceparent), trace_id);
    let server = assert_one_trace(&traceparent, &body).await;
    assert_eq!(server.parent, parent, "a child of the caller's span");
    system.stop().await;
}
