//! Part A: `POST /order` → inventory `POST /reserve` → notification
//! `POST /send`, over real HTTP on ephemeral ports.

use std::sync::Arc;

use campusfood::core::Config;
use campusfood::core::ledger::MemoryLedger;
use campusfood::core::outbox::MemoryOutbox;
use campusfood::services::stores::MemoryProcessedIds;
use campusfood::services::sync_rest::{SyncPart, SyncRest, SyncStores};
use opentelemetry::trace::{SpanId, SpanKind};
use serde_json::{Value, json};

use super::*;

/// The three services in this process, every port ephemeral.
async fn start() -> SyncRest {
    init();
    let mut config = Config {
        stock: "burger=100".parse().unwrap(),
        ..Config::default()
    };
    config.http.host = "127.0.0.1".to_owned();
    (
        config.http.order_port,
        config.http.inventory_port,
        config.http.notification_port,
    ) = (0, 0, 0);
    let stores = SyncStores {
        ledger: Some(Arc::new(MemoryLedger::new(&config.stock))),
        outbox: Some(Arc::new(MemoryOutbox::new())),
        notified: Some(Arc::new(MemoryProcessedIds::new())),
    };
    SyncRest::start_with_stores(&config, SyncPart::All, stores)
        .await
        .unwrap()
}

/// Places an order, with `traceparent` when given: the answer's
/// `traceparent` and body.
async fn order(system: &SyncRest, traceparent: Option<&str>) -> (String, Value) {
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

/// Every hop of an order is in the trace its answer names; returns the
/// order service's server span.
async fn assert_one_trace(traceparent: &str, body: &Value) -> Seen {
    let trace_id = trace_id(traceparent);
    until_spans(&trace_id, "POST /send", 2).await;
    until_spans(&trace_id, "POST /order", 1).await;
    let spans = trace(&trace_id);
    let server = one(&spans, "POST /order", SpanKind::Server).clone();
    // The answer's traceparent is the server span's.
    assert_eq!(
        traceparent,
        format!("00-{trace_id}-{}-01", server.span_id),
        "{traceparent}"
    );
    let reserve_call = one(&spans, "POST /reserve", SpanKind::Client);
    let reserve = one(&spans, "POST /reserve", SpanKind::Server);
    let send_call = one(&spans, "POST /send", SpanKind::Client);
    let send = one(&spans, "POST /send", SpanKind::Server);
    // Each server continues its caller's span.
    assert_eq!(reserve.parent, reserve_call.span_id);
    assert_eq!(send.parent, send_call.span_id);
    assert_eq!(reserve.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("http.response.status_code"), Some("201"));
    all_of_order_in(body["order_id"].as_str().unwrap(), &trace_id);
    server
}

#[tokio::test]
async fn one_trace_from_order_to_notification() {
    let system = start().await;
    let (traceparent, body) = order(&system, None).await;
    let server = assert_one_trace(&traceparent, &body).await;
    print_trace(&super::trace_id(&traceparent));
    // No traceparent came in: the order started the trace.
    assert_eq!(server.parent, SpanId::INVALID);
    system.stop().await;
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued() {
    let system = start().await;
    let (trace_id, parent, callers) = callers_context();
    let (traceparent, body) = order(&system, Some(&callers)).await;
    assert_eq!(super::trace_id(&traceparent), trace_id);
    let server = assert_one_trace(&traceparent, &body).await;
    assert_eq!(server.parent, parent, "a child of the caller's span");
    system.stop().await;
}
