//! # campusfood-transport
//!
//! Implementations of [`campusfood_core::transport::Transport`]:
//! - `memory` (feature `memory`): in-process queues and handlers, for tests
//!   and embedding.
//! - `http` (feature `http`): request/reply over HTTP with a pooled client.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
