//! OrderService for synchronous REST (Part A): the orchestrator. For each
//! order it calls inventory's reserve, then notification's send, both
//! blocking, over whatever request/reply [`Transport`] it is given.
//!
//! What it adds to the original, each switchable ([`OrderOptions`]):
//! a per-hop timeout (always), retry with jittered backoff of the
//! idempotent reserve call, a circuit breaker that fails fast while
//! inventory is down, and a bulkhead that bounds orders in flight. A
//! notification that fails is kept in an [`Outbox`] and retried until it
//! goes through; the order is confirmed either way.
//!
//! Compensation: an order that fails after inventory may have reserved for
//! it — a timeout or a lost connection on the reserve call, a reservation
//! answered unreadably, or the order's future dropped before it was
//! answered (a client gone, a server stopping) — gets its reservation
//! released: a `POST /release` ([`Route::RELEASE`]) kept in the same
//! outbox *before* the error is answered, so a crash after the answer
//! still releases (the retrier sends it after a restart). Inventory's
//! release is idempotent and also works when it arrives before the
//! reservation (see `InventoryLedger::release`). A refusal (409, 404) or a
//! 5xx after only answered attempts held nothing, and releases nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::config::{BreakerConfig, HttpConfig, PageLimits, RetryConfig};
use campusfood_core::events::{NotifyRequest, ReleaseRequest, ReserveOk, ReserveRequest};
use campusfood_core::order::{Order, OrderStatus, PlaceOrder};
use campusfood_core::outbox::{Outbox, OutboxEntry, OutboxError};
use campusfood_core::telemetry;
use campusfood_core::transport::{
    Message, Reply, RequestHandler, Route, Transport, TransportError, headers,
};
use campusfood_core::{Item, OrderId, Quantity, RequestId, ReservationId};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use crate::inventory::{ReserveResult, UnreadableReply};
use crate::reply::{error_reply, validation_reply};
use crate::sync_rest::resilience::{CircuitBreaker, CircuitOpen, backoff};
use crate::timeline::{Hop, RecentTimelines, Step, Timeline, service};

/// The `hop` label of the breaker on the call to inventory.
pub const INVENTORY_HOP: &str = "inventory";

/// How many recent orders the service keeps for `GET /orders`.
pub const RECENT_ORDERS: usize = 10_000;

/// The OrderService's resilience settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderOptions {
    /// Timeout of each downstream call.
    pub downstream_timeout: Duration,
    /// Retry of the reserve call; `None` = off.
    pub retry: Option<RetryConfig>,
    /// Circuit breaker on the inventory hop; `None` = off.
    pub breaker: Option<BreakerConfig>,
    /// Bulkhead: at most this many orders in flight; `None` = unbounded.
    pub max_in_flight: Option<usize>,
    /// How often kept calls (failed notifications, releases) are retried.
    pub notification_retry_interval: Duration,
    /// Page sizes of `GET /orders`.
    pub orders_page: PageLimits,
}

impl From<&HttpConfig> for OrderOptions {
    fn from(c: &HttpConfig) -> Self {
        Self {
            downstream_timeout: c.downstream_timeout,
            retry: c.retry,
            breaker: c.breaker,
            max_in_flight: c.max_in_flight,
            notification_retry_interval: c.notification_retry_interval,
            orders_page: c.orders_page,
        }
    }
}

impl Default for OrderOptions {
    fn default() -> Self {
        Self::from(&HttpConfig::default())
    }
}

/// Why the inventory hop produced no reply.
#[derive(Debug)]
enum HopError {
    CircuitOpen(CircuitOpen),
    Transport(TransportError),
}

/// Recently confirmed orders, bounded. Each has a sequence number, so a
/// page after a given order starts without a scan.
#[derive(Debug, Default)]
struct Recent {
    by_id: HashMap<OrderId, (u64, Order)>,
    order: VecDeque<OrderId>,
    /// The sequence number of `order`'s front.
    first: u64,
}

/// One page of recent orders ([`OrderService::orders_page`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OrdersPage {
    /// The orders, oldest first.
    pub orders: Vec<Order>,
    /// Whether more recent orders follow the last of these.
    pub more: bool,
}

/// A page was asked for after an order the service does not hold: never
/// confirmed here, or older than the last [`RECENT_ORDERS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no recent order {0}: never confirmed here, or older than the last {RECENT_ORDERS}")]
pub struct UnknownOrder(pub OrderId);

/// The synchronous OrderService.
#[derive(Debug)]
pub struct OrderService {
    transport: Arc<dyn Transport>,
    outbox: Arc<dyn Outbox>,
    options: OrderOptions,
    breaker: Option<CircuitBreaker>,
    bulkhead: Option<Arc<Semaphore>>,
    recent: Mutex<Recent>,
    /// The timelines of the last [`RECENT_ORDERS`] orders placed,
    /// confirmed or not.
    timelines: RecentTimelines,
}

/// `201` body of the sync `POST /order`: the order, confirmed.
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OrderConfirmed {
    /// The new order's id.
    pub order_id: OrderId,
    /// The request that placed it.
    pub request_id: RequestId,
    /// What was ordered.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
    /// Always `confirmed`.
    pub status: OrderStatus,
    /// Inventory's reservation.
    pub reservation_id: ReservationId,
    /// How long the order took to confirm, in milliseconds.
    pub elapsed_ms: f64,
}

/// Milliseconds since `start`, to the microsecond.
fn elapsed_ms(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

impl OrderService {
    /// A service calling inventory and notification over `transport`,
    /// keeping failed notifications in `outbox`.
    pub fn new(
        transport: Arc<dyn Transport>,
        outbox: Arc<dyn Outbox>,
        options: OrderOptions,
    ) -> Self {
        campusfood_core::metric::register_orders_placed();
        Self {
            breaker: options
                .breaker
                .map(|c| CircuitBreaker::named(INVENTORY_HOP, c)),
            bulkhead: options.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
            transport,
            outbox,
            options,
            recent: Mutex::new(Recent::default()),
            timelines: RecentTimelines::new(RECENT_ORDERS),
        }
    }

    /// The settings in force.
    pub fn options(&self) -> &OrderOptions {
        &self.options
    }

    /// The circuit breaker, when one is configured.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `limit` recently confirmed orders, oldest first: from the
    /// oldest kept, or from the one right after `after`.
    pub fn orders_page(
        &self,
        after: Option<&OrderId>,
        limit: usize,
    ) -> Result<OrdersPage, UnknownOrder> {
        let recent = self.recent();
        let start = match after {
            None => 0,
            Some(id) => match recent.by_id.get(id) {
                Some((seq, _)) => usize::try_from(seq - recent.first + 1).unwrap_or(usize::MAX),
                None => return Err(UnknownOrder(id.clone())),
            },
        };
        let len = recent.order.len();
        let (start, end) = (start.min(len), start.saturating_add(limit).min(len));
        let orders = recent
            .order
            .range(start..end)
            .filter_map(|id| recent.by_id.get(id).map(|(_, o)| o.clone()))
            .collect();
        Ok(OrdersPage {
            orders,
            more: end < len,
        })
    }

    /// Where one of the last [`RECENT_ORDERS`] orders placed has been:
    /// accepted, each reserve attempt (`retried`, then `reserved` or
    /// `failed`), notified or kept for another try, released.
    pub fn timeline(&self, id: &OrderId) -> Option<Timeline> {
        self.timelines.get(id)
    }

    /// A recently confirmed order.
    pub fn order(&self, id: &OrderId) -> Option<Order> {
        self.recent().by_id.get(id).map(|(_, o)| o.clone())
    }

    fn remember(&self, order: Order) {
        let mut recent = self.recent();
        if recent.order.len() >= RECENT_ORDERS {
            if let Some(old) = recent.order.pop_front() {
                recent.by_id.remove(&old);
                recent.first += 1;
            }
        }
        let seq = recent.first + recent.order.len() as u64;
        recent.order.push_back(order.order_id.clone());
        recent.by_id.insert(order.order_id.clone(), (seq, order));
    }

    /// Places an order from a JSON body `{"item", "qty"}`: validates,
    /// reserves, notifies, and answers with the contract's status and body.
    /// `request_id` is the caller's, when it sent one.
    pub async fn place(&self, body: &[u8], request_id: Option<RequestId>) -> Reply {
        let start = Instant::now();
        let req = match PlaceOrder::from_json(body) {
            Ok(r) => r,
            Err(e) => return validation_reply(&e),
        };
        // The bulkhead refuses at once when full (tower's ConcurrencyLimit
        // would queue the order instead): a tokio semaphore's try_acquire.
        let _permit = match &self.bulkhead {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::warn!("bulkhead full: order refused");
                    return error_reply(503, "too many orders in flight; try again shortly");
                }
            },
        };
        let mut order = Order::new(req, OrderStatus::Confirmed);
        if let Some(id) = request_id {
            order.request_id = id;
        }
        campusfood_core::metric::order_placed();
        let span = tracing::info_span!("order", order_id = %order.order_id, request_id = %order.request_id);
        self.place_order(order, start).instrument(span).await
    }

    async fn place_order(&self, mut order: Order, start: Instant) -> Reply {
        // Armed until the order is answered: a future dropped on the way (a
        // client gone, a server stopping) journals the release on drop.
        let mut release = ReleaseOnDrop::new(self.outbox.clone(), &order);
        let mut inconclusive = false;
        let mut fresh_ids = 0;
        let mut attempts = 0;
        self.timelines
            .record(&order.order_id, OrderStatus::Placed, accepted(&order));
        let ok = loop {
            let reserved = self.reserve(&order, &mut inconclusive, &mut attempts).await;
            match reservation(reserved, &order) {
                // The generated id names another order at inventory
                // (another process's count reached ours, rarely): nothing
                // was taken for this one, and the other's stock is not ours
                // to release.
                Err(refused) if refused.id_taken && fresh_ids < FRESH_IDS => {
                    fresh_ids += 1;
                    release.disarm();
                    let taken = order.order_id.clone();
                    order.order_id = OrderId::generate();
                    self.timelines.forget(&taken);
                    let fresh = format!("id {taken} was taken at inventory: a fresh one");
                    let hop = accepted(&order).detail(fresh);
                    self.timelines
                        .record(&order.order_id, OrderStatus::Placed, hop);
                    tracing::warn!(%taken, order_id = %order.order_id, "order id already used at inventory: trying a fresh one");
                    release = ReleaseOnDrop::new(self.outbox.clone(), &order);
                    inconclusive = false;
                }
                other => break other,
            }
        };
        let ok = match ok {
            Ok(ok) => ok,
            Err(refused) => {
                self.timelines.record(
                    &order.order_id,
                    OrderStatus::Failed,
                    Hop::now(service::INVENTORY, Step::Failed)
                        .attempt(attempts.max(1))
                        .detail(format!("{}: {}", refused.status, refused.error)),
                );
                if refused.holds_stock || inconclusive {
                    // Before answering, so that a crash after the answer
                    // still releases (the retrier sends it on restart).
                    release.journal(&refused.error).await;
                } else {
                    release.disarm();
                }
                return refused.reply(&order, start);
            }
        };
        self.timelines.record(
            &order.order_id,
            OrderStatus::Confirmed,
            Hop::now(service::INVENTORY, Step::Reserved)
                .attempt(attempts.max(1))
                .detail(format!("reservation {}", ok.reservation_id)),
        );
        self.notify(&order).await;
        let body = OrderConfirmed {
            order_id: order.order_id.clone(),
            request_id: order.request_id,
            item: order.item.clone(),
            qty: order.qty,
            status: OrderStatus::Confirmed,
            reservation_id: ok.reservation_id,
            elapsed_ms: elapsed_ms(start),
        };
        tracing::info!(remaining = ok.remaining, "order confirmed");
        self.remember(order);
        release.disarm();
        Reply::json(201, &body).unwrap_or_else(|e| error_reply(500, &e.to_string()))
    }

    /// The reserve hop: breaker, timeout, and (when on) retry of 5xx and
    /// transport failures — safe because reserve is idempotent per order.
    /// Sets `inconclusive` when an attempt ended without an answer (a
    /// timeout, a lost connection): inventory may have reserved all the
    /// same. The timeout is the transport's (reqwest's, over HTTP); the
    /// retry loop is written out because every attempt also settles the
    /// breaker and may mark the order inconclusive, which a retry
    /// combinator's closure could only report through shared state.
    /// `attempt` says which attempt answered last (0 when none was made:
    /// the circuit was open), and each failed attempt that is retried goes
    /// on the order's timeline.
    async fn reserve(
        &self,
        order: &Order,
        inconclusive: &mut bool,
        attempt: &mut u32,
    ) -> Result<Reply, HopError> {
        let attempts = self.options.retry.map_or(1, |r| r.max_attempts.max(1));
        let message = Message::json(&ReserveRequest::for_order(order))
            .map_err(|e| HopError::Transport(e.into()))?
            .with_key(order.order_id.as_str())
            .with_header(headers::REQUEST_ID, order.request_id.to_string());
        *attempt = 0;
        loop {
            // Settled below; if this future is dropped before that, the
            // call's drop settles it (see BreakerCall).
            let call = match &self.breaker {
                Some(b) => Some(b.try_acquire().map_err(HopError::CircuitOpen)?),
                None => None,
            };
            *attempt += 1;
            let msg = message
                .clone()
                .with_header(headers::ATTEMPTS, attempt.to_string());
            let result = self
                .transport
                .request(&Route::RESERVE, msg, self.options.downstream_timeout)
                .await;
            let failed = match &result {
                Ok(reply) => reply.status >= 500,
                Err(_) => {
                    *inconclusive = true;
                    true
                }
            };
            match call {
                Some(call) if failed => call.failed(),
                Some(call) => call.succeeded(),
                None => {}
            }
            let retryable = match &result {
                Ok(_) => failed,
                Err(e) => e.is_retryable(),
            };
            match self.options.retry {
                Some(retry) if retryable && *attempt < attempts => {
                    let why = match &result {
                        Ok(reply) => format!("answered {}", reply.status),
                        Err(e) => e.to_string(),
                    };
                    self.timelines.append(
                        &order.order_id,
                        Hop::now(service::INVENTORY, Step::Retried)
                            .attempt(*attempt)
                            .detail(why),
                    );
                    let wait = backoff(&retry, *attempt + 1);
                    tracing::info!(attempt = *attempt + 1, ?wait, "retrying reserve");
                    tokio::time::sleep(wait).await;
                }
                _ => return result.map_err(HopError::Transport),
            }
        }
    }

    /// The notify hop. A failure does not fail the order: the notification
    /// goes to the outbox and is retried.
    async fn notify(&self, order: &Order) {
        let mut message = match Message::json(&NotifyRequest::confirming(order)) {
            Ok(m) => m
                .with_key(order.order_id.as_str())
                .with_header(headers::REQUEST_ID, order.request_id.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode notification");
                return;
            }
        };
        // With the order's trace context, so that a notification kept for
        // retry is sent later in the order's trace.
        telemetry::inject(&tracing::Span::current(), &mut message.headers);
        let error = match self
            .transport
            .request(
                &Route::NOTIFY,
                message.clone(),
                self.options.downstream_timeout,
            )
            .await
        {
            Ok(reply) if reply.is_success() => {
                let hop = Hop::now(service::NOTIFICATION, Step::Notified);
                self.timelines.append(&order.order_id, hop);
                return;
            }
            Ok(reply) => format!("notification answered {}", reply.status),
            Err(e) => e.to_string(),
        };
        self.timelines.append(
            &order.order_id,
            Hop::now(service::NOTIFICATION, Step::Kept).detail(error.clone()),
        );
        let mut entry = OutboxEntry::new(order.order_id.as_str(), &Route::NOTIFY, &message);
        entry.attempts = 1;
        entry.last_error = Some(error.clone());
        match self.outbox.put(entry).await {
            Ok(()) => tracing::warn!(%error, "notification failed; kept for retry"),
            // Nowhere left to keep it: say everything needed to resend it.
            Err(e) => {
                tracing::error!(%error, outbox_error = %e, notification = %String::from_utf8_lossy(&message.body), "notification failed and could not be kept")
            }
        }
    }

    /// Calls kept in the outbox until delivered: failed notifications and
    /// releases of failed orders' reservations.
    pub async fn kept_calls(&self) -> Result<u64, OutboxError> {
        self.outbox.len().await
    }

    /// One pass over the outbox: resends each kept call to its route,
    /// removes those delivered. Returns how many were delivered.
    pub async fn retry_kept_calls(&self) -> Result<usize, OutboxError> {
        let mut delivered = 0;
        for mut entry in self.outbox.pending(256).await? {
            let result = self
                .transport
                .request(
                    &entry.route(),
                    entry.message(),
                    self.options.downstream_timeout,
                )
                .await;
            match result {
                Ok(reply) if reply.is_success() => {
                    self.outbox.remove(&entry.id).await?;
                    delivered += 1;
                    self.journal_kept_call(&entry);
                    tracing::info!(id = %entry.id, route = %entry.route, attempts = entry.attempts + 1, "kept call delivered");
                }
                other => {
                    entry.attempts += 1;
                    entry.last_error = Some(match other {
                        Ok(reply) => format!("answered {}", reply.status),
                        Err(e) => e.to_string(),
                    });
                    self.outbox.put(entry).await?;
                }
            }
        }
        Ok(delivered)
    }

    /// A kept call went through: on its order's timeline.
    fn journal_kept_call(&self, entry: &OutboxEntry) {
        let (service, step) = match entry.route() {
            r if r == Route::NOTIFY => (service::NOTIFICATION, Step::Notified),
            r if r == Route::RELEASE => (service::INVENTORY, Step::Released),
            _ => return,
        };
        let id = entry.id.strip_suffix("/release").unwrap_or(&entry.id);
        if let Ok(id) = OrderId::parse(id) {
            self.timelines
                .append(&id, Hop::now(service, step).attempt(entry.attempts + 1));
        }
    }

    /// Retries kept calls every
    /// [`OrderOptions::notification_retry_interval`] until `shutdown`.
    pub async fn run_retrier(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.options.notification_retry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.retry_kept_calls().await {
                        tracing::error!(error = %e, "outbox unreadable");
                    }
                }
            }
        }
    }
}

/// Why an order was not confirmed, as the OrderService answers it.
struct Refused {
    status: u16,
    error: String,
    extra: Option<(&'static str, Value)>,
    /// Inventory answered that it reserved, yet the order fails.
    holds_stock: bool,
    /// Inventory answered that the order id names another order.
    id_taken: bool,
}

impl Refused {
    fn new(status: u16, error: String) -> Self {
        Self {
            status,
            error,
            extra: None,
            holds_stock: false,
            id_taken: false,
        }
    }

    fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra = Some((key, value));
        self
    }

    /// `{error, order_id, request_id, elapsed_ms}` plus the extra field.
    fn reply(self, order: &Order, start: Instant) -> Reply {
        let mut body = json!({
            "error": self.error,
            "order_id": order.order_id,
            "request_id": order.request_id,
            "elapsed_ms": elapsed_ms(start),
        });
        if let (Some((k, v)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.insert(k.to_owned(), v);
        }
        tracing::info!(status = self.status, "order not confirmed");
        Reply::json(self.status, &body).unwrap_or_else(|e| error_reply(500, &e.to_string()))
    }
}

/// The timeline's first hop of `order`: accepted when it was created.
fn accepted(order: &Order) -> Hop {
    Hop::at(
        Some(order.created_at.clone()),
        service::ORDER,
        Step::Accepted,
    )
}

/// Fresh order ids tried when inventory says a generated one is taken.
const FRESH_IDS: u32 = 3;

/// The reserve hop's outcome as a reservation, or why the order fails.
fn reservation(reserved: Result<Reply, HopError>, order: &Order) -> Result<ReserveOk, Refused> {
    let reply = match reserved {
        Ok(reply) => reply,
        Err(HopError::CircuitOpen(e)) => return Err(Refused::new(503, e.to_string())),
        Err(HopError::Transport(e @ TransportError::Timeout { .. })) => {
            return Err(Refused::new(504, format!("inventory timed out: {e}")));
        }
        Err(HopError::Transport(e)) => {
            return Err(Refused::new(503, format!("inventory unavailable: {e}")));
        }
    };
    let inventory = || reply.decode().unwrap_or(Value::Null);
    let s = reply.status;
    let answer = ReserveResult::from_reply(&ReserveRequest::for_order(order), s, &reply.body);
    match answer {
        Ok(ReserveResult::Reserved(ok)) => Ok(ok),
        Err(UnreadableReply::Body {
            status: 200,
            reason,
        }) => Err(Refused {
            holds_stock: true,
            ..Refused::new(
                502,
                format!("inventory answered an unreadable reservation: {reason}"),
            )
        }),
        Ok(ReserveResult::IdTaken { .. }) => Err(Refused {
            id_taken: true,
            ..Refused::new(409, "the order id is taken at inventory".to_owned())
                .with("inventory_response", inventory())
        }),
        Ok(ReserveResult::Insufficient(_)) => {
            Err(Refused::new(409, "insufficient stock".to_owned())
                .with("inventory_response", inventory()))
        }
        Ok(ReserveResult::UnknownItem { .. }) => {
            Err(Refused::new(404, format!("unknown item {}", order.item))
                .with("item", json!(order.item)))
        }
        Ok(ReserveResult::Injected { .. } | ReserveResult::Unavailable { .. }) => {
            Err(Refused::new(503, format!("inventory failed with {s}"))
                .with("inventory_response", inventory()))
        }
        Ok(ReserveResult::Released { .. }) | Err(_) => Err(Refused::new(
            502,
            format!("inventory refused the reservation with {s}"),
        )
        .with("inventory_response", inventory())),
    }
}

/// The release of an order's reservation, kept in the outbox unless
/// disarmed: by [`journal`](Self::journal) before a failed order is
/// answered, or from `Drop` when the order's future is dropped before it
/// was answered (a client gone, a server stopping) — then nothing else
/// would release what inventory may have reserved. The release message is
/// only made when it is kept.
struct ReleaseOnDrop {
    outbox: Arc<dyn Outbox>,
    /// The order to release; `None` once disarmed.
    order: Option<(OrderId, RequestId)>,
    /// The order's trace context, for the release's headers: `Drop` may
    /// run outside the order's span.
    trace: BTreeMap<String, String>,
}

impl ReleaseOnDrop {
    fn new(outbox: Arc<dyn Outbox>, order: &Order) -> Self {
        let mut trace = BTreeMap::new();
        telemetry::inject(&tracing::Span::current(), &mut trace);
        Self {
            outbox,
            order: Some((order.order_id.clone(), order.request_id)),
            trace,
        }
    }

    /// The order is answered and keeps (or never took) its stock.
    fn disarm(&mut self) {
        self.order = None;
    }

    /// The outbox entry releasing the order, `why` as its last error.
    fn entry(&self, why: &str) -> Option<OutboxEntry> {
        let (order_id, request_id) = self.order.as_ref()?;
        let request = ReleaseRequest {
            order_id: order_id.clone(),
            request_id: Some(*request_id),
        };
        let mut message = match Message::json(&request) {
            Ok(m) => m
                .with_key(order_id.as_str())
                .with_header(headers::REQUEST_ID, request_id.to_string()),
            Err(e) => {
                tracing::error!(error = %e, %order_id, "cannot encode a release");
                return None;
            }
        };
        message.headers.extend(self.trace.clone());
        let mut entry = OutboxEntry::new(format!("{order_id}/release"), &Route::RELEASE, &message);
        entry.last_error = Some(why.to_owned());
        Some(entry)
    }

    /// Keeps the release in the outbox (durable when this returns), then
    /// disarms. Dropped before that, `Drop` keeps it.
    async fn journal(&mut self, why: &str) {
        if let Some(entry) = self.entry(why) {
            keep_release(&*self.outbox, entry).await;
        }
        self.disarm();
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some(entry) = self.entry("the order was abandoned before it was answered") else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let outbox = self.outbox.clone();
                runtime.spawn(async move { keep_release(&*outbox, entry).await });
            }
            Err(_) => {
                tracing::error!(release = %entry.body, "order abandoned outside a runtime: its release could not be kept");
            }
        }
    }
}

/// Puts a release in the outbox; when even that fails, says everything
/// needed to release by hand.
async fn keep_release(outbox: &dyn Outbox, entry: OutboxEntry) {
    let body = entry.body.clone();
    match outbox.put(entry).await {
        Ok(()) => tracing::info!(release = %body, "release of the failed order's reservation kept"),
        Err(e) => {
            tracing::error!(outbox_error = %e, release = %body, "release could not be kept: POST it to inventory's /release by hand")
        }
    }
}

/// Serves `POST /order`. The caller's request id (`x-request-id`, a UUID)
/// is kept when present.
#[async_trait]
impl RequestHandler for OrderService {
    async fn call(&self, request: Message) -> Reply {
        self.place(&request.body, request.request_id()).await
    }
}

#[cfg(test)]
mod tests {
    use campusfood_core::fault::{FaultInjector, FaultUpdate};
    use campusfood_core::ledger::{InventoryLedger, MemoryLedger};
    use campusfood_core::outbox::MemoryOutbox;
    use campusfood_testkit::gated::AnswersLate;
    use campusfood_transport::memory::MemoryTransport;

    use super::*;
    use crate::inventory::{InventoryService, ReleaseHandler};
    use crate::notification::NotificationService;

    /// The three services in process; inventory's faults to steer it.
    fn system(options: OrderOptions) -> (OrderService, Arc<FaultInjector>) {
        let ledger = Arc::new(MemoryLedger::new(&"burger=100".parse().unwrap()));
        system_on(ledger, options)
    }

    /// Like [`system`], on `ledger`.
    fn system_on(
        ledger: Arc<dyn InventoryLedger>,
        options: OrderOptions,
    ) -> (OrderService, Arc<FaultInjector>) {
        let transport = MemoryTransport::new();
        let faults = Arc::new(FaultInjector::default());
        let inventory = Arc::new(InventoryService::new(ledger, faults.clone()));
        transport.serve(Route::RESERVE, inventory.clone());
        transport.serve(Route::RELEASE, Arc::new(ReleaseHandler(inventory)));
        let notification = NotificationService::new(Arc::new(FaultInjector::default()));
        transport.serve(Route::NOTIFY, Arc::new(notification));
        let order = OrderService::new(Arc::new(transport), Arc::new(MemoryOutbox::new()), options);
        (order, faults)
    }

    const BURGER: &[u8] = br#"{"item": "burger", "qty": 1}"#;

    fn set(faults: &FaultInjector, delay: f64, failure_rate: f64) {
        faults
            .configure(&FaultUpdate {
                delay: Some(delay),
                failure_rate: Some(failure_rate),
                seed: None,
            })
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_mid_call_does_not_leave_the_circuit_open() {
        let (order, faults) = system(OrderOptions {
            breaker: Some(BreakerConfig {
                failure_threshold: 1,
                open_for: Duration::from_secs(2),
            }),
            ..OrderOptions::default()
        });
        set(&faults, 0.0, 1.0);
        assert_eq!(order.place(BURGER, None).await.status, 503);
        set(&faults, 30.0, 0.0);
        tokio::time::advance(Duration::from_secs(2)).await;
        // The probe: inventory is slow, and the caller gives up first.
        let gave_up = tokio::time::timeout(Duration::from_secs(1), order.place(BURGER, None)).await;
        assert!(gave_up.is_err(), "the probe should still be waiting");
        // Inventory is well again; after a cool-down a new probe goes
        // through and closes the circuit.
        set(&faults, 0.0, 0.0);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let reply = order.place(BURGER, None).await;
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    async fn burgers(ledger: &dyn InventoryLedger) -> u64 {
        ledger.stock().await.unwrap()[&campusfood_core::Item::parse("burger").unwrap()]
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_dropped_after_inventory_reserved_is_released() {
        let ledger = Arc::new(AnswersLate::new("burger=100"));
        let (order, _) = system_on(ledger.clone(), OrderOptions::default());
        // Inventory reserves; the caller gives up before its answer comes.
        let gave_up = tokio::time::timeout(Duration::from_secs(1), order.place(BURGER, None)).await;
        assert!(gave_up.is_err());
        assert_eq!(burgers(&*ledger).await, 99);
        // The dropped order kept a release, which the retrier delivers.
        campusfood_testkit::until("the release is kept", Duration::from_secs(10), async || {
            order.kept_calls().await.unwrap() == 1
        })
        .await;
        assert_eq!(order.retry_kept_calls().await.unwrap(), 1);
        assert_eq!(burgers(&*ledger).await, 100);
        assert_eq!(order.kept_calls().await.unwrap(), 0);
        ledger.open();
    }

    /// A ledger where the first order's id was already used by another
    /// order (for 2 burgers): a generated id that collides.
    #[derive(Debug)]
    struct FirstIdTaken {
        inner: MemoryLedger,
        taken: std::sync::Mutex<Option<OrderId>>,
    }

    #[async_trait::async_trait]
    impl InventoryLedger for FirstIdTaken {
        async fn reserve(
            &self,
            order: &OrderId,
            item: &campusfood_core::Item,
            qty: campusfood_core::Quantity,
        ) -> Result<campusfood_core::ledger::Reservation, campusfood_core::ledger::LedgerError>
        {
            let first = {
                let mut taken = self.taken.lock().unwrap();
                let first = taken.is_none();
                taken.get_or_insert_with(|| order.clone());
                first
            };
            if first {
                let two = campusfood_core::Quantity::new(2).unwrap();
                self.inner.reserve(order, item, two).await?;
            }
            self.inner.reserve(order, item, qty).await
        }
        async fn release(
            &self,
            order: &OrderId,
        ) -> Result<campusfood_core::ledger::Release, campusfood_core::ledger::LedgerError>
        {
            self.inner.release(order).await
        }
        async fn stock(
            &self,
        ) -> Result<
            std::collections::BTreeMap<campusfood_core::Item, u64>,
            campusfood_core::ledger::LedgerError,
        > {
            self.inner.stock().await
        }
        async fn reservation(
            &self,
            order: &OrderId,
        ) -> Result<
            Option<campusfood_core::ledger::ReservationRecord>,
            campusfood_core::ledger::LedgerError,
        > {
            self.inner.reservation(order).await
        }
        async fn reservation_count(&self) -> Result<u64, campusfood_core::ledger::LedgerError> {
            self.inner.reservation_count().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_generated_id_taken_by_another_order_is_replaced_not_repeated() {
        let ledger = Arc::new(FirstIdTaken {
            inner: MemoryLedger::new(&"burger=100".parse().unwrap()),
            taken: std::sync::Mutex::new(None),
        });
        let (order, _) = system_on(ledger.clone(), OrderOptions::default());
        let reply = order.place(BURGER, None).await;
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        let taken = ledger.taken.lock().unwrap().clone().unwrap();
        assert_ne!(body["order_id"], taken.as_str(), "a fresh id");
        // The other order's 2 and this order's 1; nothing released.
        assert_eq!(burgers(&*ledger).await, 97);
        tokio::task::yield_now().await;
        assert_eq!(order.kept_calls().await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_and_confirmed_orders_release_nothing() {
        let (order, faults) = system(OrderOptions::default());
        assert_eq!(order.place(BURGER, None).await.status, 201);
        let too_many = br#"{"item": "burger", "qty": 1000}"#;
        assert_eq!(order.place(too_many, None).await.status, 409);
        set(&faults, 0.0, 1.0);
        assert_eq!(order.place(BURGER, None).await.status, 503);
        tokio::task::yield_now().await;
        assert_eq!(order.kept_calls().await.unwrap(), 0);
    }

    #[test]
    fn pages_follow_the_orders_kept_when_old_ones_are_forgotten() {
        let (order, _) = system(OrderOptions::default());
        let ids: Vec<OrderId> = (0..RECENT_ORDERS + 5)
            .map(|_| {
                let placed = PlaceOrder::from_json(BURGER).unwrap();
                let o = Order::new(placed, OrderStatus::Confirmed);
                let id = o.order_id.clone();
                order.remember(o);
                id
            })
            .collect();
        let page = |after: Option<&OrderId>, limit| order.orders_page(after, limit);
        let first = page(None, 2).unwrap();
        assert_eq!(first.orders[0].order_id, ids[5]);
        assert!(first.more);
        assert_eq!(page(Some(&ids[4]), 2), Err(UnknownOrder(ids[4].clone())));
        let last = page(Some(&ids[RECENT_ORDERS + 2]), 10).unwrap();
        let got: Vec<_> = last.orders.iter().map(|o| o.order_id.clone()).collect();
        assert_eq!(got, ids[RECENT_ORDERS + 3..]);
        assert!(!last.more);
        let end = page(ids.last(), 10).unwrap();
        assert!(end.orders.is_empty() && !end.more);
    }
}
