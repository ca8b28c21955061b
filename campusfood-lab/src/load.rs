//! The load the experiments send: an [`OrderClient`] of the public order
//! endpoints that turns every answer — or the lack of one — into a
//! [`Sample`], and the load shapes: one client sending orders one after
//! another ([`sequential`]), several closed-loop clients ([`concurrent`]),
//! and orders sent at a fixed rate whatever the answers ([`fixed_rate`]).
//! Every part is driven with it.

use std::time::{Duration, Instant};

use campusfood_core::config::HttpConfig;
use campusfood_core::fault::FaultUpdate;
use indicatif::ProgressBar;

use crate::error::LabError;

/// How long the lab's client waits for any answer before it records the
/// order as unanswered: far above every timeout an experiment provokes.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// One order as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was sent, since the experiment's origin.
    pub sent: Duration,
    /// From sending the request to reading the whole answer.
    pub latency: Duration,
    /// The HTTP status; 0 when no answer came (connection failed, client
    /// timeout).
    pub status: u16,
    /// The answer's `error` field, or the client's error, when not 201.
    pub error: Option<String>,
    /// The answer's `order_id`, when 201 (Part B follows the order by it).
    pub order_id: Option<String>,
}

impl Sample {
    /// Confirmed (201).
    pub fn ok(&self) -> bool {
        self.status == 201
    }

    /// When the answer came, since the experiment's origin.
    pub fn answered(&self) -> Duration {
        self.sent + self.latency
    }
}

/// Counts of samples with `status`.
pub fn count_status(samples: &[Sample], status: u16) -> usize {
    samples.iter().filter(|s| s.status == status).count()
}

/// The most orders that were in flight at once.
pub fn peak_in_flight(samples: &[Sample]) -> usize {
    let mut events: Vec<(Duration, i32)> = samples
        .iter()
        .flat_map(|s| [(s.sent, 1), (s.answered(), -1)])
        .collect();
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, delta) in events {
        now += i64::from(delta);
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

/// An HTTP client of Part A's public endpoints.
#[derive(Debug, Clone)]
pub struct OrderClient {
    http: reqwest::Client,
    order_url: String,
    inventory_url: Option<String>,
    item: String,
}

impl OrderClient {
    /// A client of the OrderService at `order_url` (and the
    /// InventoryService at `inventory_url`, for `/configure` and stock),
    /// ordering one `item` at a time.
    pub fn new(order_url: &str, inventory_url: Option<&str>, item: &str) -> Result<Self, LabError> {
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .map_err(|source| LabError::Http {
                what: "building the HTTP client".to_owned(),
                source,
            })?;
        Ok(Self {
            http,
            order_url: order_url.trim_end_matches('/').to_owned(),
            inventory_url: inventory_url.map(|u| u.trim_end_matches('/').to_owned()),
            item: item.to_owned(),
        })
    }

    /// The OrderService's base URL.
    pub fn order_url(&self) -> &str {
        &self.order_url
    }

    /// The InventoryService's base URL, when known.
    pub fn inventory_url(&self) -> Option<&str> {
        self.inventory_url.as_deref()
    }

    /// The item ordered.
    pub fn item(&self) -> &str {
        &self.item
    }

    /// `POST /order` `{"item", "qty": 1}`; never fails: a missing answer is
    /// a sample with status 0.
    pub async fn order(&self, origin: Instant) -> Sample {
        let start = Instant::now();
        let sent = start.duration_since(origin);
        let body = serde_json::json!({"item": self.item, "qty": 1});
        let result = async {
            let resp = self
                .http
                .post(format!("{}{}", self.order_url, HttpConfig::ORDER_PATH))
                .json(&body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let latency = start.elapsed();
        match result {
            Ok((status, bytes)) => {
                let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
                let field = |name: &str| {
                    json.as_ref()
                        .and_then(|v| v.get(name).and_then(|e| e.as_str()).map(str::to_owned))
                };
                let error = (status != 201).then(|| {
                    field("error").unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
                });
                let order_id = if status == 201 {
                    field("order_id")
                } else {
                    None
                };
                Sample {
                    sent,
                    latency,
                    status,
                    error,
                    order_id,
                }
            }
            Err(e) => Sample {
                sent,
                latency,
                status: 0,
                error: Some(e.to_string()),
                order_id: None,
            },
        }
    }

    fn inventory(&self) -> Result<&str, LabError> {
        self.inventory_url
            .as_deref()
            .ok_or_else(|| LabError::Unavailable {
                needs: "the inventory service's URL".to_owned(),
                hint: "pass --inventory-url with --order-url".to_owned(),
            })
    }

    /// `POST /configure` on inventory.
    pub async fn configure_inventory(&self, update: FaultUpdate) -> Result<(), LabError> {
        let what = format!("configuring inventory {update:?}");
        let resp = self
            .http
            .post(format!("{}/configure", self.inventory()?))
            .json(&update)
            .send()
            .await
            .map_err(|source| LabError::Http {
                what: what.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(LabError::Unexpected { what, status, body })
    }

    /// Turns inventory's faults off (no delay, no failures).
    pub async fn heal_inventory(&self) -> Result<(), LabError> {
        self.configure_inventory(FaultUpdate {
            delay: Some(0.0),
            failure_rate: Some(0.0),
            seed: None,
        })
        .await
    }

    /// The stock of the ordered item (`GET /inventory`).
    pub async fn stock(&self) -> Result<u64, LabError> {
        let what = "reading inventory's stock".to_owned();
        let http = |source| LabError::Http {
            what: what.clone(),
            source,
        };
        let resp = self
            .http
            .get(format!("{}/inventory", self.inventory()?))
            .send()
            .await
            .map_err(http)?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.map_err(http)?;
        body.get(&self.item)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| LabError::Unexpected {
                what: what.clone(),
                status,
                body: format!("no stock for {}: {body}", self.item),
            })
    }
}

/// Sends `n` orders one after another (one client), ticking `bar`.
pub async fn sequential(
    client: &OrderClient,
    n: u64,
    origin: Instant,
    bar: &ProgressBar,
) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        samples.push(client.order(origin).await);
        bar.inc(1);
    }
    samples
}

/// Sends `n` orders from `clients` concurrent clients, each sending its
/// next order as soon as its previous one is answered (a closed loop), and
/// returns every sample in sending order. `bar` counts answered orders.
pub async fn concurrent(
    client: &OrderClient,
    n: u64,
    clients: u64,
    origin: Instant,
    bar: &ProgressBar,
) -> Result<Vec<Sample>, LabError> {
    let clients = clients.clamp(1, n.max(1));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            // Client c sends orders c, c + clients, c + 2·clients, …
            let mine = (c..n)
                .step_by(usize::try_from(clients).unwrap_or(1))
                .count();
            let (client, bar) = (client.clone(), bar.clone());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(mine);
                for _ in 0..mine {
                    samples.push(client.order(origin).await);
                    bar.inc(1);
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for t in tasks {
        samples.extend(t.await?);
    }
    samples.sort_by_key(|s| s.sent);
    Ok(samples)
}

/// Sends orders at `rate` per second for `duration`, each on its own task
/// whatever happens to the others (an open loop: users keep arriving), and
/// returns every sample once all are answered, in sending order. `bar`
/// counts answered orders.
pub async fn fixed_rate(
    client: &OrderClient,
    rate: f64,
    duration: Duration,
    origin: Instant,
    bar: &ProgressBar,
) -> Result<Vec<Sample>, LabError> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    loop {
        ticker.tick().await;
        if Instant::now() >= end {
            break;
        }
        let (client, bar) = (client.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let s = client.order(origin).await;
            bar.inc(1);
            s
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for t in tasks {
        samples.push(t.await?);
    }
    samples.sort_by_key(|s| s.sent);
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent_ms: u64, latency_ms: u64) -> Sample {
        Sample {
            sent: Duration::from_millis(sent_ms),
            latency: Duration::from_millis(latency_ms),
            status: 201,
            error: None,
            order_id: None,
        }
    }

    #[test]
    fn peak_in_flight_counts_overlaps() {
        assert_eq!(peak_in_flight(&[]), 0);
        assert_eq!(peak_in_flight(&[s(0, 10), s(10, 10), s(20, 10)]), 1);
        assert_eq!(peak_in_flight(&[s(0, 100), s(10, 100), s(20, 10)]), 3);
    }
}
