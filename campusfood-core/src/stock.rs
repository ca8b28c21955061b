//! The initial stock: `item=qty,item=qty,…`, as `CAMPUSFOOD_STOCK` spells it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::order::Item;

/// Why a stock specification cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StockError {
    /// An entry is not `item=qty`.
    #[error("stock entry {0:?} is not item=qty")]
    Entry(String),
    /// An item name is invalid.
    #[error("stock entry {entry:?}: {reason}")]
    Item {
        /// The entry.
        entry: String,
        /// What is wrong with the name.
        reason: String,
    },
    /// A quantity is not a non-negative integer.
    #[error("stock entry {0:?}: quantity must be a non-negative integer")]
    Quantity(String),
    /// The same item appears twice.
    #[error("stock lists {0} twice")]
    Duplicate(String),
}

/// Initial stock levels by item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSpec(BTreeMap<Item, u64>);

impl StockSpec {
    /// The contract's default: `burger=100,pizza=100,sushi=100,taco=100,salad=100`.
    pub const DEFAULT: &'static str = "burger=100,pizza=100,sushi=100,taco=100,salad=100";

    /// Stock levels from explicit pairs.
    pub fn from_levels(levels: impl IntoIterator<Item = (Item, u64)>) -> Self {
        Self(levels.into_iter().collect())
    }

    /// The levels, by item.
    pub fn levels(&self) -> &BTreeMap<Item, u64> {
        &self.0
    }
}

impl Default for StockSpec {
    fn default() -> Self {
        Self::DEFAULT
            .parse()
            .unwrap_or_else(|_| Self(BTreeMap::new()))
    }
}

impl FromStr for StockSpec {
    type Err = StockError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut levels = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, qty) = entry
                .split_once('=')
                .ok_or_else(|| StockError::Entry(entry.to_owned()))?;
            let item = Item::parse(name.trim()).map_err(|e| StockError::Item {
                entry: entry.to_owned(),
                reason: e.to_string(),
            })?;
            let qty: u64 = qty
                .trim()
                .parse()
                .map_err(|_| StockError::Quantity(entry.to_owned()))?;
            if levels.insert(item.clone(), qty).is_some() {
                return Err(StockError::Duplicate(item.to_string()));
            }
        }
        Ok(Self(levels))
    }
}

impl fmt::Display for StockSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (item, qty)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}={qty}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_has_five_items_of_100() {
        let s = StockSpec::default();
        assert_eq!(s.levels().len(), 5);
        assert!(s.levels().values().all(|&q| q == 100));
        assert_eq!(s.to_string().parse::<StockSpec>().unwrap(), s);
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in ["burger", "burger=x", "burger=-1", "bad item=1", "a=1,a=2"] {
            assert!(bad.parse::<StockSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            " a = 1 , b=2 ,"
                .parse::<StockSpec>()
                .unwrap()
                .levels()
                .len(),
            2
        );
    }
}
