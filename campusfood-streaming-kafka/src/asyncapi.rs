//! The AsyncAPI 3.0 document of Part C: the order and inventory topics,
//! their dead-letter topics and the replay markers, who produces and who
//! consumes each (with the consumer groups), and the records' schemas,
//! generated from [`OrderEvent`] and [`InventoryEvent`] themselves (see
//! [`campusfood_services::asyncapi`]). Every topic and group name comes
//! from the [`KafkaConfig`] given, and the dead-letter topics from
//! [`dlq::targets`], so the document describes the deployment it is asked
//! about. `streaming_kafka -- asyncapi` prints it.

use campusfood_core::config::KafkaConfig;
use campusfood_core::events::{InventoryEvent, OrderEvent};
use campusfood_core::transport::headers;
use campusfood_kafka::{
    KafkaTransport, ORIGIN_OFFSET_HEADER, ORIGIN_PARTITION_HEADER, ORIGIN_TOPIC_HEADER,
};
use campusfood_services::asyncapi::{Action, AsyncApiBuilder, KAFKA_BINDING_VERSION};
use serde_json::{Value, json};

use crate::dlq;

/// Message ids of the document.
const ORDER_EVENT: &str = "OrderEvent";
const INVENTORY_EVENT: &str = "InventoryEvent";
const DEAD_LETTER: &str = "DeadLetter";
const REPLAY_MARKER: &str = "ReplayMarker";

/// The headers a dead letter carries beyond its original record's.
fn dead_letter_headers() -> Value {
    let text = |d: &str| json!({ "type": "string", "description": d });
    json!({
        "type": "object",
        "required": [headers::DEATH_REASON, ORIGIN_TOPIC_HEADER, ORIGIN_PARTITION_HEADER, ORIGIN_OFFSET_HEADER],
        "properties": {
            headers::DEATH_REASON: { "type": "string", "maxLength": 1024, "description": "why the record was dead-lettered (at most 1 KiB)" },
            headers::ATTEMPTS: text("delivery attempts made"),
            ORIGIN_TOPIC_HEADER: text("the topic the record was consumed from"),
            ORIGIN_PARTITION_HEADER: text("its partition there"),
            ORIGIN_OFFSET_HEADER: text("its offset there"),
        }
    })
}

/// The AsyncAPI 3.0 document of Part C as `config` names it.
pub fn document(config: &KafkaConfig) -> Value {
    let c = config;
    let mut d = AsyncApiBuilder::new();
    for (i, host) in c
        .bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .enumerate()
    {
        d.server(
            &format!("kafka{i}"),
            json!({ "host": host, "protocol": "kafka", "description": "a bootstrap server (BOOTSTRAP_SERVERS)" }),
        );
    }
    let key = json!({ "kafka": {
        "key": { "$ref": "#/components/schemas/OrderId" },
        "bindingVersion": KAFKA_BINDING_VERSION,
    }});
    d.typed_message::<OrderEvent>(
        ORDER_EVENT,
        json!({
            "title": "Order",
            "summary": "An order, keyed by its id (unique across runs).",
            "description": "`ts` is written as integer milliseconds since the Unix epoch; consumers also read float seconds (the original producer's) and RFC 3339 text, and `order-<i>` ids.",
            "bindings": key,
        }),
    );
    d.typed_message::<InventoryEvent>(
        INVENTORY_EVENT,
        json!({
            "title": "Inventory decision",
            "summary": "The order's fields plus the inventory decision, keyed by the order id.",
            "description": "`status` is written `Success` or `Failure` (read in any case); `ts` is the order's, unchanged, so a replay writes the same event.",
            "bindings": key,
        }),
    );
    d.message(
        DEAD_LETTER,
        json!({
            "title": "Dead letter",
            "summary": "A record set aside with its original key, headers and value (which may be poison, not JSON at all), plus why and where it came from.",
            "payload": { "description": "the original record's value, unchanged" },
            "headers": dead_letter_headers(),
        }),
    );
    d.message(
        REPLAY_MARKER,
        json!({
            "title": "Replay marker",
            "summary": "A dead letter was replayed: keyed by its id (`<partition>-<offset>` in the dead-letter topic), the value the topic it went back to.",
            "contentType": "text/plain",
            "payload": { "type": "string", "description": "the topic the dead letter was replayed to" },
            "bindings": { "kafka": {
                "key": { "type": "string", "pattern": "^[0-9]+-[0-9]+$" },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }},
        }),
    );

    let topic = |name: &str, partitions: Option<i32>| {
        let mut b = json!({ "topic": name, "bindingVersion": KAFKA_BINDING_VERSION });
        if let Some(p) = partitions {
            b["partitions"] = json!(p);
        }
        json!({ "kafka": b })
    };
    let group = |g: &str| {
        Some(json!({ "kafka": {
            "groupId": { "type": "string", "enum": [g] },
            "bindingVersion": KAFKA_BINDING_VERSION,
        }}))
    };
    d.channel(
        "orderEvents",
        &c.order_topic,
        &format!(
            "every order, {} partitions, keyed by order id (ORDER_TOPIC)",
            c.order_partitions
        ),
        &[ORDER_EVENT],
        Some(topic(&c.order_topic, Some(c.order_partitions))),
    );
    d.channel(
        "inventoryEvents",
        &c.inventory_topic,
        &format!(
            "every decision, {} partitions, keyed by order id (INVENTORY_TOPIC)",
            c.inventory_partitions
        ),
        &[INVENTORY_EVENT],
        Some(topic(&c.inventory_topic, Some(c.inventory_partitions))),
    );
    d.operation(
        "produceOrders",
        Action::Send,
        "orderEvents",
        "producer (`streaming_kafka -- producer`, MODE idle | once | burst): idempotent producer, one record per order",
        None,
    );
    d.operation(
        "decideOrders",
        Action::Receive,
        "orderEvents",
        "inventory consumer: reads read-committed and decides each order through the idempotent ledger; per batch, the decisions and the consumed offsets commit in one Kafka transaction (`--at-least-once`: publish, then commit)",
        group(&c.inventory_group),
    );
    d.operation(
        "publishDecisions",
        Action::Send,
        "inventoryEvents",
        "inventory consumer: the order plus `status: Success | Failure`, same key, in the transaction that commits the order's offset",
        None,
    );
    for (id, channel) in [
        ("countOrders", "orderEvents"),
        ("countDecisions", "inventoryEvents"),
    ] {
        d.operation(
            id,
            Action::Receive,
            channel,
            "analytics consumer: reads read-committed, drops duplicates, counts a rolling window and totals (`GET /metrics`)",
            group(&c.analytics_group),
        );
    }

    // Dead letters: of the order topic (malformed orders, by the inventory
    // consumer) and of the inventory topic (malformed decisions, by
    // analytics), as `streaming_kafka -- dlq` finds them.
    for target in dlq::targets(c, None).unwrap_or_default() {
        let (stem, by) = if target.topic == c.order_topic {
            ("orderEvents", "inventory consumer")
        } else {
            ("inventoryEvents", "analytics consumer")
        };
        let dead = format!("{stem}Dlq");
        d.channel(
            &dead,
            &target.dead_letters,
            &format!(
                "dead letters of `{}`: records that are not what the topic should hold, with the reason; `streaming_kafka -- dlq` lists, shows and replays them by `<partition>-<offset>`",
                target.topic
            ),
            &[DEAD_LETTER],
            Some(topic(&target.dead_letters, None)),
        );
        d.operation(
            &format!("deadLetter{}", upper_first(stem)),
            Action::Send,
            &dead,
            &format!("{by}: sets a malformed record aside, once"),
            None,
        );
        d.operation(
            &format!("read{}Dlq", upper_first(stem)),
            Action::Receive,
            &dead,
            "`streaming_kafka -- dlq`: reads without joining a group or committing; a replay publishes the original key, headers and value back to the topic, then writes a marker",
            None,
        );
        let markers = KafkaTransport::replay_marker_topic(&target.dead_letters);
        let marker_id = format!("{stem}DlqReplayed");
        d.channel(
            &marker_id,
            &markers,
            &format!(
                "replay markers of `{}`: a dead letter with a marker is no longer pending and cannot be replayed twice",
                target.dead_letters
            ),
            &[REPLAY_MARKER],
            Some(topic(&markers, Some(1))),
        );
        d.operation(
            &format!("mark{}Replayed", upper_first(stem)),
            Action::Send,
            &marker_id,
            "`streaming_kafka -- dlq replay`: once Kafka acknowledged the replayed record",
            None,
        );
    }
    d.build(
        "campusfood Part C (Kafka)",
        "Kafka streaming: the producer writes `OrderEvent`s to the order topic; the inventory consumer decides each exactly once and writes an `InventoryEvent` to the inventory topic; the analytics consumer reads both. Values are JSON, keys the order id.",
    )
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
