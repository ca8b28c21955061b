//! RabbitMQ clean-up through the management API, for tests that declare
//! their own queues and exchanges under a prefix.

use serde_json::Value;

/// The management API of `scripts/brokers.sh up rabbitmq`.
pub const MANAGEMENT: &str = "http://127.0.0.1:15672/api";

/// The prefix of every test's names: `scripts/brokers.sh up` sets a broker
/// policy that expires such queues after ten idle minutes, so a failed test
/// (which skips its teardown) leaves nothing behind for long.
pub const TEST_PREFIX: &str = "cftest";

/// A unique name prefix for one test's exchanges and queues:
/// `cftest-<test>-<random>`.
pub fn unique_prefix(test: &str) -> String {
    format!("{TEST_PREFIX}-{}", crate::unique(test))
}

/// Deletes every queue and exchange of the default vhost whose name starts
/// with `prefix`, through the management API at `management` (guest/guest).
/// `None` when the API did not answer as expected.
pub async fn delete_prefixed(management: &str, prefix: &str) -> Option<()> {
    let client = reqwest::Client::new();
    for kind in ["queues", "exchanges"] {
        let names: Vec<Value> = client
            .get(format!("{management}/{kind}/%2F?columns=name"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        for name in names.iter().filter_map(|v| v["name"].as_str()) {
            if name.starts_with(prefix) {
                client
                    .delete(format!("{management}/{kind}/%2F/{name}"))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .ok()?;
            }
        }
    }
    Some(())
}
