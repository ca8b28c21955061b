//! Kafka: publish and subscribe over topics with rdkafka (librdkafka).
//!
//! # Routes and topics
//! [`Route::ORDER_PLACED`] goes to [`KafkaConfig::order_topic`];
//! [`Route::INVENTORY_RESERVED`] and [`Route::INVENTORY_FAILED`] both go to
//! [`KafkaConfig::inventory_topic`] (the Kafka contract has one
//! `inventory-events` topic whose records say `status: Success|Failure`),
//! unless [`KafkaConfig::failed_topic`] gives failures a topic of their own
//! (then every route is distinct, as Part B's flow needs:
//! [`Capabilities::distinct_routes`]). [`Route::ORDER_NOTIFIED`] goes to
//! [`KafkaConfig::notified_topic`].
//! Any other route whose name is a legal topic name is that topic, created
//! on first use with [`KafkaConfig::default_partitions`]. Routes that share
//! a topic share its records: a subscriber to `INVENTORY_RESERVED` sees the
//! failures too, and every record carries the publishing route in the
//! [`ROUTE_HEADER`] header. [`Route::RESERVE`] and [`Route::NOTIFY`] are
//! request/reply routes and have no topic here.
//!
//! # Publishing
//! One idempotent producer (`enable.idempotence`, `acks=all`) per
//! transport. The message key (the order id) is the record key, so an
//! order's events land in one partition and keep their order; headers are
//! Kafka headers. [`Transport::publish`] returns once the broker has
//! acknowledged the record; [`KafkaTransport::publish_many`] queues a whole
//! burst first and then waits for all acknowledgements.
//!
//! # Delivery semantics of a subscription
//! **At least once, in order per partition.** Each subscription is one
//! consumer in a consumer group ([`SubscribeOptions::group`], else
//! [`KafkaConfig::default_group`]); the group's members share the topic's
//! partitions. A record is handled to the end before the next one:
//! - [`Disposition::Ack`]: its offset is stored, and stored offsets are
//!   committed every [`KafkaConfig::commit_interval`], before partitions are
//!   revoked, and when the subscription stops. Nothing is ever committed
//!   past a record whose handler has not returned. At a commit tick and on
//!   stop, with no record in flight, the consumer's position is stored
//!   too: it is past the commit markers that follow a transactional
//!   topic's last records, so a drained consumer shows lag 0 there as well.
//! - [`Disposition::Retry`]: Kafka cannot redeliver one record, so the same
//!   record is handed to the handler again after
//!   [`SubscribeOptions::retry_delay`] (its partition waits; nothing skips
//!   ahead), up to [`SubscribeOptions::max_attempts`], then it is
//!   dead-lettered.
//! - [`Disposition::DeadLetter`]: the record is produced to
//!   `<topic>`[`DEAD_LETTER_SUFFIX`] with its key and headers plus
//!   [`DEATH_REASON`](headers::DEATH_REASON), [`ATTEMPTS`](headers::ATTEMPTS) and where it came from
//!   ([`ORIGIN_TOPIC_HEADER`] …), then committed. If the dead-letter topic
//!   cannot be written, the record is kept (retried every second) rather
//!   than lost.
//!
//! A handler that panics counts as `Retry`; any record (no key, no value,
//! bytes that are not UTF-8 in key or headers) is delivered, never fatal.
//! Stopping finishes the record being handled (waiting at most
//! [`KafkaConfig::drain_timeout`]; a handler still running then is
//! abandoned and its record left uncommitted, so the group's next consumer
//! gets it), commits, and closes the consumer (it leaves the group unless it has a static
//! [`KafkaConfig::group_instance_id`]). A record waiting for its next retry
//! when the stop comes is not committed: the next consumer gets it again.
//! After a crash, records handled since the last commit are delivered again,
//! so handlers must be idempotent (the order id is the key for that).
//!
//! [`SubscribeOptions::prefetch`] is not used: librdkafka fetches ahead on
//! its own, and records are handled one at a time in arrival order (in
//! order per partition). A handler, retries included, must return within
//! librdkafka's `max.poll.interval.ms` (5 minutes) or the consumer is
//! dropped from the group and its partitions go to another member.
//!
//! # Dead letters
//! [`DeadLetters`] lists a route's
//! pending dead letters and replays them.
//!
//! ## Ids
//! A dead letter is a record of `<topic>`[`DEAD_LETTER_SUFFIX`]; its id is
//! its place there, `<partition>-<offset>` ([`DeadLetterId`], e.g. `0-17`).
//! Kafka never renumbers a record, so an id names the same dead letter for
//! as long as the broker keeps it (the topic's retention), in every process.
//!
//! ## Reading
//! A short-lived consumer that joins no consumer group: it assigns itself
//! every partition (it never subscribes; its `group.id`,
//! [`READER_GROUP`], is there only because librdkafka's `assign` asks for
//! one), reads from the oldest record to the end as of now
//! (`read_committed`: a dead letter written by a transaction that aborted
//! is not one), and commits nothing. Listing therefore moves no group's
//! offsets and triggers no rebalance. Its blocking librdkafka calls
//! run on tokio's blocking pool.
//!
//! ## Replay
//! [`DeadLetters::replay`] publishes the dead letter's key, headers and body
//! to the route's topic (the one it died on), without the death headers
//! ([`DEATH_HEADERS`]), and once the broker has acknowledged it appends a
//! marker to `<topic>.dlq`[`REPLAYED_SUFFIX`]: a record whose key is the
//! id (its value, the topic it went back to). A dead letter with a marker is no longer pending: it is not listed,
//! and replaying it again returns `false`. The dead-letter topic itself
//! stays what it was, append-only and nothing but dead letters, so a
//! consumer of it never sees a marker. If the replayed record fails again,
//! it is a new dead letter with a new id.
//!
//! A crash between the publish and the marker leaves the dead letter
//! pending, and a later replay publishes it again: replay is at least once,
//! like every delivery here (handlers are idempotent by order id). The
//! marker topic keeps the broker's default retention; a marker is younger
//! than its dead letter, so it never expires first.
//!
//! # Operations
//! [`KafkaTransport::lag`] and [`KafkaTransport::reset_offsets`] do what
//! `kafka-consumer-groups --describe` and `--reset-offsets` do, on the same
//! committed offsets, so either tool sees the other's work.
//! [`KafkaTransport::scan_topic`] finds records by what they hold (an
//! order's, in every topic) with the dead letters' group-less reader,
//! bounded by the high watermarks as of its start.
//!
//! # Exactly once
//! [`TransactionalProcessor`] reads, processes and writes in Kafka
//! transactions (the consumed offsets commit in the same transaction as the
//! produced records), for read-process-write stages such as the inventory
//! consumer.
//!
//! All blocking librdkafka calls (metadata, offsets, commits on stop,
//! closing) run on tokio's blocking pool.

mod admin;
mod consumer;
mod context;
mod dead_letters;
mod scan;
mod transactional;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::config::KafkaConfig;
use campusfood_core::transport::{
    Capabilities, DeadLetters, Handler, Message, Reply, Route, SubscribeOptions, Subscription,
    Transport, TransportError,
};
#[cfg(doc)]
use campusfood_core::transport::{Disposition, headers};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

pub use admin::{OffsetReset, PartitionLag, PartitionOffset};
pub use context::KafkaContext;
use context::KafkaContext as Ctx;
pub use dead_letters::{DEATH_HEADERS, DeadLetterId, READER_GROUP, REPLAYED_SUFFIX};
pub use scan::{ScannedPartition, ScannedRecord, TopicScan};
pub use transactional::{Outcome, Processor, TransactionalOptions, TransactionalProcessor};

/// Appended to a topic's name to name its dead-letter topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";
/// Header naming the route a record was published on.
pub const ROUTE_HEADER: &str = "x-route";
/// Dead letters: the topic the record was consumed from.
pub const ORIGIN_TOPIC_HEADER: &str = "x-origin-topic";
/// Dead letters: the partition the record was consumed from.
pub const ORIGIN_PARTITION_HEADER: &str = "x-origin-partition";
/// Dead letters: the record's offset in its original partition.
pub const ORIGIN_OFFSET_HEADER: &str = "x-origin-offset";

/// Upper bound on how long librdkafka may try to deliver one record.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer type [`KafkaTransport::producer`] hands out.
pub type KafkaProducer = FutureProducer<KafkaContext>;

/// A [`Transport`] over Kafka. Cheap to clone; clones share one producer.
/// See the [module docs](self) for the delivery semantics.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    /// The one producer every publish goes through (it batches across
    /// callers).
    producer: KafkaProducer,
    admin: AdminClient<Ctx>,
    /// Topics known to exist, so each is created at most once per process.
    ensured: Mutex<HashSet<String>>,
}

impl fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

/// The pseudo-route errors about the cluster itself are reported on.
fn cluster_route() -> Route {
    Route::from_static("kafka")
}

fn unavailable(route: &Route, what: impl fmt::Display) -> TransportError {
    TransportError::Unavailable {
        route: route.clone(),
        reason: what.to_string(),
    }
}

/// Whether `name` is a topic name Kafka accepts.
fn is_legal_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Settings every client shares.
fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "campusfood")
        .set(
            "socket.connection.setup.timeout.ms",
            config.request_timeout.as_millis().to_string(),
        );
    // librdkafka's own debug contexts (`msg,eos,broker`, …), logged at
    // debug under the target `librdkafka`: for diagnosing the client.
    if let Ok(contexts) = std::env::var(RDKAFKA_DEBUG_ENV) {
        c.set("debug", contexts);
    }
    c
}

/// The variable naming librdkafka debug contexts to turn on (its `debug`
/// setting, e.g. `msg,eos,broker`); their lines are logged at debug level
/// under the target `librdkafka` (`RUST_LOG=librdkafka=debug`).
pub const RDKAFKA_DEBUG_ENV: &str = "CAMPUSFOOD_RDKAFKA_DEBUG";

/// The settings of every producer this crate makes (idempotent, `acks=all`,
/// batching, lz4, connections to every broker at once): for a client of
/// your own that should behave as ours (`cargo bench --bench limits` uses
/// them for its raw rdkafka producers).
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config);
    c.set("enable.idempotence", "true")
        // Connect to the brokers at once. With sparse connections the
        // idempotent producer could ask for its producer id before any
        // broker connection was up, then wait for librdkafka's 500 ms retry
        // timer: a 10,000-order burst then took 0.5–1 s instead of 60 ms
        // (2 runs in 8; none in 22 with this).
        .set("enable.sparse.connections", "false")
        .set("acks", "all")
        // A burst fills batches within a few milliseconds; a lone publish
        // waits at most this long.
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        );
    c
}

/// Kafka headers for `message`, plus the route it is published on.
fn kafka_headers(route: &Route, message: &Message) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
    for (k, v) in &message.headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        });
    }
    if !message.headers.contains_key(ROUTE_HEADER) {
        h = h.insert(Header {
            key: ROUTE_HEADER,
            value: Some(route.as_str()),
        });
    }
    h
}

/// A record for `message` to `topic`: key, value and headers.
fn record<'a>(
    topic: &'a str,
    message: &'a Message,
    headers: OwnedHeaders,
) -> FutureRecord<'a, str, [u8]> {
    let r = FutureRecord::to(topic)
        .payload(message.body.as_ref())
        .headers(headers);
    match &message.key {
        Some(k) => r.key(k.as_str()),
        None => r,
    }
}

impl KafkaTransport {
    /// Connects to `config.bootstrap_servers`: checks that a broker answers
    /// within [`KafkaConfig::request_timeout`] and creates the order and
    /// inventory topics if they do not exist yet.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`], naming the bootstrap address, when
    /// no broker answers or the topics cannot be created.
    pub async fn connect(config: &KafkaConfig) -> Result<Self, TransportError> {
        let route = cluster_route();
        let producer: KafkaProducer = producer_config(config)
            .create_with_context(Ctx)
            .map_err(|e| unavailable(&route, format!("cannot create a producer: {e}")))?;
        let admin: AdminClient<Ctx> = base_config(config)
            .create_with_context(Ctx)
            .map_err(|e| unavailable(&route, format!("cannot create an admin client: {e}")))?;
        let probe = producer.clone();
        let timeout = config.request_timeout;
        let answered =
            tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
                .await
                .map_err(|e| unavailable(&route, e))?;
        let metadata = match answered {
            Ok(metadata) => metadata,
            Err(e) => {
                return Err(unavailable(
                    &route,
                    format!(
                        "no Kafka broker answered at {} within {timeout:?}: {e}",
                        config.bootstrap_servers
                    ),
                ));
            }
        };
        // Topics the broker already has need no CreateTopics round trip
        // (it cost a producer's start tens of milliseconds).
        let existing = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name().to_owned())
            .collect::<HashSet<_>>();
        let transport = Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                producer,
                admin,
                ensured: Mutex::new(existing),
            }),
        };
        transport
            .create_topic(&config.order_topic, config.order_partitions)
            .await?;
        transport
            .create_topic(&config.inventory_topic, config.inventory_partitions)
            .await?;
        tracing::info!(bootstrap = %config.bootstrap_servers, "connected to Kafka");
        Ok(transport)
    }

    /// The settings this transport was connected with.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The topic `route` is published to and consumed from.
    ///
    /// # Errors
    /// [`TransportError::UnknownRoute`] for request/reply routes and names
    /// that are not legal topic names.
    pub fn topic_for(&self, route: &Route) -> Result<String, TransportError> {
        let c = &self.inner.config;
        if *route == Route::ORDER_PLACED {
            Ok(c.order_topic.clone())
        } else if *route == Route::INVENTORY_FAILED
            && let Some(failed) = &c.failed_topic
        {
            Ok(failed.clone())
        } else if *route == Route::INVENTORY_RESERVED || *route == Route::INVENTORY_FAILED {
            Ok(c.inventory_topic.clone())
        } else if *route == Route::ORDER_NOTIFIED {
            Ok(c.notified_topic.clone())
        } else if *route == Route::RESERVE
            || *route == Route::NOTIFY
            || !is_legal_topic(route.as_str())
        {
            Err(TransportError::UnknownRoute(route.clone()))
        } else {
            Ok(route.as_str().to_owned())
        }
    }

    /// The dead-letter topic of `topic`.
    pub fn dead_letter_topic(topic: &str) -> String {
        format!("{topic}{DEAD_LETTER_SUFFIX}")
    }

    /// The producer every publish goes through, for callers that need
    /// rdkafka directly (custom partitioning, flushing).
    pub fn producer(&self) -> &KafkaProducer {
        &self.inner.producer
    }

    /// Publishes `messages` to `route` as one burst: every record is queued
    /// in order (waiting when the producer's queue is full), then all
    /// acknowledgements are awaited together. Returns how many were
    /// acknowledged, which is all of them on `Ok`. Records with the same key
    /// keep their order.
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] if any record was not acknowledged
    /// (the others may have been: publish idempotently, keyed).
    pub async fn publish_many<I>(&self, route: &Route, messages: I) -> Result<usize, TransportError>
    where
        I: IntoIterator<Item = Message>,
    {
        let topic = self.ensure_route_topic(route).await?;
        let mut pending = Vec::new();
        for message in messages {
            let mut rec = record(&topic, &message, kafka_headers(route, &message));
            loop {
                match self.inner.producer.send_result(rec) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        return Err(unavailable(route, format!("cannot queue a record: {e}")));
                    }
                }
            }
        }
        let total = pending.len();
        let mut failed = 0usize;
        let mut first_error = None;
        for result in futures::future::join_all(pending).await {
            let error = match result {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer was dropped".to_owned(),
            };
            failed += 1;
            first_error.get_or_insert(error);
        }
        match first_error {
            None => Ok(total),
            Some(e) => Err(unavailable(
                route,
                format!("{failed} of {total} records were not acknowledged; first: {e}"),
            )),
        }
    }

    /// Waits until every record queued so far is acknowledged, at most
    /// `timeout`.
    ///
    /// # Errors
    /// [`TransportError::Timeout`] if records are still unacknowledged.
    pub async fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        let producer = self.inner.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| unavailable(&cluster_route(), e))?
            .map_err(|_| TransportError::Timeout {
                route: cluster_route(),
                after: timeout,
            })
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            request: false,
            publish: true,
            subscribe: true,
            distinct_routes: self.inner.config.failed_topic.is_some(),
        }
    }

    async fn request(
        &self,
        _route: &Route,
        _request: Message,
        _timeout: Duration,
    ) -> Result<Reply, TransportError> {
        Err(TransportError::Unsupported {
            transport: "kafka",
            operation: "request/reply",
        })
    }

    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        let topic = self.ensure_route_topic(route).await?;
        let rec = record(&topic, &message, kafka_headers(route, &message));
        match self.inner.producer.send(rec, DELIVERY_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _)) => {
                Err(TransportError::Timeout {
                    route: route.clone(),
                    after: DELIVERY_TIMEOUT,
                })
            }
            Err((e, _)) => Err(unavailable(route, format!("not acknowledged: {e}"))),
        }
    }

    async fn subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        let topic = self.ensure_route_topic(route).await?;
        let dead_letters = Self::dead_letter_topic(&topic);
        self.create_topic(&dead_letters, 1).await?;
        let group = options
            .group
            .clone()
            .unwrap_or_else(|| self.inner.config.default_group.clone());
        consumer::spawn(consumer::Worker::new(
            &self.inner.config,
            self.inner.producer.clone(),
            route.clone(),
            topic,
            dead_letters,
            group,
            handler,
            options,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_topic_names() {
        assert!(is_legal_topic("order-events"));
        assert!(is_legal_topic("order-events.dlq"));
        assert!(!is_legal_topic(""));
        assert!(!is_legal_topic(".."));
        assert!(!is_legal_topic("a b"));
        assert!(!is_legal_topic(&"x".repeat(250)));
    }

    #[test]
    fn headers_carry_the_route() {
        use campusfood_core::transport::headers;
        let m = Message::default().with_header(headers::REQUEST_ID, "r1");
        let h = kafka_headers(&Route::ORDER_PLACED, &m);
        use rdkafka::message::Headers;
        let names: Vec<&str> = h.iter().map(|h| h.key).collect();
        assert_eq!(names, [headers::REQUEST_ID, ROUTE_HEADER]);
    }
}
