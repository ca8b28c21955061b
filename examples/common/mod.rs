//! What every example binary shares: logging and traces, and the stop
//! signal.

use campusfood_services::telemetry::Tracing;
use tracing::subscriber::Interest;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{DynFilterFn, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What [`init_logging`] set up; dropping it writes the log lines still
/// queued and exports the spans still buffered.
pub struct Logging {
    // Dropped in this order: the exporter stops (and may log why), then
    // the writer writes what is queued.
    _tracing: Option<Tracing>,
    _writer: WorkerGuard,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as JSON lines
/// when `json`, without the spans made for traces ([`is_trace_span`]);
/// and makes every span an OpenTelemetry span of `service`,
/// exported when `OTEL_EXPORTER_OTLP_ENDPOINT` says where (feature
/// `otel`). Keep what it returns until the end.
///
/// The lines are written by a thread of their own (`tracing-appender`),
/// not by the async worker that logs: with stderr redirected to a file a
/// write is blocking I/O on the request path. Nothing is dropped: when the
/// queue is full, logging waits.
pub fn init_logging(json: bool, service: &str) -> Logging {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (tracing, error) = match Tracing::from_env(service) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(e)),
    };
    // Spans carry the trace on whatever RUST_LOG shows.
    let otel = tracing
        .as_ref()
        .map(|t| t.layer().with_filter(LevelFilter::INFO));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Decided by the callsite alone, so that the answer is cached with
    // `RUST_LOG`'s, not asked again on every span and event.
    let not_trace_spans =
        DynFilterFn::new(|meta, _| !is_trace_span(meta)).with_callsite_filter(|meta| {
            if is_trace_span(meta) {
                Interest::never()
            } else {
                Interest::always()
            }
        });
    let filter = filter.and(not_trace_spans);
    let registry = tracing_subscriber::registry().with(otel);
    if json {
        registry
            .with(fmt.json().with_current_span(true).with_filter(filter))
            .init();
    } else {
        registry.with(fmt.with_filter(filter)).init();
    }
    match (&tracing, error) {
        (Some(t), _) => t.log_status(),
        (None, Some(e)) => tracing::error!(error = %e, "traces are not exported"),
        (None, None) => {}
    }
    Logging {
        _tracing: tracing,
        _writer: guard,
    }
}

/// Whether `meta` is a span made for the traces: one named by OpenTelemetry's
/// conventions (an `otel.name` field: the HTTP server and client spans, the
/// messaging spans of `campusfood_core::telemetry`). They are exported
/// with all their attributes; log lines leave them out, so that a line
/// names its order through the service's own span (`order_id`,
/// `request_id`) instead of repeating a dozen attributes, and so that no
/// log line formats them on every message.
fn is_trace_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.fields().field("otel.name").is_some()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Where state shared by several instances lives: flags over the
/// environment variables `Config::from_env` reads.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// PostgreSQL URL of the stores shared by every instance
    /// (postgres://user:password@host:port/db); unset: redb files in
    /// CAMPUSFOOD_DATA_DIR, one process per file.
    #[arg(long, env = campusfood_core::config::DATABASE_URL_ENV, global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema of the shared tables (created when missing).
    #[arg(long, env = campusfood_core::config::DATABASE_SCHEMA_ENV, global = true)]
    pub database_schema: Option<String>,
}

impl StoreArgs {
    /// Puts the flags into `config`.
    pub fn apply(&self, config: &mut campusfood_core::Config) {
        if let Some(url) = self.database_url.clone().filter(|u| !u.is_empty()) {
            config.database.url = Some(url);
        }
        if let Some(schema) = &self.database_schema {
            config.database.schema.clone_from(schema);
        }
    }

    /// Where the stores are, for the start-up log line (no password).
    pub fn describe(config: &campusfood_core::Config) -> String {
        match config.database.redacted_url() {
            Some(url) => format!("postgres {url} (schema {})", config.database.schema),
            None => format!("redb files in {}", config.data_dir.display()),
        }
    }
}
