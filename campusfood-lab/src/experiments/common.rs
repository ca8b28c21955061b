//! Small helpers the experiments share.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::experiment::Cell;
use crate::load::Sample;
use crate::stats::{LatencySummary, ms};

/// Latencies of `samples`.
pub(crate) fn latencies(samples: &[Sample]) -> Vec<Duration> {
    samples.iter().map(|s| s.latency).collect()
}

/// The summary of `samples`, or all zeros when there are none.
pub(crate) fn summary(samples: &[Sample]) -> LatencySummary {
    LatencySummary::of(latencies(samples)).unwrap_or(LatencySummary {
        count: 0,
        min_ms: 0.0,
        avg_ms: 0.0,
        p50_ms: 0.0,
        p95_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
    })
}

/// `201 ×48, 503 ×2` — every status seen, with counts (0 = no answer).
pub(crate) fn statuses(samples: &[Sample]) -> String {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for s in samples {
        *counts.entry(s.status).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(status, n)| match status {
            0 => format!("no answer ×{n}"),
            s => format!("{s} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[order #, latency ms]` points.
pub(crate) fn by_order(samples: &[Sample]) -> Vec<[f64; 2]> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| [(i + 1) as f64, ms(s.latency)])
        .collect()
}

/// A summary's cells: min, avg, p50, p95, p99, max.
pub(crate) fn summary_cells(s: &LatencySummary) -> Vec<Cell> {
    vec![
        s.min_ms.into(),
        s.avg_ms.into(),
        s.p50_ms.into(),
        s.p95_ms.into(),
        s.p99_ms.into(),
        s.max_ms.into(),
    ]
}

/// Seconds as the report spells them: `2 s`, `0.3 s`.
pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 1e-9 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// The first error message among `samples`, for evidence.
pub(crate) fn first_error(samples: &[Sample]) -> Option<&str> {
    samples.iter().find_map(|s| s.error.as_deref())
}

/// The order ids of the accepted (201) samples, in sending order.
pub(crate) fn accepted_ids(samples: &[Sample]) -> Vec<String> {
    samples.iter().filter_map(|s| s.order_id.clone()).collect()
}

/// For each accepted sample whose order became `notified` (`notified_at`),
/// the time from sending it to that moment: the end-to-end latency.
pub(crate) fn end_to_end(
    samples: &[Sample],
    notified_at: &HashMap<String, Instant>,
    origin: Instant,
) -> Vec<Duration> {
    samples
        .iter()
        .filter_map(|s| {
            let at = notified_at.get(s.order_id.as_deref()?)?;
            Some(at.saturating_duration_since(origin + s.sent))
        })
        .collect()
}

/// At most this many points per cumulative series (the report's JSON
/// keeps every point).
const CUMULATIVE_POINTS: usize = 400;

/// A cumulative count: `[x, how many of xs are ≤ x]`, starting at
/// `[start, 0]` — a step line when there are few values, else every k-th
/// step's corners (at most [`CUMULATIVE_POINTS`] points, the last one
/// always kept).
pub(crate) fn cumulative(mut xs: Vec<f64>, start: f64) -> Vec<[f64; 2]> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let every = n.div_ceil(CUMULATIVE_POINTS / 2).max(1);
    let mut points = vec![[start, 0.0]];
    for (i, x) in xs.iter().enumerate() {
        if i % every == 0 || i + 1 == n {
            points.push([*x, i as f64]);
            points.push([*x, (i + 1) as f64]);
        }
    }
    points
}

/// Seconds since `origin` of `at`.
pub(crate) fn since(origin: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(origin).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_and_stays_small() {
        assert_eq!(
            cumulative(vec![2.0, 1.0], 0.0),
            [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0], [2.0, 2.0]]
        );
        let big = cumulative((0..10_000).map(f64::from).collect(), 0.0);
        assert!(big.len() <= CUMULATIVE_POINTS + 3, "{}", big.len());
        assert_eq!(big.last(), Some(&[9999.0, 10_000.0]));
        assert!(big.windows(2).all(|w| w[0][1] <= w[1][1]));
    }
}
