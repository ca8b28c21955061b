//! The asynchronous architecture end to end over the in-memory transport:
//! the same services and handlers that run over RabbitMQ, with HTTP on
//! ephemeral ports. (`tests/async_rabbitmq` runs them over a real broker.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood::core::Config;
use campusfood::core::OrderId;
use campusfood::core::ledger::MemoryLedger;
use campusfood::core::order::OrderStatus;
use campusfood::core::transport::{
    Capabilities, DeadLetters, Handler, Message, Reply, Route, SubscribeOptions, Subscription,
    Transport, TransportError,
};
use campusfood::services::async_system::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood::services::order_store::MemoryOrderStore;
use campusfood::services::processed::MemoryProcessedIds;
use campusfood::transport::memory::MemoryTransport;
use futures::future::join_all;
use serde_json::{Value, json};

struct App {
    config: Config,
    options: AsyncOptions,
    transport: MemoryTransport,
    stores: AsyncStores,
    client: reqwest::Client,
}

fn app(stock: &str) -> App {
    let mut config = Config::default();
    config.stock = stock.parse().unwrap();
    let mut options = AsyncOptions::from_config(&config);
    options.order_port = 0;
    options.inventory_port = 0;
    options.retry_delay = Duration::from_millis(20);
    options.max_attempts = 3;
    options.relay_poll = Duration::from_millis(20);
    let stores = AsyncStores {
        ledger: Arc::new(MemoryLedger::new(&config.stock)),
        orders: Arc::new(MemoryOrderStore::new()),
        notified: Arc::new(MemoryProcessedIds::new()),
    };
    App {
        config,
        options,
        transport: MemoryTransport::new(),
        stores,
        client: reqwest::Client::new(),
    }
}

impl App {
    async fn start(&self, part: AsyncPart) -> AsyncSystem {
        self.start_on(part, Arc::new(self.transport.clone())).await
    }

    async fn start_on(&self, part: AsyncPart, transport: Arc<dyn Transport>) -> AsyncSystem {
        AsyncSystem::start(
            &self.config,
            part,
            &self.options,
            transport,
            self.stores.clone(),
        )
        .await
        .unwrap()
    }

    async fn order(&self, system: &AsyncSystem, body: Value) -> (u16, Value) {
        let url = format!(
            "http://{}/order",
            system.order.as_ref().unwrap().server.addr()
        );
        let resp = self.client.post(url).json(&body).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn status(&self, id: &str) -> OrderStatus {
        self.stores
            .orders
            .get(&OrderId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .status
    }

    async fn stock(&self, item: &str) -> u64 {
        self.stores.ledger.stock().await.unwrap()[&campusfood::core::Item::parse(item).unwrap()]
    }
}

async fn until(what: &str, deadline: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond().await {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn baseline_orders_flow_to_notified() {
    let app = app("burger=100");
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

#[tokio::test]
async fn backlog_waits_for_inventory_and_drains_exactly_once() {
    let app = app("burger=100");
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
        app.transport.depth(&Route::ORDER_PLACED, None) == 50
    })
    .await;
    assert_eq!(app.stock("burger").await, 100);
    let inventory = app.start(AsyncPart::Inventory).await;
    until("the backlog drains", Duration::from_secs(10), async || {
        app.transport.depth(&Route::ORDER_PLACED, None) == 0
    })
    .await;
    for id in &ids {
        until("notified", Duration::from_secs(5), async || {
            app.status(id).await == OrderStatus::Notified
        })
        .await;
    }
    assert_eq!(app.stock("burger").await, 50);
    assert_eq!(app.stores.ledger.reservation_count().await.unwrap(), 50);
    for s in [front, notifier, inventory] {
        s.stop().await;
    }
}

#[tokio::test]
async fn a_duplicate_order_placed_reserves_and_notifies_once() {
    let app = app("burger=100");
    let system = app.start(AsyncPart::All).await;
    let (_, body) = app
        .order(&system, json!({"item": "burger", "qty": 3}))
        .await;
    let id = body["order_id"].as_str().unwrap().to_owned();
    until("notified", Duration::from_secs(5), async || {
        app.status(&id).await == OrderStatus::Notified
    })
    .await;
    // The same event again, twice (a redelivery, a republish).
    for _ in 0..2 {
        app.transport
            .publish(
                &Route::ORDER_PLACED,
                Message {
                    body: body.to_string().into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    until("redeliveries handled", Duration::from_secs(5), async || {
        app.transport.depth(&Route::ORDER_PLACED, None) == 0
    })
    .await;
    until(
        "duplicate reservation events handled",
        Duration::from_secs(5),
        async || app.transport.depth(&Route::INVENTORY_RESERVED, None) == 0,
    )
    .await;
    assert_eq!(app.stock("burger").await, 97);
    assert_eq!(app.stores.ledger.reservation_count().await.unwrap(), 1);
    assert_eq!(system.notification.as_ref().unwrap().sent(), 1);
    system.stop().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_valid_orders_keep_flowing() {
    let app = app("burger=100");
    let system = app.start(AsyncPart::All).await;
    let poison = [
        "{not json".to_owned(),
        json!({"item": "burger", "qty": 1}).to_string(),
        json!({"order_id": "ORD-00000000000A", "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f", "qty": 1, "status": "placed", "created_at": "x"}).to_string(),
        json!({"order_id": "ORD-00000000000B", "request_id": "5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f", "item": "burger", "qty": "two", "status": "placed", "created_at": "x"}).to_string(),
    ];
    for p in &poison {
        app.transport
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
    until("4 dead letters", Duration::from_secs(5), async || {
        app.transport
            .dead_letters(&Route::ORDER_PLACED, 10)
            .await
            .unwrap()
            .len()
            == 4
    })
    .await;
    let dead = app
        .transport
        .dead_letters(&Route::ORDER_PLACED, 10)
        .await
        .unwrap();
    assert!(
        dead[0].reason.contains("invalid JSON"),
        "{}",
        dead[0].reason
    );
    assert!(dead[1].reason.contains("order_id"), "{}", dead[1].reason);
    assert!(dead[2].reason.contains("item"), "{}", dead[2].reason);
    assert_eq!(app.stock("burger").await, 99);
    system.stop().await;
}

#[tokio::test]
async fn injected_failures_retry_with_a_bound_then_dead_letter_and_replay_succeeds() {
    let app = app("burger=100");
    let system = app.start(AsyncPart::All).await;
    let inventory = system.inventory.as_ref().unwrap().service.clone();
    inventory
        .faults()
        .configure(&campusfood::core::fault::FaultUpdate {
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
        Duration::from_secs(5),
        async || {
            !app.transport
                .dead_letters(&Route::ORDER_PLACED, 10)
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    let dead = app
        .transport
        .dead_letters(&Route::ORDER_PLACED, 10)
        .await
        .unwrap();
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].reason.contains("injected failure"),
        "{}",
        dead[0].reason
    );
    assert_eq!(app.status(&id).await, OrderStatus::Placed);
    // Fixed: replay it.
    inventory
        .faults()
        .configure(&campusfood::core::fault::FaultUpdate {
            failure_rate: Some(0.0),
            ..Default::default()
        })
        .unwrap();
    assert!(
        app.transport
            .replay(&Route::ORDER_PLACED, &dead[0].id)
            .await
            .unwrap()
    );
    until(
        "notified after replay",
        Duration::from_secs(5),
        async || app.status(&id).await == OrderStatus::Notified,
    )
    .await;
    assert_eq!(app.stock("burger").await, 99);
    system.stop().await;
}

/// The real transport, except that publishing fails while `down` is set:
/// the broker being unreachable, as the order service sees it.
#[derive(Debug)]
struct Unreachable {
    inner: MemoryTransport,
    down: AtomicBool,
}

#[async_trait]
impl Transport for Unreachable {
    fn name(&self) -> &'static str {
        "unreachable-memory"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.inner.request(route, request, timeout).await
    }
    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError::Unavailable {
                route: route.clone(),
                reason: "connection refused".into(),
            });
        }
        self.inner.publish(route, message).await
    }
    async fn subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        self.inner.subscribe(route, handler, options).await
    }
}

#[tokio::test]
async fn orders_are_accepted_while_the_broker_is_unreachable_and_published_later() {
    let app = app("burger=100");
    let flaky = Arc::new(Unreachable {
        inner: app.transport.clone(),
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
    assert_eq!(app.stores.orders.outbox_len().await.unwrap(), 10);
    flaky.down.store(false, Ordering::SeqCst);
    for id in &ids {
        until(
            "notified once the broker is back",
            Duration::from_secs(10),
            async || app.status(id).await == OrderStatus::Notified,
        )
        .await;
    }
    assert_eq!(app.stores.orders.outbox_len().await.unwrap(), 0);
    assert_eq!(app.stock("burger").await, 90);
    for s in [front, back, notifier] {
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_published() {
    let app = app("burger=100");
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
    assert_eq!(app.stores.orders.order_count().await.unwrap(), 0);
    assert_eq!(app.stores.orders.outbox_len().await.unwrap(), 0);
    system.stop().await;
}
