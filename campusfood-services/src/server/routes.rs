//! The routes the services share, over HTTP (axum), on the contract's
//! paths. Each router is a plain `axum::Router`, so an application can
//! mount it inside its own; the message routes are served by the services'
//! [`RequestHandler`]s through the transport's adapter, so HTTP and
//! in-process calls run the same code.
//!
//! Every service answers `GET /health` and `GET /openapi.json`; both order
//! services answer `POST /order` and `GET /orders/{id}` alike
//! ([`order_routes`]).

use std::sync::Arc;

use std::future::Future;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use campusfood_core::OrderId;
use campusfood_core::config::HttpConfig;
use campusfood_core::fault::{FaultInjector, FaultUpdate};
use campusfood_core::transport::RequestHandler;
use campusfood_transport::http::{handler_route, json_error, read_json};

use crate::inventory::{InventoryService, ReleaseHandler};
use crate::openapi;
use crate::timeline::Timeline;

/// `GET /health`, answered as the original services answered it:
/// `200 {"status": "healthy", "service": <service>}`, so that the health
/// checks already pointed at them keep working.
pub fn health_route<S: Clone + Send + Sync + 'static>(
    service: &'static str,
) -> axum::routing::MethodRouter<S> {
    get(move || async move {
        axum::Json(openapi::Health {
            status: "healthy".to_owned(),
            service: service.to_owned(),
            reason: None,
        })
    })
}

/// Inventory's `GET /health`: the original's `200 {"status": "healthy",
/// "service": "inventory-service"}`, or 503 `{"status": "unhealthy", …,
/// "reason"}` while its ledger cannot write.
fn inventory_health<S: Clone + Send + Sync + 'static>(
    ledger: Arc<dyn campusfood_core::ledger::InventoryLedger>,
) -> axum::routing::MethodRouter<S> {
    get(move || {
        let ledger = ledger.clone();
        async move {
            match ledger.write_failure() {
                None => axum::Json(openapi::Health {
                    status: "healthy".to_owned(),
                    service: "inventory-service".to_owned(),
                    reason: None,
                })
                .into_response(),
                Some(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(openapi::Health {
                        status: "unhealthy".to_owned(),
                        service: "inventory-service".to_owned(),
                        reason: Some(format!("the ledger cannot write: {reason}")),
                    }),
                )
                    .into_response(),
            }
        }
    })
}

/// `GET /openapi.json`: `doc`, made once.
pub fn openapi_route<S: Clone + Send + Sync + 'static>(
    doc: serde_json::Value,
) -> axum::routing::MethodRouter<S> {
    let doc = Arc::new(doc);
    get(move || {
        let doc = doc.clone();
        async move { axum::Json((*doc).clone()) }
    })
}

/// `POST /configure`: a partial fault update, validated atomically.
pub(crate) fn configure_route(
    faults: Arc<FaultInjector>,
    max_bytes: usize,
) -> axum::routing::MethodRouter {
    post(move |request: Request| {
        let faults = faults.clone();
        async move {
            let message = match read_json(request, max_bytes).await {
                Ok(m) => m,
                Err(refusal) => return refusal.into_response(),
            };
            // An object only: serde would also take `[delay, rate, seed]`.
            let update = serde_json::from_slice::<serde_json::Value>(&message.body)
                .map_err(|e| e.to_string())
                .and_then(|v| match v {
                    serde_json::Value::Object(_) => {
                        serde_json::from_value::<FaultUpdate>(v).map_err(|e| e.to_string())
                    }
                    _ => Err("expected a JSON object".to_owned()),
                });
            let update = match update {
                Ok(u) => u,
                Err(e) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid configuration: {e}"),
                        None,
                    );
                }
            };
            match faults.configure(&update) {
                Ok(config) => {
                    tracing::info!(?config, "faults configured");
                    axum::Json(openapi::Configured {
                        status: "configured".to_owned(),
                        config: config.view(),
                    })
                    .into_response()
                }
                Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string(), Some(e.field())),
            }
        }
    })
}

/// InventoryService: `POST /reserve`, `POST /release`, `POST /configure`,
/// `GET /inventory`, `GET /health`, `GET /openapi.json`.
pub fn inventory_router(service: Arc<InventoryService>, max_body_bytes: usize) -> Router {
    let faults = service.faults().clone();
    let ledger = service.ledger().clone();
    Router::new()
        .route(
            HttpConfig::RESERVE_PATH,
            handler_route(service.clone() as Arc<dyn RequestHandler>, max_body_bytes),
        )
        .route(
            HttpConfig::RELEASE_PATH,
            handler_route(Arc::new(ReleaseHandler(service.clone())), max_body_bytes),
        )
        .route("/configure", configure_route(faults, max_body_bytes))
        .route(
            "/inventory",
            get(move || {
                let service = service.clone();
                async move {
                    match service.stock().await {
                        Ok(stock) => axum::Json(stock).into_response(),
                        Err(e) => {
                            json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
                        }
                    }
                }
            }),
        )
        .route("/health", inventory_health(ledger))
        .route("/openapi.json", openapi_route(openapi::inventory()))
}

/// An order service as `GET /orders/{id}` reads it.
pub trait OrderLookup: Send + Sync + 'static {
    /// What the route answers with.
    type Order: serde::Serialize + Send;
    /// How the 404 names a missing order: `"no order"`, or `"no recent
    /// order"` where only recent orders are kept.
    const MISSING: &'static str;
    /// The order `id`, if known; `Err` (a 503) when it cannot be looked up.
    fn lookup(
        &self,
        id: &OrderId,
    ) -> impl Future<Output = Result<Option<Self::Order>, String>> + Send;
    /// The order `id`'s timeline, if known; `Err` (a 503) when it cannot
    /// be looked up.
    fn timeline(
        &self,
        id: &OrderId,
    ) -> impl Future<Output = Result<Option<Timeline>, String>> + Send;
}

/// An order service's shared routes, its state still to be given (so a
/// service can add its own): `POST /order` (its [`RequestHandler`]),
/// `GET /orders/{id}`, `GET /health` answering as `name`, and
/// `GET /openapi.json` serving `doc`.
pub fn order_routes<S>(
    service: &Arc<S>,
    max_body_bytes: usize,
    name: &'static str,
    doc: serde_json::Value,
) -> Router<Arc<S>>
where
    S: OrderLookup + RequestHandler,
{
    Router::new()
        .route(
            HttpConfig::ORDER_PATH,
            handler_route(service.clone() as Arc<dyn RequestHandler>, max_body_bytes),
        )
        .route("/orders/{id}", get(get_order::<S>))
        .route("/orders/{id}/timeline", get(get_timeline::<S>))
        .route("/health", health_route(name))
        .route("/openapi.json", openapi_route(doc))
}

/// `GET /orders/{id}`: the order as JSON; 400 for a malformed id, 404 for
/// an unknown one, 503 when it cannot be looked up.
pub async fn get_order<S: OrderLookup>(
    State(service): State<Arc<S>>,
    Path(id): Path<String>,
) -> Response {
    match OrderId::parse(&id) {
        Ok(id) => found::<S, _>(&id, service.lookup(&id).await),
        Err(e) => not_an_order_id(&e),
    }
}

/// `GET /orders/{id}/timeline`: where the order has been
/// ([`Timeline`]); 400 for a malformed id, 404 for an unknown one, 503
/// when it cannot be looked up.
pub async fn get_timeline<S: OrderLookup>(
    State(service): State<Arc<S>>,
    Path(id): Path<String>,
) -> Response {
    match OrderId::parse(&id) {
        Ok(id) => found::<S, _>(&id, service.timeline(&id).await),
        Err(e) => not_an_order_id(&e),
    }
}

/// The 400 of a path's malformed order id.
fn not_an_order_id(e: &dyn std::fmt::Display) -> Response {
    json_error(StatusCode::BAD_REQUEST, e.to_string(), Some("order_id"))
}

/// A lookup's answer: 200 with what was found, 404, or 503.
fn found<S: OrderLookup, T: serde::Serialize>(
    id: &OrderId,
    looked_up: Result<Option<T>, String>,
) -> Response {
    match looked_up {
        Ok(Some(found)) => axum::Json(found).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            format!("{} {id}", S::MISSING),
            Some("order_id"),
        ),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e, None),
    }
}
