//! HTTP request/reply: the client half as a [`Transport`] (one pooled,
//! reused [`reqwest::Client`], a per-call timeout), and the server half as
//! an axum adapter ([`handler_route`]) that serves any [`RequestHandler`].
//! Both halves speak the same JSON and carry the request id in the
//! `x-request-id` header, so a service written against the trait is served
//! and called the same way in process and over the network.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use campusfood_core::codec::CONTENT_TYPE;
use campusfood_core::config::HttpConfig;
use campusfood_core::events::ErrorBody;
use campusfood_core::transport::{
    Capabilities, Handler, Message, Reply, RequestHandler, Route, SubscribeOptions, Subscription,
    Transport, TransportError, headers,
};
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;

/// Request/reply over HTTP. Each [`Route`] maps to a URL; requests are
/// `POST`s of the message body with `content-type: application/json`.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    routes: Arc<HashMap<Route, String>>,
}

impl HttpTransport {
    /// A transport that sends each route's requests to its URL.
    pub fn new(routes: impl IntoIterator<Item = (Route, String)>) -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| TransportError::Unavailable {
                route: Route::new("*"),
                reason: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            routes: Arc::new(routes.into_iter().collect()),
        })
    }

    /// The OrderService's view of Part A: reserve and release at inventory,
    /// send at notification, at the URLs of `config`.
    pub fn sync_rest(config: &HttpConfig) -> Result<Self, TransportError> {
        Self::new([
            (
                Route::RESERVE,
                format!("{}{}", config.inventory_url, HttpConfig::RESERVE_PATH),
            ),
            (
                Route::RELEASE,
                format!("{}{}", config.inventory_url, HttpConfig::RELEASE_PATH),
            ),
            (
                Route::NOTIFY,
                format!("{}{}", config.notification_url, HttpConfig::SEND_PATH),
            ),
        ])
    }

    fn url(&self, route: &Route) -> Result<&str, TransportError> {
        self.routes
            .get(route)
            .map(String::as_str)
            .ok_or_else(|| TransportError::UnknownRoute(route.clone()))
    }

    async fn post(
        &self,
        route: &Route,
        message: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let mut req = self
            .client
            .post(self.url(route)?)
            .timeout(timeout)
            .header(header::CONTENT_TYPE, CONTENT_TYPE);
        for (name, value) in &message.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                TransportError::Timeout {
                    route: route.clone(),
                    after: timeout,
                }
            } else {
                TransportError::Unavailable {
                    route: route.clone(),
                    reason: error_chain(&e),
                }
            }
        };
        let resp = req.body(message.body).send().await.map_err(map_err)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(map_err)?;
        Ok(Reply { status, body })
    }
}

/// `e` and its sources, joined, so "error sending request" says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[async_trait]
impl Transport for HttpTransport {
    fn name(&self) -> &'static str {
        "http"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            request: true,
            publish: true,
            subscribe: false,
        }
    }

    async fn request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.post(route, request, timeout).await
    }

    /// A webhook-style publish: `POST` and require a 2xx answer. Nothing is
    /// stored on the way; callers that must not lose the message keep it in
    /// an outbox until this succeeds.
    async fn publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
        let reply = self.post(route, message, PUBLISH_TIMEOUT).await?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(TransportError::Unavailable {
                route: route.clone(),
                reason: format!("answered {}", reply.status),
            })
        }
    }

    async fn subscribe(
        &self,
        _route: &Route,
        _handler: Arc<dyn Handler>,
        _options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        Err(TransportError::Unsupported {
            transport: "http",
            operation: "subscribe (serve a RequestHandler with handler_route instead)",
        })
    }
}

/// A JSON error response: `{"error": message, "field": field}`.
pub fn json_error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Response {
    let body = ErrorBody {
        error: message.into(),
        field: field.map(str::to_owned),
        request_id: None,
    };
    (status, axum::Json(body)).into_response()
}

/// A [`Reply`] as an HTTP response with a JSON content type.
pub fn reply_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// Why a request body was refused before it reached a handler. Answers as
/// a JSON error with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 413, 415 or 400.
    pub status: StatusCode,
    /// What was wrong.
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        json_error(self.status, self.message, None)
    }
}

/// Reads a JSON request body, refusing a body that is not declared
/// `application/json` (415) or is larger than `max_bytes` (413). The
/// request id header, if any, becomes a message header.
pub async fn read_json(request: Request, max_bytes: usize) -> Result<Message, Refusal> {
    let (parts, body) = request.into_parts();
    check_json_content_type(&parts.headers)?;
    let body = Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Refusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("body larger than {max_bytes} bytes"),
                }
            } else {
                Refusal {
                    status: StatusCode::BAD_REQUEST,
                    message: format!("cannot read body: {e}"),
                }
            }
        })?
        .to_bytes();
    let mut message = Message {
        body,
        ..Default::default()
    };
    for name in [headers::REQUEST_ID, headers::ATTEMPTS] {
        if let Some(v) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            message.headers.insert(name.to_owned(), v.to_owned());
        }
    }
    Ok(message)
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(CONTENT_TYPE) {
        Ok(())
    } else {
        Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("content-type must be {CONTENT_TYPE}, got {ct:?}"),
        })
    }
}

/// A `POST` route serving `handler`: the body (JSON, at most `max_bytes`)
/// becomes the request message, the [`Reply`] becomes the response.
pub fn handler_route<S>(handler: Arc<dyn RequestHandler>, max_bytes: usize) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    post(move |request: Request| {
        let handler = handler.clone();
        async move {
            match read_json(request, max_bytes).await {
                Ok(message) => reply_response(handler.call(message).await),
                Err(refusal) => refusal.into_response(),
            }
        }
    })
}

/// Serves `router` on `listener` (with `TCP_NODELAY`, so small JSON replies
/// are not held back) until `shutdown` resolves, then finishes in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
