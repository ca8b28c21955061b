//! Metrics for any transport, in Prometheus text: a [`Metered`] decorator
//! counts what passes through a [`Transport`] — publishes, deliveries by
//! disposition, redeliveries, dead letters — and [`sample_backlog`] keeps a
//! queue-depth gauge current. Rates are what Prometheus derives from the
//! counters (`rate(campusfood_consumed_total[1m])`).
//!
//! The counters go to whatever `metrics` recorder the process installed;
//! [`install_prometheus`] installs the Prometheus one and returns the handle
//! [`metrics_route`] renders. Without a recorder (a library embedding that
//! does not care), counting costs next to nothing.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `campusfood_published_total` | route, outcome | publishes, `ok` or `error` |
//! | `campusfood_consumed_total` | route, disposition | deliveries handled: `ack`, `retry`, `dead_letter` |
//! | `campusfood_redeliveries_total` | route | deliveries after the first attempt |
//! | `campusfood_dead_lettered_total` | route | messages set aside (poison, or out of attempts) |
//! | `campusfood_queue_depth` | route | messages waiting for the route's consumer |

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::transport::{
    Backlog, Delivery, Disposition, ForwardTransport, Handler, Message, Reply, Route,
    SubscribeOptions, Subscription, Transport, TransportError,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use thiserror::Error;

/// The Prometheus recorder could not be installed (one is already).
#[derive(Debug, Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide Prometheus recorder.
pub fn install_prometheus() -> Result<PrometheusHandle, MetricsError> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))
}

/// `GET /metrics`: the Prometheus text exposition of `handle`.
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
        metrics::counter!("campusfood_requests_total", "route" => route.to_string(), "status" => status).increment(1);
        result
    }

    async fn forward_publish(&self, route: &Route, message: Message) -> Result<(), TransportError> {
        let result = self.inner.publish(route, message).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("campusfood_published_total", "route" => route.to_string(), "outcome" => outcome).increment(1);
        result
    }

    async fn forward_subscribe(
        &self,
        route: &Route,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, TransportError> {
        let counted = Arc::new(Counted {
            route: route.to_string(),
            max_attempts: options.max_attempts,
            inner: handler,
        });
        self.inner.subscribe(route, counted, options).await
    }
}

/// Counts a handler's dispositions.
struct Counted {
    route: String,
    max_attempts: u32,
    inner: Arc<dyn Handler>,
}

#[async_trait]
impl Handler for Counted {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let attempt = delivery.attempt;
        if attempt > 1 {
            metrics::counter!("campusfood_redeliveries_total", "route" => self.route.clone())
                .increment(1);
        }
        let disposition = self.inner.handle(delivery).await;
        let (label, dead) = match &disposition {
            Disposition::Ack => ("ack", false),
            Disposition::Retry { .. } => ("retry", attempt >= self.max_attempts),
            Disposition::DeadLetter { .. } => ("dead_letter", true),
        };
        metrics::counter!("campusfood_consumed_total", "route" => self.route.clone(), "disposition" => label).increment(1);
        if dead {
            metrics::counter!("campusfood_dead_lettered_total", "route" => self.route.clone())
                .increment(1);
        }
        disposition
    }
}

/// Sets `campusfood_queue_depth{route}` for each of `routes` every
/// `interval`, until `shutdown`.
pub async fn sample_backlog(
    bus: Arc<dyn Backlog>,
    routes: Vec<Route>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                for route in &routes {
                    match bus.backlog(route).await {
                        Ok(depth) => metrics::gauge!("campusfood_queue_depth", "route" => route.to_string()).set(depth as f64),
                        Err(e) => tracing::debug!(%route, error = %e, "queue depth unavailable"),
                    }
                }
            }
        }
    }
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
            r#"campusfood_consumed_total{route="m",disposition="ack"} 2"#,
            r#"campusfood_consumed_total{route="m",disposition="retry"} 1"#,
            r#"campusfood_consumed_total{route="m",disposition="dead_letter"} 1"#,
            r#"campusfood_redeliveries_total{route="m"} 1"#,
            r#"campusfood_dead_lettered_total{route="m"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
