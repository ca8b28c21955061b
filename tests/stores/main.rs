//! The stores every service keeps, run against each backend: the ledger
//! contract on memory, redb and Postgres; Postgres with several instances
//! (separate pools, as separate processes have) on one database; the
//! order store, outbox and processed ids in Postgres.
//!
//! `cargo test --test stores`. Postgres comes from
//! `CAMPUSFOOD_TEST_DATABASE_URL` (`scripts/test.sh` starts it and sets
//! it); each test works in a schema of its own and drops it at the end.

use std::sync::Arc;
use std::time::Duration;

use campusfood::core::OrderId;
use campusfood::core::config::DatabaseConfig;
use campusfood::core::ledger::{
    InventoryLedger, LedgerPeek, MemoryLedger, RedbLedger, ReserveOutcome,
};
use campusfood::core::order::{Order, OrderStatus, PlaceOrder};
use campusfood::core::outbox::{Outbox, OutboxEntry};
use campusfood::core::stock::StockSpec;
use campusfood::core::transport::{Message, Route};
use campusfood::services::stores::ProcessedIds;
use campusfood::services::stores::postgres::{
    PgLedger, PgOrderStore, PgOutbox, PgProcessedIds, Postgres,
};
use campusfood::services::stores::{OrderStore, Placed};
use campusfood::services::timeline::{Hop, Step, service};
use campusfood_testkit::ledger_contract::{self, item, qty};
use campusfood_testkit::postgres::{self, TestSchema};

fn spec(s: &str) -> StockSpec {
    s.parse().unwrap()
}

/// A schema of the test's own (dropped at the end), and pools on it.
struct Schema {
    schema: TestSchema,
    config: DatabaseConfig,
}

impl Schema {
    fn new(test: &str) -> Self {
        let schema = TestSchema::new(test);
        let config = DatabaseConfig {
            url: Some(postgres::url()),
            schema: schema.name().to_owned(),
            pool_size: 8,
        };
        Self { schema, config }
    }

    /// One instance's connection pool (each call: a new pool, as a separate
    /// process would have).
    async fn connect(&self) -> Postgres {
        Postgres::connect(&self.config)
            .await
            .unwrap_or_else(|e| panic!("{} ({e})", postgres::NOT_RUNNING))
    }

    /// A raw session in the schema, for what the stores do not offer.
    async fn raw(&self) -> tokio_postgres::Client {
        self.schema.session().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_ledger_meets_the_contract() {
    let ledger = MemoryLedger::new(&spec(ledger_contract::STOCK));
    ledger_contract::all(Arc::new(ledger)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_ledger_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        RedbLedger::open(dir.path().join("l.redb"), &spec(ledger_contract::STOCK)).unwrap();
    ledger_contract::all(Arc::new(ledger)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_ledger_meets_the_contract() {
    let schema = Schema::new("contract");
    let pg = schema.connect().await;
    let ledger = PgLedger::open(&pg, "inv", &spec(ledger_contract::STOCK))
        .await
        .unwrap();
    ledger_contract::all(Arc::new(ledger)).await;
}

/// `streaming_kafka trace` looks at the ledger beside its running writer:
/// nothing is created by a look, and a decision is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_ledger_peek_reads_beside_the_writer_and_creates_nothing() {
    let schema = Schema::new("peek");
    let pg = schema.connect().await;
    let (order, other) = (OrderId::generate(), OrderId::generate());
    assert_eq!(
        PgLedger::peek(&pg, "inv", &order).await.unwrap(),
        LedgerPeek::Missing
    );
    let ledger = PgLedger::open(&pg, "inv", &spec("burger=5")).await.unwrap();
    assert_eq!(
        ledger.stock().await.unwrap()[&item("burger")],
        5,
        "not created by the peek"
    );
    ledger
        .reserve(&order, &item("burger"), qty(2))
        .await
        .unwrap();
    let LedgerPeek::Decided { record } = PgLedger::peek(&pg, "inv", &order).await.unwrap() else {
        panic!("no decision");
    };
    assert_eq!(record.outcome, ReserveOutcome::Reserved { remaining: 3 });
    assert_eq!(
        PgLedger::peek(&pg, "inv", &other).await.unwrap(),
        LedgerPeek::Undecided
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_ledgers_of_several_instances_never_oversell_and_decide_once() {
    let schema = Schema::new("instances");
    // Three instances opening one ledger at once seed it once.
    let opened = futures::future::join_all((0..3).map(|_| async {
        let pg = schema.connect().await;
        PgLedger::open(&pg, "inv", &spec("burger=100"))
            .await
            .unwrap()
    }))
    .await;
    let ledgers: Vec<Arc<dyn InventoryLedger>> = opened
        .into_iter()
        .map(|l| Arc::new(l) as Arc<dyn InventoryLedger>)
        .collect();
    assert_eq!(ledgers[0].stock().await.unwrap()[&item("burger")], 100);

    // 300 orders for 100 burgers, from three instances at once.
    ledger_contract::oversell_attempt(&ledgers, 300, 100).await;
    for l in &ledgers {
        assert_eq!(l.stock().await.unwrap()[&item("burger")], 0);
    }
    assert_eq!(ledgers[1].reservation_count().await.unwrap(), 300);

    // One order sent to every instance 10 times at once: one decision.
    let more = {
        let pg = schema.connect().await;
        let l = PgLedger::open(&pg, "inv2", &spec("pizza=5")).await.unwrap();
        let l2 = PgLedger::open(&schema.connect().await, "inv2", &spec("pizza=999"))
            .await
            .unwrap();
        (l, l2)
    };
    let order = OrderId::generate();
    let calls = (0..20).map(|n| {
        let l: &PgLedger = if n % 2 == 0 { &more.0 } else { &more.1 };
        let order = order.clone();
        async move { l.reserve(&order, &item("pizza"), qty(2)).await.unwrap() }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers.iter().filter(|a| !a.is_repeat()).count(), 1);
    for a in &answers {
        assert_eq!(a.outcome(), ReserveOutcome::Reserved { remaining: 3 });
    }
    // The second open did not re-seed: an existing ledger keeps its levels.
    assert_eq!(more.1.stock().await.unwrap()[&item("pizza")], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_ledger_calls_made_together_share_transactions() {
    let schema = Schema::new("batch");
    let pg = schema.connect().await;
    let ledger = Arc::new(
        PgLedger::open(&pg, "inv", &spec("burger=100000"))
            .await
            .unwrap(),
    );
    const CALLS: usize = 2_000;
    let tasks: Vec<_> = (0..CALLS)
        .map(|_| {
            let l = ledger.clone();
            tokio::spawn(async move {
                l.reserve(&OrderId::generate(), &item("burger"), qty(1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        assert!(matches!(
            t.unwrap().outcome(),
            ReserveOutcome::Reserved { .. }
        ));
    }
    let batches = ledger.batches();
    println!("{CALLS} concurrent reservations in {batches} transactions");
    assert!(
        batches <= (CALLS / 4) as u64,
        "{CALLS} concurrent calls took {batches} transactions: not sharing them"
    );
    assert_eq!(
        ledger.stock().await.unwrap()[&item("burger")],
        100_000 - CALLS as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_ledger_a_decision_cut_off_before_its_commit_leaves_nothing() {
    let schema = Schema::new("crash");
    let pg = schema.connect().await;
    let ledger = PgLedger::open(&pg, "inv", &spec("burger=5")).await.unwrap();
    let order = OrderId::generate();

    // A process dies between claiming the order and committing: its
    // session ends with the transaction open.
    let doomed = schema.raw().await;
    doomed.batch_execute("BEGIN").await.unwrap();
    let row = doomed
        .query_one(
            "SELECT o_first, o_outcome FROM reserve('inv', $1, 'burger', 2)",
            &[&order.as_str()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let pid: i32 = doomed
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let killer = schema.raw().await;
    killer
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    assert!(
        doomed.batch_execute("COMMIT").await.is_err(),
        "the session is gone"
    );

    // Nothing of it remains: the order is decided afresh, once.
    assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 5);
    assert!(ledger.reservation(&order).await.unwrap().is_none());
    let r = ledger
        .reserve(&order, &item("burger"), qty(2))
        .await
        .unwrap();
    assert!(!r.is_repeat());
    assert_eq!(r.outcome(), ReserveOutcome::Reserved { remaining: 3 });
}

fn placed(item_name: &str) -> (Order, OutboxEntry) {
    let order = Order::new(
        PlaceOrder {
            item: item(item_name),
            qty: qty(1),
        },
        OrderStatus::Placed,
    );
    let message = Message::json(&serde_json::json!({"order_id": order.order_id})).unwrap();
    let entry = OutboxEntry::new(order.order_id.as_str(), &Route::ORDER_PLACED, &message);
    (order, entry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_order_store_is_shared_and_its_outbox_leased_to_one_relay() {
    let schema = Schema::new("orders");
    let lease = Duration::from_millis(500);
    let a = PgOrderStore::new(&schema.connect().await, "orders").with_lease(lease);
    let b = PgOrderStore::new(&schema.connect().await, "orders").with_lease(lease);

    let mut ids = Vec::new();
    for _ in 0..5 {
        let (order, entry) = placed("burger");
        a.place(&order, entry).await.unwrap();
        ids.push(order.order_id);
    }
    // An id stored already is refused by every instance, never overwritten.
    let (mut again, entry) = placed("pizza");
    again.order_id = ids[0].clone();
    assert_eq!(b.place(&again, entry).await.unwrap(), Placed::IdTaken);
    assert_eq!(b.outbox_len().await.unwrap(), 5);

    // Either instance answers for every order.
    let got = b.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(got.status, OrderStatus::Placed);
    assert_eq!(b.order_count().await.unwrap(), 5);

    // Status only moves forward, whichever instance applies the event.
    let notified = Hop::now(service::NOTIFICATION, Step::Notified).attempt(2);
    let late = Hop::now(service::INVENTORY, Step::Reserved).detail("late");
    let o = a
        .advance(&ids[0], OrderStatus::Notified, &notified)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status, OrderStatus::Notified);
    let o = b
        .advance(&ids[0], OrderStatus::Reserved, &late)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        o.status,
        OrderStatus::Notified,
        "a late event changes nothing"
    );
    assert!(
        a.advance(&OrderId::generate(), OrderStatus::Reserved, &late)
            .await
            .unwrap()
            .is_none()
    );
    // The same event again adds nothing.
    a.advance(&ids[0], OrderStatus::Reserved, &late)
        .await
        .unwrap();
    // Both hops on the order's timeline, in order, read by either instance.
    let (order, hops) = b.timeline(&ids[0]).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Notified);
    assert_eq!(hops, [notified, late]);
    assert!(a.timeline(&OrderId::generate()).await.unwrap().is_none());

    // The outbox: oldest first, handed to one relay at a time.
    let taken = a.outbox(3).await.unwrap();
    let taken_ids: Vec<_> = taken.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<_> = ids[..3].iter().map(|i| i.as_str().to_owned()).collect();
    assert_eq!(taken_ids, expected, "oldest first");
    let rest = b.outbox(10).await.unwrap();
    assert_eq!(
        rest.len(),
        2,
        "the other relay gets only what is not leased"
    );
    assert!(b.outbox(10).await.unwrap().is_empty());
    let sent = Hop::now(service::ORDER, Step::Published);
    a.published(taken_ids.clone(), &sent).await.unwrap();
    assert_eq!(a.outbox_len().await.unwrap(), 2);
    // Published once: a second relay's late bookkeeping adds no hop.
    b.published(taken_ids, &sent).await.unwrap();
    let (_, hops) = a.timeline(&ids[1]).await.unwrap().unwrap();
    assert_eq!(
        hops.iter().map(|h| h.step).collect::<Vec<_>>(),
        [Step::Published]
    );
    // b dies without publishing: once the lease runs out, a takes them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let got = a.outbox(10).await.unwrap();
        if !got.is_empty() || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(again.len(), 2, "an expired lease hands the entries over");
    a.published(again.into_iter().map(|e| e.id).collect(), &sent)
        .await
        .unwrap();
    assert_eq!(b.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn postgres_outbox_and_processed_ids_are_shared() {
    let schema = Schema::new("kept");
    let (pg1, pg2) = (schema.connect().await, schema.connect().await);
    let a = PgOutbox::new(&pg1, "kept").with_lease(Duration::from_secs(30));
    let b = PgOutbox::new(&pg2, "kept");
    let (_, mut entry) = placed("pizza");
    a.put(entry.clone()).await.unwrap();
    assert_eq!(b.len().await.unwrap(), 1);
    assert_eq!(a.pending(10).await.unwrap(), vec![entry.clone()]);
    assert!(b.pending(10).await.unwrap().is_empty(), "leased to a");
    // A failed resend is put back with its count, and is pending again.
    entry.attempts = 2;
    a.put(entry.clone()).await.unwrap();
    assert_eq!(b.pending(10).await.unwrap(), vec![entry.clone()]);
    b.remove(&entry.id).await.unwrap();
    assert_eq!(a.len().await.unwrap(), 0);

    let p1 = PgProcessedIds::new(&pg1, "sent");
    let p2 = PgProcessedIds::new(&pg2, "sent");
    assert!(!p2.contains("o-1").await.unwrap());
    assert!(p1.record("o-1").await.unwrap());
    assert!(p2.contains("o-1").await.unwrap());
    assert!(!p2.record("o-1").await.unwrap(), "recorded once");
    assert_eq!(p2.len().await.unwrap(), 1);
    // Sets are separate by name.
    assert!(
        !PgProcessedIds::new(&pg1, "other")
            .contains("o-1")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn postgres_settings_that_cannot_work_are_clear_errors() {
    let mut config = DatabaseConfig {
        url: Some("postgres://campusfood:secret@127.0.0.1:1/campusfood".to_owned()),
        ..DatabaseConfig::default()
    };
    let err = Postgres::connect(&config).await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("secret"), "the password is not shown: {err}");
    config.schema = "bad;name".to_owned();
    let err = Postgres::connect(&config).await.unwrap_err().to_string();
    assert!(err.contains("schema"), "{err}");
}
