//! What every piece of the RabbitMQ transport shares below the connection:
//! [`BrokerError`], and [`Chan`], a channel that remembers why the broker
//! closed it. The connection ([`Broker`](super::connection::Broker)) and
//! the topology both build on it, so neither needs the other's module.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::Channel;
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use thiserror::Error;

/// Why talking to the broker failed.
#[derive(Debug, Error)]
pub(crate) enum BrokerError {
    /// The broker could not be reached or refused the login.
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect {
        /// The URL, password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The URL is not an `amqp://` URL this transport can use.
    #[error("invalid RabbitMQ URL {url}: {reason}")]
    Url {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker closed the channel, saying why (404 no such queue, 406
    /// a queue declared with other arguments, …).
    #[error("broker closed the channel: {code} {text}")]
    ChannelClosed {
        /// AMQP reply code.
        code: u16,
        /// The broker's explanation.
        text: String,
    },
    /// Any other client or network failure.
    #[error(transparent)]
    Amqp(#[from] amqprs::error::Error),
    /// The broker confirmed nothing within the deadline.
    #[error("broker did not confirm the message within {0:?}")]
    ConfirmTimeout(Duration),
    /// The channel closed before the broker confirmed the message.
    #[error("channel closed before the broker confirmed the message")]
    ConfirmLost,
    /// The broker refused the message (`basic.nack`).
    #[error("broker refused the message (nack)")]
    Nacked,
    /// No queue is bound for the message: the broker returned it.
    #[error("no queue is bound to exchange `{exchange}` with routing key `{key}`")]
    Unroutable {
        /// The exchange published to (`""` is the default exchange).
        exchange: String,
        /// The routing key.
        key: String,
    },
    /// The route has no exchange or queue in this transport.
    #[error("no RabbitMQ destination for this route")]
    NoRoute,
    /// A queue or exchange name AMQP cannot carry.
    #[error("name `{0}…` is longer than AMQP's 255 bytes")]
    Name(String),
    /// [`RabbitTransport::close`](super::RabbitTransport::close) was called.
    #[error("transport closed")]
    Closed,
}

impl BrokerError {
    /// Whether the same operation may succeed on another try.
    pub(crate) fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::Url { .. }
                | Self::Unroutable { .. }
                | Self::Closed
                | Self::NoRoute
                | Self::Name(_)
        )
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections here are single map or slot updates; a panic cannot
    // leave them half-done, so poison is safe to ignore.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens a channel on `conn` with a callback that logs and keeps why the
/// broker closed it.
pub(crate) async fn open_channel(conn: &Connection) -> Result<Chan, BrokerError> {
    let channel = conn.open_channel(None).await?;
    let closed = Arc::new(Mutex::new(None));
    channel
        .register_callback(ChannelEvents {
            closed: closed.clone(),
        })
        .await?;
    Ok(Chan { channel, closed })
}

/// A channel and the reason the broker closed it, if it did.
#[derive(Clone)]
pub(crate) struct Chan {
    pub(crate) channel: Channel,
    closed: Arc<Mutex<Option<(u16, String)>>>,
}

impl Chan {
    /// `err` explained by the broker's reason for closing the channel, when
    /// it closed it (the client itself only sees the channel go away).
    pub(crate) fn explain(&self, err: amqprs::error::Error) -> BrokerError {
        match lock(&self.closed).clone() {
            Some((code, text)) => BrokerError::ChannelClosed { code, text },
            None => BrokerError::Amqp(err),
        }
    }

    /// Whether publishing on it can still work.
    pub(crate) fn is_usable(&self) -> bool {
        self.channel.is_open() && self.channel.is_connection_open()
    }

    /// Closes the channel, logging (not returning) a failure: by then there
    /// is nothing left to do about it.
    pub(crate) async fn close(self) {
        if self.is_usable() {
            if let Err(err) = self.channel.close().await {
                tracing::debug!(error = %err, "closing a channel");
            }
        }
    }
}

/// Callback of every channel but the publisher's: logs what the broker
/// says and keeps why it closed the channel.
struct ChannelEvents {
    closed: Arc<Mutex<Option<(u16, String)>>>,
}

#[async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(
        &mut self,
        channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::debug!(channel = channel.channel_id(), reason = %close, "broker closed a channel");
        *lock(&self.closed) = Some((close.reply_code(), close.reply_text().clone()));
        Ok(())
    }

    async fn cancel(
        &mut self,
        channel: &Channel,
        cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::warn!(
            channel = channel.channel_id(),
            consumer = %cancel.consumer_tag(),
            "broker cancelled a consumer (queue deleted?)"
        );
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        tracing::info!(active, "broker flow control");
        Ok(true)
    }

    async fn publish_ack(&mut self, _: &Channel, _: Ack) {}

    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}

    async fn publish_return(&mut self, _: &Channel, ret: Return, _: BasicProperties, _: Vec<u8>) {
        tracing::warn!(reason = %ret, "broker returned a message");
    }
}
