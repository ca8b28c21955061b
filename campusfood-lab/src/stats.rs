//! Latency statistics, always in milliseconds: summaries (exact min, mean
//! and max; percentiles through hdrhistogram, microsecond resolution, 3
//! significant digits) and CDF points for charts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// min/avg/p50/p95/p99/max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many latencies.
    pub count: u64,
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub avg_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl LatencySummary {
    /// The summary of `latencies`; `None` when there are none. Min, max
    /// and mean are exact; percentiles come from an hdrhistogram
    /// (microseconds, 3 significant digits: within 0.1 %), clamped to
    /// `[min, max]`.
    pub fn of(latencies: impl IntoIterator<Item = Duration>) -> Option<Self> {
        // Auto-resizing, so no value is out of range.
        let mut h = Histogram::<u64>::new(3).ok()?;
        let (mut min, mut max, mut sum) = (Duration::MAX, Duration::ZERO, Duration::ZERO);
        for l in latencies {
            let us = u64::try_from(l.as_micros()).unwrap_or(u64::MAX).max(1);
            h.record(us).ok()?;
            min = min.min(l);
            max = max.max(l);
            sum = sum.saturating_add(l);
        }
        if h.is_empty() {
            return None;
        }
        let (min_ms, max_ms) = (ms(min), ms(max));
        let pct = |q: f64| (h.value_at_quantile(q) as f64 / 1000.0).clamp(min_ms, max_ms);
        Some(Self {
            count: h.len(),
            min_ms,
            avg_ms: ms(sum) / h.len() as f64,
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            max_ms,
        })
    }

    /// The summary as `(key, value)` metrics under `prefix`
    /// (`prefix.p50_ms` …), for [`Outcome::metric`](crate::Outcome::metric).
    pub fn metrics(&self, prefix: &str) -> Vec<(String, f64)> {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        vec![
            (key("count"), self.count as f64),
            (key("min_ms"), self.min_ms),
            (key("avg_ms"), self.avg_ms),
            (key("p50_ms"), self.p50_ms),
            (key("p95_ms"), self.p95_ms),
            (key("p99_ms"), self.p99_ms),
            (key("max_ms"), self.max_ms),
        ]
    }
}

/// The empirical CDF of `latencies` as `[latency_ms, percent]` points, at
/// most `max_points` of them (evenly spaced ranks, always including the
/// smallest and largest).
pub fn cdf(latencies: &[Duration], max_points: usize) -> Vec<[f64; 2]> {
    let mut ms: Vec<f64> = latencies.iter().map(|l| l.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    if n == 0 || max_points == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max_points).max(1);
    let mut points: Vec<[f64; 2]> = (0..n)
        .step_by(step)
        .map(|i| [ms[i], (i + 1) as f64 * 100.0 / n as f64])
        .collect();
    if points.last().map(|p| p[1]) != Some(100.0) {
        points.push([ms[n - 1], 100.0]);
    }
    points
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `values` (already in any unit); `None` when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn summary_of_known_values() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = LatencySummary::of(l.iter().copied()).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!((s.min_ms, s.max_ms), (1.0, 100.0));
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p95_ms - 95.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.avg_ms - 50.5).abs() < 1e-9, "{s:?}");
        // Exact where a claim compares with a threshold: 5 000.4 ms is not
        // rounded down into hdrhistogram's 4 ms bucket below 5 s.
        let t = LatencySummary::of([Duration::from_micros(5_000_400)]).unwrap();
        assert!(
            t.min_ms >= 5000.0 && t.p50_ms >= 5000.0 && t.p99_ms <= t.max_ms,
            "{t:?}"
        );
        assert!(LatencySummary::of(Vec::new()).is_none());
    }

    #[test]
    fn cdf_is_monotone_and_ends_at_100() {
        let l: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let c = cdf(&l, 50);
        assert!(c.len() <= 51);
        assert!(
            c.windows(2)
                .all(|w| w[0][0] <= w[1][0] && w[0][1] < w[1][1])
        );
        assert_eq!(c.last().unwrap()[1], 100.0);
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
