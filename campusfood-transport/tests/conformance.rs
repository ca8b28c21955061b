//! The transport conformance suite (`campusfood_testkit::conformance`) on
//! this crate's transports: memory (publish/subscribe and request/reply),
//! HTTP (request/reply) and, with feature `rabbitmq`, RabbitMQ:
//!
//! ```text
//! scripts/brokers.sh up rabbitmq
//! cargo test -p campusfood-transport --features rabbitmq --test conformance
//! ```
//!
//! Without a broker the RabbitMQ checks fail, saying how to start it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::transport::{RequestHandler, Route, Transport};
use campusfood_testkit::conformance::{Fresh, PubSubFactory, ReadDeadLetters, RequestFactory};
use campusfood_transport::memory::MemoryTransport;

/// A drain short enough that an abandoned handler's message comes back
/// within the checks' deadline.
const DRAIN: Duration = Duration::from_millis(500);

struct Memory;

#[async_trait]
impl PubSubFactory for Memory {
    async fn fresh(&self, check: &str) -> Fresh {
        let t = Arc::new(MemoryTransport::new().with_drain_timeout(DRAIN));
        Fresh::new(t.clone(), Route::new(check.to_owned()), ReadDeadLetters(t))
    }
}

#[async_trait]
impl RequestFactory for Memory {
    async fn serving(
        &self,
        check: &str,
        handler: Arc<dyn RequestHandler>,
    ) -> (Arc<dyn Transport>, Route, Box<dyn Send + Sync>) {
        let t = MemoryTransport::new();
        let route = Route::new(check.to_owned());
        t.serve(route.clone(), handler);
        (Arc::new(t), route, Box::new(()))
    }
}

mod memory {
    campusfood_testkit::pub_sub_suite!(super::Memory);

    mod request {
        campusfood_testkit::request_suite!(super::super::Memory);
    }
}

#[cfg(feature = "http")]
mod http {
    use std::sync::Arc;

    use async_trait::async_trait;
    use campusfood_core::config::ServerLimits;
    use campusfood_core::task::BackgroundTask;
    use campusfood_core::transport::{RequestHandler, Route, Transport};
    use campusfood_testkit::conformance::RequestFactory;
    use campusfood_transport::http::{HttpTransport, handler_route, serve};

    struct Http;

    #[async_trait]
    impl RequestFactory for Http {
        async fn serving(
            &self,
            check: &str,
            handler: Arc<dyn RequestHandler>,
        ) -> (Arc<dyn Transport>, Route, Box<dyn Send + Sync>) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = axum::Router::new().route("/call", handler_route(handler, 1 << 20));
            let server = BackgroundTask::spawn(move |stop| async move {
                serve(
                    listener,
                    router,
                    ServerLimits::default(),
                    stop.into_stopped(),
                )
                .await
                .unwrap();
            });
            let route = Route::new(check.to_owned());
            let t = HttpTransport::new([(route.clone(), format!("http://{addr}/call"))]).unwrap();
            (Arc::new(t), route, Box::new(server))
        }
    }

    campusfood_testkit::request_suite!(Http);
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use std::sync::Arc;

    use async_trait::async_trait;
    use campusfood_core::config::RabbitConfig;
    use campusfood_core::transport::Route;
    use campusfood_testkit::CleanUp;
    use campusfood_testkit::conformance::{Fresh, PubSubFactory, ReadDeadLetters};
    use campusfood_testkit::rabbitmq::{MANAGEMENT, delete_prefixed, unique_prefix};
    use campusfood_transport::rabbitmq::RabbitTransport;

    const NOT_RUNNING: &str = "RabbitMQ is not running on 127.0.0.1:5672: start it with \
        `scripts/brokers.sh up rabbitmq`";

    struct Rabbit;

    #[async_trait]
    impl PubSubFactory for Rabbit {
        async fn fresh(&self, check: &str) -> Fresh {
            let prefix = unique_prefix(check);
            let mut config = RabbitConfig::with_prefix(&prefix);
            config.drain_timeout = super::DRAIN;
            let t = match RabbitTransport::connect(&config).await {
                Ok(t) => Arc::new(t),
                Err(e) => panic!("{NOT_RUNNING} ({e})"),
            };
            // The reserve queue: declared at connect, so durable before
            // anyone subscribes.
            Fresh::new(t.clone(), Route::ORDER_PLACED, ReadDeadLetters(t)).keeping(CleanUp::new(
                "the check's queues",
                async move {
                    delete_prefixed(MANAGEMENT, &format!("{prefix}."))
                        .await
                        .ok_or("the management API did not answer")
                },
            ))
        }
    }

    campusfood_testkit::pub_sub_suite!(Rabbit);
}
