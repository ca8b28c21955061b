//! The load the experiments send: an [`OrderClient`] of the public order
//! endpoints that turns every answer — or the lack of one — into a
//! [`Sample`], and the load shapes: one client sending orders one after
//! another ([`sequential`]), several closed-loop clients ([`concurrent`]),
//! and orders sent at a fixed rate whatever the answers ([`fixed_rate`]).
//! Every part is driven with it.
//!
//! The latency experiments send one order after another by default (a
//! closed loop: [`Pacing::Closed`]); with `--open-loop-rate N` they send
//! them on a fixed schedule instead ([`Pacing::Open`], [`open_loop`]), and
//! each latency is measured from the order's *planned* send time, so a
//! stall is charged to every order it delays — not only to the one the
//! client was waiting on (no coordinated omission).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

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
/// counts answered orders. A tick the sender missed is skipped, and each
/// latency runs from the order's actual send (A4 and B5 time their
/// phases by it); [`open_loop`] sends a fixed number of orders and times
/// each from its planned send.
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

/// How the latency experiments send their orders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// One after another: the next order is sent when the previous one is
    /// answered (the default). A stall delays the orders after it, which
    /// are then never sent during it: only the order it caught shows it.
    Closed,
    /// On a fixed schedule of this many orders per second, whatever the
    /// answers; each latency counts from the order's planned send time.
    Open(f64),
}

impl Pacing {
    /// [`Open`](Self::Open) at `rate` when given, else [`Closed`](Self::Closed).
    pub fn from_rate(rate: Option<f64>) -> Self {
        rate.map_or(Self::Closed, Self::Open)
    }

    /// How the report names it: `closed loop`, `open loop at 50/s`.
    pub fn describe(&self) -> String {
        match self {
            Self::Closed => "closed loop".to_owned(),
            Self::Open(rate) => format!("open loop at {rate}/s"),
        }
    }

    /// `title` with the mode appended: `Latency — open loop at 50/s`.
    pub fn title(&self, title: &str) -> String {
        format!("{title} — {}", self.describe())
    }

    /// Sends `n` orders with `place` this way: one after another, or on
    /// the schedule ([`open_loop`]). `bar` counts answered orders.
    pub async fn send<F, Fut>(
        &self,
        n: u64,
        origin: Instant,
        bar: &ProgressBar,
        place: F,
    ) -> Vec<Sample>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Sample>,
    {
        match *self {
            Self::Closed => {
                let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                for _ in 0..n {
                    samples.push(place(origin).await);
                    bar.inc(1);
                }
                samples
            }
            Self::Open(rate) => open_loop(n, rate, origin, bar, place).await,
        }
    }
}

/// Sends `n` orders with `place` on a fixed schedule — order `i` at
/// `origin + i / rate` — each on its own future, whatever happens to the
/// others (an open loop), and returns them in sending order once all are
/// answered. Each sample's `sent` is its planned send time and its
/// `latency` runs from then until the answer: an order that could not go
/// out on time (a client waiting for a connection, a stalled scheduler)
/// is charged the wait. `bar` counts answered orders.
pub async fn open_loop<F, Fut>(
    n: u64,
    rate: f64,
    origin: Instant,
    bar: &ProgressBar,
    place: F,
) -> Vec<Sample>
where
    F: Fn(Instant) -> Fut,
    Fut: Future<Output = Sample>,
{
    let place = &place;
    let mut pending: FuturesUnordered<_> = (0..n)
        .map(|i| {
            let planned = Duration::from_secs_f64(i as f64 / rate);
            async move {
                tokio::time::sleep_until((origin + planned).into()).await;
                let s = place(origin).await;
                from_planned(s, planned)
            }
        })
        .collect();
    let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    while let Some(s) = pending.next().await {
        bar.inc(1);
        samples.push(s);
    }
    samples.sort_by_key(|s| s.sent);
    samples
}

/// `sample` re-timed from `planned`: sent then, answered when it was.
fn from_planned(mut sample: Sample, planned: Duration) -> Sample {
    let answered = sample.answered();
    sample.sent = planned;
    sample.latency = answered.saturating_sub(planned);
    sample
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

    /// A client with one connection to a server that answers one request
    /// at a time in 1 ms, except request `stall_at`, which takes 200 ms: a
    /// request goes out only once the connection is free, and its sample
    /// is timed from then (as a client times it).
    fn one_connection(
        stall_at: usize,
    ) -> impl Fn(Instant) -> std::pin::Pin<Box<dyn Future<Output = Sample>>> {
        let conn = std::sync::Arc::new(tokio::sync::Mutex::new(0usize));
        move |origin| {
            let conn = conn.clone();
            Box::pin(async move {
                let mut served = conn.lock().await;
                let start = Instant::now();
                *served += 1;
                let took = if *served == stall_at { 200 } else { 1 };
                tokio::time::sleep(Duration::from_millis(took)).await;
                Sample {
                    sent: start.duration_since(origin),
                    latency: start.elapsed(),
                    status: 201,
                    error: None,
                    order_id: None,
                }
            })
        }
    }

    fn slow(samples: &[Sample]) -> Vec<usize> {
        (0..samples.len())
            .filter(|&i| samples[i].latency >= Duration::from_millis(50))
            .collect()
    }

    #[tokio::test]
    async fn a_stall_is_charged_to_one_order_closed_and_to_every_order_it_delays_open() {
        let bar = ProgressBar::hidden();
        let origin = Instant::now();
        let closed = Pacing::Closed
            .send(50, origin, &bar, one_connection(10))
            .await;
        assert_eq!(closed.len(), 50);
        assert_eq!(
            slow(&closed),
            [9],
            "closed loop: only the order the stall caught"
        );

        // 100 orders/s: one every 10 ms; the stall (order 10, planned at
        // 90 ms) holds the connection until about 290 ms.
        let origin = Instant::now();
        let open = Pacing::Open(100.0)
            .send(50, origin, &bar, one_connection(10))
            .await;
        assert_eq!(open.len(), 50);
        for (i, s) in open.iter().enumerate() {
            assert_eq!(
                s.sent,
                Duration::from_millis(10 * i as u64),
                "planned times"
            );
        }
        let charged = slow(&open);
        assert!(charged.len() >= 15, "open loop: {charged:?}");
        for (i, s) in open.iter().enumerate().take(25).skip(10) {
            let planned = 10 * i as u64;
            let owed = Duration::from_millis(290u64.saturating_sub(planned));
            assert!(
                s.latency >= owed.saturating_sub(Duration::from_millis(20)),
                "order {i} planned at {planned} ms waited for the stall, yet shows {:?}",
                s.latency
            );
        }
        assert!(
            open[49].latency < Duration::from_millis(50),
            "the backlog drains"
        );
    }

    #[test]
    fn pacing_names_its_mode() {
        assert_eq!(Pacing::from_rate(None), Pacing::Closed);
        assert_eq!(
            Pacing::from_rate(Some(50.0)).describe(),
            "open loop at 50/s"
        );
        assert_eq!(Pacing::Closed.title("Latency"), "Latency — closed loop");
    }

    #[test]
    fn peak_in_flight_counts_overlaps() {
        assert_eq!(peak_in_flight(&[]), 0);
        assert_eq!(peak_in_flight(&[s(0, 10), s(10, 10), s(20, 10)]), 1);
        assert_eq!(peak_in_flight(&[s(0, 100), s(10, 100), s(20, 10)]), 3);
    }
}
