//! The messages services exchange, exactly as the wire contract spells them.
//! One serde type per message; every transport carries the same JSON.

use serde::{Deserialize, Serialize};

use crate::ids::{OrderId, RequestId, ReservationId};
use crate::order::{Item, OrderStatus, Quantity};

/// `POST /reserve` body (sync) — a request to reserve stock for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The order to reserve for; the idempotency key.
    pub order_id: OrderId,
    /// The request being served, for tracing.
    pub request_id: RequestId,
    /// What to reserve.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
}

/// Always the literal `"reserved"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservedStatus {
    /// The stock was reserved.
    Reserved,
}

/// `200` reply of `POST /reserve`: the stock is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveOk {
    /// Always `reserved`.
    pub status: ReservedStatus,
    /// `RES-<order_id>`.
    pub reservation_id: ReservationId,
    /// What was reserved.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
    /// Stock of `item` left after this reservation.
    pub remaining: u64,
    /// The request being served.
    pub request_id: RequestId,
}

/// `409` reply of `POST /reserve`: not enough stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveInsufficient {
    /// Human-readable reason.
    pub error: String,
    /// The item asked for.
    pub item: Item,
    /// How many are available.
    pub available: u64,
    /// The request being served.
    pub request_id: RequestId,
}

/// `POST /release` body (sync) — give back what an order's reservation
/// holds: the order failed after all (its client saw a timeout). See
/// [`InventoryLedger::release`](crate::ledger::InventoryLedger::release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The order to release.
    pub order_id: OrderId,
    /// The request being served, for tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// What a release did, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// The order held stock; it went back.
    Released,
    /// The order held nothing (refused, or not decided yet); it will not be
    /// reserved.
    NothingHeld,
    /// Released before; nothing changed.
    AlreadyReleased,
}

/// `200` reply of `POST /release`, whatever it did (a release is safe to
/// repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReply {
    /// What the release did.
    pub status: ReleaseStatus,
    /// The order released.
    pub order_id: OrderId,
    /// The item given back, when stock went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Item>,
    /// How many, when stock went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qty: Option<Quantity>,
    /// The item's stock right after, when stock went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// The request being served, when the caller sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// Any other error reply (`404`, `400`, `500`, `503`, …) of any service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable reason.
    pub error: String,
    /// The offending field, when the caller's input is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request being served, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// `POST /send` body — ask the notification service to notify a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRequest {
    /// The order concerned.
    pub order_id: OrderId,
    /// The request being served.
    pub request_id: RequestId,
    /// The text to send.
    pub message: String,
}

/// Always the literal `"sent"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentStatus {
    /// The notification was sent.
    Sent,
}

/// `200` reply of `POST /send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyOk {
    /// Always `sent`.
    pub status: SentStatus,
    /// The order concerned.
    pub order_id: OrderId,
    /// The request being served.
    pub request_id: RequestId,
}

/// `OrderPlaced` (async): an order was accepted and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order; the idempotency key downstream.
    pub order_id: OrderId,
    /// The request that placed it.
    pub request_id: RequestId,
    /// What was ordered.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
    /// Always `placed` when published.
    pub status: OrderStatus,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
}

/// `InventoryReserved` (async): stock was reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    /// The order.
    pub order_id: OrderId,
    /// `RES-<order_id>`.
    pub reservation_id: ReservationId,
    /// What was reserved.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
    /// Stock of `item` left afterwards.
    pub remaining: u64,
    /// The request that placed the order.
    pub request_id: RequestId,
    /// When the reservation was made (RFC 3339).
    pub created_at: String,
}

/// Why inventory could not reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The item is not stocked at all.
    ItemNotFound,
    /// Not enough of the item is left.
    InsufficientStock,
}

/// `InventoryFailed` (async): stock could not be reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFailed {
    /// The order.
    pub order_id: OrderId,
    /// Why.
    pub reason: FailReason,
    /// The request that placed the order.
    pub request_id: RequestId,
    /// When the decision was made (RFC 3339).
    pub created_at: String,
}

/// `OrderNotified` (async, ours): the customer was notified; moves the
/// order's status to `notified`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderNotified {
    /// The order.
    pub order_id: OrderId,
    /// The request that placed the order.
    pub request_id: RequestId,
    /// When the notification was sent (RFC 3339).
    pub created_at: String,
}

/// `OrderEvent` (Kafka, `order-events`): an order, keyed by its id.
/// Exactly the contract's `{order_id, item_id, qty, ts}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// The order; the record key, unique across runs.
    pub order_id: OrderId,
    /// What was ordered, `item-1` … `item-<ITEM_COUNT>`.
    pub item_id: Item,
    /// How many.
    pub qty: Quantity,
    /// When the order was produced, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// The outcome an [`InventoryEvent`] reports, spelled `Success` or
/// `Failure` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InventoryStatus {
    /// The stock was reserved.
    Success,
    /// It was not: an injected failure, not enough stock, or an unknown
    /// item.
    Failure,
}

/// `InventoryEvent` (Kafka, `inventory-events`): the order's fields plus
/// the inventory decision, keyed by the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEvent {
    /// The order; the record key.
    pub order_id: OrderId,
    /// What was ordered.
    pub item_id: Item,
    /// How many.
    pub qty: Quantity,
    /// The order's `ts` (milliseconds since the Unix epoch), unchanged, so
    /// a replay writes the same event.
    pub ts: u64,
    /// What inventory decided.
    pub status: InventoryStatus,
}

impl InventoryEvent {
    /// The event reporting `status` for `order`.
    pub fn for_order(order: &OrderEvent, status: InventoryStatus) -> Self {
        Self {
            order_id: order.order_id.clone(),
            item_id: order.item_id.clone(),
            qty: order.qty,
            ts: order.ts,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_reason_spelling_matches_contract() {
        assert_eq!(
            serde_json::to_string(&FailReason::ItemNotFound).unwrap(),
            "\"item_not_found\""
        );
        assert_eq!(
            serde_json::to_string(&FailReason::InsufficientStock).unwrap(),
            "\"insufficient_stock\""
        );
    }

    #[test]
    fn reserve_request_rejects_bad_fields() {
        let ok = r#"{"order_id":"ORD-0123456789AB","request_id":"5f0c8b4e-8d0e-4c43-9b4e-3f1f3f3f3f3f","item":"burger","qty":1}"#;
        assert!(serde_json::from_str::<ReserveRequest>(ok).is_ok());
        let bad_qty = ok.replace("\"qty\":1", "\"qty\":0");
        assert!(serde_json::from_str::<ReserveRequest>(&bad_qty).is_err());
        let bad_id = ok.replace("ORD-0123456789AB", "ORD-1");
        assert!(serde_json::from_str::<ReserveRequest>(&bad_id).is_err());
    }
}
