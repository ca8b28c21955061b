//! What `GET /metrics` answers: the model's snapshot plus the group's lag,
//! which one background task asks of Kafka (scrapes never do), and the
//! consumer's router, with `GET /prometheus` (the same lag as the gauge
//! [`metric::CONSUMER_LAG`], and the process's other metrics) when a
//! Prometheus recorder is given.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use campusfood_core::config::KafkaConfig;
use campusfood_core::metric;
use campusfood_core::task::BackgroundTask;
use campusfood_kafka::KafkaTransport;
use tokio::time::Instant;

use super::window::{Analytics, MetricsSnapshot};

/// How often the background task asks Kafka for the group's lag.
pub const LAG_REFRESH: Duration = Duration::from_secs(1);
/// A lag older than this is answered as `null`.
pub const LAG_STALE: Duration = Duration::from_secs(5);

/// The last lag Kafka told, per topic, and when.
#[derive(Debug, Default)]
pub(super) struct LagCache {
    values: Mutex<BTreeMap<String, (i64, Instant)>>,
    pub(super) refreshes: std::sync::atomic::AtomicU64,
}

/// What `/metrics` needs to answer.
#[derive(Debug, Clone)]
pub(super) struct Metrics {
    pub(super) analytics: Arc<Analytics>,
    pub(super) transport: KafkaTransport,
    pub(super) group: String,
    pub(super) topics: [String; 2],
    pub(super) lag: Arc<LagCache>,
}

impl Metrics {
    /// The window, the totals and the last lag (no Kafka call).
    pub(super) fn snapshot(&self) -> MetricsSnapshot {
        let mut snapshot = self.analytics.snapshot();
        let values = self.lag.values.lock().unwrap_or_else(|p| p.into_inner());
        for topic in &self.topics {
            let fresh = values
                .get(topic)
                .filter(|(_, at)| at.elapsed() <= LAG_STALE)
                .map(|(lag, _)| *lag);
            snapshot.lag.insert(topic.clone(), fresh);
        }
        snapshot
    }

    /// Asks Kafka for the lag of each topic, one call at a time, and keeps
    /// what it answers.
    pub(super) async fn refresh_lag(&self) {
        for topic in &self.topics {
            match self.transport.lag(&self.group, topic).await {
                Ok(partitions) => {
                    let total = partitions.iter().map(|p| p.lag).sum();
                    metric::consumer_lag(&self.group, topic, total);
                    self.lag
                        .values
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(topic.clone(), (total, Instant::now()));
                }
                Err(e) => tracing::debug!(%topic, error = %e, "lag unavailable"),
            }
        }
        self.lag
            .refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Refreshes the lag every [`LAG_REFRESH`] until stopped.
pub(super) fn spawn_lag_refresher(metrics: Metrics) -> BackgroundTask {
    BackgroundTask::spawn(|mut stop| async move {
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                () = metrics.refresh_lag() => {}
            }
            tokio::select! {
                () = stop.stopped() => return,
                () = tokio::time::sleep(LAG_REFRESH) => {}
            }
        }
    })
}

/// `GET /metrics`, `GET /health` and `GET /openapi.json`, and
/// `GET /prometheus` when `prometheus` is given.
pub(super) fn router(
    metrics: Metrics,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    let router = match prometheus {
        Some(handle) => Router::new().route(
            KafkaConfig::PROMETHEUS_PATH,
            campusfood_services::metrics::metrics_route(handle),
        ),
        None => Router::new(),
    };
    router
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move { Json(m.snapshot()) }),
        )
        .route(
            "/health",
            campusfood_services::server::health_route("analytics-consumer"),
        )
        .route(
            "/openapi.json",
            campusfood_services::server::openapi_route(campusfood_services::openapi::analytics::<
                MetricsSnapshot,
            >()),
        )
        .with_state(metrics)
}
