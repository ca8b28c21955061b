//! The OpenTelemetry pipeline a process installs, so that its `tracing`
//! spans become OpenTelemetry spans and a trace follows each order across
//! HTTP, RabbitMQ and Kafka ([`campusfood_core::telemetry`] carries the
//! context from hop to hop).
//!
//! [`Tracing`] owns the tracer provider; its [`layer`](Tracing::layer)
//! goes into the process's `tracing` subscriber. Spans always get trace
//! and span ids (so the context travels on, and `POST /order` answers with
//! its `traceparent`); they are *exported* only when asked:
//!
//! - built with the feature `otel` and `OTEL_EXPORTER_OTLP_ENDPOINT` set
//!   (`http://localhost:4318`): batched to that OTLP/HTTP endpoint
//!   (`/v1/traces` is appended; the other `OTEL_EXPORTER_OTLP_*` variables
//!   apply as the OpenTelemetry SDK reads them). `OTEL_SERVICE_NAME`
//!   overrides the service name.
//! - otherwise nothing is exported and no exporter runs.
//!
//! ```
//! use campusfood_services::telemetry::Tracing;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let tracing = Tracing::from_env("campusfood-example")?;
//! let subscriber = tracing_subscriber::registry().with(tracing.layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("order");
//!     // The span is an OpenTelemetry span: it has a trace context.
//!     assert!(campusfood_core::telemetry::traceparent(&span).is_some());
//! });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use thiserror::Error;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// The standard variable naming the OTLP endpoint traces are exported to.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The standard variable that overrides the service name.
pub const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";

/// The name of the tracer (the instrumentation scope) spans are made by.
pub const TRACER_NAME: &str = "campusfood";

/// The exporter could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a bad endpoint, say).
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(String),
}

/// A process's tracer provider. Dropping it exports what is still
/// buffered (within the SDK's timeout) and stops the exporter.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Where spans are exported, if anywhere (for the start-up log line).
    exporting_to: Option<String>,
    /// An endpoint asked for that this build cannot export to.
    ignored_endpoint: Option<String>,
}

impl Tracing {
    /// The provider for `service` as the environment asks: exporting over
    /// OTLP when built with the feature `otel` and
    /// [`OTEL_EXPORTER_OTLP_ENDPOINT`](OTLP_ENDPOINT_ENV) is set, else
    /// exporting nothing (a warning says so when the variable is set in a
    /// build without the feature).
    ///
    /// # Errors
    /// [`TelemetryError::Exporter`] when the OTLP exporter cannot be built.
    pub fn from_env(service: &str) -> Result<Self, TelemetryError> {
        let endpoint = std::env::var(OTLP_ENDPOINT_ENV)
            .ok()
            .filter(|e| !e.trim().is_empty());
        match endpoint {
            #[cfg(feature = "otel")]
            Some(endpoint) => otlp::provider(service, None).map(|provider| Self {
                provider,
                exporting_to: Some(endpoint),
                ignored_endpoint: None,
            }),
            #[cfg(not(feature = "otel"))]
            Some(endpoint) => {
                let mut this = Self::local(service);
                this.ignored_endpoint = Some(endpoint);
                Ok(this)
            }
            None => Ok(Self::local(service)),
        }
    }

    /// Says where traces go, once the subscriber is installed: to the
    /// OTLP endpoint, nowhere, or — a warning — nowhere although
    /// [`OTEL_EXPORTER_OTLP_ENDPOINT`](OTLP_ENDPOINT_ENV) asks for an
    /// export the build cannot do (no feature `otel`).
    pub fn log_status(&self) {
        match (&self.exporting_to, &self.ignored_endpoint) {
            (Some(endpoint), _) => tracing::info!(%endpoint, "exporting traces over OTLP"),
            (None, Some(endpoint)) => tracing::warn!(
                %endpoint,
                "{OTLP_ENDPOINT_ENV} is set, but this binary was built without the `otel` feature: no traces are exported"
            ),
            (None, None) => tracing::debug!("traces are propagated, not exported"),
        }
    }

    /// A provider for `service` that exports to the OTLP/HTTP traces URL
    /// `traces_url` (`http://localhost:4318/v1/traces`: the whole URL,
    /// unlike the variable's base URL).
    ///
    /// # Errors
    /// [`TelemetryError::Exporter`] when the OTLP exporter cannot be built.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn exporting_to(service: &str, traces_url: &str) -> Result<Self, TelemetryError> {
        otlp::provider(service, Some(traces_url)).map(|provider| Self {
            provider,
            exporting_to: Some(traces_url.to_owned()),
            ignored_endpoint: None,
        })
    }

    /// A provider for `service` that exports nothing: spans still get
    /// ids, so their context travels on.
    pub fn local(service: &str) -> Self {
        Self::with_provider(
            SdkTracerProvider::builder()
                .with_resource(resource(service))
                .build(),
        )
    }

    /// Uses `provider` as it is (a test's, with an in-memory exporter).
    pub fn with_provider(provider: SdkTracerProvider) -> Self {
        Self {
            provider,
            exporting_to: None,
            ignored_endpoint: None,
        }
    }

    /// Where spans are exported, when they are.
    pub fn exporting(&self) -> Option<&str> {
        self.exporting_to.as_deref()
    }

    /// The provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The `tracing` layer that makes every span an OpenTelemetry span of
    /// this provider. Give it its own filter (`Layer::with_filter`) rather
    /// than filtering the whole subscriber with `RUST_LOG`: a span that is
    /// filtered out carries no context on.
    ///
    /// Entering a span does not make it OpenTelemetry's current context
    /// (`opentelemetry::Context::current()`): a new span's parent is the
    /// current `tracing` span, and [`campusfood_core::telemetry`] takes the
    /// context from the span itself (`OpenTelemetrySpanExt::context`).
    /// Activating it cost a context clone and a thread-local push on every
    /// poll of every instrumented future — a tenth of Part C's inventory
    /// under load. Code that reads `Context::current()` (other
    /// OpenTelemetry instrumentation) needs a layer of its own, built from
    /// [`provider`](Self::provider) with context activation on.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(TRACER_NAME))
            .with_tracked_inactivity(false)
            .with_context_activation(false)
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if self.exporting_to.is_some() {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "traces not all exported at shutdown");
            }
        }
    }
}

/// The resource spans are reported with: `service.name` = `service`,
/// unless [`OTEL_SERVICE_NAME`](SERVICE_NAME_ENV) names it.
fn resource(service: &str) -> Resource {
    let builder = Resource::builder();
    if std::env::var_os(SERVICE_NAME_ENV).is_some() {
        builder.build()
    } else {
        builder.with_service_name(service.to_owned()).build()
    }
}

#[cfg(feature = "otel")]
mod otlp {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::{TelemetryError, resource};

    /// A provider batching spans to OTLP/HTTP: to `traces_url`, or where
    /// the `OTEL_EXPORTER_OTLP_*` variables say.
    pub(super) fn provider(
        service: &str,
        traces_url: Option<&str>,
    ) -> Result<SdkTracerProvider, TelemetryError> {
        let builder = SpanExporter::builder().with_http();
        let builder = match traces_url {
            Some(url) => builder.with_endpoint(url),
            None => builder,
        };
        let exporter = builder
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Ok(SdkTracerProvider::builder()
            .with_resource(resource(service))
            .with_batch_exporter(exporter)
            .build())
    }
}

#[cfg(all(test, feature = "otel", feature = "http"))]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The OTLP exporter posts the spans to the endpoint, as protobuf.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_are_exported_over_otlp_http() {
        let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let sink = sink.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    sink.lock().unwrap().push((ct, body));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let tracing = Tracing::exporting_to("otlp-test", &url).unwrap();
        assert_eq!(tracing.exporting(), Some(url.as_str()));
        let subscriber = tracing_subscriber::registry().with(tracing.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("order-exported-over-otlp").in_scope(|| {});
        });
        // Shutting down exports what is batched; it blocks, so not on a
        // worker the server needs.
        tokio::task::spawn_blocking(move || drop(tracing))
            .await
            .unwrap();
        campusfood_testkit::until(
            "the span reaches the endpoint",
            Duration::from_secs(10),
            async || !received.lock().unwrap().is_empty(),
        )
        .await;
        let (ct, body) = received.lock().unwrap()[0].clone();
        assert_eq!(ct, "application/x-protobuf");
        let needle = b"order-exported-over-otlp";
        assert!(body.windows(needle.len()).any(|w| w == needle));
        server.abort();
    }
}
