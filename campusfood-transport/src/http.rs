//! HTTP request/reply: the client half as a [`Transport`] (one pooled,
//! reused [`reqwest::Client`], a per-call timeout), and the server half as
//! an axum adapter ([`handler_route`]) that serves any [`RequestHandler`].
//! Both halves speak the same JSON and carry the request id in the
//! `x-request-id` header, so a service written against the trait is served
//! and called the same way in process and over the network.
//!
//! Both halves also carry the W3C trace context
//! ([`campusfood_core::telemetry`]): each call is an HTTP client span
//! (`POST /reserve`) whose `traceparent` goes with the request — continuing
//! the trace the message carries, else the current span's — and the
//! adapter serves each request in an HTTP server span (`POST /order`)
//! that continues the caller's `traceparent`, or starts a trace, and
//! answers with the `traceparent` the request belongs to.
//!
//! [`serve`] runs its own accept loop (hyper's HTTP/1 connection builder)
//! to hold every client to [`ServerLimits`]: a header read timeout, a
//! whole-body read deadline (408), a connection limit, and a stop deadline
//! after which the connections still open are closed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use campusfood_core::codec::CONTENT_TYPE;
use campusfood_core::config::{HttpConfig, ServerLimits};
use campusfood_core::events::ErrorBody;
use campusfood_core::telemetry;
use campusfood_core::transport::{
    Capabilities, Handler, Message, Reply, RequestHandler, Route, SubscribeOptions, Subscription,
    Transport, TransportError, headers,
};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{Instrument, Span, field};

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
        Self::with_idle_timeout(routes, Duration::from_secs(90))
    }

    /// Like [`new`](Self::new), keeping idle connections for `idle`.
    fn with_idle_timeout(
        routes: impl IntoIterator<Item = (Route, String)>,
        idle: Duration,
    ) -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(idle)
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
    /// send at notification, at the URLs of `config`. Idle connections are
    /// dropped at half the servers' header read timeout (which is also
    /// their idle timeout), so that — with the same limits on both sides —
    /// a request does not go out on a connection the server is closing.
    pub fn sync_rest(config: &HttpConfig) -> Result<Self, TransportError> {
        let idle = config.server.header_read_timeout / 2;
        Self::with_idle_timeout(
            [
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
            ],
            idle,
        )
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
        let url = self.url(route)?;
        let span = tracing::info_span!(
            "http_client",
            otel.name = %format_args!("POST {}", url_path(url)),
            otel.kind = "client",
            otel.status_code = field::Empty,
            http.request.method = "POST",
            url.full = url,
            http.response.status_code = field::Empty,
            campusfood.route = %route,
        );
        telemetry::continue_from(&span, &message.headers);
        let mut headers = message.headers;
        telemetry::inject(&span, &mut headers);
        let mut req = self
            .client
            .post(url)
            .timeout(timeout)
            .header(header::CONTENT_TYPE, CONTENT_TYPE);
        for (name, value) in &headers {
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
        let call = async {
            let resp = req.body(message.body).send().await.map_err(map_err)?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(map_err)?;
            Ok(Reply { status, body })
        };
        let reply = call.instrument(span.clone()).await;
        match &reply {
            Ok(r) => record_status(&span, r.status),
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        reply
    }
}

/// The path of `url` (`/reserve` of `http://127.0.0.1:5001/reserve`).
fn url_path(url: &str) -> &str {
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Records an HTTP status on a client or server span; 5xx is an error.
fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
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
            distinct_routes: true,
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
            } else if let Some(late) = find_cause::<BodyTimeout>(&*e) {
                Refusal {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: late.to_string(),
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
            let span = server_span(&request);
            let handled = async {
                match read_json(request, max_bytes).await {
                    Ok(message) => reply_response(handler.call(message).await),
                    Err(refusal) => refusal.into_response(),
                }
            };
            let mut response = handled.instrument(span.clone()).await;
            record_status(&span, response.status().as_u16());
            if let Some(tp) =
                telemetry::traceparent(&span).and_then(|tp| HeaderValue::from_str(&tp).ok())
            {
                response.headers_mut().insert(headers::TRACEPARENT, tp);
            }
            response
        }
    })
}

/// The HTTP server span `POST <route>` a request is served in: it
/// continues the trace of the request's `traceparent` (and `tracestate`),
/// or starts one.
fn server_span(request: &Request) -> Span {
    let path = request.uri().path();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(path, MatchedPath::as_str);
    let span = tracing::info_span!(
        "http_server",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %request.method(),
        http.route = route,
        url.path = path,
        http.response.status_code = field::Empty,
    );
    let trace: BTreeMap<String, String> = [headers::TRACEPARENT, headers::TRACESTATE]
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    telemetry::continue_from(&span, &trace);
    span
}

/// `e` or the first of its sources that is a `T`.
fn find_cause<'e, T: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<T>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// A request body that did not arrive within
/// [`ServerLimits::body_read_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that must arrive by a deadline. The timer is only made
/// when the body is not already there.
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, holding every
/// client to `limits`:
///
/// - at most [`max_connections`](ServerLimits::max_connections) at once:
///   the loop accepts only when a slot is free, so further clients wait in
///   the listen backlog;
/// - each connection must send a request's headers within
///   [`header_read_timeout`](ServerLimits::header_read_timeout) (also the
///   idle keep-alive timeout) and its body within
///   [`body_read_timeout`](ServerLimits::body_read_timeout) of the headers
///   (a handler reading it with [`read_json`] answers 408);
/// - on `shutdown` it stops accepting, lets requests in flight finish and
///   closes idle connections, and after
///   [`stop_timeout`](ServerLimits::stop_timeout) closes whatever is still
///   open, dropping those handlers.
///
/// HTTP/1.1 only, with `TCP_NODELAY` (small JSON replies are not held
/// back).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stopping, _) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(
            tcp,
            router.clone(),
            limits,
            stopping.subscribe(),
            slot,
        ));
    }
    drop(listener);
    stopping.send_replace(true);
    let drained = tokio::time::timeout(limits.stop_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            after = ?limits.stop_timeout,
            "stop deadline passed: closing the connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// A failed `accept`. A connection that failed before we took it is the
/// client's business; anything else (out of file descriptors) gets a pause
/// so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::debug!(error = %e, "connection failed before it was accepted");
        return;
    }
    const PAUSE: Duration = Duration::from_millis(100);
    tracing::warn!(error = %e, ?PAUSE, "cannot accept connections; pausing");
    tokio::time::sleep(PAUSE).await;
}

/// Serves one connection until it ends, or until `stopping` asks it to
/// finish (then the request in flight, if any, completes and it closes).
/// `_slot` is its place under the connection limit.
async fn connection(
    tcp: TcpStream,
    router: axum::Router,
    limits: ServerLimits,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let body_limit = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let request = request.map(|body| {
            Body::new(DeadlineBody {
                body,
                deadline: Instant::now() + body_limit,
                limit: body_limit,
                timer: None,
            })
        });
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let stop = stopping.wait_for(|s| *s);
    tokio::pin!(stop);
    let mut asked = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut stop, if !asked => {
                asked = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use campusfood_core::task::BackgroundTask;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, mpsc};

    use super::*;

    #[test]
    fn client_spans_are_named_by_the_urls_path() {
        assert_eq!(url_path("http://127.0.0.1:5001/reserve"), "/reserve");
        assert_eq!(url_path("https://inventory/api/reserve"), "/api/reserve");
        assert_eq!(url_path("http://127.0.0.1:5001"), "/");
    }

    /// A server on a free port.
    struct Running {
        addr: SocketAddr,
        task: BackgroundTask<std::io::Result<()>>,
    }

    async fn start(limits: ServerLimits, router: axum::Router) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task =
            BackgroundTask::spawn(|stop| serve(listener, router, limits, stop.into_stopped()));
        Running { addr, task }
    }

    /// `/echo` reads a JSON body; `/health` answers at once.
    fn echo() -> axum::Router {
        axum::Router::new()
            .route(
                "/echo",
                post(|request: Request| async move {
                    match read_json(request, 1024).await {
                        Ok(m) => reply_response(Reply {
                            status: 200,
                            body: m.body,
                        }),
                        Err(refusal) => refusal.into_response(),
                    }
                }),
            )
            .route("/health", get(|| async { "ok" }))
    }

    /// Reads until the end of a response's head (or of the stream).
    async fn read_head(tcp: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    const DEADLINE: Duration = Duration::from_secs(10);
    const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        };
        let server = start(limits, echo()).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "the half-sent request still holds its connection"
        );
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
        let limits = ServerLimits {
            body_read_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        };
        let server = start(limits, echo()).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
        )
        .await
        .unwrap();
        let head = tokio::time::timeout(DEADLINE, read_head(&mut tcp))
            .await
            .expect("no answer to a body that stopped coming");
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        let limits = ServerLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(60),
            ..ServerLimits::default()
        };
        let server = start(limits, echo()).await;
        let first = TcpStream::connect(server.addr).await.unwrap();
        let _second = TcpStream::connect(server.addr).await.unwrap();
        let mut third = TcpStream::connect(server.addr).await.unwrap();
        third.write_all(GET_HEALTH).await.unwrap();
        // Not a speed check: a third connection is not served at all while
        // two are open, however long we looked.
        let early = tokio::time::timeout(Duration::from_millis(300), read_head(&mut third)).await;
        assert!(early.is_err(), "served a third connection: {early:?}");
        drop(first);
        let head = tokio::time::timeout(DEADLINE, read_head(&mut third))
            .await
            .expect("a freed slot was not given to the waiting connection");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    #[tokio::test]
    async fn stopping_finishes_what_it_can_and_closes_the_rest_at_the_deadline() {
        let (entered, mut handlers) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let router = {
            let (e1, e2, gate) = (entered.clone(), entered, gate.clone());
            axum::Router::new()
                .route(
                    "/slow",
                    get(move || async move {
                        let _ = e1.send("slow");
                        gate.notified().await;
                        "done"
                    }),
                )
                .route(
                    "/stuck",
                    get(move || async move {
                        let _ = e2.send("stuck");
                        std::future::pending::<()>().await;
                    }),
                )
        };
        let limits = ServerLimits {
            stop_timeout: Duration::from_millis(500),
            ..ServerLimits::default()
        };
        let server = start(limits, router).await;
        let mut slow = TcpStream::connect(server.addr).await.unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut stuck = TcpStream::connect(server.addr).await.unwrap();
        stuck
            .write_all(b"GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..2 {
            tokio::time::timeout(DEADLINE, handlers.recv())
                .await
                .unwrap()
                .unwrap();
        }
        server.task.ask_stop();
        // A request in flight still gets its answer…
        gate.notify_one();
        let head = tokio::time::timeout(DEADLINE, read_head(&mut slow))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // …and one that never ends does not hold the stop forever.
        let stopped = server.task.stop_within(DEADLINE).await;
        assert!(
            matches!(stopped, Some(Ok(Ok(())))),
            "stop waited on a stuck request"
        );
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, stuck.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the stuck connection was left open");
    }
}
