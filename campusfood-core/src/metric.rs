//! The metrics vocabulary: one name for one thing in every part (A, B, C),
//! spelled once here, with the functions that record each.
//!
//! Recording goes through the [`metrics`] facade: to whatever recorder the
//! process installed (`campusfood_services::metrics::install_prometheus`
//! installs the Prometheus one), and to nothing, at next to no cost, when
//! none is. Everything that can be recorded where messages pass is recorded
//! there once — deliveries, redeliveries, dead letters and handler
//! durations by the transports' metering (`Metered`, Kafka's transactional
//! processor), HTTP handler durations by the server every service runs on —
//! and the rest by the one service that knows it: orders placed by the
//! order services, outcomes by the inventory decision all three parts
//! share, outbox sizes, queue depths and consumer lag by background
//! samplers (a scrape only renders what they last set).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | [`ORDERS_PLACED`] | counter | | orders accepted |
//! | [`ORDER_OUTCOMES`] | counter | `outcome` | inventory's decisions on orders |
//! | [`HANDLER_DURATION`] | histogram | `handler` | time in a request or message handler |
//! | [`REQUESTS`] | counter | `route`, `status` | calls to another service |
//! | [`PUBLISHED`] | counter | `route`, `outcome` | messages published |
//! | [`DELIVERIES`] | counter | `route`, `disposition` | messages handled |
//! | [`REDELIVERIES`] | counter | `route` | deliveries after the first attempt |
//! | [`DEAD_LETTERS`] | counter | `route` | messages set aside |
//! | [`OUTBOX_SIZE`] | gauge | | messages kept until sent |
//! | [`QUEUE_DEPTH`] | gauge | `route` | messages waiting in a broker queue |
//! | [`CONSUMER_LAG`] | gauge | `group`, `topic` | records a consumer group has yet to read |
//! | [`BREAKER_STATE`] | gauge | `hop` | a circuit breaker's state |

use std::time::Duration;

/// Counter: orders accepted — by Part A's and Part B's order services
/// (`POST /order` past validation), and in Part C by the analytics
/// consumer (distinct orders read from the order topic).
pub const ORDERS_PLACED: &str = "campusfood_orders_placed_total";
/// Counter, label `outcome` ([`outcome`]): inventory's decision on an
/// order, counted once per order (a repeated request for a decided order
/// answers the first decision and is not counted again); injected
/// failures are counted each time they are injected.
pub const ORDER_OUTCOMES: &str = "campusfood_order_outcomes_total";
/// Histogram, label `handler` (`POST /order`, … for HTTP; the route, such
/// as `order.placed`, for messages): seconds spent handling one request or
/// message.
pub const HANDLER_DURATION: &str = "campusfood_handler_duration_seconds";
/// Counter, labels `route`, `status` (the HTTP-style status answered, or
/// `timeout` / `error`): requests to another service (Part A's order
/// service to inventory and notification).
pub const REQUESTS: &str = "campusfood_requests_total";
/// Counter, labels `route`, `outcome` (`ok` or `error`): publishes.
pub const PUBLISHED: &str = "campusfood_published_total";
/// Counter, labels `route`, `disposition` ([`disposition`]): deliveries
/// handled.
pub const DELIVERIES: &str = "campusfood_deliveries_total";
/// Counter, label `route`: deliveries after the first attempt.
pub const REDELIVERIES: &str = "campusfood_redeliveries_total";
/// Counter, label `route`: messages set aside — poison, or out of
/// attempts.
pub const DEAD_LETTERS: &str = "campusfood_dead_letters_total";
/// Gauge: messages an order service keeps until they are sent — Part A's
/// notifications and releases to retry, Part B's events not yet published.
pub const OUTBOX_SIZE: &str = "campusfood_outbox_size";
/// Gauge, label `route`: messages waiting in the broker for the route's
/// consumer (Part B).
pub const QUEUE_DEPTH: &str = "campusfood_queue_depth";
/// Gauge, labels `group`, `topic`: records of the topic the consumer group
/// has not read yet (Part C).
pub const CONSUMER_LAG: &str = "campusfood_consumer_lag";
/// Gauge, label `hop`: a circuit breaker's state, [`BreakerStateValue`]
/// (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "campusfood_breaker_state";

/// Every metric name, with its help text.
pub const ALL: [(&str, &str); 12] = [
    (ORDERS_PLACED, "Orders accepted."),
    (
        ORDER_OUTCOMES,
        "Inventory's decisions on orders, once per order (injected failures each time).",
    ),
    (
        HANDLER_DURATION,
        "Seconds spent handling one HTTP request or one message.",
    ),
    (REQUESTS, "Requests to another service, by answer."),
    (PUBLISHED, "Messages published."),
    (DELIVERIES, "Messages handled, by disposition."),
    (REDELIVERIES, "Deliveries after the first attempt."),
    (
        DEAD_LETTERS,
        "Messages set aside: poison, or out of attempts.",
    ),
    (OUTBOX_SIZE, "Messages an order service keeps until sent."),
    (QUEUE_DEPTH, "Messages waiting in the broker queue."),
    (CONSUMER_LAG, "Records the consumer group has not read yet."),
    (
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
    ),
];

/// Label names.
pub mod label {
    /// The logical route (`order.placed`, `inventory.reserve`, …).
    pub const ROUTE: &str = "route";
    /// What became of a delivery ([`super::disposition`]).
    pub const DISPOSITION: &str = "disposition";
    /// What became of an order or a publish.
    pub const OUTCOME: &str = "outcome";
    /// The answer to a request.
    pub const STATUS: &str = "status";
    /// `POST /order`, or a route for message handlers.
    pub const HANDLER: &str = "handler";
    /// A Kafka consumer group.
    pub const GROUP: &str = "group";
    /// A Kafka topic.
    pub const TOPIC: &str = "topic";
    /// The call a circuit breaker guards (`inventory`).
    pub const HOP: &str = "hop";
}

/// Values of the `outcome` label of [`ORDER_OUTCOMES`].
pub mod outcome {
    /// Stock was reserved.
    pub const RESERVED: &str = "reserved";
    /// Not enough stock.
    pub const INSUFFICIENT_STOCK: &str = "insufficient_stock";
    /// The item is not stocked.
    pub const ITEM_NOT_FOUND: &str = "item_not_found";
    /// A failure injected by `/configure` (Parts A, B) or `FAIL_RATE`
    /// (Part C).
    pub const INJECTED_FAILURE: &str = "injected_failure";
}

/// Values of the `disposition` label of [`DELIVERIES`].
pub mod disposition {
    /// Handled; acknowledged.
    pub const ACK: &str = "ack";
    /// To be tried again (or dead-lettered when out of attempts).
    pub const RETRY: &str = "retry";
    /// Set aside at once.
    pub const DEAD_LETTER: &str = "dead_letter";
}

/// The value of [`BREAKER_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerStateValue {
    /// Calls go through (0).
    Closed = 0,
    /// Calls fail fast (1).
    Open = 1,
    /// One probe call is in flight (2).
    HalfOpen = 2,
}

/// Registers the help text of every metric with the recorder (a
/// recorder installed later does not see it).
pub fn describe() {
    for (name, help) in ALL {
        match name {
            HANDLER_DURATION => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
            }
            OUTBOX_SIZE | QUEUE_DEPTH | CONSUMER_LAG | BREAKER_STATE => {
                metrics::describe_gauge!(name, help);
            }
            _ => metrics::describe_counter!(name, help),
        }
    }
}

/// Shows [`ORDERS_PLACED`] at 0 before the first order (a series that is
/// missing cannot be told from one that is broken).
pub fn register_orders_placed() {
    metrics::counter!(ORDERS_PLACED).increment(0);
}

/// Shows every value of [`ORDER_OUTCOMES`] at 0 until it happens.
pub fn register_order_outcomes() {
    for outcome in [
        outcome::RESERVED,
        outcome::INSUFFICIENT_STOCK,
        outcome::ITEM_NOT_FOUND,
        outcome::INJECTED_FAILURE,
    ] {
        metrics::counter!(ORDER_OUTCOMES, label::OUTCOME => outcome).increment(0);
    }
}

/// Shows a consumer of `route`'s [`DELIVERIES`] (every disposition),
/// [`REDELIVERIES`] and [`DEAD_LETTERS`] at 0 until they happen.
pub fn register_consumer(route: &str) {
    for disposition in [
        disposition::ACK,
        disposition::RETRY,
        disposition::DEAD_LETTER,
    ] {
        metrics::counter!(DELIVERIES, label::ROUTE => route.to_owned(), label::DISPOSITION => disposition)
            .increment(0);
    }
    metrics::counter!(REDELIVERIES, label::ROUTE => route.to_owned()).increment(0);
    metrics::counter!(DEAD_LETTERS, label::ROUTE => route.to_owned()).increment(0);
}

/// Counts an accepted order.
pub fn order_placed() {
    metrics::counter!(ORDERS_PLACED).increment(1);
}

/// Counts inventory's decision `outcome` ([`outcome`]) on an order.
pub fn order_outcome(outcome: &'static str) {
    metrics::counter!(ORDER_OUTCOMES, label::OUTCOME => outcome).increment(1);
}

/// Records that `handler` took `elapsed`.
pub fn handler_duration(handler: impl Into<metrics::SharedString>, elapsed: Duration) {
    let handler: metrics::SharedString = handler.into();
    metrics::histogram!(HANDLER_DURATION, label::HANDLER => handler).record(elapsed.as_secs_f64());
}

/// Counts a request on `route` answered with `status`.
pub fn request(route: &str, status: impl Into<metrics::SharedString>) {
    let status: metrics::SharedString = status.into();
    metrics::counter!(REQUESTS, label::ROUTE => route.to_owned(), label::STATUS => status)
        .increment(1);
}

/// Counts a publish on `route`.
pub fn published(route: &str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(PUBLISHED, label::ROUTE => route.to_owned(), label::OUTCOME => outcome)
        .increment(1);
}

/// Counts a delivery of `route` on `attempt` (1 for the first) that ended
/// in `disposition` ([`disposition`]); `dead_lettered` when it was set
/// aside (at once, or out of attempts).
pub fn delivery(route: &str, attempt: u32, disposition: &'static str, dead_lettered: bool) {
    if attempt > 1 {
        metrics::counter!(REDELIVERIES, label::ROUTE => route.to_owned()).increment(1);
    }
    metrics::counter!(DELIVERIES, label::ROUTE => route.to_owned(), label::DISPOSITION => disposition)
        .increment(1);
    if dead_lettered {
        metrics::counter!(DEAD_LETTERS, label::ROUTE => route.to_owned()).increment(1);
    }
}

/// Sets the outbox size.
pub fn outbox_size(entries: u64) {
    metrics::gauge!(OUTBOX_SIZE).set(entries as f64);
}

/// Sets the depth of `route`'s queue.
pub fn queue_depth(route: &str, depth: u64) {
    metrics::gauge!(QUEUE_DEPTH, label::ROUTE => route.to_owned()).set(depth as f64);
}

/// Sets `group`'s lag on `topic`.
pub fn consumer_lag(group: &str, topic: &str, lag: i64) {
    metrics::gauge!(CONSUMER_LAG, label::GROUP => group.to_owned(), label::TOPIC => topic.to_owned())
        .set(lag as f64);
}

/// Sets the state of the breaker on `hop`.
pub fn breaker_state(hop: &'static str, state: BreakerStateValue) {
    metrics::gauge!(BREAKER_STATE, label::HOP => hop).set(f64::from(state as u8));
}
