//! Identifiers. Each is a newtype whose constructor validates, so an invalid
//! id cannot exist past the edge where it was parsed.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::bounded;

/// Why a string is not a valid identifier. Each variant holds a bounded,
/// quoted preview of the offending text ([`bounded::preview`]), never the
/// whole of it: the text may be anything a sender put in a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not 1 to 64 characters of ASCII letters, digits, `.`, `_`, `:` and
    /// `-`.
    #[error(
        "order_id must be 1 to 64 characters of letters, digits, '.', '_', ':' and '-', got {0}"
    )]
    OrderId(String),
    /// Not a UUID.
    #[error("request_id must be a UUID, got {0}")]
    RequestId(String),
}

/// An order identifier: 1 to [`OrderId::MAX_LEN`] characters of ASCII
/// letters, digits, `.`, `_`, `:` and `-`, so that the ids other producers
/// write (the original services' `order-<i>`, say) are orders too. The ids
/// this system generates are always `ORD-` followed by 12 upper-case
/// hexadecimal digits, e.g. `ORD-1A2B3C4D5E6F`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(String);

impl OrderId {
    /// The fixed prefix of every generated order id.
    pub const PREFIX: &'static str = "ORD-";
    /// The longest accepted order id, in characters (all ASCII).
    pub const MAX_LEN: usize = 64;
    const HEX_DIGITS: usize = 12;
    /// The bits a generated id carries.
    const BITS: u64 = 0xFFFF_FFFF_FFFF;

    /// A fresh order id: `ORD-` and 12 upper-case hex digits.
    ///
    /// A process counts its ids up from a random 48-bit start, so
    /// - one process never makes the same id twice (until 2^48 ids);
    /// - ids made one after another sort one after another, so a store
    ///   keyed by order id (the ledger's reservations, the order and
    ///   notification stores) appends to the end of its B-tree instead of
    ///   dirtying a page per order all over it;
    /// - two processes' ids meet only if their random starts fall within
    ///   their counts of each other: for two runs of 10,000 orders,
    ///   20,000 in 2^48, about 1 in 14 billion (with 48 random bits per
    ///   id, 10,000² in 2^48: about 1 in 3 million).
    ///
    /// Ids are not secrets: the next one is this one plus one. Anyone who
    /// can reach the services can name any order anyway.
    pub fn generate() -> Self {
        static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| AtomicU64::new(fastrand::u64(..)));
        let bits = NEXT.fetch_add(1, Ordering::Relaxed) & Self::BITS;
        Self(format!("{}{bits:012X}", Self::PREFIX))
    }

    /// Validates `s` as an order id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::OrderId(bounded::preview(s)))
        }
    }

    /// The 48 bits of a generated id (`ORD-` and 12 upper-case hex
    /// digits); `None` for an id of any other form.
    pub fn generated_bits(&self) -> Option<u64> {
        let hex = self.0.strip_prefix(Self::PREFIX)?;
        let generated = hex.len() == Self::HEX_DIGITS
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if generated {
            u64::from_str_radix(hex, 16).ok()
        } else {
            None
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
    fn generated_ids_count_up_and_never_repeat_across_threads() {
        let per_thread: Vec<Vec<OrderId>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..2000).map(|_| OrderId::generate()).collect::<Vec<_>>()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all = std::collections::HashSet::new();
        for ids in &per_thread {
            // One thread's ids sort in the order they were made (the
            // 48-bit count wraps once in 2^48 ids; not within a test).
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            all.extend(ids.iter().cloned());
        }
        assert_eq!(all.len(), 4 * 2000);
    }

    #[test]
    fn generated_ids_keep_their_form() {
        let id = OrderId::generate();
        let s = id.as_str();
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("ORD-"));
        assert!(
            s[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        assert!(id.generated_bits().is_some());
    }

    #[test]
    fn order_id_accepts_what_other_producers_write() {
        for good in [
            "order-1",
            "order-10000",
            "ORD-1a2b3c4d5e6f",
            "ORD-123",
            "a",
            "tenant:42.order_7-b",
            &"x".repeat(64),
        ] {
            let id = OrderId::parse(good).unwrap();
            assert_eq!(id.as_str(), good);
        }
        // Only our own form has generated bits, so that two ids never share them.
        assert_eq!(
            OrderId::parse("ORD-1a2b3c4d5e6f").unwrap().generated_bits(),
            None
        );
        assert_eq!(OrderId::parse("order-1").unwrap().generated_bits(), None);
        assert_eq!(
            OrderId::parse("ORD-00000000ABCD").unwrap().generated_bits(),
            Some(0xABCD)
        );
    }

    #[test]
    fn order_id_rejects_empty_long_and_odd_characters() {
        for bad in ["", &"x".repeat(65), "ORD 1", "a/b", "ordér", "a\n", "{}"] {
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
        assert!(serde_json::from_str::<OrderId>("\"no pe\"").is_err());
        let r = ReservationId::for_order(&id);
        assert_eq!(r.as_str(), "RES-ORD-00000000ABCD");
        assert_eq!(r.as_str().parse::<ReservationId>().unwrap(), r);
    }
}
