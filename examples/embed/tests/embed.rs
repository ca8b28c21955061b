//! `cargo run --example embed` as users run it: the shipped binary, over
//! each transport. The broker runs need `scripts/brokers.sh up rabbitmq
//! kafka` and fail, saying so, when the broker is not there.

use std::process::Command;

const ORDERS: usize = 5;

/// Runs the example over `transport` in a namespace of its own and returns
/// its standard output; fails with its standard error when it fails.
fn embed(transport: &str) -> String {
    let namespace = campusfood_testkit::rabbitmq::unique_prefix("embed");
    let orders = ORDERS.to_string();
    let out = Command::new(campusfood_testkit::example_binary("embed"))
        .args(["--transport", transport, "--orders", &orders])
        .args(["--namespace", &namespace])
        .output()
        .expect("the embed example runs");
    assert!(
        out.status.success(),
        "embed --transport {transport} failed ({}); a broker run needs its broker \
         (`scripts/brokers.sh up {transport}`):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// One ticket per order, whatever the redeliveries, and inventory reserved
/// each one: orders go burger, pizza, sushi, burger, pizza.
fn assert_tickets(out: &str) {
    let tickets: Vec<&str> = out.lines().filter(|l| l.contains(" x ")).collect();
    assert_eq!(tickets.len(), ORDERS, "{out}");
    assert_eq!(
        tickets.iter().filter(|t| t.contains("burger")).count(),
        2,
        "{out}"
    );
    assert!(
        out.contains(&format!("{ORDERS} tickets; stock left: ")),
        "{out}"
    );
    assert!(
        out.contains("burger=98,") && out.contains("sushi=99,"),
        "{out}"
    );
}

#[test]
fn the_kitchen_runs_beside_inventory_in_memory() {
    assert_tickets(&embed("memory"));
}

#[test]
fn the_kitchen_runs_beside_inventory_over_rabbitmq() {
    assert_tickets(&embed("rabbitmq"));
}

#[test]
fn the_kitchen_runs_beside_inventory_over_kafka() {
    assert_tickets(&embed("kafka"));
}
