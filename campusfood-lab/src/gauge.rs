//! Something to sample over time ([`Gauge`]) — a queue's depth, the
//! outbox's length, the ledger's reservations — read every so often on its
//! own task ([`Sampler`]) into a chart series.

use std::sync::Arc;
use std::time::{Duration, Instant};

use campusfood_core::ledger::InventoryLedger;
use campusfood_core::task::BackgroundTask;
use campusfood_services::stores::OrderStore;
use campusfood_transport::rabbitmq::RabbitTransport;

use crate::error::{LabError, broker_err, store_err};

/// Something to sample over time: a queue's depth, the outbox's length.
#[derive(Debug, Clone)]
pub enum Gauge {
    /// Ready messages of a queue.
    Queue {
        /// The lab's connection.
        admin: Arc<RabbitTransport>,
        /// The queue.
        name: String,
    },
    /// Orders accepted and not yet published.
    Outbox(Arc<dyn OrderStore>),
    /// Reservation records in inventory's ledger.
    Reservations(Arc<dyn InventoryLedger>),
}

impl Gauge {
    /// The current value.
    pub async fn read(&self) -> Result<u64, LabError> {
        match self {
            Self::Queue { admin, name } => admin
                .queue_depth(name)
                .await
                .map(u64::from)
                .map_err(broker_err(&format!("depth of {name}"))),
            Self::Outbox(store) => store
                .outbox_len()
                .await
                .map_err(|e| store_err("reading the outbox")(e.to_string())),
            Self::Reservations(ledger) => ledger
                .reservation_count()
                .await
                .map_err(|e| store_err("counting reservations")(e.to_string())),
        }
    }

    /// Reads the gauge every `every` on its own task until
    /// [`Sampler::finish`]; points are `[seconds since origin, value]`.
    /// A read that fails (the broker away) is left out.
    pub fn sample(self, every: Duration, origin: Instant) -> Sampler {
        let task = BackgroundTask::spawn(|mut stop| async move {
            let mut points = Vec::new();
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.stopped() => break,
                }
                match self.read().await {
                    Ok(v) => points.push([origin.elapsed().as_secs_f64(), v as f64]),
                    Err(e) => tracing::debug!(error = %e, "sample left out"),
                }
            }
            // One last reading, so the series ends at the final value.
            if let Ok(v) = self.read().await {
                points.push([origin.elapsed().as_secs_f64(), v as f64]);
            }
            points
        });
        Sampler { task }
    }
}

/// A gauge being sampled ([`Gauge::sample`]).
#[derive(Debug)]
pub struct Sampler {
    task: BackgroundTask<Vec<[f64; 2]>>,
}

impl Sampler {
    /// Stops sampling and returns the points.
    pub async fn finish(self) -> Result<Vec<[f64; 2]>, LabError> {
        Ok(self.task.stop().await?)
    }
}
