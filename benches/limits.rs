//! What this hardware can do at best for each headline figure, measured
//! with the raw libraries campusfood builds on (axum + hyper + reqwest,
//! redb, amqprs, rdkafka) and none of campusfood's own code, so that each
//! figure can be read as a fraction of its limit (issue 11).
//!
//! ```sh
//! scripts/brokers.sh up rabbitmq
//! scripts/brokers.sh up kafka
//! cargo bench --bench limits
//! ```
//!
//! Both brokers must run (RabbitMQ at `RabbitConfig::default().url`, Kafka
//! at `KafkaConfig::default().bootstrap_servers`): without one the bench
//! stops at once and says how to start it.
//!
//! - `limits_http/three_hops/1_connection` — the limit of Part A's p50:
//!   three loopback servers built as Part A's are (hyper's HTTP/1
//!   connection builder serving an axum router, `TCP_NODELAY`, keep-alive,
//!   JSON; a reqwest client with Part A's settings). `POST /order` POSTs
//!   JSON to `/reserve` on "inventory", then to `/send` on "notification"
//!   (both answer small JSON at once), then answers 201 with an order of
//!   the size of ours. One request at a time on one connection: the median
//!   time per iteration. No ledger, no durable commit, no outbox.
//! - `limits_http/three_hops/16_connections` — the limit of Part A's
//!   orders/s at 16 connections: the same with 16 clients sending one
//!   request after another (elements: orders). The clients run in this
//!   process, on the servers' cores, as in `sync_rest/post_order/*`
//!   (benches/orders.rs): these bound those figures; wrk's figures have a
//!   cheaper client.
//! - `limits_http/one_hop/1_connection` — with `limits_redb` below, the
//!   limit of Part B's acceptance: one `POST /order` answered 201 directly.
//! - `limits_redb/durable_commit/1_writer` — the price of one durable
//!   commit: a redb write transaction with `Durability::Immediate`
//!   inserting one ~300-byte value under a fresh key. Every order of ours
//!   pays at least one (group commit lets concurrent ones share it).
//! - `limits_rabbitmq/consume_publish_confirm_ack/20000` — the limit of
//!   Part B's backlog drain: the pipe an inventory worker is, with raw
//!   amqprs. 20,000 persistent ~300-byte messages wait in a durable queue;
//!   one consumer (manual acks, prefetch `DEFAULT_PREFETCH`) publishes one
//!   persistent ~300-byte message per delivery to a second durable queue
//!   with publisher confirms, and acks each delivery once its publish is
//!   confirmed (coalesced with `multiple`, as our consumer does). No
//!   ledger, no decision. Elements: messages. An order of Part B moves
//!   four messages (`lab perf` divides by four to compare it with orders/s).
//! - `limits_kafka/produce/10000` — the limit of Part C's produce figure:
//!   an idempotent producer (acks=all and the rest of campusfood-kafka's
//!   producer settings) sends 10,000 keyed ~200-byte records to a fresh
//!   topic until every delivery report is in. A warm producer, the topic
//!   already known to it (one record per partition sent before the clock
//!   starts): our figure also includes starting the process, connecting
//!   and learning the topic.
//! - `limits_kafka/consume/10000` — the limit of reading: a warm
//!   `read_committed` consumer reads 10,000 records from the beginning
//!   (partitions assigned, no group rebalance). Elements: records.
//! - `limits_kafka/transactional_pipe/10000` — the limit of Part C's
//!   steady exactly-once rate: the consume-transform-produce loop of
//!   Part C's inventory, raw: batches of up to `max_batch` records, each
//!   in one transaction (one output record per input, the input offsets
//!   sent to the transaction, commit). One loop; ours runs several workers
//!   and also commits a durable redb ledger per batch. Elements: records.
//!
//! Kafka topics have the partitions of Part C's order topic
//! (`KafkaConfig::default().order_partitions`); `consume` and
//! `transactional_pipe` read the same input topic, produced once, from the
//! beginning. Queue and topic names are unique per run; the bench deletes
//! them at the end. The RabbitMQ and Kafka limits take one iteration per
//! sample, set up outside the timed region (criterion's "Unable to
//! complete 10 samples" warnings for them are expected).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicPublishArguments,
    BasicQosArguments, Channel, ConfirmSelectArguments, ConsumerMessage, QueueDeclareArguments,
    QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use campusfood::core::config::{HttpConfig, KafkaConfig, RabbitConfig, ServerLimits};
use campusfood::services::async_rabbitmq::DEFAULT_PREFETCH;
use campusfood::services::streaming_kafka::InventoryOptions;
use campusfood::transport::kafka::TransactionalOptions;
use campusfood_testkit::unique;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::ServiceExt;

mod common;
use common::{post as post_order, runtime};

/// Short runs: the bench measures eight limits in a few minutes.
fn quick(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
}

/// The heavy ones: one iteration per sample, no warm-up beyond one run.
fn heavy(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_millis(1));
}

/// Panics, saying how to start it, unless `what` answers at `host:port`.
fn require_broker(what: &str, host_port: &str, target: &str) {
    let reachable = host_port.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    });
    assert!(
        reachable,
        "{what} is not running at {host_port}: start it with `scripts/brokers.sh up {target}`"
    );
}

/// `host:port` of an `amqp://user:pass@host:port/vhost` URL.
fn amqp_endpoint(url: &str) -> (reqwest::Url, String) {
    let parsed = reqwest::Url::parse(url).expect("RabbitConfig::default().url is a URL");
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(5672);
    (parsed, format!("{host}:{port}"))
}

// ---------------------------------------------------------------- HTTP ---

/// Clients sending at once, and requests each sends per iteration (as
/// `sync_rest/post_order/16_connections` in benches/orders.rs).
const CONCURRENCY: usize = 16;
const PER_CLIENT: usize = 50;

#[derive(Deserialize)]
struct PlaceOrder {
    item: String,
    qty: u32,
}

#[derive(Serialize, Deserialize)]
struct Reserve {
    order_id: String,
    request_id: String,
    item: String,
    qty: u32,
}

#[derive(Serialize, Deserialize)]
struct Reserved {
    status: String,
    reservation_id: String,
    item: String,
    qty: u32,
    remaining: u64,
    request_id: String,
}

#[derive(Serialize, Deserialize)]
struct Notify {
    order_id: String,
    request_id: String,
    message: String,
}

#[derive(Serialize)]
struct Sent {
    status: &'static str,
    order_id: String,
    request_id: String,
}

/// Part A's 201 (`status: confirmed`).
#[derive(Serialize)]
struct Confirmed {
    order_id: String,
    request_id: String,
    item: String,
    qty: u32,
    status: &'static str,
    reservation_id: String,
    elapsed_ms: f64,
}

/// Part B's 201 (`status: placed`).
#[derive(Serialize)]
struct Placed {
    order_id: String,
    request_id: String,
    item: String,
    qty: u32,
    status: &'static str,
    created_at: String,
}

/// A uuid-sized id (36 characters), different for each order.
fn next_id(counter: &AtomicU64) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A reqwest client with the settings of Part A's `HttpTransport`.
fn client() -> reqwest::Client {
    let limits = ServerLimits::default();
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(limits.header_read_timeout / 2)
        .build()
        .expect("HTTP client")
}

/// Serves `router` on a free loopback port as campusfood-transport's
/// `serve` does (hyper's HTTP/1 connection builder, `TCP_NODELAY`, the
/// header read timeout), without its connection limit, body deadline,
/// graceful stop or metrics.
async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let header_read_timeout = ServerLimits::default().header_read_timeout;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tcp.set_nodelay(true).expect("TCP_NODELAY");
            let router = router.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    router.clone().oneshot(req.map(Body::new))
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout);
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

#[derive(Clone)]
struct OrderState {
    client: reqwest::Client,
    reserve_url: String,
    send_url: String,
    ids: Arc<AtomicU64>,
}

async fn order(
    State(s): State<OrderState>,
    Json(place): Json<PlaceOrder>,
) -> (StatusCode, Json<Confirmed>) {
    let started = Instant::now();
    let order_id = next_id(&s.ids);
    let request_id = next_id(&s.ids);
    let resp = s
        .client
        .post(&s.reserve_url)
        .json(&Reserve {
            order_id: order_id.clone(),
            request_id: request_id.clone(),
            item: place.item.clone(),
            qty: place.qty,
        })
        .send()
        .await
        .expect("inventory answers");
    assert_eq!(resp.status(), StatusCode::OK);
    let reserved: Reserved = resp.json().await.expect("reservation");
    let resp = s
        .client
        .post(&s.send_url)
        .json(&Notify {
            order_id: order_id.clone(),
            request_id: request_id.clone(),
            message: format!("order {order_id}: {} x{} confirmed", place.item, place.qty),
        })
        .send()
        .await
        .expect("notification answers");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.expect("notification body");
    (
        StatusCode::CREATED,
        Json(Confirmed {
            order_id,
            request_id,
            item: place.item,
            qty: place.qty,
            status: "confirmed",
            reservation_id: reserved.reservation_id,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        }),
    )
}

async fn reserve(Json(r): Json<Reserve>) -> Json<Reserved> {
    Json(Reserved {
        status: "reserved".to_owned(),
        reservation_id: format!("RES-{}", r.order_id),
        item: r.item,
        qty: r.qty,
        remaining: 999_999,
        request_id: r.request_id,
    })
}

async fn notify(Json(s): Json<Notify>) -> Json<Sent> {
    Json(Sent {
        status: "sent",
        order_id: s.order_id,
        request_id: s.request_id,
    })
}

async fn accept(
    State(ids): State<Arc<AtomicU64>>,
    Json(place): Json<PlaceOrder>,
) -> (StatusCode, Json<Placed>) {
    (
        StatusCode::CREATED,
        Json(Placed {
            order_id: next_id(&ids),
            request_id: next_id(&ids),
            item: place.item,
            qty: place.qty,
            status: "placed",
            created_at: "2026-12-01T23:00:00.000000Z".to_owned(),
        }),
    )
}

fn http(c: &mut Criterion) {
    let rt = runtime();
    let (three_hops, one_hop) = rt.block_on(async {
        let inventory = serve(Router::new().route(HttpConfig::RESERVE_PATH, post(reserve))).await;
        let notification = serve(Router::new().route(HttpConfig::SEND_PATH, post(notify))).await;
        let order_state = OrderState {
            client: client(),
            reserve_url: format!("http://{inventory}{}", HttpConfig::RESERVE_PATH),
            send_url: format!("http://{notification}{}", HttpConfig::SEND_PATH),
            ids: Arc::default(),
        };
        let order = serve(
            Router::new()
                .route(HttpConfig::ORDER_PATH, post(order))
                .with_state(order_state),
        )
        .await;
        let accepting = serve(
            Router::new()
                .route(HttpConfig::ORDER_PATH, post(accept))
                .with_state(Arc::<AtomicU64>::default()),
        )
        .await;
        (
            format!("http://{order}{}", HttpConfig::ORDER_PATH),
            format!("http://{accepting}{}", HttpConfig::ORDER_PATH),
        )
    });
    let client = client();

    let mut g = c.benchmark_group("limits_http");
    quick(&mut g);
    g.bench_function(BenchmarkId::new("three_hops", "1_connection"), |b| {
        b.to_async(&rt).iter(|| post_order(&client, &three_hops))
    });
    g.bench_function(BenchmarkId::new("one_hop", "1_connection"), |b| {
        b.to_async(&rt).iter(|| post_order(&client, &one_hop))
    });
    g.throughput(Throughput::Elements((CONCURRENCY * PER_CLIENT) as u64));
    g.bench_function(BenchmarkId::new("three_hops", "16_connections"), |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let (client, url) = (client.clone(), three_hops.clone());
                    tokio::spawn(async move {
                        for _ in 0..PER_CLIENT {
                            post_order(&client, &url).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("client task");
            }
        })
    });
    g.finish();
}

// ---------------------------------------------------------------- redb ---

const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");

/// A ~300-byte value: about an order with its event.
fn value(len: usize) -> Vec<u8> {
    let mut v = br#"{"order_id":"00000000-0000-4000-8000-000000000000","item":"burger","qty":1,"status":"placed","pad":""#.to_vec();
    v.resize(len - 2, b'x');
    v.extend_from_slice(br#""}"#);
    v
}

fn redb(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(dir.path().join("limits.redb")).expect("redb database");
    let v = value(300);
    let mut key = 0u64;
    let mut g = c.benchmark_group("limits_redb");
    quick(&mut g);
    g.bench_function(BenchmarkId::new("durable_commit", "1_writer"), |b| {
        b.iter(|| {
            key += 1;
            let mut txn = db.begin_write().expect("write transaction");
            txn.set_durability(Durability::Immediate)
                .expect("durability");
            {
                let mut table = txn.open_table(COMMITS).expect("table");
                table.insert(key, v.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        })
    });
    g.finish();
    let read = db.begin_read().expect("read transaction");
    let table = read.open_table(COMMITS).expect("table");
    assert_eq!(table.len().expect("len"), key, "every commit is there");
}

// ------------------------------------------------------------ RabbitMQ ---

/// Messages per drain (as `rabbitmq/drain_backlog/20000`).
const BACKLOG: u64 = 20_000;
/// Longest one drain may take before the bench gives up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// A publisher confirm: (sequence number, multiple, ack).
type ConfirmEvent = (u64, bool, bool);

/// Forwards the confirm channel's acks and nacks.
struct Confirms(mpsc::UnboundedSender<ConfirmEvent>);

#[async_trait]
impl ChannelCallback for Confirms {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        panic!("the broker closed the publish channel: {close}");
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, _: bool) -> Result<bool, amqprs::error::Error> {
        Ok(true)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let _ = self.0.send((ack.delivery_tag(), ack.mutiple(), true));
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let _ = self.0.send((nack.delivery_tag(), nack.multiple(), false));
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// Two durable queues and the channels that move a backlog between them.
/// Each drain empties one queue into the other, so the next drain goes the
/// other way: every drain starts from `BACKLOG` ready messages and an
/// empty output queue.
struct Pipe {
    conn: Connection,
    consume: Channel,
    publish: Channel,
    confirms: mpsc::UnboundedReceiver<ConfirmEvent>,
    /// Publishes not yet confirmed: sequence number → the delivery tag
    /// it answers (0 for the initial fill).
    unconfirmed: BTreeMap<u64, u64>,
    /// Sequence number of the publish channel's last publish.
    published: u64,
    queues: [String; 2],
    /// Which queue holds the backlog.
    full: usize,
    body: Vec<u8>,
    props: BasicProperties,
}

impl Pipe {
    async fn open(url: &str) -> Self {
        let (parsed, _) = amqp_endpoint(url);
        let vhost = match parsed.path() {
            "" | "/" => "/".to_owned(),
            p => p.trim_start_matches('/').to_owned(),
        };
        let args = OpenConnectionArguments::new(
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(5672),
            parsed.username(),
            parsed.password().unwrap_or("guest"),
        )
        .virtual_host(&vhost)
        .connection_name("campusfood-limits")
        .finish();
        let conn = Connection::open(&args).await.unwrap_or_else(|e| {
            panic!("cannot connect to RabbitMQ at {url}: {e} (start it with `scripts/brokers.sh up rabbitmq`)")
        });
        let consume = conn.open_channel(None).await.expect("consume channel");
        consume
            .basic_qos(BasicQosArguments::new(0, DEFAULT_PREFETCH, false))
            .await
            .expect("prefetch");
        let publish = conn.open_channel(None).await.expect("publish channel");
        let (tx, confirms) = mpsc::unbounded_channel();
        publish
            .register_callback(Confirms(tx))
            .await
            .expect("confirm callback");
        publish
            .confirm_select(ConfirmSelectArguments::new(false))
            .await
            .expect("confirm.select");
        let queues = [unique("limits-in"), unique("limits-out")];
        for q in &queues {
            publish
                .queue_declare(QueueDeclareArguments::durable_client_named(q))
                .await
                .expect("queue declared");
        }
        let mut pipe = Self {
            conn,
            consume,
            publish,
            confirms,
            unconfirmed: BTreeMap::new(),
            published: 0,
            queues,
            full: 0,
            body: value(300),
            props: BasicProperties::default()
                .with_persistence(true)
                .with_content_type("application/json")
                .finish(),
        };
        for _ in 0..BACKLOG {
            pipe.publish_to(0, 0).await;
        }
        while !pipe.unconfirmed.is_empty() {
            let event = pipe.confirms.recv().await.expect("confirms");
            pipe.settle(event);
        }
        pipe.check_counts(0).await;
        pipe
    }

    /// Publishes one persistent message to queue `to`, answering delivery
    /// `tag`.
    async fn publish_to(&mut self, to: usize, tag: u64) {
        self.publish
            .basic_publish(
                self.props.clone(),
                self.body.clone(),
                BasicPublishArguments::new("", &self.queues[to]),
            )
            .await
            .expect("publish");
        self.published += 1;
        self.unconfirmed.insert(self.published, tag);
    }

    /// Removes what a confirm settles; panics on a nack.
    fn settle(&mut self, (seq, multiple, ack): ConfirmEvent) {
        assert!(ack, "the broker nacked publish {seq}");
        if multiple {
            let rest = self.unconfirmed.split_off(&(seq + 1));
            self.unconfirmed = rest;
        } else {
            self.unconfirmed.remove(&seq);
        }
    }

    /// Asserts queue `full` holds the backlog and the other none.
    async fn check_counts(&self, full: usize) {
        for (i, q) in self.queues.iter().enumerate() {
            let (_, count, _) = self
                .publish
                .queue_declare(
                    QueueDeclareArguments::new(q)
                        .durable(true)
                        .passive(true)
                        .finish(),
                )
                .await
                .expect("queue declared")
                .expect("counts");
            let want = if i == full { BACKLOG } else { 0 };
            assert_eq!(u64::from(count), want, "messages in {q}");
        }
    }

    /// Drains the full queue into the other; returns how long it took.
    async fn drain(&mut self) -> Duration {
        let (from, to) = (self.full, 1 - self.full);
        let started = Instant::now();
        let (tag, mut deliveries) = self
            .consume
            .basic_consume_rx(
                BasicConsumeArguments::new(&self.queues[from], "")
                    .manual_ack(true)
                    .finish(),
            )
            .await
            .expect("consume");
        let (mut received, mut acked, mut last_tag, mut first_tag) = (0u64, 0u64, 0u64, None);
        while acked < BACKLOG || !self.unconfirmed.is_empty() {
            tokio::select! {
                biased;
                event = self.confirms.recv() => {
                    self.settle(event.expect("confirms"));
                    while let Ok(event) = self.confirms.try_recv() {
                        self.settle(event);
                    }
                }
                delivery = deliveries.recv(), if received < BACKLOG => {
                    let mut next = Some(delivery.expect("the broker ended the consumer"));
                    while let Some(ConsumerMessage { deliver, .. }) = next {
                        last_tag = deliver.expect("a delivery").delivery_tag();
                        first_tag.get_or_insert(last_tag);
                        received += 1;
                        self.publish_to(to, last_tag).await;
                        next = deliveries.try_recv().ok();
                    }
                }
            }
            // Every delivery below the oldest unconfirmed one is done: one
            // `basic.ack(multiple)` covers them.
            let done = self
                .unconfirmed
                .values()
                .next()
                .map_or(last_tag, |oldest| oldest - 1);
            if let Some(first) = first_tag
                && done >= first
                && done - first + 1 > acked
            {
                self.consume
                    .basic_ack(BasicAckArguments::new(done, true))
                    .await
                    .expect("ack");
                acked = done - first + 1;
            }
        }
        let elapsed = started.elapsed();
        self.consume
            .basic_cancel(BasicCancelArguments::new(&tag))
            .await
            .expect("cancel");
        self.full = to;
        elapsed
    }

    async fn delete(self) {
        for q in &self.queues {
            self.publish
                .queue_delete(QueueDeleteArguments::new(q))
                .await
                .expect("queue deleted");
        }
        let _ = self.conn.close().await;
    }
}

fn rabbitmq(c: &mut Criterion) {
    let rt = runtime();
    let url = RabbitConfig::default().url;
    let mut pipe: Option<Pipe> = None;
    let mut g = c.benchmark_group("limits_rabbitmq");
    heavy(&mut g);
    g.throughput(Throughput::Elements(BACKLOG));
    g.bench_function(
        BenchmarkId::new("consume_publish_confirm_ack", BACKLOG),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    if pipe.is_none() {
                        pipe = Some(Pipe::open(&url).await);
                    }
                    let p = pipe.as_mut().expect("pipe");
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += tokio::time::timeout(DRAIN_DEADLINE, p.drain())
                            .await
                            .expect("drained in time");
                        p.check_counts(p.full).await;
                    }
                    total
                })
            })
        },
    );
    g.finish();
    if let Some(p) = pipe {
        rt.block_on(p.delete());
    }
}

// --------------------------------------------------------------- Kafka ---

/// Records per iteration (as `producer/burst_10k`).
const RECORDS: usize = 10_000;
/// Longest one Kafka iteration may take.
const KAFKA_DEADLINE: Duration = Duration::from_secs(60);
/// librdkafka's `fetch.wait.max.ms` (left at its default, as ours): a
/// consumer that has read to the end of the log leaves a fetch waiting this
/// long at the broker, and after a re-assignment its next fetch queues
/// behind it. Between iterations, untimed, the consumers wait it out.
const FETCH_WAIT_MAX: Duration = Duration::from_millis(500);

/// Counts delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer that counts its delivery reports.
type LimitProducer = BaseProducer<Deliveries>;

/// Settings every client shares.
fn kafka_base(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "campusfood-limits");
    c
}

/// campusfood-kafka's producer settings, on a raw rdkafka producer.
fn producer(config: &KafkaConfig, extra: &[(&str, String)]) -> LimitProducer {
    let mut c = campusfood::transport::kafka::producer_config(config);
    c.set("client.id", "campusfood-limits");
    for (k, v) in extra {
        c.set(*k, v);
    }
    c.create_with_context(Deliveries::default())
        .expect("Kafka producer")
}

/// A `read_committed` consumer in `group` that commits nothing itself.
fn consumer(config: &KafkaConfig, group: &str) -> BaseConsumer {
    kafka_base(config)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("Kafka consumer")
}

/// Waits until every record `p` sent has its delivery report.
/// (`Producer::flush` of rdkafka's `BaseProducer` — and so its
/// `commit_transaction` — polls in steps of 100 ms, which would dominate
/// these timings; polling here in 1 ms steps.)
fn flush(p: &LimitProducer) {
    let deadline = Instant::now() + KAFKA_DEADLINE;
    while p.in_flight_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "delivery reports did not come in time"
        );
        p.poll(Duration::from_millis(1));
    }
}

/// Lets the fetch a consumer left waiting at the end of the log return
/// (see [`FETCH_WAIT_MAX`]), so that the next iteration's fetches do not
/// queue behind it.
fn settle(c: &BaseConsumer) {
    if let Some(Err(e)) = c.poll(FETCH_WAIT_MAX + Duration::from_millis(100)) {
        panic!("consumer failed: {e}");
    }
}

/// Sends `record`, waiting while the producer's queue is full.
fn produce_one(p: &LimitProducer, mut record: BaseRecord<'_, str, [u8]>) {
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                p.poll(Duration::from_millis(1));
                record = r;
            }
            Err((e, _)) => panic!("produce failed: {e}"),
        }
    }
}

struct Kafka {
    config: KafkaConfig,
    admin: AdminClient<DefaultClientContext>,
    partitions: i32,
    run: String,
    topics: Vec<String>,
    keys: Vec<String>,
    payload: Vec<u8>,
}

impl Kafka {
    fn new(config: KafkaConfig) -> Self {
        let admin = kafka_base(&config).create().expect("Kafka admin client");
        Self {
            partitions: config.order_partitions,
            config,
            admin,
            run: unique("limits"),
            topics: Vec::new(),
            keys: (0..RECORDS).map(|i| format!("order-{i:08}")).collect(),
            payload: value(200),
        }
    }

    /// Creates a fresh topic and waits until `p` sees a leader for each of
    /// its partitions.
    fn topic(&mut self, rt: &tokio::runtime::Runtime, name: &str, p: &LimitProducer) -> String {
        let topic = format!("{}-{name}-{}", self.run, self.topics.len());
        let opts = AdminOptions::new().operation_timeout(Some(self.config.request_timeout));
        let new = NewTopic::new(&topic, self.partitions, TopicReplication::Fixed(1));
        let results = rt
            .block_on(self.admin.create_topics([&new], &opts))
            .expect("create topic");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
        self.topics.push(topic.clone());
        let deadline = Instant::now() + KAFKA_DEADLINE;
        loop {
            let ready = p
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .is_ok_and(|m| {
                    m.topics().iter().any(|t| {
                        t.error().is_none()
                            && t.partitions().len() == self.partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                });
            if ready {
                return topic;
            }
            assert!(Instant::now() < deadline, "topic {topic} has no leaders");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Produces the 10,000 records to `topic` and waits for every report.
    fn produce(&self, p: &LimitProducer, topic: &str) {
        let before = p.context().ok.load(Ordering::Relaxed);
        for key in &self.keys {
            produce_one(
                p,
                BaseRecord::to(topic)
                    .key(key.as_str())
                    .payload(&self.payload[..]),
            );
        }
        flush(p);
        assert_eq!(
            p.context().failed.load(Ordering::Relaxed),
            0,
            "failed deliveries"
        );
        assert_eq!(
            p.context().ok.load(Ordering::Relaxed) - before,
            RECORDS as u64,
            "delivered"
        );
    }

    /// Sends one record to each partition of a fresh `topic` and waits for
    /// them, so that the timed records do not wait for the producer to
    /// learn the topic.
    fn prime(&self, p: &LimitProducer, topic: &str) {
        for partition in 0..self.partitions {
            produce_one(
                p,
                BaseRecord::to(topic)
                    .partition(partition)
                    .key("prime")
                    .payload(&self.payload[..]),
            );
        }
        flush(p);
    }

    /// Every partition of `topic` from the beginning.
    fn beginning(&self, topic: &str) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        tpl
    }

    fn delete_topics(&self, rt: &tokio::runtime::Runtime) {
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.config.request_timeout));
        for r in rt
            .block_on(self.admin.delete_topics(&names, &opts))
            .expect("delete topics")
        {
            r.unwrap_or_else(|(t, e)| panic!("cannot delete topic {t}: {e}"));
        }
    }
}

/// Reads one record; panics on a consumer error or after the deadline.
fn next(c: &BaseConsumer, deadline: Instant) -> rdkafka::message::BorrowedMessage<'_> {
    loop {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => return m,
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => assert!(Instant::now() < deadline, "records did not come in time"),
        }
    }
}

fn kafka(c: &mut Criterion) {
    let rt = runtime();
    let mut k = Kafka::new(KafkaConfig::default());
    let p = producer(&k.config, &[]);

    let mut g = c.benchmark_group("limits_kafka");
    heavy(&mut g);
    g.bench_function(BenchmarkId::new("produce", RECORDS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let topic = k.topic(&rt, "produce", &p);
                k.prime(&p, &topic);
                let started = Instant::now();
                k.produce(&p, &topic);
                total += started.elapsed();
            }
            total
        })
    });

    // The input of `consume` and `transactional_pipe`, produced once and
    // read from the beginning by each iteration.
    let mut input: Option<String> = None;
    let mut input = |k: &mut Kafka| -> String {
        input
            .get_or_insert_with(|| {
                let topic = k.topic(&rt, "input", &p);
                k.produce(&p, &topic);
                topic
            })
            .clone()
    };

    g.throughput(Throughput::Elements(RECORDS as u64));
    let reader = consumer(&k.config, &format!("{}-consume", k.run));
    g.bench_function(BenchmarkId::new("consume", RECORDS), |b| {
        b.iter_custom(|iters| {
            let topic = input(&mut k);
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let deadline = started + KAFKA_DEADLINE;
                reader.assign(&k.beginning(&topic)).expect("assign");
                for _ in 0..RECORDS {
                    next(&reader, deadline);
                }
                total += started.elapsed();
                reader.unassign().expect("unassign");
                settle(&reader);
            }
            total
        })
    });

    let inventory = InventoryOptions::default();
    let txn = TransactionalOptions::new("limits", "limits");
    let group = format!("{}-pipe", k.run);
    let pipe_in = consumer(&k.config, &group);
    let timeout_ms = txn.transaction_timeout.as_millis().to_string();
    let tp = producer(
        &k.config,
        &[
            ("transactional.id", format!("{}-pipe", k.run)),
            ("transaction.timeout.ms", timeout_ms.clone()),
            ("message.timeout.ms", timeout_ms),
        ],
    );
    let mut output: Option<String> = None;
    g.bench_function(BenchmarkId::new("transactional_pipe", RECORDS), |b| {
        b.iter_custom(|iters| {
            let topic = input(&mut k);
            let out = output
                .get_or_insert_with(|| {
                    let out = k.topic(&rt, "pipe-out", &tp);
                    tp.init_transactions(k.config.request_timeout)
                        .expect("init transactions");
                    out
                })
                .clone();
            let metadata = pipe_in.group_metadata().expect("group metadata");
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let deadline = started + KAFKA_DEADLINE;
                pipe_in.assign(&k.beginning(&topic)).expect("assign");
                let mut done = 0;
                while done < RECORDS {
                    // Gather up to max_batch records, for up to
                    // max_batch_wait after the first (as ours does).
                    let mut batch = vec![next(&pipe_in, deadline)];
                    let until = Instant::now() + txn.max_batch_wait;
                    while batch.len() < inventory.max_batch && done + batch.len() < RECORDS {
                        match pipe_in.poll(until.saturating_duration_since(Instant::now())) {
                            Some(Ok(m)) => batch.push(m),
                            Some(Err(e)) => panic!("consume failed: {e}"),
                            None => break,
                        }
                    }
                    tp.begin_transaction().expect("begin transaction");
                    let mut offsets = BTreeMap::new();
                    for m in &batch {
                        let key = std::str::from_utf8(m.key().unwrap_or_default()).expect("key");
                        produce_one(&tp, BaseRecord::to(&out).key(key).payload(&k.payload[..]));
                        offsets.insert(m.partition(), m.offset() + 1);
                    }
                    let mut tpl = TopicPartitionList::new();
                    for (partition, offset) in offsets {
                        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                            .expect("offset");
                    }
                    // Every output delivered, then the offsets, then the
                    // commit (as ours does).
                    flush(&tp);
                    tp.send_offsets_to_transaction(&tpl, &metadata, k.config.request_timeout)
                        .expect("offsets sent to the transaction");
                    tp.commit_transaction(k.config.request_timeout)
                        .expect("commit transaction");
                    done += batch.len();
                }
                total += started.elapsed();
                pipe_in.unassign().expect("unassign");
                settle(&pipe_in);
                // Every input record's offset committed with the outputs.
                let committed = pipe_in
                    .committed_offsets(k.beginning(&topic), k.config.request_timeout)
                    .expect("committed offsets");
                for e in committed.elements() {
                    let (_, high) = pipe_in
                        .fetch_watermarks(&topic, e.partition(), k.config.request_timeout)
                        .expect("watermarks");
                    assert_eq!(e.offset(), Offset::Offset(high), "committed to the end");
                }
            }
            total
        })
    });
    g.finish();
    drop((reader, pipe_in, tp, p));
    k.delete_topics(&rt);
}

criterion_group!(limits, http, redb, rabbitmq, kafka);

fn main() {
    let (_, rabbit) = amqp_endpoint(&RabbitConfig::default().url);
    require_broker("RabbitMQ", &rabbit, "rabbitmq");
    let kafka = KafkaConfig::default().bootstrap_servers;
    require_broker(
        "Kafka",
        kafka.split(',').next().unwrap_or_default(),
        "kafka",
    );
    limits();
    Criterion::default().configure_from_args().final_summary();
}
