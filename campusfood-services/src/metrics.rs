//! Metrics in Prometheus text, with the one vocabulary of
//! [`campusfood_core::metric`]: a [`Metered`] decorator counts what passes
//! through a [`Transport`] — requests, publishes, deliveries by
//! disposition, redeliveries, dead letters, handler durations —
//! [`time_handlers`] times every HTTP handler of a router, and
//! [`sample_every`] keeps gauges (queue depth, outbox size) current from a
//! background task, so that a scrape only renders. Rates are what
//! Prometheus derives from the counters
//! (`rate(campusfood_deliveries_total[1m])`).
//!
//! The counters go to whatever `metrics` recorder the process installed;
//! [`install_prometheus`] installs the Prometheus one (once per process:
//! later calls answer the same handle) and [`metrics_route`] renders it.
//! Without a recorder (a library embedding that does not care), counting
//! costs next to nothing.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::metric;
use campusfood_core::transport::{
    Backlog, Delivery, Disposition, ForwardTransport, Handler, Message, Reply, Route,
    SubscribeOptions, Subscription, Transport, TransportError,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio::time::Instant;

/// The Prometheus recorder could not be installed (another recorder is).
#[derive(Debug, Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// The buckets of [`metric::HANDLER_DURATION`], in seconds: 100 µs to 10 s
/// (Part A's downstream timeout is 5 s).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often the installed recorder's histograms are drained (upkeep).
const UPKEEP: Duration = Duration::from_secs(5);

static INSTALLED: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder, with
/// [`metric::HANDLER_DURATION`] as a histogram of [`DURATION_BUCKETS`] and
/// the help text of every metric, and a thread that runs its upkeep. A
/// process has one recorder: every call answers the handle of the first
/// (so tests that start several observed services in one process share
/// it).
///
/// # Errors
/// [`MetricsError`] when another recorder was installed first.
pub fn install_prometheus() -> Result<PrometheusHandle, MetricsError> {
    INSTALLED
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(metric::HANDLER_DURATION.to_owned()),
                    &DURATION_BUCKETS,
                )
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| e.to_string())?;
            metric::describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("prometheus-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no upkeep thread: histograms drain only when scraped");
            }
            Ok(handle)
        })
        .clone()
        .map_err(MetricsError)
}

/// `GET /metrics` (or any path): the Prometheus text exposition of
/// `handle`.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn metrics_route<S: Clone + Send + Sync + 'static>(
    handle: PrometheusHandle,
) -> axum::routing::MethodRouter<S> {
    axum::routing::get(move || {
        let handle = handle.clone();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                handle.render(),
            )
        }
    })
}

/// `router` with `GET /metrics` rendering `handle`, when given.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn with_metrics(router: axum::Router, handle: Option<&PrometheusHandle>) -> axum::Router {
    match handle {
        Some(h) => router.route(
            campusfood_core::config::HttpConfig::METRICS_PATH,
            metrics_route(h.clone()),
        ),
        None => router,
    }
}

/// `router` with every handler timed into [`metric::HANDLER_DURATION`],
/// labelled `METHOD /matched/path` (`POST /order`, `GET /orders/{id}`;
/// `unmatched` for requests no route matched). [`crate::server::Server`]
/// applies it to every service.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn time_handlers(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(timed))
}

#[cfg(feature = "http")]
async fn timed(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let handler = match request.extensions().get::<axum::extract::MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_owned(),
    };
    let start = Instant::now();
    let response = next.run(request).await;
    metric::handler_duration(handler, start.elapsed());
    response
}

/// A [`Transport`] that counts what passes through `inner`.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Transport>,
}

impl Metered {
    /// Counts the traffic of `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl ForwardTransport for Metered {
    fn inner(&self) -> &dyn Transport {
        &*self.inner
    }

    async fn forward_request(
        &self,
        route: &Route,
        request: Message,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let result = self.inner.request(route, request, timeout).await;
        let status = match &result {
            Ok(r) => r.status.to_string(),
            Err(TransportError::Timeout { .. }) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metric::request(route.as_str(), status);
        result
    }

    async fn forward_publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        let result = self.inner.publish(route, message).await;
        metric::published(route.as_str(), result.is_ok());
        result
    }

    async fn forward_subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        metric::register_consumer(route.as_str());
        let counted = Arc::new(Counted {
            route: route.to_string(),
            max_attempts: options.max_attempts,
            inner: handler,
        });
        self.inner.subscribe(route, counted, options).await
    }
}

/// Counts a handler's dispositions and times it.
struct Counted {
    route: String,
    max_attempts: u32,
    inner: Arc<dyn Handler>,
}

#[async_trait]
impl Handler for Counted {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let attempt = delivery.attempt;
        let start = Instant::now();
        let disposition = self.inner.handle(delivery).await;
        metric::handler_duration(self.route.clone(), start.elapsed());
        let (label, dead) = match &disposition {
            Disposition::Ack => (metric::disposition::ACK, false),
            Disposition::Retry { .. } => (metric::disposition::RETRY, attempt >= self.max_attempts),
            Disposition::DeadLetter { .. } => (metric::disposition::DEAD_LETTER, true),
        };
        metric::delivery(&self.route, attempt, label, dead);
        disposition
    }
}

/// Runs `sample` every `interval` until `shutdown`: the way gauges are
/// kept current (a scrape never asks a broker or a store).
pub async fn sample_every<F, Fut>(
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut sample: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => sample().await,
        }
    }
}

/// Sets [`metric::QUEUE_DEPTH`] for each of `routes` every `interval`,
/// until `shutdown`.
pub async fn sample_backlog(
    bus: Arc<dyn Backlog>,
    routes: Vec<Route>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    sample_every(interval, shutdown, || {
        let (bus, routes) = (bus.clone(), routes.clone());
        async move {
            for route in &routes {
                match bus.backlog(route).await {
                    Ok(depth) => metric::queue_depth(route.as_str(), depth),
                    Err(e) => tracing::debug!(%route, error = %e, "queue depth unavailable"),
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use campusfood_transport::memory::MemoryTransport;

    use super::*;

    struct Poisonous;

    #[async_trait]
    impl Handler for Poisonous {
        async fn handle(&self, d: Delivery) -> Disposition {
            match d.message.body.as_ref() {
                b"ok" => Disposition::Ack,
                b"flaky" if d.attempt > 1 => Disposition::Ack,
                b"flaky" => Disposition::Retry {
                    reason: "once".into(),
                },
                _ => Disposition::DeadLetter {
                    reason: "poison".into(),
                },
            }
        }
    }

    #[test]
    fn counts_publishes_dispositions_redeliveries_and_dead_letters() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let memory = MemoryTransport::new();
                let t = Metered::new(Arc::new(memory.clone()));
                let route = Route::new("m");
                let opts = SubscribeOptions {
                    retry_delay: Duration::from_millis(1),
                    ..Default::default()
                };
                let sub = t
                    .subscribe(&route, Arc::new(Poisonous), opts)
                    .await
                    .unwrap();
                for body in ["ok", "flaky", "bad"] {
                    let m = Message {
                        body: body.into(),
                        ..Default::default()
                    };
                    t.publish(&route, m).await.unwrap();
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while memory.depth(&route, None) > 0 {
                    assert!(std::time::Instant::now() < deadline);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                sub.stop().await;
            });
        });
        let text = handle.render();
        for line in [
            r#"campusfood_published_total{route="m",outcome="ok"} 3"#,
            r#"campusfood_deliveries_total{route="m",disposition="ack"} 2"#,
            r#"campusfood_deliveries_total{route="m",disposition="retry"} 1"#,
            r#"campusfood_deliveries_total{route="m",disposition="dead_letter"} 1"#,
            r#"campusfood_redeliveries_total{route="m"} 1"#,
            r#"campusfood_dead_letters_total{route="m"} 1"#,
            // Four handlings (flaky twice), timed; a summary without buckets here.
            r#"campusfood_handler_duration_seconds_count{handler="m"} 4"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn the_installed_recorder_times_http_handlers_and_renders_histograms() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let handle = install_prometheus().unwrap();
        // Once per process: a second call answers the same recorder.
        let again = install_prometheus().unwrap();
        let router = time_handlers(with_metrics(
            axum::Router::new().route("/things/{id}", axum::routing::post(|| async { "ok" })),
            Some(&handle),
        ));
        let post = Request::post("/things/7").body(Body::empty()).unwrap();
        let answer = router.clone().oneshot(post).await.unwrap();
        assert!(answer.status().is_success());
        let get = Request::get("/metrics").body(Body::empty()).unwrap();
        let answer = router.oneshot(get).await.unwrap();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for line in [
            "# TYPE campusfood_handler_duration_seconds histogram",
            r#"campusfood_handler_duration_seconds_count{handler="POST /things/{id}"} 1"#,
            r#"campusfood_handler_duration_seconds_bucket{handler="POST /things/{id}",le="10"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let count = r#"campusfood_handler_duration_seconds_count{handler="POST /things/{id}"} 1"#;
        assert!(again.render().contains(count));
    }
}
