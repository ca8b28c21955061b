//! The transport conformance suite (`campusfood_testkit::conformance`) on
//! `KafkaTransport`, against a real broker:
//!
//! ```text
//! scripts/brokers.sh up kafka
//! cargo test -p campusfood-kafka --test conformance
//! ```
//!
//! Each check has its own topics and groups (a random suffix) and deletes
//! its topics at the end. Dead letters are read where the transport puts
//! them, from the route's dead-letter topic. Without a broker every check
//! fails, saying how to start it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::config::KafkaConfig;
use campusfood_core::transport::{
    DeadLetter, Delivery, Disposition, Handler, Route, SubscribeOptions, Subscription, Transport,
    headers,
};
use campusfood_kafka::KafkaTransport;
use campusfood_testkit::conformance::{DeadLetterView, Fresh, PubSubFactory};
use campusfood_testkit::{CleanUp, unique};

const NOT_RUNNING: &str =
    "Kafka is not running on 127.0.0.1:9092: start it with `scripts/brokers.sh up kafka`";

struct Kafka;

#[async_trait]
impl PubSubFactory for Kafka {
    async fn fresh(&self, check: &str) -> Fresh {
        let suffix = unique(check);
        let config = KafkaConfig {
            request_timeout: Duration::from_secs(5),
            commit_interval: Duration::from_millis(200),
            drain_timeout: Duration::from_millis(500),
            ..KafkaConfig::default()
        }
        .with_suffix(&suffix);
        let t = match KafkaTransport::connect(&config).await {
            Ok(t) => t,
            Err(e) => panic!("{NOT_RUNNING} ({e})"),
        };
        let view = DeadLetterTopic {
            transport: t.clone(),
            group: format!("dead-letters-{suffix}"),
            subscription: tokio::sync::Mutex::new(None),
            seen: Arc::default(),
        };
        // A topic of its own, created on first use, read from the earliest
        // offset by a group that has none: durable before anyone subscribes.
        Fresh::new(
            Arc::new(t.clone()),
            Route::new(format!("conformance-{suffix}")),
            view,
        )
        .keeping(CleanUp::new("the check's topics", async move {
            let topics = t.topics_containing(&suffix).await?;
            t.delete_topics(&topics).await
        }))
    }
}

/// Reads a route's dead letters from its dead-letter topic, with a
/// subscription of its own started at the first read.
struct DeadLetterTopic {
    transport: KafkaTransport,
    group: String,
    subscription: tokio::sync::Mutex<Option<Subscription>>,
    seen: Arc<Mutex<Vec<DeadLetter>>>,
}

/// Collects the dead letters read.
struct Collect {
    route: Route,
    seen: Arc<Mutex<Vec<DeadLetter>>>,
}

#[async_trait]
impl Handler for Collect {
    async fn handle(&self, delivery: Delivery) -> Disposition {
        let h = &delivery.message.headers;
        let mut seen = self.seen.lock().unwrap();
        let id = seen.len().to_string();
        seen.push(DeadLetter {
            id,
            route: self.route.clone(),
            reason: h[headers::DEATH_REASON].clone(),
            attempts: h[headers::ATTEMPTS].parse().unwrap(),
            message: delivery.message,
        });
        Disposition::Ack
    }
}

#[async_trait]
impl DeadLetterView for DeadLetterTopic {
    async fn dead_letters(&self, route: &Route) -> Vec<DeadLetter> {
        let mut subscription = self.subscription.lock().await;
        if subscription.is_none() {
            let topic = self.transport.topic_for(route).unwrap();
            let dead = Route::new(KafkaTransport::dead_letter_topic(&topic));
            let collect = Arc::new(Collect {
                route: route.clone(),
                seen: self.seen.clone(),
            });
            let options = SubscribeOptions {
                group: Some(self.group.clone()),
                ..SubscribeOptions::default()
            };
            *subscription = Some(
                self.transport
                    .subscribe(&dead, collect, options)
                    .await
                    .unwrap(),
            );
        }
        self.seen.lock().unwrap().clone()
    }
}

campusfood_testkit::pub_sub_suite!(Kafka);
