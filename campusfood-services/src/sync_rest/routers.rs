//! Part A's own routes: NotificationService's router and the sync
//! OrderService's, which adds paged `GET /orders` to the routes every order
//! service shares ([`order_routes`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use campusfood_core::OrderId;
use campusfood_core::config::HttpConfig;
use campusfood_core::order::Order;
use campusfood_core::transport::RequestHandler;
use campusfood_transport::http::{handler_route, json_error};

use super::order::OrderService;
use crate::notification::NotificationService;
use crate::openapi;
use crate::server::{OrderLookup, configure_route, health_route, openapi_route, order_routes};
use crate::timeline::Timeline;

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
    let doc = openapi::order_with_pages(service.options().orders_page);
    order_routes(&service, max_body_bytes, "order-service", doc)
        .route("/orders", get(list_orders))
        .with_state(service)
}

/// Only recent orders are kept, and they are always at hand.
impl OrderLookup for OrderService {
    type Order = Order;
    const MISSING: &'static str = "no recent order";

    async fn lookup(&self, id: &OrderId) -> Result<Option<Order>, String> {
        Ok(self.order(id))
    }

    async fn timeline(&self, id: &OrderId) -> Result<Option<Timeline>, String> {
        Ok(OrderService::timeline(self, id))
    }
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
