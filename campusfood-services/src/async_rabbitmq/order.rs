//! OrderService for the asynchronous architectures (Part B, and any
//! publish/subscribe transport): accepts an order by storing it with its
//! `OrderPlaced` event in one durable transaction and answering 201 at
//! once; a relay publishes the event afterwards (transactional outbox).
//!
//! So an accepted order is never lost: not when the broker is down at that
//! moment (the relay publishes when it returns), not when the process dies
//! right after answering (the event is on disk). The relay may publish an
//! event twice (crash between publish and bookkeeping); every consumer is
//! idempotent. Status moves placed → reserved | failed → notified as the
//! [`StatusWorker`]s see the events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::events::{ErrorBody, OrderPlaced};
use campusfood_core::order::{Order, OrderStatus, PlaceOrder};
use campusfood_core::outbox::OutboxEntry;
use campusfood_core::telemetry;
use campusfood_core::transport::{
    Handler, Message, Reply, RequestHandler, Route, Transport, headers,
};
use campusfood_core::{OrderId, RequestId};
use tokio::sync::Notify;

use crate::async_rabbitmq::workers::StatusWorker;
use crate::reply::{error_reply, validation_reply};
use crate::stores::{OrderStore, Placed, StoreError};
use crate::timeline::{Hop, Step, Timeline, service};

/// How many dead letters the timeline of an order still `placed` looks
/// through for it.
pub const TIMELINE_DEAD_LETTER_SCAN: usize = 1_000;

/// How many outbox entries the relay publishes at once.
pub const RELAY_BATCH: usize = 256;

/// The asynchronous OrderService.
#[derive(Debug)]
pub struct AsyncOrderService {
    store: Arc<dyn OrderStore>,
    transport: Arc<dyn Transport>,
    /// Wakes the relay when an order was placed.
    wake: Notify,
}

impl AsyncOrderService {
    /// A service keeping orders in `store` and publishing on `transport`.
    pub fn new(store: Arc<dyn OrderStore>, transport: Arc<dyn Transport>) -> Self {
        campusfood_core::metric::register_orders_placed();
        Self {
            store,
            transport,
            wake: Notify::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OrderStore> {
        &self.store
    }

    /// Accepts an order from a JSON body `{"item", "qty"}`: 201 with the
    /// `OrderPlaced` event once it is durably stored, 400/422 for bad input,
    /// 503 when the store fails.
    pub async fn place(&self, body: &[u8], request_id: Option<RequestId>) -> Reply {
        let req = match PlaceOrder::from_json(body) {
            Ok(r) => r,
            Err(e) => return validation_reply(&e),
        };
        let mut order = Order::new(req, OrderStatus::Placed);
        if let Some(id) = request_id {
            order.request_id = id;
        }
        let mut fresh_ids = 0;
        let message = loop {
            let message = match placed_message(&order) {
                Ok(m) => m,
                Err(e) => return error_reply(500, &e.to_string()),
            };
            let entry = OutboxEntry::new(order.order_id.as_str(), &Route::ORDER_PLACED, &message);
            match self.store.place(&order, entry).await {
                Ok(Placed::Stored) => break message,
                // A generated id that names a stored order (another
                // process's count reached ours, rarely): the store never
                // overwrites; a fresh id.
                Ok(Placed::IdTaken) if fresh_ids < FRESH_IDS => {
                    fresh_ids += 1;
                    let taken = std::mem::replace(&mut order.order_id, OrderId::generate());
                    tracing::warn!(%taken, order_id = %order.order_id, "order id taken: trying a fresh one");
                }
                Ok(Placed::IdTaken) => {
                    return error_reply(503, "no free order id found; try again");
                }
                Err(e) => {
                    tracing::error!(error = %e, "order not stored");
                    return Reply::json(
                        503,
                        &ErrorBody {
                            error: format!("order could not be stored: {e}"),
                            field: None,
                            request_id: Some(order.request_id),
                        },
                    )
                    .unwrap_or_else(|e| error_reply(500, &e.to_string()));
                }
            }
        };
        tracing::info!(order_id = %order.order_id, request_id = %order.request_id, "order placed");
        campusfood_core::metric::order_placed();
        self.wake.notify_one();
        Reply {
            status: 201,
            body: message.body,
        }
    }

    /// The order `id`, if known.
    pub async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.store.get(id).await
    }

    /// The order `id`'s timeline (`None` if unknown): accepted (its
    /// `created_at`), then the hops the store recorded — published, and
    /// each status event with the attempt it took at the service that
    /// sent it (earlier attempts shown as one `retried` hop) — and, while
    /// the order is still `placed`, its `order.placed` among the dead
    /// letters when the transport keeps them
    /// ([`TIMELINE_DEAD_LETTER_SCAN`] at most are read).
    pub async fn timeline(&self, id: &OrderId) -> Result<Option<Timeline>, StoreError> {
        let Some((order, stored)) = self.store.timeline(id).await? else {
            return Ok(None);
        };
        let mut hops = vec![Hop::at(
            Some(order.created_at.clone()),
            service::ORDER,
            Step::Accepted,
        )];
        for hop in stored {
            push_with_retries(&mut hops, hop);
        }
        if order.status == OrderStatus::Placed {
            if let Some(dead) = self.transport.as_dead_letters() {
                match dead
                    .dead_letters(&Route::ORDER_PLACED, TIMELINE_DEAD_LETTER_SCAN)
                    .await
                {
                    Ok(letters) => {
                        for d in letters.iter().filter(|d| about(&d.message, id)) {
                            let hop = Hop::at(None, service::INVENTORY, Step::DeadLettered)
                                .attempt(d.attempts)
                                .detail(format!("dead letter {}: {}", d.id, d.reason));
                            push_with_retries(&mut hops, hop);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(order_id = %id, error = %e, "dead letters unreadable for a timeline");
                    }
                }
            }
        }
        Ok(Some(
            Timeline {
                order_id: order.order_id,
                status: order.status,
                hops,
            }
            .sorted(),
        ))
    }

    /// Publishes up to [`RELAY_BATCH`] waiting events (concurrently, each
    /// confirmed), and removes those published from the outbox. Returns how
    /// many were published and how many failed.
    pub async fn relay_once(&self) -> Result<(usize, usize), StoreError> {
        let entries = self.store.outbox(RELAY_BATCH).await?;
        if entries.is_empty() {
            return Ok((0, 0));
        }
        // Stamped before sending: a consumer's reaction can come before the
        // confirm, never before the send.
        let sent = Hop::now(service::ORDER, Step::Published);
        let sends = entries.iter().map(|e| async move {
            let route = e.route();
            match self.transport.publish(&route, e.message()).await {
                Ok(()) => Some(e.id.clone()),
                Err(err) => {
                    tracing::warn!(order_id = %e.id, error = %err, "publish failed; will retry");
                    None
                }
            }
        });
        let results = futures::future::join_all(sends).await;
        let published: Vec<String> = results.into_iter().flatten().collect();
        let failed = entries.len() - published.len();
        let count = published.len();
        if count > 0 {
            self.store.published(published, &sent).await?;
        }
        Ok((count, failed))
    }

    /// Runs the relay until `shutdown`: publishes whenever an order is
    /// placed (and every `poll` anyway), backing off while the transport
    /// fails.
    pub async fn run_relay(
        self: Arc<Self>,
        poll: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::ZERO;
        loop {
            let wait = if backoff.is_zero() { poll } else { backoff };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.wake.notified(), if backoff.is_zero() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            loop {
                match self.relay_once().await {
                    Ok((0, 0)) => {
                        backoff = Duration::ZERO;
                        break;
                    }
                    Ok((_, 0)) => backoff = Duration::ZERO,
                    Ok((_, _failed)) => {
                        backoff =
                            (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "outbox unreadable");
                        backoff =
                            (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
                        break;
                    }
                }
            }
        }
    }

    /// The status handlers this service subscribes: each event route with
    /// the status it moves orders to.
    pub fn status_workers(&self) -> Vec<(Route, Arc<dyn Handler>)> {
        [
            (Route::INVENTORY_RESERVED, OrderStatus::Reserved),
            (Route::INVENTORY_FAILED, OrderStatus::Failed),
            (Route::ORDER_NOTIFIED, OrderStatus::Notified),
        ]
        .into_iter()
        .map(|(route, status)| {
            let worker: Arc<dyn Handler> = Arc::new(StatusWorker::new(self.store.clone(), status));
            (route, worker)
        })
        .collect()
    }
}

/// Serves `POST /order`.
#[async_trait]
impl RequestHandler for AsyncOrderService {
    async fn call(&self, request: Message) -> Reply {
        self.place(&request.body, request.request_id()).await
    }
}

/// Pushes `hop`, preceded by a `retried` hop for its earlier attempts at
/// the same service when it was not the first.
fn push_with_retries(hops: &mut Vec<Hop>, hop: Hop) {
    if hop.attempt > 1 {
        let earlier = hop.attempt - 1;
        hops.push(
            Hop::at(None, &hop.service, Step::Retried)
                .attempt(earlier)
                .detail(if earlier == 1 {
                    "attempt 1 failed and was retried".to_owned()
                } else {
                    format!("attempts 1–{earlier} failed and were retried")
                }),
        );
    }
    hops.push(hop);
}

/// Whether `message` is about order `id` (its key, or its body's
/// `order_id`).
fn about(message: &Message, id: &OrderId) -> bool {
    if let Some(key) = &message.key {
        return key == id.as_str();
    }
    serde_json::from_slice::<serde_json::Value>(&message.body)
        .ok()
        .and_then(|v| {
            v.get("order_id")
                .and_then(|o| o.as_str().map(|o| o == id.as_str()))
        })
        .unwrap_or(false)
}

/// Fresh ids tried when a generated order id is stored already.
const FRESH_IDS: u32 = 3;

/// `order`'s `OrderPlaced`, keyed by its id, with its request id and the
/// trace context of the request that placed it: stored in the outbox with
/// the event, so that the relay publishes it in the order's trace.
fn placed_message(order: &Order) -> Result<Message, campusfood_core::codec::CodecError> {
    let mut message = Message::json(&OrderPlaced::from(order))?
        .with_key(order.order_id.as_str())
        .with_header(headers::REQUEST_ID, order.request_id.to_string());
    telemetry::inject(&tracing::Span::current(), &mut message.headers);
    Ok(message)
}
