//! Orders and their parts. [`PlaceOrder::from_json`] is the one place an
//! incoming order is validated, whatever transport it came over.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::bounded;
use crate::ids::{OrderId, RequestId};

/// Why an order (or one of its fields) is invalid. Always the caller's
/// fault: fix the input and send again.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The body is not JSON, or not a JSON object.
    #[error("body is not a JSON object: {0}")]
    Malformed(String),
    /// A required field is absent (or null).
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field is present but its value is not acceptable.
    #[error("invalid field `{field}`: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ValidationError {
    /// The name of the offending field, if one is to blame.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Malformed(_) => None,
            Self::Missing(f) | Self::Invalid { field: f, .. } => Some(f),
        }
    }
}

/// A menu item name: 1 to 64 characters of ASCII letters, digits, `-` and `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Item(String);

impl Item {
    /// The longest accepted item name.
    pub const MAX_LEN: usize = 64;

    /// Validates `s` as an item name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let invalid = |reason: &str| ValidationError::Invalid {
            field: "item",
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("must be at most 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid("may contain only letters, digits, '-' and '_'"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item({})", self.0)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A positive quantity, at most [`Quantity::MAX`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    /// The largest quantity one order may ask for.
    pub const MAX: u32 = 1_000_000;

    /// Validates `n` as a quantity.
    pub fn new(n: u64) -> Result<Self, ValidationError> {
        match u32::try_from(n) {
            Ok(q) if (1..=Self::MAX).contains(&q) => Ok(Self(q)),
            _ => Err(ValidationError::Invalid {
                field: "qty",
                reason: format!("must be an integer from 1 to {}", Self::MAX),
            }),
        }
    }

    /// Validates a JSON value as a quantity: a whole number (`2` or `2.0`,
    /// as JSON Schema's `integer`), not a fraction, string or boolean.
    pub fn from_json(v: &Value) -> Result<Self, ValidationError> {
        match whole_number(v) {
            Some(n) => Self::new(n),
            None => Err(ValidationError::Invalid {
                field: "qty",
                reason: format!(
                    "must be an integer from 1 to {}, got {}",
                    Self::MAX,
                    bounded::preview_display(v)
                ),
            }),
        }
    }

    /// The quantity as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({})", self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_json(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A JSON number that is a non-negative whole number, as JSON Schema's
/// `integer` reads it: `7`, and also `7.0` or `7e0` (JSON has one number
/// type); `None` for fractions, negatives, numbers past `u64` and
/// non-numbers.
pub fn whole_number(v: &Value) -> Option<u64> {
    // 2^64, exactly representable: every f64 below it fits a u64.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    v.as_u64().or_else(|| {
        let f = v.as_f64()?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = (f.fract() == 0.0 && (0.0..TWO_POW_64).contains(&f)).then_some(f as u64);
        whole
    })
}

/// Where an order is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Accepted and stored; the reservation has not happened yet (async).
    Placed,
    /// Reserved and notified within one synchronous call (sync REST).
    Confirmed,
    /// Inventory reserved the stock (async).
    Reserved,
    /// Inventory could not reserve the stock (async).
    Failed,
    /// The customer was notified (async, final).
    Notified,
}

/// A validated request to place an order: what a client sends to
/// `POST /order`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaceOrder {
    /// What to order.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
}

impl PlaceOrder {
    /// Parses and validates a JSON body `{"item": "...", "qty": n}`. Unknown
    /// extra fields are ignored, as JSON clients expect.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ValidationError::Malformed(bounded::reason_owned(e.to_string())))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ValidationError::Malformed("expected a JSON object".to_owned()))?;
        let field = |name: &'static str| match obj.get(name) {
            None | Some(Value::Null) => Err(ValidationError::Missing(name)),
            Some(v) => Ok(v),
        };
        let item = match field("item")? {
            Value::String(s) => Item::parse(s)?,
            other => {
                return Err(ValidationError::Invalid {
                    field: "item",
                    reason: format!("must be a string, got {}", bounded::preview_display(other)),
                });
            }
        };
        let qty = Quantity::from_json(field("qty")?)?;
        Ok(Self { item, qty })
    }
}

/// An order as the order service stores and reports it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub order_id: OrderId,
    /// The request that created it.
    pub request_id: RequestId,
    /// What was ordered.
    pub item: Item,
    /// How many.
    pub qty: Quantity,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// When it was accepted, RFC 3339 with milliseconds (UTC).
    pub created_at: String,
}

impl Order {
    /// A new order for `req` with fresh ids, in status `status`, created now.
    pub fn new(req: PlaceOrder, status: OrderStatus) -> Self {
        Self {
            order_id: OrderId::generate(),
            request_id: RequestId::generate(),
            item: req.item,
            qty: req.qty,
            status,
            created_at: now_rfc3339(),
        }
    }
}

/// The current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_good_order() {
        let p = PlaceOrder::from_json(br#"{"item":"burger","qty":2,"extra":true}"#).unwrap();
        assert_eq!(p.item.as_str(), "burger");
        assert_eq!(p.qty.get(), 2);
    }

    #[test]
    fn a_whole_float_is_an_integer() {
        for body in [
            &br#"{"item":"burger","qty":2.0}"#[..],
            br#"{"item":"burger","qty":2e0}"#,
        ] {
            assert_eq!(PlaceOrder::from_json(body).unwrap().qty.get(), 2);
        }
        assert_eq!(
            whole_number(&serde_json::json!(1e19)),
            Some(10_000_000_000_000_000_000)
        );
        assert_eq!(
            whole_number(&serde_json::json!(1.8446744073709552e19)),
            None
        );
    }

    #[test]
    fn names_the_offending_field() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"{not json", None),
            (b"[1,2]", None),
            (br#"{"qty":1}"#, Some("item")),
            (br#"{"item":"burger"}"#, Some("qty")),
            (br#"{"item":"burger","qty":0}"#, Some("qty")),
            (br#"{"item":"burger","qty":-1}"#, Some("qty")),
            (br#"{"item":"burger","qty":"x"}"#, Some("qty")),
            (br#"{"item":"burger","qty":1.5}"#, Some("qty")),
            (br#"{"item":"burger","qty":0.0}"#, Some("qty")),
            (br#"{"item":"burger","qty":-2.0}"#, Some("qty")),
            (br#"{"item":"burger","qty":1099511627776}"#, Some("qty")),
            (br#"{"item":"","qty":1}"#, Some("item")),
            (br#"{"item":7,"qty":1}"#, Some("item")),
            (br#"{"item":"bur ger","qty":1}"#, Some("item")),
        ];
        for (body, field) in cases {
            let err = PlaceOrder::from_json(body).unwrap_err();
            assert_eq!(err.field(), *field, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn errors_quote_a_bounded_preview_of_the_input() {
        let huge = "9".repeat(204_800);
        for body in [
            format!(r#"{{"item":"burger","qty":"{huge}"}}"#),
            format!(r#"{{"item":"burger","qty":{huge}}}"#),
            format!(r#"{{"item":["{huge}"],"qty":1}}"#),
            format!(r#"{{"item":"{huge}","qty":1}}"#),
            format!(r#"{{"item":"burger","qty":1,"x":{huge}"#),
        ] {
            let e = PlaceOrder::from_json(body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.len() <= 256, "{} bytes: {}", e.len(), &e[..200]);
        }
    }

    #[test]
    fn order_serializes_with_contract_fields() {
        let o = Order::new(
            PlaceOrder::from_json(br#"{"item":"pizza","qty":1}"#).unwrap(),
            OrderStatus::Placed,
        );
        let v = serde_json::to_value(&o).unwrap();
        for k in [
            "order_id",
            "request_id",
            "item",
            "qty",
            "status",
            "created_at",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["status"], "placed");
        let back: Order = serde_json::from_value(v).unwrap();
        assert_eq!(back, o);
    }
}
