//! X3 — scale out: one vs three inventory instances competing for one
//! RabbitMQ queue, each deciding against an embedded ledger of its own or
//! against one ledger that all share in Postgres.
//!
//! The same workload in each of the four runs: `orders` orders of one item
//! from 16 clients, with `stock` of it (half the orders, so that stock runs
//! out). With one instance the embedded ledger is exact; with three, each
//! instance has its own copy of the stock, so together they sell up to
//! three times what exists — the oversell a scaled-out service shows when
//! its state is not shared. On the shared ledger, 1 and 3 instances sell
//! exactly the stock.
//!
//! Knobs: `--set x3.orders=N` (full 2,000, fast 200), `--set x3.stock=N`
//! (half the orders), `--set rabbitmq.url=…`, `--set database.url=…`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use campusfood_core::config::{DatabaseConfig, RabbitConfig};
use campusfood_core::ledger::{InventoryLedger, RedbLedger, ReserveOutcome};
use campusfood_core::transport::Transport;
use campusfood_core::{Config, Item, OrderId, OrderStatus};
use campusfood_services::async_rabbitmq::{AsyncOptions, AsyncPart, AsyncStores, AsyncSystem};
use campusfood_services::stores::MemoryOrderStore;
use campusfood_services::stores::MemoryProcessedIds;
use campusfood_services::stores::postgres::{PgLedger, Postgres};
use campusfood_transport::rabbitmq::RabbitTransport;

use crate::async_rabbitmq::{RABBITMQ_HINT, RABBITMQ_URL_KEY};
use crate::context::Context;
use crate::error::{LabError, store_err};
use crate::experiment::{Axis, Cell, Chart, Experiment, Guide, Outcome, Series, Table};
use crate::load::{OrderClient, concurrent};
use crate::outcomes::{OrderClass, OrderOutcomes, OrderReading, with_refused};
use crate::sends::SendLog;
use crate::wait::until;

/// X3 — scale out.
#[derive(Debug, Clone, Copy)]
pub struct X3ScaleOut;

/// `--set database.url=…`: the Postgres of the shared ledger.
const DATABASE_URL_KEY: &str = "database.url";
/// Where `scripts/brokers.sh up postgres` puts it.
const DEFAULT_DATABASE_URL: &str = "postgres://campusfood:campusfood@127.0.0.1:5432/campusfood";
const POSTGRES_HINT: &str = "start it with `scripts/brokers.sh up postgres`";
/// Clients placing orders at once.
const CLIENTS: u64 = 16;

/// One of the four runs.
#[derive(Debug, Clone, Copy)]
struct Shape {
    instances: usize,
    shared: bool,
}

impl Shape {
    const ALL: [Self; 4] = [
        Self {
            instances: 1,
            shared: false,
        },
        Self {
            instances: 3,
            shared: false,
        },
        Self {
            instances: 1,
            shared: true,
        },
        Self {
            instances: 3,
            shared: true,
        },
    ];

    fn ledger(self) -> &'static str {
        if self.shared {
            "shared (Postgres)"
        } else {
            "one each (redb)"
        }
    }

    fn label(self) -> String {
        let s = if self.instances == 1 { "" } else { "s" };
        let ledger = if self.shared { "shared" } else { "embedded" };
        format!("{} instance{s}, {ledger}", self.instances)
    }

    fn key(self) -> String {
        let ledger = if self.shared { "shared" } else { "embedded" };
        format!("{}_{ledger}", self.instances)
    }
}

/// What one run measured.
struct Run {
    shape: Shape,
    accepted: u64,
    reserved: u64,
    failed: u64,
    /// Stock left in each ledger (one for the shared ledger).
    left: Vec<u64>,
    /// From the first order to the last one settled.
    elapsed: Duration,
    /// What became of each order: its reservation records in every
    /// ledger, the confirmations sent for it.
    readings: Vec<(String, OrderReading)>,
}

impl Run {
    fn orders_per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Places `orders` orders against `shape.instances` inventory instances
/// and waits until each is reserved or failed.
async fn run(
    ctx: &Context,
    shape: Shape,
    orders: u64,
    stock: u64,
    rabbit_url: &str,
    database: &DatabaseConfig,
) -> Result<Run, LabError> {
    let prefix = format!("lab-x3-{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
    let rabbit = RabbitConfig {
        url: rabbit_url.to_owned(),
        ..RabbitConfig::with_prefix(&prefix)
    };
    let transport =
        Arc::new(
            RabbitTransport::connect(&rabbit)
                .await
                .map_err(|e| LabError::Unavailable {
                    needs: format!("RabbitMQ ({e})"),
                    hint: RABBITMQ_HINT.to_owned(),
                })?,
        );
    let data = tempfile::Builder::new()
        .prefix("campusfood-lab-x3-")
        .tempdir()
        .map_err(|source| LabError::Io {
            what: "creating a temp data dir".to_owned(),
            source,
        })?;
    let item = Item::parse(&ctx.settings().item).map_err(|e| LabError::Setting {
        key: "item".to_owned(),
        message: e.to_string(),
    })?;
    let config = Config {
        data_dir: data.path().to_path_buf(),
        stock: format!("{item}={stock}").parse().map_err(
            |e: campusfood_core::stock::StockError| LabError::Setting {
                key: "stock".to_owned(),
                message: e.to_string(),
            },
        )?,
        rabbitmq: rabbit,
        ..Config::default()
    };
    let mut options = AsyncOptions::from_config(&config);
    options.order_port = 0;
    options.inventory_port = 0;
    options.relay_poll = Duration::from_millis(50);
    let bus: Arc<dyn Transport> = transport.clone();
    let start = |part, stores| AsyncSystem::start(&config, part, &options, bus.clone(), stores);

    let orders_store = Arc::new(MemoryOrderStore::new());
    let sends = Arc::new(SendLog::new(Arc::new(MemoryProcessedIds::new())));
    let mut systems = vec![
        start(
            AsyncPart::Order,
            AsyncStores {
                orders: Some(orders_store.clone()),
                ..AsyncStores::default()
            },
        )
        .await?,
        start(
            AsyncPart::Notification,
            AsyncStores {
                notified: Some(sends.clone()),
                ..AsyncStores::default()
            },
        )
        .await?,
    ];
    let mut ledgers: Vec<Arc<dyn InventoryLedger>> = Vec::new();
    for n in 0..shape.instances {
        let ledger: Arc<dyn InventoryLedger> = if shape.shared {
            // Each instance its own pool, as separate processes have.
            let pg = Postgres::connect(database)
                .await
                .map_err(|e| LabError::Unavailable {
                    needs: format!("Postgres ({e})"),
                    hint: POSTGRES_HINT.to_owned(),
                })?;
            let ledger = PgLedger::open(&pg, &prefix, &config.stock)
                .await
                .map_err(|e| store_err("opening the shared ledger")(e.to_string()))?;
            Arc::new(ledger)
        } else {
            let path = data.path().join(format!("inventory-{n}.redb"));
            let ledger = RedbLedger::open(path, &config.stock)
                .map_err(|e| store_err("opening an embedded ledger")(e.to_string()))?;
            Arc::new(ledger)
        };
        systems.push(
            start(
                AsyncPart::Inventory,
                AsyncStores {
                    ledger: Some(ledger.clone()),
                    ..AsyncStores::default()
                },
            )
            .await?,
        );
        if shape.shared && n > 0 {
            continue; // one ledger, read once
        }
        ledgers.push(ledger);
    }
    let order_addr = systems[0]
        .order
        .as_ref()
        .map(|o| o.server.addr())
        .ok_or_else(|| store_err("starting the order service")("no server".to_owned()))?;
    let client = OrderClient::new(&format!("http://{order_addr}"), None, item.as_str())?;

    let origin = Instant::now();
    let bar = ctx.bar(orders, &format!("orders ({})", shape.label()));
    let samples = concurrent(&client, orders, CLIENTS, origin, &bar).await?;
    bar.finish_and_clear();
    let ids: Vec<OrderId> = samples
        .iter()
        .filter_map(|s| s.order_id.as_deref())
        .filter_map(|id| OrderId::parse(id).ok())
        .collect();
    let settled = || async {
        let mut open = 0;
        for id in &ids {
            match orders_store_status(&orders_store, id).await {
                Some(OrderStatus::Placed) | None => open += 1,
                Some(_) => {}
            }
        }
        open == 0
    };
    until(
        "every accepted order to be reserved or failed",
        Duration::from_secs(120),
        settled,
    )
    .await?;
    let elapsed = origin.elapsed();
    let (mut reserved, mut failed) = (0, 0);
    for id in &ids {
        match orders_store_status(&orders_store, id).await {
            Some(OrderStatus::Failed) => failed += 1,
            Some(OrderStatus::Reserved | OrderStatus::Notified | OrderStatus::Confirmed) => {
                reserved += 1;
            }
            _ => {}
        }
    }
    let mut read = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut r = OrderReading {
            accepted: true,
            settle: true,
            notified: sends.records(id.as_str()),
            ..OrderReading::default()
        };
        for ledger in &ledgers {
            let record = ledger
                .reservation(id)
                .await
                .map_err(|e| store_err("reading a reservation")(e.to_string()))?;
            match record.map(|r| r.outcome) {
                Some(ReserveOutcome::Reserved { .. }) => r.reserved += 1,
                Some(_) => r.refused = true,
                None => {}
            }
        }
        read.push((id.to_string(), r));
    }
    let readings = with_refused(&samples, read);
    let mut left = Vec::new();
    for ledger in &ledgers {
        let levels = ledger
            .stock()
            .await
            .map_err(|e| store_err("reading stock")(e.to_string()))?;
        left.push(levels.get(&item).copied().unwrap_or(0));
    }
    for s in systems {
        s.stop().await;
    }
    if let Err(e) = transport.teardown().await {
        tracing::warn!(error = %e, "could not remove the run's queues");
    }
    Ok(Run {
        shape,
        accepted: ids.len() as u64,
        reserved,
        failed,
        left,
        elapsed,
        readings,
    })
}

async fn orders_store_status(store: &MemoryOrderStore, id: &OrderId) -> Option<OrderStatus> {
    use campusfood_services::stores::OrderStore;
    store.get(id).await.ok().flatten().map(|o| o.status)
}

#[async_trait]
impl Experiment for X3ScaleOut {
    fn id(&self) -> &'static str {
        "X3"
    }

    fn title(&self) -> &'static str {
        "Scale out: one vs three inventory instances, own ledgers vs one shared"
    }

    fn shows(&self) -> &'static str {
        "Three inventory instances compete for one queue. With a ledger each, \
         every instance sells from its own copy of the stock, so together they \
         sell more than exists; with one ledger shared in Postgres they sell \
         exactly the stock, whatever the number of instances."
    }

    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
        let orders = ctx.size("x3.orders", 2_000, 200)?;
        let stock = ctx.size("x3.stock", (orders / 2).max(1), (orders / 2).max(1))?;
        let settings = ctx.settings();
        let rabbit_url = settings.param(RABBITMQ_URL_KEY, RabbitConfig::default().url)?;
        let database = DatabaseConfig {
            url: Some(settings.param(DATABASE_URL_KEY, DEFAULT_DATABASE_URL.to_owned())?),
            schema: "campusfood_lab".to_owned(),
            ..DatabaseConfig::default()
        };
        let mut out = Outcome::default();
        out.setup("orders", orders);
        out.setup("stock", stock);
        out.setup("clients", CLIENTS);
        out.setup("database", database.redacted_url().unwrap_or_default());

        let mut runs = Vec::new();
        for shape in Shape::ALL {
            runs.push(run(ctx, shape, orders, stock, &rabbit_url, &database).await?);
        }

        let mut table = Table::new(
            "runs",
            "The same orders, by number of instances and where the stock is kept",
            &[
                "instances",
                "ledger",
                "accepted",
                "reserved",
                "failed",
                "stock",
                "sold past the stock",
                "stock left (per ledger)",
                "orders/s",
            ],
        );
        for r in &runs {
            table.row(vec![
                Cell::from(r.shape.instances as u64),
                r.shape.ledger().into(),
                r.accepted.into(),
                r.reserved.into(),
                r.failed.into(),
                stock.into(),
                r.reserved.saturating_sub(stock).into(),
                r.left
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
                r.orders_per_s().into(),
            ]);
            out.metric(format!("orders_per_s_{}", r.shape.key()), r.orders_per_s());
            out.metric(format!("reserved_{}", r.shape.key()), r.reserved as f64);
        }
        out.table(table);

        let names: Vec<String> = runs.iter().map(|r| r.shape.label()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let at = |f: &dyn Fn(&Run) -> f64| -> Vec<[f64; 2]> {
            runs.iter()
                .enumerate()
                .map(|(i, r)| [(i + 1) as f64, f(r)])
                .collect()
        };
        out.chart(
            Chart::new(
                "sold",
                "Orders reserved against the stock",
                Axis::categories("run", &names),
                Axis::linear("orders reserved"),
            )
            .with_series(Series::points("reserved", at(&|r| r.reserved as f64)))
            .with_guide(Guide::y("stock", stock as f64)),
        );
        out.chart(
            Chart::new(
                "throughput",
                "Orders settled per second (accepted to reserved or failed)",
                Axis::categories("run", &names),
                Axis::linear("orders/s"),
            )
            .with_series(Series::points("orders/s", at(&|r| r.orders_per_s()))),
        );

        let [one_own, three_own, one_shared, three_shared] =
            [&runs[0], &runs[1], &runs[2], &runs[3]];
        let all_answered = runs.iter().all(|r| r.reserved + r.failed == r.accepted);
        out.conclude(
            "every accepted order is settled, reserved or failed, in every run",
            all_answered && runs.iter().all(|r| r.accepted == orders),
            runs.iter()
                .map(|r| {
                    format!(
                        "{}: {} + {} of {}",
                        r.shape.label(),
                        r.reserved,
                        r.failed,
                        r.accepted
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
        out.conclude(
            "one instance with its own ledger sells exactly the stock",
            one_own.reserved == stock && one_own.left == [0],
            format!(
                "{} reserved of {stock}, {:?} left",
                one_own.reserved, one_own.left
            ),
        );
        out.conclude(
            "three instances with a ledger each sell more than the stock (the oversell)",
            three_own.reserved > stock,
            format!(
                "{} reserved of {stock}: {} sold that do not exist; left per ledger {:?}",
                three_own.reserved,
                three_own.reserved.saturating_sub(stock),
                three_own.left
            ),
        );
        out.conclude(
            "on one shared ledger, one and three instances each sell exactly the stock",
            [one_shared, three_shared]
                .iter()
                .all(|r| r.reserved == stock && r.left == [0]),
            format!(
                "1 instance: {} reserved, {:?} left; 3 instances: {} reserved, {:?} left",
                one_shared.reserved, one_shared.left, three_shared.reserved, three_shared.left
            ),
        );
        out.note(format!(
            "Throughput, shared ledger: {:.0} orders/s with 3 instances vs {:.0} with 1 ({:.2}×) — \
             all in one process on this machine, so more instances add consumers, not cores.",
            three_shared.orders_per_s(),
            one_shared.orders_per_s(),
            three_shared.orders_per_s() / one_shared.orders_per_s().max(1e-9)
        ));
        for r in &runs {
            out.orders(
                OrderOutcomes::new(
                    &r.shape.label(),
                    // Stock runs out: the orders after it fail; the
                    // others are reserved, and notified once sent.
                    &[
                        OrderClass::Notified,
                        OrderClass::Reserved,
                        OrderClass::Failed,
                    ],
                )
                .record_all(&r.readings),
            );
        }
        out.conclude_nothing_lost_nothing_twice();
        Ok(out)
    }
}
