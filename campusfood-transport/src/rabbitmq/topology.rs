//! Routes to exchanges, routing keys and queues, and declaring them.
//!
//! Every name comes from [`RabbitConfig`]. Declarations are idempotent
//! (durable exchanges and queues with fixed arguments), so every process
//! declares what it uses at start and after every reconnect.

use std::collections::BTreeSet;
use std::sync::Mutex;

use amqprs::channel::{
    ExchangeDeclareArguments, ExchangeDeleteArguments, QueueBindArguments, QueueDeclareArguments,
    QueueDeleteArguments,
};
use amqprs::{FieldName, FieldTable, FieldValue};
use campusfood_core::config::RabbitConfig;
use campusfood_core::transport::Route;

use super::channel::{BrokerError, Chan, lock};

/// Where a publish goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
}

/// A queue a subscription consumes, with its retry and dead-letter queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueSpec {
    /// The queue consumed.
    pub(crate) queue: String,
    /// Its `x-dead-letter-exchange` argument (the contract gives the reserve
    /// queue one; other queues are declared without arguments).
    pub(crate) dead_letter_exchange_arg: Option<String>,
    /// `(exchange, routing key)` bindings.
    pub(crate) bindings: Vec<Destination>,
    /// Where a message waits out the retry delay: its messages expire back
    /// into [`queue`](Self::queue) through the default exchange.
    pub(crate) retry_queue: String,
    /// Where dead letters are published to.
    pub(crate) dead_letter: Destination,
    /// The dead-letter queue and the routing keys it is bound with on the
    /// dead-letter exchange.
    pub(crate) dead_letter_queue: String,
    dead_letter_keys: Vec<String>,
}

/// The route mapping and what has been declared (for
/// [`RabbitTransport::teardown`](super::RabbitTransport::teardown)).
#[derive(Debug)]
pub(crate) struct Topology {
    config: RabbitConfig,
    declared_queues: Mutex<BTreeSet<String>>,
    declared_exchanges: Mutex<BTreeSet<String>>,
}

/// AMQP's limit on queue, exchange and routing-key names.
const MAX_NAME: usize = 255;

fn check_name(name: &str) -> Result<(), BrokerError> {
    if name.len() > MAX_NAME {
        return Err(BrokerError::Name(name.chars().take(40).collect()));
    }
    Ok(())
}

/// Request/reply routes: RabbitMQ carries none of them.
fn is_request_route(route: &Route) -> bool {
    [Route::RESERVE, Route::RELEASE, Route::NOTIFY].contains(route)
}

/// The routes of the contract's topology (all others are an application's).
fn is_contract_route(route: &Route) -> bool {
    [
        Route::ORDER_PLACED,
        Route::INVENTORY_RESERVED,
        Route::INVENTORY_FAILED,
        Route::ORDER_NOTIFIED,
    ]
    .contains(route)
}

impl Topology {
    /// The mapping of `config`; fails if a name is longer than AMQP allows.
    pub(crate) fn new(config: RabbitConfig) -> Result<Self, BrokerError> {
        let t = Self {
            config,
            declared_queues: Mutex::default(),
            declared_exchanges: Mutex::default(),
        };
        for spec in t.contract_queues() {
            for name in [&spec.queue, &spec.retry_queue, &spec.dead_letter_queue] {
                check_name(name)?;
            }
        }
        for name in [
            &t.config.orders_exchange,
            &t.config.inventory_exchange,
            &t.config.dead_letter_exchange,
            &t.config.order_placed_key,
            &t.config.reserved_key,
            &t.config.failed_key,
            &t.config.order_notified_key,
        ] {
            check_name(name)?;
        }
        Ok(t)
    }

    pub(crate) fn config(&self) -> &RabbitConfig {
        &self.config
    }

    /// Where `route`'s messages are published, if it has a destination.
    pub(crate) fn publish_target(&self, route: &Route) -> Option<Destination> {
        let c = &self.config;
        let (exchange, key) = if *route == Route::ORDER_PLACED {
            (&c.orders_exchange, &c.order_placed_key)
        } else if *route == Route::INVENTORY_RESERVED {
            (&c.inventory_exchange, &c.reserved_key)
        } else if *route == Route::INVENTORY_FAILED {
            (&c.inventory_exchange, &c.failed_key)
        } else if *route == Route::ORDER_NOTIFIED {
            (&c.orders_exchange, &c.order_notified_key)
        } else if is_request_route(route) || route.as_str().len() > MAX_NAME {
            return None;
        } else {
            // A route an embedding application adds: the orders exchange,
            // keyed by the route's name.
            return Some(Destination {
                exchange: c.orders_exchange.clone(),
                routing_key: route.as_str().to_owned(),
            });
        };
        Some(Destination {
            exchange: exchange.clone(),
            routing_key: key.clone(),
        })
    }

    /// The queue `group` consumes `route` from: with no group, the
    /// contract's queue (`orders.reserve`, `inventory.notify`; for
    /// `inventory.failed` and `order.notified`, the status group's); with a
    /// group, `<group>.<routing key>`, bound to the route's exchange and key.
    pub(crate) fn queue_for(
        &self,
        route: &Route,
        group: Option<&str>,
    ) -> Result<QueueSpec, BrokerError> {
        let Some(target) = self.publish_target(route) else {
            return Err(BrokerError::NoRoute);
        };
        let queue = self.queue_name(route, &target, group);
        let spec = self.spec(queue, target);
        for name in [&spec.queue, &spec.retry_queue, &spec.dead_letter_queue] {
            check_name(name)?;
        }
        Ok(spec)
    }

    fn queue_name(&self, route: &Route, target: &Destination, group: Option<&str>) -> String {
        let c = &self.config;
        match group {
            Some(g) => c.group_queue(g, &target.routing_key),
            None if *route == Route::ORDER_PLACED => c.reserve_queue.clone(),
            None if *route == Route::INVENTORY_RESERVED => c.notify_queue.clone(),
            None if !is_contract_route(route) => {
                c.group_queue(&c.orders_exchange, &target.routing_key)
            }
            None => c.group_queue(&c.status_group, &target.routing_key),
        }
    }

    fn spec(&self, queue: String, binding: Destination) -> QueueSpec {
        let c = &self.config;
        let dead_letter_queue = c.dead_letter_queue_of(&queue);
        let contract = queue == c.reserve_queue;
        // The reserve queue's dead letters take the contract's path:
        // `orders.dlx` with the message's own key (`order.placed`). Its
        // queue name is bound too, for messages the broker dead-letters
        // after a retry (which routes them by queue name).
        let (dead_letter_key, dead_letter_keys) = if contract {
            (
                c.order_placed_key.clone(),
                vec![c.order_placed_key.clone(), queue.clone()],
            )
        } else {
            (dead_letter_queue.clone(), vec![dead_letter_queue.clone()])
        };
        QueueSpec {
            retry_queue: c.retry_queue(&queue),
            dead_letter_exchange_arg: contract.then(|| c.dead_letter_exchange.clone()),
            bindings: vec![binding],
            dead_letter: Destination {
                exchange: c.dead_letter_exchange.clone(),
                routing_key: dead_letter_key,
            },
            dead_letter_queue,
            dead_letter_keys,
            queue,
        }
    }

    /// The queues declared at connect: the contract's, and the status
    /// group's so that inventory outcomes always have a queue.
    fn contract_queues(&self) -> Vec<QueueSpec> {
        let c = &self.config;
        let mut specs = Vec::new();
        for (route, group) in [
            (Route::ORDER_PLACED, None),
            (Route::INVENTORY_RESERVED, None),
            (Route::INVENTORY_RESERVED, Some(c.status_group.as_str())),
            (Route::INVENTORY_FAILED, None),
            (Route::ORDER_NOTIFIED, None),
        ] {
            if let Some(target) = self.publish_target(&route) {
                let queue = self.queue_name(&route, &target, group);
                specs.push(self.spec(queue, target));
            }
        }
        specs
    }

    /// Declares the contract: exchanges `orders`, `orders.dlx`,
    /// `inventory`; queues `orders.reserve` (dead-lettering to
    /// `orders.dlx`), `orders.dlq`, `inventory.notify` and the status
    /// group's two queues, with their bindings.
    pub(crate) async fn declare_contract(&self, chan: &Chan) -> Result<(), BrokerError> {
        let c = &self.config;
        for exchange in [
            &c.orders_exchange,
            &c.dead_letter_exchange,
            &c.inventory_exchange,
        ] {
            self.declare_exchange(chan, exchange).await?;
        }
        for spec in self.contract_queues() {
            self.declare_queue(
                chan,
                &spec.queue,
                spec.dead_letter_exchange_arg.as_deref(),
                None,
            )
            .await?;
            for b in &spec.bindings {
                self.bind(chan, &spec.queue, &b.exchange, &b.routing_key)
                    .await?;
            }
            if spec.dead_letter_exchange_arg.is_some() {
                self.declare_dead_letter_queue(chan, &spec).await?;
            }
        }
        Ok(())
    }

    /// Declares what a subscription to `spec` needs beyond the contract:
    /// the queue and its bindings (again, for group queues), its retry queue
    /// and its dead-letter queue.
    pub(crate) async fn declare_consumed(
        &self,
        chan: &Chan,
        spec: &QueueSpec,
    ) -> Result<(), BrokerError> {
        for b in &spec.bindings {
            self.declare_exchange(chan, &b.exchange).await?;
        }
        self.declare_queue(
            chan,
            &spec.queue,
            spec.dead_letter_exchange_arg.as_deref(),
            None,
        )
        .await?;
        for b in &spec.bindings {
            self.bind(chan, &spec.queue, &b.exchange, &b.routing_key)
                .await?;
        }
        // Expired messages go back to the queue by name, through the
        // default exchange.
        self.declare_queue(chan, &spec.retry_queue, Some(""), Some(&spec.queue))
            .await?;
        self.declare_dead_letter_queue(chan, spec).await
    }

    /// Declares `spec`'s dead-letter exchange and queue, bound.
    pub(crate) async fn declare_dead_letter_queue(
        &self,
        chan: &Chan,
        spec: &QueueSpec,
    ) -> Result<(), BrokerError> {
        self.declare_exchange(chan, &spec.dead_letter.exchange)
            .await?;
        self.declare_queue(chan, &spec.dead_letter_queue, None, None)
            .await?;
        for key in &spec.dead_letter_keys {
            self.bind(
                chan,
                &spec.dead_letter_queue,
                &spec.dead_letter.exchange,
                key,
            )
            .await?;
        }
        Ok(())
    }

    async fn declare_exchange(&self, chan: &Chan, name: &str) -> Result<(), BrokerError> {
        chan.channel
            .exchange_declare(
                ExchangeDeclareArguments::new(name, "direct")
                    .durable(true)
                    .finish(),
            )
            .await
            .map_err(|e| chan.explain(e))?;
        lock(&self.declared_exchanges).insert(name.to_owned());
        Ok(())
    }

    async fn declare_queue(
        &self,
        chan: &Chan,
        name: &str,
        dead_letter_exchange: Option<&str>,
        dead_letter_routing_key: Option<&str>,
    ) -> Result<(), BrokerError> {
        let mut args = FieldTable::new();
        for (arg, value) in [
            ("x-dead-letter-exchange", dead_letter_exchange),
            ("x-dead-letter-routing-key", dead_letter_routing_key),
        ] {
            if let (Ok(arg), Some(Ok(value))) =
                (FieldName::try_from(arg), value.map(TryInto::try_into))
            {
                args.insert(arg, FieldValue::S(value));
            }
        }
        chan.channel
            .queue_declare(
                QueueDeclareArguments::durable_client_named(name)
                    .arguments(args)
                    .finish(),
            )
            .await
            .map_err(|e| chan.explain(e))?;
        lock(&self.declared_queues).insert(name.to_owned());
        Ok(())
    }

    async fn bind(
        &self,
        chan: &Chan,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), BrokerError> {
        chan.channel
            .queue_bind(QueueBindArguments::new(queue, exchange, key))
            .await
            .map_err(|e| chan.explain(e))
    }

    /// Deletes every queue and exchange this process declared.
    pub(crate) async fn delete_declared(&self, chan: &Chan) -> Result<(), BrokerError> {
        let queues = std::mem::take(&mut *lock(&self.declared_queues));
        let exchanges = std::mem::take(&mut *lock(&self.declared_exchanges));
        for queue in &queues {
            chan.channel
                .queue_delete(QueueDeleteArguments::new(queue))
                .await
                .map_err(|e| chan.explain(e))?;
        }
        for exchange in &exchanges {
            chan.channel
                .exchange_delete(ExchangeDeleteArguments::new(exchange))
                .await
                .map_err(|e| chan.explain(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_the_contract() {
        let t = Topology::new(RabbitConfig::default()).unwrap();
        let d = t.publish_target(&Route::ORDER_PLACED).unwrap();
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("orders", "order.placed")
        );
        let d = t.publish_target(&Route::INVENTORY_FAILED).unwrap();
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("inventory", "inventory.failed")
        );
        assert!(t.publish_target(&Route::RESERVE).is_none());

        let q = t.queue_for(&Route::ORDER_PLACED, None).unwrap();
        assert_eq!(q.queue, "orders.reserve");
        assert_eq!(q.dead_letter_exchange_arg.as_deref(), Some("orders.dlx"));
        assert_eq!(q.retry_queue, "orders.reserve.retry");
        assert_eq!(q.dead_letter_queue, "orders.dlq");
        assert_eq!(q.dead_letter.routing_key, "order.placed");

        let q = t.queue_for(&Route::INVENTORY_RESERVED, None).unwrap();
        assert_eq!(q.queue, "inventory.notify");
        assert_eq!(q.dead_letter_exchange_arg, None);
        assert_eq!(q.dead_letter_queue, "inventory.notify.dlq");

        let q = t.queue_for(&Route::INVENTORY_FAILED, None).unwrap();
        assert_eq!(q.queue, "orders.status.inventory.failed");
        let d = t.publish_target(&Route::ORDER_NOTIFIED).unwrap();
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("orders", "order.notified")
        );
        let q = t.queue_for(&Route::ORDER_NOTIFIED, None).unwrap();
        assert_eq!(q.queue, "orders.status.order.notified");
        assert_eq!(q.dead_letter_queue, "orders.status.order.notified.dlq");
        let q = t
            .queue_for(&Route::INVENTORY_RESERVED, Some("orders.status"))
            .unwrap();
        assert_eq!(q.queue, "orders.status.inventory.reserved");
        let ticket = Route::new("kitchen.ticket");
        let d = t.publish_target(&ticket).unwrap();
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str()),
            ("orders", "kitchen.ticket")
        );
        let q = t.queue_for(&ticket, None).unwrap();
        assert_eq!(q.queue, "orders.kitchen.ticket");
        assert_eq!(q.dead_letter_queue, "orders.kitchen.ticket.dlq");
        assert_eq!(
            t.queue_for(&ticket, Some("kitchen")).unwrap().queue,
            "kitchen.kitchen.ticket"
        );
        assert!(t.publish_target(&Route::new("x".repeat(300))).is_none());
        assert!(matches!(
            t.queue_for(&Route::NOTIFY, None),
            Err(BrokerError::NoRoute)
        ));
        assert!(matches!(
            t.queue_for(&Route::ORDER_PLACED, Some(&"g".repeat(300))),
            Err(BrokerError::Name(_))
        ));
    }
}
