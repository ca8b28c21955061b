//! Between [`Message`] and AMQP: properties, headers and the attempt count.
//!
//! Outgoing: the body as is, `content_type: application/json`, delivery
//! mode 2 (persistent), a fresh unique `message_id` (the id dead letters are
//! shown and replayed by), the key in the [`KEY_HEADER`] header, every
//! message header as an AMQP string header.
//!
//! Incoming: string, number and boolean headers become message headers;
//! the transport's own bookkeeping headers ([`KEY_HEADER`],
//! [`headers::ATTEMPTS`], [`headers::DEATH_REASON`]) and RabbitMQ's
//! (`x-death`, `x-first-death-*`, `x-last-death-*`) are read, not passed on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqprs::{BasicProperties, FieldName, FieldTable, FieldValue};
use bytes::Bytes;
use campusfood_core::RequestId;
use campusfood_core::codec::CONTENT_TYPE;
use campusfood_core::transport::{Message, headers};

/// The AMQP header that carries [`Message::key`].
pub const KEY_HEADER: &str = "x-message-key";

/// The most header bytes (names and values) a published message may
/// carry: half of RabbitMQ's default `frame_max` (128 KiB). The properties
/// travel in one frame, and a frame larger than `frame_max` makes the broker
/// close the whole connection (`501 FRAME_ERROR`), every channel with it.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Headers AMQP cannot carry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadersRefused {
    /// A header name longer than 255 bytes.
    #[error("header name `{0}…` is longer than AMQP's 255 bytes")]
    NameTooLong(String),
    /// More than [`MAX_HEADER_BYTES`] of headers.
    #[error("{0} bytes of headers, more than {MAX_HEADER_BYTES}")]
    TooLarge(usize),
}

impl HeadersRefused {
    /// What cannot be done, for [`TransportError::Unsupported`](campusfood_core::transport::TransportError::Unsupported).
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Self::NameTooLong(_) => "header names longer than 255 bytes",
            Self::TooLarge(_) => "more than 64 KiB of headers",
        }
    }
}

/// A new unique message id.
pub(crate) fn new_message_id() -> String {
    RequestId::generate().to_string()
}

/// The properties of a freshly published `message`.
pub(crate) fn outbound(message: &Message) -> Result<BasicProperties, HeadersRefused> {
    let size: usize = message
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .chain(message.key.iter().map(|k| KEY_HEADER.len() + k.len()))
        .sum();
    if size > MAX_HEADER_BYTES {
        return Err(HeadersRefused::TooLarge(size));
    }
    let mut table = FieldTable::new();
    for (name, value) in &message.headers {
        put(&mut table, name, value)?;
    }
    if let Some(key) = &message.key {
        put(&mut table, KEY_HEADER, key)?;
    }
    Ok(BasicProperties::default()
        .with_content_type(CONTENT_TYPE)
        .with_persistence(true)
        .with_message_id(&new_message_id())
        .with_timestamp(now_secs())
        .with_headers(table)
        .finish())
}

/// What a received message says about itself.
#[derive(Debug, Clone)]
pub(crate) struct Inbound {
    /// The message as a handler sees it.
    pub(crate) message: Message,
    /// Which attempt this is, from 1 ([`headers::ATTEMPTS`]).
    pub(crate) attempt: u32,
    /// The AMQP `message_id`, when the publisher set one.
    pub(crate) message_id: Option<String>,
    /// Why it was dead-lettered: our [`headers::DEATH_REASON`], else the
    /// broker's own `x-first-death-reason` (`rejected`, `expired`, …).
    pub(crate) death_reason: Option<String>,
}

/// Reads a received message.
pub(crate) fn inbound(props: &BasicProperties, body: Vec<u8>) -> Inbound {
    let mut message_headers = BTreeMap::new();
    let mut key = None;
    let mut attempt = None;
    let mut death_reason = None;
    let mut broker_reason = None;
    if let Some(table) = props.headers() {
        for (name, value) in table.as_ref() {
            let name: &str = name.as_ref();
            let Some(text) = as_text(value) else { continue };
            match name {
                KEY_HEADER => key = Some(text),
                headers::ATTEMPTS => attempt = text.trim().parse::<u32>().ok(),
                headers::DEATH_REASON => death_reason = Some(text),
                "x-first-death-reason" => broker_reason = Some(text),
                _ if is_broker_header(name) => {}
                _ => {
                    message_headers.insert(name.to_owned(), text);
                }
            }
        }
    }
    Inbound {
        message: Message {
            key,
            headers: message_headers,
            body: Bytes::from(body),
        },
        attempt: attempt.unwrap_or(1).max(1),
        message_id: props.message_id().cloned(),
        death_reason: death_reason.or(broker_reason),
    }
}

/// Properties for sending a received message on (to a retry queue, a
/// dead-letter queue, or back from one): everything the publisher set is
/// kept (`user_id` excepted: the broker checks it against our login), the
/// message id too (a fresh one if it had none), `expiration` is dropped
/// unless `expiration` is given, and header `set` are set after those named
/// in `remove` are removed.
pub(crate) fn forward(
    props: &BasicProperties,
    message_id: &str,
    remove: &[&str],
    set: &[(&str, String)],
    expiration: Option<Duration>,
) -> BasicProperties {
    // Rebuilt entry by entry rather than cloned: the table keeps its own
    // encoded length, which only insert and remove maintain.
    let mut table = FieldTable::new();
    if let Some(received) = props.headers() {
        for (k, v) in received.as_ref() {
            let name: &str = k.as_ref();
            if !remove.contains(&name) {
                table.insert(k.clone(), v.clone());
            }
        }
    }
    for (name, value) in set {
        // Our own header names are short: this cannot fail.
        let _ = put(&mut table, name, value);
    }
    let mut out = BasicProperties::default();
    out.with_persistence(true)
        .with_message_id(message_id)
        .with_headers(table);
    out.with_content_type(props.content_type().map_or(CONTENT_TYPE, String::as_str));
    if let Some(v) = props.content_encoding() {
        out.with_content_encoding(v);
    }
    if let Some(v) = props.priority() {
        out.with_priority(v);
    }
    if let Some(v) = props.correlation_id() {
        out.with_correlation_id(v);
    }
    if let Some(v) = props.reply_to() {
        out.with_reply_to(v);
    }
    if let Some(v) = props.message_type() {
        out.with_message_type(v);
    }
    if let Some(v) = props.app_id() {
        out.with_app_id(v);
    }
    out.with_timestamp(props.timestamp().unwrap_or_else(now_secs));
    if let Some(delay) = expiration {
        out.with_expiration(&delay.as_millis().to_string());
    }
    out.finish()
}

/// The headers RabbitMQ adds when it dead-letters a message.
pub(crate) const BROKER_DEATH_HEADERS: [&str; 7] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

fn is_broker_header(name: &str) -> bool {
    BROKER_DEATH_HEADERS.contains(&name)
}

fn put(table: &mut FieldTable, name: &str, value: &str) -> Result<(), HeadersRefused> {
    let field = FieldName::try_from(name)
        .map_err(|_| HeadersRefused::NameTooLong(name.chars().take(40).collect()))?;
    // `insert` adds the new entry's size to the table's encoded length
    // without subtracting a replaced one's: remove it first.
    table.remove(&field);
    // A LongStr holds up to 4 GiB, more than a frame: cannot fail here.
    if let Ok(v) = value.try_into() {
        table.insert(field, FieldValue::S(v));
    }
    Ok(())
}

/// A header value as text, for the kinds a [`Message`] header can hold.
fn as_text(value: &FieldValue) -> Option<String> {
    Some(match value {
        FieldValue::S(s) => s.as_ref().clone(),
        FieldValue::x(bytes) => String::from_utf8(Vec::<u8>::from(bytes.clone())).ok()?,
        FieldValue::t(b) => b.to_string(),
        FieldValue::b(n) => n.to_string(),
        FieldValue::B(n) => n.to_string(),
        FieldValue::s(n) => n.to_string(),
        FieldValue::u(n) => n.to_string(),
        FieldValue::I(n) => n.to_string(),
        FieldValue::i(n) => n.to_string(),
        FieldValue::l(n) => n.to_string(),
        FieldValue::f(n) => n.to_string(),
        FieldValue::d(n) => n.to_string(),
        FieldValue::T(n) => n.to_string(),
        FieldValue::D(_) | FieldValue::A(_) | FieldValue::F(_) | FieldValue::V => return None,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stable id for a dead letter that came without a `message_id` (one a
/// foreign publisher sent and the broker dead-lettered): FNV-1a of its
/// timestamp and body.
pub(crate) fn fallback_id(props: &BasicProperties, body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let stamp = props.timestamp().unwrap_or(0).to_le_bytes();
    for byte in stamp.iter().chain(body) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("body-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use amqprs::DELIVERY_MODE_PERSISTENT;

    use super::*;

    #[test]
    fn round_trip_keeps_key_and_headers_and_reads_attempts() {
        let m = Message {
            key: Some("ORD-1".into()),
            headers: BTreeMap::from([("x-request-id".to_owned(), "r1".to_owned())]),
            body: Bytes::from_static(b"{}"),
        };
        let props = outbound(&m).unwrap();
        assert_eq!(props.content_type().map(String::as_str), Some(CONTENT_TYPE));
        assert_eq!(props.delivery_mode(), Some(DELIVERY_MODE_PERSISTENT));
        let id = props.message_id().cloned().unwrap();
        let got = inbound(&props, b"{}".to_vec());
        assert_eq!(got.message, m);
        assert_eq!(got.attempt, 1);

        let retried = forward(
            &props,
            &id,
            &[],
            &[(headers::ATTEMPTS, "3".to_owned())],
            Some(Duration::from_millis(250)),
        );
        assert_eq!(retried.expiration().map(String::as_str), Some("250"));
        let got = inbound(&retried, b"{}".to_vec());
        assert_eq!(got.attempt, 3);
        assert_eq!(got.message_id.as_deref(), Some(id.as_str()));
        assert_eq!(got.message, m);

        let dead = forward(
            &retried,
            &id,
            &[headers::ATTEMPTS],
            &[(headers::DEATH_REASON, "bad".to_owned())],
            None,
        );
        assert_eq!(dead.expiration(), None);
        let got = inbound(&dead, b"{}".to_vec());
        assert_eq!(got.attempt, 1);
        assert_eq!(got.death_reason.as_deref(), Some("bad"));
        assert_eq!(got.message, m);
    }

    #[test]
    fn replacing_a_header_keeps_the_encoded_length_right() {
        // FieldTable's equality includes its encoded length.
        let mut twice = FieldTable::new();
        put(&mut twice, headers::ATTEMPTS, "2").unwrap();
        put(&mut twice, headers::ATTEMPTS, "3").unwrap();
        let mut once = FieldTable::new();
        put(&mut once, headers::ATTEMPTS, "3").unwrap();
        assert_eq!(twice, once);
    }

    #[test]
    fn long_header_names_are_refused() {
        let m = Message::default().with_header("h".repeat(300), "v");
        assert!(outbound(&m).is_err());
    }

    #[test]
    fn headers_larger_than_a_frame_can_hold_are_refused() {
        let big = "k".repeat(MAX_HEADER_BYTES);
        assert!(matches!(
            outbound(&Message::default().with_key(big.clone())),
            Err(HeadersRefused::TooLarge(_))
        ));
        assert!(outbound(&Message::default().with_header("h", big)).is_err());
        let fits = "k".repeat(MAX_HEADER_BYTES / 2);
        assert!(outbound(&Message::default().with_key(fits)).is_ok());
    }
}
