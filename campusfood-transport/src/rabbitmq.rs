//! Publish/subscribe over RabbitMQ (AMQP 0-9-1, with the `amqprs` client).
//!
//! # Topology
//! Declared idempotently at connect (and again after every reconnect),
//! every name taken from [`RabbitConfig`]:
//!
//! | what | declared as |
//! |---|---|
//! | exchange `orders` | direct, durable |
//! | queue `orders.reserve` | durable, `x-dead-letter-exchange: orders.dlx`, bound to `orders`/`order.placed` |
//! | exchange `orders.dlx` → queue `orders.dlq` | direct, durable, bound with `order.placed` (and `orders.reserve`, see below) |
//! | exchange `inventory` | direct, durable; keys `inventory.reserved`, `inventory.failed` |
//! | queue `inventory.notify` | durable, bound to `inventory`/`inventory.reserved` |
//! | queues `orders.status.inventory.reserved`, `orders.status.inventory.failed` | durable, bound to `inventory` with their key: the order service's status group ([`RabbitConfig::status_group`]) |
//! | queue `orders.status.order.notified` | durable, bound to `orders`/`order.notified` (not in the original contract: notification tells the order service) |
//!
//! A subscription adds, for the queue it consumes, a retry queue
//! `<queue>.retry` and (but for `orders.reserve`, whose dead letters go to
//! `orders.dlq`) a dead-letter queue `<queue>.dlq` bound to `orders.dlx`.
//!
//! # Routes
//! | route | publish to | subscribe (no group) from |
//! |---|---|---|
//! | [`Route::ORDER_PLACED`] | `orders` / `order.placed` | `orders.reserve` |
//! | [`Route::INVENTORY_RESERVED`] | `inventory` / `inventory.reserved` | `inventory.notify` |
//! | [`Route::INVENTORY_FAILED`] | `inventory` / `inventory.failed` | `orders.status.inventory.failed` |
//! | [`Route::ORDER_NOTIFIED`] | `orders` / `order.notified` | `orders.status.order.notified` |
//!
//! | any other (an application's, e.g. `kitchen.ticket`) | `orders` / the route's name | `orders.<route's name>`, declared by the first subscription |
//!
//! The request/reply routes ([`Route::RESERVE`], [`Route::RELEASE`],
//! [`Route::NOTIFY`]) and names longer than AMQP allows are
//! [`TransportError::UnknownRoute`]. Messages are `mandatory`: a publish to
//! an application's route that no queue is bound to yet comes back
//! unroutable ([`TransportError::Unavailable`]), so subscribe before
//! publishing. Request/reply is [`TransportError::Unsupported`]. A subscription with
//! [`SubscribeOptions::group`] `g` consumes its own durable queue
//! `g.<routing key>`: members of a group compete, each group gets every
//! message (as in the memory transport). The order service follows
//! inventory outcomes and notifications with group
//! [`RabbitConfig::status_group`]; it must name that group at least for
//! `inventory.reserved`, whose default queue is notification's.
//!
//! # Delivery semantics: at least once
//! - **publish** returns once the broker has confirmed the message
//!   (publisher confirms; persistent, `content_type: application/json`,
//!   unique `message_id`, key in the [`KEY_HEADER`] header, headers as AMQP
//!   headers). A nack, an unroutable message, a lost connection or no
//!   confirm within [`RabbitConfig::confirm_timeout`] is retried on a fresh
//!   channel up to [`RabbitConfig::publish_attempts`] times, then reported
//!   as [`TransportError::Unavailable`] for the caller (an outbox relay) to
//!   try later. A retried publish may store a message twice.
//! - **subscribe** acknowledges a delivery only once what its
//!   [`Disposition`](campusfood_core::transport::Disposition) asks for is
//!   carried out: acked; retried by a confirmed publish to the retry queue
//!   (per-message TTL = [`SubscribeOptions::retry_delay`], `x-attempts`
//!   incremented; the broker dead-letters it back into the queue when the
//!   TTL runs out — a delay, never a hot requeue loop); or dead-lettered by
//!   a confirmed publish to `orders.dlx` with `x-death-reason` (after
//!   [`SubscribeOptions::max_attempts`]: `gave up after N attempts: …`).
//!   Dead-lettering is done by publishing rather than `basic.reject`
//!   because only a publish can add the reason header. A crash between that
//!   publish and the ack delivers the message twice; handlers are
//!   idempotent.
//!   [`Delivery::attempt`](campusfood_core::transport::Delivery::attempt)
//!   is read from `x-attempts` (1 when absent).
//! - [`Transport::subscribe`] fails with [`TransportError::Unavailable`] if
//!   the broker cannot be reached at that moment; once running, a
//!   subscription outlives outages.
//! - Up to [`SubscribeOptions::prefetch`] handlers run at once
//!   (`basic.qos`). If the connection drops, consumers reconnect with
//!   exponential backoff ([`RabbitConfig::reconnect_backoff`] up to
//!   [`RabbitConfig::reconnect_backoff_max`]); the broker redelivers what
//!   was unacknowledged.
//! - Retry queues use per-message TTLs, which RabbitMQ only expires at the
//!   head of a queue: subscriptions on one queue should share one
//!   `retry_delay`, or a long delay holds back shorter ones behind it.
//! - `orders.dlq` is also bound with the reserve queue's name so that a
//!   message the broker itself dead-letters after a retry (its routing key
//!   is then the queue's name) still lands there.
//!
//! Dead letters can be listed and replayed ([`DeadLetters`]): see
//! [`RabbitTransport::dead_letters_of`] for how, without losing any.
//!
//! # Tests and labs
//! [`RabbitConfig::with_prefix`] moves every exchange and queue name under a
//! prefix, so that parallel tests share one broker without colliding;
//! [`RabbitTransport::teardown`] deletes what a transport declared.

mod channel;
mod connection;
mod consumer;
mod dead_letters;
mod message;
mod publisher;
mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amqprs::channel::QueueDeclareArguments;
use async_trait::async_trait;
use campusfood_core::config::RabbitConfig;
use campusfood_core::transport::{
    Backlog, Capabilities, DeadLetter, DeadLetters, Handler, Message, Reply, Route,
    SubscribeOptions, Subscription, Transport, TransportError,
};

use channel::BrokerError;
use connection::Broker;
pub use message::{KEY_HEADER, MAX_HEADER_BYTES};
use publisher::Publisher;
use topology::Topology;

/// The pseudo-route errors about the broker itself (not one route) name.
const BROKER: Route = Route::from_static("rabbitmq");

/// A [`Transport`] over RabbitMQ: publish and subscribe, no request/reply.
/// Cheap to clone; clones share one connection. See the
/// [module docs](self) for topology and delivery semantics.
#[derive(Debug, Clone)]
pub struct RabbitTransport {
    inner: Arc<Inner>,
}

/// What clones of a transport and its consumers share.
#[derive(Debug)]
struct Inner {
    broker: Broker,
    topology: Arc<Topology>,
    publisher: Publisher,
    /// Serialises dead-letter listing and replay within this transport.
    dead_letter_lock: tokio::sync::Mutex<()>,
}

fn to_transport(err: BrokerError, route: &Route) -> TransportError {
    match err {
        BrokerError::Closed => TransportError::Closed,
        BrokerError::NoRoute | BrokerError::Name(_) => TransportError::UnknownRoute(route.clone()),
        other => TransportError::Unavailable {
            route: route.clone(),
            reason: other.to_string(),
        },
    }
}

impl RabbitTransport {
    /// Connects to [`RabbitConfig::url`] and declares the topology.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] naming the URL (password masked) when
    /// the broker cannot be reached, refuses the login, or refuses the
    /// topology (a queue already declared with other arguments).
    pub async fn connect(config: &RabbitConfig) -> Result<Self, TransportError> {
        static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
        let topology =
            Arc::new(Topology::new(config.clone()).map_err(|e| to_transport(e, &BROKER))?);
        let name = format!(
            "campusfood-{}-{}",
            std::process::id(),
            CONNECTIONS.fetch_add(1, Ordering::Relaxed)
        );
        let broker = Broker::new(&config.url, name, config.connect_timeout, topology.clone())
            .map_err(|e| to_transport(e, &BROKER))?;
        broker
            .connection()
            .await
            .map_err(|e| to_transport(e, &BROKER))?;
        Ok(Self {
            inner: Arc::new(Inner {
                broker,
                topology,
                publisher: Publisher::new(
                    config.confirm_timeout,
                    config.publish_attempts,
                    config.reconnect_backoff,
                ),
                dead_letter_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The configuration this transport was connected with.
    pub fn config(&self) -> &RabbitConfig {
        self.inner.topology.config()
    }

    /// The connection's name as the broker shows it (management UI,
    /// `rabbitmqctl list_connections client_properties`).
    pub fn connection_name(&self) -> &str {
        self.inner.broker.name()
    }

    /// The queue a subscription to `route` in `group` consumes (see the
    /// [module docs](self)); its retry and dead-letter queues are
    /// [`RabbitConfig::retry_queue`] and
    /// [`RabbitConfig::dead_letter_queue_of`] of it.
    ///
    /// # Errors
    /// [`TransportError::UnknownRoute`] for a route without a queue.
    pub fn queue_for(&self, route: &Route, group: Option<&str>) -> Result<String, TransportError> {
        self.inner
            .topology
            .queue_for(route, group)
            .map(|spec| spec.queue)
            .map_err(|e| to_transport(e, route))
    }

    /// How many messages `queue` holds ready for delivery (not counting
    /// those delivered and not yet acknowledged), by a passive
    /// `queue.declare`.
    ///
    /// # Errors
    /// [`TransportError::UnknownRoute`] (naming the queue) when there is no
    /// such queue; [`TransportError::Unavailable`] when the broker cannot
    /// be asked.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, TransportError> {
        let as_route = Route::new(queue);
        if queue.len() > 255 {
            return Err(TransportError::UnknownRoute(as_route));
        }
        let chan = self
            .inner
            .broker
            .channel()
            .await
            .map_err(|e| to_transport(e, &as_route))?;
        let declared = chan
            .channel
            .queue_declare(QueueDeclareArguments::new(queue).passive(true).finish())
            .await;
        match declared {
            Ok(answer) => {
                chan.close().await;
                Ok(answer.map_or(0, |(_, count, _)| count))
            }
            Err(err) => match chan.explain(err) {
                BrokerError::ChannelClosed { code: 404, .. } => {
                    Err(TransportError::UnknownRoute(as_route))
                }
                other => Err(to_transport(other, &as_route)),
            },
        }
    }

    /// The dead letters of `route`'s queue for `group` (`None`: the route's
    /// default queue), oldest first, at most `limit`. Reads them with
    /// `basic.get` and puts every one back in place (nack with requeue), so
    /// listing loses and reorders nothing.
    ///
    /// # Errors
    /// [`TransportError::UnknownRoute`] for a route without a queue,
    /// [`TransportError::Unavailable`] when the broker cannot be reached.
    pub async fn dead_letters_of(
        &self,
        route: &Route,
        group: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError> {
        let spec = self
            .inner
            .topology
            .queue_for(route, group)
            .map_err(|e| to_transport(e, route))?;
        dead_letters::list(&self.inner, route, &spec, limit)
            .await
            .map_err(|e| to_transport(e, route))
    }

    /// Moves dead letter `id` of `route`'s queue for `group` back into that
    /// queue (only that group sees it again) for a fresh round of attempts:
    /// published with confirm, then removed from the dead-letter queue.
    /// Returns whether it was there.
    ///
    /// # Errors
    /// As [`dead_letters_of`](Self::dead_letters_of).
    pub async fn replay_of(
        &self,
        route: &Route,
        group: Option<&str>,
        id: &str,
    ) -> Result<bool, TransportError> {
        let spec = self
            .inner
            .topology
            .queue_for(route, group)
            .map_err(|e| to_transport(e, route))?;
        dead_letters::replay(&self.inner, &spec, id)
            .await
            .map_err(|e| to_transport(e, route))
    }

    /// Deletes every queue and exchange this transport declared, with
    /// their messages. For tests and labs on prefixed names
    /// ([`RabbitConfig::with_prefix`]); never on a shared topology.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] when the broker cannot be reached.
    pub async fn teardown(&self) -> Result<(), TransportError> {
        let chan = self
            .inner
            .broker
            .channel()
            .await
            .map_err(|e| to_transport(e, &BROKER))?;
        let deleted = self.inner.topology.delete_declared(&chan).await;
        chan.close().await;
        deleted.map_err(|e| to_transport(e, &BROKER))
    }

    /// Closes the connection for good: publishes fail with
    /// [`TransportError::Closed`] and subscriptions end (their unacknowledged
    /// deliveries go back to their queues).
    pub async fn close(&self) {
        self.inner.publisher.close().await;
        self.inner.broker.close().await;
    }
}

#[async_trait]
impl Transport for RabbitTransport {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            request: false,
            publish: true,
            subscribe: true,
            distinct_routes: true,
        }
    }

    async fn request(
        &self,
        _route: &Route,
        _request: Message,
        _timeout: Duration,
    ) -> Result<Reply, TransportError> {
        Err(TransportError::Unsupported {
            transport: "rabbitmq",
            operation: "request/reply",
        })
    }

    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        let target = self
            .inner
            .topology
            .publish_target(route)
            .ok_or_else(|| TransportError::UnknownRoute(route.clone()))?;
        let props = message::outbound(&message).map_err(|e| {
            tracing::error!(%route, error = %e, "cannot publish");
            TransportError::Unsupported {
                transport: "rabbitmq",
                operation: e.operation(),
            }
        })?;
        self.inner
            .publisher
            .publish(
                &self.inner.broker,
                &target.exchange,
                &target.routing_key,
                &props,
                &message.body,
            )
            .await
            .map_err(|e| to_transport(e, route))
    }

    async fn subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        let spec = self
            .inner
            .topology
            .queue_for(route, options.group.as_deref())
            .map_err(|e| to_transport(e, route))?;
        let first = consumer::start(&self.inner, &spec, options.prefetch.max(1))
            .await
            .map_err(|e| to_transport(e, route))?;
        tracing::info!(%route, queue = %spec.queue, prefetch = options.prefetch, "subscribed");
        let job = Arc::new(consumer::Job {
            inner: self.inner.clone(),
            route: route.clone(),
            spec,
            handler,
            options,
        });
        Ok(Subscription::spawn(move |stop| {
            consumer::run(job, first, stop)
        }))
    }
}

#[async_trait]
impl Backlog for RabbitTransport {
    /// The ready messages of the route's default queue (deliveries in
    /// flight, not yet acknowledged, are not counted).
    async fn backlog(&self, route: &Route) -> Result<u64, TransportError> {
        let queue = self.queue_for(route, None)?;
        self.queue_depth(&queue).await.map(u64::from)
    }
}

#[async_trait]
impl DeadLetters for RabbitTransport {
    async fn dead_letters(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError> {
        self.dead_letters_of(route, None, limit).await
    }

    async fn replay(&self, route: &Route, id: &str) -> Result<bool, TransportError> {
        self.replay_of(route, None, id).await
    }
}
