//! W3C trace context across every hop: one trace per order, from the HTTP
//! request that placed it through every message it caused.
//!
//! `tracing` stays the API. When the process installs a
//! [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry) layer
//! (the example binaries do, `campusfood_services::telemetry`), every
//! `tracing` span is an OpenTelemetry span, and this module carries its
//! context from process to process in the W3C `traceparent` and
//! `tracestate` headers ([`headers::TRACEPARENT`],
//! [`headers::TRACESTATE`]) of a [`Message`] — which every transport keeps
//! (HTTP headers, AMQP headers, Kafka record headers). Without such a
//! layer the spans are plain `tracing` spans and nothing is injected.
//!
//! The rule everywhere: **a message that carries a trace context
//! continues it**; one that carries none belongs to the span it is sent
//! from. So an event stored in an outbox with its order's context is
//! published, later and from another task, in the order's trace.
//!
//! Spans follow OpenTelemetry's messaging semantic conventions: a
//! producer span `publish <destination>` (`send` on Kafka, `create` for a
//! record written as part of a batch) whose context is the one the message
//! carries, a consumer span `process <destination>` whose parent is that
//! context, and for a batch consumed at once a `process <destination>`
//! span with `messaging.batch.message_count` and a link to each message's
//! context. Attributes: `messaging.system`, `messaging.destination.name`,
//! `messaging.operation.type`, `messaging.operation.name`,
//! `messaging.message.body.size`, `messaging.consumer.group.name`, and
//! `campusfood.order_id` (the message key), `campusfood.attempt`,
//! `campusfood.disposition`.
//!
//! [`Traced`] puts all of this around any [`Transport`]: the one place
//! where services publish and where their handlers are invoked. Code that
//! talks to a broker directly (Part C's Kafka producer and its batch
//! consumer) uses [`producer_span`], [`consumer_span`] and [`batch_span`]
//! with [`inject`].
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use campusfood_core::telemetry;
//! use campusfood_core::transport::headers;
//!
//! // A request that arrives with a trace context continues it.
//! let incoming = BTreeMap::from([(
//!     headers::TRACEPARENT.to_owned(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
//! )]);
//! let span = tracing::info_span!("order");
//! let continued = telemetry::continue_from(&span, &incoming);
//! // Without an OpenTelemetry layer installed, spans carry no context:
//! assert!(!continued);
//! assert_eq!(telemetry::traceparent(&span), None);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::transport::{
    Delivery, Disposition, ForwardTransport, Handler, Message, Route, SubscribeOptions,
    Subscription, Transport, TransportError, headers,
};

/// Headers as a W3C trace context carrier.
struct Carrier<'a>(&'a BTreeMap<String, String>);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Headers being written.
struct CarrierMut<'a>(&'a mut BTreeMap<String, String>);

impl Injector for CarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_ascii_lowercase(), value);
    }
}

/// The trace context `headers` carry, when they carry a valid one.
fn remote_context(headers: &BTreeMap<String, String>) -> Option<opentelemetry::Context> {
    if !headers.contains_key(headers::TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Carrier(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` continue the trace whose context `headers` carry (a W3C
/// `traceparent`, and `tracestate`). Returns whether it did: `false` when
/// the headers carry no valid context (the span then stays where it was
/// created: a child of the current span, or a new trace), or when no
/// OpenTelemetry layer is installed. Call it before the span is first
/// entered.
pub fn continue_from(span: &Span, headers: &BTreeMap<String, String>) -> bool {
    match remote_context(headers) {
        Some(cx) => span.set_parent(cx).is_ok(),
        None => false,
    }
}

/// Writes `span`'s trace context into `headers` (`traceparent`, and
/// `tracestate` when there is one), replacing what they held. Writes
/// nothing when the span has no OpenTelemetry context (no layer
/// installed, or the span is disabled).
pub fn inject(span: &Span, headers: &mut BTreeMap<String, String>) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        headers.remove(headers::TRACESTATE);
        TraceContextPropagator::new().inject_context(&cx, &mut CarrierMut(headers));
    }
}

/// `span`'s W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), when it
/// has an OpenTelemetry context.
pub fn traceparent(span: &Span) -> Option<String> {
    let mut headers = BTreeMap::new();
    inject(span, &mut headers);
    headers.remove(headers::TRACEPARENT)
}

/// The trace id (32 hex digits) in a `traceparent` value, when it is one.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
}

/// What a producer span stands for (`messaging.operation.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produce {
    /// The message is sent now, on its own: the span lasts until the
    /// broker accepted it.
    Send,
    /// The message is created to be sent later with others (a burst, a
    /// transaction's outputs): the span gives it its own context.
    Create,
}

/// `messaging.operation.name` of a send on `system`, as the conventions
/// name it (`publish` for RabbitMQ, `send` for Kafka).
fn send_operation(system: &str) -> &'static str {
    match system {
        "kafka" => "send",
        _ => "publish",
    }
}

/// A producer span for `message`, sent over `system` (`rabbitmq`, `kafka`,
/// a [`Transport::name`]) to `destination`: `publish <destination>`
/// (`send` on Kafka, `create` for [`Produce::Create`]). It continues the
/// trace `message` carries, else it is a child of the current span.
/// [`inject`] it into the message before sending.
///
/// To start a new trace for the message whatever the current span, pass
/// the span to [`new_trace`] before injecting it.
pub fn producer_span(system: &str, destination: &str, kind: Produce, message: &Message) -> Span {
    let (operation_type, operation) = match kind {
        Produce::Send => ("send", send_operation(system)),
        Produce::Create => ("create", "create"),
    };
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("{operation} {destination}"),
        otel.kind = "producer",
        messaging.system = %system,
        messaging.destination.name = %destination,
        messaging.operation.type = operation_type,
        messaging.operation.name = operation,
        messaging.message.body.size = message.body.len(),
        campusfood.order_id = message.key.as_deref(),
    );
    continue_from(&span, &message.headers);
    span
}

/// Makes `span` the root of a trace of its own (Part C's producer starts
/// one per order), whatever span it was created in. Call it before the
/// span is first entered or injected.
pub fn new_trace(span: &Span) {
    let _ = span.set_parent(opentelemetry::Context::new());
}

/// A consumer span for processing `delivery`, consumed over `system` from
/// `destination` (by `group`, when there is one): `process <destination>`,
/// a child of the context the message carries (else of the current span).
/// Record the outcome with [`record_disposition`].
pub fn consumer_span(
    system: &str,
    destination: &str,
    group: Option<&str>,
    delivery: &Delivery,
) -> Span {
    let message = &delivery.message;
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {destination}"),
        otel.kind = "consumer",
        otel.status_code = field::Empty,
        messaging.system = %system,
        messaging.destination.name = %destination,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.consumer.group.name = group,
        messaging.message.body.size = message.body.len(),
        campusfood.order_id = message.key.as_deref(),
        campusfood.attempt = delivery.attempt,
        campusfood.disposition = field::Empty,
    );
    continue_from(&span, &message.headers);
    span
}

/// A consumer span for processing `deliveries` as one batch from
/// `destination`: `process <destination>` with
/// `messaging.batch.message_count`, linked to the context of each message
/// that carries one (the messages belong to many traces, so the batch has
/// none of them as its parent). Process each message in a
/// [`consumer_span`] inside it, so that its work joins its own trace.
pub fn batch_span(
    system: &str,
    destination: &str,
    group: Option<&str>,
    deliveries: &[Delivery],
) -> Span {
    let span = tracing::info_span!(
        "process_batch",
        otel.name = %format_args!("process {destination}"),
        otel.kind = "consumer",
        messaging.system = %system,
        messaging.destination.name = %destination,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.consumer.group.name = group,
        messaging.batch.message_count = deliveries.len(),
    );
    for delivery in deliveries {
        if let Some(cx) = remote_context(&delivery.message.headers) {
            span.add_link(cx.span().span_context().clone());
        }
    }
    span
}

/// Records on a [`consumer_span`] what became of the delivery
/// (`campusfood.disposition`: `ack`, `retry`, `dead_letter`); a dead
/// letter marks the span as an error.
pub fn record_disposition(span: &Span, disposition: &Disposition) {
    let label = match disposition {
        Disposition::Ack => "ack",
        Disposition::Retry { .. } => "retry",
        Disposition::DeadLetter { .. } => {
            span.record("otel.status_code", "ERROR");
            "dead_letter"
        }
    };
    span.record("campusfood.disposition", label);
}

/// A [`Transport`] that traces what passes through `inner`: each publish
/// in a [`producer_span`] whose context goes with the message, each
/// delivery handled in a [`consumer_span`] that continues the message's
/// trace. Requests pass through (the HTTP transport traces its own calls
/// as HTTP client spans, and its server adapter continues their traces).
///
/// Destinations are named by route (`order.placed`, which is also Part
/// B's routing key), the system by [`Transport::name`].
#[derive(Debug)]
pub struct Traced {
    inner: Arc<dyn Transport>,
}

impl Traced {
    /// Traces the traffic of `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl ForwardTransport for Traced {
    fn inner(&self) -> &dyn Transport {
        &*self.inner
    }

    async fn forward_publish(
        &self,
        route: &Route,
        mut message: Message,
    ) -> Result<(), TransportError> {
        let span = producer_span(self.inner.name(), route.as_str(), Produce::Send, &message);
        inject(&span, &mut message.headers);
        self.inner.publish(route, message).instrument(span).await
    }

    async fn forward_subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        let traced = TracedHandler::new(
            handler,
            self.inner.name(),
            route.as_str(),
            options.group.as_deref(),
        );
        self.inner.subscribe(route, Arc::new(traced), options).await
    }
}

/// A [`Handler`] that handles each delivery in a [`consumer_span`]
/// continuing the trace the message carries, and records the
/// disposition. [`Traced`] wraps every subscriber in one; wrap a handler
/// subscribed to a transport directly with it too.
pub struct TracedHandler {
    inner: Arc<dyn Handler>,
    system: String,
    destination: String,
    group: Option<String>,
}

impl std::fmt::Debug for TracedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedHandler")
            .field("system", &self.system)
            .field("destination", &self.destination)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl TracedHandler {
    /// `inner`, consuming over `system` from `destination` in `group`.
    pub fn new(
        inner: Arc<dyn Handler>,
        system: &str,
        destination: &str,
        group: Option<&str>,
    ) -> Self {
        Self {
            inner,
            system: system.to_owned(),
            destination: destination.to_owned(),
            group: group.map(str::to_owned),
        }
    }
}

#[async_trait]
impl Handler for TracedHandler {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let span = consumer_span(
            &self.system,
            &self.destination,
            self.group.as_deref(),
            &delivery,
        );
        let disposition = self.inner.handle(delivery).instrument(span.clone()).await;
        record_disposition(&span, &disposition);
        disposition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_read_from_traceparents() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_of("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of(""), None);
    }

    #[test]
    fn a_valid_traceparent_is_a_remote_context_and_garbage_is_none() {
        let headers = |tp: &str| BTreeMap::from([(headers::TRACEPARENT.to_owned(), tp.to_owned())]);
        let cx = remote_context(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .unwrap();
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(remote_context(&headers("00-not-a-trace-01")).is_none());
        assert!(
            remote_context(&headers(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            ))
            .is_none()
        );
        assert!(remote_context(&BTreeMap::new()).is_none());
    }
}
