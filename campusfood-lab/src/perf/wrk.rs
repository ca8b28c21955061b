//! wrk, the HTTP load generator the figures are defined with, run with
//! `scripts/wrk/order.lua` (one `POST /order`, and a last line
//! `p50=… p99=… rps=… errors=…`).

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::process::process_err;
use crate::LabError;

/// The wrk script, one copy: `scripts/wrk/order.lua`.
const ORDER_LUA: &str = include_str!("../../../scripts/wrk/order.lua");

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct WrkRun {
    /// Median latency, milliseconds.
    pub(super) p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub(super) p99_ms: f64,
    /// Requests per second over the run.
    pub(super) rps: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub(super) errors: u64,
}

/// A wrk command: threads, connections, duration, against `url`.
#[derive(Debug)]
pub(super) struct Wrk<'a> {
    /// The wrk executable.
    pub(super) bin: &'a Path,
    /// Where the script is written.
    pub(super) dir: &'a Path,
}

impl Wrk<'_> {
    /// Runs `wrk -t<threads> -c<connections> -d<duration> --latency -s
    /// order.lua url`.
    pub(super) async fn run(
        &self,
        threads: u32,
        connections: u32,
        duration: Duration,
        url: &str,
    ) -> Result<WrkRun, LabError> {
        let script = self.dir.join("order.lua");
        if !script.exists() {
            std::fs::write(&script, ORDER_LUA)
                .map_err(|e| process_err(format!("writing {}", script.display()), e))?;
        }
        let secs = duration.as_secs().max(1);
        let output = Command::new(self.bin)
            .args([
                format!("-t{threads}"),
                format!("-c{connections}"),
                format!("-d{secs}s"),
                "--latency".to_owned(),
                "-s".to_owned(),
                script.display().to_string(),
                url.to_owned(),
            ])
            .output()
            .await
            .map_err(|e| {
                process_err(
                    "running wrk",
                    format!("{e} (install it: apt-get install wrk; scripts/perf.sh does)"),
                )
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(process_err(
                "wrk",
                format!(
                    "{}: {}{}",
                    output.status,
                    stdout,
                    String::from_utf8_lossy(&output.stderr)
                ),
            ));
        }
        parse(&stdout).ok_or_else(|| process_err("wrk", format!("no summary line in: {stdout}")))
    }
}

/// The `p50=…ms p99=…ms rps=… errors=…` line of order.lua's `done`.
fn parse(stdout: &str) -> Option<WrkRun> {
    let line = stdout.lines().rev().find(|l| l.starts_with("p50="))?;
    let mut run = WrkRun {
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        rps: f64::NAN,
        errors: u64::MAX,
    };
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value = value.trim_end_matches("ms");
        match key {
            "p50" => run.p50_ms = value.parse().ok()?,
            "p99" => run.p99_ms = value.parse().ok()?,
            "rps" => run.rps = value.parse().ok()?,
            "errors" => run.errors = value.parse().ok()?,
            _ => {}
        }
    }
    (run.p50_ms.is_finite() && run.rps.is_finite() && run.errors != u64::MAX).then_some(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scripts_summary_line() {
        let out = "Running 10s test @ http://127.0.0.1:8000/order\n  Latency 1ms\np50=0.512ms p99=1.900ms rps=1834 errors=0\n";
        assert_eq!(
            parse(out),
            Some(WrkRun {
                p50_ms: 0.512,
                p99_ms: 1.9,
                rps: 1834.0,
                errors: 0
            })
        );
        assert_eq!(parse("p50=0.5ms rps=1"), None, "a field missing");
        assert_eq!(parse("nothing"), None);
    }
}
