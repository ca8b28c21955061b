//! What became of each order an experiment placed: every order is put in
//! one [`OrderClass`] from what was read about it ([`OrderReading`]: the
//! answer it got, the ledger's decision, the notifications sent for it,
//! the output records written for it, the dead letters), and an
//! [`OrderOutcomes`] counts them against the classes the experiment
//! expected. "Nothing lost, nothing twice" is then read off the counts
//! ([`nothing_lost_nothing_twice`]).
//!
//! The readers of each part fill the readings:
//! [`PartA::readings`](crate::PartA::readings),
//! [`PartB::readings`](crate::PartB::readings),
//! [`PartC::readings`](crate::PartC::readings).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::experiment::{Cell, Table};
use crate::load::Sample;

/// What became of one order, the most telling class first: an order both
/// reserved and notified is `notified`; one whose effect was applied twice
/// is `duplicated` whatever else happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderClass {
    /// Accepted, and the experiment did not wait for it to settle (it
    /// measures acceptance only).
    Accepted,
    /// Inventory took the stock; no notification is part of this flow (or
    /// none was sent yet).
    Reserved,
    /// Refused: at the door (an error answer: 503, 504 …) or by inventory
    /// (out of stock); nothing was taken.
    Failed,
    /// The customer was notified, once.
    Notified,
    /// Set aside in a dead-letter queue or topic, and still there.
    DeadLettered,
    /// An effect applied twice: two notifications sent, two output
    /// records, the stock taken twice.
    Duplicated,
    /// Accepted, and never settled: no decision, no notification, no dead
    /// letter, though the experiment waited for it.
    Lost,
}

impl OrderClass {
    /// Every class, in the report's column order.
    pub const ALL: [Self; 7] = [
        Self::Accepted,
        Self::Reserved,
        Self::Failed,
        Self::Notified,
        Self::DeadLettered,
        Self::Duplicated,
        Self::Lost,
    ];

    /// The name in the report (`dead_lettered`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Reserved => "reserved",
            Self::Failed => "failed",
            Self::Notified => "notified",
            Self::DeadLettered => "dead_lettered",
            Self::Duplicated => "duplicated",
            Self::Lost => "lost",
        }
    }
}

impl fmt::Display for OrderClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was read about one order, each field from its own source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderReading {
    /// The order service (or broker) accepted it: a 201, an acknowledged
    /// produce.
    pub accepted: bool,
    /// The experiment waited for it to settle: an accepted order with
    /// nothing after is then `lost`, else only `accepted`.
    pub settle: bool,
    /// How many times its stock was taken (ledger records, output records
    /// saying reserved).
    pub reserved: u32,
    /// Inventory refused it (out of stock), or its reservation was released.
    pub refused: bool,
    /// How many notifications were sent for it.
    pub notified: u32,
    /// How many output records were written for it (Part C; 0 elsewhere).
    pub outputs: u32,
    /// It is in a dead-letter queue or topic.
    pub dead_lettered: bool,
}

impl fmt::Display for OrderReading {
    /// Every count, for the evidence of an order not in an expected class:
    /// `accepted, reserved 1, refused no, notified 2, outputs 0, dead-lettered no`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "{}, reserved {}, refused {}, notified {}, outputs {}, dead-lettered {}",
            if self.accepted {
                "accepted"
            } else {
                "not accepted"
            },
            self.reserved,
            yes_no(self.refused),
            self.notified,
            self.outputs,
            yes_no(self.dead_lettered),
        )
    }
}

impl OrderReading {
    /// The class the readings put the order in.
    pub fn class(&self) -> OrderClass {
        if self.reserved > 1 || self.notified > 1 || self.outputs > 1 {
            OrderClass::Duplicated
        } else if self.dead_lettered {
            OrderClass::DeadLettered
        } else if self.notified == 1 {
            OrderClass::Notified
        } else if self.reserved == 1 {
            OrderClass::Reserved
        } else if self.refused || !self.accepted {
            OrderClass::Failed
        } else if self.settle {
            OrderClass::Lost
        } else {
            OrderClass::Accepted
        }
    }
}

/// The ids of the accepted orders of `samples` (201 with an id), in
/// sending order: the orders a part's reader reads.
pub fn accepted(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| s.ok())
        .filter_map(|s| s.order_id.clone())
        .collect()
}

/// Every order of `samples`, by id: the readings of the accepted ones
/// (`read`, in the order of [`accepted`]) and, for an order refused at the
/// door (no 201, no id), `request #i` (from 1) as `failed`.
pub fn with_refused(
    samples: &[Sample],
    read: Vec<(String, OrderReading)>,
) -> Vec<(String, OrderReading)> {
    let mut read = read.into_iter();
    let mut out = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        match (&s.order_id, s.ok()) {
            (Some(_), true) => out.extend(read.next()),
            _ => out.push((format!("request #{}", i + 1), OrderReading::default())),
        }
    }
    out
}

/// The orders of one scenario of an experiment, by class, against the
/// classes expected. Serialized into `report.json` with the ids of every
/// order whose class was not expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOutcomes {
    /// Which orders (`healthy`, `RabbitMQ`, `poison`); shown as the row.
    pub scenario: String,
    /// The classes the experiment expects these orders to end in.
    pub expected: Vec<OrderClass>,
    /// Orders per class (classes without orders are left out).
    pub counts: BTreeMap<OrderClass, u64>,
    /// The ids of the orders in a class not expected, by class.
    pub unexpected: BTreeMap<OrderClass, Vec<String>>,
    /// What was read about each order of `unexpected` (recorded with its
    /// reading), by id: which count put it there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub read: BTreeMap<String, String>,
}

impl OrderOutcomes {
    /// No orders yet; `expected` are the classes these orders should end in.
    pub fn new(scenario: &str, expected: &[OrderClass]) -> Self {
        Self {
            scenario: scenario.to_owned(),
            expected: expected.to_vec(),
            counts: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            read: BTreeMap::new(),
        }
    }

    /// Records order `id` in `class`.
    pub fn record(&mut self, id: impl Into<String>, class: OrderClass) {
        *self.counts.entry(class).or_default() += 1;
        if !self.expected.contains(&class) {
            self.unexpected.entry(class).or_default().push(id.into());
        }
    }

    /// Records every `(id, reading)`, each in the class its reading says;
    /// for an order in a class not expected, keeps the reading too.
    pub fn record_all<'a>(
        mut self,
        readings: impl IntoIterator<Item = &'a (String, OrderReading)>,
    ) -> Self {
        for (id, reading) in readings {
            let class = reading.class();
            self.record(id.clone(), class);
            if !self.expected.contains(&class) {
                self.read.insert(id.clone(), reading.to_string());
            }
        }
        self
    }

    /// Orders in `class`.
    pub fn count(&self, class: OrderClass) -> u64 {
        self.counts.get(&class).copied().unwrap_or(0)
    }

    /// Every order recorded.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Orders in a class not expected.
    pub fn unexpected_count(&self) -> u64 {
        self.unexpected.values().map(|ids| ids.len() as u64).sum()
    }
}

/// The table of `outcomes`: one row per scenario, one column per class
/// (an expected class's count marked `✓`), then the orders not in an
/// expected class.
pub fn table(outcomes: &[OrderOutcomes]) -> Table {
    let mut columns = vec!["Orders", "Placed"];
    columns.extend(OrderClass::ALL.iter().map(|c| c.name()));
    columns.push("Not as expected");
    let mut t = Table::new(
        "order-outcomes",
        "What became of each order (✓ = the class expected)",
        &columns,
    );
    for o in outcomes {
        let mut row: Vec<Cell> = vec![o.scenario.clone().into(), o.total().into()];
        for class in OrderClass::ALL {
            let n = o.count(class);
            row.push(if o.expected.contains(&class) {
                format!("{n} ✓").into()
            } else {
                n.into()
            });
        }
        row.push(o.unexpected_count().into());
        t.row(row);
    }
    t
}

/// "Nothing lost, nothing twice" over `outcomes`: whether it held, and the
/// evidence (how many orders were accounted for, lost, duplicated; up to
/// three of each by id, with their scenario and what was read about them).
pub fn nothing_lost_nothing_twice(outcomes: &[OrderOutcomes]) -> (bool, String) {
    let total: u64 = outcomes.iter().map(OrderOutcomes::total).sum();
    let sum = |class| outcomes.iter().map(|o| o.count(class)).sum::<u64>();
    let (lost, twice) = (sum(OrderClass::Lost), sum(OrderClass::Duplicated));
    let named = |class| {
        outcomes
            .iter()
            .flat_map(|o| {
                let ids = o.unexpected.get(&class).map_or(&[][..], Vec::as_slice);
                ids.iter().map(move |id| match o.read.get(id) {
                    Some(read) => format!("{id} ({}: {read})", o.scenario),
                    None => format!("{id} ({})", o.scenario),
                })
            })
            .take(3)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut evidence =
        format!("{total} orders accounted for, each in one class: {lost} lost, {twice} duplicated");
    if lost > 0 {
        evidence.push_str(&format!("; lost e.g. {}", named(OrderClass::Lost)));
    }
    if twice > 0 {
        evidence.push_str(&format!(
            "; duplicated e.g. {}",
            named(OrderClass::Duplicated)
        ));
    }
    (total > 0 && lost == 0 && twice == 0, evidence)
}

/// The claim's words, the same in every experiment.
pub const NOTHING_LOST_NOTHING_TWICE: &str = "Nothing lost, nothing twice: every order placed is accounted for, none lost, none applied twice";

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(f: impl FnOnce(&mut OrderReading)) -> OrderReading {
        let mut r = OrderReading {
            accepted: true,
            settle: true,
            ..OrderReading::default()
        };
        f(&mut r);
        r
    }

    #[test]
    fn readings_classify() {
        assert_eq!(reading(|_| {}).class(), OrderClass::Lost);
        assert_eq!(reading(|r| r.settle = false).class(), OrderClass::Accepted);
        assert_eq!(reading(|r| r.accepted = false).class(), OrderClass::Failed);
        assert_eq!(reading(|r| r.refused = true).class(), OrderClass::Failed);
        assert_eq!(reading(|r| r.reserved = 1).class(), OrderClass::Reserved);
        assert_eq!(
            reading(|r| (r.reserved, r.notified) = (1, 1)).class(),
            OrderClass::Notified
        );
        assert_eq!(
            reading(|r| r.dead_lettered = true).class(),
            OrderClass::DeadLettered
        );
        assert_eq!(
            reading(|r| (r.reserved, r.notified) = (1, 2)).class(),
            OrderClass::Duplicated
        );
        assert_eq!(reading(|r| r.outputs = 2).class(), OrderClass::Duplicated);
        assert_eq!(reading(|r| r.reserved = 2).class(), OrderClass::Duplicated);
    }

    #[test]
    fn a_lost_and_a_duplicated_order_fail_the_claim() {
        let ok = |id: &str| {
            (
                id.to_owned(),
                reading(|r| (r.reserved, r.notified) = (1, 1)),
            )
        };
        let good = [ok("a"), ok("b")];
        let clean = OrderOutcomes::new("clean", &[OrderClass::Notified]).record_all(&good);
        assert!(nothing_lost_nothing_twice(std::slice::from_ref(&clean)).0);
        assert!(clean.unexpected.is_empty());

        let bad = [
            ok("a"),
            ("lost-1".to_owned(), reading(|_| {})),
            (
                "twice-1".to_owned(),
                reading(|r| (r.reserved, r.notified) = (1, 2)),
            ),
        ];
        let dirty = OrderOutcomes::new("dirty", &[OrderClass::Notified]).record_all(&bad);
        let (held, evidence) = nothing_lost_nothing_twice(&[clean.clone(), dirty.clone()]);
        assert!(!held, "{evidence}");
        assert!(evidence.contains("1 lost, 1 duplicated"), "{evidence}");
        assert!(evidence.contains("lost-1") && evidence.contains("twice-1"));
        // Each named with its scenario and the count that put it there.
        assert!(
            evidence.contains(
                "twice-1 (dirty: accepted, reserved 1, refused no, notified 2, outputs 0, \
                 dead-lettered no)"
            ),
            "{evidence}"
        );
        assert_eq!(dirty.read.len(), 2, "only the unexpected orders' readings");
        assert_eq!(dirty.unexpected[&OrderClass::Lost], ["lost-1"]);
        assert_eq!(dirty.unexpected[&OrderClass::Duplicated], ["twice-1"]);
        assert_eq!(dirty.unexpected_count(), 2);

        // Only a lost order, or only a duplicated one, fails it too.
        let lost = OrderOutcomes::new("l", &[OrderClass::Notified]).record_all(&bad[..2]);
        assert!(!nothing_lost_nothing_twice(&[lost]).0);
        let twice = OrderOutcomes::new("t", &[OrderClass::Notified]).record_all(&[bad[2].clone()]);
        assert!(!nothing_lost_nothing_twice(&[twice]).0);
        // No orders at all accounts for nothing.
        assert!(!nothing_lost_nothing_twice(&[]).0);

        let t = table(&[clean, dirty]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[1][0], Cell::Text("dirty".into()));
        assert_eq!(t.rows[1][1], Cell::Int(3));
        assert_eq!(
            t.rows[0][2 + 3],
            Cell::Text("2 ✓".into()),
            "notified, expected"
        );
        assert_eq!(t.rows[1][2 + 6], Cell::Int(1), "lost");
        assert_eq!(t.rows[1].last(), Some(&Cell::Int(2)));
    }
}
