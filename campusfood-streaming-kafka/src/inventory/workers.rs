//! The two delivery modes over the [`OrderDecider`]: exactly once (a
//! [`Processor`] in Kafka transactions, deciding a batch concurrently by
//! key) and at least once (a [`Handler`] that publishes before it acks).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use campusfood_core::transport::{Delivery, Disposition, Handler, Message, Route, Transport};
use campusfood_kafka::{KafkaTransport, Outcome, Processor};

use super::decider::{Decision, OrderDecider, event_message, route_of};

/// Exactly-once mode: the decider as a [`Processor`].
#[derive(Debug)]
pub(super) struct TransactionalWorker(pub(super) Arc<OrderDecider>);

impl TransactionalWorker {
    /// The outcome of `message`'s decision, timed as the handler of
    /// [`Route::ORDER_PLACED`] (the transactional processor counts the
    /// dispositions).
    async fn outcome(&self, message: &Message) -> Outcome {
        let start = tokio::time::Instant::now();
        let decision = self.0.decide(message).await;
        campusfood_core::metric::handler_duration(Route::ORDER_PLACED.to_string(), start.elapsed());
        match decision {
            Decision::Emit(event) => match event_message(&event) {
                Ok(message) => Outcome::Emit(vec![(route_of(&event), message)]),
                Err(e) => Outcome::DeadLetter {
                    reason: e.to_string(),
                },
            },
            Decision::Unavailable(reason) => Outcome::Unavailable { reason },
            Decision::DeadLetter(reason) => Outcome::DeadLetter { reason },
        }
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
        self.outcome(&delivery.message).await
    }

    /// Decides the batch concurrently, the records of one key in order
    /// (the ledger group-commits concurrent reservations); a throttled
    /// worker decides one record at a time.
    async fn process_batch(&self, deliveries: Vec<Delivery>) -> Vec<Outcome> {
        if self.0.is_throttled() {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for d in &deliveries {
                let outcome = self.outcome(&d.message).await;
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
                    outcomes.push((i, self.outcome(&deliveries[i].message).await));
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
}

#[async_trait]
impl Handler for AtLeastOnceWorker {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        match self.decider.decide(&delivery.message).await {
            Decision::Emit(event) => {
                let message = match event_message(&event) {
                    Ok(m) => m,
                    Err(e) => {
                        return Disposition::DeadLetter {
                            reason: e.to_string(),
                        };
                    }
                };
                match self.transport.publish(&route_of(&event), message).await {
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

        let worker = TransactionalWorker(d.clone());
        let outcomes = worker.process_batch(deliveries.clone()).await;
        assert_eq!(outcomes.len(), deliveries.len());
        for (delivery, outcome) in deliveries.iter().zip(&outcomes).take(51) {
            assert_eq!(*outcome, worker.process(delivery.clone()).await);
        }
        assert_eq!(outcomes[50], outcomes[3]);
        assert!(matches!(outcomes[51], Outcome::DeadLetter { .. }));
    }
}
