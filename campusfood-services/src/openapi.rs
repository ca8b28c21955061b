//! OpenAPI 3.1 documents for the HTTP services, served at
//! `GET /openapi.json`, generated from the types the services read and
//! write (`utoipa::ToSchema`, derived on the wire types of
//! `campusfood_core::events` and `order`; the validated newtypes' schemas
//! say what their parsers accept). Each operation lists every status it can
//! answer, the HTTP layer's included: `400` (not JSON), `408` (body too
//! slow), `413` (body too large), `415` (not `application/json`) and `422`
//! (invalid) on every JSON body — see `campusfood_transport::http`.
//!
//! Request bodies accept extra properties (they are ignored), except
//! `/configure`'s, which refuses unknown keys.
//!
//! `tests/openapi` fuzzes every service against its document with
//! schemathesis (all checks).

use std::borrow::Cow;
use std::collections::BTreeMap;

use campusfood_core::config::PageLimits;
use campusfood_core::events::OrderPlaced;
use campusfood_core::events::{
    ErrorBody, NotifyOk, NotifyRequest, ReleaseReply, ReleaseRequest, ReserveInsufficient,
    ReserveOk, ReserveRequest,
};
use campusfood_core::fault::{FaultUpdate, FaultView};
use campusfood_core::order::PlaceOrder;
use campusfood_core::{Order, OrderId};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, InfoBuilder, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use crate::sync_rest::order::OrderConfirmed;
use crate::timeline::Timeline;

/// `GET /health`'s body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy`, or `unhealthy` (inventory, while its ledger cannot write).
    #[schema(examples("healthy"))]
    pub status: String,
    /// Which service answered.
    pub service: String,
    /// Why it is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /configure`'s `200` body: the faults now in force.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Configured {
    /// Always `configured`.
    #[schema(examples("configured"))]
    pub status: String,
    /// The settings now in force.
    pub config: FaultView,
}

/// One document being built: its paths and the schemas they use.
struct Doc {
    paths: PathsBuilder,
    schemas: Vec<(String, RefOr<Schema>)>,
}

/// One operation's parts, before it is added to a [`Doc`].
struct Op {
    method: HttpMethod,
    summary: &'static str,
    body: Option<RefOr<Schema>>,
    params: Vec<utoipa::openapi::path::Parameter>,
    responses: Vec<(&'static str, utoipa::openapi::Response)>,
}

impl Doc {
    fn new() -> Self {
        Self {
            paths: PathsBuilder::new(),
            schemas: Vec::new(),
        }
    }

    /// A `$ref` to `T`'s schema, which (with those it uses) joins the
    /// document's components.
    fn schema<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let name = T::name();
        if !self.schemas.iter().any(|(n, _)| *n == name) {
            self.schemas.push((name.to_string(), T::schema()));
            T::schemas(&mut self.schemas);
        }
        RefOr::Ref(Ref::from_schema_name(name))
    }

    fn json(&mut self, description: &str, schema: RefOr<Schema>) -> utoipa::openapi::Response {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build()
    }

    /// A JSON response with `T`'s schema.
    fn resp<T: ToSchema>(&mut self, description: &str) -> utoipa::openapi::Response {
        let schema = self.schema::<T>();
        self.json(description, schema)
    }

    /// An [`ErrorBody`] response.
    fn error(&mut self, description: &str) -> utoipa::openapi::Response {
        self.resp::<ErrorBody>(description)
    }

    /// A `POST` of a JSON `T`, with the HTTP layer's refusals.
    fn post<T: ToSchema>(&mut self, summary: &'static str) -> Op {
        let body = self.schema::<T>();
        let responses = vec![
            (
                "400",
                self.error("the body is not a JSON object (or could not be read)"),
            ),
            (
                "408",
                self.error("the body did not arrive within the server's body read timeout"),
            ),
            (
                "413",
                self.error("the body is larger than the server's limit"),
            ),
            ("415", self.error("content-type is not application/json")),
        ];
        Op {
            method: HttpMethod::Post,
            summary,
            body: Some(body),
            params: Vec::new(),
            responses,
        }
    }

    fn get(summary: &'static str) -> Op {
        Op {
            method: HttpMethod::Get,
            summary,
            body: None,
            params: Vec::new(),
            responses: Vec::new(),
        }
    }

    fn add(&mut self, path: &str, mut op: Op) {
        op.responses.sort_by(|a, b| a.0.cmp(b.0));
        let mut b = OperationBuilder::new().summary(Some(op.summary));
        if let Some(schema) = op.body {
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema)).build(),
                    )
                    .build(),
            ));
        }
        for p in op.params {
            b = b.parameter(p);
        }
        for (status, r) in op.responses {
            b = b.response(status, r);
        }
        let paths = std::mem::take(&mut self.paths);
        self.paths = paths.path(path, PathItem::new(op.method, b.build()));
    }

    fn health(&mut self, service: &'static str, may_be_unhealthy: bool) {
        let mut op = Self::get("Liveness");
        let ok = self.resp::<Health>(service);
        op.responses.push(("200", ok));
        if may_be_unhealthy {
            let down =
                self.resp::<Health>("unhealthy: the ledger cannot write (`reason` says why)");
            op.responses.push(("503", down));
        }
        self.add("/health", op);
    }

    fn configure(&mut self) {
        let mut op = self.post::<FaultUpdate>(
            "Inject faults at runtime (any key may be omitted; unknown keys are refused); a new delay applies at once to calls already waiting",
        );
        op.responses[0] = (
            "400",
            self.error("not JSON, an unknown key, or a value out of range (delay outside 0..=60 s, failure_rate outside 0..=1); nothing changed"),
        );
        let ok = self.resp::<Configured>("configured");
        op.responses.push(("200", ok));
        self.add("/configure", op);
    }

    /// `GET /orders/{id}`: one order; and `GET /orders/{id}/timeline`.
    fn order_by_id(&mut self, summary: &'static str, store_may_fail: bool) {
        self.by_order_id::<Order>("/orders/{id}", summary, "the order", store_may_fail);
        self.by_order_id::<Timeline>(
            "/orders/{id}/timeline",
            "Where the order has been: each hop with its time, service, outcome and attempt",
            "the order's timeline, oldest hop first",
            store_may_fail,
        );
    }

    /// `GET <path>` with an order id in it, answering a `T`.
    fn by_order_id<T: ToSchema>(
        &mut self,
        path: &str,
        summary: &'static str,
        found: &str,
        store_may_fail: bool,
    ) {
        let mut op = Self::get(summary);
        op.params.push(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(OrderId::schema()))
                .build(),
        );
        let ok = self.resp::<T>(found);
        let bad = self.error("not an order id");
        let missing = self.error("no such order");
        op.responses
            .extend([("200", ok), ("400", bad), ("404", missing)]);
        if store_may_fail {
            let down = self.error("the order store does not answer");
            op.responses.push(("503", down));
        }
        self.add(path, op);
    }

    fn build(self, title: &str) -> Value {
        let doc = OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title(title)
                    .version(env!("CARGO_PKG_VERSION"))
                    .build(),
            )
            .paths(self.paths.build())
            .components(Some(
                ComponentsBuilder::new()
                    .schemas_from_iter(self.schemas)
                    .build(),
            ))
            .build();
        serde_json::to_value(doc).unwrap_or_else(|e| json!({"error": e.to_string()}))
    }
}

/// The OrderService (sync REST) document, with the default page limits.
pub fn order() -> Value {
    order_with_pages(PageLimits::default())
}

/// The OrderService (sync REST) document, for a service with these page
/// limits on `GET /orders`.
pub fn order_with_pages(pages: PageLimits) -> Value {
    let mut d = Doc::new();
    let mut op =
        d.post::<PlaceOrder>("Place an order: reserve at inventory, then notify, both blocking");
    let responses = [
        ("201", d.resp::<OrderConfirmed>("confirmed")),
        ("404", d.error("unknown item")),
        ("409", d.error("insufficient stock; inventory's body under inventory_response")),
        ("422", d.error("a field is missing or invalid; `field` names it")),
        ("502", d.error("inventory refused the reservation with an unexpected status")),
        ("503", d.error("inventory failed, is unreachable, the circuit is open, or too many orders are in flight")),
        ("504", d.error("inventory did not answer within the downstream timeout")),
    ];
    op.responses.extend(responses);
    d.add("/order", op);

    let mut op =
        Doc::get("Recently confirmed orders (the last 10,000), oldest first, one page at a time");
    let limit =
        json!({"type": "integer", "minimum": 1, "maximum": pages.max, "default": pages.default});
    let after = order_id_param_schema();
    op.params.push(
        ParameterBuilder::new()
            .name("limit")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some("orders in the page"))
            .schema(Some(RefOr::T(
                serde_json::from_value(limit).unwrap_or_default(),
            )))
            .build(),
    );
    op.params.push(
        ParameterBuilder::new()
            .name("after")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "start after this order (the last of the previous page)",
            ))
            .schema(Some(after))
            .build(),
    );
    let list = d.schema::<RecentOrders>();
    let ok = ResponseBuilder::new()
        .description(
            "the orders; a `Link: </orders?after=…&limit=…>; rel=\"next\"` header when more follow",
        )
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(list)).build(),
        )
        .header(
            "Link",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("the next page, when more orders follow"))
                .build(),
        )
        .build();
    let responses = [
        ("200", ok),
        (
            "400",
            d.error("limit out of range, or after is not an order id; `field` names it"),
        ),
        ("404", d.error("after names no recent order")),
    ];
    op.responses.extend(responses);
    d.add("/orders", op);
    d.order_by_id("One recently confirmed order", false);
    d.health("{status: healthy, service: order-service}", false);
    d.build("campusfood OrderService (sync REST)")
}

/// A page of `GET /orders`.
struct RecentOrders;

impl PartialSchema for RecentOrders {
    fn schema() -> RefOr<Schema> {
        Vec::<Order>::schema()
    }
}

impl ToSchema for RecentOrders {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RecentOrders")
    }
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Order::name().into_owned(), Order::schema()));
        Order::schemas(schemas);
    }
}

fn order_id_param_schema() -> RefOr<Schema> {
    OrderId::schema()
}

/// Stock levels by item (`GET /inventory`).
struct Stock;

impl PartialSchema for Stock {
    fn schema() -> RefOr<Schema> {
        BTreeMap::<String, u64>::schema()
    }
}

impl ToSchema for Stock {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Stock")
    }
}

/// The InventoryService document (Part A, and Part B's inventory).
pub fn inventory() -> Value {
    let mut d = Doc::new();
    let mut op = d.post::<ReserveRequest>("Reserve stock; idempotent per order_id");
    let responses = [
        (
            "200",
            d.resp::<ReserveOk>("reserved (or the first outcome of a repeated order_id)"),
        ),
        ("404", d.error("unknown item")),
        ("409", d.resp::<ReserveInsufficient>("insufficient stock")),
        (
            "410",
            d.error("the order was released (POST /release); it is not reserved again"),
        ),
        ("422", d.error("a field is missing or invalid")),
        (
            "500",
            d.error("injected failure (POST /configure); nothing reserved"),
        ),
        (
            "503",
            d.error("the ledger's store does not answer; nothing reserved"),
        ),
    ];
    op.responses.extend(responses);
    d.add("/reserve", op);

    let mut op = d.post::<ReleaseRequest>(
        "Compensation: give back what an order's reservation holds, once; the order is never reserved afterwards (also when the release comes first). Idempotent; not subject to /configure faults",
    );
    let responses = [
        (
            "200",
            d.resp::<ReleaseReply>("released, nothing_held or already_released"),
        ),
        ("422", d.error("a field is missing or invalid")),
        (
            "503",
            d.error("the ledger's store does not answer; nothing released"),
        ),
    ];
    op.responses.extend(responses);
    d.add("/release", op);
    d.configure();

    let mut op = Doc::get("Stock levels by item");
    let ok = d.resp::<Stock>("{item: qty}");
    let failed = d.error("the ledger could not be read");
    op.responses.extend([("200", ok), ("500", failed)]);
    d.add("/inventory", op);
    d.health("{status: healthy, service: inventory-service}", true);
    d.build("campusfood InventoryService")
}

/// The NotificationService document.
pub fn notification() -> Value {
    let mut d = Doc::new();
    let mut op = d.post::<NotifyRequest>("Send a confirmation; idempotent per order_id");
    let responses = [
        ("200", d.resp::<NotifyOk>("sent (or sent before)")),
        ("422", d.error("a field is missing or invalid")),
        ("500", d.error("injected failure (POST /configure)")),
        (
            "503",
            d.error("the sent-notification store does not answer"),
        ),
    ];
    op.responses.extend(responses);
    d.add("/send", op);
    d.configure();
    d.health("{status: healthy, service: notification-service}", false);
    d.build("campusfood NotificationService")
}

/// The asynchronous OrderService document (Part B).
pub fn async_order() -> Value {
    let mut d = Doc::new();
    let mut op = d.post::<PlaceOrder>(
        "Accept an order: stored with its OrderPlaced event in one durable transaction, published by a relay",
    );
    let responses = [
        ("201", d.resp::<OrderPlaced>("accepted")),
        (
            "422",
            d.error("a field is missing or invalid; `field` names it"),
        ),
        ("503", d.error("the order could not be stored")),
    ];
    op.responses.extend(responses);
    d.add("/order", op);
    d.order_by_id(
        "An order and its status: placed → reserved | failed → notified",
        true,
    );
    d.health("{status: healthy, service: async-order-service}", false);
    d.build("campusfood OrderService (async)")
}

/// The analytics consumer's document (Part C): `GET /metrics` with the
/// body `T` (its `MetricsSnapshot`), `GET /health`.
pub fn analytics<T: ToSchema>() -> Value {
    let mut d = Doc::new();
    let mut op =
        Doc::get("The window's numbers, the totals since start, and the consumer group's lag");
    let ok = d.resp::<T>("the snapshot");
    op.responses.push(("200", ok));
    d.add("/metrics", op);
    d.health("{status: healthy, service: analytics-consumer}", false);
    d.build("campusfood analytics consumer (Kafka)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every JSON body's operation answers the HTTP layer's refusals.
    #[test]
    fn every_post_documents_the_http_layers_refusals() {
        for (name, doc) in [
            ("order", order()),
            ("inventory", inventory()),
            ("notification", notification()),
            ("async order", async_order()),
        ] {
            let paths = doc["paths"].as_object().unwrap();
            let posts: Vec<_> = paths.values().filter_map(|p| p.get("post")).collect();
            assert!(!posts.is_empty(), "{name}");
            for op in posts {
                for status in ["400", "408", "413", "415"] {
                    assert!(op["responses"].get(status).is_some(), "{name}: {status}");
                }
            }
            assert_eq!(doc["openapi"], "3.1.0");
        }
    }

    #[test]
    fn schemas_come_from_the_types() {
        let doc = order();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Item"]["maxLength"], 64);
        assert_eq!(schemas["Quantity"]["maximum"], 1_000_000);
        assert_eq!(
            schemas["PlaceOrder"]["required"],
            serde_json::json!(["item", "qty"])
        );
        assert_eq!(
            doc["paths"]["/orders"]["get"]["parameters"][0]["schema"]["maximum"],
            PageLimits::default().max
        );
        let inventory = inventory();
        assert_eq!(
            inventory["components"]["schemas"]["FaultUpdate"]["additionalProperties"],
            false
        );
    }
}
