//! AsyncAPI 3.0 documents for the message-driven parts: Part B's RabbitMQ
//! topology ([`async_rabbitmq`], served by the async OrderService at
//! `GET /asyncapi.json`) and, through [`AsyncApiBuilder`], Part C's Kafka
//! topics (`campusfood_streaming_kafka::asyncapi`, printed by
//! `streaming_kafka -- asyncapi`).
//!
//! Payload schemas are generated from the wire types themselves
//! (`utoipa::ToSchema`, the same derives and hand-written newtype schemas
//! the OpenAPI documents use, see [`openapi`](crate::openapi)); they describe
//! each message as our services write it. What they *read* is more lenient
//! (see `campusfood_core::events`): the documents say so in each message's
//! description. Every exchange, queue, routing key and topic name comes
//! from the config types ([`RabbitConfig`], `KafkaConfig`), so a document
//! describes the deployment that serves it (a prefix, renamed topics).
//!
//! `tests/asyncapi` validates both documents, as the shipped binaries
//! produce them, with the AsyncAPI CLI (`asyncapi validate`).

use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use campusfood_core::codec::CONTENT_TYPE;
use campusfood_core::config::RabbitConfig;
use campusfood_core::events::{InventoryFailed, InventoryReserved, OrderNotified, OrderPlaced};
use campusfood_core::transport::headers;

/// The AsyncAPI version the documents follow.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// The version of the AMQP bindings used (`bindings.amqp`).
pub const AMQP_BINDING_VERSION: &str = "0.3.0";
/// The version of the Kafka bindings used (`bindings.kafka`).
pub const KAFKA_BINDING_VERSION: &str = "0.5.0";

/// What an operation does on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The service publishes to the channel.
    Send,
    /// The service consumes from the channel.
    Receive,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
        }
    }
}

/// An AsyncAPI 3.0 document being built: servers, channels, the operations
/// on them, and the messages and schemas they carry (as components, each
/// referenced with `$ref`).
///
/// ```
/// use campusfood_core::events::OrderEvent;
/// use campusfood_services::asyncapi::{Action, AsyncApiBuilder};
/// use serde_json::json;
///
/// let mut doc = AsyncApiBuilder::new();
/// doc.typed_message::<OrderEvent>("OrderEvent", json!({"summary": "an order"}));
/// doc.channel("orders", "order-events", "every order", &["OrderEvent"], None);
/// doc.operation("produceOrders", Action::Send, "orders", "produce orders", None);
/// let doc = doc.build("orders", "an example");
/// assert_eq!(doc["asyncapi"], "3.0.0");
/// assert_eq!(doc["components"]["schemas"]["OrderEvent"]["required"][0], "order_id");
/// ```
#[derive(Debug, Default)]
pub struct AsyncApiBuilder {
    servers: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    schemas: Map<String, Value>,
}

impl AsyncApiBuilder {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds server `id` (an AsyncAPI Server Object: `host`, `protocol`, …).
    pub fn server(&mut self, id: &str, server: Value) -> &mut Self {
        self.servers.insert(id.to_owned(), server);
        self
    }

    /// A `$ref` to `T`'s schema, which (with those it uses) joins the
    /// document's components.
    pub fn schema<T: ToSchema>(&mut self) -> Value {
        let name = T::name();
        if !self.schemas.contains_key(name.as_ref()) {
            let mut found: Vec<(String, RefOr<Schema>)> = vec![(name.to_string(), T::schema())];
            T::schemas(&mut found);
            for (n, schema) in found {
                let schema = serde_json::to_value(schema).unwrap_or_else(|_| json!({}));
                self.schemas.entry(n).or_insert(schema);
            }
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// Adds message `id` (an AsyncAPI Message Object without its payload)
    /// whose payload is the JSON of `T`; its `name` is `id` and its
    /// content type JSON unless `message` says otherwise.
    pub fn typed_message<T: ToSchema>(&mut self, id: &str, message: Value) -> &mut Self {
        let payload = self.schema::<T>();
        let mut message = object(message);
        message.insert("payload".to_owned(), payload);
        message
            .entry("contentType")
            .or_insert_with(|| CONTENT_TYPE.into());
        self.message(id, Value::Object(message))
    }

    /// Adds message `id` as given (a payload that is no Rust type: a dead
    /// letter's original bytes, a marker); its `name` is `id` unless
    /// `message` names it.
    pub fn message(&mut self, id: &str, message: Value) -> &mut Self {
        let mut message = object(message);
        message.entry("name").or_insert_with(|| id.into());
        self.messages.insert(id.to_owned(), Value::Object(message));
        self
    }

    /// Adds channel `id` at `address` (a routing key, queue or topic name),
    /// carrying the messages `messages` (ids given to
    /// [`typed_message`](Self::typed_message) or [`message`](Self::message)).
    pub fn channel(
        &mut self,
        id: &str,
        address: &str,
        description: &str,
        messages: &[&str],
        bindings: Option<Value>,
    ) -> &mut Self {
        let refs: Map<String, Value> = messages
            .iter()
            .map(|m| {
                (
                    (*m).to_owned(),
                    json!({ "$ref": format!("#/components/messages/{m}") }),
                )
            })
            .collect();
        let mut channel = json!({
            "address": address,
            "description": description,
            "messages": refs,
        });
        if let Some(b) = bindings {
            channel["bindings"] = b;
        }
        self.channels.insert(id.to_owned(), channel);
        self
    }

    /// Adds operation `id`: `action` on channel `channel` (added before),
    /// with every message the channel carries.
    pub fn operation(
        &mut self,
        id: &str,
        action: Action,
        channel: &str,
        summary: &str,
        bindings: Option<Value>,
    ) -> &mut Self {
        let messages: Vec<Value> = self
            .channels
            .get(channel)
            .and_then(|c| c["messages"].as_object())
            .map(|m| {
                m.keys()
                    .map(|k| json!({ "$ref": format!("#/channels/{channel}/messages/{k}") }))
                    .collect()
            })
            .unwrap_or_default();
        let mut op = json!({
            "action": action.as_str(),
            "channel": { "$ref": format!("#/channels/{channel}") },
            "summary": summary,
            "messages": messages,
        });
        if let Some(b) = bindings {
            op["bindings"] = b;
        }
        self.operations.insert(id.to_owned(), op);
        self
    }

    /// The document, titled `title`.
    pub fn build(self, title: &str, description: &str) -> Value {
        json!({
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": description,
            },
            "defaultContentType": CONTENT_TYPE,
            "servers": self.servers,
            "channels": self.channels,
            "operations": self.operations,
            "components": {
                "messages": self.messages,
                "schemas": self.schemas,
            },
        })
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The headers every Part B message carries (as AMQP string headers), and
/// those the transport adds on retries and dead letters; `required` must be
/// present.
fn amqp_headers(required: &[&str]) -> Value {
    let mut schema = json!({
        "type": "object",
        "properties": {
            headers::REQUEST_ID: {
                "type": "string",
                "description": "the request that placed the order, carried across every hop"
            },
            headers::ATTEMPTS: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "delivery attempts so far (on retried and dead-lettered messages)"
            },
            headers::DEATH_REASON: {
                "type": "string",
                "maxLength": 1024,
                "description": "why the message was dead-lettered (on dead letters only; at most 1 KiB)"
            },
            headers::CAUSE_ATTEMPT: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "on inventory.* and order.notified: which attempt of the delivery they answer produced them (the order's timeline shows the earlier ones as retried)"
            }
        }
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// `host[:port]` and the virtual host of an AMQP URL, without its
/// credentials.
fn amqp_host_and_vhost(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned();
    let path = tail
        .strip_prefix('/')
        .map(|p| p.split('?').next().unwrap_or_default())
        .unwrap_or_default();
    let vhost = if path.is_empty() {
        "/".to_owned()
    } else {
        path.replace("%2F", "/").replace("%2f", "/")
    };
    (host, vhost)
}

/// The Part B names the AsyncAPI document of [`async_rabbitmq`] describes,
/// beyond [`RabbitConfig`]: the consumer settings of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitDoc<'a> {
    /// The topology.
    pub config: &'a RabbitConfig,
    /// The group the OrderService follows outcomes and notifications in
    /// ([`AsyncOptions::status_group`](crate::async_rabbitmq::AsyncOptions::status_group)).
    pub status_group: &'a str,
    /// Attempts before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before a failed message is retried, in milliseconds.
    pub retry_delay_ms: u128,
}

/// One consumed queue of Part B, as the RabbitMQ transport declares it.
struct Consumed<'a> {
    /// Channel id stem (`reserve` → `reserveQueue`, `reserveRetry`, …).
    id: &'static str,
    queue: String,
    /// The route's channel (exchange and routing key) it is bound to.
    source: &'static str,
    message: &'static str,
    consumer: &'static str,
    summary: &'a str,
}

/// The AsyncAPI 3.0 document of Part B over RabbitMQ: the exchanges,
/// routing keys and queues of `doc.config` (the contract's, the status
/// group's, each consumed queue's retry and dead-letter queue), who
/// publishes and who consumes each, and the four events' schemas.
pub fn async_rabbitmq(doc: &RabbitDoc<'_>) -> Value {
    let c = doc.config;
    let mut d = AsyncApiBuilder::new();
    let (host, vhost) = amqp_host_and_vhost(&c.url);
    d.server(
        "rabbitmq",
        json!({
            "host": host,
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": format!("RabbitMQ, virtual host {vhost}"),
        }),
    );
    let lenient = "Read leniently: `created_at` also as epoch seconds, a missing or non-UUID `request_id` replaced, extra fields ignored (see campusfood_core::events).";
    let amqp_message = || json!({ "amqp": { "contentEncoding": "utf-8", "bindingVersion": AMQP_BINDING_VERSION } });
    for (id, summary, message) in [
        (
            "OrderPlaced",
            "An order was accepted and stored; published by the OrderService's outbox relay.",
            d.schema::<OrderPlaced>(),
        ),
        (
            "InventoryReserved",
            "Inventory reserved the order's stock.",
            d.schema::<InventoryReserved>(),
        ),
        (
            "InventoryFailed",
            "Inventory could not reserve the order's stock.",
            d.schema::<InventoryFailed>(),
        ),
        (
            "OrderNotified",
            "The customer was notified (not in the original contract).",
            d.schema::<OrderNotified>(),
        ),
    ] {
        d.message(
            id,
            json!({
                "title": id,
                "summary": summary,
                "description": lenient,
                "contentType": CONTENT_TYPE,
                "payload": message,
                "headers": amqp_headers(&[]),
                "correlationId": { "location": format!("$message.header#/{}", headers::REQUEST_ID) },
                "bindings": amqp_message(),
            }),
        );
    }
    d.message(
        "DeadLetter",
        json!({
            "title": "Dead letter",
            "summary": "A message set aside: its original body (which may be poison, not JSON at all), headers and key, with the reason",
            "payload": { "description": "the original message body, unchanged" },
            "headers": amqp_headers(&[headers::DEATH_REASON]),
            "bindings": amqp_message(),
        }),
    );

    let exchange = |name: &str| {
        json!({ "amqp": {
            "is": "routingKey",
            "exchange": { "name": name, "type": "direct", "durable": true, "autoDelete": false, "vhost": vhost },
            "bindingVersion": AMQP_BINDING_VERSION,
        }})
    };
    let queue = |name: &str| {
        json!({ "amqp": {
            "is": "queue",
            "queue": { "name": name, "durable": true, "exclusive": false, "autoDelete": false, "vhost": vhost },
            "bindingVersion": AMQP_BINDING_VERSION,
        }})
    };
    let publish = |key: &str| {
        Some(json!({ "amqp": {
            "cc": [key], "deliveryMode": 2, "mandatory": true, "bindingVersion": AMQP_BINDING_VERSION,
        }}))
    };
    let consume =
        || Some(json!({ "amqp": { "ack": true, "bindingVersion": AMQP_BINDING_VERSION } }));

    // The routing keys, each on its exchange.
    for (id, exchange_name, key, message, description) in [
        (
            "orderPlaced",
            &c.orders_exchange,
            &c.order_placed_key,
            "OrderPlaced",
            "orders placed",
        ),
        (
            "inventoryReserved",
            &c.inventory_exchange,
            &c.reserved_key,
            "InventoryReserved",
            "reservations",
        ),
        (
            "inventoryFailed",
            &c.inventory_exchange,
            &c.failed_key,
            "InventoryFailed",
            "refused reservations",
        ),
        (
            "orderNotified",
            &c.orders_exchange,
            &c.order_notified_key,
            "OrderNotified",
            "notifications sent",
        ),
    ] {
        d.channel(
            id,
            key,
            &format!("{description}: routing key `{key}` on the direct exchange `{exchange_name}`"),
            &[message],
            Some(exchange(exchange_name)),
        );
    }
    d.operation(
        "publishOrderPlaced",
        Action::Send,
        "orderPlaced",
        "OrderService: the outbox relay publishes each stored order (publisher confirms, persistent)",
        publish(&c.order_placed_key),
    );
    d.operation(
        "publishInventoryReserved",
        Action::Send,
        "inventoryReserved",
        "InventoryService: stock reserved",
        publish(&c.reserved_key),
    );
    d.operation(
        "publishInventoryFailed",
        Action::Send,
        "inventoryFailed",
        "InventoryService: stock not reserved (item_not_found | insufficient_stock)",
        publish(&c.failed_key),
    );
    d.operation(
        "publishOrderNotified",
        Action::Send,
        "orderNotified",
        "NotificationService: the customer was notified",
        publish(&c.order_notified_key),
    );

    // The queues consumed, each with its retry and dead-letter queue.
    let status = |key: &str| c.group_queue(doc.status_group, key);
    let consumed = [
        Consumed {
            id: "reserve",
            queue: c.reserve_queue.clone(),
            source: "orderPlaced",
            message: "OrderPlaced",
            consumer: "InventoryService",
            summary: "reserves each order, idempotently, and publishes the outcome",
        },
        Consumed {
            id: "notify",
            queue: c.notify_queue.clone(),
            source: "inventoryReserved",
            message: "InventoryReserved",
            consumer: "NotificationService",
            summary: "notifies the customer of each reservation, once",
        },
        Consumed {
            id: "statusReserved",
            queue: status(&c.reserved_key),
            source: "inventoryReserved",
            message: "InventoryReserved",
            consumer: "OrderService",
            summary: "moves the order's status to reserved",
        },
        Consumed {
            id: "statusFailed",
            queue: status(&c.failed_key),
            source: "inventoryFailed",
            message: "InventoryFailed",
            consumer: "OrderService",
            summary: "moves the order's status to failed",
        },
        Consumed {
            id: "statusNotified",
            queue: status(&c.order_notified_key),
            source: "orderNotified",
            message: "OrderNotified",
            consumer: "OrderService",
            summary: "moves the order's status to notified",
        },
    ];
    let dlx = &c.dead_letter_exchange;
    for q in &consumed {
        let bound = d
            .channels
            .get(q.source)
            .and_then(|s| s["address"].as_str())
            .unwrap_or_default()
            .to_owned();
        let main = format!("{}Queue", q.id);
        let extra = if q.queue == c.reserve_queue {
            format!(" Argument `x-dead-letter-exchange: {dlx}`.")
        } else {
            String::new()
        };
        d.channel(
            &main,
            &q.queue,
            &format!(
                "durable queue bound to `{bound}`; {} consumes it with manual acks.{extra}",
                q.consumer
            ),
            &[q.message],
            Some(queue(&q.queue)),
        );
        d.operation(
            &format!("consume{}", upper_first(q.id)),
            Action::Receive,
            &main,
            &format!("{}: {}", q.consumer, q.summary),
            consume(),
        );

        let retry = c.retry_queue(&q.queue);
        let retry_id = format!("{}Retry", q.id);
        d.channel(
            &retry_id,
            &retry,
            &format!(
                "retry queue of `{}`: a failed delivery waits here {} ms (per-message TTL, `x-attempts` counted), then expires back into `{}` through the default exchange; after {} attempts it is dead-lettered",
                q.queue, doc.retry_delay_ms, q.queue, doc.max_attempts
            ),
            &[q.message],
            Some(queue(&retry)),
        );
        d.operation(
            &format!("retry{}", upper_first(q.id)),
            Action::Send,
            &retry_id,
            &format!("{}: a delivery to retry later (published to the queue by name, through the default exchange)", q.consumer),
            publish(&retry),
        );

        let dead = c.dead_letter_queue_of(&q.queue);
        let key = if q.queue == c.reserve_queue {
            c.order_placed_key.clone()
        } else {
            dead.clone()
        };
        let dead_id = format!("{}DeadLetters", q.id);
        d.channel(
            &dead_id,
            &dead,
            &format!(
                "dead-letter queue of `{}`, bound to the direct exchange `{dlx}` with `{key}`: poison and messages that failed {} times, with `{}`; `async_rabbitmq -- dlq` lists and replays them",
                q.queue,
                doc.max_attempts,
                headers::DEATH_REASON
            ),
            &["DeadLetter"],
            Some(queue(&dead)),
        );
        d.operation(
            &format!("deadLetter{}", upper_first(q.id)),
            Action::Send,
            &dead_id,
            &format!(
                "{}: sets a message aside, published to `{dlx}` with routing key `{key}`",
                q.consumer
            ),
            publish(&key),
        );
    }
    d.operation(
        "readReserveDeadLetters",
        Action::Receive,
        "reserveDeadLetters",
        "`async_rabbitmq -- dlq`: list, show and replay dead-lettered orders (a replay publishes the original message to its exchange and routing key again)",
        None,
    );
    d.build(
        "campusfood Part B (RabbitMQ)",
        "The asynchronous order flow: OrderService → `OrderPlaced` → InventoryService → `InventoryReserved` | `InventoryFailed` → NotificationService → `OrderNotified`, and the OrderService following every outcome. Messages are persistent JSON (delivery mode 2, `content_type: application/json`), published with publisher confirms and acknowledged only after their effect is durable.",
    )
}

/// The `$ref`s in `doc` that point at nothing in it (a document's own
/// references only: `#/…`); empty for a document whose every reference
/// resolves.
pub fn unresolved_refs(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, root: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let found = r
                        .strip_prefix('#')
                        .and_then(|pointer| root.pointer(pointer));
                    if found.is_none() {
                        out.push(r.clone());
                    }
                }
                m.values().for_each(|v| walk(v, root, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, root, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, doc, &mut out);
    out
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

    use campusfood_core::events::{FailReason, ReserveOk, ReserveRequest};
    use campusfood_core::order::{Order, OrderStatus, PlaceOrder};

    use super::*;

    fn doc_of(config: &RabbitConfig, status_group: &str) -> Value {
        async_rabbitmq(&RabbitDoc {
            config,
            status_group,
            max_attempts: 5,
            retry_delay_ms: 1000,
        })
    }

    /// A validator of message `id`'s payload, resolving the document's
    /// component schemas.
    fn payload_validator(doc: &Value, id: &str) -> jsonschema::Validator {
        let mut root = doc.clone();
        root["$ref"] = doc["components"]["messages"][id]["payload"]["$ref"].clone();
        assert!(root["$ref"].is_string(), "{id} has a typed payload");
        jsonschema::validator_for(&root).unwrap()
    }

    fn addresses(doc: &Value) -> BTreeSet<String> {
        doc["channels"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["address"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_reference_resolves_and_every_channel_is_used() {
        let c = RabbitConfig::default();
        let doc = doc_of(&c, &c.status_group);
        assert_eq!(unresolved_refs(&doc), Vec::<String>::new());
        assert_eq!(doc["asyncapi"], ASYNCAPI_VERSION);
        let ops = doc["operations"].as_object().unwrap();
        for id in doc["channels"].as_object().unwrap().keys() {
            let pointer = format!("#/channels/{id}");
            assert!(
                ops.values()
                    .any(|o| o["channel"]["$ref"] == pointer.as_str()),
                "no operation on channel {id}"
            );
        }
        for op in ops.values() {
            assert!(!op["messages"].as_array().unwrap().is_empty(), "{op}");
        }
        // A reference that points nowhere is found.
        let mut broken = doc.clone();
        broken["components"]["schemas"]
            .as_object_mut()
            .unwrap()
            .remove("Quantity");
        assert_eq!(
            unresolved_refs(&broken),
            vec!["#/components/schemas/Quantity"; 2]
        );
    }

    /// Every exchange, routing key and queue is the configuration's, under
    /// a prefix and with another status group too.
    #[test]
    fn channels_are_the_configurations_names() {
        let c = RabbitConfig::with_prefix("t9");
        let group = "t9.watchers";
        let doc = doc_of(&c, group);
        let consumed = [
            c.reserve_queue.clone(),
            c.notify_queue.clone(),
            c.group_queue(group, &c.reserved_key),
            c.group_queue(group, &c.failed_key),
            c.group_queue(group, &c.order_notified_key),
        ];
        let mut expected: BTreeSet<String> = [
            &c.order_placed_key,
            &c.reserved_key,
            &c.failed_key,
            &c.order_notified_key,
        ]
        .into_iter()
        .cloned()
        .collect();
        for q in &consumed {
            expected.insert(q.clone());
            expected.insert(c.retry_queue(q));
            expected.insert(c.dead_letter_queue_of(q));
        }
        assert!(expected.contains("t9.orders.dlq"));
        assert_eq!(addresses(&doc), expected);

        let channels = doc["channels"].as_object().unwrap();
        let ops = doc["operations"].as_object().unwrap();
        let on = |address: &str, action: &str| {
            let (id, _) = channels
                .iter()
                .find(|(_, ch)| ch["address"] == address)
                .unwrap_or_else(|| panic!("no channel {address}"));
            let pointer = format!("#/channels/{id}");
            ops.values()
                .filter(|o| o["channel"]["$ref"] == pointer.as_str() && o["action"] == action)
                .count()
        };
        // Each routing key is published on its exchange …
        for (key, exchange) in [
            (&c.order_placed_key, &c.orders_exchange),
            (&c.reserved_key, &c.inventory_exchange),
            (&c.failed_key, &c.inventory_exchange),
            (&c.order_notified_key, &c.orders_exchange),
        ] {
            assert_eq!(on(key, "send"), 1, "{key}");
            let ch = channels.values().find(|ch| ch["address"] == key.as_str());
            let binding = &ch.unwrap()["bindings"]["amqp"];
            assert_eq!(binding["is"], "routingKey");
            assert_eq!(binding["exchange"]["name"], exchange.as_str());
            assert_eq!(binding["exchange"]["type"], "direct");
        }
        // … and each consumed queue is received from, retried and
        // dead-lettered.
        for q in &consumed {
            assert_eq!(on(q, "receive"), 1, "{q}");
            assert_eq!(on(&c.retry_queue(q), "send"), 1, "{q}");
            assert_eq!(on(&c.dead_letter_queue_of(q), "send"), 1, "{q}");
        }
        assert_eq!(on(&c.dead_letter_queue, "receive"), 1, "the dlq tool");
        let text = doc.to_string();
        assert!(text.contains(&c.dead_letter_exchange));
        assert!(
            !text.contains("\"orders\""),
            "unprefixed exchange in {text}"
        );
    }

    #[test]
    fn the_server_is_the_brokers_without_its_password() {
        let c = RabbitConfig {
            url: "amqp://app:s3cret@rabbit.internal:5671/%2Fshop?heartbeat=10".to_owned(),
            ..RabbitConfig::default()
        };
        let doc = doc_of(&c, &c.status_group);
        assert_eq!(doc["servers"]["rabbitmq"]["host"], "rabbit.internal:5671");
        assert!(!doc.to_string().contains("s3cret"));
        let vhost = &doc["channels"]["orderPlaced"]["bindings"]["amqp"]["exchange"]["vhost"];
        assert_eq!(vhost, "/shop");
        let plain = doc_of(&RabbitConfig::default(), "g");
        assert_eq!(plain["servers"]["rabbitmq"]["host"], "127.0.0.1:5672");
        assert_eq!(
            plain["channels"]["reserveQueue"]["bindings"]["amqp"]["queue"]["vhost"],
            "/"
        );
    }

    /// What the services write validates against the document's schemas,
    /// what the schemas require the readers require too, and poison is
    /// refused by both.
    #[test]
    fn payload_schemas_match_the_serde_shape() {
        let c = RabbitConfig::default();
        let doc = doc_of(&c, &c.status_group);
        let place = PlaceOrder::from_json(br#"{"item":"burger","qty":2}"#).unwrap();
        let placed = OrderPlaced::from(&Order::new(place, OrderStatus::Placed));
        let ok = ReserveOk::new(&ReserveRequest::for_placed(&placed), 98);
        let reserved = InventoryReserved::new(&placed, ok);
        let samples = [
            ("OrderPlaced", serde_json::to_value(&placed).unwrap()),
            (
                "InventoryReserved",
                serde_json::to_value(&reserved).unwrap(),
            ),
            (
                "InventoryFailed",
                serde_json::to_value(InventoryFailed::new(&placed, FailReason::ItemNotFound))
                    .unwrap(),
            ),
            (
                "OrderNotified",
                serde_json::to_value(OrderNotified::new(&reserved)).unwrap(),
            ),
        ];
        for (id, sample) in &samples {
            let v = payload_validator(&doc, id);
            if let Err(e) = v.validate(sample) {
                panic!("{id}: {sample} does not validate: {e}");
            }
            // Each field the schema requires is one the reader requires.
            let required = doc["components"]["schemas"][id]["required"]
                .as_array()
                .unwrap();
            assert!(!required.is_empty(), "{id}");
            for field in required {
                let mut without = sample.clone();
                without
                    .as_object_mut()
                    .unwrap()
                    .remove(field.as_str().unwrap());
                assert!(!v.is_valid(&without), "{id} without {field}");
                let read = match *id {
                    "OrderPlaced" => serde_json::from_value::<OrderPlaced>(without).is_ok(),
                    "InventoryReserved" => {
                        serde_json::from_value::<InventoryReserved>(without).is_ok()
                    }
                    "InventoryFailed" => serde_json::from_value::<InventoryFailed>(without).is_ok(),
                    _ => serde_json::from_value::<OrderNotified>(without).is_ok(),
                };
                assert!(!read, "{id} is read without {field}");
            }
            // And a message with only the required fields is read.
            let minimal: serde_json::Map<String, Value> = sample
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| required.iter().any(|r| r == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert!(v.is_valid(&Value::Object(minimal.clone())), "{id}");
            let minimal = Value::Object(minimal);
            let read = match *id {
                "OrderPlaced" => serde_json::from_value::<OrderPlaced>(minimal).is_ok(),
                "InventoryReserved" => serde_json::from_value::<InventoryReserved>(minimal).is_ok(),
                "InventoryFailed" => serde_json::from_value::<InventoryFailed>(minimal).is_ok(),
                _ => serde_json::from_value::<OrderNotified>(minimal).is_ok(),
            };
            assert!(read, "{id}: minimal message not read");
        }
        let v = payload_validator(&doc, "OrderPlaced");
        let placed = &samples[0].1;
        for (field, poison) in [
            ("qty", json!(0)),
            ("qty", json!(1.5)),
            ("qty", json!("2")),
            ("qty", json!(1_000_001)),
            ("item", json!("two words")),
            ("order_id", json!("")),
            ("order_id", json!("x".repeat(65))),
            ("order_id", json!("ORD-1\n")),
            ("status", json!("weird")),
        ] {
            let mut bad = placed.clone();
            bad[field] = poison;
            assert!(!v.is_valid(&bad), "{bad}");
            if field != "status" {
                // The reader refuses it too (`status` is not checked when read).
                assert!(serde_json::from_value::<OrderPlaced>(bad).is_err());
            }
        }
    }
}
