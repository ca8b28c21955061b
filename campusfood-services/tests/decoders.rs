//! Property tests of the message decoders every consumer uses: whatever
//! bytes arrive, the verdict is an order (or event) or poison with a
//! reason of at most 1 KiB, never a panic; and the verdict is the
//! contract's: poison is only invalid JSON, no usable `order_id` or item,
//! or a `qty` that is not an integer from 1 to 1,000,000.
//!
//! `cargo test -p campusfood-services --test decoders`
//! (`PROPTEST_CASES=10000` for a longer run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use campusfood_core::bounded::MAX_REASON_BYTES;
use campusfood_core::events::{
    InventoryEvent, InventoryFailed, InventoryReserved, OrderEvent, OrderNotified, OrderPlaced,
};
use campusfood_core::order::{Item, PlaceOrder, Quantity};
use campusfood_core::transport::{Delivery, Disposition, Message};
use campusfood_core::{OrderId, RequestId};
use campusfood_services::async_rabbitmq::workers::decode_or_poison;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The verdict of `decode_or_poison` on `body`: whether it decoded, after
/// checking that a poison verdict carries a bounded reason.
fn verdict<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let delivery = Delivery {
        message: Message {
            body: body.to_vec().into(),
            ..Message::default()
        },
        attempt: 1,
    };
    match decode_or_poison::<T>(&delivery) {
        Ok(v) => Ok(v),
        Err(Disposition::DeadLetter { reason }) => {
            assert!(
                reason.len() <= MAX_REASON_BYTES,
                "a reason of {} bytes",
                reason.len()
            );
            assert!(!reason.is_empty());
            Err(reason)
        }
        Err(other) => panic!("poison must be dead-lettered, got {other:?}"),
    }
}

/// Every decoder a consumer runs on what it receives.
fn all_decoders(body: &[u8]) {
    let _ = verdict::<OrderPlaced>(body);
    let _ = verdict::<InventoryReserved>(body);
    let _ = verdict::<InventoryFailed>(body);
    let _ = verdict::<OrderNotified>(body);
    let _ = verdict::<OrderEvent>(body);
    let _ = verdict::<InventoryEvent>(body);
    if let Err(e) = PlaceOrder::from_json(body) {
        let shown = e.to_string();
        assert!(shown.len() <= MAX_REASON_BYTES, "{} bytes", shown.len());
    }
}

/// The field names the events use, and some others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "order_id", "request_id", "item", "item_id", "qty", "ts", "created_at", "status",
            "reason", "remaining", "reservation_id",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// A JSON leaf, long strings included (longer than any bound).
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..2_000_000).prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        "[A-Za-z0-9._:-]{1,70}".prop_map(Value::from),
        (0usize..6000, any::<char>()).prop_map(|(n, c)| Value::from(c.to_string().repeat(n))),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A field of an order-like object: absent, one of the `good` values, or
/// any value at all.
fn field(good: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![1 => Just(None), 4 => good.prop_map(Some), 3 => json().prop_map(Some)]
}

/// Objects that look like orders: each contract field absent, right, or
/// wrong in some way, and extra fields.
fn order_like(item_key: &'static str) -> impl Strategy<Value = Map<String, Value>> {
    let id = prop_oneof!["[A-Za-z0-9._:-]{1,64}", "order-[0-9]{1,7}"].prop_map(Value::from);
    let item = "[A-Za-z0-9_-]{1,64}".prop_map(Value::from);
    let qty = (1u64..=1_000_000).prop_map(Value::from);
    let time = prop_oneof![
        (0.0f64..4e9).prop_map(Value::from),
        (0u64..4_000_000_000_000).prop_map(Value::from),
        Just(Value::from("2025-12-01T14:40:00.123Z")),
    ];
    let request_id = Just(Value::from("0b6f2c1e-5a4d-4e8b-9c3f-2d1e0a9b8c7d"));
    (
        field(id),
        field(item),
        field(qty),
        field(time),
        field(request_id),
        prop::collection::vec((".{1,8}", leaf()), 0..3),
    )
        .prop_map(move |(order_id, item, qty, time, request_id, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            let fields = [
                ("order_id", order_id),
                (item_key, item),
                ("qty", qty),
                ("created_at", time.clone()),
                ("ts", time),
                ("request_id", request_id),
            ];
            for (k, v) in fields {
                match v {
                    Some(v) => m.insert(k.to_owned(), v),
                    None => m.remove(k),
                };
            }
            m
        })
}

/// The contract's verdict on an order-like object.
fn is_an_order(m: &Map<String, Value>, item_key: &str) -> bool {
    let text = |k: &str| m.get(k).and_then(Value::as_str);
    text("order_id").is_some_and(|s| OrderId::parse(s).is_ok())
        && text(item_key).is_some_and(|s| Item::parse(s).is_ok())
        && m.get("qty").is_some_and(|q| Quantity::from_json(q).is_ok())
}

proptest! {
    #[test]
    fn any_bytes_decode_or_are_poison_with_a_bounded_reason(
        body in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        all_decoders(&body);
    }

    #[test]
    fn any_json_decodes_or_is_poison_with_a_bounded_reason(v in json()) {
        all_decoders(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn an_order_placed_is_poison_exactly_when_the_contract_says(m in order_like("item")) {
        let body = serde_json::to_vec(&m).unwrap();
        let decoded = verdict::<OrderPlaced>(&body);
        prop_assert_eq!(decoded.is_ok(), is_an_order(&m, "item"), "{:?}", decoded.err());
        if let Ok(order) = decoded {
            prop_assert_eq!(Some(order.order_id.as_str()), m["order_id"].as_str());
            prop_assert_eq!(Some(u64::from(order.qty.get())), m["qty"].as_u64());
        }
    }

    #[test]
    fn an_order_event_is_poison_exactly_when_the_contract_says(m in order_like("item_id")) {
        let body = serde_json::to_vec(&m).unwrap();
        let decoded = verdict::<OrderEvent>(&body);
        prop_assert_eq!(decoded.is_ok(), is_an_order(&m, "item_id"), "{:?}", decoded.err());
    }

    /// What the original services write, for any of their values.
    #[test]
    fn the_originals_messages_are_always_orders(
        i in 1u64..1_000_000,
        item in 1u32..=50,
        qty in 1u32..=5,
        secs in 1_000_000_000.0f64..4_000_000_000.0,
        part_b_item in prop::sample::select(vec!["burger", "pizza", "sushi", "taco", "salad"]),
    ) {
        // Part C producer: json.dumps({'order_id': f"order-{i}", 'item_id': …, 'qty': …, 'ts': time.time()})
        let c = format!(r#"{{"order_id": "order-{i}", "item_id": "item-{item}", "qty": {qty}, "ts": {secs}}}"#);
        let event = verdict::<OrderEvent>(c.as_bytes()).unwrap();
        prop_assert!(event.ts.abs_diff((secs * 1000.0) as u64) <= 1);
        // Part B OrderService: ORD- + 12 hex of a uuid4, created_at = time.time().
        let b = format!(
            r#"{{"order_id": "{}", "request_id": "{}", "item": "{part_b_item}", "qty": {qty}, "status": "placed", "created_at": {secs}}}"#,
            OrderId::generate(),
            RequestId::generate(),
        );
        let placed = verdict::<OrderPlaced>(b.as_bytes()).unwrap();
        // RFC 3339 with milliseconds, UTC: `2025-12-01T14:40:00.123Z`.
        prop_assert_eq!(placed.created_at.len(), 24, "{}", &placed.created_at);
        prop_assert!(placed.created_at.ends_with('Z'));
    }
}
