//! # campusfood-core
//!
//! The business vocabulary of campus food ordering, shared by every
//! transport and service. Nothing here knows about HTTP, RabbitMQ or Kafka.
//!
//! ## Layout
//! - [`ids`]: [`OrderId`], [`RequestId`],
//!   [`ReservationId`]: validated identifiers.
//! - [`order`]: [`Item`], [`Quantity`],
//!   [`Order`] and the validation of an incoming order.
//! - [`events`]: the wire shapes exchanged between services (the contract's
//!   JSON), one serde type per message.
//! - [`stock`]: the initial stock specification (`CAMPUSFOOD_STOCK`).
//! - [`ledger`]: the [`InventoryLedger`](ledger::InventoryLedger) trait with
//!   idempotent reservation, in memory and (feature `redb`) durable.
//! - [`fault`]: runtime fault injection (delay, failure rate, seed).
//! - [`task`]: [`BackgroundTask`](task::BackgroundTask), a task with a stop
//!   signal that drains before it ends.
//! - [`transport`]: the [`Transport`](transport::Transport) trait that every
//!   service is written against, and its message types.
//! - `group_commit` (feature `redb`): many writers, one durable commit.
//! - [`outbox`]: messages kept until delivered (memory, redb).
//! - [`config`]: the one place that owns ports, names and defaults.
//! - [`metric`]: the metrics vocabulary every part records with.
//! - [`codec`]: the JSON codec shared by every transport.
//! - `schema` (feature `openapi`): OpenAPI schemas of the validated
//!   newtypes; the wire types derive `utoipa::ToSchema` with it.
//! - [`telemetry`]: W3C trace context in message headers, messaging spans,
//!   and [`Traced`](telemetry::Traced), the transport that traces what
//!   passes through it.
//! - [`bounded`]: reasons, headers and error messages of bounded size,
//!   whatever the input they quote.
//!
//! ## Writing your own transport, handler or ledger
//! The SDK is open at its traits; `examples/embed` runs an application's
//! own handler and route beside the SDK's inventory, over memory, RabbitMQ
//! or Kafka.
//! - A **handler** of published messages implements
//!   [`Handler`](transport::Handler): decode the
//!   [`Delivery`](transport::Delivery), do the work idempotently (delivery
//!   is at least once), answer a [`Disposition`](transport::Disposition).
//!   A server of requests implements
//!   [`RequestHandler`](transport::RequestHandler) and answers a
//!   [`Reply`](transport::Reply) with an HTTP-style status.
//! - A **transport** implements [`Transport`](transport::Transport):
//!   `request`, `publish`, `subscribe`, answering
//!   [`TransportError::Unsupported`](transport::TransportError::Unsupported)
//!   for what it cannot do, plus the extension traits it can honour
//!   ([`DeadLetters`](transport::DeadLetters),
//!   [`Backlog`](transport::Backlog)). A decorator that changes only part
//!   of what passes through (counting, failing on purpose) implements
//!   [`ForwardTransport`](transport::ForwardTransport) and gets
//!   `Transport` with it.
//! - A **ledger** implements [`InventoryLedger`](ledger::InventoryLedger)
//!   and must keep its contract: `reserve` atomic and idempotent, `release`
//!   once, a released order never reserved. The contract suite every ledger
//!   here runs is `campusfood_testkit::ledger_contract` (crate
//!   `campusfood-testkit`, in the repository): call
//!   `ledger_contract::all(Arc::new(your_ledger))` from a test, the ledger
//!   holding `ledger_contract::STOCK`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bounded;
pub mod codec;
pub mod config;
pub mod events;
pub mod fault;
#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
pub mod group_commit;
pub mod ids;
pub mod ledger;
pub mod metric;
pub mod order;
pub mod outbox;
#[cfg(feature = "openapi")]
mod schema;
pub mod stock;
pub mod task;
pub mod telemetry;
pub mod transport;

pub use config::Config;
pub use ids::{OrderId, RequestId, ReservationId};
pub use order::{Item, Order, OrderStatus, Quantity};
