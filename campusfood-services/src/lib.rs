//! # campusfood-services
//!
//! The Order, Inventory and Notification services.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
