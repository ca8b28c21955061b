//! Part A (sync REST) end to end: the three services over real HTTP on
//! ephemeral ports, each test with its own data directory.
//!
//! `cargo test --test sync_rest`; `TEST_LOG=1 RUST_LOG=info` shows logs.

mod helpers;

use std::sync::Arc;
use std::time::Duration;

use campusfood::core::OrderId;
use campusfood::core::config::{BreakerConfig, PageLimits, RetryConfig};
use campusfood::core::ledger::{InventoryLedger, MemoryLedger, ReserveOutcome};
use campusfood::services::server::{Server, inventory_router};
use campusfood_testkit::gated::AnswersLate;
use futures::future::join_all;
use helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn baseline_100_orders_are_all_confirmed() {
    let app = spawn_app().await;
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let a = app.order("burger", 1).await;
        assert_eq!(a.status, 201, "{}", a.body);
        for k in [
            "order_id",
            "request_id",
            "item",
            "qty",
            "status",
            "reservation_id",
            "elapsed_ms",
        ] {
            assert!(a.body.get(k).is_some(), "missing {k} in {}", a.body);
        }
        assert_eq!(a.body["status"], "confirmed");
        let id = a.body["order_id"].as_str().unwrap();
        assert_eq!(a.body["reservation_id"], format!("RES-{id}"));
        latencies.push(a.elapsed);
    }
    eprintln!("baseline: {}", summary(&latencies));
    assert_eq!(app.stock().await["burger"], 900);
    assert_eq!(
        app.get(app.order_url("/orders"))
            .await
            .as_array()
            .unwrap()
            .len(),
        100
    );
}

#[tokio::test]
async fn injected_delay_raises_every_orders_latency() {
    let app = spawn_app().await;
    let baseline: Vec<_> = join_all((0..5).map(|_| app.order("burger", 1))).await;
    let slowest_baseline = baseline.iter().map(|a| a.elapsed).max().unwrap();
    let c = app.configure_inventory(json!({"delay": 2.0})).await;
    assert_eq!(c.status, 200);
    assert_eq!(
        c.body,
        json!({"status": "configured", "config": {"delay": 2.0, "failure_rate": 0.0}})
    );
    let delayed: Vec<_> = join_all((0..5).map(|_| app.order("burger", 1))).await;
    for a in &delayed {
        assert_eq!(a.status, 201, "{}", a.body);
        assert!(a.elapsed >= Duration::from_secs(2), "{:?}", a.elapsed);
    }
    let lat = |v: &[Answer]| v.iter().map(|a| a.elapsed).collect::<Vec<_>>();
    eprintln!(
        "baseline: {}\ndelayed:  {}",
        summary(&lat(&baseline)),
        summary(&lat(&delayed))
    );
    assert!(slowest_baseline < Duration::from_secs(2));
}

#[tokio::test]
async fn failure_rate_one_gives_503_and_reserves_nothing() {
    let app = spawn_app().await;
    assert_eq!(
        app.configure_inventory(json!({"failure_rate": 1.0}))
            .await
            .status,
        200
    );
    for a in join_all((0..10).map(|_| app.order("burger", 1))).await {
        assert_eq!(a.status, 503, "{}", a.body);
        for k in ["error", "order_id", "request_id", "elapsed_ms"] {
            assert!(a.body.get(k).is_some(), "missing {k} in {}", a.body);
        }
    }
    assert_eq!(app.stock().await["burger"], 1000);
}

#[tokio::test]
async fn delay_beyond_the_downstream_timeout_gives_504_at_the_timeout() {
    let app = spawn_app_with("burger=10", |h| {
        h.downstream_timeout = Duration::from_millis(300)
    })
    .await;
    assert_eq!(
        app.configure_inventory(json!({"delay": 1.5})).await.status,
        200
    );
    for a in join_all((0..5).map(|_| app.order("burger", 1))).await {
        assert_eq!(a.status, 504, "{}", a.body);
        assert!(a.elapsed >= Duration::from_millis(300), "{:?}", a.elapsed);
        assert!(
            a.elapsed < Duration::from_millis(1500),
            "answered after the delay, not at the timeout: {:?}",
            a.elapsed
        );
    }
}

#[tokio::test]
async fn a_reservation_answered_after_the_timeout_is_released() {
    let ledger = Arc::new(AnswersLate::new("burger=10"));
    let app = spawn_app_on(ledger.clone(), |h| {
        h.downstream_timeout = Duration::from_millis(300)
    })
    .await;
    let a = app.order("burger", 2).await;
    assert_eq!(a.status, 504, "{}", a.body);
    let id = OrderId::parse(a.body["order_id"].as_str().unwrap()).unwrap();
    // Inventory did reserve: the client was told the order failed while
    // its stock was taken.
    assert_eq!(
        ledger.reservation(&id).await.unwrap().unwrap().outcome,
        ReserveOutcome::Reserved { remaining: 8 }
    );
    until(
        "the stock is given back",
        Duration::from_secs(10),
        || async { app.stock().await["burger"] == 10 },
    )
    .await;
    assert_eq!(
        ledger.reservation(&id).await.unwrap().unwrap().outcome,
        ReserveOutcome::Released
    );
    let order = app.system.order.as_ref().unwrap().service.clone();
    until(
        "the release leaves the outbox",
        Duration::from_secs(10),
        || async { order.kept_calls().await.unwrap() == 0 },
    )
    .await;
    ledger.open();
}

#[tokio::test]
async fn a_reservation_arriving_after_its_release_takes_nothing() {
    let app = spawn_app_with("burger=10", |h| {
        h.downstream_timeout = Duration::from_millis(200)
    })
    .await;
    assert_eq!(
        app.configure_inventory(json!({"delay": 1.0})).await.status,
        200
    );
    let mut orders = Vec::new();
    for a in join_all((0..3).map(|_| app.order("burger", 1))).await {
        assert_eq!(a.status, 504, "{}", a.body);
        orders.push(a.body);
    }
    // The releases reach inventory while the reservations are still
    // delayed (or were dropped with their connection).
    let order = app.system.order.as_ref().unwrap().service.clone();
    until(
        "the releases are delivered",
        Duration::from_secs(10),
        || async { order.kept_calls().await.unwrap() == 0 },
    )
    .await;
    assert_eq!(
        app.configure_inventory(json!({"delay": 0})).await.status,
        200
    );
    // A reservation of a released order, however late, takes nothing.
    for o in &orders {
        let late = json!({"order_id": o["order_id"], "request_id": o["request_id"], "item": "burger", "qty": 1});
        let a = app.post_json(app.inventory_url("/reserve"), &late).await;
        assert_eq!(a.status, 410, "{}", a.body);
        assert_eq!(a.body["field"], "order_id");
    }
    assert_eq!(app.stock().await["burger"], 10);
    let ledger = app
        .system
        .inventory
        .as_ref()
        .unwrap()
        .service
        .ledger()
        .clone();
    for o in &orders {
        let id = OrderId::parse(o["order_id"].as_str().unwrap()).unwrap();
        assert_eq!(
            ledger.reservation(&id).await.unwrap().unwrap().outcome,
            ReserveOutcome::Released
        );
    }
}

#[tokio::test]
async fn release_is_idempotent_over_http() {
    let app = spawn_app_with("burger=10", |_| {}).await;
    let body = json!({"order_id": "ORD-0000000000BB", "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f", "item": "burger", "qty": 4});
    assert_eq!(
        app.post_json(app.inventory_url("/reserve"), &body)
            .await
            .status,
        200
    );
    let release = json!({"order_id": "ORD-0000000000BB"});
    let a = app.post_json(app.inventory_url("/release"), &release).await;
    assert_eq!(
        (a.status, a.body.clone()),
        (
            200,
            json!({"status": "released", "order_id": "ORD-0000000000BB", "item": "burger", "qty": 4, "remaining": 10})
        )
    );
    let a = app.post_json(app.inventory_url("/release"), &release).await;
    assert_eq!(a.body["status"], "already_released", "{}", a.body);
    let unknown = json!({"order_id": "ORD-0000000000CC"});
    let a = app.post_json(app.inventory_url("/release"), &unknown).await;
    assert_eq!(a.body["status"], "nothing_held", "{}", a.body);
    let bad = app
        .post_json(
            app.inventory_url("/release"),
            &json!({"order_id": "not an id!"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(app.stock().await["burger"], 10);
}

#[tokio::test]
async fn stopping_does_not_wait_for_an_order_stuck_downstream() {
    let app = spawn_app_with("burger=10", |h| {
        h.downstream_timeout = Duration::from_secs(60);
        h.server.stop_timeout = Duration::from_millis(300);
    })
    .await;
    assert_eq!(
        app.configure_inventory(json!({"delay": 60})).await.status,
        200
    );
    let order = {
        let (client, url) = (app.client.clone(), app.order_url("/order"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"item": "burger", "qty": 1}))
                .send()
                .await
        })
    };
    let faults = app
        .system
        .inventory
        .as_ref()
        .unwrap()
        .service
        .faults()
        .clone();
    until(
        "the order waits on inventory",
        Duration::from_secs(10),
        || async { faults.delayed_calls() == 1 },
    )
    .await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), app.system.stop()).await;
    assert!(stopped.is_ok(), "stop waited for the stuck order");
    // The client is not answered; its connection is closed.
    assert!(order.await.unwrap().is_err());
}

#[tokio::test]
async fn insufficient_stock_passes_inventorys_409_through() {
    let app = spawn_app_with("burger=3", |_| {}).await;
    let a = app.order("burger", 5).await;
    assert_eq!(a.status, 409, "{}", a.body);
    let inv = &a.body["inventory_response"];
    assert_eq!(inv["available"], 3);
    assert_eq!(inv["item"], "burger");
    assert!(
        inv["error"].is_string() && inv["request_id"].is_string(),
        "{inv}"
    );
    assert_eq!(app.stock().await["burger"], 3);
}

#[tokio::test]
async fn unknown_item_is_404_not_an_outage() {
    let app = spawn_app().await;
    let a = app.order("ramen", 1).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.body["item"], "ramen");
}

#[tokio::test]
async fn configure_updates_partially_and_validates() {
    let app = spawn_app().await;
    let a = app
        .configure_inventory(json!({"delay": 0.25, "failure_rate": 0.5}))
        .await;
    assert_eq!(
        a.body["config"],
        json!({"delay": 0.25, "failure_rate": 0.5})
    );
    let a = app.configure_inventory(json!({"failure_rate": 0.0})).await;
    assert_eq!(
        a.body["config"],
        json!({"delay": 0.25, "failure_rate": 0.0})
    );
    for (bad, field) in [
        (json!({"delay": -1}), Some("delay")),
        (json!({"delay": 1e9}), Some("delay")),
        (json!({"delay": 60.5}), Some("delay")),
        (json!({"failure_rate": 1.5}), Some("failure_rate")),
        (json!({"failure_rate": -0.1}), Some("failure_rate")),
        (json!({"delay": "slow"}), None),
        (json!({"bogus": 1}), None),
    ] {
        let a = app.configure_inventory(bad.clone()).await;
        assert_eq!(a.status, 400, "{bad} -> {}", a.body);
        assert!(a.body["error"].is_string());
        if let Some(f) = field {
            assert_eq!(a.body["field"], f, "{bad}");
        }
        if field == Some("delay") {
            // The refusal says the bound.
            let said = a.body["error"].as_str().unwrap();
            assert!(said.contains("0 to 60"), "{said}");
        }
    }
    // Nothing changed by the refused updates.
    let a = app.configure_inventory(json!({})).await;
    assert_eq!(
        a.body["config"],
        json!({"delay": 0.25, "failure_rate": 0.0})
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_json_error_and_loses_nothing() {
    let app = spawn_app().await;
    let url = || app.order_url("/order");
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("application/json", "{not json".into(), 400, None),
        ("application/json", "[1, 2]".into(), 400, None),
        (
            "application/json",
            r#"{"qty": 1}"#.into(),
            422,
            Some("item"),
        ),
        (
            "application/json",
            r#"{"item": "burger"}"#.into(),
            422,
            Some("qty"),
        ),
        (
            "application/json",
            r#"{"item": "burger", "qty": 0}"#.into(),
            422,
            Some("qty"),
        ),
        (
            "application/json",
            r#"{"item": "burger", "qty": -1}"#.into(),
            422,
            Some("qty"),
        ),
        (
            "application/json",
            r#"{"item": "burger", "qty": "x"}"#.into(),
            422,
            Some("qty"),
        ),
        (
            "application/json",
            r#"{"item": "burger", "qty": 1099511627776}"#.into(),
            422,
            Some("qty"),
        ),
        (
            "application/json",
            r#"{"item": "burger", "qty": 1.5}"#.into(),
            422,
            Some("qty"),
        ),
        (
            "application/json",
            r#"{"item": 42, "qty": 1}"#.into(),
            422,
            Some("item"),
        ),
        (
            "text/plain",
            r#"{"item": "burger", "qty": 1}"#.into(),
            415,
            None,
        ),
        (
            "application/json",
            format!(
                r#"{{"item": "burger", "qty": 1, "pad": "{}"}}"#,
                "x".repeat(64 * 1024)
            ),
            413,
            None,
        ),
    ];
    for (ct, body, status, field) in cases {
        let shown = body.chars().take(60).collect::<String>();
        let a = app.post_raw(url(), ct, body).await;
        assert_eq!(a.status, status, "{ct} {shown} -> {}", a.body);
        assert!(a.body["error"].is_string(), "{shown} -> {}", a.body);
        if let Some(f) = field {
            assert_eq!(a.body["field"], f, "{shown}");
        }
    }
    assert_eq!(app.stock().await["burger"], 1000);
    assert!(
        app.get(app.order_url("/orders"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn fifty_concurrent_reserves_decrement_once(app: &TestApp) {
    let order_id = "ORD-0000000000AA";
    let body = json!({"order_id": order_id, "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f", "item": "burger", "qty": 2});
    let answers =
        join_all((0..50).map(|_| app.post_json(app.inventory_url("/reserve"), &body))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["remaining"], 98);
        assert_eq!(a.body["reservation_id"], format!("RES-{order_id}"));
    }
    assert_eq!(app.stock().await["burger"], 98);
}

#[tokio::test]
async fn reserve_is_idempotent_under_50_concurrent_duplicates_redb() {
    let app = spawn_app_with("burger=100", |_| {}).await;
    fifty_concurrent_reserves_decrement_once(&app).await;
}

#[tokio::test]
async fn reserve_is_idempotent_under_50_concurrent_duplicates_memory() {
    let ledger = Arc::new(MemoryLedger::new(&"burger=100".parse().unwrap()));
    let app = spawn_app_with_ledger(ledger).await;
    fifty_concurrent_reserves_decrement_once(&app).await;
}

#[tokio::test]
async fn circuit_breaker_refuses_without_calling_inventory_while_open_and_recovers() {
    let mut app = spawn_app_with("burger=100", |h| {
        h.breaker = Some(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(200),
        });
    })
    .await;
    assert_eq!(app.order("burger", 1).await.status, 201);
    // Inventory goes down.
    let inventory = app.system.inventory.take().unwrap();
    let addr = inventory.server.addr();
    inventory.server.stop().await;
    for _ in 0..3 {
        let a = app.order("burger", 1).await;
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(
            a.body["error"].as_str().unwrap().contains("unavailable"),
            "{}",
            a.body
        );
    }
    // Open: refused without calling inventory.
    let a = app.order("burger", 1).await;
    assert_eq!(a.status, 503);
    assert!(
        a.body["error"].as_str().unwrap().contains("circuit open"),
        "{}",
        a.body
    );
    // Inventory returns on the same address; a probe closes the circuit.
    let router = inventory_router(inventory.service.clone(), app.config.http.max_body_bytes);
    let server = Server::start("inventory", &addr.to_string(), router)
        .await
        .unwrap();
    until("orders succeed again", Duration::from_secs(10), || async {
        app.order("burger", 1).await.status == 201
    })
    .await;
    let burger = campusfood::core::Item::parse("burger").unwrap();
    assert_eq!(inventory.service.stock().await.unwrap()[&burger], 98);
    server.stop().await;
}

#[tokio::test]
async fn retry_rides_over_transient_inventory_failures() {
    let app = spawn_app_with("burger=100", |h| {
        h.retry = Some(RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        });
    })
    .await;
    assert_eq!(
        app.configure_inventory(json!({"failure_rate": 0.3, "seed": 7}))
            .await
            .status,
        200
    );
    for a in join_all((0..20).map(|_| app.order("burger", 1))).await {
        assert_eq!(a.status, 201, "{}", a.body);
    }
    assert_eq!(app.stock().await["burger"], 80);
}

#[tokio::test]
async fn bulkhead_refuses_orders_beyond_the_limit() {
    let app = spawn_app_with("burger=100", |h| h.max_in_flight = Some(2)).await;
    assert_eq!(
        app.configure_inventory(json!({"delay": 0.5})).await.status,
        200
    );
    let answers = join_all((0..6).map(|_| app.order("burger", 1))).await;
    let ok = answers.iter().filter(|a| a.status == 201).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!((ok, refused.len()), (2, 4));
    assert!(
        refused[0].body["error"]
            .as_str()
            .unwrap()
            .contains("too many orders")
    );
}

#[tokio::test]
async fn failed_notifications_are_kept_and_delivered_later() {
    let app = spawn_app().await;
    let order = app.system.order.as_ref().unwrap().service.clone();
    let notification = app.system.notification.as_ref().unwrap().service.clone();
    assert_eq!(
        app.configure_notification(json!({"failure_rate": 1.0}))
            .await
            .status,
        200
    );
    for a in join_all((0..5).map(|_| app.order("burger", 1))).await {
        assert_eq!(
            a.status, 201,
            "a failed notification must not fail the order: {}",
            a.body
        );
    }
    assert_eq!(order.kept_calls().await.unwrap(), 5);
    assert_eq!(notification.sent(), 0);
    assert_eq!(
        app.configure_notification(json!({"failure_rate": 0.0}))
            .await
            .status,
        200
    );
    until("the outbox drains", Duration::from_secs(10), || async {
        order.kept_calls().await.unwrap() == 0
    })
    .await;
    assert_eq!(notification.sent(), 5);
    // Each order's timeline: kept at the first try, notified at a later one.
    let id = answers_id(&app).await;
    let timeline = app
        .get_answer(app.order_url(&format!("/orders/{id}/timeline")))
        .await;
    let steps = steps(&timeline.body);
    assert_eq!(
        steps[..3],
        [("accepted", 1), ("reserved", 1), ("kept", 1)],
        "{}",
        timeline.body
    );
    assert_eq!(steps[3].0, "notified", "{}", timeline.body);
    assert!(steps[3].1 >= 2, "{}", timeline.body);
}

/// The id of the first order `GET /orders` lists.
async fn answers_id(app: &TestApp) -> String {
    let page = app.get(app.order_url("/orders?limit=1")).await;
    page[0]["order_id"].as_str().unwrap().to_owned()
}

/// A timeline's (step, attempt) pairs.
fn steps(timeline: &Value) -> Vec<(&str, u64)> {
    timeline["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["step"].as_str().unwrap(), h["attempt"].as_u64().unwrap()))
        .collect()
}

/// Inventory fails half its calls, seeded so the test knows which (the
/// draw is a pure function of seed, order and attempt): every order's
/// timeline shows exactly its attempts — each failed one `retried`, then
/// `reserved` and `notified`, or `failed` after the last — confirmed or not.
#[tokio::test]
async fn a_timeline_shows_every_reserve_attempt_and_the_outcome() {
    use campusfood::core::fault::decide;
    const SEED: u64 = 11;
    let app = spawn_app_with("burger=100", |h| {
        h.retry = Some(RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        });
    })
    .await;
    let set = json!({"failure_rate": 0.5, "seed": SEED});
    assert_eq!(app.configure_inventory(set).await.status, 200);
    let answers = join_all((0..12).map(|_| app.order("burger", 1))).await;
    let mut retried_then_reserved = 0;
    for a in &answers {
        let id = a.body["order_id"].as_str().unwrap();
        let succeeds_at = (1..=3u32).find(|&n| decide(SEED, id, n) >= 0.5);
        let timeline = app
            .get_answer(app.order_url(&format!("/orders/{id}/timeline")))
            .await;
        assert_eq!(timeline.status, 200, "{}", timeline.body);
        let mut expected = vec![("accepted", 1)];
        let failed_attempts = succeeds_at.map_or(2, |n| n - 1);
        expected.extend((1..=failed_attempts).map(|n| ("retried", u64::from(n))));
        match succeeds_at {
            Some(n) => {
                assert_eq!(a.status, 201, "{}", a.body);
                expected.extend([("reserved", u64::from(n)), ("notified", 1)]);
                assert_eq!(timeline.body["status"], "confirmed");
                retried_then_reserved += usize::from(n > 1);
            }
            None => {
                assert_eq!(a.status, 503, "{}", a.body);
                expected.push(("failed", 3));
                assert_eq!(timeline.body["status"], "failed");
            }
        }
        assert_eq!(steps(&timeline.body), expected, "{}", timeline.body);
    }
    assert!(
        retried_then_reserved > 0,
        "no order needed a retry: pick another seed"
    );
    let unknown = campusfood::core::OrderId::generate();
    let missing = app
        .get_answer(app.order_url(&format!("/orders/{unknown}/timeline")))
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn orders_can_be_looked_up_and_openapi_is_served() {
    let app = spawn_app().await;
    let a = app.order("pizza", 2).await;
    let id = a.body["order_id"].as_str().unwrap();
    let o = app.get(app.order_url(&format!("/orders/{id}"))).await;
    assert_eq!(
        (o["item"].clone(), o["qty"].clone(), o["status"].clone()),
        (json!("pizza"), json!(2), json!("confirmed"))
    );
    for (url, path) in [
        (app.order_url("/openapi.json"), "/order"),
        (app.order_url("/openapi.json"), "/orders/{id}/timeline"),
        (app.inventory_url("/openapi.json"), "/reserve"),
        (app.notification_url("/openapi.json"), "/send"),
    ] {
        let doc: Value = app.get(url).await;
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    // The original services' shape, so that existing health checks pass.
    for (url, service) in [
        (app.order_url("/health"), "order-service"),
        (app.inventory_url("/health"), "inventory-service"),
        (app.notification_url("/health"), "notification-service"),
    ] {
        let health: Value = app.get(url).await;
        assert_eq!(health["status"], "healthy", "{health}");
        assert_eq!(health["service"], service, "{health}");
    }
}

/// A ledger that cannot write (a full disk): every answer but `stock`
/// fails, and it says why.
#[derive(Debug)]
struct FullDisk(MemoryLedger);

#[async_trait::async_trait]
impl campusfood::core::ledger::InventoryLedger for FullDisk {
    async fn reserve(
        &self,
        _: &campusfood::core::OrderId,
        _: &campusfood::core::Item,
        _: campusfood::core::Quantity,
    ) -> Result<campusfood::core::ledger::Reservation, campusfood::core::ledger::LedgerError> {
        Err(campusfood::core::ledger::LedgerError::Storage(
            "no space left on device".into(),
        ))
    }
    async fn stock(
        &self,
    ) -> Result<
        std::collections::BTreeMap<campusfood::core::Item, u64>,
        campusfood::core::ledger::LedgerError,
    > {
        self.0.stock().await
    }
    async fn reservation(
        &self,
        order: &campusfood::core::OrderId,
    ) -> Result<
        Option<campusfood::core::ledger::ReservationRecord>,
        campusfood::core::ledger::LedgerError,
    > {
        self.0.reservation(order).await
    }
    async fn reservation_count(&self) -> Result<u64, campusfood::core::ledger::LedgerError> {
        self.0.reservation_count().await
    }
    async fn release(
        &self,
        _: &campusfood::core::OrderId,
    ) -> Result<campusfood::core::ledger::Release, campusfood::core::ledger::LedgerError> {
        Err(campusfood::core::ledger::LedgerError::Storage(
            "no space left on device".into(),
        ))
    }
    fn write_failure(&self) -> Option<String> {
        Some("no space left on device".into())
    }
}

#[tokio::test]
async fn inventory_health_is_503_while_its_ledger_cannot_write() {
    use campusfood::core::fault::FaultInjector;
    use campusfood::services::inventory::InventoryService;
    let stock = "burger=5".parse().unwrap();
    for (ledger, expected) in [
        (
            Arc::new(MemoryLedger::new(&stock))
                as Arc<dyn campusfood::core::ledger::InventoryLedger>,
            200,
        ),
        (Arc::new(FullDisk(MemoryLedger::new(&stock))) as _, 503),
    ] {
        let service = Arc::new(InventoryService::new(
            ledger,
            Arc::new(FaultInjector::default()),
        ));
        let server = Server::start(
            "inventory",
            "127.0.0.1:0",
            inventory_router(service, 1 << 16),
        )
        .await
        .unwrap();
        let resp = reqwest::get(format!("http://{}/health", server.addr()))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected);
        let body: Value = resp.json().await.unwrap();
        if expected == 503 {
            assert!(
                body["reason"].as_str().unwrap().contains("no space left"),
                "{body}"
            );
        }
        // A reservation against the full disk is 503, not 500: temporary.
        let resp = reqwest::Client::new()
            .post(format!("http://{}/reserve", server.addr()))
            .json(&json!({"order_id": "ORD-000000000001", "request_id": "00000000-0000-4000-8000-000000000001", "item": "burger", "qty": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            if expected == 503 { 503 } else { 200 }
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn orders_are_listed_in_pages() {
    let app = spawn_app_with("burger=1000", |h| {
        h.orders_page = PageLimits { default: 3, max: 5 }
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        let a = app.order("burger", 1).await;
        assert_eq!(a.status, 201, "{}", a.body);
        ids.push(a.body["order_id"].as_str().unwrap().to_owned());
    }
    let page = |path: String| {
        let request = app.client.get(app.order_url(&path));
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let next = resp
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            let body: Value = resp.json().await.unwrap();
            (status, body, next)
        }
    };
    let ids_of = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|o| o["order_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // The default page, then the next ones by their links.
    let (status, body, next) = page("/orders".to_owned()).await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(&body), ids[..3]);
    let next = next.unwrap();
    assert_eq!(
        next,
        format!("</orders?after={}&limit=3>; rel=\"next\"", ids[2])
    );
    let link = |l: &str| l[1..l.find('>').unwrap()].to_owned();
    let (_, body, next) = page(link(&next)).await;
    assert_eq!(ids_of(&body), ids[3..6]);
    let (_, body, next) = page(link(&next.unwrap())).await;
    assert_eq!(ids_of(&body), ids[6..]);
    assert_eq!(next, None);
    let (_, body, next) = page(format!("/orders?limit=5&after={}", ids[0])).await;
    assert_eq!(ids_of(&body), ids[1..6]);
    assert!(next.is_some());
    // Out of range, malformed, unknown.
    for (query, status, field) in [
        ("limit=6", 400, Some("limit")),
        ("limit=0", 400, Some("limit")),
        ("limit=lots", 400, None),
        ("after=not%20an%20id%21", 400, Some("after")),
        ("after=ORD-000000000000", 404, Some("after")),
    ] {
        let (s, body, _) = page(format!("/orders?{query}")).await;
        assert_eq!(s, status, "{query} -> {body}");
        assert!(body["error"].is_string(), "{query} -> {body}");
        if let Some(f) = field {
            assert_eq!(body["field"], f, "{query}");
        }
    }
}

#[tokio::test]
async fn an_order_id_used_for_another_order_is_a_conflict_not_a_repeat() {
    let app = spawn_app().await;
    let reserve = |qty: u32| json!({"order_id": "ORD-0000000000DD", "request_id": "00000000-0000-4000-8000-000000000001", "item": "burger", "qty": qty});
    let first = app
        .post_json(app.inventory_url("/reserve"), &reserve(2))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let before = app.stock().await["burger"].clone();
    // The same order again: its first decision, nothing taken.
    let repeat = app
        .post_json(app.inventory_url("/reserve"), &reserve(2))
        .await;
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    // The same id for another quantity: another order, refused by name.
    let other = app
        .post_json(app.inventory_url("/reserve"), &reserve(3))
        .await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.body["field"], "order_id", "{}", other.body);
    let error = other.body["error"].as_str().unwrap();
    assert!(error.contains("2 x burger"), "{error}");
    assert_eq!(app.stock().await["burger"], before);
}
