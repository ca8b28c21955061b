//! Shared helpers: spawn Part A on ephemeral ports with its own data
//! directory, typed calls, and waiting on conditions with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use campusfood::core::Config;
use campusfood::core::config::HttpConfig;
use campusfood::core::ledger::InventoryLedger;
use campusfood::services::sync_rest::{SyncPart, SyncRest};
use serde_json::{Value, json};

pub struct TestApp {
    pub system: SyncRest,
    pub client: reqwest::Client,
    pub config: Config,
    _data: tempfile::TempDir,
}

use campusfood_testkit::init_logging;
pub use campusfood_testkit::until;

/// Part A on port 0, with `tune` applied to the HTTP config, the durable
/// ledger in a fresh temp dir, and `stock`.
pub async fn spawn_app_with(stock: &str, tune: impl FnOnce(&mut HttpConfig)) -> TestApp {
    spawn(stock, tune, None).await
}

/// Like [`spawn_app_with`], with the given ledger instead of redb.
pub async fn spawn_app_with_ledger(ledger: Arc<dyn InventoryLedger>) -> TestApp {
    spawn("burger=100", |_| {}, Some(ledger)).await
}

/// Like [`spawn_app_with`], on the given ledger.
pub async fn spawn_app_on(
    ledger: Arc<dyn InventoryLedger>,
    tune: impl FnOnce(&mut HttpConfig),
) -> TestApp {
    spawn("burger=100", tune, Some(ledger)).await
}

async fn spawn(
    stock: &str,
    tune: impl FnOnce(&mut HttpConfig),
    ledger: Option<Arc<dyn InventoryLedger>>,
) -> TestApp {
    init_logging();
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        stock: stock.parse().unwrap(),
        ..Config::default()
    };
    config.http.order_port = 0;
    config.http.inventory_port = 0;
    config.http.notification_port = 0;
    config.http.notification_retry_interval = Duration::from_millis(50);
    tune(&mut config.http);
    let system = match ledger {
        None => SyncRest::start(&config, SyncPart::All).await.unwrap(),
        Some(l) => SyncRest::start_with(&config, SyncPart::All, Some(l))
            .await
            .unwrap(),
    };
    TestApp {
        system,
        client: reqwest::Client::new(),
        config,
        _data: data,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("burger=1000,pizza=100", |_| {}).await
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub elapsed: Duration,
}

impl TestApp {
    pub fn order_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.system.order.as_ref().unwrap().server.addr()
        )
    }

    pub fn inventory_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.system.inventory.as_ref().unwrap().server.addr()
        )
    }

    pub fn notification_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.system.notification.as_ref().unwrap().server.addr()
        )
    }

    pub async fn post_raw(
        &self,
        url: String,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let start = Instant::now();
        let resp = self
            .client
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            body,
            elapsed: start.elapsed(),
        }
    }

    pub async fn post_json(&self, url: String, body: &Value) -> Answer {
        self.post_raw(url, "application/json", body.to_string())
            .await
    }

    pub async fn order(&self, item: &str, qty: i64) -> Answer {
        self.post_json(self.order_url("/order"), &json!({"item": item, "qty": qty}))
            .await
    }

    pub async fn configure_inventory(&self, body: Value) -> Answer {
        self.post_json(self.inventory_url("/configure"), &body)
            .await
    }

    pub async fn configure_notification(&self, body: Value) -> Answer {
        self.post_json(self.notification_url("/configure"), &body)
            .await
    }

    /// `GET url`: status and JSON body.
    pub async fn get_answer(&self, url: String) -> Answer {
        let start = std::time::Instant::now();
        let resp = self.client.get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        Answer {
            status,
            body: resp.json().await.unwrap(),
            elapsed: start.elapsed(),
        }
    }

    pub async fn get(&self, url: String) -> Value {
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn stock(&self) -> Value {
        self.get(self.inventory_url("/inventory")).await
    }
}

/// min/avg/p50/p95/p99/max of latencies, in milliseconds.
pub fn summary(latencies: &[Duration]) -> String {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for l in latencies {
        h.record(l.as_micros() as u64).unwrap();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "n={} min={:.2}ms avg={:.2}ms p50={:.2}ms p95={:.2}ms p99={:.2}ms max={:.2}ms",
        h.len(),
        ms(h.min()),
        h.mean() / 1000.0,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}
