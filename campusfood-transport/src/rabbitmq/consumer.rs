//! The consumer loop of one subscription.
//!
//! One channel per subscription: `basic.qos(prefetch)`, manual acks, and up
//! to `prefetch` handlers running at once (a semaphore, as in the memory
//! transport) whose bodies add up to at most
//! [`max_inflight_bytes`](campusfood_core::config::RabbitConfig::max_inflight_bytes)
//! (a second semaphore, in bytes: RabbitMQ's prefetch counts messages only). Each delivery is acknowledged only once what its
//! [`Disposition`] asks for is durable:
//! - `Ack`: `basic.ack`, coalesced: one acker per channel collects what the
//!   handlers finished and acknowledges the tags below the lowest
//!   still-running one with a single `basic.ack(multiple)`, and those above
//!   it one by one (so a slow message never holds up the prefetch window).
//!   Under load one frame settles a whole batch.
//! - `Retry` before `max_attempts`: published (confirmed) to the queue's
//!   retry queue with `expiration = retry_delay` and `x-attempts + 1`, then
//!   acked. When it expires the broker dead-letters it back into the queue
//!   through the default exchange: a delay without a hot loop, and without
//!   holding a prefetch slot while waiting.
//! - `Retry` at `max_attempts`, or `DeadLetter`: published (confirmed) to
//!   the dead-letter exchange with the reason in `x-death-reason`, then
//!   acked.
//!
//! If that publish fails the delivery is nacked back onto the queue after
//! the retry delay (or, if the channel is gone, the broker requeues it): it
//! is handled again, never lost. A handler that panics counts as `Retry`.
//!
//! When the channel or connection is lost, the loop reconnects with
//! exponential backoff and consumes again; deliveries that were in flight
//! are requeued by the broker and redelivered (handlers are idempotent).
//! On stop it cancels the consumer, lets in-flight handlers finish and ack
//! (at most
//! [`drain_timeout`](campusfood_core::config::RabbitConfig::drain_timeout)),
//! then closes the channel; deliveries
//! prefetched but not started go back to the queue.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicNackArguments,
    BasicQosArguments, ConsumerMessage,
};
use campusfood_core::bounded;
use campusfood_core::transport::{
    Delivery, Disposition, Handler, Route, StopSignal, SubscribeOptions, headers,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::Inner;
use super::channel::{BrokerError, Chan};
use super::message::{self, BROKER_DEATH_HEADERS};
use super::topology::QueueSpec;

/// How long a consumer must have run for its loss to count as a fresh
/// failure (reconnect at once) rather than a repeat (back off).
const STABLE: Duration = Duration::from_secs(5);

/// Longest a stopping subscription waits for the broker to confirm the
/// consumer's cancellation.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// A consuming channel.
pub(crate) struct Consumer {
    chan: Chan,
    tag: String,
    deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Opens a channel, declares what `spec` needs, sets the prefetch and
/// starts consuming.
pub(crate) async fn start(
    inner: &Inner,
    spec: &QueueSpec,
    prefetch: u16,
) -> Result<Consumer, BrokerError> {
    let chan = inner.broker.channel().await?;
    inner.topology.declare_consumed(&chan, spec).await?;
    chan.channel
        .basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await
        .map_err(|e| chan.explain(e))?;
    let (tag, deliveries) = chan
        .channel
        .basic_consume_rx(
            BasicConsumeArguments::new(&spec.queue, "")
                .manual_ack(true)
                .finish(),
        )
        .await
        .map_err(|e| chan.explain(e))?;
    tracing::debug!(queue = %spec.queue, %tag, prefetch, "consuming");
    Ok(Consumer {
        chan,
        tag,
        deliveries,
    })
}

/// What a subscription runs with.
pub(crate) struct Job {
    pub(crate) inner: Arc<Inner>,
    pub(crate) route: Route,
    pub(crate) spec: QueueSpec,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) options: SubscribeOptions,
}

/// Runs the subscription until stopped or the transport is closed,
/// starting with `first` and reconnecting whenever the channel is lost.
pub(crate) async fn run(job: Arc<Job>, first: Consumer, mut stop: StopSignal) {
    let config = job.inner.topology.config();
    let prefetch = job.options.prefetch.max(1);
    let permits = Arc::new(Semaphore::new(usize::from(prefetch)));
    let budget = ByteBudget::new(config.max_inflight_bytes);
    let mut backoff = config.reconnect_backoff;
    let mut next = Some(first);
    loop {
        let consumer = match next.take() {
            Some(c) => c,
            None => {
                let started = tokio::select! {
                    _ = stop.stopped() => break,
                    started = start(&job.inner, &job.spec, prefetch) => started,
                };
                match started {
                    Ok(c) => {
                        tracing::info!(queue = %job.spec.queue, "consuming again after reconnecting");
                        c
                    }
                    Err(BrokerError::Closed) => break,
                    Err(err) => {
                        tracing::warn!(queue = %job.spec.queue, error = %err, retry_in = ?backoff, "cannot consume; will retry");
                        tokio::select! {
                            _ = stop.stopped() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(config.reconnect_backoff_max);
                        continue;
                    }
                }
            }
        };
        let Consumer {
            chan,
            tag,
            mut deliveries,
        } = consumer;
        let consuming_since = Instant::now();
        let acker = Acker::start(chan.clone(), job.spec.queue.clone());
        let stopped = loop {
            let permit = tokio::select! {
                biased;
                _ = stop.stopped() => break true,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break true,
                },
            };
            let delivery = tokio::select! {
                biased;
                _ = stop.stopped() => break true,
                d = deliveries.recv() => d,
            };
            let Some(delivery) = delivery else {
                break false;
            };
            // Not started when the stop comes first: the broker requeues
            // it when the channel closes.
            let size = delivery.content.as_ref().map_or(0, Vec::len);
            let bytes = tokio::select! {
                biased;
                _ = stop.stopped() => break true,
                b = budget.acquire(size) => match b {
                    Some(b) => b,
                    None => break true,
                },
            };
            if let Some(deliver) = &delivery.deliver {
                acker.delivered(deliver.delivery_tag());
            }
            tokio::spawn(handle(
                job.clone(),
                acker.clone(),
                delivery,
                (permit, bytes),
            ));
        };
        if stopped {
            drain(&job, chan, &acker, &tag, &permits, prefetch).await;
            break;
        }
        if job.inner.broker.is_closed() {
            break;
        }
        tracing::warn!(queue = %job.spec.queue, "lost the consuming channel; reconnecting");
        if consuming_since.elapsed() < STABLE {
            // Lost again right after starting: back off rather than spin.
            tokio::select! {
                _ = stop.stopped() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(config.reconnect_backoff_max);
        } else {
            backoff = config.reconnect_backoff;
        }
    }
    tracing::debug!(queue = %job.spec.queue, "subscription ended");
}

/// The prefetch window in bytes: running handlers hold permits for their
/// bodies' sizes.
struct ByteBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl ByteBudget {
    fn new(total: usize) -> Self {
        // A semaphore counts in u32 steps per acquire; 4 GiB is far beyond
        // any sensible window.
        let total = total.clamp(1, u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Waits until a body of `size` bytes fits; one larger than the whole
    /// budget waits for all of it (it runs alone). `None` if closed.
    async fn acquire(&self, size: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(size.clamp(1, self.total)).unwrap_or(u32::MAX);
        self.bytes.clone().acquire_many_owned(n).await.ok()
    }
}

/// Cancels the consumer, waits for in-flight handlers and their acks,
/// closes the channel.
async fn drain(
    job: &Job,
    chan: Chan,
    acker: &Acker,
    tag: &str,
    permits: &Semaphore,
    prefetch: u16,
) {
    let cancel = chan.channel.basic_cancel(BasicCancelArguments::new(tag));
    match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "cancelling the consumer"),
        Err(_) => tracing::debug!("broker did not confirm the consumer's cancellation"),
    }
    let drain_timeout = job.inner.topology.config().drain_timeout;
    if tokio::time::timeout(drain_timeout, permits.acquire_many(u32::from(prefetch)))
        .await
        .is_err()
    {
        tracing::warn!(
            queue = %job.spec.queue,
            after = ?drain_timeout,
            "handlers still running at stop; closing the channel: their messages will be redelivered"
        );
    }
    if tokio::time::timeout(CANCEL_TIMEOUT, acker.flush())
        .await
        .is_err()
    {
        tracing::debug!(queue = %job.spec.queue, "acks not flushed at stop; the broker will redeliver");
    }
    chan.close().await;
}

/// Handles one delivery and settles it; see the [module docs](self).
async fn handle(
    job: Arc<Job>,
    acker: Acker,
    delivery: ConsumerMessage,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    let _permits = permits;
    let ConsumerMessage {
        deliver,
        basic_properties,
        content,
        ..
    } = delivery;
    let (Some(deliver), Some(props)) = (deliver, basic_properties) else {
        return;
    };
    let tag = deliver.delivery_tag();
    let inbound = message::inbound(&props, content.unwrap_or_default());
    let attempt = inbound.attempt;
    let message_id = inbound
        .message_id
        .clone()
        .unwrap_or_else(message::new_message_id);
    let body = inbound.message.body.clone();
    let handler = job.handler.clone();
    let for_handler = Delivery {
        message: inbound.message,
        attempt,
    };
    // On its own task so that a panicking handler cannot strand the
    // delivery unacknowledged.
    let disposition = match tokio::spawn(async move { handler.handle(for_handler).await }).await {
        Ok(d) => d,
        Err(err) => {
            tracing::error!(route = %job.route, error = %err, "handler panicked; retrying the message");
            Disposition::Retry {
                reason: format!("handler failed: {err}"),
            }
        }
    };
    let (queue, route) = (&job.spec.queue, &job.route);
    let max_attempts = job.options.max_attempts.max(1);
    let settled = match disposition {
        Disposition::Ack => Ok(()),
        Disposition::Retry { reason } if attempt < max_attempts => {
            let reason = bounded::reason(&reason);
            tracing::debug!(%route, %queue, attempt, %reason, delay = ?job.options.retry_delay, "retry later");
            // RabbitMQ's own death history is dropped on the way to the
            // retry queue: the attempt count is ours, and a history that
            // shows the queue cycling could make the broker drop the
            // message as a dead-letter loop.
            let props = message::forward(
                &props,
                &message_id,
                &BROKER_DEATH_HEADERS,
                &[(headers::ATTEMPTS, (attempt + 1).to_string())],
                Some(job.options.retry_delay),
            );
            publish(&job, "", &job.spec.retry_queue, &props, &body).await
        }
        Disposition::Retry { reason } => {
            let reason = format!("gave up after {max_attempts} attempts: {reason}");
            dead_letter(&job, &props, &message_id, attempt, reason, &body).await
        }
        Disposition::DeadLetter { reason } => {
            dead_letter(&job, &props, &message_id, attempt, reason, &body).await
        }
    };
    match settled {
        Ok(()) => acker.settle(tag, Settle::Ack),
        Err(err) => {
            tracing::warn!(
                %queue, error = %err, delay = ?job.options.retry_delay,
                "could not hand the message on; returning it to the queue"
            );
            tokio::time::sleep(job.options.retry_delay).await;
            acker.settle(tag, Settle::Requeue);
        }
    }
}

/// How a finished delivery is settled.
enum Settle {
    Ack,
    Requeue,
}

/// What the acker of a channel is told.
enum AckCommand {
    /// The consumer loop received delivery `tag`.
    Delivered(u64),
    /// A handler finished delivery `tag`.
    Settle(u64, Settle),
    /// Answer once everything sent before is settled with the broker.
    Flush(oneshot::Sender<()>),
}

/// The acker of one consuming channel; see the [module docs](self).
#[derive(Clone)]
struct Acker {
    commands: mpsc::UnboundedSender<AckCommand>,
}

impl Acker {
    /// Starts the acker of `chan`; it ends when every handle is dropped.
    fn start(chan: Chan, queue: String) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(ack_loop(chan, queue, rx));
        Self { commands }
    }

    fn delivered(&self, tag: u64) {
        // The acker lives while a handle does, so a send fails only if its
        // task died; the broker then requeues the channel's deliveries when
        // the channel closes.
        let _ = self.commands.send(AckCommand::Delivered(tag));
    }

    fn settle(&self, tag: u64, how: Settle) {
        let _ = self.commands.send(AckCommand::Settle(tag, how));
    }

    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(AckCommand::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Settles one channel's deliveries: takes every command waiting, then acks
/// the tags finished below the lowest unfinished one with one
/// `basic.ack(multiple)` and those above it one by one. Tags it never saw
/// delivered are never covered by a `multiple`: every delivered tag below
/// the lowest unfinished one is settled. The work per round is the round's
/// commands, not the prefetch window.
async fn ack_loop(chan: Chan, queue: String, mut commands: mpsc::UnboundedReceiver<AckCommand>) {
    // Delivered and not yet finished by their handler.
    let mut unfinished: BTreeSet<u64> = BTreeSet::new();
    while let Some(first) = commands.recv().await {
        let mut finished = Vec::new();
        let mut flushed = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take().or_else(|| commands.try_recv().ok()) {
            match command {
                AckCommand::Delivered(tag) => {
                    unfinished.insert(tag);
                }
                AckCommand::Settle(tag, Settle::Ack) => {
                    if unfinished.remove(&tag) {
                        finished.push(tag);
                    }
                }
                AckCommand::Settle(tag, Settle::Requeue) => {
                    unfinished.remove(&tag);
                    send(&chan, &queue, tag, Settle::Requeue, false).await;
                }
                AckCommand::Flush(done) => flushed.push(done),
            }
        }
        let lowest_unfinished = unfinished.first().copied().unwrap_or(u64::MAX);
        let (below, above): (Vec<u64>, Vec<u64>) = finished
            .into_iter()
            .partition(|&tag| tag < lowest_unfinished);
        if let Some(&last) = below.iter().max() {
            send(&chan, &queue, last, Settle::Ack, true).await;
        }
        for tag in above {
            send(&chan, &queue, tag, Settle::Ack, false).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Acks (up to and including, if `multiple`) or requeues delivery `tag` on
/// the channel it came from, unless that channel is closed: delivery tags
/// belong to a channel, and a closed channel's id may already be reused by
/// a new one, where the same tag would settle some other message. The
/// broker requeues what a closed channel left unacknowledged, so skipping
/// loses nothing.
async fn send(chan: &Chan, queue: &str, tag: u64, how: Settle, multiple: bool) {
    if !chan.is_usable() {
        tracing::debug!(%queue, tag, "channel gone before the ack; the broker will redeliver");
        return;
    }
    let sent = match how {
        Settle::Ack => {
            chan.channel
                .basic_ack(BasicAckArguments::new(tag, multiple))
                .await
        }
        Settle::Requeue => {
            chan.channel
                .basic_nack(BasicNackArguments::new(tag, false, true))
                .await
        }
    };
    if let Err(err) = sent {
        tracing::debug!(%queue, tag, error = %err, "ack lost with the channel; the broker will redeliver");
    }
}

async fn dead_letter(
    job: &Job,
    props: &BasicProperties,
    message_id: &str,
    attempt: u32,
    reason: String,
    body: &[u8],
) -> Result<(), BrokerError> {
    // Bounded: a header frame larger than the broker's `frame_max` closes
    // the whole connection (`501 FRAME_ERROR`), and the message would come
    // back to do it again.
    let reason = bounded::reason_owned(reason);
    tracing::warn!(
        route = %job.route, queue = %job.spec.queue, id = %message_id, attempts = attempt, %reason,
        "dead-lettered"
    );
    let props = message::forward(
        props,
        message_id,
        &[],
        &[
            (headers::DEATH_REASON, reason),
            (headers::ATTEMPTS, attempt.to_string()),
        ],
        None,
    );
    let target = &job.spec.dead_letter;
    publish(job, &target.exchange, &target.routing_key, &props, body).await
}

async fn publish(
    job: &Job,
    exchange: &str,
    routing_key: &str,
    props: &BasicProperties,
    body: &[u8],
) -> Result<(), BrokerError> {
    job.inner
        .publisher
        .publish(&job.inner.broker, exchange, routing_key, props, body)
        .await
}
