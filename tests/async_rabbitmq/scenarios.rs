//! The async architecture's scenarios, each a function of an [`App`] so
//! that it runs over every bus (see `main.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood::core::order::OrderStatus;
use campusfood::core::transport::{ForwardTransport, Message, Route, Transport, TransportError};
use campusfood::services::async_rabbitmq::AsyncPart;
use futures::future::join_all;
use serde_json::json;

use crate::harness::{App, until};

pub async fn baseline_orders_flow_to_notified(app: App) {
    let system = app.start(AsyncPart::All).await;
    let mut ids = Vec::new();
    let start = Instant::now();
    for _ in 0..5 {
        let (status, body) = app
            .order(&system, json!({"item": "burger", "qty": 1}))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "placed");
        for k in ["order_id", "request_id", "item", "qty", "created_at"] {
            assert!(body.get(k).is_some(), "{k} missing: {body}");
        }
        ids.push(body["order_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        until("notified", Duration::from_secs(5), async || {
            app.status(id).await == OrderStatus::Notified
        })
        .await;
    }
    eprintln!("5 orders placed → notified in {:?}", start.elapsed());
    assert_eq!(app.stock("burger").await, 95);
    assert_eq!(system.notification.as_ref().unwrap().sent(), 5);
    system.stop().await;
}

pub async fn backlog_waits_for_inventory_and_drains_exactly_once(app: App) {
    let front = app.start(AsyncPart::Order).await;
    let notifier = app.start(AsyncPart::Notification).await;
    let ids: Vec<String> =
        join_all((0..50).map(|_| app.order(&front, json!({"item": "burger", "qty": 1}))))
            .await
            .into_iter()
            .map(|(s, b)| {
                assert_eq!(s, 201);
                b["order_id"].as_str().unwrap().to_owned()
            })
            .collect();
    until("a backlog of 50", Duration::from_secs(5), async || {
        app.bus.depth(&Route::ORDER_PLACED).await == 50
    })
    .await;
    assert_eq!(app.stock("burger").await, 100);
    let inventory = app.start(AsyncPart::Inventory).await;
    until("the backlog drains", Duration::from_secs(10), async || {
        app.bus.depth(&Route::ORDER_PLACED).await == 0
    })
    .await;
    for id in &ids {
        until("notified", Duration::from_secs(5), async || {
            app.status(id).await == OrderStatus::Notified
        })
        .await;
    }
    assert_eq!(app.stock("burger").await, 50);
    assert_eq!(app.ledger().reservation_count().await.unwrap(), 50);
    for s in [front, notifier, inventory] {
        s.stop().await;
    }
}

pub async fn a_duplicate_order_placed_reserves_and_notifies_once(mut app: App) {
    // One delivery at a time, so that a sentinel order handled after the
    // duplicates proves the duplicates were handled (FIFO per queue).
    app.options.prefetch = 1;
    let system = app.start(AsyncPart::All).await;
    let (_, body) = app
        .order(&system, json!({"item": "burger", "qty": 3}))
        .await;
    let id = body["order_id"].as_str().unwrap().to_owned();
    app.all_notified(&[id], Duration::from_secs(10)).await;
    // The same event again, twice (a redelivery, a republish).
    for _ in 0..2 {
        let m = Message {
            body: body.to_string().into(),
            ..Default::default()
        };
        app.bus
            .transport()
            .publish(&Route::ORDER_PLACED, m)
            .await
            .unwrap();
    }
    let (_, sentinel) = app.order(&system, json!({"item": "pizza", "qty": 1})).await;
    app.all_notified(
        &[sentinel["order_id"].as_str().unwrap().to_owned()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(app.stock("burger").await, 97);
    assert_eq!(app.ledger().reservation_count().await.unwrap(), 2);
    assert_eq!(system.notification.as_ref().unwrap().sent(), 2);
    system.stop().await;
}

pub async fn poison_messages_are_dead_lettered_and_valid_orders_keep_flowing(app: App) {
    let system = app.start(AsyncPart::All).await;
    let poison = [
        "{not json".to_owned(),
        json!({"item": "burger", "qty": 1}).to_string(),
        json!({"order_id": "ORD-00000000000A", "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f", "qty": 1, "status": "placed", "created_at": "x"}).to_string(),
        json!({"order_id": "ORD-00000000000B", "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f", "item": "burger", "qty": "two", "status": "placed", "created_at": "x"}).to_string(),
    ];
    for p in &poison {
        app.bus
            .transport()
            .publish(
                &Route::ORDER_PLACED,
                Message {
                    body: p.clone().into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let (_, body) = app
        .order(&system, json!({"item": "burger", "qty": 1}))
        .await;
    let id = body["order_id"].as_str().unwrap().to_owned();
    until("valid order notified", Duration::from_secs(5), async || {
        app.status(&id).await == OrderStatus::Notified
    })
    .await;
    until("4 dead letters", Duration::from_secs(10), async || {
        app.bus.dead_letters(&Route::ORDER_PLACED).await.len() == 4
    })
    .await;
    // Each names what is wrong (in whatever order the broker kept them).
    let reasons: Vec<String> = app
        .bus
        .dead_letters(&Route::ORDER_PLACED)
        .await
        .into_iter()
        .map(|d| d.reason)
        .collect();
    for expected in ["invalid JSON", "`order_id`", "`item`", "`qty`"] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason mentions {expected}: {reasons:?}"
        );
    }
    assert_eq!(app.stock("burger").await, 99);
    system.stop().await;
}

/// Publishes `body` as is on `orders` (as another producer would).
async fn publish_raw(app: &App, body: String) {
    app.bus
        .transport()
        .publish(
            &Route::ORDER_PLACED,
            Message {
                body: body.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// An `order_id` of 200 KB used to go whole into the dead letter's reason
/// header: on RabbitMQ the frame outgrew `frame_max`, the broker closed the
/// shared connection and the message came back, forever.
pub async fn oversized_poison_is_dead_lettered_with_a_bounded_reason(app: App) {
    const HUGE: usize = 200 * 1024;
    let system = app.start(AsyncPart::All).await;
    let poison = json!({
        "order_id": "A".repeat(HUGE),
        "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f",
        "item": "burger",
        "qty": 1,
        "status": "placed",
        "created_at": "2025-12-01T14:40:00.000Z",
    });
    publish_raw(&app, poison.to_string()).await;
    let (status, body) = app
        .order(&system, json!({"item": "burger", "qty": 1}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["order_id"].as_str().unwrap().to_owned();
    until(
        "the order after the poison notified",
        Duration::from_secs(10),
        async || app.status(&id).await == OrderStatus::Notified,
    )
    .await;
    until(
        "the poison in the DLQ",
        Duration::from_secs(10),
        async || app.bus.dead_letters(&Route::ORDER_PLACED).await.len() == 1,
    )
    .await;
    let dead = app.bus.dead_letters(&Route::ORDER_PLACED).await;
    let reason = &dead[0].reason;
    assert!(reason.len() <= 1024, "{} bytes", reason.len());
    assert!(reason.contains("order_id"), "{reason}");
    assert!(reason.contains("…(204800 bytes)"), "{reason}");
    assert_eq!(
        dead[0].message.body.len(),
        poison.to_string().len(),
        "kept whole"
    );
    assert_eq!(app.stock("burger").await, 99);
    system.stop().await;
}

/// What the original Part B OrderService publishes (`json.dumps` of its
/// dict: `created_at` is `time.time()`, epoch seconds as a float), and what
/// other producers of the contract may send (an `order-<i>` id, no
/// `request_id`, integer seconds, extra fields): orders, not poison.
pub async fn orders_written_by_the_original_services_are_reserved_and_notified(app: App) {
    let system = app.start(AsyncPart::All).await;
    let original = format!(
        r#"{{"order_id": "{}", "request_id": "0b6f2c1e-5a4d-4e8b-9c3f-2d1e0a9b8c7d", "item": "burger", "qty": 2, "status": "placed", "created_at": 1764600000.1234567}}"#,
        campusfood::core::OrderId::generate()
    );
    let foreign = format!(
        r#"{{"order_id": "order-{}", "item": "burger", "qty": 1, "created_at": 1764600000, "source": "legacy"}}"#,
        fastrand::u32(..)
    );
    publish_raw(&app, original).await;
    publish_raw(&app, foreign).await;
    let notification = system.notification.as_ref().unwrap();
    until(
        "both reserved and notified",
        Duration::from_secs(10),
        async || app.stock("burger").await == 97 && notification.sent() == 2,
    )
    .await;
    assert!(
        app.bus.dead_letters(&Route::ORDER_PLACED).await.is_empty(),
        "nothing dead-lettered"
    );
    // `GET /health` answers as the original services did.
    for (running, service) in [
        (
            system.order.as_ref().unwrap().server.addr(),
            "async-order-service",
        ),
        (
            system.inventory.as_ref().unwrap().server.addr(),
            "inventory-service",
        ),
    ] {
        let health: serde_json::Value = app
            .client
            .get(format!("http://{running}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "healthy", "{health}");
        assert_eq!(health["service"], service, "{health}");
    }
    system.stop().await;
}

pub async fn injected_failures_retry_with_a_bound_then_dead_letter_and_replay_succeeds(app: App) {
    use campusfood::core::fault::FaultUpdate;
    let system = app.start(AsyncPart::All).await;
    let inventory = system.inventory.as_ref().unwrap().service.clone();
    inventory
        .faults()
        .configure(&FaultUpdate {
            failure_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let (_, body) = app
        .order(&system, json!({"item": "burger", "qty": 1}))
        .await;
    let id = body["order_id"].as_str().unwrap().to_owned();
    until(
        "dead-lettered after 3 attempts",
        Duration::from_secs(10),
        async || !app.bus.dead_letters(&Route::ORDER_PLACED).await.is_empty(),
    )
    .await;
    let dead = app.bus.dead_letters(&Route::ORDER_PLACED).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].reason.contains("injected failure"),
        "{}",
        dead[0].reason
    );
    assert_eq!(app.status(&id).await, OrderStatus::Placed);
    assert_eq!(app.stock("burger").await, 100);
    // Fixed: replay it.
    inventory
        .faults()
        .configure(&FaultUpdate {
            failure_rate: Some(0.0),
            ..Default::default()
        })
        .unwrap();
    assert!(app.bus.replay(&Route::ORDER_PLACED, &dead[0].id).await);
    app.all_notified(&[id], Duration::from_secs(10)).await;
    assert_eq!(app.stock("burger").await, 99);
    assert!(app.bus.dead_letters(&Route::ORDER_PLACED).await.is_empty());
    system.stop().await;
}

pub async fn bad_input_is_refused_and_nothing_is_published(app: App) {
    let system = app.start(AsyncPart::Order).await;
    for (body, status) in [
        (json!({"qty": 1}), 422),
        (json!({"item": "burger", "qty": 0}), 422),
        (json!([1]), 400),
    ] {
        let (s, b) = app.order(&system, body.clone()).await;
        assert_eq!(s, status, "{body} -> {b}");
        assert!(b["error"].is_string());
    }
    assert_eq!(app.orders().order_count().await.unwrap(), 0);
    assert_eq!(app.orders().outbox_len().await.unwrap(), 0);
    system.stop().await;
}

/// The bus, except that publishing fails while `down` is set: the broker
/// unreachable, as the order service sees it.
#[derive(Debug)]
struct Unreachable {
    inner: Arc<dyn Transport>,
    down: AtomicBool,
}

#[async_trait]
impl ForwardTransport for Unreachable {
    fn inner(&self) -> &dyn Transport {
        &*self.inner
    }
    fn forward_name(&self) -> &'static str {
        "unreachable"
    }
    async fn forward_publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError::Unavailable {
                route: route.clone(),
                reason: "connection refused".into(),
            });
        }
        self.inner.publish(route, message).await
    }
}

pub async fn orders_are_accepted_while_publishing_fails_and_published_later(app: App) {
    let flaky = Arc::new(Unreachable {
        inner: app.bus.transport(),
        down: AtomicBool::new(true),
    });
    let front = app.start_on(AsyncPart::Order, flaky.clone()).await;
    let back = app.start(AsyncPart::Inventory).await;
    let notifier = app.start(AsyncPart::Notification).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (status, body) = app.order(&front, json!({"item": "burger", "qty": 1})).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["order_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.orders().outbox_len().await.unwrap(), 10);
    flaky.down.store(false, Ordering::SeqCst);
    app.all_notified(&ids, Duration::from_secs(15)).await;
    // The relay forgets what it published after the broker's confirm, so
    // the orders may be notified before their entries leave the outbox.
    until("the outbox emptied", Duration::from_secs(5), async || {
        app.orders().outbox_len().await.unwrap() == 0
    })
    .await;
    assert_eq!(app.stock("burger").await, 90);
    for s in [front, back, notifier] {
        s.stop().await;
    }
}

/// An injected delay holds at most the prefetch window of deliveries, and
/// `{"delay": 0}` gives the window back at once: the waits in progress
/// follow the new setting instead of sleeping out the one they read.
pub async fn a_delay_taken_back_frees_the_deliveries_it_holds(mut app: App) {
    app.options.prefetch = 4;
    let system = app.start(AsyncPart::All).await;
    let inventory = system.inventory.as_ref().unwrap();
    let configure = |delay: f64| {
        let url = format!("http://{}/configure", inventory.server.addr());
        let request = app.client.post(url).json(&json!({ "delay": delay }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(configure(60.0).await, 200);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let (status, body) = app
            .order(&system, json!({"item": "burger", "qty": 1}))
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["order_id"].as_str().unwrap().to_owned());
    }
    let faults = inventory.service.faults().clone();
    until(
        "the prefetch window waits out the delay",
        Duration::from_secs(10),
        async || faults.delayed_calls() == 4,
    )
    .await;
    assert_eq!(configure(0.0).await, 200);
    // Well inside the 60 s the held deliveries had read.
    app.all_notified(&ids, Duration::from_secs(20)).await;
    assert_eq!(app.stock("burger").await, 92);
    system.stop().await;
}

/// `GET /orders/{id}/timeline` tells each order's story as it happened:
/// inventory fails half its attempts (seeded, so the test knows which —
/// the draw is a pure function of seed, order and attempt), and every
/// timeline shows exactly those attempts: reserved at its first
/// successful one with the failed ones before it as `retried`, or, after
/// three failures, in the dead letters.
pub async fn timelines_tell_each_orders_attempts_and_dead_letters(app: App) {
    use campusfood::core::fault::{FaultUpdate, decide};
    const SEED: u64 = 7;
    const RATE: f64 = 0.5;
    let system = app.start(AsyncPart::All).await;
    let inventory = system.inventory.as_ref().unwrap().service.clone();
    inventory
        .faults()
        .configure(&FaultUpdate {
            failure_rate: Some(RATE),
            seed: Some(SEED),
            ..Default::default()
        })
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..12 {
        let (status, body) = app
            .order(&system, json!({"item": "burger", "qty": 1}))
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["order_id"].as_str().unwrap().to_owned());
    }
    // The attempt each order succeeds at, or None: dead-lettered after 3.
    let succeeds_at = |id: &str| (1..=3).find(|&a| decide(SEED, id, a) >= RATE);
    let (fine, dead): (Vec<&String>, Vec<&String>) =
        ids.iter().partition(|id| succeeds_at(id).is_some());
    assert!(
        fine.iter().any(|id| succeeds_at(id) > Some(1)),
        "the seed gives no order that succeeds after a retry: pick another"
    );
    let fine: Vec<String> = fine.into_iter().cloned().collect();
    app.all_notified(&fine, Duration::from_secs(20)).await;
    until(
        "the dead letters of the orders failing three times",
        Duration::from_secs(20),
        async || app.bus.dead_letters(&Route::ORDER_PLACED).await.len() == dead.len(),
    )
    .await;

    let order_url = format!("http://{}", system.order.as_ref().unwrap().server.addr());
    for id in &ids {
        let url = format!("{order_url}/orders/{id}/timeline");
        let resp = app.client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        let timeline: serde_json::Value = resp.json().await.unwrap();
        let hops = timeline["hops"].as_array().unwrap();
        let steps: Vec<(&str, u64)> = hops
            .iter()
            .map(|h| (h["step"].as_str().unwrap(), h["attempt"].as_u64().unwrap()))
            .collect();
        let expected: Vec<(&str, u64)> = match succeeds_at(id) {
            Some(1) => vec![
                ("accepted", 1),
                ("published", 1),
                ("reserved", 1),
                ("notified", 1),
            ],
            Some(n) => vec![
                ("accepted", 1),
                ("published", 1),
                ("retried", u64::from(n) - 1),
                ("reserved", u64::from(n)),
                ("notified", 1),
            ],
            None => vec![
                ("accepted", 1),
                ("published", 1),
                ("retried", 2),
                ("dead_lettered", 3),
            ],
        };
        assert_eq!(steps, expected, "{id}: {timeline:#}");
        let status = if succeeds_at(id).is_some() {
            "notified"
        } else {
            "placed"
        };
        assert_eq!(timeline["status"], status, "{timeline:#}");
        assert_eq!(timeline["order_id"], id.as_str());
        // Services and times as they happened.
        let services: Vec<&str> = hops
            .iter()
            .map(|h| h["service"].as_str().unwrap())
            .collect();
        assert_eq!(services[0], "order-service");
        assert!(
            services[2..].iter().all(|s| *s != "order-service"),
            "{timeline:#}"
        );
        let times: Vec<&str> = hops.iter().filter_map(|h| h["at"].as_str()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{timeline:#}");
        if succeeds_at(id).is_none() {
            let detail = hops[3]["detail"].as_str().unwrap();
            assert!(detail.contains("injected failure"), "{detail}");
        }
    }
    // Unknown and malformed ids.
    let unknown = campusfood::core::OrderId::generate();
    let resp = app
        .client
        .get(format!("{order_url}/orders/{unknown}/timeline"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = app
        .client
        .get(format!("{order_url}/orders/not-an-id!/timeline"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    system.stop().await;
}
