//! The inventory ledger: stock levels plus a record of every reservation
//! decision, keyed by order id, so that reserving is idempotent.
//!
//! [`InventoryLedger::reserve`] is atomic: the stock check, the decrement and
//! the record of the outcome happen together or not at all. The same order
//! id reserved again — sequentially or by 50 tasks at once — returns the
//! first outcome, as [`Reservation::Repeat`], and never decrements twice.
//!
//! [`InventoryLedger::release`] is the compensation of a reservation whose
//! order failed after all (the caller saw a timeout): it gives the stock
//! back once, records the order as [`ReserveOutcome::Released`], and
//! answers the same no-op ([`Release::AlreadyReleased`]) to any later
//! release. A released order is never reserved again: `reserve` answers it
//! with its `Released` record and takes nothing. That holds also when the
//! release comes *first* — the caller gave up while its reservation was
//! still on the way — so the late reservation cannot take stock for an
//! order that nobody will confirm.
//!
//! Implementations: [`MemoryLedger`] (tests, embedding) and, with feature
//! `redb`, [`RedbLedger`] (durable, group-committed).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::OrderId;
use crate::order::{Item, Quantity};

mod memory;
pub use memory::MemoryLedger;

#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
pub use self::redb::RedbLedger;

/// The decision for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReserveOutcome {
    /// The stock was reserved; `remaining` is what was left right after.
    Reserved {
        /// Stock of the item left after this reservation.
        remaining: u64,
    },
    /// Not enough stock; nothing was taken.
    Insufficient {
        /// Stock of the item at the time of the decision.
        available: u64,
    },
    /// The item is not stocked at all; nothing was taken.
    UnknownItem,
    /// The order was released ([`InventoryLedger::release`]): whatever it
    /// held went back to stock, and it is never reserved.
    Released,
}

/// The answer of [`InventoryLedger::release`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Release {
    /// The order held stock, and this call gave it back.
    Returned {
        /// The item given back.
        item: Item,
        /// How many.
        qty: Quantity,
        /// The item's stock right after.
        level: u64,
    },
    /// The order held nothing: it was refused, or not decided yet. It is
    /// released now, so a reservation for it later takes nothing.
    NothingHeld,
    /// The order was released before; nothing changed.
    AlreadyReleased,
}

/// A recorded reservation decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    /// The order it was made for.
    pub order_id: OrderId,
    /// The item asked for.
    pub item: Item,
    /// How many were asked for.
    pub qty: Quantity,
    /// What was decided.
    pub outcome: ReserveOutcome,
}

/// The answer of [`InventoryLedger::reserve`]: tells a first decision from a
/// repeat of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// This call made the decision (and, if reserved, took the stock).
    First(ReservationRecord),
    /// The order was decided before; this is that decision, unchanged.
    Repeat(ReservationRecord),
}

impl Reservation {
    /// The decision, whether first or repeated.
    pub fn record(&self) -> &ReservationRecord {
        match self {
            Self::First(r) | Self::Repeat(r) => r,
        }
    }

    /// The outcome, whether first or repeated.
    pub fn outcome(&self) -> ReserveOutcome {
        self.record().outcome
    }

    /// Whether this call repeated an earlier decision.
    pub fn is_repeat(&self) -> bool {
        matches!(self, Self::Repeat(_))
    }

    /// Whether the order id was decided before for another item or
    /// quantity: then it named another order (ids collide, or a client
    /// reused one), and the decision is that other order's, not a repeat
    /// of this one. (A released order's tombstone may not know its item, so
    /// it never conflicts.)
    pub fn is_other_order(&self, item: &Item, qty: Quantity) -> bool {
        match self {
            Self::First(_) => false,
            Self::Repeat(r) => {
                r.outcome != ReserveOutcome::Released && (r.item != *item || r.qty != qty)
            }
        }
    }
}

/// What a look at a ledger from outside the process that writes it found
/// for one order: [`RedbLedger::peek`], and the Postgres ledger's `peek`
/// in `campusfood-services`. A look never creates, initialises nor repairs
/// a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LedgerPeek {
    /// The ledger holds this decision for the order.
    Decided {
        /// The decision.
        record: ReservationRecord,
    },
    /// The ledger is there and holds no decision for the order (not
    /// decided yet, failed by injection before the ledger, or never seen).
    Undecided,
    /// There is no such ledger (no file, no rows): nothing was decided
    /// against it yet.
    Missing,
    /// A process holds the ledger open for writing (the running consumer),
    /// and the store lets no reader in beside it.
    InUse {
        /// The store's words, naming the file.
        reason: String,
    },
    /// The ledger was not closed cleanly; only its writer may repair it
    /// (on its next start).
    NeedsRepair,
}

/// Why the ledger could not answer. Never the caller's fault: the same call
/// may succeed later.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The durable store failed (I/O, corruption, full disk).
    #[error("ledger storage failed: {0}")]
    Storage(String),
    /// The ledger has been shut down.
    #[error("ledger is closed")]
    Closed,
}

/// Stock levels plus idempotent reservations. See the [module docs](self).
///
/// A ledger of your own (another database) passes the contract suite every
/// ledger here runs, `campusfood_testkit::ledger_contract::all`.
///
/// ```
/// use campusfood_core::ledger::{InventoryLedger, MemoryLedger, ReserveOutcome};
/// use campusfood_core::{Item, OrderId, Quantity};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ledger = MemoryLedger::new(&"burger=3".parse()?);
/// let (order, burger) = (OrderId::generate(), Item::parse("burger")?);
/// let first = ledger.reserve(&order, &burger, Quantity::new(2)?).await?;
/// assert_eq!(first.outcome(), ReserveOutcome::Reserved { remaining: 1 });
/// // The same order again: the first decision, and no second decrement.
/// let again = ledger.reserve(&order, &burger, Quantity::new(2)?).await?;
/// assert!(again.is_repeat());
/// assert_eq!(ledger.stock().await?[&burger], 1);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait InventoryLedger: Send + Sync + fmt::Debug + 'static {
    /// Reserves `qty` of `item` for `order`, atomically and idempotently.
    /// Only stock errors count as outcomes; `Err` means nothing was decided.
    async fn reserve(
        &self,
        order: &OrderId,
        item: &Item,
        qty: Quantity,
    ) -> Result<Reservation, LedgerError>;

    /// Releases `order`, atomically and idempotently: gives back what it
    /// holds (once), and makes sure it is never reserved (also when it has
    /// not been decided yet). See the [module docs](self).
    async fn release(&self, order: &OrderId) -> Result<Release, LedgerError>;

    /// The current stock level of every item.
    async fn stock(&self) -> Result<BTreeMap<Item, u64>, LedgerError>;

    /// The recorded decision for `order`, if any.
    async fn reservation(&self, order: &OrderId) -> Result<Option<ReservationRecord>, LedgerError>;

    /// How many orders have a recorded decision.
    async fn reservation_count(&self) -> Result<u64, LedgerError>;

    /// Why the last write failed, while no write has succeeded since: the
    /// ledger cannot decide now (a full disk, an I/O error, the database
    /// gone). `None` when it can, as far as it knows. Services answer
    /// `GET /health` with 503 while this is `Some`.
    fn write_failure(&self) -> Option<String> {
        None
    }
}

/// Decides one reservation against `stock`, the rule every ledger applies.
/// Returns the outcome and, when reserved, the new level of the item.
pub(crate) fn decide(stock: Option<u64>, qty: Quantity) -> ReserveOutcome {
    match stock {
        None => ReserveOutcome::UnknownItem,
        Some(available) if available < u64::from(qty.get()) => {
            ReserveOutcome::Insufficient { available }
        }
        Some(available) => ReserveOutcome::Reserved {
            remaining: available - u64::from(qty.get()),
        },
    }
}

/// Releases an order that has a decision, the rule every ledger applies:
/// `None` when it was released before (nothing changes); else its record
/// becomes [`ReserveOutcome::Released`] and the answer is the stock to give
/// back (0 when it held nothing).
pub(crate) fn release_decided(record: &mut ReservationRecord) -> Option<u64> {
    let held = match record.outcome {
        ReserveOutcome::Released => return None,
        ReserveOutcome::Reserved { .. } => u64::from(record.qty.get()),
        ReserveOutcome::Insufficient { .. } | ReserveOutcome::UnknownItem => 0,
    };
    record.outcome = ReserveOutcome::Released;
    Some(held)
}
