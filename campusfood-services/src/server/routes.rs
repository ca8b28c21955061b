//! The services over HTTP (axum), on the contract's paths. Each router is a
//! plain `axum::Router`, so an application can mount it inside its own; the
//! message routes are served by the services' [`RequestHandler`]s through
//! the transport's adapter, so HTTP and in-process calls run the same code.
//!
//! Every service also answers `GET /health` and `GET /openapi.json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use campusfood_core::OrderId;
use campusfood_core::config::HttpConfig;
use campusfood_core::fault::{FaultInjector, FaultUpdate};
use campusfood_core::transport::RequestHandler;
use campusfood_transport::http::{handler_route, json_error, read_json};

use crate::inventory::{InventoryService, ReleaseHandler};
use crate::notification::NotificationService;
use crate::openapi;
use crate::sync_rest::order::OrderService;

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
fn configure_route(faults: Arc<FaultInjector>, max_bytes: usize) -> axum::routing::MethodRouter {
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
                Err(e) => {
                    let field = match e {
                        campusfood_core::fault::FaultError::Delay(_) => "delay",
                        campusfood_core::fault::FaultError::FailureRate(_) => "failure_rate",
                    };
                    json_error(StatusCode::BAD_REQUEST, e.to_string(), Some(field))
                }
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

/// NotificationService: `POST /send`, `POST /configure`, `GET /health`,
/// `GET /openapi.json`.
pub fn notification_router(service: Arc<NotificationService>, max_body_bytes: usize) -> Router {
    let faults = service.faults().clone();
    Router::new()
        .route(
            HttpConfig::SEND_PATH,
            handler_route(service as Arc<dyn RequestHandler>, max_body_bytes),
        )
        .route("/configure", configure_route(faults, max_body_bytes))
        .route("/health", health_route("notification-service"))
        .route("/openapi.json", openapi_route(openapi::notification()))
}

/// OrderService (sync): `POST /order`, `GET /orders?limit=&after=` (in
/// pages), `GET /orders/{id}`, `GET /health`, `GET /openapi.json`.
pub fn order_router(service: Arc<OrderService>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            HttpConfig::ORDER_PATH,
            handler_route(service.clone() as Arc<dyn RequestHandler>, max_body_bytes),
        )
        .route("/orders", get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/health", health_route("order-service"))
        .route(
            "/openapi.json",
            openapi_route(openapi::order_with_pages(service.options().orders_page)),
        )
        .with_state(service)
}

/// `GET /orders` query: page size and the order the page starts after.
#[derive(Debug, serde::Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /orders?limit=&after=`: a JSON array of recent orders, oldest
/// first, `limit` of them (the configured default when absent, at most the
/// configured max); a `Link: <…>; rel="next"` header when more follow.
async fn list_orders(
    State(service): State<Arc<OrderService>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.body_text(), None),
    };
    let pages = service.options().orders_page;
    let limit = query.limit.unwrap_or(pages.default);
    if limit == 0 || limit > pages.max {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("limit must be from 1 to {}, got {limit}", pages.max),
            Some("limit"),
        );
    }
    let after = match query.after.as_deref().map(OrderId::parse).transpose() {
        Ok(after) => after,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string(), Some("after")),
    };
    let page = match service.orders_page(after.as_ref(), limit) {
        Ok(page) => page,
        Err(e) => return json_error(StatusCode::NOT_FOUND, e.to_string(), Some("after")),
    };
    let next = match page.orders.last() {
        Some(last) if page.more => Some(format!(
            "</orders?after={}&limit={limit}>; rel=\"next\"",
            last.order_id
        )),
        _ => None,
    };
    let mut response = axum::Json(page.orders).into_response();
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

async fn get_order(State(service): State<Arc<OrderService>>, Path(id): Path<String>) -> Response {
    match OrderId::parse(&id) {
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string(), Some("order_id")),
        Ok(id) => match service.order(&id) {
            Some(order) => axum::Json(order).into_response(),
            None => json_error(
                StatusCode::NOT_FOUND,
                format!("no recent order {id}"),
                Some("order_id"),
            ),
        },
    }
}
