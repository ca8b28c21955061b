//! The [`Probe`]: a transport in front of the broker that records every
//! delivery a consumer handled — when, for which order, which attempt, and
//! what the handler answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::transport::{
    Delivery, Disposition, ForwardTransport, Handler, Message, Route, SubscribeOptions,
    Subscription, Transport, TransportError,
};
use tokio::sync::Notify;

use crate::error::LabError;

/// What a consumer's handler answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// Done: acknowledged.
    Ack,
    /// To be delivered again, with the reason.
    Retry(String),
    /// Set aside, with the reason.
    DeadLetter(String),
}

/// One delivery a consumer handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// When the handler answered.
    pub at: Instant,
    /// The route consumed.
    pub route: Route,
    /// The consumer group (`None`: the route's default consumer).
    pub group: Option<String>,
    /// The order, from the message's key or its body's `order_id`.
    pub order_id: Option<String>,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// What the handler answered.
    pub outcome: Handling,
}

#[derive(Debug, Default)]
struct ProbeLog {
    events: Vec<Handled>,
    /// (route, group, order) → when it was first acknowledged.
    first_ack: HashMap<(Route, Option<String>, String), Instant>,
}

/// A [`Transport`] that forwards everything to another and records every
/// delivery its subscribers handle ([`Handled`]).
#[derive(Debug)]
pub struct Probe {
    inner: Arc<dyn Transport>,
    log: Arc<Mutex<ProbeLog>>,
    /// Woken after every delivery handled.
    handled: Arc<Notify>,
    /// Subscribe with no retry delay, whatever the services ask.
    hot_requeue: bool,
}

impl Probe {
    /// A probe in front of `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            log: Arc::default(),
            handled: Arc::default(),
            hot_requeue: false,
        }
    }

    /// Breaks the services behind it on purpose: every subscription retries
    /// a failed delivery at once, whatever retry delay the service asked
    /// for — the original assignment's requeue loop. For showing that a
    /// claim about retry spacing can fail (B4's `b4.hot_requeue`).
    #[must_use]
    pub fn with_hot_requeue(mut self, on: bool) -> Self {
        self.hot_requeue = on;
        self
    }

    /// Waits until `group`'s consumer of `route` has acknowledged order
    /// `order_id` (woken by every delivery handled, no polling), and returns
    /// when it first did; fails after `deadline`.
    pub async fn first_ack(
        &self,
        route: &Route,
        group: Option<&str>,
        order_id: &str,
        deadline: Duration,
    ) -> Result<Instant, LabError> {
        let key = (route.clone(), group.map(str::to_owned), order_id.to_owned());
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let woken = self.handled.notified();
            tokio::pin!(woken);
            // Registered before looking, so a delivery handled in between
            // still wakes us.
            woken.as_mut().enable();
            if let Some(at) = self.with_log(|l| l.first_ack.get(&key).copied()) {
                return Ok(at);
            }
            if tokio::time::timeout_at(end, woken).await.is_err() {
                return Err(LabError::Deadline {
                    what: format!("{route} of {order_id} acknowledged"),
                    after: deadline,
                });
            }
        }
    }

    fn with_log<T>(&self, f: impl FnOnce(&ProbeLog) -> T) -> T {
        f(&self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Every delivery handled so far, in order.
    pub fn events(&self) -> Vec<Handled> {
        self.with_log(|l| l.events.clone())
    }

    /// The deliveries of `route` handled so far for `order_id`.
    pub fn deliveries(&self, route: &Route, order_id: &str) -> Vec<Handled> {
        self.with_log(|l| {
            l.events
                .iter()
                .filter(|e| e.route == *route && e.order_id.as_deref() == Some(order_id))
                .cloned()
                .collect()
        })
    }

    /// When each order was first acknowledged on `route` by `group`'s
    /// consumer.
    pub fn first_acks(&self, route: &Route, group: Option<&str>) -> HashMap<String, Instant> {
        self.with_log(|l| {
            l.first_ack
                .iter()
                .filter(|((r, g, _), _)| r == route && g.as_deref() == group)
                .map(|((_, _, id), at)| (id.clone(), *at))
                .collect()
        })
    }

    /// How many of `ids` `group`'s consumer has acknowledged on `route`.
    pub fn count_first_acks(&self, route: &Route, group: Option<&str>, ids: &[String]) -> usize {
        self.with_log(|l| {
            let group = group.map(str::to_owned);
            ids.iter()
                .filter(|id| {
                    l.first_ack
                        .contains_key(&(route.clone(), group.clone(), (*id).clone()))
                })
                .count()
        })
    }
}

/// The order a message is about: its key, else its body's `order_id`.
pub fn order_of(message: &Message) -> Option<String> {
    message.key.clone().or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&message.body)
            .ok()?
            .get("order_id")?
            .as_str()
            .map(str::to_owned)
    })
}

struct Probed {
    inner: Arc<dyn Handler>,
    route: Route,
    group: Option<String>,
    log: Arc<Mutex<ProbeLog>>,
    handled: Arc<Notify>,
}

#[async_trait]
impl Handler for Probed {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let order_id = order_of(&delivery.message);
        let attempt = delivery.attempt;
        let disposition = self.inner.handle(delivery).await;
        let at = Instant::now();
        let outcome = match &disposition {
            Disposition::Ack => Handling::Ack,
            Disposition::Retry { reason } => Handling::Retry(reason.clone()),
            Disposition::DeadLetter { reason } => Handling::DeadLetter(reason.clone()),
        };
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Handling::Ack, Some(id)) = (&outcome, &order_id) {
            log.first_ack
                .entry((self.route.clone(), self.group.clone(), id.clone()))
                .or_insert(at);
        }
        log.events.push(Handled {
            at,
            route: self.route.clone(),
            group: self.group.clone(),
            order_id,
            attempt,
            outcome,
        });
        drop(log);
        self.handled.notify_waiters();
        disposition
    }
}

#[async_trait]
impl ForwardTransport for Probe {
    fn inner(&self) -> &dyn Transport {
        &*self.inner
    }

    async fn forward_subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        mut options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        if self.hot_requeue {
            options.retry_delay = Duration::ZERO;
        }
        let probed = Arc::new(Probed {
            inner: handler,
            route: route.clone(),
            group: options.group.clone(),
            log: self.log.clone(),
            handled: self.handled.clone(),
        });
        self.inner.subscribe(route, probed, options).await
    }
}
