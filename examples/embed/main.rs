//! An application of its own on the campusfood SDK: a kitchen that turns
//! each placed order into a ticket on its own route, beside the SDK's
//! inventory (its reserve worker and ledger), over any transport.
//!
//! ```sh
//! cargo run --example embed                                # in memory, no broker
//! scripts/brokers.sh up rabbitmq && cargo run --example embed -- --transport rabbitmq
//! scripts/brokers.sh up kafka && cargo run --example embed -- --transport kafka --orders 10
//! ```

use std::{collections::BTreeSet, io::stderr, sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use campusfood_core::ledger::{InventoryLedger, MemoryLedger};
use campusfood_core::order::{Order, OrderStatus, PlaceOrder};
use campusfood_core::transport::{
    Delivery, Disposition, Handler, Message, Route, SubscribeOptions, Subscription, Transport,
};
use campusfood_core::{Config, events::OrderPlaced, stock::StockSpec};
use campusfood_kafka::KafkaTransport;
use campusfood_services::{async_rabbitmq::workers, inventory::InventoryService};
use campusfood_transport::{memory::MemoryTransport, rabbitmq::RabbitTransport};
use clap::Parser;
use futures::future::join_all;
use tokio::{sync::mpsc, time::Instant, time::sleep, time::timeout_at};

#[derive(Parser, Debug)]
#[command(about = "A kitchen on the campusfood SDK, beside its inventory")]
struct Cli {
    /// Where the messages travel.
    #[arg(long, default_value = "memory", value_parser = ["memory", "rabbitmq", "kafka"])]
    transport: String,
    /// Orders to place; exits once each has its ticket and its reservation.
    #[arg(long, default_value_t = 3)]
    orders: usize,
    /// Prefix of this run's queues, topics and groups.
    #[arg(long, default_value_t = format!("embed-{}", std::process::id()))]
    namespace: String,
}

/// The kitchen: its own handler of `order.placed`; tickets go to its route.
struct Kitchen(Arc<dyn Transport>, Route);

#[async_trait]
impl Handler for Kitchen {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let placed: OrderPlaced = match workers::decode_or_poison(&delivery) {
            Ok(placed) => placed,
            Err(poison) => return poison,
        };
        let order = placed.order_id.as_str();
        let ticket = Message::json(&format!("{} x {} for {order}", placed.qty, placed.item));
        let published = async { self.0.publish(&self.1, ticket?.with_key(order)).await }.await;
        let reason = match published {
            Ok(()) => return Disposition::Ack,
            Err(e) => e.to_string(),
        };
        Disposition::Retry { reason }
    }
}

/// The pass: hands each ticket and its order to `main` (at least once).
struct Pass(mpsc::UnboundedSender<(Option<String>, String)>);

#[async_trait]
impl Handler for Pass {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let ticket = match workers::decode_or_poison(&delivery) {
            Ok(ticket) => ticket,
            Err(poison) => return poison,
        };
        let _ = self.0.send((delivery.message.key, ticket));
        Disposition::Ack
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_writer(stderr).init();
    let ns = &cli.namespace;
    let config = Config::from_env()?;
    let hint = format!("start it with `scripts/brokers.sh up {}`", cli.transport);
    let (mut rabbit, mut kafka) = (None, None);
    let transport: Arc<dyn Transport> = match cli.transport.as_str() {
        "rabbitmq" => {
            let connected = RabbitTransport::connect(&config.rabbitmq.prefixed(ns)).await;
            Arc::new(rabbit.insert(connected.context(hint)?).clone())
        }
        "kafka" => {
            let connected = KafkaTransport::connect(&config.kafka.with_suffix(ns)).await;
            Arc::new(kafka.insert(connected.context(hint)?).clone())
        }
        _ => Arc::new(MemoryTransport::new()),
    };
    // The SDK's inventory: its ledger and its reserve worker, as they are.
    let ledger: Arc<dyn InventoryLedger> = Arc::new(MemoryLedger::new(&config.stock));
    let inventory = Arc::new(InventoryService::new(ledger.clone(), Arc::default()));
    let reserve = Arc::new(workers::ReserveWorker::new(inventory, transport.clone()));
    // The application's own: a consumer group beside inventory's, a route.
    let tickets = Route::new(format!("{ns}.kitchen.ticket"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let kitchen = Arc::new(Kitchen(transport.clone(), tickets.clone()));
    let mut subscriptions = Vec::new();
    for (route, handler, group) in [
        (&tickets, Arc::new(Pass(tx)) as Arc<dyn Handler>, None),
        (&Route::ORDER_PLACED, kitchen, Some(format!("{ns}-kitchen"))),
        (&Route::ORDER_PLACED, reserve, None),
    ] {
        let options = SubscribeOptions {
            group,
            ..Default::default()
        };
        subscriptions.push(transport.subscribe(route, handler, options).await?);
    }
    for n in 0..cli.orders {
        let dish = ["burger", "pizza", "sushi"][n % 3];
        let place = PlaceOrder::from_json(format!(r#"{{"item":"{dish}","qty":1}}"#).as_bytes())?;
        let placed = OrderPlaced::from(&Order::new(place, OrderStatus::Placed));
        let message = Message::json(&placed)?.with_key(placed.order_id.as_str());
        transport.publish(&Route::ORDER_PLACED, message).await?;
    }
    let (deadline, mut seen) = (Instant::now() + Duration::from_secs(60), BTreeSet::new());
    while seen.len() < cli.orders {
        let next = timeout_at(deadline, rx.recv()).await?;
        let (order, ticket) = next.context("pass closed")?;
        if seen.insert(order) {
            println!("{ticket}");
        }
    }
    while ledger.reservation_count().await? < cli.orders as u64 {
        anyhow::ensure!(Instant::now() < deadline, "reservations fell behind");
        sleep(Duration::from_millis(50)).await;
    }
    let stock = StockSpec::from_levels(ledger.stock().await?);
    println!("{} tickets; stock left: {stock}", seen.len());
    join_all(subscriptions.into_iter().map(Subscription::stop)).await;
    if let Some(r) = rabbit {
        r.teardown().await?;
    }
    if let Some(k) = kafka {
        let c = k.config().clone();
        let topics = [c.order_topic, c.inventory_topic, tickets.to_string()];
        k.delete_topics(&topics).await?;
    }
    Ok(())
}
