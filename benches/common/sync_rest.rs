//! Part A for the benchmarks: in process over the in-memory transport, or
//! on loopback HTTP.

use std::path::Path;
use std::sync::Arc;

use campusfood::core::Config;
use campusfood::core::fault::FaultInjector;
use campusfood::core::ledger::InventoryLedger;
use campusfood::core::outbox::MemoryOutbox;
use campusfood::core::transport::Route;
use campusfood::services::inventory::InventoryService;
use campusfood::services::notification::NotificationService;
use campusfood::services::sync_rest::order::{OrderOptions, OrderService};
use campusfood::services::sync_rest::{SyncPart, SyncRest};
use campusfood::transport::memory::MemoryTransport;

use super::{BODY, STOCK};

/// Part A's OrderService calling inventory (on `ledger`) and notification
/// over the in-memory transport: no network.
pub fn order_service_in_memory(ledger: Arc<dyn InventoryLedger>) -> OrderService {
    let transport = MemoryTransport::new();
    transport.serve(
        Route::RESERVE,
        Arc::new(InventoryService::new(
            ledger,
            Arc::new(FaultInjector::default()),
        )),
    );
    transport.serve(
        Route::NOTIFY,
        Arc::new(NotificationService::new(Arc::new(FaultInjector::default()))),
    );
    OrderService::new(
        Arc::new(transport),
        Arc::new(MemoryOutbox::new()),
        OrderOptions::default(),
    )
}

/// Part A on loopback HTTP (ports 0), its durable ledger in `data_dir`;
/// returns it and its `POST /order` URL.
pub fn sync_rest_on_http(rt: &tokio::runtime::Runtime, data_dir: &Path) -> (SyncRest, String) {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        stock: STOCK.parse().expect("stock"),
        ..Config::default()
    };
    config.http.order_port = 0;
    config.http.inventory_port = 0;
    config.http.notification_port = 0;
    let system = rt
        .block_on(SyncRest::start(&config, SyncPart::All))
        .expect("Part A starts");
    let url = format!(
        "http://{}/order",
        system.order.as_ref().expect("order").server.addr()
    );
    (system, url)
}

/// `POST`s [`BODY`] to `url` and expects 201.
pub async fn post(client: &reqwest::Client, url: &str) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect("order sent");
    assert_eq!(resp.status().as_u16(), 201);
    resp.bytes().await.expect("body read");
}
