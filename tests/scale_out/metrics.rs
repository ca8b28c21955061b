//! Prometheus metrics from the shipped Part A and Part B binaries, one
//! service per process: each `GET /metrics` parses as Prometheus text
//! ([`Scrape::parse`] refuses a malformed line) and holds the shared
//! names with the values the orders placed imply. The names are spelled
//! out here, not taken from `campusfood_core::metric`: dashboards and
//! alerts rely on them, so a rename must fail a test.

use campusfood_testkit::prometheus::Scrape;
use campusfood_testkit::rabbitmq::MANAGEMENT;

use super::*;

/// `GET <base>/metrics`, parsed (the test fails on a malformed line).
async fn scrape(c: &Cluster, base: &str) -> Scrape {
    let url = format!("{base}/metrics");
    let resp = c
        .client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "GET {url}: content type {content_type}"
    );
    let text = resp.text().await.expect("a body");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("GET {url} is not Prometheus text: {e}\n{text}"))
}

/// The value of the one series `name{labels}`, failing with the scrape's
/// series of that name when there is none.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.sum(name, labels).unwrap_or_else(|| {
        let same: Vec<_> = s.find(name, &[]).collect();
        panic!("no {name}{labels:?}; series of that name: {same:?}")
    })
}

/// Asserts the `# TYPE` of each family.
fn assert_types(s: &Scrape, families: &[(&str, &str)]) {
    for (name, kind) in families {
        assert_eq!(s.kind(name), Some(*kind), "# TYPE of {name}");
    }
}

/// How many times `handler` was timed (its histogram's count).
fn timed(s: &Scrape, handler: &str) -> f64 {
    value(
        s,
        "campusfood_handler_duration_seconds_count",
        &[("handler", handler)],
    )
}

/// Part A, three processes (the order service with its breaker on): three
/// orders confirmed and one for an unknown item. The order service counts
/// four placed, its calls by answer, its breaker closed and its empty
/// outbox; inventory counts three reserved and one item not found;
/// every service times its handlers.
#[cfg(feature = "http")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_a_services_serve_the_shared_metrics() {
    let mut c = Cluster::new();
    let PartA {
        order_url,
        inventory_url,
        notification_url,
    } = PartA::start(&mut c, &["--breaker", "order"]).await;

    for _ in 0..3 {
        let (status, body) = place(&c.client, &order_url, "burger", 1).await;
        assert_eq!(status, 201, "POST /order: {body}");
    }
    let (status, body) = place(&c.client, &order_url, "caviar", 1).await;
    assert_eq!(status, 404, "POST /order for an unknown item: {body}");

    // The outbox gauge is sampled every second: wait for its first sample.
    let mut o = scrape(&c, &order_url).await;
    until("the order service's outbox gauge", READY, async || {
        o = scrape(&c, &order_url).await;
        o.sum("campusfood_outbox_size", &[]).is_some()
    })
    .await;
    assert_types(
        &o,
        &[
            ("campusfood_orders_placed_total", "counter"),
            ("campusfood_requests_total", "counter"),
            ("campusfood_handler_duration_seconds", "histogram"),
            ("campusfood_breaker_state", "gauge"),
            ("campusfood_outbox_size", "gauge"),
        ],
    );
    assert_eq!(value(&o, "campusfood_orders_placed_total", &[]), 4.0);
    let reserve = |status| [("route", "inventory.reserve"), ("status", status)];
    assert_eq!(value(&o, "campusfood_requests_total", &reserve("200")), 3.0);
    assert_eq!(value(&o, "campusfood_requests_total", &reserve("404")), 1.0);
    let sent = [("route", "notification.send"), ("status", "200")];
    assert_eq!(value(&o, "campusfood_requests_total", &sent), 3.0);
    assert_eq!(
        value(&o, "campusfood_breaker_state", &[("hop", "inventory")]),
        0.0,
        "closed"
    );
    assert_eq!(value(&o, "campusfood_outbox_size", &[]), 0.0);
    assert_eq!(timed(&o, "POST /order"), 4.0);
    // Every observation falls in the histogram's last bucket.
    let all = [("handler", "POST /order"), ("le", "+Inf")];
    assert_eq!(
        value(&o, "campusfood_handler_duration_seconds_bucket", &all),
        4.0
    );

    let i = scrape(&c, &inventory_url).await;
    assert_types(&i, &[("campusfood_order_outcomes_total", "counter")]);
    let outcome = |o| [("outcome", o)];
    assert_eq!(
        value(&i, "campusfood_order_outcomes_total", &outcome("reserved")),
        3.0
    );
    assert_eq!(
        value(
            &i,
            "campusfood_order_outcomes_total",
            &outcome("item_not_found")
        ),
        1.0
    );
    for zero in ["insufficient_stock", "injected_failure"] {
        assert_eq!(
            value(&i, "campusfood_order_outcomes_total", &outcome(zero)),
            0.0
        );
    }
    assert_eq!(timed(&i, "POST /reserve"), 4.0);

    let n = scrape(&c, &notification_url).await;
    assert_eq!(timed(&n, "POST /send"), 3.0);
    c.assert_all_running();
}

/// Part B, three processes: three orders notified. The order service
/// counts three placed, three published, the status events it consumed,
/// its outbox empty; inventory three reserved and three `order.placed`
/// deliveries acked; both sample their queues' depth; nothing was
/// redelivered or dead-lettered — until a poison message arrives, which
/// inventory counts as one dead letter.
#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_b_services_serve_the_shared_metrics() {
    let mut c = Cluster::new();
    let PartB {
        order_url,
        inventory_url,
    } = PartB::start(&mut c, "prom").await;

    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = place(&c.client, &order_url, "burger", 1).await;
        assert_eq!(status, 201, "POST /order: {body}");
        ids.push(body["order_id"].as_str().expect("an order_id").to_owned());
    }
    super::wait_statuses(&mut c, &order_url, &ids, &["notified"], READY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Gauges are sampled every second; the status events are acked just
    // after the statuses show.
    let ack = |route| [("route", route), ("disposition", "ack")];
    let mut o = scrape(&c, &order_url).await;
    until("the order service's gauges and acks", READY, async || {
        o = scrape(&c, &order_url).await;
        o.sum("campusfood_outbox_size", &[]) == Some(0.0)
            && o.sum("campusfood_queue_depth", &[("route", "order.placed")])
                .is_some()
            && o.sum("campusfood_deliveries_total", &ack("order.notified")) == Some(3.0)
    })
    .await;
    assert_types(
        &o,
        &[
            ("campusfood_orders_placed_total", "counter"),
            ("campusfood_published_total", "counter"),
            ("campusfood_deliveries_total", "counter"),
            ("campusfood_redeliveries_total", "counter"),
            ("campusfood_dead_letters_total", "counter"),
            ("campusfood_handler_duration_seconds", "histogram"),
            ("campusfood_outbox_size", "gauge"),
            ("campusfood_queue_depth", "gauge"),
        ],
    );
    assert_eq!(value(&o, "campusfood_orders_placed_total", &[]), 3.0);
    let published = [("route", "order.placed"), ("outcome", "ok")];
    assert!(value(&o, "campusfood_published_total", &published) >= 3.0);
    assert_eq!(
        value(
            &o,
            "campusfood_deliveries_total",
            &ack("inventory.reserved")
        ),
        3.0
    );
    assert_eq!(timed(&o, "POST /order"), 3.0);
    assert!(timed(&o, "inventory.reserved") >= 3.0);
    for route in ["inventory.reserved", "inventory.failed", "order.notified"] {
        let r = [("route", route)];
        assert_eq!(value(&o, "campusfood_redeliveries_total", &r), 0.0);
        assert_eq!(value(&o, "campusfood_dead_letters_total", &r), 0.0);
    }

    let i = scrape(&c, &inventory_url).await;
    let reserved = [("outcome", "reserved")];
    assert_eq!(value(&i, "campusfood_order_outcomes_total", &reserved), 3.0);
    assert_eq!(
        value(&i, "campusfood_deliveries_total", &ack("order.placed")),
        3.0
    );
    let placed = [("route", "order.placed")];
    assert_eq!(value(&i, "campusfood_redeliveries_total", &placed), 0.0);
    assert_eq!(value(&i, "campusfood_dead_letters_total", &placed), 0.0);
    assert!(timed(&i, "order.placed") >= 3.0);
    let published = [("route", "inventory.reserved"), ("outcome", "ok")];
    assert_eq!(value(&i, "campusfood_published_total", &published), 3.0);
    until("inventory's queue-depth gauge", READY, async || {
        scrape(&c, &inventory_url)
            .await
            .sum("campusfood_queue_depth", &placed)
            .is_some()
    })
    .await;

    // Poison, published as another producer would: dead-lettered at once.
    let prefix = c.rabbit.as_ref().expect("the test's names").prefix.clone();
    let url = format!("{MANAGEMENT}/exchanges/%2F/{prefix}.orders/publish");
    let routed: serde_json::Value = c
        .client
        .post(&url)
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({
            "properties": {"delivery_mode": 2, "content_type": "application/json"},
            "routing_key": "order.placed",
            "payload": "not json",
            "payload_encoding": "string",
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .expect("the management API's answer");
    assert_eq!(routed["routed"], true, "{routed}");
    let dead = [("route", "order.placed"), ("disposition", "dead_letter")];
    until("inventory to count the dead letter", READY, async || {
        scrape(&c, &inventory_url)
            .await
            .sum("campusfood_dead_letters_total", &placed)
            == Some(1.0)
    })
    .await;
    let i = scrape(&c, &inventory_url).await;
    assert_eq!(value(&i, "campusfood_deliveries_total", &dead), 1.0);
    assert_eq!(value(&i, "campusfood_redeliveries_total", &placed), 0.0);
    assert_eq!(value(&i, "campusfood_order_outcomes_total", &reserved), 3.0);
    c.assert_all_running();
}
