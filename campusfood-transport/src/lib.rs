//! # campusfood-transport
//!
//! Implementations of [`campusfood_core::transport::Transport`], each behind
//! a cargo feature:
//! - [`memory`] (feature `memory`): in-process queues and handlers, for
//!   tests and embedding.
//! - [`http`] (feature `http`): request/reply over HTTP — a pooled reqwest
//!   client, and an axum adapter that serves any `RequestHandler`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
pub mod memory;
