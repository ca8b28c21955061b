//! The two delivery modes over the [`OrderDecider`]: exactly once (a
//! [`Processor`] in Kafka transactions, deciding a batch concurrently by
//! key) and at least once (a [`Handler`] that publishes before it acks).
//!
//! Both decide each order in a `process order-events` span that continues
//! the order's trace, and give its event the context of a producer span in
//! that trace ([`campusfood_core::telemetry`]). A transaction's batch is
//! processed in a `process order-events` span of its own, linked to every
//! order's trace.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use campusfood_core::events::InventoryEvent;
use campusfood_core::telemetry::{self, Produce};
use campusfood_core::transport::{Delivery, Disposition, Handler, Message, Route, Transport};
use campusfood_kafka::{KafkaTransport, Outcome, Processor};
use tracing::{Instrument, Span};

use super::decider::{Decision, OrderDecider, event_message, route_of};
use crate::StreamingError;

/// Where the inventory consumer reads and writes, for its spans.
#[derive(Debug, Clone)]
pub(super) struct Topics {
    /// The order topic, read.
    pub(super) orders: String,
    /// Where reserved orders' events go.
    pub(super) reserved: String,
    /// Where failed orders' events go.
    pub(super) failed: String,
    /// The consumer group.
    pub(super) group: String,
}

impl Topics {
    /// The topics `transport` maps the routes to, read by `group`.
    pub(super) fn of(transport: &KafkaTransport, group: &str) -> Self {
        let topic = |route: &Route| {
            transport
                .topic_for(route)
                .unwrap_or_else(|_| route.to_string())
        };
        Self {
            orders: topic(&Route::ORDER_PLACED),
            reserved: topic(&Route::INVENTORY_RESERVED),
            failed: topic(&Route::INVENTORY_FAILED),
            group: group.to_owned(),
        }
    }

    /// `event`'s record, with the context of the producer span (`kind`)
    /// returned, in the current trace: the order's, when deciding it.
    fn event_record(
        &self,
        event: &InventoryEvent,
        kind: Produce,
    ) -> Result<(Route, Message, Span), StreamingError> {
        let route = route_of(event);
        let mut message = event_message(event)?;
        let topic = if route == Route::INVENTORY_RESERVED {
            &self.reserved
        } else {
            &self.failed
        };
        let span = telemetry::producer_span("kafka", topic, kind, &message);
        telemetry::inject(&span, &mut message.headers);
        Ok((route, message, span))
    }
}

/// Exactly-once mode: the decider as a [`Processor`].
#[derive(Debug)]
pub(super) struct TransactionalWorker {
    pub(super) decider: Arc<OrderDecider>,
    pub(super) topics: Topics,
}

impl TransactionalWorker {
    /// The outcome of `delivery`'s decision, decided in the order's trace
    /// and timed as the handler of [`Route::ORDER_PLACED`] (the
    /// transactional processor counts the dispositions).
    async fn outcome(&self, delivery: &Delivery) -> Outcome {
        let t = &self.topics;
        let span = telemetry::consumer_span("kafka", &t.orders, Some(&t.group), delivery);
        let start = tokio::time::Instant::now();
        let decided = async {
            match self.decider.decide(&delivery.message).await {
                // Written in the transaction: `create`, sent with the batch.
                Decision::Emit(event) => match t.event_record(&event, Produce::Create) {
                    Ok((route, message, _)) => Outcome::Emit(vec![(route, message)]),
                    Err(e) => Outcome::DeadLetter {
                        reason: e.to_string(),
                    },
                },
                Decision::Unavailable(reason) => Outcome::Unavailable { reason },
                Decision::DeadLetter(reason) => Outcome::DeadLetter { reason },
            }
        };
        let outcome = decided.instrument(span.clone()).await;
        campusfood_core::metric::handler_duration(Route::ORDER_PLACED.to_string(), start.elapsed());
        let disposition = match &outcome {
            Outcome::Emit(_) => Disposition::Ack,
            Outcome::Retry { reason } | Outcome::Unavailable { reason } => Disposition::Retry {
                reason: reason.clone(),
            },
            Outcome::DeadLetter { reason } => Disposition::DeadLetter {
                reason: reason.clone(),
            },
        };
        telemetry::record_disposition(&span, &disposition);
        outcome
    }
}

/// The indices of `deliveries` grouped by record key (keyless records
/// alone), each group in the deliveries' order.
fn lanes_by_key(deliveries: &[Delivery]) -> Vec<Vec<usize>> {
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        match d.message.key.as_deref() {
            Some(key) => match by_key.get(key) {
                Some(&lane) => lanes[lane].push(i),
                None => {
                    by_key.insert(key, lanes.len());
                    lanes.push(vec![i]);
                }
            },
            None => lanes.push(vec![i]),
        }
    }
    lanes
}

#[async_trait]
impl Processor for TransactionalWorker {
    async fn process(&self, delivery: Delivery) -> Outcome {
        self.outcome(&delivery).await
    }

    /// Decides the batch concurrently, the records of one key in order
    /// (the ledger group-commits concurrent reservations); a throttled
    /// worker decides one record at a time.
    async fn process_batch(&self, deliveries: Vec<Delivery>) -> Vec<Outcome> {
        let t = &self.topics;
        let span = telemetry::batch_span("kafka", &t.orders, Some(&t.group), &deliveries);
        self.decide_batch(deliveries).instrument(span).await
    }
}

impl TransactionalWorker {
    /// [`Processor::process_batch`], in the batch's span.
    async fn decide_batch(&self, deliveries: Vec<Delivery>) -> Vec<Outcome> {
        if self.decider.is_throttled() {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for d in &deliveries {
                let outcome = self.outcome(d).await;
                let retry = outcome.is_retry();
                outcomes.push(outcome);
                if retry {
                    break;
                }
            }
            return outcomes;
        }
        let lanes = lanes_by_key(&deliveries);
        let decided = futures::future::join_all(lanes.into_iter().map(|lane| {
            let deliveries = &deliveries;
            async move {
                let mut outcomes = Vec::with_capacity(lane.len());
                for i in lane {
                    outcomes.push((i, self.outcome(&deliveries[i]).await));
                }
                outcomes
            }
        }))
        .await;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; deliveries.len()];
        for (i, outcome) in decided.into_iter().flatten() {
            outcomes[i] = Some(outcome);
        }
        // Every index is in exactly one lane; stop at a gap all the same.
        outcomes.into_iter().map_while(|o| o).collect()
    }
}

/// At-least-once mode: the decider as a [`Handler`] that publishes (and
/// waits for the acknowledgement) before acking.
#[derive(Debug)]
pub(super) struct AtLeastOnceWorker {
    pub(super) decider: Arc<OrderDecider>,
    pub(super) transport: KafkaTransport,
    pub(super) topics: Topics,
}

/// Subscribed in a [`TracedHandler`](telemetry::TracedHandler): each
/// delivery is handled in the order's trace.
#[async_trait]
impl Handler for AtLeastOnceWorker {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        match self.decider.decide(&delivery.message).await {
            Decision::Emit(event) => {
                let (route, message, span) = match self.topics.event_record(&event, Produce::Send) {
                    Ok(record) => record,
                    Err(e) => {
                        return Disposition::DeadLetter {
                            reason: e.to_string(),
                        };
                    }
                };
                match self
                    .transport
                    .publish(&route, message)
                    .instrument(span)
                    .await
                {
                    Ok(()) => Disposition::Ack,
                    Err(e) => Disposition::Retry {
                        reason: format!("publishing the inventory event: {e}"),
                    },
                }
            }
            Decision::Unavailable(reason) => Disposition::Retry { reason },
            Decision::DeadLetter(reason) => Disposition::DeadLetter { reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::decider::tests::decider;
    use crate::producer::{OrderGenerator, order_message};

    #[tokio::test]
    async fn a_batch_is_grouped_by_key_and_answered_in_record_order_as_one_by_one() {
        let d = Arc::new(decider("item-1=1000000", 0.3));
        let g = OrderGenerator::new(1, 2).unwrap();
        let orders = g.orders(50);
        let mut deliveries: Vec<Delivery> = orders
            .iter()
            .map(|o| Delivery {
                message: order_message(o).unwrap(),
                attempt: 1,
            })
            .collect();
        // A repeated key (a redelivered order) and a record with no key.
        deliveries.push(deliveries[3].clone());
        deliveries.push(Delivery {
            message: Message::default(),
            attempt: 1,
        });
        assert_eq!(lanes_by_key(&deliveries).len(), 51);
        assert_eq!(lanes_by_key(&deliveries)[3], [3, 50]);

        let worker = TransactionalWorker {
            decider: d.clone(),
            topics: Topics {
                orders: "order-events".into(),
                reserved: "inventory-events".into(),
                failed: "inventory-events".into(),
                group: "inventory-consumer".into(),
            },
        };
        let outcomes = worker.process_batch(deliveries.clone()).await;
        assert_eq!(outcomes.len(), deliveries.len());
        for (delivery, outcome) in deliveries.iter().zip(&outcomes).take(51) {
            assert_eq!(*outcome, worker.process(delivery.clone()).await);
        }
        assert_eq!(outcomes[50], outcomes[3]);
        assert!(matches!(outcomes[51], Outcome::DeadLetter { .. }));
    }
}
