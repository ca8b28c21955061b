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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::config::{BreakerConfig, HttpConfig, RetryConfig};
use campusfood_core::events::{NotifyRequest, ReserveOk, ReserveRequest};
use campusfood_core::order::{Order, OrderStatus, PlaceOrder};
use campusfood_core::outbox::{Outbox, OutboxEntry, OutboxError};
use campusfood_core::transport::{
    Message, Reply, RequestHandler, Route, Transport, TransportError, headers,
};
use campusfood_core::{OrderId, RequestId};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use crate::reply::{error_reply, validation_reply};
use crate::resilience::{CircuitBreaker, CircuitOpen, backoff};

/// How many recent orders `GET /orders` keeps.
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
    /// How often failed notifications are retried.
    pub notification_retry_interval: Duration,
}

impl From<&HttpConfig> for OrderOptions {
    fn from(c: &HttpConfig) -> Self {
        Self {
            downstream_timeout: c.downstream_timeout,
            retry: c.retry,
            breaker: c.breaker,
            max_in_flight: c.max_in_flight,
            notification_retry_interval: c.notification_retry_interval,
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

/// Recently confirmed orders, bounded.
#[derive(Debug, Default)]
struct Recent {
    by_id: HashMap<OrderId, Order>,
    order: VecDeque<OrderId>,
}

/// The synchronous OrderService.
#[derive(Debug)]
pub struct OrderService {
    transport: Arc<dyn Transport>,
    outbox: Arc<dyn Outbox>,
    options: OrderOptions,
    breaker: Option<CircuitBreaker>,
    bulkhead: Option<Arc<Semaphore>>,
    recent: Mutex<Recent>,
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
        Self {
            breaker: options.breaker.map(CircuitBreaker::new),
            bulkhead: options.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
            transport,
            outbox,
            options,
            recent: Mutex::new(Recent::default()),
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

    /// Recently confirmed orders, oldest first (at most [`RECENT_ORDERS`]).
    pub fn orders(&self) -> Vec<Order> {
        let recent = self.recent();
        recent
            .order
            .iter()
            .filter_map(|id| recent.by_id.get(id).cloned())
            .collect()
    }

    /// A recently confirmed order.
    pub fn order(&self, id: &OrderId) -> Option<Order> {
        self.recent().by_id.get(id).cloned()
    }

    fn remember(&self, order: Order) {
        let mut recent = self.recent();
        if recent.order.len() >= RECENT_ORDERS {
            if let Some(old) = recent.order.pop_front() {
                recent.by_id.remove(&old);
            }
        }
        recent.order.push_back(order.order_id.clone());
        recent.by_id.insert(order.order_id.clone(), order);
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
        let span = tracing::info_span!("order", order_id = %order.order_id, request_id = %order.request_id);
        self.place_order(order, start).instrument(span).await
    }

    async fn place_order(&self, order: Order, start: Instant) -> Reply {
        let fail = |status: u16, error: String, extra: Option<(&str, Value)>| {
            let mut body = json!({
                "error": error,
                "order_id": order.order_id,
                "request_id": order.request_id,
                "elapsed_ms": elapsed_ms(start),
            });
            if let (Some((k, v)), Some(map)) = (extra, body.as_object_mut()) {
                map.insert(k.to_owned(), v);
            }
            tracing::info!(status, "order not confirmed");
            Reply::json(status, &body).unwrap_or_else(|e| error_reply(500, &e.to_string()))
        };
        let reply = match self.reserve(&order).await {
            Ok(reply) => reply,
            Err(HopError::CircuitOpen(e)) => return fail(503, e.to_string(), None),
            Err(HopError::Transport(e @ TransportError::Timeout { .. })) => {
                return fail(504, format!("inventory timed out: {e}"), None);
            }
            Err(HopError::Transport(e)) => {
                return fail(503, format!("inventory unavailable: {e}"), None);
            }
        };
        let ok: ReserveOk = match reply.status {
            200 => match reply.decode() {
                Ok(ok) => ok,
                Err(e) => {
                    return fail(
                        502,
                        format!("inventory answered an unreadable reservation: {e}"),
                        None,
                    );
                }
            },
            409 => {
                let inv: Value = reply.decode().unwrap_or(Value::Null);
                return fail(
                    409,
                    "insufficient stock".to_owned(),
                    Some(("inventory_response", inv)),
                );
            }
            404 => {
                return fail(
                    404,
                    format!("unknown item {}", order.item),
                    Some(("item", json!(order.item))),
                );
            }
            s if s >= 500 => {
                let inv: Value = reply.decode().unwrap_or(Value::Null);
                return fail(
                    503,
                    format!("inventory failed with {s}"),
                    Some(("inventory_response", inv)),
                );
            }
            s => {
                let inv: Value = reply.decode().unwrap_or(Value::Null);
                return fail(
                    502,
                    format!("inventory refused the reservation with {s}"),
                    Some(("inventory_response", inv)),
                );
            }
        };
        self.notify(&order).await;
        let body = json!({
            "order_id": order.order_id,
            "request_id": order.request_id,
            "item": order.item,
            "qty": order.qty,
            "status": OrderStatus::Confirmed,
            "reservation_id": ok.reservation_id,
            "elapsed_ms": elapsed_ms(start),
        });
        tracing::info!(remaining = ok.remaining, "order confirmed");
        self.remember(order);
        Reply::json(201, &body).unwrap_or_else(|e| error_reply(500, &e.to_string()))
    }

    /// The reserve hop: breaker, timeout, and (when on) retry of 5xx and
    /// transport failures — safe because reserve is idempotent per order.
    async fn reserve(&self, order: &Order) -> Result<Reply, HopError> {
        let attempts = self.options.retry.map_or(1, |r| r.max_attempts.max(1));
        let request = ReserveRequest {
            order_id: order.order_id.clone(),
            request_id: order.request_id,
            item: order.item.clone(),
            qty: order.qty,
        };
        let message = Message::json(&request)
            .map_err(|e| HopError::Transport(e.into()))?
            .with_key(order.order_id.as_str())
            .with_header(headers::REQUEST_ID, order.request_id.to_string());
        let mut attempt = 1;
        loop {
            // Settled below; if this future is dropped before that, the
            // call's drop settles it (see BreakerCall).
            let call = match &self.breaker {
                Some(b) => Some(b.try_acquire().map_err(HopError::CircuitOpen)?),
                None => None,
            };
            let msg = message
                .clone()
                .with_header(headers::ATTEMPTS, attempt.to_string());
            let result = self
                .transport
                .request(&Route::RESERVE, msg, self.options.downstream_timeout)
                .await;
            let failed = match &result {
                Ok(reply) => reply.status >= 500,
                Err(_) => true,
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
                Some(retry) if retryable && attempt < attempts => {
                    attempt += 1;
                    let wait = backoff(&retry, attempt);
                    tracing::info!(attempt, ?wait, "retrying reserve");
                    tokio::time::sleep(wait).await;
                }
                _ => return result.map_err(HopError::Transport),
            }
        }
    }

    /// The notify hop. A failure does not fail the order: the notification
    /// goes to the outbox and is retried.
    async fn notify(&self, order: &Order) {
        let req = NotifyRequest {
            order_id: order.order_id.clone(),
            request_id: order.request_id,
            message: format!(
                "Order {} confirmed: {} x {}",
                order.order_id, order.qty, order.item
            ),
        };
        let message = match Message::json(&req) {
            Ok(m) => m
                .with_key(order.order_id.as_str())
                .with_header(headers::REQUEST_ID, order.request_id.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode notification");
                return;
            }
        };
        let error = match self
            .transport
            .request(
                &Route::NOTIFY,
                message.clone(),
                self.options.downstream_timeout,
            )
            .await
        {
            Ok(reply) if reply.is_success() => return,
            Ok(reply) => format!("notification answered {}", reply.status),
            Err(e) => e.to_string(),
        };
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

    /// Failed notifications still waiting to be delivered.
    pub async fn pending_notifications(&self) -> Result<u64, OutboxError> {
        self.outbox.len().await
    }

    /// One pass over the outbox: resends each waiting notification, removes
    /// those delivered. Returns how many were delivered.
    pub async fn retry_notifications(&self) -> Result<usize, OutboxError> {
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
                    tracing::info!(order_id = %entry.id, attempts = entry.attempts + 1, "kept notification delivered");
                }
                other => {
                    entry.attempts += 1;
                    entry.last_error = Some(match other {
                        Ok(reply) => format!("notification answered {}", reply.status),
                        Err(e) => e.to_string(),
                    });
                    self.outbox.put(entry).await?;
                }
            }
        }
        Ok(delivered)
    }

    /// Retries kept notifications every
    /// [`OrderOptions::notification_retry_interval`] until `shutdown`.
    pub async fn run_notification_retrier(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(self.options.notification_retry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.retry_notifications().await {
                        tracing::error!(error = %e, "notification outbox unreadable");
                    }
                }
            }
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
    use campusfood_core::ledger::MemoryLedger;
    use campusfood_core::outbox::MemoryOutbox;
    use campusfood_transport::memory::MemoryTransport;

    use super::*;
    use crate::inventory::InventoryService;
    use crate::notification::NotificationService;

    /// The three services in process; inventory's faults to steer it.
    fn system(options: OrderOptions) -> (OrderService, Arc<FaultInjector>) {
        let transport = MemoryTransport::new();
        let faults = Arc::new(FaultInjector::default());
        let ledger = Arc::new(MemoryLedger::new(&"burger=100".parse().unwrap()));
        let inventory = Arc::new(InventoryService::new(ledger, faults.clone()));
        transport.serve(Route::RESERVE, inventory);
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
}
