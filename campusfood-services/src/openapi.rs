//! OpenAPI 3.1 documents for the HTTP services, served at
//! `GET /openapi.json`. They describe the wire contract; the schemas name
//! the same fields as the serde types in `campusfood_core::events`.

use serde_json::{Value, json};

fn error_schema() -> Value {
    json!({"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "field": {"type": "string", "description": "the offending field, when the input is to blame"},
        "request_id": {"type": "string", "format": "uuid"}
    }})
}

fn doc(title: &str, paths: Value, schemas: Value) -> Value {
    let mut paths = paths;
    // Every server holds request bodies to its body read timeout.
    for item in paths
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        if let Some(responses) = item
            .pointer_mut("/post/responses")
            .and_then(Value::as_object_mut)
        {
            responses.insert(
                "408".to_owned(),
                resp(
                    "the body did not arrive within the server's body read timeout",
                    "Error",
                ),
            );
        }
    }
    let mut schemas = schemas;
    if let Some(map) = schemas.as_object_mut() {
        map.insert("Error".to_owned(), error_schema());
        map.insert("FaultConfig".to_owned(), json!({"type": "object", "properties": {
            "delay": {"type": "number", "minimum": 0, "maximum": 60, "description": "seconds; a new value applies at once to calls already waiting"},
            "failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "seed": {"type": "integer", "minimum": 0, "description": "makes failure draws reproducible"}
        }}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

fn resp(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn health() -> Value {
    json!({"get": {"summary": "Liveness", "responses": {"200": {"description": "up: {status: \"healthy\", service}"}}}})
}

fn configure() -> Value {
    json!({"post": {"summary": "Inject faults at runtime (any key may be omitted)",
        "requestBody": body("FaultConfig"),
        "responses": {"200": {"description": "configured: {status, config}"}, "400": resp("invalid value (delay outside 0..=60 s, failure_rate outside 0..=1); nothing changed", "Error")}}})
}

/// The OrderService (sync REST) document.
pub fn order() -> Value {
    doc(
        "campusfood OrderService (sync REST)",
        json!({
            "/order": {"post": {"summary": "Place an order: reserve at inventory, then notify, both blocking",
                "requestBody": body("PlaceOrder"),
                "responses": {
                    "201": resp("confirmed", "OrderConfirmed"),
                    "400": resp("body is not a JSON object", "Error"),
                    "404": resp("unknown item", "Error"),
                    "409": resp("insufficient stock; inventory's body under inventory_response", "Error"),
                    "413": resp("body too large", "Error"),
                    "415": resp("content-type is not application/json", "Error"),
                    "422": resp("a field is missing or invalid; `field` names it", "Error"),
                    "503": resp("inventory failed, is unreachable, the circuit is open, or too many orders are in flight", "Error"),
                    "504": resp("inventory did not answer within the downstream timeout", "Error")
                }}},
            "/orders": {"get": {"summary": "Recently confirmed orders (the last 10,000), oldest first, one page at a time",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 100, "maximum": 1000},
                        "description": "orders in the page (default and maximum are configurable)"},
                    {"name": "after", "in": "query", "schema": {"type": "string", "pattern": "^ORD-[0-9A-F]{12}$"},
                        "description": "start after this order (the last of the previous page)"}],
                "responses": {
                    "200": {"description": "array of orders; a `Link: </orders?after=…&limit=…>; rel=\"next\"` header when more follow",
                        "headers": {"Link": {"schema": {"type": "string"}}}},
                    "400": resp("limit out of range, or after is not an order id; `field` names it", "Error"),
                    "404": resp("after names no recent order", "Error")}}},
            "/orders/{id}": {"get": {"summary": "One recently confirmed order",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the order"}, "404": resp("not found", "Error")}}},
            "/health": health()
        }),
        json!({
            "PlaceOrder": {"type": "object", "required": ["item", "qty"], "properties": {
                "item": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 1_000_000}}},
            "OrderConfirmed": {"type": "object", "properties": {
                "order_id": {"type": "string", "pattern": "^ORD-[0-9A-F]{12}$"},
                "request_id": {"type": "string", "format": "uuid"},
                "item": {"type": "string"}, "qty": {"type": "integer"},
                "status": {"const": "confirmed"},
                "reservation_id": {"type": "string"},
                "elapsed_ms": {"type": "number"}}}
        }),
    )
}

/// The InventoryService document.
pub fn inventory() -> Value {
    doc(
        "campusfood InventoryService",
        json!({
            "/reserve": {"post": {"summary": "Reserve stock; idempotent per order_id",
                "requestBody": body("ReserveRequest"),
                "responses": {
                    "200": resp("reserved (or the first outcome of a repeated order_id)", "Reserved"),
                    "404": resp("unknown item", "Error"),
                    "409": resp("insufficient stock: {error, item, available, request_id}", "Error"),
                    "410": resp("the order was released (POST /release); it is not reserved again", "Error"),
                    "422": resp("invalid request", "Error"),
                    "500": resp("injected failure; nothing reserved", "Error"),
                    "503": resp("the ledger's store does not answer; nothing reserved", "Error")
                }}},
            "/release": {"post": {"summary": "Compensation: give back what an order's reservation holds, once; the order is never reserved afterwards (also when the release comes first). Idempotent; not subject to /configure faults",
                "requestBody": body("ReleaseRequest"),
                "responses": {
                    "200": resp("released, nothing_held or already_released", "Released"),
                    "422": resp("invalid request", "Error"),
                    "503": resp("the ledger's store does not answer; nothing released", "Error")
                }}},
            "/configure": configure(),
            "/inventory": {"get": {"summary": "Stock levels by item", "responses": {"200": {"description": "{item: qty}"}}}},
            "/health": health()
        }),
        json!({
            "ReserveRequest": {"type": "object", "required": ["order_id", "request_id", "item", "qty"], "properties": {
                "order_id": {"type": "string", "pattern": "^ORD-[0-9A-F]{12}$"},
                "request_id": {"type": "string", "format": "uuid"},
                "item": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}},
            "Reserved": {"type": "object", "properties": {
                "status": {"const": "reserved"}, "reservation_id": {"type": "string"},
                "item": {"type": "string"}, "qty": {"type": "integer"},
                "remaining": {"type": "integer"}, "request_id": {"type": "string", "format": "uuid"}}},
            "ReleaseRequest": {"type": "object", "required": ["order_id"], "properties": {
                "order_id": {"type": "string", "pattern": "^ORD-[0-9A-F]{12}$"},
                "request_id": {"type": "string", "format": "uuid"}}},
            "Released": {"type": "object", "required": ["status", "order_id"], "properties": {
                "status": {"enum": ["released", "nothing_held", "already_released"]},
                "order_id": {"type": "string"},
                "item": {"type": "string", "description": "when stock went back"},
                "qty": {"type": "integer", "description": "when stock went back"},
                "remaining": {"type": "integer", "description": "the item's stock right after, when stock went back"},
                "request_id": {"type": "string", "format": "uuid"}}}
        }),
    )
}

/// The NotificationService document.
pub fn notification() -> Value {
    doc(
        "campusfood NotificationService",
        json!({
            "/send": {"post": {"summary": "Send a confirmation",
                "requestBody": body("NotifyRequest"),
                "responses": {"200": {"description": "{status: sent, order_id, request_id}"},
                    "422": resp("invalid request", "Error"), "500": resp("injected failure", "Error")}}},
            "/configure": configure(),
            "/health": health()
        }),
        json!({
            "NotifyRequest": {"type": "object", "required": ["order_id", "request_id", "message"], "properties": {
                "order_id": {"type": "string"}, "request_id": {"type": "string", "format": "uuid"},
                "message": {"type": "string"}}}
        }),
    )
}

/// The asynchronous OrderService document.
pub fn async_order() -> Value {
    doc(
        "campusfood OrderService (async)",
        json!({
            "/order": {"post": {"summary": "Accept an order: stored with its OrderPlaced event in one durable transaction, published by a relay",
                "requestBody": body("PlaceOrder"),
                "responses": {
                    "201": resp("accepted", "OrderPlaced"),
                    "400": resp("body is not a JSON object", "Error"),
                    "413": resp("body too large", "Error"),
                    "415": resp("content-type is not application/json", "Error"),
                    "422": resp("a field is missing or invalid; `field` names it", "Error"),
                    "503": resp("the order could not be stored", "Error")
                }}},
            "/orders/{id}": {"get": {"summary": "An order and its status: placed → reserved | failed → notified",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the order"}, "404": resp("not found", "Error")}}},
            "/health": health()
        }),
        json!({
            "PlaceOrder": {"type": "object", "required": ["item", "qty"], "properties": {
                "item": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 1_000_000}}},
            "OrderPlaced": {"type": "object", "properties": {
                "order_id": {"type": "string", "pattern": "^ORD-[0-9A-F]{12}$"},
                "request_id": {"type": "string", "format": "uuid"},
                "item": {"type": "string"}, "qty": {"type": "integer"},
                "status": {"const": "placed"},
                "created_at": {"type": "string", "format": "date-time"}}}
        }),
    )
}
