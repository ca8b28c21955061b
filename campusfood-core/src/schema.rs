//! OpenAPI schemas (feature `openapi`) for the validated newtypes, whose
//! hand-written `Deserialize` impls accept less than their inner type: each
//! schema says exactly what the parser accepts (length, characters, range),
//! so that a document generated from the wire types promises no more and
//! no less than the services take. The structs and enums of
//! [`events`](crate::events) and [`order`](crate::order) derive theirs.

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::events::InventoryStatus;
use crate::ids::{OrderId, RequestId, ReservationId};
use crate::order::{Item, Quantity};

/// `^…$` would let a validator accept a trailing newline (`$` matches
/// before one in many regex engines); `(?![\s\S])` ends the text for real.
const END: &str = r"(?![\s\S])";

/// A schema written as JSON; an empty (any value) schema if it does not
/// parse, which the tests rule out.
fn from_json(v: Value) -> RefOr<Schema> {
    RefOr::T(serde_json::from_value(v).unwrap_or_default())
}

fn order_id_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": OrderId::MAX_LEN,
        "pattern": format!("^[A-Za-z0-9._:-]{{1,{}}}{END}", OrderId::MAX_LEN),
        "description": "1 to 64 ASCII letters, digits, '.', '_', ':' and '-'; generated ids are ORD- and 12 upper-case hex digits",
        "examples": ["ORD-1A2B3C4D5E6F"]
    })
}

impl PartialSchema for OrderId {
    fn schema() -> RefOr<Schema> {
        from_json(order_id_schema())
    }
}
impl ToSchema for OrderId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OrderId")
    }
}

impl PartialSchema for RequestId {
    fn schema() -> RefOr<Schema> {
        from_json(json!({
            "type": "string",
            "format": "uuid",
            "pattern": format!("^[0-9A-Fa-f]{{8}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{4}}-[0-9A-Fa-f]{{12}}{END}"),
            "description": "a UUID"
        }))
    }
}
impl ToSchema for RequestId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RequestId")
    }
}

impl PartialSchema for ReservationId {
    fn schema() -> RefOr<Schema> {
        from_json(json!({
            "type": "string",
            "pattern": format!("^RES-[A-Za-z0-9._:-]{{1,{}}}{END}", OrderId::MAX_LEN),
            "description": "RES- and the order id"
        }))
    }
}
impl ToSchema for ReservationId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ReservationId")
    }
}

impl PartialSchema for Item {
    fn schema() -> RefOr<Schema> {
        from_json(json!({
            "type": "string",
            "minLength": 1,
            "maxLength": Item::MAX_LEN,
            "pattern": format!("^[A-Za-z0-9_-]{{1,{}}}{END}", Item::MAX_LEN),
            "description": "a menu item: 1 to 64 ASCII letters, digits, '-' and '_'",
            "examples": ["burger"]
        }))
    }
}
impl ToSchema for Item {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Item")
    }
}

impl PartialSchema for Quantity {
    fn schema() -> RefOr<Schema> {
        from_json(json!({
            "type": "integer",
            "minimum": 1,
            "maximum": Quantity::MAX,
            "description": "an integer from 1 to 1,000,000 (not a float, string or boolean)"
        }))
    }
}
impl ToSchema for Quantity {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Quantity")
    }
}

impl PartialSchema for InventoryStatus {
    fn schema() -> RefOr<Schema> {
        from_json(json!({
            "type": "string",
            "enum": ["Success", "Failure"],
            "description": "what inventory decided (read in any case)"
        }))
    }
}
impl ToSchema for InventoryStatus {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InventoryStatus")
    }
}

/// `FaultUpdate::seed`: any `u64`, or `null` for none (the derived
/// `int64` would cap it at `i64::MAX`).
pub(crate) fn seed() -> RefOr<Schema> {
    from_json(json!({
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": u64::MAX,
        "description": "makes failure draws reproducible"
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    #[test]
    fn hand_written_schemas_parse() {
        for v in [
            json_of::<OrderId>(),
            json_of::<RequestId>(),
            json_of::<ReservationId>(),
            json_of::<Item>(),
            json_of::<Quantity>(),
            json_of::<InventoryStatus>(),
        ] {
            assert!(v.get("type").is_some(), "{v}");
        }
        assert_eq!(json_of::<Quantity>()["maximum"], 1_000_000);
        assert_eq!(json_of::<Item>()["maxLength"], 64);
        let seed = serde_json::to_value(seed()).unwrap();
        assert_eq!(seed["maximum"], u64::MAX);
    }
}
