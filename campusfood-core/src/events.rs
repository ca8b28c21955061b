//! The messages services exchange, exactly as the wire contract spells them.
//! One serde type per message; every transport carries the same JSON.
//!
//! What we emit is unchanged: `created_at` is RFC 3339 text, `ts`
//! milliseconds since the Unix epoch, ids are ours. What we *read* of the
//! asynchronous events is what every producer of the contract writes,
//! including the original services that keep running during a migration:
//! - `created_at` as RFC 3339 text (kept as given) or as epoch seconds, an
//!   integer or a float (converted to RFC 3339 with milliseconds);
//! - Part C's `ts` as integer milliseconds, float seconds or RFC 3339 text;
//! - order ids of 1–64 characters ([`OrderId`]), such as `order-17`;
//! - no `request_id`, or one that is not a UUID: a fresh one is made;
//! - `OrderPlaced`'s `status` is not checked (it is always `placed`);
//! - extra fields are ignored.
//!
//! A time that is missing or cannot be read is the time of reading. Poison
//! is only what the contract calls poison: not JSON, no usable `order_id`
//! or item, a `qty` that is not an integer from 1 to [`Quantity::MAX`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ids::{OrderId, RequestId, ReservationId};
use crate::order::{Item, Order, OrderStatus, Quantity, now_rfc3339};

/// `POST /reserve` body (sync) — a request to reserve stock for an order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservedStatus {
    /// The stock was reserved.
    Reserved,
}

/// `200` reply of `POST /reserve`: the stock is reserved.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The order to release.
    pub order_id: OrderId,
    /// The request being served, for tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// What a release did, on the wire.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentStatus {
    /// The notification was sent.
    Sent,
}

/// `200` reply of `POST /send`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyOk {
    /// Always `sent`.
    pub status: SentStatus,
    /// The order concerned.
    pub order_id: OrderId,
    /// The request being served.
    pub request_id: RequestId,
}

/// `OrderPlaced` (async): an order was accepted and stored. Read leniently
/// (see the [module docs](self)).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order; the idempotency key downstream.
    pub order_id: OrderId,
    /// The request that placed it (made up when a sender gave none).
    #[serde(
        default = "RequestId::generate",
        deserialize_with = "lenient::request_id"
    )]
    pub request_id: RequestId,
    /// What was ordered.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
    /// Always `placed` when published; not checked when read.
    #[serde(default = "placed", deserialize_with = "lenient::placed")]
    pub status: OrderStatus,
    /// When it was accepted (RFC 3339).
    #[serde(default = "now_rfc3339", deserialize_with = "lenient::created_at")]
    pub created_at: String,
}

fn placed() -> OrderStatus {
    OrderStatus::Placed
}

/// `InventoryReserved` (async): stock was reserved for an order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[serde(
        default = "RequestId::generate",
        deserialize_with = "lenient::request_id"
    )]
    pub request_id: RequestId,
    /// When the reservation was made (RFC 3339).
    #[serde(default = "now_rfc3339", deserialize_with = "lenient::created_at")]
    pub created_at: String,
}

/// Why inventory could not reserve.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The item is not stocked at all.
    ItemNotFound,
    /// Not enough of the item is left.
    InsufficientStock,
}

/// `InventoryFailed` (async): stock could not be reserved for an order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFailed {
    /// The order.
    pub order_id: OrderId,
    /// Why.
    pub reason: FailReason,
    /// The request that placed the order.
    #[serde(
        default = "RequestId::generate",
        deserialize_with = "lenient::request_id"
    )]
    pub request_id: RequestId,
    /// When the decision was made (RFC 3339).
    #[serde(default = "now_rfc3339", deserialize_with = "lenient::created_at")]
    pub created_at: String,
}

/// `OrderNotified` (async, ours): the customer was notified; moves the
/// order's status to `notified`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderNotified {
    /// The order.
    pub order_id: OrderId,
    /// The request that placed the order.
    #[serde(
        default = "RequestId::generate",
        deserialize_with = "lenient::request_id"
    )]
    pub request_id: RequestId,
    /// When the notification was sent (RFC 3339).
    #[serde(default = "now_rfc3339", deserialize_with = "lenient::created_at")]
    pub created_at: String,
}

/// `OrderEvent` (Kafka, `order-events`): an order, keyed by its id.
/// Exactly the contract's `{order_id, item_id, qty, ts}`; `ts` is read as
/// integer milliseconds, float seconds (the original producer's
/// `time.time()`) or RFC 3339 text.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// The order; the record key, unique across runs.
    pub order_id: OrderId,
    /// What was ordered, `item-1` … `item-<ITEM_COUNT>`.
    pub item_id: Item,
    /// How many.
    pub qty: Quantity,
    /// When the order was produced, in milliseconds since the Unix epoch.
    #[serde(default = "now_millis", deserialize_with = "lenient::ts_millis")]
    pub ts: u64,
}

/// The outcome an [`InventoryEvent`] reports, spelled `Success` or
/// `Failure` on the wire (read in any case, as the original analytics did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum InventoryStatus {
    /// The stock was reserved.
    Success,
    /// It was not: an injected failure, not enough stock, or an unknown
    /// item.
    Failure,
}

/// `InventoryEvent` (Kafka, `inventory-events`): the order's fields plus
/// the inventory decision, keyed by the order id.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[serde(default = "now_millis", deserialize_with = "lenient::ts_millis")]
    pub ts: u64,
    /// What inventory decided.
    pub status: InventoryStatus,
}

impl<'de> Deserialize<'de> for InventoryStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.eq_ignore_ascii_case("success") {
            Ok(Self::Success)
        } else if s.eq_ignore_ascii_case("failure") {
            Ok(Self::Failure)
        } else {
            Err(serde::de::Error::custom(format!(
                "status must be Success or Failure, got {}",
                crate::bounded::preview(&s)
            )))
        }
    }
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

impl ReserveRequest {
    /// The reservation `order` needs, served for its own request.
    pub fn for_order(order: &Order) -> Self {
        Self {
            order_id: order.order_id.clone(),
            request_id: order.request_id,
            item: order.item.clone(),
            qty: order.qty,
        }
    }

    /// The reservation a placed order needs (Part B).
    pub fn for_placed(placed: &OrderPlaced) -> Self {
        Self {
            order_id: placed.order_id.clone(),
            request_id: placed.request_id,
            item: placed.item.clone(),
            qty: placed.qty,
        }
    }

    /// The reservation an order record needs (Part C), served for
    /// `request_id`.
    pub fn for_event(order: &OrderEvent, request_id: RequestId) -> Self {
        Self {
            order_id: order.order_id.clone(),
            request_id,
            item: order.item_id.clone(),
            qty: order.qty,
        }
    }
}

impl ReserveOk {
    /// `request`'s stock is reserved; `remaining` of its item is left.
    /// The reservation id is derived from the order
    /// ([`ReservationId::for_order`]).
    pub fn new(request: &ReserveRequest, remaining: u64) -> Self {
        Self {
            status: ReservedStatus::Reserved,
            reservation_id: ReservationId::for_order(&request.order_id),
            item: request.item.clone(),
            qty: request.qty,
            remaining,
            request_id: request.request_id,
        }
    }
}

impl ReserveInsufficient {
    /// `request` asked for more than the `available` stock of its item.
    pub fn new(request: &ReserveRequest, available: u64) -> Self {
        Self {
            error: format!(
                "insufficient stock of {}: {} asked, {available} available",
                request.item, request.qty
            ),
            item: request.item.clone(),
            available,
            request_id: request.request_id,
        }
    }
}

/// The text of an order's confirmation, as the customer receives it.
pub fn confirmation_text(order_id: &OrderId, item: &Item, qty: Quantity) -> String {
    format!("Order {order_id} confirmed: {qty} x {item}")
}

impl NotifyRequest {
    /// The confirmation of `order` (sync REST: reserved within the call).
    pub fn confirming(order: &Order) -> Self {
        Self {
            order_id: order.order_id.clone(),
            request_id: order.request_id,
            message: confirmation_text(&order.order_id, &order.item, order.qty),
        }
    }

    /// The confirmation of a reserved order (Part B).
    pub fn confirming_reserved(reserved: &InventoryReserved) -> Self {
        Self {
            order_id: reserved.order_id.clone(),
            request_id: reserved.request_id,
            message: confirmation_text(&reserved.order_id, &reserved.item, reserved.qty),
        }
    }
}

/// The `OrderPlaced` event announcing a stored order, as published.
impl From<&Order> for OrderPlaced {
    fn from(order: &Order) -> Self {
        Self {
            order_id: order.order_id.clone(),
            request_id: order.request_id,
            item: order.item.clone(),
            qty: order.qty,
            status: OrderStatus::Placed,
            created_at: order.created_at.clone(),
        }
    }
}

impl InventoryReserved {
    /// Inventory reserved `ok` for `placed`, now.
    pub fn new(placed: &OrderPlaced, ok: ReserveOk) -> Self {
        Self {
            order_id: placed.order_id.clone(),
            reservation_id: ok.reservation_id,
            item: ok.item,
            qty: ok.qty,
            remaining: ok.remaining,
            request_id: placed.request_id,
            created_at: now_rfc3339(),
        }
    }
}

impl InventoryFailed {
    /// Inventory could not reserve for `placed`, for `reason`, now.
    pub fn new(placed: &OrderPlaced, reason: FailReason) -> Self {
        Self {
            order_id: placed.order_id.clone(),
            reason,
            request_id: placed.request_id,
            created_at: now_rfc3339(),
        }
    }
}

impl OrderNotified {
    /// The customer was notified of `reserved`, now.
    pub fn new(reserved: &InventoryReserved) -> Self {
        Self {
            order_id: reserved.order_id.clone(),
            request_id: reserved.request_id,
            created_at: now_rfc3339(),
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The latest instant RFC 3339 can spell (the start of year 10000), in
/// seconds since the Unix epoch.
const MAX_EPOCH_SECS: f64 = 253_402_300_800.0;

/// Epoch seconds (an integer or a float) as a time, when it is one RFC 3339
/// can spell.
fn from_epoch_secs(secs: f64) -> Option<SystemTime> {
    (secs.is_finite() && (0.0..MAX_EPOCH_SECS).contains(&secs))
        .then(|| UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// The readers of the fields other producers write differently.
mod lenient {
    use super::*;

    /// A UUID as text; anything else (`null`, not a UUID) a fresh id.
    pub(super) fn request_id<'de, D: Deserializer<'de>>(d: D) -> Result<RequestId, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => RequestId::parse(&s).unwrap_or_else(|_| RequestId::generate()),
            _ => RequestId::generate(),
        })
    }

    /// Any value: the event is an order placed.
    pub(super) fn placed<'de, D: Deserializer<'de>>(d: D) -> Result<OrderStatus, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(OrderStatus::Placed)
    }

    /// Text as given; epoch seconds (integer or float) as RFC 3339 with
    /// milliseconds; anything else the time of reading.
    pub(super) fn created_at<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => s,
            Value::Number(n) => n
                .as_f64()
                .and_then(from_epoch_secs)
                .map_or_else(now_rfc3339, |t| {
                    humantime::format_rfc3339_millis(t).to_string()
                }),
            _ => now_rfc3339(),
        })
    }

    /// Integer milliseconds; float seconds; RFC 3339 text; anything else
    /// the time of reading.
    pub(super) fn ts_millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let time = match Value::deserialize(d)? {
            Value::Number(n) if n.is_u64() => return Ok(n.as_u64().unwrap_or_default()),
            Value::Number(n) if n.is_f64() => n.as_f64().and_then(from_epoch_secs),
            Value::String(s) => humantime::parse_rfc3339_weak(&s).ok(),
            _ => None,
        };
        Ok(time
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_millis, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        let req = crate::order::PlaceOrder::from_json(br#"{"item":"burger","qty":2}"#).unwrap();
        Order::new(req, OrderStatus::Confirmed)
    }

    #[test]
    fn an_order_placed_is_the_stored_order_placed() {
        let order = order();
        let placed = OrderPlaced::from(&order);
        assert_eq!(placed.order_id, order.order_id);
        assert_eq!(placed.request_id, order.request_id);
        assert_eq!((&placed.item, placed.qty), (&order.item, order.qty));
        assert_eq!(placed.status, OrderStatus::Placed);
        assert_eq!(placed.created_at, order.created_at);
        let json = serde_json::to_string(&placed).unwrap();
        assert_eq!(serde_json::from_str::<OrderPlaced>(&json).unwrap(), placed);
    }

    #[test]
    fn reserve_requests_carry_the_order_whatever_it_came_as() {
        let order = order();
        let request = ReserveRequest::for_order(&order);
        assert_eq!(
            request,
            ReserveRequest::for_placed(&OrderPlaced::from(&order))
        );
        let event = OrderEvent {
            order_id: order.order_id.clone(),
            item_id: order.item.clone(),
            qty: order.qty,
            ts: 0,
        };
        assert_eq!(ReserveRequest::for_event(&event, order.request_id), request);
    }

    #[test]
    fn reservation_bodies_and_events_follow_the_request() {
        let order = order();
        let placed = OrderPlaced::from(&order);
        let ok = ReserveOk::new(&ReserveRequest::for_placed(&placed), 7);
        assert_eq!(ok.reservation_id, ReservationId::for_order(&order.order_id));
        assert_eq!((ok.remaining, ok.request_id), (7, order.request_id));
        let reserved = InventoryReserved::new(&placed, ok.clone());
        assert_eq!(reserved.reservation_id, ok.reservation_id);
        assert_eq!(
            (&reserved.item, reserved.qty, reserved.remaining),
            (&ok.item, ok.qty, 7)
        );
        let no = ReserveInsufficient::new(&ReserveRequest::for_order(&order), 1);
        assert_eq!(
            no.error,
            "insufficient stock of burger: 2 asked, 1 available"
        );
        let failed = InventoryFailed::new(&placed, FailReason::InsufficientStock);
        assert_eq!(failed.order_id, order.order_id);
        assert_eq!(OrderNotified::new(&reserved).order_id, order.order_id);
    }

    #[test]
    fn both_architectures_confirm_in_the_same_words() {
        let order = order();
        let sync = NotifyRequest::confirming(&order);
        let placed = OrderPlaced::from(&order);
        let reserved = InventoryReserved::new(
            &placed,
            ReserveOk::new(&ReserveRequest::for_placed(&placed), 0),
        );
        assert_eq!(NotifyRequest::confirming_reserved(&reserved), sync);
        assert_eq!(
            sync.message,
            format!("Order {} confirmed: 2 x burger", order.order_id)
        );
    }

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
        let bad_id = ok.replace("ORD-0123456789AB", "ORD 1");
        assert!(serde_json::from_str::<ReserveRequest>(&bad_id).is_err());
    }

    // What the original services write, byte for byte as Python's
    // `json.dumps` spells it (a space after each `:` and `,`; `time.time()`
    // as a float with up to 7 decimals).
    const ORIGINAL_ORDER_PLACED: &str = r#"{"order_id": "ORD-3F2A9C1B7E4D", "request_id": "0b6f2c1e-5a4d-4e8b-9c3f-2d1e0a9b8c7d", "item": "burger", "qty": 2, "status": "placed", "created_at": 1764600000.1234567}"#;
    const ORIGINAL_RESERVED: &str = r#"{"order_id": "ORD-3F2A9C1B7E4D", "reservation_id": "RES-ORD-3F2A9C1B7E4D", "item": "burger", "qty": 2, "remaining": 98, "request_id": "0b6f2c1e-5a4d-4e8b-9c3f-2d1e0a9b8c7d", "created_at": 1764600000.5}"#;
    const ORIGINAL_FAILED: &str = r#"{"order_id": "ORD-3F2A9C1B7E4D", "reason": "insufficient_stock", "request_id": null, "created_at": 1764600000.25}"#;
    const ORIGINAL_ORDER_EVENT: &str =
        r#"{"order_id": "order-17", "item_id": "item-42", "qty": 3, "ts": 1764600000.4567891}"#;
    const ORIGINAL_INVENTORY_EVENT: &str = r#"{"order_id": "order-17", "item_id": "item-42", "qty": 3, "ts": 1764600000.4567891, "status": "Failure"}"#;

    #[test]
    fn reads_the_original_part_b_events() {
        let placed: OrderPlaced = serde_json::from_str(ORIGINAL_ORDER_PLACED).unwrap();
        assert_eq!(placed.order_id.as_str(), "ORD-3F2A9C1B7E4D");
        assert_eq!(placed.qty.get(), 2);
        assert_eq!(placed.status, OrderStatus::Placed);
        assert_eq!(placed.created_at, "2025-12-01T14:40:00.123Z");
        assert_eq!(
            placed.request_id.to_string(),
            "0b6f2c1e-5a4d-4e8b-9c3f-2d1e0a9b8c7d"
        );
        let reserved: InventoryReserved = serde_json::from_str(ORIGINAL_RESERVED).unwrap();
        assert_eq!(reserved.remaining, 98);
        assert_eq!(reserved.created_at, "2025-12-01T14:40:00.500Z");
        let failed: InventoryFailed = serde_json::from_str(ORIGINAL_FAILED).unwrap();
        assert_eq!(failed.reason, FailReason::InsufficientStock);
        // An integer is epoch seconds too.
        let int = ORIGINAL_ORDER_PLACED.replace("1764600000.1234567", "1764600000");
        let placed: OrderPlaced = serde_json::from_str(&int).unwrap();
        assert_eq!(placed.created_at, "2025-12-01T14:40:00.000Z");
    }

    #[test]
    fn reads_the_original_part_c_events() {
        let order: OrderEvent = serde_json::from_str(ORIGINAL_ORDER_EVENT).unwrap();
        assert_eq!(order.order_id.as_str(), "order-17");
        assert_eq!(order.item_id.as_str(), "item-42");
        assert_eq!(order.ts, 1_764_600_000_456);
        let event: InventoryEvent = serde_json::from_str(ORIGINAL_INVENTORY_EVENT).unwrap();
        assert_eq!(event.status, InventoryStatus::Failure);
        assert_eq!(event.ts, 1_764_600_000_456);
        // Ours is unchanged: integer milliseconds, written back the same.
        let ours =
            r#"{"order_id":"ORD-00000000ABCD","item_id":"item-1","qty":1,"ts":1764600000123}"#;
        let order: OrderEvent = serde_json::from_str(ours).unwrap();
        assert_eq!(order.ts, 1_764_600_000_123);
        assert_eq!(serde_json::to_string(&order).unwrap(), ours);
        let text = ours.replace("1764600000123", "\"2025-12-01T14:40:00.123Z\"");
        let order: OrderEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(order.ts, 1_764_600_000_123);
    }

    #[test]
    fn fills_in_what_other_producers_leave_out() {
        let before = now_millis();
        let bare: OrderPlaced =
            serde_json::from_str(r#"{"order_id": "order-1", "item": "pizza", "qty": 1}"#).unwrap();
        assert_eq!(bare.status, OrderStatus::Placed);
        assert!(
            humantime::parse_rfc3339(&bare.created_at).is_ok(),
            "{}",
            bare.created_at
        );
        let odd: OrderPlaced = serde_json::from_str(
            r#"{"order_id": "order-1", "request_id": "test-dlq-001", "item": "pizza", "qty": 1,
                "status": "weird", "created_at": {"when": "now"}, "extra": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(odd.order_id.as_str(), "order-1");
        let e: OrderEvent =
            serde_json::from_str(r#"{"order_id": "o", "item_id": "item-1", "qty": 1, "ts": -5}"#)
                .unwrap();
        assert!(e.ts >= before);
        let e: OrderEvent =
            serde_json::from_str(r#"{"order_id": "o", "item_id": "item-1", "qty": 1}"#).unwrap();
        assert!(e.ts >= before);
        let lower = ORIGINAL_INVENTORY_EVENT.replace("Failure", "success");
        let event: InventoryEvent = serde_json::from_str(&lower).unwrap();
        assert_eq!(event.status, InventoryStatus::Success);
        // We still write what the contract spells.
        assert_eq!(
            serde_json::to_string(&InventoryStatus::Success).unwrap(),
            "\"Success\""
        );
    }

    #[test]
    fn poison_stays_poison() {
        for bad in [
            r#"{"request_id": "r", "item": "pizza", "qty": 1, "created_at": 1.5}"#,
            r#"{"order_id": "ORD-00000000000A", "qty": 1}"#,
            r#"{"order_id": "ORD-00000000000A", "item": "pizza"}"#,
            r#"{"order_id": "ORD-00000000000A", "item": "pizza", "qty": 0}"#,
            r#"{"order_id": "ORD-00000000000A", "item": "pizza", "qty": 1.5}"#,
            r#"{"order_id": "ORD-00000000000A", "item": "pizza", "qty": "2"}"#,
            r#"{"order_id": "", "item": "pizza", "qty": 1}"#,
            r#"{"order_id": "has space", "item": "pizza", "qty": 1}"#,
            r#"{"order_id": null, "item": "pizza", "qty": 1}"#,
        ] {
            assert!(serde_json::from_str::<OrderPlaced>(bad).is_err(), "{bad}");
        }
        let no_item = r#"{"order_id": "order-1", "qty": 1, "ts": 1.5}"#;
        assert!(serde_json::from_str::<OrderEvent>(no_item).is_err());
        let bad_status = ORIGINAL_INVENTORY_EVENT.replace("Failure", "Maybe");
        assert!(serde_json::from_str::<InventoryEvent>(&bad_status).is_err());
    }
}
