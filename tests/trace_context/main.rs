//! One trace per order, across every hop: Part A over real HTTP, Part B
//! over a real RabbitMQ broker, Part C over a real Kafka broker. The spans
//! go to an in-memory exporter through the same `tracing` layer the
//! example binaries install; each test finds its order's trace by the
//! `traceparent` its answer carries (Part C: by its producer's span, on
//! topics of its own), and asserts that every hop is in it.
//!
//! `cargo test --test trace_context` (RabbitMQ and Kafka must be running:
//! `scripts/brokers.sh up rabbitmq` / `up kafka`).

mod part_a;
mod part_b;
mod part_c;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use campusfood::core::telemetry;
use campusfood::services::telemetry::Tracing;
use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The longest any wait here may take.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// The process's tracing: the examples' layer over an in-memory exporter
/// (and logs to the test output when `TEST_LOG` is set).
struct Spans {
    exporter: InMemorySpanExporter,
    _tracing: Tracing,
}

static SPANS: OnceLock<Spans> = OnceLock::new();

/// Installs the global subscriber once; every test shares its exporter and
/// looks only at its own trace.
pub fn init() {
    SPANS.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracing = Tracing::with_provider(provider);
        let logs = std::env::var_os("TEST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(tracing_subscriber::EnvFilter::from_default_env())
        });
        tracing_subscriber::registry()
            .with(tracing.layer().with_filter(LevelFilter::INFO))
            .with(logs)
            .try_init()
            .expect("no other global subscriber in this test binary");
        Spans {
            exporter,
            _tracing: tracing,
        }
    });
}

/// A finished span, as the assertions read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub name: String,
    pub start: std::time::SystemTime,
    pub kind: SpanKind,
    pub trace_id: String,
    pub span_id: SpanId,
    pub parent: SpanId,
    pub attributes: HashMap<String, String>,
    /// The trace ids of its links.
    pub links: Vec<String>,
}

impl Seen {
    fn of(span: &SpanData) -> Self {
        Self {
            name: span.name.to_string(),
            start: span.start_time,
            kind: span.span_kind.clone(),
            trace_id: span.span_context.trace_id().to_string(),
            span_id: span.span_context.span_id(),
            parent: span.parent_span_id,
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect(),
            links: span
                .links
                .iter()
                .map(|l| l.span_context.trace_id().to_string())
                .collect(),
        }
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The order this span names, if any.
    pub fn order_id(&self) -> Option<&str> {
        self.attr("campusfood.order_id").or(self.attr("order_id"))
    }
}

/// Every span finished so far.
pub fn finished() -> Vec<Seen> {
    let spans = SPANS.get().expect("init() first");
    spans
        .exporter
        .get_finished_spans()
        .expect("the in-memory exporter answers")
        .iter()
        .map(Seen::of)
        .collect()
}

/// The finished spans of trace `trace_id`.
pub fn trace(trace_id: &str) -> Vec<Seen> {
    finished()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect()
}

/// Waits until trace `trace_id` holds `count` spans named `name`.
pub async fn until_spans(trace_id: &str, name: &str, count: usize) {
    let what = format!("{count} span(s) {name:?} in trace {trace_id}");
    campusfood_testkit::until(&what, DEADLINE, async || {
        trace(trace_id).iter().filter(|s| s.name == name).count() >= count
    })
    .await;
}

/// The one span of `spans` named `name` of `kind`.
pub fn one<'a>(spans: &'a [Seen], name: &str, kind: SpanKind) -> &'a Seen {
    let found: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == name && s.kind == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind:?} span {name:?} expected, in {:#?}",
        names(spans)
    );
    found[0]
}

/// Prints trace `trace_id` as a tree, in start order (`--nocapture`
/// shows it): what a trace viewer would show of it.
pub fn print_trace(trace_id: &str) {
    let mut spans = trace(trace_id);
    spans.sort_by_key(|s| s.start);
    fn print(spans: &[Seen], parent: SpanId, depth: usize, out: &mut String) {
        for s in spans.iter().filter(|s| s.parent == parent) {
            let kind = format!("{:?}", s.kind).to_lowercase();
            out.push_str(&format!("{}{} ({kind})\n", "  ".repeat(depth), s.name));
            print(spans, s.span_id, depth + 1, out);
        }
    }
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let mut out = format!("trace {trace_id}\n");
    for root in spans.iter().filter(|s| !ids.contains(&s.parent)) {
        let kind = format!("{:?}", root.kind).to_lowercase();
        out.push_str(&format!("{} ({kind})\n", root.name));
        print(&spans, root.span_id, 1, &mut out);
    }
    eprint!("{out}");
}

/// The names and kinds of `spans`, for messages.
pub fn names(spans: &[Seen]) -> Vec<(String, SpanKind)> {
    spans
        .iter()
        .map(|s| (s.name.clone(), s.kind.clone()))
        .collect()
}

/// The trace id of a `traceparent` header value.
pub fn trace_id(traceparent: &str) -> String {
    telemetry::trace_id_of(traceparent)
        .unwrap_or_else(|| panic!("not a traceparent: {traceparent:?}"))
        .to_owned()
}

/// Every finished span that names `order_id` is in trace `trace_id`, and
/// there are some.
pub fn all_of_order_in(order_id: &str, trace_id: &str) {
    let of_order: Vec<Seen> = finished()
        .into_iter()
        .filter(|s| s.order_id() == Some(order_id))
        .collect();
    assert!(!of_order.is_empty(), "no span names order {order_id}");
    for s in &of_order {
        assert_eq!(
            s.trace_id, trace_id,
            "span {:?} of order {order_id} is in another trace",
            s.name
        );
    }
}

/// A trace context of the caller's: a fresh trace id and parent span id,
/// and the `traceparent` that carries them.
pub fn callers_context() -> (String, SpanId, String) {
    let trace_id = format!("{:032x}", fastrand::u128(1..));
    let parent = fastrand::u64(1..);
    let traceparent = format!("00-{trace_id}-{parent:016x}-01");
    (
        trace_id,
        SpanId::from_bytes(parent.to_be_bytes()),
        traceparent,
    )
}
