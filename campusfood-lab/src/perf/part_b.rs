//! Part B's figures: `async_rabbitmq order`, `inventory` and
//! `notification`, one process each in one folder, on the default queues.

use std::time::{Duration, Instant};

use campusfood_core::config::{HttpConfig, RabbitConfig, STOCK_ENV};
use campusfood_core::metric;
use campusfood_testkit::prometheus::Scrape;

use super::part_a::STOCK;
use super::process::{Service, Workdir, process_err, wait_ready};
use super::wrk::Wrk;
use super::{FigureId, Measured, PerfOptions};
use crate::LabError;

/// RabbitMQ's management API, where leftovers in the default queues are
/// purged before the run.
const MANAGEMENT: &str = campusfood_testkit::rabbitmq::MANAGEMENT;

/// How long the drain may take before the figure is given up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);

pub(super) async fn measure(options: &PerfOptions) -> Vec<Measured> {
    match run(options).await {
        Ok(figures) => figures,
        Err(e) => vec![
            Measured::failed(FigureId::BAcceptanceP50, &e),
            Measured::failed(FigureId::BDrain, &e),
        ],
    }
}

struct Ports {
    order: String,
    inventory: String,
}

async fn run(options: &PerfOptions) -> Result<Vec<Measured>, LabError> {
    let config = RabbitConfig::default();
    let client = reqwest::Client::new();
    purge(&client, &config).await?;
    let work = Workdir::new(&options.logs)?;
    let bin = options.bin_dir.join("async_rabbitmq");
    let stock = [(STOCK_ENV, STOCK.to_owned())];
    let ports = Ports {
        order: format!("http://127.0.0.1:{}", config.order_port),
        inventory: format!("http://127.0.0.1:{}", config.inventory_port),
    };
    let inventory_log = work.log("async_rabbitmq-inventory")?;
    let start_inventory =
        || Service::spawn(&bin, &["inventory"], &stock, work.path(), &inventory_log);
    let mut inventory = start_inventory()?;
    let notification_log = work.log("async_rabbitmq-notification")?;
    let mut notification =
        Service::spawn(&bin, &["notification"], &[], work.path(), &notification_log)?;
    let order_log = work.log("async_rabbitmq-order")?;
    let mut order = Service::spawn(&bin, &["order"], &[], work.path(), &order_log)?;
    let ready = Duration::from_secs(30);
    wait_ready(
        &client,
        &mut inventory,
        &format!("{}/health", ports.inventory),
        &inventory_log,
        ready,
    )
    .await?;
    wait_ready(
        &client,
        &mut order,
        &format!("{}/health", ports.order),
        &order_log,
        ready,
    )
    .await?;
    notification.check_running(&notification_log)?;

    let url = format!("{}{}", ports.order, HttpConfig::ORDER_PATH);
    let wrk = Wrk {
        bin: &options.wrk,
        dir: work.path(),
    };
    wrk.run(1, 1, options.warmup, &url).await?;
    let acceptance = wrk.run(1, 1, options.duration, &url).await?;
    if acceptance.errors > 0 {
        return Err(process_err(
            "Part B acceptance",
            format!(
                "{} failed requests (see {})",
                acceptance.errors,
                order_log.display()
            ),
        ));
    }

    // Everything accepted so far is processed before inventory stops.
    let placed = counter(&client, &ports.order, metric::ORDERS_PLACED, &[]).await?;
    wait_acked(&client, &ports.inventory, placed, Duration::from_secs(60)).await?;
    inventory.stop().await?;

    let before = counter(&client, &ports.order, metric::ORDERS_PLACED, &[]).await?;
    let load = wrk.run(2, 16, options.drain_load, &url).await?;
    let backlog = counter(&client, &ports.order, metric::ORDERS_PLACED, &[]).await? - before;
    if load.errors > 0 || backlog == 0 {
        return Err(process_err(
            "Part B load with inventory stopped",
            format!("{backlog} orders accepted, {} failed requests", load.errors),
        ));
    }
    let started = Instant::now();
    let mut inventory = start_inventory()?;
    let drained = loop {
        inventory.check_running(&inventory_log)?;
        if acked(&client, &ports.inventory).await.unwrap_or(0) >= backlog {
            break started.elapsed();
        }
        if started.elapsed() > DRAIN_DEADLINE {
            return Err(LabError::Deadline {
                what: format!("inventory to drain {backlog} orders"),
                after: DRAIN_DEADLINE,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    order.check_running(&order_log)?;
    for service in [inventory, notification, order] {
        service.stop().await?;
    }
    let rate = backlog as f64 / drained.as_secs_f64();
    Ok(vec![
        Measured::ok(
            FigureId::BAcceptanceP50,
            acceptance.p50_ms,
            format!(
                "p99 {:.2} ms, {:.0} orders/s",
                acceptance.p99_ms, acceptance.rps
            ),
        ),
        Measured::ok(
            FigureId::BDrain,
            rate,
            format!(
                "{backlog} orders accepted in {} s at {:.0}/s, drained in {:.2} s from inventory's start",
                options.drain_load.as_secs(),
                load.rps,
                drained.as_secs_f64()
            ),
        ),
    ])
}

/// Empties the default queues the services use, so that an earlier run's
/// leftovers are not counted as drained. A queue that does not exist yet is
/// fine.
async fn purge(client: &reqwest::Client, config: &RabbitConfig) -> Result<(), LabError> {
    let mut queues = vec![config.reserve_queue.clone(), config.notify_queue.clone()];
    for key in [
        &config.reserved_key,
        &config.failed_key,
        &config.order_notified_key,
    ] {
        queues.push(config.group_queue(&config.status_group, key));
    }
    for queue in queues {
        let url = format!("{MANAGEMENT}/queues/%2F/{queue}/contents");
        let response = client
            .delete(&url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .map_err(|source| LabError::Http {
                what: format!(
                    "purging {queue} through RabbitMQ's management API (start it: scripts/brokers.sh up rabbitmq)"
                ),
                source,
            })?;
        let status = response.status();
        if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
            return Err(LabError::Unexpected {
                what: format!("purging {queue}"),
                status: status.as_u16(),
                body: response.text().await.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// The sum of the counter `name` (with `labels`) on `base`'s `/metrics`.
async fn counter(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<u64, LabError> {
    let what = || format!("GET {base}{}", HttpConfig::METRICS_PATH);
    let text = client
        .get(format!("{base}{}", HttpConfig::METRICS_PATH))
        .send()
        .await
        .map_err(|source| LabError::Http {
            what: what(),
            source,
        })?
        .text()
        .await
        .map_err(|source| LabError::Http {
            what: what(),
            source,
        })?;
    let scrape = Scrape::parse(&text).map_err(|message| process_err(what(), message))?;
    Ok(scrape.sum(name, labels).unwrap_or(0.0) as u64)
}

/// Deliveries inventory has acked since it started.
async fn acked(client: &reqwest::Client, inventory: &str) -> Result<u64, LabError> {
    counter(
        client,
        inventory,
        metric::DELIVERIES,
        &[(metric::label::DISPOSITION, metric::disposition::ACK)],
    )
    .await
}

async fn wait_acked(
    client: &reqwest::Client,
    inventory: &str,
    n: u64,
    deadline: Duration,
) -> Result<(), LabError> {
    let start = Instant::now();
    while acked(client, inventory).await? < n {
        if start.elapsed() > deadline {
            return Err(LabError::Deadline {
                what: format!("inventory to ack {n} orders"),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
