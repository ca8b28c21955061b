//! "Where is order X?": an order's timeline, as `GET /orders/{id}/timeline`
//! answers it on the order services of Part A and Part B.
//!
//! Each [`Hop`] is one thing that happened to the order — accepted,
//! published, retried, reserved or failed, notified, dead-lettered,
//! released — with when, which service, and which attempt. The timelines
//! are built from what the services hold anyway: Part A's orchestrator
//! sees every call it makes and keeps the timelines of its recent orders
//! in memory; Part B's order service records each hop in the same store
//! transaction that moves the order's status (no extra write), takes the
//! inventory's attempt from the event (header [`headers::CAUSE_ATTEMPT`]),
//! and looks for the order among the dead letters when it is still
//! `placed`.
//!
//! [`headers::CAUSE_ATTEMPT`]: campusfood_core::transport::headers::CAUSE_ATTEMPT

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use campusfood_core::OrderId;
use campusfood_core::order::{OrderStatus, now_rfc3339};
use serde::{Deserialize, Serialize};

/// Which service a hop happened in, as the timeline names it.
pub mod service {
    /// The order service (either architecture's).
    pub const ORDER: &str = "order-service";
    /// The inventory service.
    pub const INVENTORY: &str = "inventory-service";
    /// The notification service.
    pub const NOTIFICATION: &str = "notification-service";
    /// The broker (RabbitMQ's dead-letter queue, say).
    pub const BROKER: &str = "broker";
}

/// What happened at a hop.
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The order service accepted the order (`POST /order`).
    Accepted,
    /// Its `OrderPlaced` event was published (confirmed by the broker).
    Published,
    /// An attempt failed and the call or delivery is tried again.
    Retried,
    /// Inventory reserved the stock.
    Reserved,
    /// The order failed (refused by inventory, or its call failed for good).
    Failed,
    /// The customer was notified.
    Notified,
    /// A notification failed and was kept, to be sent again.
    Kept,
    /// The message was set aside in a dead-letter queue after its attempts.
    DeadLettered,
    /// A reservation the failed order may hold was released.
    Released,
}

/// One thing that happened to an order.
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// When (RFC 3339, UTC, to the millisecond); absent where nothing
    /// recorded the moment (attempts that failed before a later one
    /// succeeded at another service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Which service (see [`service`]).
    pub service: String,
    /// What happened.
    pub step: Step,
    /// Which attempt of the call or delivery, from 1.
    pub attempt: u32,
    /// What else is known: a reason, a reservation, a dead letter's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Hop {
    /// A hop that happened just now, at the first attempt, without detail.
    pub fn now(service: &str, step: Step) -> Self {
        Self::at(Some(now_rfc3339()), service, step)
    }

    /// A hop at `at`, at the first attempt, without detail.
    pub fn at(at: Option<String>, service: &str, step: Step) -> Self {
        Self {
            at,
            service: service.to_owned(),
            step,
            attempt: 1,
            detail: None,
        }
    }

    /// The same hop at `attempt`.
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same hop with `detail`.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// `GET /orders/{id}/timeline`'s body.
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The order.
    pub order_id: OrderId,
    /// Its status now.
    pub status: OrderStatus,
    /// What happened to it, oldest first.
    pub hops: Vec<Hop>,
}

impl Timeline {
    /// The hops in the order they happened: by time, and within one
    /// millisecond by the order the steps follow each other (an order is
    /// published before it is reserved, reserved before it is notified).
    /// A hop without a time stays right before the hop after it (the
    /// failed attempts before a success), or, at the end, after the last.
    pub fn sorted(mut self) -> Self {
        // Untimed hops glued to the next hop; a trailing run of them to
        // the last timed one.
        let mut groups: Vec<(Option<String>, u8, Vec<Hop>)> = Vec::new();
        let mut pending: Vec<Hop> = Vec::new();
        for hop in self.hops.drain(..) {
            if hop.at.is_none() {
                pending.push(hop);
                continue;
            }
            let key = (hop.at.clone(), hop.step.rank());
            pending.push(hop);
            groups.push((key.0, key.1, std::mem::take(&mut pending)));
        }
        if !pending.is_empty() {
            let (at, rank) = groups
                .last()
                .map_or((None, 0), |(at, _, _)| (at.clone(), u8::MAX));
            groups.push((at, rank, pending));
        }
        // RFC 3339 in UTC with fixed millisecond precision sorts as text;
        // the sort is stable, so equal keys keep their order.
        groups.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        self.hops = groups.into_iter().flat_map(|(_, _, hops)| hops).collect();
        self
    }
}

impl Step {
    /// Where the step comes in an order's life, for hops in the same
    /// millisecond.
    fn rank(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::Published => 1,
            Self::Retried => 2,
            Self::Reserved | Self::Failed => 3,
            Self::DeadLettered => 4,
            Self::Kept => 5,
            Self::Notified => 6,
            Self::Released => 7,
        }
    }
}

/// The timelines of the most recent orders, in memory, bounded: Part A's
/// orchestrator records each order's hops here as it makes its calls.
#[derive(Debug)]
pub struct RecentTimelines {
    capacity: usize,
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    by_id: HashMap<OrderId, (OrderStatus, Vec<Hop>)>,
    order: VecDeque<OrderId>,
}

impl RecentTimelines {
    /// Keeps the timelines of the last `capacity` orders.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `hop` to `id`'s timeline, setting its status to `status`
    /// (a new order evicts the oldest one beyond the capacity).
    pub fn record(&self, id: &OrderId, status: OrderStatus, hop: Hop) {
        let mut recent = self.lock();
        if let Some((s, hops)) = recent.by_id.get_mut(id) {
            *s = status;
            hops.push(hop);
            return;
        }
        while recent.order.len() >= self.capacity.max(1) {
            match recent.order.pop_front() {
                Some(old) => {
                    recent.by_id.remove(&old);
                }
                None => break,
            }
        }
        recent.order.push_back(id.clone());
        recent.by_id.insert(id.clone(), (status, vec![hop]));
    }

    /// Appends `hop` to `id`'s timeline if it is still kept, leaving its
    /// status as it is.
    pub fn append(&self, id: &OrderId, hop: Hop) {
        if let Some((_, hops)) = self.lock().by_id.get_mut(id) {
            hops.push(hop);
        }
    }

    /// Forgets `id` (an id given up for a fresh one).
    pub fn forget(&self, id: &OrderId) {
        let mut recent = self.lock();
        if recent.by_id.remove(id).is_some() {
            recent.order.retain(|o| o != id);
        }
    }

    /// `id`'s timeline, if kept.
    pub fn get(&self, id: &OrderId) -> Option<Timeline> {
        self.lock().by_id.get(id).map(|(status, hops)| Timeline {
            order_id: id.clone(),
            status: *status,
            hops: hops.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_timeline_goes_first() {
        let t = RecentTimelines::new(2);
        let [a, b, c] = [(); 3].map(|()| OrderId::generate());
        for id in [&a, &b, &c] {
            t.record(
                id,
                OrderStatus::Placed,
                Hop::now(service::ORDER, Step::Accepted),
            );
        }
        assert!(t.get(&a).is_none());
        t.record(
            &b,
            OrderStatus::Confirmed,
            Hop::now(service::INVENTORY, Step::Reserved),
        );
        let b = t.get(&b).unwrap();
        assert_eq!(b.status, OrderStatus::Confirmed);
        assert_eq!(
            b.hops.iter().map(|h| h.step).collect::<Vec<_>>(),
            [Step::Accepted, Step::Reserved]
        );
        t.append(&a, Hop::now(service::ORDER, Step::Released));
        assert!(t.get(&a).is_none(), "an evicted order is not brought back");
    }

    #[test]
    fn sorted_by_time_with_untimed_hops_kept_before_the_next() {
        let at = |s: &str| Some(format!("2026-12-01T10:00:0{s}.000Z"));
        let timeline = Timeline {
            order_id: OrderId::generate(),
            status: OrderStatus::Notified,
            hops: vec![
                Hop::at(at("0"), service::ORDER, Step::Accepted),
                Hop::at(at("3"), service::ORDER, Step::Notified),
                Hop::at(at("1"), service::ORDER, Step::Published),
                Hop::at(None, service::INVENTORY, Step::Retried),
                Hop::at(at("2"), service::INVENTORY, Step::Reserved),
            ],
        }
        .sorted();
        assert_eq!(
            timeline.hops.iter().map(|h| h.step).collect::<Vec<_>>(),
            [
                Step::Accepted,
                Step::Published,
                Step::Retried,
                Step::Reserved,
                Step::Notified
            ]
        );
    }

    #[test]
    fn in_one_millisecond_steps_keep_their_causal_order() {
        let t = Some("2026-12-01T10:00:00.000Z".to_owned());
        let hops = vec![
            Hop::at(t.clone(), service::ORDER, Step::Accepted),
            Hop::at(t.clone(), service::NOTIFICATION, Step::Notified),
            Hop::at(None, service::INVENTORY, Step::Retried).attempt(1),
            Hop::at(t.clone(), service::INVENTORY, Step::Reserved).attempt(2),
            Hop::at(t.clone(), service::ORDER, Step::Published),
            Hop::at(None, service::INVENTORY, Step::DeadLettered),
        ];
        let sorted = Timeline {
            order_id: OrderId::generate(),
            status: OrderStatus::Notified,
            hops,
        }
        .sorted();
        assert_eq!(
            sorted.hops.iter().map(|h| h.step).collect::<Vec<_>>(),
            [
                Step::Accepted,
                Step::Published,
                Step::Retried,
                Step::Reserved,
                Step::Notified,
                Step::DeadLettered
            ]
        );
    }

    #[test]
    fn hops_serialize_without_empty_fields() {
        let hop = Hop::at(None, service::INVENTORY, Step::DeadLettered).attempt(3);
        assert_eq!(
            serde_json::to_value(&hop).unwrap(),
            serde_json::json!({"service": "inventory-service", "step": "dead_lettered", "attempt": 3})
        );
    }
}
