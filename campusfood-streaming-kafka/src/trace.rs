//! "Where is order X?" for Part C (`streaming_kafka trace ORDER_ID`): every
//! record of one order in the order topic, the inventory topic(s) and
//! their dead-letter topics, with partition, offset and record time; the
//! inventory ledger's decision; and whether each dead letter was replayed.
//!
//! # How an order is found
//! Kafka has no index but the offset, so [`trace`] reads: every partition
//! of each topic from its oldest record up to its high watermark as of the
//! start ([`KafkaTransport::scan_topic`]: no consumer group, nothing
//! committed, records of aborted transactions skipped), and keeps the
//! records whose key is the order id or whose JSON value has it as
//! `order_id` (a record of another producer may have no key). Every
//! partition, not only the key's: records of other producers (the original
//! Python one, Java's murmur2 partitioner), unkeyed ones, or ones written
//! before partitions were added can be anywhere. [`Trace::scanned`] says
//! how many records each topic held.
//!
//! # The ledger
//! Looked at with [`Stores::peek_ledger`]: nothing is created, stocked or
//! repaired. The redb file of a running inventory consumer cannot be read
//! (redb lets no reader in beside its writer), so then the trace says so
//! ([`LedgerPeek::InUse`]) and [`Trace::decision`] comes from the
//! inventory event; a Postgres ledger is read beside its writers. An order
//! failed by injection never reaches the ledger: [`Trace::injection`] is
//! the seeded draw that decides it (`FAIL_SEED`, `FAIL_RATE`), a pure
//! function of the order id.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use campusfood_core::Config;
use campusfood_core::OrderId;
use campusfood_core::bounded;
use campusfood_core::events::{InventoryEvent, InventoryStatus, OrderEvent};
use campusfood_core::fault::decide;
use campusfood_core::ledger::{LedgerPeek, ReserveOutcome};
use campusfood_core::transport::{Message, headers};
use campusfood_kafka::{
    DeadLetterId, KafkaTransport, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER,
    ORIGIN_TOPIC_HEADER, ScannedRecord, TopicScan,
};
use campusfood_services::stores::{Stores, names};
use serde::Serialize;

use super::StreamingError;
use super::inventory::InventoryOptions;

/// Record values longer than this are shown as a preview, not whole.
const MAX_SHOWN_BODY: usize = 4096;

/// What a record of the trace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    /// A record of the order topic: the order as produced (or replayed).
    Order,
    /// A record of an inventory topic: the inventory consumer's decision.
    InventoryEvent,
    /// A record of a dead-letter topic.
    DeadLetter,
}

/// How a record was recognised as the order's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// Its key is the order id.
    Key,
    /// Its JSON value's `order_id` is the order id (its key is not).
    Body,
}

/// A dead letter's death headers and replay state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// Its id for `dlq show` / `dlq replay` (`<partition>-<offset>`).
    pub id: String,
    /// Why it was set aside (`x-death-reason`).
    pub reason: String,
    /// Attempts made before (`x-attempts`).
    pub attempts: u32,
    /// Where it was consumed from: `<topic> <partition>/<offset>`.
    pub origin: Option<String>,
    /// Whether a replay marker exists for it in `<topic>.dlq.replayed`.
    pub replayed: bool,
}

/// One record of the order.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// What it is.
    pub kind: HopKind,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset there.
    pub offset: i64,
    /// The record's timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// The same, as RFC 3339 (UTC).
    pub time: Option<String>,
    /// The record key.
    pub key: Option<String>,
    /// How it was recognised.
    pub matched_by: MatchedBy,
    /// What happened, in words.
    pub what: String,
    /// An inventory event's status.
    pub status: Option<InventoryStatus>,
    /// The record's headers.
    pub headers: BTreeMap<String, String>,
    /// The record's value: its JSON, or (not JSON, or over 4 KiB) a string
    /// preview saying its length.
    pub body: serde_json::Value,
    /// A dead letter's reason, attempts, origin and replay.
    pub dead_letter: Option<DeadLetterView>,
}

/// How far one topic was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    /// The topic.
    pub topic: String,
    /// Whether it exists.
    pub exists: bool,
    /// Its partitions.
    pub partitions: usize,
    /// Records read: all it held up to the high watermarks at the start.
    pub records: u64,
    /// Of those, the order's.
    pub matched: usize,
}

impl ScanSummary {
    fn of(scan: &TopicScan) -> Self {
        Self {
            topic: scan.topic.clone(),
            exists: scan.exists,
            partitions: scan.partitions.len(),
            records: scan.scanned,
            matched: scan.kept.len(),
        }
    }
}

/// What the inventory ledger says about the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerView {
    /// Where the ledger is (a redb file, or Postgres without password).
    pub store: String,
    /// What a look found, when the store could be read.
    pub peek: Option<LedgerPeek>,
    /// Why the store could not be read.
    pub error: Option<String>,
}

/// Where [`Decision`] was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionSource {
    /// The ledger's record.
    Ledger,
    /// The order's inventory event (the ledger could not be read, or the
    /// order failed by injection and has no ledger record).
    InventoryEvent,
}

/// The inventory decision for the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `Success` or `Failure`.
    pub status: InventoryStatus,
    /// Why, in words.
    pub detail: String,
    /// Where it was read.
    pub source: DecisionSource,
}

/// The seeded failure draw of the order (`FAIL_SEED`, `FAIL_RATE` as the
/// trace was given them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InjectionDraw {
    /// The seed.
    pub seed: u64,
    /// The failure rate.
    pub fail_rate: f64,
    /// `fault::decide(seed, order_id, 1)`, in `0..1`.
    pub draw: f64,
    /// Whether the order fails by injection: `draw < fail_rate`.
    pub fails: bool,
}

/// Everything found about one order. `Display` is the human timeline;
/// serialize it for the JSON one.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The order.
    pub order_id: OrderId,
    /// Whether any record of it was found.
    pub found: bool,
    /// Its records, by record time (then topic order, partition, offset).
    pub hops: Vec<Hop>,
    /// The inventory decision, from the ledger when it could be read.
    pub decision: Option<Decision>,
    /// What the ledger says.
    pub ledger: LedgerView,
    /// The seeded failure draw.
    pub injection: InjectionDraw,
    /// How far each topic was read.
    pub scanned: Vec<ScanSummary>,
}

/// Finds `order` in every topic of Part C, the ledger of `config`, and the
/// failure draw of `inventory`'s seed and rate. See the [module docs](self).
///
/// # Errors
/// [`StreamingError::Transport`] when Kafka does not answer;
/// [`StreamingError::Invalid`] for a `fail_rate` outside `0..=1`. A ledger
/// that cannot be read is not an error: [`LedgerView::error`] says why.
pub async fn trace(
    transport: &KafkaTransport,
    config: &Config,
    inventory: &InventoryOptions,
    order: &OrderId,
) -> Result<Trace, StreamingError> {
    let faults = inventory.faults()?;
    let k = &config.kafka;
    let mut topics = vec![(HopKind::Order, k.order_topic.clone())];
    topics.push((HopKind::InventoryEvent, k.inventory_topic.clone()));
    if let Some(failed) = k.failed_topic.as_ref().filter(|f| **f != k.inventory_topic) {
        topics.push((HopKind::InventoryEvent, failed.clone()));
    }
    let dead: Vec<(HopKind, String)> = topics
        .iter()
        .map(|(_, t)| (HopKind::DeadLetter, KafkaTransport::dead_letter_topic(t)))
        .collect();
    topics.extend(dead);

    let scans = futures::future::try_join_all(
        topics
            .iter()
            .map(|(_, topic)| transport.scan_topic(topic, matcher(order))),
    )
    .await?;

    let mut hops = Vec::new();
    let mut scanned: Vec<ScanSummary> = scans.iter().map(ScanSummary::of).collect();
    for ((kind, topic), scan) in topics.iter().zip(scans) {
        let mut found: Vec<Hop> = scan
            .kept
            .into_iter()
            .map(|r| hop(*kind, topic, order, r))
            .collect();
        if *kind == HopKind::DeadLetter && !found.is_empty() {
            let markers = KafkaTransport::replay_marker_topic(topic);
            let ids: HashSet<String> = found
                .iter()
                .filter_map(|h| h.dead_letter.as_ref().map(|d| d.id.clone()))
                .collect();
            let marked = transport
                .scan_topic(&markers, move |key, _| {
                    key.and_then(|k| std::str::from_utf8(k).ok())
                        .is_some_and(|k| ids.contains(k))
                })
                .await?;
            scanned.push(ScanSummary::of(&marked));
            let replayed: HashSet<Option<String>> =
                marked.kept.into_iter().map(|r| r.message.key).collect();
            for d in found.iter_mut().filter_map(|h| h.dead_letter.as_mut()) {
                d.replayed = replayed.contains(&Some(d.id.clone()));
            }
        }
        hops.append(&mut found);
    }
    hops.sort_by(|a, b| {
        (a.timestamp_ms, a.kind, &a.topic, a.partition, a.offset).cmp(&(
            b.timestamp_ms,
            b.kind,
            &b.topic,
            b.partition,
            b.offset,
        ))
    });

    let ledger = ledger_view(config, order).await;
    let draw = decide(inventory.seed, order.as_str(), 1);
    let injection = InjectionDraw {
        seed: inventory.seed,
        fail_rate: faults.failure_rate(),
        draw,
        fails: draw < faults.failure_rate(),
    };
    let decision = decision(&ledger, &hops, &injection);
    Ok(Trace {
        order_id: order.clone(),
        found: !hops.is_empty(),
        hops,
        decision,
        ledger,
        injection,
        scanned,
    })
}

/// Keeps the records of `order`: by key, or by the `order_id` of a JSON
/// value.
fn matcher(order: &OrderId) -> impl FnMut(Option<&[u8]>, &[u8]) -> bool + Send + 'static {
    let id = order.as_str().to_owned();
    move |key, value| key == Some(id.as_bytes()) || order_id_is(value, &id)
}

/// Whether `value` is a JSON object whose `order_id` is `id`. Cheap for the
/// records that do not mention `id` at all (no JSON parse).
fn order_id_is(value: &[u8], id: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct OrderIdOnly {
        order_id: serde_json::Value,
    }
    !id.is_empty()
        && value.windows(id.len()).any(|w| w == id.as_bytes())
        && serde_json::from_slice::<OrderIdOnly>(value)
            .is_ok_and(|v| v.order_id.as_str() == Some(id))
}

/// The hop of record `r` of `topic`.
fn hop(kind: HopKind, topic: &str, order: &OrderId, r: ScannedRecord) -> Hop {
    let ScannedRecord {
        partition,
        offset,
        timestamp,
        message,
    } = r;
    let matched_by = if message.key.as_deref() == Some(order.as_str()) {
        MatchedBy::Key
    } else {
        MatchedBy::Body
    };
    let (what, status, dead_letter) = match kind {
        HopKind::Order => (order_summary(&message), None, None),
        HopKind::InventoryEvent => match message.decode::<InventoryEvent>() {
            Ok(e) => (
                format!(
                    "inventory decided {:?}: {} x {}",
                    e.status, e.qty, e.item_id
                ),
                Some(e.status),
                None,
            ),
            Err(e) => (
                format!(
                    "not an inventory event: {}",
                    bounded::reason(&e.to_string())
                ),
                None,
                None,
            ),
        },
        HopKind::DeadLetter => {
            let d = dead_letter_view(partition, offset, &message);
            let what = format!(
                "dead-lettered after {} attempt(s): {}",
                d.attempts, d.reason
            );
            (what, None, Some(d))
        }
    };
    Hop {
        kind,
        topic: topic.to_owned(),
        partition,
        offset,
        timestamp_ms: timestamp,
        time: timestamp.and_then(rfc3339),
        key: message.key.clone(),
        matched_by,
        what,
        status,
        body: shown_body(&message.body),
        headers: message.headers,
        dead_letter,
    }
}

fn order_summary(message: &Message) -> String {
    match message.decode::<OrderEvent>() {
        Ok(o) => format!("order placed: {} x {}", o.qty, o.item_id),
        Err(e) => format!("not an order (poison): {}", bounded::reason(&e.to_string())),
    }
}

fn dead_letter_view(partition: i32, offset: i64, message: &Message) -> DeadLetterView {
    let h = |name: &str| message.headers.get(name);
    let origin = h(ORIGIN_TOPIC_HEADER).map(|t| {
        format!(
            "{t} {}/{}",
            h(ORIGIN_PARTITION_HEADER).map_or("?", String::as_str),
            h(ORIGIN_OFFSET_HEADER).map_or("?", String::as_str)
        )
    });
    DeadLetterView {
        id: DeadLetterId { partition, offset }.to_string(),
        reason: h(headers::DEATH_REASON).cloned().unwrap_or_default(),
        attempts: h(headers::ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1),
        origin,
        replayed: false,
    }
}

/// The value as JSON when it is JSON and not too long to show, else a
/// preview with its length.
fn shown_body(body: &[u8]) -> serde_json::Value {
    if body.len() <= MAX_SHOWN_BODY
        && let Ok(v) = serde_json::from_slice(body)
    {
        return v;
    }
    let text = String::from_utf8_lossy(body);
    serde_json::Value::String(format!(
        "{} ({} bytes)",
        bounded::preview(&text),
        body.len()
    ))
}

fn rfc3339(ms: i64) -> Option<String> {
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(u64::try_from(ms).ok()?))?;
    Some(humantime::format_rfc3339_millis(at).to_string())
}

/// Where the ledger of Part C is, for humans (no password).
fn ledger_store(config: &Config) -> String {
    match config.database.redacted_url() {
        Some(url) => format!(
            "postgres {url} (schema {}), ledger {}",
            config.database.schema,
            names::STREAMING_LEDGER
        ),
        None => config
            .data_dir
            .join(names::file(names::STREAMING_LEDGER))
            .display()
            .to_string(),
    }
}

async fn ledger_view(config: &Config, order: &OrderId) -> LedgerView {
    let store = ledger_store(config);
    let peeked = match Stores::open(config).await {
        Ok(stores) => stores
            .peek_ledger(names::STREAMING_LEDGER, order)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match peeked {
        Ok(peek) => LedgerView {
            store,
            peek: Some(peek),
            error: None,
        },
        Err(error) => LedgerView {
            store,
            peek: None,
            error: Some(error),
        },
    }
}

/// The decision: the ledger's record when there is one, else the last
/// inventory event's status (explained by the draw when it fails by
/// injection).
fn decision(ledger: &LedgerView, hops: &[Hop], injection: &InjectionDraw) -> Option<Decision> {
    if let Some(LedgerPeek::Decided { record }) = &ledger.peek {
        let (status, detail) = match record.outcome {
            ReserveOutcome::Reserved { remaining } => (
                InventoryStatus::Success,
                format!(
                    "reserved {} x {} ({remaining} left)",
                    record.qty, record.item
                ),
            ),
            ReserveOutcome::Insufficient { available } => (
                InventoryStatus::Failure,
                format!(
                    "insufficient stock: {} x {} asked, {available} available",
                    record.qty, record.item
                ),
            ),
            ReserveOutcome::UnknownItem => (
                InventoryStatus::Failure,
                format!("unknown item {}", record.item),
            ),
            ReserveOutcome::Released => (
                InventoryStatus::Failure,
                "released: holds nothing".to_owned(),
            ),
        };
        return Some(Decision {
            status,
            detail,
            source: DecisionSource::Ledger,
        });
    }
    let event = hops
        .iter()
        .rev()
        .find(|h| h.kind == HopKind::InventoryEvent && h.status.is_some())?;
    let status = event.status?;
    let why = match (status, injection.fails) {
        (InventoryStatus::Failure, true) => "failed by injection (no ledger record)".to_owned(),
        (InventoryStatus::Failure, false) => "failed (the ledger refused it)".to_owned(),
        (InventoryStatus::Success, _) => "reserved".to_owned(),
    };
    Some(Decision {
        status,
        detail: format!(
            "{why}, {} {}/{}",
            event.topic, event.partition, event.offset
        ),
        source: DecisionSource::InventoryEvent,
    })
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records: u64 = self.scanned.iter().map(|s| s.records).sum();
        writeln!(
            f,
            "order {}: {} record(s) found; {records} record(s) read in {} topic(s), up to their ends at the start",
            self.order_id,
            self.hops.len(),
            self.scanned.len()
        )?;
        if !self.hops.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<24}  {:<28}  {:>12}  WHAT",
                "TIME (UTC)", "TOPIC", "PART/OFFSET"
            )?;
        }
        for h in &self.hops {
            let place = format!("{}/{}", h.partition, h.offset);
            let mut what = h.what.clone();
            if h.matched_by == MatchedBy::Body {
                what.push_str(&format!(" [key {:?}]", h.key.as_deref().unwrap_or("")));
            }
            if let Some(d) = &h.dead_letter {
                what.push_str(&format!(
                    "; id {}{}; {}",
                    d.id,
                    d.origin
                        .as_ref()
                        .map_or(String::new(), |o| format!(", from {o}")),
                    if d.replayed {
                        "replayed"
                    } else {
                        "pending (not replayed)"
                    }
                ));
            }
            writeln!(
                f,
                "{:<24}  {:<28}  {:>12}  {what}",
                h.time.as_deref().unwrap_or("-"),
                h.topic,
                place
            )?;
        }
        writeln!(f)?;
        match &self.decision {
            Some(d) => writeln!(
                f,
                "decision:  {:?} ({}): {}",
                d.status,
                match d.source {
                    DecisionSource::Ledger => "ledger",
                    DecisionSource::InventoryEvent => "inventory event",
                },
                d.detail
            )?,
            None => writeln!(f, "decision:  none found")?,
        }
        let ledger = match (&self.ledger.peek, &self.ledger.error) {
            (Some(LedgerPeek::Decided { .. }), _) => "holds the decision above".to_owned(),
            (Some(LedgerPeek::Undecided), _) => "no decision recorded for this order".to_owned(),
            (Some(LedgerPeek::Missing), _) => "no ledger there yet".to_owned(),
            (Some(LedgerPeek::InUse { .. }), _) => {
                "in use by the running inventory consumer, which lets no reader in; \
                 the decision above is the inventory event's"
                    .to_owned()
            }
            (Some(LedgerPeek::NeedsRepair), _) => {
                "not closed cleanly: its consumer repairs it on its next start".to_owned()
            }
            (None, Some(e)) => format!("cannot be read: {e}"),
            (None, None) => "not looked at".to_owned(),
        };
        writeln!(f, "ledger:    {} — {ledger}", self.ledger.store)?;
        let i = &self.injection;
        writeln!(
            f,
            "injection: FAIL_SEED={} FAIL_RATE={} draws {:.4}: {}",
            i.seed,
            i.fail_rate,
            i.draw,
            if i.fails {
                "fails by injection"
            } else {
                "not failed by injection"
            }
        )?;
        let topics: Vec<String> = self
            .scanned
            .iter()
            .map(|s| {
                if s.exists {
                    format!("{} {}/{}", s.topic, s.matched, s.records)
                } else {
                    format!("{} (none)", s.topic)
                }
            })
            .collect();
        writeln!(f, "read:      {} (matched/records)", topics.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_id_matches_as_the_order_id_field_only() {
        let v = br#"{"order_id":"order-7","item_id":"item-1","qty":1}"#;
        assert!(order_id_is(v, "order-7"));
        assert!(!order_id_is(v, "order-70"));
        assert!(!order_id_is(v, "item-1"));
        assert!(!order_id_is(br#"{"note":"order-7"}"#, "order-7"));
        assert!(!order_id_is(b"order-7, not json", "order-7"));
        let mut keep = matcher(&OrderId::parse("order-7").unwrap());
        assert!(keep(Some(b"order-7"), b"not json"));
        assert!(keep(None, v));
        assert!(!keep(Some(b"order-8"), b"{}"));
    }

    #[test]
    fn long_or_binary_values_are_previewed_with_their_length() {
        assert_eq!(shown_body(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        let long = format!(r#"{{"order_id":"{}"}}"#, "A".repeat(10_000));
        let shown = shown_body(long.as_bytes());
        let text = shown.as_str().unwrap();
        assert!(text.len() < 200, "{text}");
        assert!(text.ends_with(&format!("({} bytes)", long.len())), "{text}");
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            rfc3339(1_764_600_000_123).as_deref(),
            Some("2025-12-01T14:40:00.123Z")
        );
        assert_eq!(rfc3339(-1), None);
    }
}
