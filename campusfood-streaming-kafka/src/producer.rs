//! The order producer: `MODE` = `idle` | `once` | `burst`.
//!
//! - `burst`: [`ProducerOptions::total_events`] orders, queued in one go
//!   with [`KafkaTransport::publish_many`] (the idempotent producer batches
//!   them), then flushed; progress is logged every
//!   [`ProducerOptions::print_every`] orders as they are queued. Returns
//!   once every record is acknowledged.
//! - `once`: one order, acknowledged, then return.
//! - `idle`: one order every [`ProducerOptions::sleep`] until stopped (the
//!   original sat idle and produced nothing; a trickle is more useful for
//!   watching the window metrics).
//!
//! Every order gets a fresh [`OrderId`] (counted up from a random 48-bit
//! start, see [`OrderId::generate`]), so keys are unique across runs — the
//! original reused `order-<i>` in every burst, which made a second burst
//! indistinguishable from a replay. The item is drawn
//! uniformly from `item-1` … `item-<ITEM_COUNT>` and the quantity from
//! `1..=MAX_QTY`; `ts` is the production time in epoch milliseconds.
//!
//! Every order also starts a trace of its own: its record carries the W3C
//! `traceparent` of a producer span (`send order-events`, or `create
//! order-events` for each order of a burst), which the consumers continue
//! ([`campusfood_core::telemetry`]).

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use campusfood_core::OrderId;
use campusfood_core::events::OrderEvent;
use campusfood_core::order::{Item, Quantity};
use campusfood_core::telemetry::{self, Produce};
use campusfood_core::transport::{Message, Route, Transport};
use campusfood_kafka::KafkaTransport;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::{StreamingError, item_ids};

/// What the producer does (`MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerMode {
    /// One order every [`ProducerOptions::sleep`] until stopped.
    Idle,
    /// One order, then exit.
    Once,
    /// [`ProducerOptions::total_events`] orders as fast as Kafka takes
    /// them, then exit.
    Burst,
}

impl FromStr for ProducerMode {
    type Err = StreamingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "idle" => Ok(Self::Idle),
            "once" => Ok(Self::Once),
            "burst" => Ok(Self::Burst),
            other => Err(StreamingError::Invalid {
                name: "MODE",
                reason: format!("expected idle, once or burst, got {other:?}"),
            }),
        }
    }
}

impl fmt::Display for ProducerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::Once => "once",
            Self::Burst => "burst",
        })
    }
}

/// The producer's settings, as the contract names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOptions {
    /// `MODE`.
    pub mode: ProducerMode,
    /// `TOTAL_EVENTS`: orders in a burst.
    pub total_events: usize,
    /// `PRINT_EVERY`: log progress every this many orders (0: never).
    pub print_every: usize,
    /// `SLEEP_MS`: the interval between orders in `idle` mode.
    pub sleep: Duration,
    /// `ITEM_COUNT`: items are `item-1` … `item-<ITEM_COUNT>`.
    pub item_count: u32,
    /// `MAX_QTY`: quantities are drawn from `1..=MAX_QTY`.
    pub max_qty: u32,
}

impl Default for ProducerOptions {
    /// The contract's defaults: `idle` (as the original), bursts of
    /// 10,000, progress every 1,000, 50 items, quantities up to 5, one
    /// order a second when idle.
    fn default() -> Self {
        Self {
            mode: ProducerMode::Idle,
            total_events: 10_000,
            print_every: 1_000,
            sleep: Duration::from_secs(1),
            item_count: 50,
            max_qty: 5,
        }
    }
}

/// What a producer run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProducerReport {
    /// The mode it ran in.
    pub mode: ProducerMode,
    /// Orders acknowledged by Kafka.
    pub events: usize,
    /// From the first order queued to the last acknowledgement.
    pub elapsed: Duration,
}

impl ProducerReport {
    /// Acknowledged orders per second.
    pub fn events_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }
}

/// Draws random orders: a fresh id, a uniform item, a uniform quantity.
#[derive(Debug, Clone)]
pub struct OrderGenerator {
    items: Vec<Item>,
    quantities: Vec<Quantity>,
}

impl OrderGenerator {
    /// Orders over `item-1` … `item-<item_count>` with quantities
    /// `1..=max_qty`.
    ///
    /// # Errors
    /// [`StreamingError::Invalid`] if `item_count` is 0 or `max_qty` is not
    /// a valid quantity.
    pub fn new(item_count: u32, max_qty: u32) -> Result<Self, StreamingError> {
        let items = item_ids(item_count)?;
        let invalid = |reason: String| StreamingError::Invalid {
            name: "MAX_QTY",
            reason,
        };
        if max_qty == 0 {
            return Err(invalid("must be at least 1".to_owned()));
        }
        let quantities = (1..=u64::from(max_qty))
            .map(|n| Quantity::new(n).map_err(|e| invalid(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(Self { items, quantities })
    }

    /// A new random order, stamped now.
    pub fn next_order(&self) -> OrderEvent {
        let item = &self.items[fastrand::usize(..self.items.len())];
        let qty = self.quantities[fastrand::usize(..self.quantities.len())];
        OrderEvent {
            order_id: OrderId::generate(),
            item_id: item.clone(),
            qty,
            ts: epoch_millis(),
        }
    }

    /// `n` new random orders.
    pub fn orders(&self, n: usize) -> Vec<OrderEvent> {
        (0..n).map(|_| self.next_order()).collect()
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The record for `order`: JSON value, keyed by its order id.
pub fn order_message(order: &OrderEvent) -> Result<Message, StreamingError> {
    Ok(Message::json(order)?.with_key(order.order_id.as_str()))
}

/// `order`'s record in a trace of its own: the message with the
/// `traceparent` of the producer span returned (`kind`'s, to the order
/// topic of `transport`).
pub fn traced_order_message(
    transport: &KafkaTransport,
    order: &OrderEvent,
    kind: Produce,
) -> Result<(Message, Span), StreamingError> {
    let mut message = order_message(order)?;
    let span = in_new_trace(&order_topic(transport), kind, &mut message);
    Ok((message, span))
}

/// The topic `transport` writes orders to.
fn order_topic(transport: &KafkaTransport) -> String {
    transport
        .topic_for(&Route::ORDER_PLACED)
        .unwrap_or_else(|_| transport.config().order_topic.clone())
}

/// A producer span (`kind`, to `topic`) starting a trace of its own, its
/// `traceparent` written into `message`.
fn in_new_trace(topic: &str, kind: Produce, message: &mut Message) -> Span {
    let span = telemetry::producer_span("kafka", topic, kind, message);
    telemetry::new_trace(&span);
    telemetry::inject(&span, &mut message.headers);
    span
}

/// Publishes `order` on its own, in a trace of its own, and waits for the
/// acknowledgement.
async fn send_order(transport: &KafkaTransport, order: &OrderEvent) -> Result<(), StreamingError> {
    let (message, span) = traced_order_message(transport, order, Produce::Send)?;
    transport
        .publish(&Route::ORDER_PLACED, message)
        .instrument(span)
        .await?;
    Ok(())
}

/// Publishes `orders` to the order topic as one burst, logging progress
/// every `print_every` records queued (0: never). Returns once all are
/// acknowledged, with how many there were.
///
/// # Errors
/// [`StreamingError::Transport`] when Kafka did not acknowledge every
/// record (the others may have been written: keys are unique, so a retried
/// burst is told apart by the consumers' dedupe only if the same events are
/// re-sent).
pub async fn publish_orders(
    transport: &KafkaTransport,
    orders: &[OrderEvent],
    print_every: usize,
) -> Result<usize, StreamingError> {
    let total = orders.len();
    // Each order's `create` span gives its record a trace of its own. The
    // records are encoded first (an order that cannot be encoded sends
    // nothing), then traced as they are queued: the producer's thread
    // sends the first batches while the rest are still being traced.
    let messages = orders
        .iter()
        .map(order_message)
        .collect::<Result<Vec<_>, _>>()?;
    let topic = order_topic(transport);
    let queued = messages.into_iter().enumerate().map(|(i, mut m)| {
        in_new_trace(&topic, Produce::Create, &mut m);
        let n = i + 1;
        if print_every > 0 && n % print_every == 0 {
            tracing::info!(produced = n, total, "PRODUCED EVENTS: {n}/{total}");
        }
        m
    });
    Ok(transport.publish_many(&Route::ORDER_PLACED, queued).await?)
}

/// Runs the producer as `options.mode` says. `idle` runs until `stop`
/// resolves; `once` and `burst` return once their orders are acknowledged
/// (or `stop` resolves first, with what was acknowledged so far).
///
/// # Errors
/// [`StreamingError::Invalid`] for bad options, [`StreamingError::Transport`]
/// when Kafka does not acknowledge.
pub async fn run(
    transport: &KafkaTransport,
    options: &ProducerOptions,
    stop: impl Future<Output = ()>,
) -> Result<ProducerReport, StreamingError> {
    let generator = OrderGenerator::new(options.item_count, options.max_qty)?;
    tokio::pin!(stop);
    let started = Instant::now();
    let events = match options.mode {
        ProducerMode::Once => {
            let order = generator.next_order();
            tokio::select! {
                _ = &mut stop => 0,
                sent = send_order(transport, &order) => {
                    sent?;
                    tracing::info!(order_id = %order.order_id, item = %order.item_id, qty = %order.qty, "produced one order");
                    1
                }
            }
        }
        ProducerMode::Burst => {
            let orders = generator.orders(options.total_events);
            tokio::select! {
                _ = &mut stop => 0,
                sent = publish_orders(transport, &orders, options.print_every) => sent?,
            }
        }
        ProducerMode::Idle => idle(transport, &generator, options, &mut stop).await?,
    };
    let report = ProducerReport {
        mode: options.mode,
        events,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        mode = %report.mode,
        events = report.events,
        elapsed = ?report.elapsed,
        events_per_sec = format!("{:.0}", report.events_per_sec()),
        "producer done"
    );
    Ok(report)
}

async fn idle<S: Future<Output = ()> + Unpin>(
    transport: &KafkaTransport,
    generator: &OrderGenerator,
    options: &ProducerOptions,
    stop: &mut S,
) -> Result<usize, StreamingError> {
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(options.sleep.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(sent),
            _ = tick.tick() => {}
        }
        let order = generator.next_order();
        send_order(transport, &order).await?;
        sent += 1;
        if options.print_every > 0 && sent % options.print_every == 0 {
            tracing::info!(produced = sent, "PRODUCED EVENTS: {sent}");
        } else {
            tracing::debug!(order_id = %order.order_id, "produced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_case_insensitively() {
        assert_eq!(
            "BURST".parse::<ProducerMode>().unwrap(),
            ProducerMode::Burst
        );
        assert_eq!("idle".parse::<ProducerMode>().unwrap(), ProducerMode::Idle);
        assert_eq!(
            " once ".parse::<ProducerMode>().unwrap(),
            ProducerMode::Once
        );
        assert!("sometimes".parse::<ProducerMode>().is_err());
    }

    #[test]
    fn orders_stay_within_items_and_quantities() {
        let g = OrderGenerator::new(3, 2).unwrap();
        let orders = g.orders(500);
        let ids: std::collections::HashSet<_> = orders.iter().map(|o| &o.order_id).collect();
        assert_eq!(ids.len(), 500, "order ids are unique");
        for o in &orders {
            assert!(["item-1", "item-2", "item-3"].contains(&o.item_id.as_str()));
            assert!((1..=2).contains(&o.qty.get()));
            assert!(o.ts > 1_600_000_000_000);
        }
        assert!(OrderGenerator::new(0, 5).is_err());
        assert!(OrderGenerator::new(5, 0).is_err());
    }

    #[test]
    fn order_event_has_the_contract_shape() {
        let g = OrderGenerator::new(50, 5).unwrap();
        let o = g.next_order();
        let m = order_message(&o).unwrap();
        assert_eq!(m.key.as_deref(), Some(o.order_id.as_str()));
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["item_id", "order_id", "qty", "ts"]);
    }
}
