//! The behaviour every [`Transport`] must show, as one suite that each
//! transport runs: memory, RabbitMQ and Kafka for publish/subscribe, memory
//! and HTTP for request/reply (and a third party's, the same way).
//!
//! Each check is a `pub async fn` taking a factory that makes a fresh
//! transport and route for it: a [`PubSubFactory`] for publish/subscribe,
//! a [`RequestFactory`] for request/reply. [`pub_sub_suite!`](crate::pub_sub_suite) and
//! [`request_suite!`](crate::request_suite) turn a factory into one `#[tokio::test]` per check.
//! The checks assert what a caller can observe — what is delivered, how
//! often, in what order, with which attempt number, what lands in the dead
//! letters and why — never how a transport does it (Kafka retries in
//! process, RabbitMQ through retry queues, memory on timers).
//!
//! # Running it on a transport of your own
//! ```ignore
//! use campusfood_testkit::conformance::{Fresh, PubSubFactory, ReadDeadLetters};
//!
//! struct Mine;
//!
//! #[async_trait::async_trait]
//! impl PubSubFactory for Mine {
//!     async fn fresh(&self, check: &str) -> Fresh {
//!         let transport = Arc::new(MyTransport::connect(&campusfood_testkit::unique(check)).await
//!             .expect("start my broker with …"));
//!         Fresh::new(transport.clone(), Route::new("my.route"), ReadDeadLetters(transport))
//!     }
//! }
//!
//! campusfood_testkit::pub_sub_suite!(Mine);
//! ```
//! A transport that keeps dead letters behind [`DeadLetters`] passes
//! [`ReadDeadLetters`]; one that keeps them elsewhere (a topic, a table)
//! implements [`DeadLetterView`] to read them. A check names what did not
//! hold, and waits with deadlines ([`until`]), never fixed sleeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::bounded::MAX_REASON_BYTES;
use campusfood_core::transport::{
    Capabilities, DeadLetter, DeadLetters, Delivery, Disposition, Handler, Message, Reply,
    RequestHandler, Route, SubscribeOptions, Transport, TransportError, headers,
};
use tokio::sync::Semaphore;

use crate::until;

/// How long anything a check waits for may take (a broker's rebalance or
/// drain included).
pub const WITHIN: Duration = Duration::from_secs(60);

/// The retry delay the checks subscribe with.
pub const RETRY_DELAY: Duration = Duration::from_millis(300);

/// What one check gets to work on: a transport and a route nobody else
/// uses, and where to read that route's dead letters.
pub struct Fresh {
    /// The transport under test.
    pub transport: Arc<dyn Transport>,
    /// A publish/subscribe route of it, used by this check only, whose
    /// default group exists before anyone subscribes (a durable queue, a
    /// topic read from the earliest offset).
    pub route: Route,
    /// Where the route's dead letters can be read.
    pub dead_letters: Box<dyn DeadLetterView>,
    /// Kept until the check ends, then dropped (clean-up in `Drop`).
    pub guard: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh")
            .field("transport", &self.transport)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Fresh {
    /// A fresh `transport` and `route`, dead letters read by `dead_letters`.
    pub fn new(
        transport: Arc<dyn Transport>,
        route: Route,
        dead_letters: impl DeadLetterView + 'static,
    ) -> Self {
        Self {
            transport,
            route,
            dead_letters: Box::new(dead_letters),
            guard: None,
        }
    }

    /// Keeps `guard` until the check ends.
    pub fn keeping(mut self, guard: impl Send + Sync + 'static) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

/// Makes what each publish/subscribe check needs.
#[async_trait]
pub trait PubSubFactory: Send + Sync {
    /// A transport and route for the check named `check`, shared with no
    /// other check, test or run. Panics (saying how to start it) when the
    /// broker is not running: a missing broker fails, never skips.
    async fn fresh(&self, check: &str) -> Fresh;
}

/// Makes what each request/reply check needs.
#[async_trait]
pub trait RequestFactory: Send + Sync {
    /// A transport whose requests on the returned route reach `handler`,
    /// and anything to keep alive meanwhile (a server).
    async fn serving(
        &self,
        check: &str,
        handler: Arc<dyn RequestHandler>,
    ) -> (Arc<dyn Transport>, Route, Box<dyn Send + Sync>);
}

/// Reads the dead letters of a route.
#[async_trait]
pub trait DeadLetterView: Send + Sync {
    /// The dead letters of `route` so far, oldest first.
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter>;
}

/// A [`DeadLetterView`] for a transport with the [`DeadLetters`] extension.
#[derive(Debug)]
pub struct ReadDeadLetters<T>(pub Arc<T>);

#[async_trait]
impl<T: DeadLetters> DeadLetterView for ReadDeadLetters<T> {
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter> {
        self.0.dead_letters(route, 1000).await.unwrap()
    }
}

// ---------------------------------------------------------------------------
// helpers

/// One delivery as a handler saw it.
#[derive(Debug, Clone)]
struct Seen {
    delivery: Delivery,
    at: Instant,
}

/// Records every delivery and answers what its policy says.
struct Recorder<P> {
    log: Mutex<Vec<Seen>>,
    policy: P,
}

/// A recorder answering `policy`.
fn recorder<P>(policy: P) -> Arc<Recorder<P>>
where
    P: Fn(&Delivery) -> Disposition + Send + Sync + 'static,
{
    Arc::new(Recorder {
        log: Mutex::default(),
        policy,
    })
}

/// The policy of a recorder that acks everything.
fn ack(_: &Delivery) -> Disposition {
    Disposition::Ack
}

impl<P> Recorder<P> {
    /// Every delivery so far, in the order the handler got them.
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The deliveries of the message whose body is `body`.
    fn of(&self, body: &str) -> Vec<Seen> {
        let mut seen = self.seen();
        seen.retain(|s| s.delivery.message.body == body.as_bytes());
        seen
    }
}

#[async_trait]
impl<P> Handler for Recorder<P>
where
    P: Fn(&Delivery) -> Disposition + Send + Sync + 'static,
{
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let disposition = (self.policy)(&delivery);
        self.log.lock().unwrap().push(Seen {
            delivery,
            at: Instant::now(),
        });
        disposition
    }
}

/// A message whose body is `body`, keyed `key`.
fn text(body: &str, key: &str) -> Message {
    Message {
        key: Some(key.to_owned()),
        headers: BTreeMap::new(),
        body: body.to_owned().into(),
    }
}

/// One delivery at a time, the suite's retry delay and `max_attempts`.
fn one_at_a_time(max_attempts: u32) -> SubscribeOptions {
    SubscribeOptions {
        prefetch: 1,
        max_attempts,
        retry_delay: RETRY_DELAY,
        group: None,
    }
}

async fn publish(fresh: &Fresh, message: Message) {
    fresh
        .transport
        .publish(&fresh.route, message)
        .await
        .unwrap_or_else(|e| panic!("publish on {}: {e}", fresh.route));
}

async fn subscribe(
    fresh: &Fresh,
    handler: Arc<dyn Handler>,
    options: SubscribeOptions,
) -> campusfood_core::transport::Subscription {
    fresh
        .transport
        .subscribe(&fresh.route, handler, options)
        .await
        .unwrap_or_else(|e| panic!("subscribe to {}: {e}", fresh.route))
}

async fn dead_letter_of(fresh: &Fresh, body: &str) -> DeadLetter {
    let mut found = None;
    until(&format!("{body} in the dead letters"), WITHIN, async || {
        found = fresh
            .dead_letters
            .dead_letters(&fresh.route)
            .await
            .into_iter()
            .find(|d| d.message.body == body.as_bytes());
        found.is_some()
    })
    .await;
    found.unwrap()
}

// ---------------------------------------------------------------------------
// publish/subscribe checks

/// Once `publish` returns the message is kept: a subscriber that starts
/// only afterwards gets it.
pub async fn publish_is_durable_before_anyone_subscribes(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("durable").await;
    publish(&fresh, text("early", "ORD-1")).await;
    let recorder = recorder(ack);
    let sub = subscribe(&fresh, recorder.clone(), one_at_a_time(3)).await;
    until("the early message", WITHIN, async || {
        !recorder.of("early").is_empty()
    })
    .await;
    sub.stop().await;
}

/// An acked message is never delivered again: not to the same
/// subscription (a later message arrives after it, and it does not
/// come back), nor to the next subscription of the group.
pub async fn an_acked_message_is_not_delivered_again(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("ack").await;
    let first = recorder(ack);
    let sub = subscribe(&fresh, first.clone(), one_at_a_time(3)).await;
    publish(&fresh, text("acked", "ORD-1")).await;
    publish(&fresh, text("marker-1", "ORD-1")).await;
    until("the first marker", WITHIN, async || {
        !first.of("marker-1").is_empty()
    })
    .await;
    sub.stop().await;
    let second = recorder(ack);
    let sub = subscribe(&fresh, second.clone(), one_at_a_time(3)).await;
    publish(&fresh, text("marker-2", "ORD-1")).await;
    until("the second marker", WITHIN, async || {
        !second.of("marker-2").is_empty()
    })
    .await;
    sub.stop().await;
    assert_eq!(first.of("acked").len(), 1, "acked once, delivered once");
    let again: Vec<_> = second
        .seen()
        .into_iter()
        .map(|s| String::from_utf8_lossy(&s.delivery.message.body).into_owned())
        .collect();
    assert_eq!(
        again,
        ["marker-2"],
        "the next subscription got acked messages"
    );
}

/// `Retry` delivers the message again, as attempt 2, no sooner than the
/// retry delay.
pub async fn retry_redelivers_after_the_delay(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("retry").await;
    let recorder = recorder(|d| match d.attempt {
        1 => Disposition::Retry {
            reason: "not yet".to_owned(),
        },
        _ => Disposition::Ack,
    });
    let sub = subscribe(&fresh, recorder.clone(), one_at_a_time(5)).await;
    publish(&fresh, text("later", "ORD-1")).await;
    until("the second attempt", WITHIN, async || {
        recorder.of("later").len() >= 2
    })
    .await;
    sub.stop().await;
    let seen = recorder.of("later");
    let attempts: Vec<u32> = seen.iter().map(|s| s.delivery.attempt).collect();
    assert_eq!(attempts, [1, 2], "attempts of a message retried once");
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= RETRY_DELAY,
        "redelivered after {waited:?}, before the retry delay {RETRY_DELAY:?}"
    );
}

/// A message that keeps failing is delivered `max_attempts` times, then
/// dead-lettered with a reason that says so; `DeadLetter` sets a message
/// aside at once. Reasons are bounded ([`MAX_REASON_BYTES`]) however long
/// the handler's, and the message is kept whole.
pub async fn max_attempts_then_dead_letter_with_a_bounded_reason(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("dead").await;
    let huge = "x".repeat(100 * 1024);
    let recorder = recorder(move |d| {
        if d.message.body == "poison".as_bytes() {
            Disposition::DeadLetter {
                reason: format!("poison: {huge}"),
            }
        } else {
            Disposition::Retry {
                reason: format!("always failing: {huge}"),
            }
        }
    });
    let sub = subscribe(&fresh, recorder.clone(), one_at_a_time(3)).await;
    publish(&fresh, text("failing", "ORD-1").with_header("h", "v")).await;
    publish(&fresh, text("poison", "ORD-2")).await;
    let failing = dead_letter_of(&fresh, "failing").await;
    let poison = dead_letter_of(&fresh, "poison").await;
    sub.stop().await;

    let attempts: Vec<u32> = recorder
        .of("failing")
        .iter()
        .map(|s| s.delivery.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3], "attempts before giving up");
    assert_eq!(failing.attempts, 3);
    assert!(
        failing
            .reason
            .starts_with("gave up after 3 attempts: always failing"),
        "{:.80}",
        failing.reason
    );
    assert_eq!(failing.message.key.as_deref(), Some("ORD-1"));
    assert_eq!(
        failing.message.headers.get("h").map(String::as_str),
        Some("v")
    );
    assert_eq!(
        recorder.of("poison").len(),
        1,
        "a poison message is not retried"
    );
    assert_eq!(poison.attempts, 1);
    assert!(
        poison.reason.starts_with("poison: x"),
        "{:.80}",
        poison.reason
    );
    for d in [&failing, &poison] {
        assert!(
            d.reason.len() <= MAX_REASON_BYTES,
            "a reason of {} bytes",
            d.reason.len()
        );
    }
}

/// The key, every header and the body arrive as published (a transport
/// may add headers of its own, never change or drop the sender's).
pub async fn key_headers_and_body_are_preserved(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("fidelity").await;
    let sent =
        Message::json(&serde_json::json!({"item": "crêpe ☕", "qty": 2, "nested": {"a": [1, 2]}}))
            .unwrap()
            .with_key("ORD-0123456789AB")
            .with_header(headers::REQUEST_ID, "req-1")
            .with_header("x-custom", "ünïcode value with spaces")
            .with_header("empty", "");
    let recorder = recorder(ack);
    let sub = subscribe(&fresh, recorder.clone(), one_at_a_time(3)).await;
    publish(&fresh, sent.clone()).await;
    until("the message", WITHIN, async || !recorder.seen().is_empty()).await;
    sub.stop().await;
    let got = &recorder.seen()[0].delivery;
    assert_eq!(got.attempt, 1);
    assert_eq!(got.message.key, sent.key);
    assert_eq!(got.message.body, sent.body);
    for (name, value) in &sent.headers {
        assert_eq!(
            got.message.headers.get(name),
            Some(value),
            "header {name} of {:?}",
            got.message.headers
        );
    }
}

/// Messages with the same key reach a one-at-a-time subscriber in the
/// order they were published.
pub async fn one_key_keeps_its_order(factory: &dyn PubSubFactory) {
    const KEYS: usize = 3;
    const EACH: usize = 20;
    let fresh = factory.fresh("order").await;
    let recorder = recorder(ack);
    let sub = subscribe(&fresh, recorder.clone(), one_at_a_time(3)).await;
    for n in 0..EACH {
        for k in 0..KEYS {
            publish(&fresh, text(&format!("{k}:{n}"), &format!("ORD-{k}"))).await;
        }
    }
    until("every message", WITHIN, async || {
        recorder.seen().len() >= KEYS * EACH
    })
    .await;
    sub.stop().await;
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for s in recorder.seen() {
        let body = String::from_utf8_lossy(&s.delivery.message.body).into_owned();
        let (k, n) = body.split_once(':').unwrap();
        per_key
            .entry(k.to_owned())
            .or_default()
            .push(n.parse().unwrap());
    }
    let published: Vec<usize> = (0..EACH).collect();
    for (key, got) in per_key {
        assert_eq!(got, published, "the order of key {key}");
    }
}

/// Stuck until the check ends: the first delivery of each message takes
/// forever, like a consumer that died holding it.
struct Stuck {
    started: Semaphore,
    release: Semaphore,
}

#[async_trait]
impl Handler for Stuck {
    async fn handle(&self, _delivery: Delivery) -> Disposition {
        self.started.add_permits(1);
        // Closed when the check ends: then the handler returns.
        let _ = self.release.acquire().await;
        Disposition::Retry {
            reason: "released".to_owned(),
        }
    }
}

/// A message whose consumer goes away while handling it (its subscription
/// dropped with the handler stuck) is not lost: the next subscription of
/// the group gets it again.
pub async fn redelivered_after_a_consumer_dies_mid_message(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("redeliver").await;
    let stuck = Arc::new(Stuck {
        started: Semaphore::new(0),
        release: Semaphore::new(0),
    });
    let dying = subscribe(&fresh, stuck.clone(), one_at_a_time(3)).await;
    publish(&fresh, text("held", "ORD-1")).await;
    tokio::time::timeout(WITHIN, stuck.started.acquire())
        .await
        .expect("the stuck handler got the message")
        .unwrap()
        .forget();
    drop(dying);
    let next = recorder(ack);
    let sub = subscribe(&fresh, next.clone(), one_at_a_time(3)).await;
    until("the message again", WITHIN, async || {
        !next.of("held").is_empty()
    })
    .await;
    stuck.release.close();
    sub.stop().await;
}

/// What [`Transport::capabilities`] says matches what the transport does:
/// an operation it lacks answers [`TransportError::Unsupported`], one it
/// has never does. `route` is a route of the transport.
pub async fn capabilities_are_honest(transport: &dyn Transport, route: &Route) {
    let Capabilities {
        request,
        publish,
        subscribe,
        // Needs two routes that share a destination: a transport's own tests.
        distinct_routes: _,
    } = transport.capabilities();
    let unsupported =
        |r: &Result<(), TransportError>| matches!(r, Err(TransportError::Unsupported { .. }));
    let name = transport.name();

    let asked = transport
        .request(route, text("{}", "ORD-1"), Duration::from_secs(1))
        .await
        .map(drop);
    assert_eq!(
        !request,
        unsupported(&asked),
        "{name}: request says {request}, got {asked:?}"
    );
    if !publish {
        let published = transport.publish(route, text("{}", "ORD-1")).await;
        assert!(
            unsupported(&published),
            "{name}: publish says false, got {published:?}"
        );
    }
    let subscribed = transport
        .subscribe(route, recorder(ack), SubscribeOptions::default())
        .await;
    match subscribed {
        Ok(sub) => {
            assert!(subscribe, "{name}: subscribe says false, yet it subscribed");
            sub.stop().await;
        }
        Err(e) => assert_eq!(
            !subscribe,
            matches!(e, TransportError::Unsupported { .. }),
            "{name}: subscribe says {subscribe}, got {e}"
        ),
    }
}

/// [`capabilities_are_honest`] on a fresh publish/subscribe transport
/// (publish is checked by the other checks).
pub async fn pub_sub_capabilities_are_honest(factory: &dyn PubSubFactory) {
    let fresh = factory.fresh("capabilities").await;
    let caps = fresh.transport.capabilities();
    assert!(caps.publish && caps.subscribe, "{caps:?}");
    capabilities_are_honest(&*fresh.transport, &fresh.route).await;
}

// ---------------------------------------------------------------------------
// request/reply checks

/// Answers with the status the request's JSON body names in `status` (200
/// when none), its body and its request id; sleeps when the body is
/// `"slow"`. Only the body and the request id travel over every transport.
struct Echo;

#[async_trait]
impl RequestHandler for Echo {
    async fn call(&self, request: Message) -> Reply {
        if request.body == "\"slow\"".as_bytes() {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let reply = serde_json::json!({
            "body": String::from_utf8_lossy(&request.body),
            "request_id": request.headers.get(headers::REQUEST_ID),
        });
        let status = request
            .decode::<serde_json::Value>()
            .ok()
            .and_then(|v| v["status"].as_u64())
            .and_then(|s| u16::try_from(s).ok());
        Reply::json(status.unwrap_or(200), &reply).unwrap()
    }
}

/// A request reaches the handler with its body and request id, and the
/// reply comes back with its status and body — errors (4xx, 5xx) as
/// replies, not transport errors.
pub async fn a_request_gets_its_reply(factory: &dyn RequestFactory) {
    let (transport, route, _server) = factory.serving("reply", Arc::new(Echo)).await;
    for status in [200u16, 409, 503] {
        let request = Message::json(&serde_json::json!({"status": status}))
            .unwrap()
            .with_header(headers::REQUEST_ID, format!("req-{status}"));
        let reply = transport
            .request(&route, request, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("request answered {status}: {e}"));
        assert_eq!(reply.status, status);
        let body: serde_json::Value = reply.decode().unwrap();
        assert_eq!(body["body"], format!("{{\"status\":{status}}}"));
        assert_eq!(body["request_id"], format!("req-{status}"));
    }
}

/// A request not answered in time is [`TransportError::Timeout`], which
/// is retryable.
pub async fn a_slow_reply_times_out(factory: &dyn RequestFactory) {
    let (transport, route, _server) = factory.serving("timeout", Arc::new(Echo)).await;
    let started = Instant::now();
    let e = transport
        .request(
            &route,
            Message::json("slow").unwrap(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
    assert!(e.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// [`capabilities_are_honest`] on a request/reply transport.
pub async fn request_capabilities_are_honest(factory: &dyn RequestFactory) {
    let (transport, route, _server) = factory.serving("capabilities", Arc::new(Echo)).await;
    assert!(transport.capabilities().request);
    capabilities_are_honest(&*transport, &route).await;
}

/// One `#[tokio::test]` per publish/subscribe check, each on what
/// `$factory` (an expression of a [`PubSubFactory`] type, evaluated per
/// test) makes. Put it in a module of its own: the tests take the checks'
/// names.
#[macro_export]
macro_rules! pub_sub_suite {
    ($factory:expr) => {
        $crate::pub_sub_suite!(@tests $factory;
            publish_is_durable_before_anyone_subscribes,
            an_acked_message_is_not_delivered_again,
            retry_redelivers_after_the_delay,
            max_attempts_then_dead_letter_with_a_bounded_reason,
            key_headers_and_body_are_preserved,
            one_key_keeps_its_order,
            redelivered_after_a_consumer_dies_mid_message,
            pub_sub_capabilities_are_honest,
        );
    };
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::init_logging();
                $crate::conformance::$check(&$factory).await;
            }
        )*
    };
}

/// One `#[tokio::test]` per request/reply check, each on `$factory` (an
/// expression of a [`RequestFactory`] type). Put it in a module of its own.
#[macro_export]
macro_rules! request_suite {
    ($factory:expr) => {
        $crate::pub_sub_suite!(@tests $factory;
            a_request_gets_its_reply,
            a_slow_reply_times_out,
            request_capabilities_are_honest,
        );
    };
}
