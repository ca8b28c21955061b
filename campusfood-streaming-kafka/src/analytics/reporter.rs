//! The periodic summary line (`REPORT_INTERVAL_SEC`).

use std::time::Duration;

use campusfood_core::task::BackgroundTask;

use super::metrics::Metrics;

/// Logs a summary line every `every`.
pub(super) fn spawn_reporter(metrics: Metrics, every: Duration) -> BackgroundTask {
    BackgroundTask::spawn(|mut stop| async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                _ = tick.tick() => {}
            }
            let m = metrics.snapshot();
            tracing::info!(
                orders_per_min = m.orders_per_min,
                inventory_events = m.inventory_events,
                failures = m.failures,
                failure_rate_pct = m.failure_rate_pct,
                window_seconds = m.window_seconds,
                totals = ?m.totals,
                lag = ?m.lag,
                "metrics"
            );
        }
    })
}
