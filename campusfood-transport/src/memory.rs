//! An in-process transport: request/reply dispatches straight to a served
//! [`RequestHandler`]; publish/subscribe runs through in-memory queues with
//! the same delivery rules as the brokers — bounded concurrency
//! (`prefetch`), redelivery after a delay up to `max_attempts`, and dead
//! letters kept for inspection and replay ([`DeadLetters`]).
//!
//! Stopping (or dropping) a subscription waits for its in-flight handlers
//! at most [`MemoryTransport::with_drain_timeout`] (default
//! [`DRAIN_TIMEOUT`]); those still running then are abandoned and their
//! messages go back to the group's queue, as a broker redelivers what a
//! consumer that went away had not acknowledged.
//!
//! Each consumer group of a route has its own queue: subscribers in one
//! group compete for messages, separate groups each get every message.
//! Messages published before anyone subscribed wait in the route's
//! default group, as in a durable queue bound before publishing. Nothing
//! survives the process: use it for tests and embedding, not durability.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::bounded;
use campusfood_core::transport::{
    Backlog, Capabilities, DeadLetter, DeadLetters, Delivery, Disposition, Handler, Message, Reply,
    RequestHandler, Route, SubscribeOptions, Subscription, Transport, TransportError,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// The group a subscriber joins when [`SubscribeOptions::group`] is `None`.
pub const DEFAULT_GROUP: &str = "default";

/// How long a stopping subscription waits for its in-flight handlers by
/// default (as RabbitMQ's and Kafka's do).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// An in-process [`Transport`]. Cheap to clone; clones share everything.
///
/// ```
/// use std::sync::Arc;
///
/// use async_trait::async_trait;
/// use campusfood_core::transport::{
///     Delivery, Disposition, Handler, Message, Route, SubscribeOptions, Transport,
/// };
/// use campusfood_transport::memory::MemoryTransport;
/// use tokio::sync::mpsc;
///
/// /// Passes each message's key on.
/// struct Keys(mpsc::UnboundedSender<Option<String>>);
///
/// #[async_trait]
/// impl Handler for Keys {
///     async fn handle(&self, delivery: Delivery) -> Disposition {
///         let _ = self.0.send(delivery.message.key);
///         Disposition::Ack
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = MemoryTransport::new();
/// let (tx, mut rx) = mpsc::unbounded_channel();
/// let route = Route::new("kitchen.ticket");
/// let subscription = transport
///     .subscribe(&route, Arc::new(Keys(tx)), SubscribeOptions::default())
///     .await?;
/// transport.publish(&route, Message::json("2 x burger")?.with_key("order-1")).await?;
/// assert_eq!(rx.recv().await, Some(Some("order-1".to_owned())));
/// subscription.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
    drain_timeout: Duration,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

#[derive(Default)]
struct Inner {
    servers: Mutex<HashMap<Route, Arc<dyn RequestHandler>>>,
    queues: Mutex<HashMap<Route, HashMap<String, Arc<GroupQueue>>>>,
    dead: Mutex<HashMap<Route, Vec<DeadLetter>>>,
    next_dead_id: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport").finish_non_exhaustive()
    }
}

/// One group's queue: a channel whose receiver the group's consumers share.
#[derive(Debug)]
struct GroupQueue {
    tx: mpsc::UnboundedSender<Delivery>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    /// Messages waiting or being handled; zero once everything is acked or
    /// dead-lettered.
    depth: AtomicU64,
}

impl GroupQueue {
    fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            depth: AtomicU64::new(0),
        })
    }

    fn push(&self, delivery: Delivery) {
        self.depth.fetch_add(1, Ordering::SeqCst);
        // The receiver lives as long as the queue itself, so this cannot fail.
        let _ = self.tx.send(delivery);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map operation; a panic cannot
    // leave the map half-updated, so poison is safe to ignore.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryTransport {
    /// A transport with no routes served or subscribed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same transport, whose subscriptions wait at most `limit` for
    /// their in-flight handlers when stopped, then put the messages still
    /// being handled back in their queue.
    pub fn with_drain_timeout(mut self, limit: Duration) -> Self {
        self.drain_timeout = limit;
        self
    }

    /// Serves `route`'s requests with `handler` (replacing any earlier one).
    pub fn serve(&self, route: Route, handler: Arc<dyn RequestHandler>) {
        lock(&self.inner.servers).insert(route, handler);
    }

    /// Messages of `route` waiting in or being handled by `group` (default
    /// group when `None`).
    pub fn depth(&self, route: &Route, group: Option<&str>) -> u64 {
        lock(&self.inner.queues)
            .get(route)
            .and_then(|groups| groups.get(group.unwrap_or(DEFAULT_GROUP)))
            .map_or(0, |q| q.depth.load(Ordering::SeqCst))
    }

    fn group_queue(&self, route: &Route, group: &str) -> Arc<GroupQueue> {
        lock(&self.inner.queues)
            .entry(route.clone())
            .or_default()
            .entry(group.to_owned())
            .or_insert_with(GroupQueue::new)
            .clone()
    }

    fn dead_letter(&self, route: &Route, delivery: Delivery, reason: String) {
        // Bounded as on the brokers, so that a test here sees what they keep.
        let reason = bounded::reason_owned(reason);
        let id = self
            .inner
            .next_dead_id
            .fetch_add(1, Ordering::SeqCst)
            .to_string();
        tracing::warn!(%route, %id, attempts = delivery.attempt, %reason, "dead-lettered");
        lock(&self.inner.dead)
            .entry(route.clone())
            .or_default()
            .push(DeadLetter {
                id,
                route: route.clone(),
                reason,
                attempts: delivery.attempt,
                message: delivery.message,
            });
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            request: true,
            publish: true,
            subscribe: true,
            distinct_routes: true,
        }
    }

    async fn request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let handler = lock(&self.inner.servers)
            .get(route)
            .cloned()
            .ok_or_else(|| TransportError::Unavailable {
                route: route.clone(),
                reason: "no handler is serving this route".to_owned(),
            })?;
        tokio::time::timeout(timeout, handler.call(request))
            .await
            .map_err(|_| TransportError::Timeout {
                route: route.clone(),
                after: timeout,
            })
    }

    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        let delivery = Delivery {
            message,
            attempt: 1,
        };
        let groups: Vec<Arc<GroupQueue>> = {
            let mut queues = lock(&self.inner.queues);
            let groups = queues.entry(route.clone()).or_default();
            if groups.is_empty() {
                groups.insert(DEFAULT_GROUP.to_owned(), GroupQueue::new());
            }
            groups.values().cloned().collect()
        };
        for q in groups {
            q.push(delivery.clone());
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        let group = options
            .group
            .clone()
            .unwrap_or_else(|| DEFAULT_GROUP.to_owned());
        let queue = self.group_queue(route, &group);
        let this = self.clone();
        let route = route.clone();
        Ok(Subscription::spawn(move |mut stop| async move {
            let slots = u32::from(options.prefetch.max(1));
            let permits = Arc::new(Semaphore::new(slots as usize));
            // Deliveries being handled, by a number of this loop's: taken
            // out by the handler's task once the handler returned, or by the
            // stop when abandoning them, never both.
            let in_flight: Arc<Mutex<HashMap<u64, Delivery>>> = Arc::default();
            let mut handlers = JoinSet::new();
            for n in 0u64.. {
                while handlers.try_join_next().is_some() {}
                let permit = tokio::select! {
                    _ = stop.stopped() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let next = tokio::select! {
                    _ = stop.stopped() => break,
                    d = async { queue.rx.lock().await.recv().await } => d,
                };
                let Some(delivery) = next else { break };
                lock(&in_flight).insert(n, delivery.clone());
                let (this, route, handler, queue, options, in_flight) = (
                    this.clone(),
                    route.clone(),
                    handler.clone(),
                    queue.clone(),
                    options.clone(),
                    in_flight.clone(),
                );
                handlers.spawn(async move {
                    let disposition = handler.handle(delivery.clone()).await;
                    if lock(&in_flight).remove(&n).is_none() {
                        return; // Abandoned by the stop, and queued again.
                    }
                    this.settle(&route, &queue, &options, delivery, disposition);
                    drop(permit);
                });
            }
            // Drain: wait until every in-flight handler has returned its
            // permit, or abandon those still running.
            let drained =
                tokio::time::timeout(this.drain_timeout, permits.acquire_many(slots)).await;
            if drained.is_err() {
                handlers.abort_all();
                let abandoned: Vec<Delivery> = lock(&in_flight).drain().map(|(_, d)| d).collect();
                tracing::warn!(%route, count = abandoned.len(), "handlers still running at stop: their messages go back to the queue");
                for delivery in abandoned {
                    // Still counted in the depth since it was first pushed.
                    queue.depth.fetch_sub(1, Ordering::SeqCst);
                    queue.push(delivery);
                }
            }
        }))
    }
}

impl MemoryTransport {
    /// Carries out what a handler answered for `delivery`.
    fn settle(
        &self,
        route: &Route,
        queue: &Arc<GroupQueue>,
        options: &SubscribeOptions,
        delivery: Delivery,
        disposition: Disposition,
    ) {
        match disposition {
            Disposition::Ack => {}
            Disposition::Retry { reason } if delivery.attempt < options.max_attempts => {
                let reason = bounded::reason(&reason);
                tracing::debug!(%route, attempt = delivery.attempt, %reason, "retry later");
                let queue = queue.clone();
                let next = Delivery {
                    message: delivery.message,
                    attempt: delivery.attempt + 1,
                };
                queue.depth.fetch_add(1, Ordering::SeqCst);
                let delay = options.retry_delay;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    // Counted above, so depth never dips to zero while a
                    // retry waits.
                    queue.depth.fetch_sub(1, Ordering::SeqCst);
                    queue.push(next);
                });
            }
            Disposition::Retry { reason } => self.dead_letter(
                route,
                delivery,
                format!("gave up after {} attempts: {reason}", options.max_attempts),
            ),
            Disposition::DeadLetter { reason } => self.dead_letter(route, delivery, reason),
        }
        queue.depth.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backlog for MemoryTransport {
    /// Waiting in, or being handled by, the route's default group.
    async fn backlog(&self, route: &Route) -> Result<u64, TransportError> {
        Ok(self.depth(route, None))
    }
}

#[async_trait]
impl DeadLetters for MemoryTransport {
    async fn dead_letters(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError> {
        Ok(lock(&self.inner.dead)
            .get(route)
            .map(|v| v.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn replay(&self, route: &Route, id: &str) -> Result<bool, TransportError> {
        let letter = {
            let mut dead = lock(&self.inner.dead);
            let Some(list) = dead.get_mut(route) else {
                return Ok(false);
            };
            match list.iter().position(|d| d.id == id) {
                Some(i) => list.remove(i),
                None => return Ok(false),
            }
        };
        self.publish(route, letter.message).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use campusfood_testkit::until;

    use super::*;

    /// Fails the first `fail_first` deliveries of every message, dead-letters
    /// bodies equal to `poison`, acks the rest and counts acks.
    struct Flaky {
        fail_first: u32,
        acked: AtomicU32,
        /// The attempt number of each delivery of a valid message.
        attempts: std::sync::Mutex<Vec<u32>>,
    }

    #[async_trait]
    impl Handler for Flaky {
        async fn handle(&self, d: Delivery) -> Disposition {
            if d.message.body.as_ref() == b"poison" {
                return Disposition::DeadLetter {
                    reason: "poison".into(),
                };
            }
            self.attempts.lock().unwrap().push(d.attempt);
            if d.attempt <= self.fail_first {
                return Disposition::Retry {
                    reason: format!("attempt {}", d.attempt),
                };
            }
            self.acked.fetch_add(1, Ordering::SeqCst);
            Disposition::Ack
        }
    }

    fn msg(body: &'static str) -> Message {
        Message {
            body: body.into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_acks_and_poison_is_dead_lettered() {
        let t = MemoryTransport::new();
        let route = Route::new("test.retry");
        let h = Arc::new(Flaky {
            fail_first: 2,
            acked: AtomicU32::new(0),
            attempts: std::sync::Mutex::default(),
        });
        // Published before subscribing: waits in the default group.
        t.publish(&route, msg("a")).await.unwrap();
        t.publish(&route, msg("poison")).await.unwrap();
        let opts = SubscribeOptions {
            max_attempts: 5,
            retry_delay: Duration::from_millis(100),
            ..Default::default()
        };
        let sub = t.subscribe(&route, h.clone(), opts).await.unwrap();
        until("ack", Duration::from_secs(10), async || {
            h.acked.load(Ordering::SeqCst) == 1
        })
        .await;
        until("drain", Duration::from_secs(10), async || {
            t.depth(&route, None) == 0
        })
        .await;
        // Two retries, then the ack, on the third attempt.
        assert_eq!(*h.attempts.lock().unwrap(), [1, 2, 3]);
        let dead = t.dead_letters(&route, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "poison");
        sub.stop().await;
    }

    /// Dead-letters every message with a reason quoting its whole body.
    struct Quoting;

    #[async_trait]
    impl Handler for Quoting {
        async fn handle(&self, d: Delivery) -> Disposition {
            Disposition::DeadLetter {
                reason: format!("bad: {}", String::from_utf8_lossy(&d.message.body)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reasons_are_bounded_as_on_the_brokers() {
        let t = MemoryTransport::new();
        let route = Route::new("test.bounded");
        let sub = t
            .subscribe(&route, Arc::new(Quoting), SubscribeOptions::default())
            .await
            .unwrap();
        let huge = "y".repeat(200 * 1024);
        t.publish(
            &route,
            Message {
                body: huge.clone().into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        until("dead letter", Duration::from_secs(10), async || {
            t.depth(&route, None) == 0
        })
        .await;
        let dead = t.dead_letters(&route, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].reason.len() <= bounded::MAX_REASON_BYTES);
        assert!(
            dead[0].reason.ends_with("…(204805 bytes)"),
            "{}",
            dead[0].reason
        );
        assert_eq!(dead[0].message.body, huge.as_bytes());
        sub.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_replay_redelivers() {
        let t = MemoryTransport::new();
        let route = Route::new("test.giveup");
        let h = Arc::new(Flaky {
            fail_first: 3,
            acked: AtomicU32::new(0),
            attempts: std::sync::Mutex::default(),
        });
        let opts = SubscribeOptions {
            max_attempts: 3,
            retry_delay: Duration::from_millis(10),
            ..Default::default()
        };
        let sub = t.subscribe(&route, h.clone(), opts).await.unwrap();
        t.publish(&route, msg("x")).await.unwrap();
        until("dead letter", Duration::from_secs(10), async || {
            t.depth(&route, None) == 0
        })
        .await;
        let dead = t.dead_letters(&route, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 3);
        assert!(
            dead[0].reason.contains("gave up after 3 attempts"),
            "{}",
            dead[0].reason
        );
        assert_eq!(h.acked.load(Ordering::SeqCst), 0);
        // Replay starts a fresh round of attempts; the 4th attempt overall
        // would succeed but a replay restarts at attempt 1, so it fails
        // three more times and lands back in the dead letters.
        assert!(t.replay(&route, &dead[0].id).await.unwrap());
        assert!(!t.replay(&route, &dead[0].id).await.unwrap());
        until("dead again", Duration::from_secs(10), async || {
            t.depth(&route, None) == 0
        })
        .await;
        assert_eq!(t.dead_letters(&route, 10).await.unwrap().len(), 1);
        sub.stop().await;
    }

    #[tokio::test]
    async fn groups_each_get_every_message_and_members_compete() {
        let t = MemoryTransport::new();
        let route = Route::new("test.groups");
        let a1 = Arc::new(Flaky {
            fail_first: 0,
            acked: AtomicU32::new(0),
            attempts: std::sync::Mutex::default(),
        });
        let a2 = Arc::new(Flaky {
            fail_first: 0,
            acked: AtomicU32::new(0),
            attempts: std::sync::Mutex::default(),
        });
        let b = Arc::new(Flaky {
            fail_first: 0,
            acked: AtomicU32::new(0),
            attempts: std::sync::Mutex::default(),
        });
        let group = |g: &str| SubscribeOptions {
            group: Some(g.into()),
            ..Default::default()
        };
        let s1 = t.subscribe(&route, a1.clone(), group("a")).await.unwrap();
        let s2 = t.subscribe(&route, a2.clone(), group("a")).await.unwrap();
        let s3 = t.subscribe(&route, b.clone(), group("b")).await.unwrap();
        for _ in 0..100 {
            t.publish(&route, msg("m")).await.unwrap();
        }
        let total = |h: &Flaky| h.acked.load(Ordering::SeqCst);
        until("both groups", Duration::from_secs(10), async || {
            total(&a1) + total(&a2) == 100 && total(&b) == 100
        })
        .await;
        for s in [s1, s2, s3] {
            s.stop().await;
        }
    }

    struct Echo;

    #[async_trait]
    impl RequestHandler for Echo {
        async fn call(&self, request: Message) -> Reply {
            if request.body.as_ref() == b"slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Reply {
                status: 200,
                body: request.body,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn request_reply_and_timeout() {
        let t = MemoryTransport::new();
        let route = Route::new("test.echo");
        assert!(matches!(
            t.request(&route, msg("hi"), Duration::from_secs(1)).await,
            Err(TransportError::Unavailable { .. })
        ));
        t.serve(route.clone(), Arc::new(Echo));
        let r = t
            .request(&route, msg("hi"), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.body.as_ref(), b"hi");
        let e = t
            .request(&route, msg("slow"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::Timeout { .. }) && e.is_retryable());
    }
}
