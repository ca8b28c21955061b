//! The RabbitMQ transport against a real broker.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (management on 15672, guest/guest):
//! `scripts/brokers.sh up rabbitmq`, then
//! `cargo test -p campusfood-transport --features rabbitmq --test rabbitmq`.
//! Without a broker every test fails, saying so.
//!
//! Each test works under its own name prefix
//! ([`RabbitConfig::with_prefix`] with a random suffix), so tests run in
//! parallel on one broker; each deletes its queues and exchanges at the end
//! ([`RabbitTransport::teardown`]). Waits are conditions with deadlines.
#![cfg(feature = "rabbitmq")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqprs::FieldValue;
use amqprs::channel::{BasicGetArguments, BasicRejectArguments, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use async_trait::async_trait;
use campusfood_core::config::RabbitConfig;
use campusfood_core::transport::{
    DeadLetters, Delivery, Disposition, Handler, Message, Route, SubscribeOptions, Transport,
    TransportError, headers,
};
use campusfood_testkit::rabbitmq::unique_prefix;
use campusfood_testkit::{Outage, until};
use campusfood_transport::rabbitmq::{KEY_HEADER, RabbitTransport};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------
// helpers

const NOT_RUNNING: &str =
    "RabbitMQ is not running on 127.0.0.1:5672: start it with `scripts/brokers.sh up rabbitmq`";

/// Default deadline for anything to happen.
const WITHIN: Duration = Duration::from_secs(20);

/// A configuration whose names are unique to this test run.
fn config(case: &str) -> RabbitConfig {
    let mut c = RabbitConfig::with_prefix(&unique_prefix(case));
    c.reconnect_backoff = Duration::from_millis(50);
    c.reconnect_backoff_max = Duration::from_millis(500);
    c
}

async fn connect(config: &RabbitConfig) -> RabbitTransport {
    match RabbitTransport::connect(config).await {
        Ok(t) => t,
        Err(e) => panic!("{NOT_RUNNING} ({e})"),
    }
}

async fn depth(t: &RabbitTransport, queue: &str) -> u32 {
    t.queue_depth(queue).await.unwrap()
}

fn numbered(n: usize) -> Message {
    Message::json(&serde_json::json!({ "n": n }))
        .unwrap()
        .with_key(format!("ORD-{n:012X}"))
}

fn number_of(d: &Delivery) -> usize {
    let v: serde_json::Value = d.message.decode().unwrap();
    v["n"].as_u64().unwrap() as usize
}

/// One delivery as a handler saw it.
#[derive(Debug, Clone)]
struct Seen {
    n: usize,
    attempt: u32,
    at: Instant,
    message: Message,
}

type Policy = dyn Fn(&Delivery) -> Disposition + Send + Sync;

/// Records every delivery and answers what `policy` says.
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    policy: Box<Policy>,
}

impl Recorder {
    fn new(policy: impl Fn(&Delivery) -> Disposition + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            policy: Box::new(policy),
        })
    }

    fn acking() -> Arc<Self> {
        Self::new(|_| Disposition::Ack)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many times each message number was delivered.
    fn per_message(&self) -> BTreeMap<usize, usize> {
        let mut counts = BTreeMap::new();
        for s in self.seen() {
            *counts.entry(s.n).or_default() += 1;
        }
        counts
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, d: Delivery) -> Disposition {
        self.seen.lock().unwrap().push(Seen {
            n: number_of(&d),
            attempt: d.attempt,
            at: Instant::now(),
            message: d.message.clone(),
        });
        (self.policy)(&d)
    }
}

/// Blocks every delivery until released; counts them.
struct Blocker {
    started: AtomicU32,
    /// Most handlers running at once.
    most_running: AtomicU32,
    /// Handlers that returned (after the release).
    finished: AtomicU32,
    release: Notify,
    released: AtomicBool,
}

impl Blocker {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            started: AtomicU32::new(0),
            most_running: AtomicU32::new(0),
            finished: AtomicU32::new(0),
            release: Notify::new(),
            released: AtomicBool::new(false),
        })
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }
}

#[async_trait]
impl Handler for Blocker {
    async fn handle(&self, _: Delivery) -> Disposition {
        let started = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let running = started - self.finished.load(Ordering::SeqCst);
        self.most_running.fetch_max(running, Ordering::SeqCst);
        let released = self.release.notified();
        if !self.released.load(Ordering::SeqCst) {
            released.await;
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
        Disposition::Ack
    }
}

fn options(prefetch: u16, max_attempts: u32, retry_delay: Duration) -> SubscribeOptions {
    SubscribeOptions {
        prefetch,
        max_attempts,
        retry_delay,
        group: None,
    }
}

/// A plain amqprs connection, to look at what the transport put on the
/// broker from the outside.
async fn raw_connection() -> Connection {
    let args = OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest");
    Connection::open(&args)
        .await
        .unwrap_or_else(|e| panic!("{NOT_RUNNING} ({e})"))
}

/// Calls the management API (blocking std I/O on a blocking thread).
async fn management(
    method: &'static str,
    path: String,
    body: String,
) -> std::io::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:15672")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\
             Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })
    .await?
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Makes the broker close `t`'s connection, as it does when it shuts down
/// (`320 CONNECTION_FORCED`), without disturbing anyone else's.
async fn force_close_connection(t: &RabbitTransport) {
    let wanted = t.connection_name();
    // The management API lists a new connection after its next stats tick.
    let deadline = Instant::now() + WITHIN;
    let name = loop {
        let (status, body) = management("GET", "/api/connections".into(), String::new())
            .await
            .expect("RabbitMQ management API on 127.0.0.1:15672");
        assert_eq!(status, 200, "management API: {body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let found = list.as_array().unwrap().iter().find_map(|c| {
            (c["client_properties"]["connection_name"] == wanted)
                .then(|| c["name"].as_str().unwrap().to_owned())
        });
        if let Some(name) = found {
            break name;
        }
        assert!(
            Instant::now() < deadline,
            "connection {wanted} never showed in the management API"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, body) = management(
        "DELETE",
        format!("/api/connections/{}", percent_encode(&name)),
        String::new(),
    )
    .await
    .expect("RabbitMQ management API on 127.0.0.1:15672");
    assert!(
        status == 204 || status == 200,
        "closing {name}: {status} {body}"
    );
}

// ---------------------------------------------------------------------------
// tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_round_trip_handles_each_message_exactly_once() {
    let config = config("roundtrip");
    let t = connect(&config).await;
    let h = Recorder::acking();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(16, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    for n in 0..100 {
        t.publish(
            &Route::ORDER_PLACED,
            numbered(n).with_header(headers::REQUEST_ID, format!("req-{n}")),
        )
        .await
        .unwrap();
    }
    until("100 distinct messages", WITHIN, async || {
        h.per_message().len() == 100
    })
    .await;
    // Stop drains: every ack is sent before the channel closes, so nothing
    // can come back.
    sub.stop().await;
    until("an empty queue", WITHIN, || async {
        depth(&t, &config.reserve_queue).await == 0
    })
    .await;
    let counts = h.per_message();
    assert!(counts.values().all(|&c| c == 1), "redelivered: {counts:?}");
    let first = h.seen().into_iter().find(|s| s.n == 7).unwrap();
    assert_eq!(first.attempt, 1);
    assert_eq!(first.message.key.as_deref(), Some("ORD-000000000007"));
    assert_eq!(
        first
            .message
            .headers
            .get(headers::REQUEST_ID)
            .map(String::as_str),
        Some("req-7")
    );
    // Internal bookkeeping headers are not passed on.
    assert!(!first.message.headers.contains_key(KEY_HEADER));
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_topology_and_message_properties() {
    let config = config("contract");
    let t = connect(&config).await;
    t.publish(
        &Route::ORDER_PLACED,
        numbered(1).with_header(headers::REQUEST_ID, "req-1"),
    )
    .await
    .unwrap();

    let conn = raw_connection().await;
    let ch = conn.open_channel(None).await.unwrap();
    let (get_ok, props, body) = ch
        .basic_get(BasicGetArguments::new(&config.reserve_queue))
        .await
        .unwrap()
        .expect("the message in orders.reserve");
    assert_eq!(get_ok.routing_key(), "order.placed");
    assert_eq!(get_ok.exchange(), &config.orders_exchange);
    assert_eq!(props.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        props.content_type().map(String::as_str),
        Some("application/json")
    );
    assert!(props.message_id().is_some());
    let hdrs = props.headers().unwrap();
    let text = |name: &str| match hdrs.get(&name.try_into().unwrap()) {
        Some(FieldValue::S(s)) => Some(s.to_string()),
        _ => None,
    };
    assert_eq!(text(headers::REQUEST_ID).as_deref(), Some("req-1"));
    assert_eq!(text(KEY_HEADER).as_deref(), Some("ORD-000000000001"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["n"], 1);

    // The contract's dead-lettering: a consumer of the original system
    // rejects without requeue, and the message lands in orders.dlq.
    ch.basic_reject(BasicRejectArguments::new(get_ok.delivery_tag(), false))
        .await
        .unwrap();
    until("the rejected message in orders.dlq", WITHIN, || async {
        depth(&t, &config.dead_letter_queue).await == 1
    })
    .await;
    let dead = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "rejected", "the broker's own reason");

    // Redeclaring the reserve queue with other arguments is refused: it has
    // the contract's x-dead-letter-exchange.
    let plain = ch
        .queue_declare(QueueDeclareArguments::durable_client_named(
            &config.reserve_queue,
        ))
        .await;
    assert!(
        plain.is_err(),
        "orders.reserve must carry x-dead-letter-exchange"
    );

    // inventory.failed and order.notified always have a queue (the status
    // group's), and inventory.reserved reaches both notification and the
    // status group.
    t.publish(&Route::INVENTORY_FAILED, numbered(2))
        .await
        .unwrap();
    t.publish(&Route::INVENTORY_RESERVED, numbered(3))
        .await
        .unwrap();
    t.publish(&Route::ORDER_NOTIFIED, numbered(4))
        .await
        .unwrap();
    let status_failed = config.group_queue(&config.status_group, &config.failed_key);
    let status_reserved = config.group_queue(&config.status_group, &config.reserved_key);
    assert_eq!(depth(&t, &status_failed).await, 1);
    assert_eq!(depth(&t, &status_reserved).await, 1);
    assert_eq!(depth(&t, &config.notify_queue).await, 1);
    let status_notified = config.group_queue(&config.status_group, &config.order_notified_key);
    assert_eq!(depth(&t, &status_notified).await, 1);
    // order.notified goes to the orders exchange but not to orders.reserve.
    assert_eq!(depth(&t, &config.reserve_queue).await, 0);
    assert_eq!(
        t.queue_for(&Route::INVENTORY_FAILED, None).unwrap(),
        status_failed
    );

    conn.close().await.unwrap();
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_twice_then_ack_waits_the_delay_between_attempts() {
    let config = config("retry");
    let t = connect(&config).await;
    let delay = Duration::from_millis(400);
    let h = Recorder::new(|d| {
        if d.attempt < 3 {
            Disposition::Retry {
                reason: format!("not yet ({})", d.attempt),
            }
        } else {
            Disposition::Ack
        }
    });
    let sub = t
        .subscribe(&Route::ORDER_PLACED, h.clone(), options(8, 5, delay))
        .await
        .unwrap();
    t.publish(&Route::ORDER_PLACED, numbered(1)).await.unwrap();
    until("the third attempt", WITHIN, async || h.count() >= 3).await;
    // No hot loop and nothing after the ack: exactly three deliveries, even
    // a few retry delays later.
    let settle = Instant::now() + delay * 3;
    until("the queues to settle", WITHIN, || async {
        depth(&t, &config.reserve_queue).await == 0
            && depth(&t, &config.retry_queue(&config.reserve_queue)).await == 0
            && Instant::now() >= settle
    })
    .await;
    sub.stop().await;
    let seen = h.seen();
    let attempts: Vec<u32> = seen.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= delay - Duration::from_millis(50),
            "attempts only {gap:?} apart, retry delay is {delay:?}"
        );
        assert!(
            gap < delay * 5,
            "attempts {gap:?} apart, retry delay is {delay:?}"
        );
    }
    assert_eq!(seen[2].message.key.as_deref(), Some("ORD-000000000001"));
    assert!(
        t.dead_letters(&Route::ORDER_PLACED, 10)
            .await
            .unwrap()
            .is_empty()
    );
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_forever_is_dead_lettered_after_max_attempts_with_the_reason() {
    let config = config("giveup");
    let t = connect(&config).await;
    let h = Recorder::new(|_| Disposition::Retry {
        reason: "database down".into(),
    });
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(8, 3, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    t.publish(&Route::ORDER_PLACED, numbered(9)).await.unwrap();
    until("a dead letter", WITHIN, || async {
        depth(&t, &config.dead_letter_queue).await == 1
    })
    .await;
    sub.stop().await;
    assert_eq!(
        h.seen().iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let dead = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "gave up after 3 attempts: database down");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].route, Route::ORDER_PLACED);
    assert_eq!(dead[0].message.key.as_deref(), Some("ORD-000000000009"));
    assert_eq!(dead[0].message, numbered(9));

    // The reason is an AMQP header on the message in orders.dlq.
    let conn = raw_connection().await;
    let ch = conn.open_channel(None).await.unwrap();
    let (_, props, _) = ch
        .basic_get(BasicGetArguments::new(&config.dead_letter_queue))
        .await
        .unwrap()
        .unwrap();
    let reason = props
        .headers()
        .and_then(|h| h.get(&headers::DEATH_REASON.try_into().unwrap()).cloned());
    assert!(
        matches!(&reason, Some(FieldValue::S(s)) if s.to_string() == "gave up after 3 attempts: database down"),
        "{reason:?}"
    );
    conn.close().await.unwrap();
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_goes_aside_at_once_while_other_messages_keep_flowing() {
    let config = config("poison");
    let t = connect(&config).await;
    let h = Recorder::new(|d| {
        if number_of(d) == 0 {
            Disposition::DeadLetter {
                reason: "invalid order: no item".into(),
            }
        } else {
            Disposition::Ack
        }
    });
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(4, 5, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    for n in 0..=20 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    until("all 21 messages", WITHIN, async || {
        h.per_message().len() == 21
    })
    .await;
    until("the poison message in the DLQ", WITHIN, || async {
        depth(&t, &config.dead_letter_queue).await == 1
    })
    .await;
    sub.stop().await;
    // At once: one attempt, despite a 30 s retry delay and 5 attempts.
    assert!(h.per_message().values().all(|&c| c == 1));
    let dead = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "invalid order: no item");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].message, numbered(0));
    t.teardown().await.unwrap();
}

/// A reason quoting a huge input used to go whole into `x-death-reason`:
/// the header frame outgrew `frame_max`, RabbitMQ closed the shared
/// connection (`501 FRAME_ERROR`), the message came back and did it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reason_is_bounded_and_the_connection_survives() {
    const HUGE: usize = 200 * 1024;
    let config = config("huge-reason");
    let t = connect(&config).await;
    let h = Recorder::new(|d| match number_of(d) {
        0 => Disposition::DeadLetter {
            reason: format!("invalid order_id: {}", "x".repeat(HUGE)),
        },
        1 => Disposition::Retry {
            reason: "é".repeat(HUGE / 2),
        },
        _ => Disposition::Ack,
    });
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(4, 2, Duration::from_millis(20)),
        )
        .await
        .unwrap();
    for n in 0..=1 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    until("both in the DLQ", WITHIN, || async {
        depth(&t, &config.dead_letter_queue).await == 2
    })
    .await;
    // The connection is the one that was there: the next message flows.
    t.publish(&Route::ORDER_PLACED, numbered(2)).await.unwrap();
    until("the message after them", WITHIN, async || {
        h.per_message().contains_key(&2)
    })
    .await;
    sub.stop().await;
    assert_eq!(
        h.per_message()[&0],
        1,
        "dead-lettered once, not again and again"
    );
    let dead = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert!(d.reason.len() <= 1024, "{} bytes", d.reason.len());
    }
    let by_n = |n: usize| {
        dead.iter()
            .find(|d| d.message == numbered(n))
            .unwrap_or_else(|| panic!("no dead letter {n}: {dead:?}"))
    };
    let huge = by_n(0);
    assert!(
        huge.reason.starts_with("invalid order_id: xxx"),
        "{}",
        huge.reason
    );
    assert!(
        huge.reason.ends_with(&format!("…({} bytes)", HUGE + 18)),
        "{}",
        huge.reason
    );
    let retried = by_n(1);
    assert!(retried.reason.starts_with("gave up after 2 attempts: éé"));
    assert!(retried.reason.ends_with(" bytes)"), "{}", retried.reason);
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_without_loss_and_replay_redelivers_one() {
    let config = config("replay");
    let t = connect(&config).await;
    let healed = Arc::new(AtomicBool::new(false));
    let h = {
        let healed = healed.clone();
        Recorder::new(move |_| {
            if healed.load(Ordering::SeqCst) {
                Disposition::Ack
            } else {
                Disposition::DeadLetter {
                    reason: "downstream rejects it".into(),
                }
            }
        })
    };
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(1, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    for n in 1..=3 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    until("three dead letters", WITHIN, || async {
        depth(&t, &config.dead_letter_queue).await == 3
    })
    .await;

    let bodies = |v: &[campusfood_core::transport::DeadLetter]| -> Vec<serde_json::Value> {
        v.iter().map(|d| d.message.decode().unwrap()).collect()
    };
    let listed = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    // Listing is non-destructive and keeps the order.
    let again = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(bodies(&again), bodies(&listed));
    assert_eq!(
        listed.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        again.iter().map(|d| d.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        t.dead_letters(&Route::ORDER_PLACED, 2).await.unwrap().len(),
        2
    );
    assert_eq!(depth(&t, &config.dead_letter_queue).await, 3);

    healed.store(true, Ordering::SeqCst);
    let target = &listed[1];
    assert!(t.replay(&Route::ORDER_PLACED, &target.id).await.unwrap());
    assert!(!t.replay(&Route::ORDER_PLACED, &target.id).await.unwrap());
    until("the replayed message to be handled", WITHIN, async || {
        h.count() == 4
    })
    .await;
    let last = h.seen().pop().unwrap();
    assert_eq!(last.message, target.message);
    assert_eq!(last.attempt, 1, "a replay starts a fresh round of attempts");

    let left = t.dead_letters(&Route::ORDER_PLACED, 10).await.unwrap();
    assert_eq!(
        bodies(&left),
        [bodies(&listed)[0].clone(), bodies(&listed)[2].clone()]
    );
    assert!(!t.replay(&Route::ORDER_PLACED, "no-such-id").await.unwrap());
    assert_eq!(depth(&t, &config.dead_letter_queue).await, 2);
    sub.stop().await;
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_window_is_bounded_in_bytes_too() {
    // Ten messages fit the prefetch count, but only two 100 KB bodies fit
    // the 250 KB byte budget: the rest wait, delivered but not started.
    let mut config = config("bytes");
    config.max_inflight_bytes = 250_000;
    let t = connect(&config).await;
    let stuck = Blocker::new();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            stuck.clone(),
            options(10, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let pad = "x".repeat(100_000);
    for n in 0..6 {
        let body = serde_json::json!({ "n": n, "pad": pad });
        let message = Message::json(&body)
            .unwrap()
            .with_key(format!("ORD-{n:012X}"));
        t.publish(&Route::ORDER_PLACED, message).await.unwrap();
    }
    until("all six delivered to the consumer", WITHIN, || async {
        depth(&t, &config.reserve_queue).await == 0
    })
    .await;
    until("two handlers running", WITHIN, async || {
        stuck.started.load(Ordering::SeqCst) == 2
    })
    .await;
    // The third is held back by the budget, not by the count (10).
    assert_eq!(stuck.started.load(Ordering::SeqCst), 2);
    stuck.release();
    until("all six handled", WITHIN, async || {
        stuck.finished.load(Ordering::SeqCst) == 6
    })
    .await;
    assert!(stuck.most_running.load(Ordering::SeqCst) <= 2);
    sub.stop().await;
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consumer_with_a_stuck_handler_gives_its_message_to_the_next() {
    let mut config = config("stuck");
    config.drain_timeout = Duration::from_millis(300);
    let t = connect(&config).await;
    let stuck = Blocker::new();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            stuck.clone(),
            options(4, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    t.publish(&Route::ORDER_PLACED, numbered(5)).await.unwrap();
    until("the stuck handler to start", WITHIN, async || {
        stuck.started.load(Ordering::SeqCst) == 1
    })
    .await;
    // Stop gives up waiting after the drain timeout and closes the channel:
    // the unacknowledged message goes back to the queue.
    let stopping = Instant::now();
    sub.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(10));

    let next = Recorder::acking();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            next.clone(),
            options(4, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    until("the redelivery", WITHIN, async || next.count() == 1).await;
    assert_eq!(next.seen()[0].n, 5);
    // The stuck handler finishing late cannot ack on the closed channel:
    // once it has returned its Ack, the message is still the next
    // consumer's (delivered once, acknowledged by it, none left).
    stuck.release();
    until("the stuck handler to return", WITHIN, async || {
        stuck.finished.load(Ordering::SeqCst) == 1
    })
    .await;
    sub.stop().await;
    assert_eq!(next.count(), 1);
    assert_eq!(depth(&t, &config.reserve_queue).await, 0);
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_connection_closes_gives_its_message_to_another() {
    let config = config("crash");
    let doomed = connect(&config).await;
    let survivor = connect(&config).await;
    let stuck = Blocker::new();
    let _sub = doomed
        .subscribe(
            &Route::ORDER_PLACED,
            stuck.clone(),
            options(4, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let other = Recorder::acking();
    survivor
        .publish(&Route::ORDER_PLACED, numbered(8))
        .await
        .unwrap();
    until("the doomed handler to start", WITHIN, async || {
        stuck.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let sub = survivor
        .subscribe(
            &Route::ORDER_PLACED,
            other.clone(),
            options(4, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    // Like a killed process: the connection goes, the ack never comes.
    doomed.close().await;
    until("the redelivery", WITHIN, async || other.count() == 1).await;
    assert_eq!(other.seen()[0].n, 8);
    stuck.release();
    assert!(matches!(
        doomed.publish(&Route::ORDER_PLACED, numbered(1)).await,
        Err(TransportError::Closed)
    ));
    sub.stop().await;
    survivor.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_reports_a_backlog_and_zero_after_draining() {
    let config = config("depth");
    let t = connect(&config).await;
    for n in 0..50 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    assert_eq!(depth(&t, &config.reserve_queue).await, 50);
    let queue = t.queue_for(&Route::ORDER_PLACED, None).unwrap();
    assert_eq!(queue, config.reserve_queue);
    let h = Recorder::acking();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(8, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    until("50 handled", WITHIN, async || h.count() == 50).await;
    until("an empty queue", WITHIN, || async {
        depth(&t, &queue).await == 0
    })
    .await;
    sub.stop().await;
    assert!(matches!(
        t.queue_depth(&format!("{}.nope", config.reserve_queue))
            .await,
        Err(TransportError::UnknownRoute(_))
    ));
    // The transport still works after the broker refused that question.
    assert_eq!(depth(&t, &queue).await, 0);
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_each_get_every_message() {
    let config = config("groups");
    let t = connect(&config).await;
    let notify = Recorder::acking();
    let status = Recorder::acking();
    let failed = Recorder::acking();
    let group = |g: &str| SubscribeOptions {
        group: Some(g.to_owned()),
        ..SubscribeOptions::default()
    };
    let s1 = t
        .subscribe(
            &Route::INVENTORY_RESERVED,
            notify.clone(),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    let s2 = t
        .subscribe(
            &Route::INVENTORY_RESERVED,
            status.clone(),
            group(&config.status_group),
        )
        .await
        .unwrap();
    let s3 = t
        .subscribe(
            &Route::INVENTORY_FAILED,
            failed.clone(),
            group(&config.status_group),
        )
        .await
        .unwrap();
    for n in 0..10 {
        t.publish(&Route::INVENTORY_RESERVED, numbered(n))
            .await
            .unwrap();
    }
    t.publish(&Route::INVENTORY_FAILED, numbered(99))
        .await
        .unwrap();
    until("every group to get every message", WITHIN, async || {
        notify.count() == 10 && status.count() == 10 && failed.count() == 1
    })
    .await;
    for s in [s1, s2, s3] {
        s.stop().await;
    }
    assert_eq!(failed.seen()[0].n, 99);
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_publisher_reconnect_when_the_broker_drops_the_connection() {
    let config = config("reconnect");
    let t = connect(&config).await;
    let h = Recorder::acking();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(8, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    for n in 0..5 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    until("the first five", WITHIN, async || {
        h.per_message().len() == 5
    })
    .await;
    force_close_connection(&t).await;
    // The publisher reconnects on its next publish; the consumer on its own.
    for n in 5..10 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    until("all ten after reconnecting", WITHIN, async || {
        h.per_message().len() == 10
    })
    .await;
    assert!(!sub.is_finished());
    sub.stop().await;
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_publishes_retryably_and_consumers_resume_after_it() {
    let proxy = Outage::start("127.0.0.1:5672");
    let mut config = config("outage");
    config.url = proxy.amqp_url();
    config.connect_timeout = Duration::from_secs(2);
    config.confirm_timeout = Duration::from_secs(2);
    config.publish_attempts = 2;
    let t = connect(&config).await;
    let h = Recorder::acking();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(8, 5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    for n in 0..3 {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    until("the first three", WITHIN, async || {
        h.per_message().len() == 3
    })
    .await;

    proxy.cut();
    let failing = Instant::now();
    let err = t
        .publish(&Route::ORDER_PLACED, numbered(3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Unavailable { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert!(
        failing.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        failing.elapsed()
    );
    // The consumer keeps trying to come back, with backoff.
    until("the consumer to try reconnecting", WITHIN, async || {
        proxy.refused() >= 3
    })
    .await;
    assert!(!sub.is_finished());

    proxy.restore();
    // As an outbox relay would: publish again until the broker takes it.
    for n in 3..6 {
        until("the broker to take a publish again", WITHIN, || async {
            t.publish(&Route::ORDER_PLACED, numbered(n)).await.is_ok()
        })
        .await;
    }
    until("all six after the outage", WITHIN, async || {
        h.per_message().len() == 6
    })
    .await;
    sub.stop().await;
    t.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem() {
    let mut down = RabbitConfig::with_prefix("unused");
    down.url = "amqp://guest:secret@127.0.0.1:1".to_owned();
    let err = RabbitTransport::connect(&down).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TransportError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(text.contains("amqp://guest:***@127.0.0.1:1"), "{text}");
    assert!(!text.contains("secret"), "{text}");

    let config = config("errors");
    let t = connect(&config).await;
    assert!(matches!(
        t.publish(&Route::RESERVE, numbered(1)).await,
        Err(TransportError::UnknownRoute(r)) if r == Route::RESERVE
    ));
    assert!(matches!(
        t.subscribe(
            &Route::NOTIFY,
            Recorder::acking(),
            SubscribeOptions::default()
        )
        .await,
        Err(TransportError::UnknownRoute(_))
    ));
    assert!(matches!(
        t.request(&Route::RESERVE, numbered(1), Duration::from_secs(1))
            .await,
        Err(TransportError::Unsupported { .. })
    ));
    assert!(matches!(
        t.publish(
            &Route::ORDER_PLACED,
            numbered(1).with_header("h".repeat(300), "v")
        )
        .await,
        Err(TransportError::Unsupported { .. })
    ));
    // Headers a frame cannot hold are refused, not sent to close the
    // connection.
    assert!(matches!(
        t.publish(
            &Route::ORDER_PLACED,
            numbered(1).with_key("k".repeat(200 * 1024))
        )
        .await,
        Err(TransportError::Unsupported { .. })
    ));
    t.publish(&Route::ORDER_PLACED, numbered(2)).await.unwrap();
    let caps = t.capabilities();
    assert!(caps.publish && caps.subscribe && !caps.request);
    assert_eq!(t.name(), "rabbitmq");
    t.teardown().await.unwrap();
}

/// Publish-with-confirm and consume rates. Run with
/// `cargo test --release -p campusfood-transport --features rabbitmq --test rabbitmq -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check: run by hand"]
async fn throughput() {
    const TOTAL: usize = 10_000;
    const PUBLISHERS: usize = 256;
    let config = config("throughput");
    let t = connect(&config).await;

    let one_at_a_time = 1_000;
    let start = Instant::now();
    for n in 0..one_at_a_time {
        t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
    }
    let sequential = start.elapsed();

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let t = t.clone();
        tasks.spawn(async move {
            for n in (p..TOTAL).step_by(PUBLISHERS) {
                t.publish(&Route::ORDER_PLACED, numbered(n)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let concurrent = start.elapsed();
    let backlog = depth(&t, &config.reserve_queue).await as usize;
    assert_eq!(backlog, TOTAL + one_at_a_time);

    let h = Recorder::acking();
    let start = Instant::now();
    let sub = t
        .subscribe(
            &Route::ORDER_PLACED,
            h.clone(),
            options(256, 5, Duration::from_secs(1)),
        )
        .await
        .unwrap();
    until(
        "the backlog consumed",
        Duration::from_secs(120),
        async || h.count() == backlog,
    )
    .await;
    let consumed = start.elapsed();
    sub.stop().await;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    eprintln!(
        "publish with confirm, one at a time: {one_at_a_time} in {sequential:?} = {:.0} msg/s",
        rate(one_at_a_time, sequential)
    );
    eprintln!(
        "publish with confirm, {PUBLISHERS} concurrent publishers: {TOTAL} in {concurrent:?} = {:.0} msg/s",
        rate(TOTAL, concurrent)
    );
    eprintln!(
        "consume + ack, prefetch 256: {backlog} in {consumed:?} = {:.0} msg/s",
        rate(backlog, consumed)
    );
    t.teardown().await.unwrap();
}
