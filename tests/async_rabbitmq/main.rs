//! The asynchronous architecture end to end: Order → bus → Inventory → bus
//! → Notification, with HTTP on ephemeral ports. Every scenario runs over
//! the in-memory transport and over a real RabbitMQ broker
//! (`scripts/brokers.sh up rabbitmq`; each test uses its own names), and
//! all but one also over Kafka (`scripts/brokers.sh up kafka`).

mod harness;
mod rabbitmq_faults;
mod scenarios;

/// One test per listed scenario in a module per bus, each with the app
/// `$app(test name, stock)` makes.
macro_rules! scenarios_on {
    ($($bus:ident => $app:path),+ ; $list:tt) => {
        $( scenarios_on!(@bus $bus, $app, $list); )+
    };
    (@bus $bus:ident, $app:path, [$($name:ident($stock:literal)),* $(,)?]) => {
        mod $bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::scenarios::$name($app(stringify!($name), $stock).await).await;
                }
            )*
        }
    };
}

/// The in-memory app, named like the brokers' (it needs no name).
async fn in_memory(_test: &str, stock: &str) -> harness::App {
    harness::memory(stock)
}

scenarios_on!(memory => crate::in_memory, rabbitmq => crate::harness::rabbitmq; [
    baseline_orders_flow_to_notified("burger=100"),
    backlog_waits_for_inventory_and_drains_exactly_once("burger=100"),
    a_duplicate_order_placed_reserves_and_notifies_once("burger=100,pizza=100"),
    poison_messages_are_dead_lettered_and_valid_orders_keep_flowing("burger=100"),
    oversized_poison_is_dead_lettered_with_a_bounded_reason("burger=100"),
    orders_written_by_the_original_services_are_reserved_and_notified("burger=100"),
    injected_failures_retry_with_a_bound_then_dead_letter_and_replay_succeeds("burger=100"),
    orders_are_accepted_while_publishing_fails_and_published_later("burger=100"),
    bad_input_is_refused_and_nothing_is_published("burger=100"),
    a_delay_taken_back_frees_the_deliveries_it_holds("burger=100"),
    timelines_tell_each_orders_attempts_and_dead_letters("burger=100"),
]);

// All but `a_delay_taken_back_frees_the_deliveries_it_holds`: it counts the
// deliveries a prefetch window holds, and a Kafka subscription handles one
// record at a time (`prefetch` is not used there).
scenarios_on!(kafka => crate::harness::kafka; [
    baseline_orders_flow_to_notified("burger=100"),
    backlog_waits_for_inventory_and_drains_exactly_once("burger=100"),
    a_duplicate_order_placed_reserves_and_notifies_once("burger=100,pizza=100"),
    poison_messages_are_dead_lettered_and_valid_orders_keep_flowing("burger=100"),
    oversized_poison_is_dead_lettered_with_a_bounded_reason("burger=100"),
    orders_written_by_the_original_services_are_reserved_and_notified("burger=100"),
    injected_failures_retry_with_a_bound_then_dead_letter_and_replay_succeeds("burger=100"),
    orders_are_accepted_while_publishing_fails_and_published_later("burger=100"),
    bad_input_is_refused_and_nothing_is_published("burger=100"),
    timelines_tell_each_orders_attempts_and_dead_letters("burger=100"),
]);

/// Over Kafka's one inventory topic (Part C's contract) the routes are not
/// distinct, and the flow refuses to start rather than mix up outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_refuses_a_transport_whose_routes_are_not_distinct() {
    use campusfood::core::transport::TransportError;
    use campusfood::services::async_rabbitmq::{AsyncPart, AsyncSystem};
    use campusfood::services::server::StartError;

    let app = harness::kafka_with_one_inventory_topic("not_distinct", "burger=1").await;
    let refused = AsyncSystem::start(
        &app.config,
        AsyncPart::All,
        &app.options,
        app.bus.transport(),
        app.stores.clone(),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(StartError::Transport(TransportError::Unsupported { .. }))
        ),
        "{:?}",
        refused.err()
    );
}
