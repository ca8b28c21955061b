//! What an experiment reads of a running Part B: order statuses, stock and
//! reservations, the outbox, gauges to sample, and waits on what the probe
//! saw.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use campusfood_core::events::OrderPlaced;
use campusfood_core::ledger::ReserveOutcome;
use campusfood_core::transport::Route;
use campusfood_core::{OrderId, OrderStatus};

use super::{PartB, Queue, order_of};
use crate::error::{LabError, store_err};
use crate::gauge::Gauge;
use crate::load::Sample;
use crate::outcomes::{OrderReading, accepted, with_refused};

impl PartB {
    /// The order's status in the OrderService's store.
    pub async fn status(&self, id: &str) -> Result<Option<OrderStatus>, LabError> {
        let id = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
        let order = self
            .orders
            .get(&id)
            .await
            .map_err(|e| store_err("reading an order")(e.to_string()))?;
        Ok(order.map(|o| o.status))
    }

    /// How many of `ids` the OrderService's store says are `notified`.
    pub async fn notified_in_store(&self, ids: &[String]) -> Result<usize, LabError> {
        let mut n = 0;
        for id in ids {
            if self.status(id).await? == Some(OrderStatus::Notified) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The stock of the ordered item in inventory's ledger.
    pub async fn stock(&self) -> Result<u64, LabError> {
        let stock = self
            .ledger
            .stock()
            .await
            .map_err(|e| store_err("reading the ledger's stock")(e.to_string()))?;
        Ok(stock.get(&self.item).copied().unwrap_or(0))
    }

    /// How many reservation records the ledger holds (one per order
    /// decided, whatever the number of deliveries).
    pub async fn reservation_count(&self) -> Result<u64, LabError> {
        self.ledger
            .reservation_count()
            .await
            .map_err(|e| store_err("counting reservations")(e.to_string()))
    }

    /// Whether the ledger holds a reservation record for order `id`.
    pub async fn has_reservation(&self, id: &str) -> Result<bool, LabError> {
        let id = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
        self.ledger
            .reservation(&id)
            .await
            .map(|r| r.is_some())
            .map_err(|e| store_err("reading a reservation")(e.to_string()))
    }

    /// Orders still in the OrderService's outbox (accepted, not yet
    /// published with a confirm).
    pub async fn outbox_len(&self) -> Result<u64, LabError> {
        self.orders
            .outbox_len()
            .await
            .map_err(|e| store_err("reading the outbox")(e.to_string()))
    }

    /// A gauge of `queue`'s depth, to sample on its own task.
    pub fn queue_gauge(&self, queue: Queue) -> Gauge {
        Gauge::Queue {
            admin: self.admin.clone(),
            name: self.queue_name(queue).to_owned(),
        }
    }

    /// A gauge of the ledger's reservation count, to sample on its own task.
    pub fn reservations_gauge(&self) -> Gauge {
        Gauge::Reservations(self.ledger.clone())
    }

    /// A gauge of the outbox's length, to sample on its own task.
    pub fn outbox_gauge(&self) -> Gauge {
        Gauge::Outbox(self.orders.clone())
    }

    /// The `OrderPlaced` event of order `id` as the relay published it,
    /// rebuilt from the order store (to publish it again).
    pub async fn order_placed_json(&self, id: &str) -> Result<String, LabError> {
        let oid = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
        let order = self
            .orders
            .get(&oid)
            .await
            .map_err(|e| store_err("reading an order")(e.to_string()))?
            .ok_or_else(|| store_err("reading an order")(format!("no order {id}")))?;
        Ok(serde_json::to_string(&OrderPlaced::from(&order))?)
    }

    /// What became of each order of `samples`, by id (`request #i`, from
    /// 1, for one refused at the door): see [`readings_of`](Self::readings_of).
    pub async fn readings(
        &self,
        samples: &[Sample],
    ) -> Result<Vec<(String, OrderReading)>, LabError> {
        let read = self.readings_of(&accepted(samples)).await?;
        Ok(with_refused(samples, read))
    }

    /// What became of each accepted order of `ids`, read order by order:
    /// the ledger's decision, the confirmations the notifier sent (its
    /// sent-set's records), and whether it is among the dead letters of
    /// `orders.reserve`. Call it once the experiment has waited for the
    /// orders to settle: one with none of these is `lost`.
    pub async fn readings_of(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, OrderReading)>, LabError> {
        let dead: HashSet<String> = self
            .dead_letters(usize::MAX)
            .await?
            .iter()
            .filter_map(|d| order_of(&d.message))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let oid = OrderId::parse(id).map_err(|e| store_err("order id")(e.to_string()))?;
            let record = self
                .ledger
                .reservation(&oid)
                .await
                .map_err(|e| store_err("reading a reservation")(e.to_string()))?;
            let mut r = OrderReading {
                accepted: true,
                settle: true,
                notified: self.sends.records(id),
                dead_lettered: dead.contains(id),
                ..OrderReading::default()
            };
            match record.map(|r| r.outcome) {
                Some(ReserveOutcome::Reserved { .. }) => r.reserved = 1,
                Some(_) => r.refused = true,
                None => {}
            }
            out.push((id.clone(), r));
        }
        Ok(out)
    }

    /// Confirmations the NotificationService sent (logged).
    pub fn notifications_sent(&self) -> u64 {
        self.notification
            .as_ref()
            .and_then(|s| s.notification.as_ref())
            .map_or(0, |n| n.sent())
    }

    /// Waits until the probe saw every order of `ids` become `notified`,
    /// or fails after `deadline`.
    pub async fn wait_notified(&self, ids: &[String], deadline: Duration) -> Result<(), LabError> {
        let group = self.options.status_group.clone();
        crate::wait::until(&format!("{} orders notified", ids.len()), deadline, || {
            let done = self
                .probe
                .count_first_acks(&Route::ORDER_NOTIFIED, Some(&group), ids)
                == ids.len();
            async move { done }
        })
        .await
    }

    /// Waits until inventory has decided every order of `ids` (its
    /// consumer acknowledged the order's `OrderPlaced`: the decision is in
    /// the ledger and its event published), or fails after `deadline`.
    pub async fn wait_reserved(&self, ids: &[String], deadline: Duration) -> Result<(), LabError> {
        crate::wait::until(&format!("{} orders reserved", ids.len()), deadline, || {
            let done = self.probe.count_first_acks(&Route::ORDER_PLACED, None, ids) == ids.len();
            async move { done }
        })
        .await
    }

    /// When inventory decided each order (see [`wait_reserved`](Self::wait_reserved)).
    pub fn reserved_at(&self) -> HashMap<String, Instant> {
        self.probe.first_acks(&Route::ORDER_PLACED, None)
    }

    /// When each order became `notified` (the order service's status
    /// consumer acknowledged its `order.notified`), by order id.
    pub fn notified_at(&self) -> HashMap<String, Instant> {
        self.probe
            .first_acks(&Route::ORDER_NOTIFIED, Some(&self.options.status_group))
    }
}
