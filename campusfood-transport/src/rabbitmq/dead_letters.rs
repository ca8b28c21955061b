//! Reading and replaying a dead-letter queue without losing anything.
//!
//! Listing takes up to `limit` messages with `basic.get` (unacknowledged,
//! so they are only held, not removed) and then nacks them all with
//! requeue: RabbitMQ puts requeued messages back at their original
//! positions, so the queue is unchanged. Should anything fail half-way,
//! closing the channel requeues them just the same.
//!
//! Replaying walks the queue the same way until it meets the message with
//! that id, publishes it (confirmed) straight back into the consumed queue
//! through the default exchange — only the consumer group that gave up on
//! it sees it again — with its attempt count and death reason cleared,
//! acknowledges it in the dead-letter queue, and puts the rest back.
//!
//! Ids are the AMQP `message_id` this transport gives every message (a
//! message published by someone else without one gets a hash of its body
//! and timestamp). Operations on dead letters are serialised within a
//! transport; two processes listing the same queue at once may each see
//! only part of it (what the other holds at that moment), but never lose a
//! message.

use amqprs::channel::{BasicAckArguments, BasicGetArguments, BasicNackArguments};
use amqprs::{BasicProperties, GetOk};
use campusfood_core::transport::{DeadLetter, Route, headers};

use super::Inner;
use super::channel::{BrokerError, Chan};
use super::message::{self, BROKER_DEATH_HEADERS};
use super::topology::QueueSpec;

/// Up to `limit` dead letters of `spec`'s queue, oldest first.
pub(crate) async fn list(
    inner: &Inner,
    route: &Route,
    spec: &QueueSpec,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let _one_at_a_time = inner.dead_letter_lock.lock().await;
    let chan = inner.broker.channel().await?;
    let mut letters = Vec::new();
    let mut held = None;
    let listed = async {
        inner
            .topology
            .declare_dead_letter_queue(&chan, spec)
            .await?;
        while letters.len() < limit {
            let Some((get_ok, props, body)) = get(&chan, &spec.dead_letter_queue).await? else {
                break;
            };
            held = Some(get_ok.delivery_tag());
            letters.push(to_dead_letter(route, &props, body));
        }
        Ok::<_, BrokerError>(())
    }
    .await;
    put_back(&chan, held).await;
    chan.close().await;
    listed.map(|()| letters)
}

/// Moves dead letter `id` of `spec`'s queue back into the queue; whether
/// it was there.
pub(crate) async fn replay(inner: &Inner, spec: &QueueSpec, id: &str) -> Result<bool, BrokerError> {
    let _one_at_a_time = inner.dead_letter_lock.lock().await;
    let chan = inner.broker.channel().await?;
    let mut held = None;
    let replayed = async {
        inner.topology.declare_consumed(&chan, spec).await?;
        while let Some((get_ok, props, body)) = get(&chan, &spec.dead_letter_queue).await? {
            let tag = get_ok.delivery_tag();
            if letter_id(&props, &body) != id {
                held = Some(tag);
                continue;
            }
            let message_id = props
                .message_id()
                .cloned()
                .unwrap_or_else(message::new_message_id);
            let mut clear = vec![headers::DEATH_REASON, headers::ATTEMPTS];
            clear.extend(BROKER_DEATH_HEADERS);
            let props = message::forward(&props, &message_id, &clear, &[], None);
            inner
                .publisher
                .publish(&inner.broker, "", &spec.queue, &props, &body)
                .await?;
            // A tag only means something on the (still open) channel it
            // came from; see `consumer::settle`.
            if !chan.is_usable() {
                return Err(BrokerError::ChannelClosed {
                    code: 0,
                    text: format!(
                        "dead letter {id} was replayed but the channel closed before it \
                         was removed: it is still listed"
                    ),
                });
            }
            chan.channel
                .basic_ack(BasicAckArguments::new(tag, false))
                .await
                .map_err(|e| chan.explain(e))?;
            tracing::info!(queue = %spec.queue, %id, "replayed a dead letter");
            return Ok(true);
        }
        Ok::<_, BrokerError>(false)
    }
    .await;
    put_back(&chan, held).await;
    chan.close().await;
    replayed
}

async fn get(
    chan: &Chan,
    queue: &str,
) -> Result<Option<(GetOk, BasicProperties, Vec<u8>)>, BrokerError> {
    chan.channel
        .basic_get(BasicGetArguments::new(queue))
        .await
        .map_err(|e| chan.explain(e))
}

/// Requeues every message held up to `last` (closing the channel would do
/// it too; this keeps the channel's state explicit).
async fn put_back(chan: &Chan, last: Option<u64>) {
    if let Some(tag) = last.filter(|_| chan.is_usable()) {
        if let Err(err) = chan
            .channel
            .basic_nack(BasicNackArguments::new(tag, true, true))
            .await
        {
            tracing::debug!(error = %err, "requeueing dead letters; closing the channel requeues them");
        }
    }
}

fn letter_id(props: &BasicProperties, body: &[u8]) -> String {
    props
        .message_id()
        .cloned()
        .unwrap_or_else(|| message::fallback_id(props, body))
}

fn to_dead_letter(route: &Route, props: &BasicProperties, body: Vec<u8>) -> DeadLetter {
    let id = letter_id(props, &body);
    let inbound = message::inbound(props, body);
    DeadLetter {
        id,
        route: route.clone(),
        reason: inbound
            .death_reason
            .unwrap_or_else(|| "unknown (no reason recorded)".to_owned()),
        attempts: inbound.attempt,
        message: inbound.message,
    }
}
