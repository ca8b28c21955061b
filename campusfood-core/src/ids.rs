//! Identifiers. Each is a newtype whose constructor validates, so an invalid
//! id cannot exist past the edge where it was parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::bounded;

/// Why a string is not a valid identifier. Each variant holds a bounded,
/// quoted preview of the offending text ([`bounded::preview`]), never the
/// whole of it: the text may be anything a sender put in a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// Not `ORD-` followed by exactly 12 upper-case hexadecimal digits.
    #[error("order_id must be ORD- followed by 12 upper-case hex digits, got {0}")]
    OrderId(String),
    /// Not a UUID.
    #[error("request_id must be a UUID, got {0}")]
    RequestId(String),
}

/// An order identifier: `ORD-` followed by 12 upper-case hexadecimal digits,
/// e.g. `ORD-1A2B3C4D5E6F`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(String);

impl OrderId {
    /// The fixed prefix of every order id.
    pub const PREFIX: &'static str = "ORD-";
    const HEX_DIGITS: usize = 12;

    /// A fresh random order id (48 random bits).
    pub fn generate() -> Self {
        let bits = fastrand::u64(..) & 0xFFFF_FFFF_FFFF;
        Self(format!("{}{bits:012X}", Self::PREFIX))
    }

    /// Validates `s` as an order id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == Self::PREFIX.len() + Self::HEX_DIGITS
            && s.starts_with(Self::PREFIX)
            && s[Self::PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::OrderId(bounded::preview(s)))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request identifier (a UUID), carried through every hop for tracing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(uuid::Uuid);

impl RequestId {
    /// A fresh random (v4) request id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Validates `s` as a request id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::RequestId(bounded::preview(s)))
    }
}

/// A reservation identifier: `RES-<order_id>`, derived from the order so
/// that a repeated reservation names the same reservation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReservationId(String);

impl ReservationId {
    /// The reservation id of `order`.
    pub fn for_order(order: &OrderId) -> Self {
        Self(format!("RES-{}", order.as_str()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_id {
    ($ty:ident, $parse:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0)
            }
        }
        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $parse(s)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_id!(OrderId, OrderId::parse);
text_id!(RequestId, RequestId::parse);
text_id!(ReservationId, |s: &str| {
    s.strip_prefix("RES-")
        .ok_or_else(|| IdError::OrderId(bounded::preview(s)))
        .and_then(OrderId::parse)
        .map(|o| ReservationId::for_order(&o))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_order_ids_parse() {
        for _ in 0..1000 {
            let id = OrderId::generate();
            assert_eq!(OrderId::parse(id.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn order_id_rejects_lowercase_short_and_foreign() {
        for bad in [
            "ORD-1a2b3c4d5e6f",
            "ORD-123",
            "ORD-1234567890ABC",
            "XYZ-123456789ABC",
            "",
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_show_a_bounded_preview() {
        let huge = "A".repeat(204_800);
        let e = OrderId::parse(&huge).unwrap_err().to_string();
        assert!(e.len() < 256, "{}", e.len());
        assert!(e.contains("…(204800 bytes)"), "{e}");
        let e = RequestId::parse(&huge).unwrap_err().to_string();
        assert!(e.len() < 256, "{}", e.len());
        let e = serde_json::from_str::<OrderId>(&format!("\"{huge} \""))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 256, "{}", e.len());
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: OrderId = serde_json::from_str("\"ORD-00000000ABCD\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"ORD-00000000ABCD\"");
        assert!(serde_json::from_str::<OrderId>("\"nope\"").is_err());
        let r = ReservationId::for_order(&id);
        assert_eq!(r.as_str(), "RES-ORD-00000000ABCD");
        assert_eq!(r.as_str().parse::<ReservationId>().unwrap(), r);
    }
}
