//! The behaviour every [`InventoryLedger`] must show, as one suite that
//! each implementation runs: memory, redb and Postgres (and a third
//! party's, by calling [`all`] on theirs).

use std::sync::Arc;

use campusfood_core::OrderId;
use campusfood_core::ledger::{
    InventoryLedger, Release, Reservation, ReservationRecord, ReserveOutcome,
};
use campusfood_core::order::{Item, Quantity};

/// Stock the ledger given to [`all`] must start with.
pub const STOCK: &str = "burger=10,pizza=1";

/// `s` as an item.
pub fn item(s: &str) -> Item {
    Item::parse(s).unwrap()
}

/// `n` as a quantity.
pub fn qty(n: u64) -> Quantity {
    Quantity::new(n).unwrap()
}

/// Runs the whole suite on `ledger`, which must hold exactly [`STOCK`]
/// and no reservation: a first reservation, its repeat, insufficient and
/// unknown items, 50 concurrent duplicates, 20 concurrent orders for the
/// last 6 burgers; then releases ([`releases`]).
pub async fn all(ledger: Arc<dyn InventoryLedger>) {
    // First reservation takes stock.
    let o1 = OrderId::generate();
    let r = ledger.reserve(&o1, &item("burger"), qty(3)).await.unwrap();
    assert_eq!(
        r,
        Reservation::First(ReservationRecord {
            order_id: o1.clone(),
            item: item("burger"),
            qty: qty(3),
            outcome: ReserveOutcome::Reserved { remaining: 7 },
        })
    );
    // Repeat returns the first outcome and takes nothing.
    let again = ledger.reserve(&o1, &item("burger"), qty(3)).await.unwrap();
    assert!(again.is_repeat());
    assert_eq!(again.outcome(), ReserveOutcome::Reserved { remaining: 7 });
    assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 7);
    assert_eq!(
        ledger.reservation(&o1).await.unwrap().unwrap().outcome,
        ReserveOutcome::Reserved { remaining: 7 }
    );

    // Insufficient and unknown are outcomes, recorded, and take nothing.
    let o2 = OrderId::generate();
    let r = ledger.reserve(&o2, &item("pizza"), qty(2)).await.unwrap();
    assert_eq!(r.outcome(), ReserveOutcome::Insufficient { available: 1 });
    let o3 = OrderId::generate();
    let r = ledger.reserve(&o3, &item("ramen"), qty(1)).await.unwrap();
    assert_eq!(r.outcome(), ReserveOutcome::UnknownItem);
    assert_eq!(
        ledger.reservation(&o3).await.unwrap().unwrap().outcome,
        ReserveOutcome::UnknownItem
    );
    assert_eq!(ledger.stock().await.unwrap()[&item("pizza")], 1);
    assert!(
        ledger
            .reservation(&OrderId::generate())
            .await
            .unwrap()
            .is_none()
    );

    // 50 concurrent duplicates: exactly one first, one decrement.
    let o4 = OrderId::generate();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (l, o) = (ledger.clone(), o4.clone());
            tokio::spawn(async move { l.reserve(&o, &item("burger"), qty(1)).await.unwrap() })
        })
        .collect();
    let results = futures::future::join_all(tasks).await;
    let firsts = results
        .iter()
        .filter(|r| !r.as_ref().unwrap().is_repeat())
        .count();
    assert_eq!(firsts, 1);
    for r in &results {
        assert_eq!(
            r.as_ref().unwrap().outcome(),
            ReserveOutcome::Reserved { remaining: 6 }
        );
    }
    assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 6);

    // Many distinct concurrent orders never oversell.
    oversell_attempt(std::slice::from_ref(&ledger), 20, 6).await;
    assert_eq!(ledger.stock().await.unwrap()[&item("burger")], 0);
    assert_eq!(ledger.reservation_count().await.unwrap(), 4 + 20);

    releases(&ledger, &o1, &o2).await;
}

/// Releases, on the ledger [`all`] leaves: `reserved` holds 3 burgers,
/// `refused` was refused 2 pizzas, and no burger is left. A release gives
/// a reservation back once; a refused, released or never decided order
/// gives nothing; a released order is never reserved, also when its
/// release came first; concurrent releases and reservations of one order
/// leave the stock as it was.
pub async fn releases(ledger: &Arc<dyn InventoryLedger>, reserved: &OrderId, refused: &OrderId) {
    let burgers = async || ledger.stock().await.unwrap()[&item("burger")];
    assert_eq!(burgers().await, 0);
    let count = ledger.reservation_count().await.unwrap();

    // The stock goes back once.
    assert_eq!(
        ledger.release(reserved).await.unwrap(),
        Release::Returned {
            item: item("burger"),
            qty: qty(3),
            level: 3
        }
    );
    assert_eq!(burgers().await, 3);
    assert_eq!(
        ledger.release(reserved).await.unwrap(),
        Release::AlreadyReleased
    );
    assert_eq!(burgers().await, 3);
    let record = ledger.reservation(reserved).await.unwrap().unwrap();
    assert_eq!(record.outcome, ReserveOutcome::Released);
    assert_eq!((record.item, record.qty), (item("burger"), qty(3)));
    // A released order is not reserved again.
    let again = ledger
        .reserve(reserved, &item("burger"), qty(3))
        .await
        .unwrap();
    assert!(again.is_repeat());
    assert_eq!(again.outcome(), ReserveOutcome::Released);
    assert_eq!(burgers().await, 3);

    // A refused order held nothing.
    assert_eq!(ledger.release(refused).await.unwrap(), Release::NothingHeld);
    assert_eq!(
        ledger.release(refused).await.unwrap(),
        Release::AlreadyReleased
    );
    assert_eq!(ledger.stock().await.unwrap()[&item("pizza")], 1);

    // A release before the reservation: not a decision, but the
    // reservation, when it comes, takes nothing.
    let early = OrderId::generate();
    assert_eq!(ledger.release(&early).await.unwrap(), Release::NothingHeld);
    assert_eq!(
        ledger.release(&early).await.unwrap(),
        Release::AlreadyReleased
    );
    assert!(ledger.reservation(&early).await.unwrap().is_none());
    assert_eq!(ledger.reservation_count().await.unwrap(), count);
    let late = ledger
        .reserve(&early, &item("burger"), qty(1))
        .await
        .unwrap();
    assert_eq!(
        late,
        Reservation::First(ReservationRecord {
            order_id: early.clone(),
            item: item("burger"),
            qty: qty(1),
            outcome: ReserveOutcome::Released,
        })
    );
    let again = ledger
        .reserve(&early, &item("burger"), qty(1))
        .await
        .unwrap();
    assert!(again.is_repeat());
    assert_eq!(again.outcome(), ReserveOutcome::Released);
    assert_eq!(burgers().await, 3);

    // 20 concurrent releases of one reservation: one gives back.
    let twice = OrderId::generate();
    let r = ledger
        .reserve(&twice, &item("burger"), qty(2))
        .await
        .unwrap();
    assert_eq!(r.outcome(), ReserveOutcome::Reserved { remaining: 1 });
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (l, o) = (ledger.clone(), twice.clone());
            tokio::spawn(async move { l.release(&o).await.unwrap() })
        })
        .collect();
    let mut returned = 0;
    for r in futures::future::join_all(tasks).await {
        match r.unwrap() {
            Release::Returned { level: 3, .. } => returned += 1,
            Release::AlreadyReleased => {}
            other => panic!("a concurrent release was answered {other:?}"),
        }
    }
    assert_eq!(returned, 1);
    assert_eq!(burgers().await, 3);

    // A reservation and its release at once, in either order: nothing
    // stays taken.
    for _ in 0..10 {
        let order = OrderId::generate();
        let (l1, l2, o1, o2) = (ledger.clone(), ledger.clone(), order.clone(), order.clone());
        let reserve =
            tokio::spawn(async move { l1.reserve(&o1, &item("burger"), qty(1)).await.unwrap() });
        let release = tokio::spawn(async move { l2.release(&o2).await.unwrap() });
        reserve.await.unwrap();
        release.await.unwrap();
        assert_eq!(burgers().await, 3);
        assert_eq!(
            ledger.reservation(&order).await.unwrap().unwrap().outcome,
            ReserveOutcome::Released
        );
    }
    assert_eq!(ledger.reservation_count().await.unwrap(), count + 12);
}

/// `orders` distinct orders of one burger each, spread round-robin over
/// `ledgers` (handles on one shared stock, e.g. several processes'
/// connections) and sent all at once: exactly `expected` are reserved, and
/// every answer is either a reservation or `Insufficient`.
pub async fn oversell_attempt(
    ledgers: &[Arc<dyn InventoryLedger>],
    orders: usize,
    expected: usize,
) {
    let tasks: Vec<_> = (0..orders)
        .map(|n| {
            let l = ledgers[n % ledgers.len()].clone();
            tokio::spawn(async move {
                l.reserve(&OrderId::generate(), &item("burger"), qty(1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut reserved = 0;
    for r in futures::future::join_all(tasks).await {
        match r.unwrap().outcome() {
            ReserveOutcome::Reserved { .. } => reserved += 1,
            ReserveOutcome::Insufficient { available: 0 } => {}
            other => panic!("an order of one burger was answered {other:?}"),
        }
    }
    assert_eq!(reserved, expected, "reserved exactly what was in stock");
}
