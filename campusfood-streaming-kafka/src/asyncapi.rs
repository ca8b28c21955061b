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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use campusfood_core::OrderId;
    use campusfood_core::events::InventoryStatus;
    use campusfood_core::order::{Item, Quantity};
    use campusfood_services::asyncapi::unresolved_refs;

    use super::*;

    fn payload_validator(doc: &Value, id: &str) -> jsonschema::Validator {
        let mut root = doc.clone();
        root["$ref"] = doc["components"]["messages"][id]["payload"]["$ref"].clone();
        assert!(root["$ref"].is_string(), "{id} has a typed payload");
        jsonschema::validator_for(&root).unwrap()
    }

    #[test]
    fn topics_and_groups_are_the_configurations() {
        let c = KafkaConfig {
            bootstrap_servers: "k1:9092, k2:9093".to_owned(),
            ..KafkaConfig::default()
        }
        .with_suffix("t7");
        let doc = document(&c);
        assert_eq!(unresolved_refs(&doc), Vec::<String>::new());
        let channels = doc["channels"].as_object().unwrap();
        let addresses: BTreeSet<&str> = channels
            .values()
            .map(|ch| ch["address"].as_str().unwrap())
            .collect();
        let mut expected = BTreeSet::new();
        for topic in [&c.order_topic, &c.inventory_topic] {
            let dlq = KafkaTransport::dead_letter_topic(topic);
            expected.insert(KafkaTransport::replay_marker_topic(&dlq));
            expected.insert(dlq);
            expected.insert(topic.clone());
        }
        assert!(expected.contains("order-events-t7.dlq.replayed"));
        assert_eq!(
            addresses,
            expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
        );
        for ch in channels.values() {
            assert_eq!(ch["bindings"]["kafka"]["topic"], ch["address"]);
        }
        assert_eq!(
            channels["orderEvents"]["bindings"]["kafka"]["partitions"],
            c.order_partitions
        );
        assert_eq!(
            channels["inventoryEvents"]["bindings"]["kafka"]["partitions"],
            c.inventory_partitions
        );

        let ops = doc["operations"].as_object().unwrap();
        for id in channels.keys() {
            let pointer = format!("#/channels/{id}");
            assert!(
                ops.values()
                    .any(|o| o["channel"]["$ref"] == pointer.as_str()),
                "no operation on {id}"
            );
        }
        // Who reads what, in which group: as `offsets` resets them.
        let groups = |channel: &str| -> BTreeSet<String> {
            let pointer = format!("#/channels/{channel}");
            ops.values()
                .filter(|o| o["channel"]["$ref"] == pointer.as_str() && o["action"] == "receive")
                .filter_map(|o| o["bindings"]["kafka"]["groupId"]["enum"][0].as_str())
                .map(str::to_owned)
                .collect()
        };
        for (channel, topic) in [
            ("orderEvents", &c.order_topic),
            ("inventoryEvents", &c.inventory_topic),
        ] {
            let expected: BTreeSet<String> = [&c.inventory_group, &c.analytics_group]
                .into_iter()
                .filter(|g| crate::offsets::topics_for_group(&c, g).contains(topic))
                .cloned()
                .collect();
            assert_eq!(groups(channel), expected, "{channel}");
        }
        let servers = doc["servers"].as_object().unwrap();
        let hosts: Vec<&str> = servers
            .values()
            .map(|s| s["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["k1:9092", "k2:9093"]);
    }

    /// What the producer and the inventory consumer write validates, what
    /// the schemas require the readers require, and poison is refused by
    /// both.
    #[test]
    fn payload_schemas_match_the_serde_shape() {
        let doc = document(&KafkaConfig::default());
        let order = OrderEvent {
            order_id: OrderId::parse("ORD-00000000ABCD").unwrap(),
            item_id: Item::parse("item-7").unwrap(),
            qty: Quantity::new(3).unwrap(),
            ts: 1_764_600_000_123,
        };
        let decided = InventoryEvent::for_order(&order, InventoryStatus::Failure);
        for (id, sample) in [
            (ORDER_EVENT, serde_json::to_value(&order).unwrap()),
            (INVENTORY_EVENT, serde_json::to_value(&decided).unwrap()),
        ] {
            let v = payload_validator(&doc, id);
            if let Err(e) = v.validate(&sample) {
                panic!("{id}: {sample} does not validate: {e}");
            }
            let required = doc["components"]["schemas"][id]["required"]
                .as_array()
                .unwrap();
            for field in required {
                let mut without = sample.clone();
                without
                    .as_object_mut()
                    .unwrap()
                    .remove(field.as_str().unwrap());
                assert!(!v.is_valid(&without), "{id} without {field}");
                let read = if id == ORDER_EVENT {
                    serde_json::from_value::<OrderEvent>(without).is_ok()
                } else {
                    serde_json::from_value::<InventoryEvent>(without).is_ok()
                };
                assert!(!read, "{id} is read without {field}");
            }
            for (field, poison) in [
                ("qty", json!(0)),
                ("qty", json!("3")),
                ("item_id", json!("")),
                ("order_id", json!("has space")),
            ] {
                let mut bad = sample.clone();
                bad[field] = poison;
                assert!(!v.is_valid(&bad), "{bad}");
                let read = if id == ORDER_EVENT {
                    serde_json::from_value::<OrderEvent>(bad).is_ok()
                } else {
                    serde_json::from_value::<InventoryEvent>(bad).is_ok()
                };
                assert!(!read, "{id}: poison read");
            }
        }
        let v = payload_validator(&doc, INVENTORY_EVENT);
        let mut maybe = serde_json::to_value(&decided).unwrap();
        maybe["status"] = json!("Maybe");
        assert!(!v.is_valid(&maybe));
        // The key is the order id's schema.
        assert_eq!(
            doc["components"]["messages"][ORDER_EVENT]["bindings"]["kafka"]["key"]["$ref"],
            "#/components/schemas/OrderId"
        );
    }
}
