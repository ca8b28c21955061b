//! The [`Experiment`] abstraction and its [`Outcome`].
//!
//! An experiment is a named, self-describing measurement: it gets a
//! [`Context`] (settings, services, progress), does its work against real
//! services, and returns an [`Outcome`] — plain data: tables, chart series,
//! flat metrics for comparing runs, and the claims it set out to show,
//! each checked against the numbers ([`Conclusion`]). The runner turns
//! outcomes into `report.md`, `report.json` and SVGs; an experiment never
//! formats Markdown or draws.
//!
//! ```ignore
//! #[derive(Debug)]
//! pub struct B1;
//!
//! #[async_trait::async_trait]
//! impl Experiment for B1 {
//!     fn id(&self) -> &'static str { "B1" }
//!     fn title(&self) -> &'static str { "Backlog while inventory is down" }
//!     fn shows(&self) -> &'static str { "Orders are accepted … and drained …" }
//!     async fn run(&self, ctx: &Context) -> Result<Outcome, LabError> {
//!         let mut out = Outcome::default();
//!         // … measure …
//!         out.conclude("every accepted order is reserved once", held, "500/500 …");
//!         Ok(out)
//!     }
//! }
//! ```
//! and one line in [`experiments::all`](crate::experiments::all).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::LabError;
use crate::outcomes::{
    NOTHING_LOST_NOTHING_TWICE, OrderClass, OrderOutcomes, nothing_lost_nothing_twice,
};

/// One experiment of the lab.
#[async_trait]
pub trait Experiment: Send + Sync + std::fmt::Debug {
    /// Stable id, e.g. `"A1"`: the part's letter and a number. Used on the
    /// command line, in report keys and in chart file names.
    fn id(&self) -> &'static str;
    /// A short title, e.g. `"Baseline latency"`.
    fn title(&self) -> &'static str;
    /// What the experiment shows, in a sentence or three: the report's
    /// first paragraph for it.
    fn shows(&self) -> &'static str;
    /// Runs the experiment. Return [`LabError::Unavailable`] when this run
    /// cannot do it (e.g. no broker, external services): the report then
    /// says "skipped" with the reason instead of failing.
    async fn run(&self, ctx: &Context) -> Result<Outcome, LabError>;
}

/// What one run of an experiment yields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The parameters this run used (`"orders": 500`, `"delay_ms": 2000`),
    /// shown under "Setup".
    pub setup: BTreeMap<String, serde_json::Value>,
    /// Tables, in order.
    pub tables: Vec<Table>,
    /// Charts, in order; each becomes `<id>-<chart id>.svg`.
    pub charts: Vec<Chart>,
    /// Flat numbers with stable keys and units in the key (`p50_ms`), for
    /// comparing runs.
    pub metrics: BTreeMap<String, f64>,
    /// The claims the experiment checked.
    pub conclusions: Vec<Conclusion>,
    /// Observations worth a sentence that are not checked claims.
    pub notes: Vec<String>,
    /// Parts the experiment set out to measure but could not in this run
    /// (an architecture whose broker is not running): the experiment is
    /// then reported ⚠️ partial, never ✅ passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmeasured: Vec<String>,
    /// What became of each order placed, one entry per scenario (see
    /// [`outcomes`](crate::outcomes)).
    #[serde(default)]
    pub orders: Vec<OrderOutcomes>,
}

impl Outcome {
    /// Records a setup parameter.
    pub fn setup(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.setup.insert(key.to_owned(), value.into());
    }

    /// Adds a table.
    pub fn table(&mut self, table: Table) {
        self.tables.push(table);
    }

    /// Adds a chart.
    pub fn chart(&mut self, chart: Chart) {
        self.charts.push(chart);
    }

    /// Records a metric.
    pub fn metric(&mut self, key: impl Into<String>, value: f64) {
        self.metrics.insert(key.into(), value);
    }

    /// Records several metrics.
    pub fn metrics(&mut self, metrics: impl IntoIterator<Item = (String, f64)>) {
        self.metrics.extend(metrics);
    }

    /// Records a checked claim.
    pub fn conclude(&mut self, claim: impl Into<String>, held: bool, evidence: impl Into<String>) {
        self.conclusions.push(Conclusion {
            claim: claim.into(),
            held,
            evidence: evidence.into(),
        });
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records a part that this run could not measure, and why.
    pub fn unmeasured(&mut self, what: impl Into<String>) {
        self.unmeasured.push(what.into());
    }

    /// Records what became of the orders of one scenario.
    pub fn orders(&mut self, outcomes: OrderOutcomes) {
        self.orders.push(outcomes);
    }

    /// Concludes "nothing lost, nothing twice" from the orders recorded
    /// so far ([`orders`](Self::orders)): it fails when an order was lost
    /// or duplicated, or when none was recorded. When nothing beyond the
    /// answers could be read (services running elsewhere: every order only
    /// `accepted`), there is nothing to conclude from, and a note says so.
    pub fn conclude_nothing_lost_nothing_twice(&mut self) {
        let only_answers = !self.orders.is_empty()
            && self
                .orders
                .iter()
                .all(|o| o.count(OrderClass::Accepted) == o.total());
        if only_answers {
            self.note(
                "What became of the orders after their answers was not read (services                  running elsewhere): \"nothing lost, nothing twice\" is not concluded.",
            );
            return;
        }
        let (held, evidence) = nothing_lost_nothing_twice(&self.orders);
        self.conclude(NOTHING_LOST_NOTHING_TWICE, held, evidence);
    }

    /// Whether every conclusion held (vacuously true without any).
    pub fn all_held(&self) -> bool {
        self.conclusions.iter().all(|c| c.held)
    }
}

/// A claim the experiment set out to show, checked against its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conclusion {
    /// What should be true, in words.
    pub claim: String,
    /// Whether the numbers bear it out.
    pub held: bool,
    /// The numbers, in words.
    pub evidence: String,
}

/// A table: a title, column headers and rows of cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Stable id within the experiment (`latency`).
    pub id: String,
    /// Heading shown above it.
    pub title: String,
    /// Column headers, with units (`"P95 (ms)"`).
    pub columns: Vec<String>,
    /// Rows; each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// An empty table.
    pub fn new(id: &str, title: &str, columns: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }
}

/// A table cell: JSON keeps numbers as numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    /// A count.
    Int(i64),
    /// A measurement (milliseconds, a ratio …), shown with two decimals.
    Num(f64),
    /// Anything else.
    Text(String),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Self::Num(v)
    }
}

impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// A chart: axes and series of `[x, y]` points. Rendered to SVG by
/// [`chart::render_svg`](crate::chart::render_svg).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// Stable id within the experiment (`latency-cdf`); the file is
    /// `<experiment id>-<chart id>.svg`, lower case.
    pub id: String,
    /// Caption.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The data.
    pub series: Vec<Series>,
    /// Reference lines (a timeout, the start of an outage).
    #[serde(default)]
    pub guides: Vec<Guide>,
    /// Where the legend goes (out of the data's way).
    #[serde(default)]
    pub legend: Legend,
}

/// A corner of the plot for the legend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Legend {
    /// Top left (the default).
    #[default]
    UpperLeft,
    /// Top right.
    UpperRight,
    /// Bottom right.
    LowerRight,
}

impl Chart {
    /// A chart without series yet.
    pub fn new(id: &str, title: &str, x: Axis, y: Axis) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            x,
            y,
            series: Vec::new(),
            guides: Vec::new(),
            legend: Legend::UpperLeft,
        }
    }

    /// Puts the legend in `corner`.
    pub fn with_legend(mut self, corner: Legend) -> Self {
        self.legend = corner;
        self
    }

    /// Adds a series.
    pub fn with_series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Adds a reference line.
    pub fn with_guide(mut self, guide: Guide) -> Self {
        self.guides.push(guide);
        self
    }
}

/// A chart axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// Label, with unit (`"latency (ms)"`).
    pub label: String,
    /// Logarithmic scale (for latencies spanning orders of magnitude).
    #[serde(default)]
    pub log: bool,
    /// Named positions: when set, the axis runs from 0.5 to `n + 0.5` and
    /// value `i` (1-based) is labelled with the `i`-th name (conditions,
    /// architectures); points may sit a little off `i` to stand apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

impl Axis {
    /// A linear axis.
    pub fn linear(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            log: false,
            categories: Vec::new(),
        }
    }

    /// A logarithmic axis.
    pub fn log(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            log: true,
            categories: Vec::new(),
        }
    }

    /// An axis of named positions 1, 2, … (see [`categories`](Self::categories)).
    pub fn categories(label: &str, names: &[&str]) -> Self {
        Self {
            label: label.to_owned(),
            log: false,
            categories: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }
}

/// One data series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// How it is drawn.
    pub style: SeriesStyle,
    /// `[x, y]` points, in the axes' units.
    pub points: Vec<[f64; 2]>,
}

impl Series {
    /// A line through `points`.
    pub fn line(name: &str, points: Vec<[f64; 2]>) -> Self {
        Self {
            name: name.to_owned(),
            style: SeriesStyle::Line,
            points,
        }
    }

    /// A scatter of `points`.
    pub fn points(name: &str, points: Vec<[f64; 2]>) -> Self {
        Self {
            name: name.to_owned(),
            style: SeriesStyle::Points,
            points,
        }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesStyle {
    /// Connected line.
    Line,
    /// Dots.
    Points,
}

/// A dashed reference line across the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guide {
    /// Legend text.
    pub label: String,
    /// Vertical (`x = value`) or horizontal (`y = value`).
    pub axis: GuideAxis,
    /// Where, in the axis' unit.
    pub value: f64,
}

impl Guide {
    /// A vertical line at `x`.
    pub fn x(label: &str, x: f64) -> Self {
        Self {
            label: label.to_owned(),
            axis: GuideAxis::X,
            value: x,
        }
    }

    /// A horizontal line at `y`.
    pub fn y(label: &str, y: f64) -> Self {
        Self {
            label: label.to_owned(),
            axis: GuideAxis::Y,
            value: y,
        }
    }
}

/// Which axis a [`Guide`] marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuideAxis {
    /// A vertical line at an x value.
    X,
    /// A horizontal line at a y value.
    Y,
}
