//! The [`Transport`] trait: the single abstraction services are written
//! against, whether the bytes travel as HTTP requests, RabbitMQ messages or
//! Kafka records.
//!
//! Three ways of talking, one trait:
//! - **request/reply** ([`Transport::request`]): send and wait for the
//!   answer (sync REST). The answer carries an HTTP-style status so a
//!   caller can tell success, the caller's fault and an outage apart.
//! - **publish** ([`Transport::publish`]): hand a message over for later
//!   delivery; returns once the transport has durably accepted it (the
//!   broker confirmed it).
//! - **subscribe** ([`Transport::subscribe`]): have a [`Handler`] called for
//!   each delivery. The handler answers a [`Disposition`] — done, retry
//!   later, or dead-letter — and the transport acknowledges, redelivers
//!   after a delay up to [`SubscribeOptions::max_attempts`], or moves the
//!   message aside with the reason.
//!
//! A transport that cannot do one of these answers
//! [`TransportError::Unsupported`]; [`Transport::capabilities`] says which
//! it can, so a service can refuse a wiring at startup rather than at the
//! first message. Powers only brokers have (inspecting and replaying dead
//! letters, offsets and replay) are extension traits such as
//! [`DeadLetters`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::codec::{self, CodecError};
use crate::task::BackgroundTask;
pub use crate::task::StopSignal;

/// A logical destination: what a message is *for*, not where it goes.
/// Each transport maps routes to its own names (a URL path, an exchange and
/// routing key, a topic) from [`Config`](crate::Config).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route(Cow<'static, str>);

impl Route {
    /// Inventory: reserve stock for an order (request/reply).
    pub const RESERVE: Route = Route::from_static("inventory.reserve");
    /// Inventory: release an order's reservation (request/reply).
    pub const RELEASE: Route = Route::from_static("inventory.release");
    /// Notification: notify a customer (request/reply).
    pub const NOTIFY: Route = Route::from_static("notification.send");
    /// An order was placed (event).
    pub const ORDER_PLACED: Route = Route::from_static("order.placed");
    /// Stock was reserved for an order (event).
    pub const INVENTORY_RESERVED: Route = Route::from_static("inventory.reserved");
    /// Stock could not be reserved for an order (event).
    pub const INVENTORY_FAILED: Route = Route::from_static("inventory.failed");

    /// The customer was notified of an order (event).
    pub const ORDER_NOTIFIED: Route = Route::from_static("order.notified");

    /// A route with a static name.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// A route with an owned name, for routes an embedding application adds.
    pub fn new(name: impl Into<String>) -> Self {
        Self(Cow::Owned(name.into()))
    }

    /// The route's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Route({})", self.0)
    }
}

/// Well-known header names.
pub mod headers {
    /// The request id, carried across every hop.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Why a message was dead-lettered.
    pub const DEATH_REASON: &str = "x-death-reason";
    /// How many times delivery was attempted.
    pub const ATTEMPTS: &str = "x-attempts";
    /// On an event that answers a delivery: which attempt of that delivery
    /// produced it (`inventory.reserved` after inventory's third try of
    /// `order.placed` says `3`). Read by the order service's timeline.
    pub const CAUSE_ATTEMPT: &str = "x-cause-attempt";
    /// The W3C trace context: `00-<trace id>-<parent span id>-<flags>`
    /// ([`telemetry`](crate::telemetry)).
    pub const TRACEPARENT: &str = "traceparent";
    /// The W3C trace state that goes with [`TRACEPARENT`].
    pub const TRACESTATE: &str = "tracestate";
}

/// A message: an optional key (the order id, for partitioning and
/// idempotency), string headers, and a JSON body.
///
/// ```
/// use campusfood_core::transport::{Message, headers};
///
/// let message = Message::json(&serde_json::json!({"item": "burger", "qty": 2}))?
///     .with_key("order-1")
///     .with_header(headers::REQUEST_ID, "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
/// let body: serde_json::Value = message.decode()?;
/// assert_eq!(body["qty"], 2);
/// assert_eq!(message.key.as_deref(), Some("order-1"));
/// assert!(message.request_id().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Partitioning / idempotency key, usually the order id.
    pub key: Option<String>,
    /// Headers, by name.
    pub headers: BTreeMap<String, String>,
    /// The encoded body ([`codec`]).
    pub body: Bytes,
}

impl Message {
    /// A message whose body is `value` encoded as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, CodecError> {
        Ok(Self {
            key: None,
            headers: BTreeMap::new(),
            body: codec::encode(value)?,
        })
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Decodes the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        codec::decode(&self.body)
    }

    /// The request id the sender passed in [`headers::REQUEST_ID`], when it
    /// is a valid one.
    pub fn request_id(&self) -> Option<crate::RequestId> {
        self.headers
            .get(headers::REQUEST_ID)
            .and_then(|r| crate::RequestId::parse(r).ok())
    }
}

/// The answer to a request: an HTTP-style status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP-style status: 2xx success, 4xx the caller's fault, 5xx ours.
    pub status: u16,
    /// The encoded body.
    pub body: Bytes,
}

impl Reply {
    /// A reply of `status` whose body is `value` encoded as JSON.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, CodecError> {
        Ok(Self {
            status,
            body: codec::encode(value)?,
        })
    }

    /// Decodes the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        codec::decode(&self.body)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One delivery of a message to a subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

/// What a [`Handler`] wants done with a delivery. Deliberately exhaustive
/// (unlike [`TransportError`]): a transport has to settle every
/// disposition, so a new one should fail its build, not fall into a
/// fallback arm that settles it wrongly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (its effects are durable): acknowledge, never deliver again.
    Ack,
    /// Failed for a reason that may pass: deliver again after the retry
    /// delay, until [`SubscribeOptions::max_attempts`], then dead-letter.
    Retry {
        /// Why, for logs and the dead-letter headers.
        reason: String,
    },
    /// Can never succeed (a poison message): move it aside now.
    DeadLetter {
        /// Why, for logs and the dead-letter headers.
        reason: String,
    },
}

/// Serves requests on a route (the server side of request/reply).
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers one request.
    async fn call(&self, request: Message) -> Reply;
}

/// Consumes deliveries on a route (the consumer side of publish/subscribe).
///
/// A handler must be idempotent: every transport delivers at least once.
/// It says what to do with each delivery; the transport does it.
///
/// ```
/// use async_trait::async_trait;
/// use campusfood_core::transport::{Delivery, Disposition, Handler, Message};
///
/// /// Counts burgers; anything that is not a number is poison.
/// struct Burgers;
///
/// #[async_trait]
/// impl Handler for Burgers {
///     async fn handle(&self, delivery: Delivery) -> Disposition {
///         match delivery.message.decode::<u32>() {
///             Ok(_) => Disposition::Ack,
///             Err(e) => Disposition::DeadLetter { reason: e.to_string() },
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let delivery = |message| Delivery { message, attempt: 1 };
/// assert_eq!(Burgers.handle(delivery(Message::json(&3)?)).await, Disposition::Ack);
/// let poison = Burgers.handle(delivery(Message::json("three")?)).await;
/// assert!(matches!(poison, Disposition::DeadLetter { .. }));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery and says what to do with it.
    async fn handle(&self, delivery: Delivery) -> Disposition;
}

/// How a subscription consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// How many deliveries may be in flight (unacknowledged) at once.
    pub prefetch: u16,
    /// Attempts before a message that keeps failing is dead-lettered.
    pub max_attempts: u32,
    /// How long to wait before redelivering a failed message.
    pub retry_delay: Duration,
    /// The consumer group / queue that competing consumers share, where the
    /// transport has such a notion; `None` uses the route's default.
    pub group: Option<String>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            prefetch: 64,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            group: None,
        }
    }
}

/// What a transport can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Transport::request`] works.
    pub request: bool,
    /// [`Transport::publish`] works.
    pub publish: bool,
    /// [`Transport::subscribe`] works.
    pub subscribe: bool,
    /// A subscriber to a route gets only what was published on that route.
    /// `false` when routes share a destination (Kafka's one inventory topic
    /// for [`Route::INVENTORY_RESERVED`] and [`Route::INVENTORY_FAILED`]),
    /// so that a subscriber to one sees the other's messages too: a flow
    /// that tells events apart by route cannot run there.
    pub distinct_routes: bool,
}

/// Why a transport call failed, grouped by what the caller should do.
/// Non-exhaustive: new kinds of failure may be added without a breaking
/// release, so matches keep a fallback arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer within the deadline. Retrying may help; the request may or
    /// may not have been processed (use idempotent operations).
    #[error("{route}: no answer within {after:?}")]
    Timeout {
        /// The route called.
        route: Route,
        /// The deadline that passed.
        after: Duration,
    },
    /// The peer or broker cannot be reached or refused the message.
    /// Retrying later may help.
    #[error("{route}: unavailable: {reason}")]
    Unavailable {
        /// The route called.
        route: Route,
        /// What went wrong.
        reason: String,
    },
    /// The route is not known to this transport. A wiring error; give up.
    #[error("no destination for route {0}")]
    UnknownRoute(Route),
    /// This transport cannot do this. A wiring error; give up.
    #[error("the {transport} transport does not support {operation}")]
    Unsupported {
        /// The transport.
        transport: &'static str,
        /// The operation asked for.
        operation: &'static str,
    },
    /// A message could not be encoded or decoded. Give up.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The transport was shut down.
    #[error("transport closed")]
    Closed,
}

impl TransportError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }
}

/// The single abstraction services are written against. See the
/// [module docs](self).
///
/// A transport of your own implements the three calls, answering
/// [`TransportError::Unsupported`] for what it cannot do; powers only some
/// transports have are extension traits ([`DeadLetters`], [`Backlog`]).
/// To change part of what passes through another transport, implement
/// [`ForwardTransport`] instead. Services take any of them as
/// `Arc<dyn Transport>`:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// use async_trait::async_trait;
/// use campusfood_core::transport::{
///     Capabilities, Handler, Message, Reply, Route, SubscribeOptions, Subscription, Transport,
///     TransportError,
/// };
///
/// /// Keeps what is published: publish only.
/// #[derive(Debug, Default)]
/// struct Journal(Mutex<Vec<(Route, Message)>>);
///
/// #[async_trait]
/// impl Transport for Journal {
///     fn name(&self) -> &'static str {
///         "journal"
///     }
///     fn capabilities(&self) -> Capabilities {
///         Capabilities { request: false, publish: true, subscribe: false, distinct_routes: true }
///     }
///     async fn request(&self, _: &Route, _: Message, _: Duration) -> Result<Reply, TransportError> {
///         Err(TransportError::Unsupported { transport: "journal", operation: "request" })
///     }
///     async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
///         self.0.lock().map_err(|_| TransportError::Closed)?.push((route.clone(), message));
///         Ok(())
///     }
///     async fn subscribe(
///         &self,
///         _: &Route,
///         _: Arc<dyn Handler>,
///         _: SubscribeOptions,
///     ) -> Result<Subscription, TransportError> {
///         Err(TransportError::Unsupported { transport: "journal", operation: "subscribe" })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let journal = Arc::new(Journal::default());
/// let transport: Arc<dyn Transport> = journal.clone();
/// transport.publish(&Route::ORDER_PLACED, Message::json("hello")?).await?;
/// assert_eq!(journal.0.lock().map_err(|_| "poisoned")?.len(), 1);
/// assert!(!transport.capabilities().subscribe);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// A short name: `memory`, `http`, `rabbitmq`, `kafka`.
    fn name(&self) -> &'static str;

    /// What this transport can do.
    fn capabilities(&self) -> Capabilities;

    /// Sends `request` to `route` and waits at most `timeout` for the reply.
    async fn request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError>;

    /// Hands `message` over for delivery to `route`'s subscribers; returns
    /// once the transport has durably accepted it.
    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError>;

    /// Calls `handler` for each message delivered on `route` until the
    /// returned [`Subscription`] is stopped or dropped.
    async fn subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError>;

    /// This transport's [`DeadLetters`], when it keeps them (so a service
    /// holding an `Arc<dyn Transport>` can read them); `None` by default.
    /// A transport implementing [`DeadLetters`] answers `Some(self)`.
    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        None
    }
}

/// A transport wrapping another and changing only part of what passes
/// through (counting, recording, failing on purpose). Implement
/// [`inner`](Self::inner) and the `forward_*` methods to change; the others
/// pass straight through, and [`Transport`] comes with it.
#[async_trait]
pub trait ForwardTransport: Send + Sync + fmt::Debug + 'static {
    /// The transport wrapped.
    fn inner(&self) -> &dyn Transport;

    /// [`Transport::name`]; the inner transport's unless overridden.
    fn forward_name(&self) -> &'static str {
        self.inner().name()
    }

    /// [`Transport::request`]; passed through unless overridden.
    async fn forward_request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.inner().request(route, request, timeout).await
    }

    /// [`Transport::publish`]; passed through unless overridden.
    async fn forward_publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        self.inner().publish(route, message).await
    }

    /// [`Transport::subscribe`]; passed through unless overridden.
    async fn forward_subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        self.inner().subscribe(route, handler, options).await
    }
}

#[async_trait]
impl<T: ForwardTransport> Transport for T {
    fn name(&self) -> &'static str {
        self.forward_name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    async fn request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.forward_request(route, request, timeout).await
    }

    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        self.forward_publish(route, message).await
    }

    async fn subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        self.forward_subscribe(route, handler, options).await
    }

    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        self.inner().as_dead_letters()
    }
}

/// A dead-lettered message, with why it was set aside.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The transport's id for it (to show or replay it).
    pub id: String,
    /// The route it was on.
    pub route: Route,
    /// Why it was set aside.
    pub reason: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// The message itself.
    pub message: Message,
}

/// Extension: transports that keep dead letters for inspection and replay.
#[async_trait]
pub trait DeadLetters: Transport {
    /// The dead letters of `route`, oldest first, at most `limit`.
    async fn dead_letters(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError>;

    /// Puts the dead letter `id` of `route` back on its route for another
    /// round of attempts. Returns whether such a dead letter existed.
    async fn replay(&self, route: &Route, id: &str) -> Result<bool, TransportError>;
}

/// Extension: transports that can say how many messages wait on a route
/// for its default consumer (a queue's depth; a consumer group's lag).
#[async_trait]
pub trait Backlog: Transport {
    /// Messages of `route` waiting to be consumed.
    async fn backlog(&self, route: &Route) -> Result<u64, TransportError>;
}

/// A running consumer. Stop it with [`Subscription::stop`], which waits for
/// in-flight deliveries to finish; dropping it asks it to stop without
/// waiting.
#[derive(Debug)]
#[must_use = "dropping a Subscription stops the consumer"]
pub struct Subscription(BackgroundTask);

impl Subscription {
    /// Runs the consumer loop `run` on a task, handing it its stop signal.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self(BackgroundTask::spawn(run))
    }

    /// Asks the consumer to stop and waits until it has drained.
    pub async fn stop(self) {
        if let Err(e) = self.0.stop().await {
            tracing::warn!(error = %e, "consumer task ended abnormally");
        }
    }

    /// Whether the consumer loop has ended (stopped, or its connection was
    /// lost for good).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}
