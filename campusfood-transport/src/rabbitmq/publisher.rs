//! Publishing with publisher confirms.
//!
//! One channel in confirm mode, shared by every publish of the transport
//! (the application's and the consumers' retries and dead letters).
//! Publishes are written one at a time, each given the next delivery tag
//! and a waiter, and then wait for the broker's `basic.ack` *outside* the
//! lock, so concurrent publishers are confirmed in pipelined batches (the
//! broker acks with `multiple`). Messages are `mandatory`: one that no
//! queue is bound for comes back (`basic.return`, just before its ack) and
//! fails the publish instead of vanishing.
//!
//! A publish that fails (lost connection, nack, no confirm in time) is
//! tried again on a fresh channel up to
//! [`publish_attempts`](campusfood_core::config::RabbitConfig::publish_attempts)
//! times; a message whose confirm was lost may then be stored twice, which
//! at-least-once consumers (idempotent handlers) absorb.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::oneshot;

use super::channel::{BrokerError, lock};
use super::connection::Broker;

/// How the broker answered one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    Acked,
    Nacked,
    Returned,
}

struct Waiter {
    message_id: String,
    tx: oneshot::Sender<Confirm>,
}

/// Publishes waiting for their confirm, by delivery tag, and the message
/// ids the broker returned as unroutable.
#[derive(Default)]
struct Confirms {
    waiting: BTreeMap<u64, Waiter>,
    returned: HashSet<String>,
}

impl Confirms {
    /// Settles `tag` (and every earlier tag when `multiple`).
    fn settle(&mut self, tag: u64, multiple: bool, ok: bool) {
        let tags: Vec<u64> = if multiple {
            self.waiting.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        for t in tags {
            if let Some(w) = self.waiting.remove(&t) {
                let outcome = if self.returned.remove(&w.message_id) {
                    Confirm::Returned
                } else if ok {
                    Confirm::Acked
                } else {
                    Confirm::Nacked
                };
                let _ = w.tx.send(outcome);
            }
        }
    }
}

/// The confirm channel's callback. Dropped when the channel's dispatcher
/// ends (channel or connection gone): its waiters are then dropped and
/// their publishes fail with [`BrokerError::ConfirmLost`].
struct ConfirmEvents {
    confirms: Arc<Mutex<Confirms>>,
}

impl Drop for ConfirmEvents {
    fn drop(&mut self) {
        let mut confirms = lock(&self.confirms);
        confirms.waiting.clear();
        confirms.returned.clear();
    }
}

#[async_trait]
impl ChannelCallback for ConfirmEvents {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::warn!(reason = %close, "broker closed the publisher channel");
        lock(&self.confirms).waiting.clear();
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        tracing::info!(active, "broker flow control on the publisher channel");
        Ok(true)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        lock(&self.confirms).settle(ack.delivery_tag(), ack.mutiple(), true);
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        tracing::warn!(tag = nack.delivery_tag(), "broker nacked a publish");
        lock(&self.confirms).settle(nack.delivery_tag(), nack.multiple(), false);
    }

    async fn publish_return(
        &mut self,
        _: &Channel,
        ret: Return,
        props: BasicProperties,
        _: Vec<u8>,
    ) {
        tracing::warn!(reason = %ret, "broker returned an unroutable message");
        if let Some(id) = props.message_id() {
            lock(&self.confirms).returned.insert(id.clone());
        }
    }
}

/// A channel in confirm mode and its next delivery tag.
struct ConfirmChannel {
    channel: Channel,
    next_tag: u64,
    confirms: Arc<Mutex<Confirms>>,
}

impl ConfirmChannel {
    async fn open(broker: &Broker) -> Result<Self, BrokerError> {
        let conn = broker.connection().await?;
        let channel = conn.open_channel(None).await?;
        let confirms = Arc::new(Mutex::new(Confirms::default()));
        channel
            .register_callback(ConfirmEvents {
                confirms: confirms.clone(),
            })
            .await?;
        channel
            .confirm_select(ConfirmSelectArguments::new(false))
            .await?;
        Ok(Self {
            channel,
            next_tag: 1,
            confirms,
        })
    }

    fn is_usable(&self) -> bool {
        self.channel.is_open() && self.channel.is_connection_open()
    }
}

/// Publishes with confirms; see the [module docs](self).
pub(crate) struct Publisher {
    channel: tokio::sync::Mutex<Option<ConfirmChannel>>,
    confirm_timeout: Duration,
    attempts: u32,
    backoff: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("confirm_timeout", &self.confirm_timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(confirm_timeout: Duration, attempts: u32, backoff: Duration) -> Self {
        Self {
            channel: tokio::sync::Mutex::new(None),
            confirm_timeout,
            attempts: attempts.max(1),
            backoff,
        }
    }

    /// Publishes and waits for the broker's confirm, trying again on a
    /// fresh channel after a transient failure.
    pub(crate) async fn publish(
        &self,
        broker: &Broker,
        exchange: &str,
        routing_key: &str,
        props: &BasicProperties,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let mut attempt = 1;
        loop {
            match self
                .publish_once(broker, exchange, routing_key, props, body)
                .await
            {
                Ok(()) => return Ok(()),
                Err(err) if err.is_transient() && attempt < self.attempts => {
                    tracing::debug!(exchange, routing_key, attempt, error = %err, "publish failed; trying again");
                    tokio::time::sleep(self.backoff * attempt).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn publish_once(
        &self,
        broker: &Broker,
        exchange: &str,
        routing_key: &str,
        props: &BasicProperties,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let confirmed = {
            let mut slot = self.channel.lock().await;
            let chan = match slot.take() {
                Some(c) if c.is_usable() => slot.insert(c),
                _ => slot.insert(ConfirmChannel::open(broker).await?),
            };
            let tag = chan.next_tag;
            let (tx, rx) = oneshot::channel();
            let message_id = props.message_id().cloned().unwrap_or_default();
            lock(&chan.confirms)
                .waiting
                .insert(tag, Waiter { message_id, tx });
            let mut args = BasicPublishArguments::new(exchange, routing_key);
            args.mandatory(true);
            if let Err(err) = chan
                .channel
                .basic_publish(props.clone(), body.to_vec(), args)
                .await
            {
                lock(&chan.confirms).waiting.remove(&tag);
                *slot = None;
                return Err(err.into());
            }
            chan.next_tag += 1;
            rx
        };
        match tokio::time::timeout(self.confirm_timeout, confirmed).await {
            Err(_) => {
                // The channel may be wedged: start over on a fresh one.
                *self.channel.lock().await = None;
                Err(BrokerError::ConfirmTimeout(self.confirm_timeout))
            }
            Ok(Err(_)) => Err(BrokerError::ConfirmLost),
            Ok(Ok(Confirm::Acked)) => Ok(()),
            Ok(Ok(Confirm::Nacked)) => Err(BrokerError::Nacked),
            Ok(Ok(Confirm::Returned)) => Err(BrokerError::Unroutable {
                exchange: exchange.to_owned(),
                key: routing_key.to_owned(),
            }),
        }
    }

    /// Closes the confirm channel, if open.
    pub(crate) async fn close(&self) {
        if let Some(chan) = self.channel.lock().await.take() {
            if chan.is_usable() {
                let _ = chan.channel.close().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_acks_settle_every_earlier_tag_and_returns_win() {
        let mut c = Confirms::default();
        let mut rxs = Vec::new();
        for tag in 1..=4 {
            let (tx, rx) = oneshot::channel();
            c.waiting.insert(
                tag,
                Waiter {
                    message_id: format!("m{tag}"),
                    tx,
                },
            );
            rxs.push(rx);
        }
        c.returned.insert("m2".into());
        c.settle(3, true, true);
        c.settle(4, false, false);
        let got: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap())
            .collect();
        assert_eq!(
            got,
            [
                Confirm::Acked,
                Confirm::Returned,
                Confirm::Acked,
                Confirm::Nacked
            ]
        );
        assert!(c.waiting.is_empty() && c.returned.is_empty());
    }
}
