//! Part A's figures: `sync_rest` as the README starts it (one process,
//! three services over loopback HTTP, redb ledger), loaded with wrk.

use std::time::Duration;

use campusfood_core::config::{HttpConfig, STOCK_ENV};

use super::process::{Service, Workdir, wait_ready};
use super::wrk::Wrk;
use super::{FigureId, Measured, PerfOptions};
use crate::LabError;

/// Enough stock that no order of the runs is refused.
pub(super) const STOCK: &str = "burger=1000000000";

pub(super) async fn measure(options: &PerfOptions) -> Vec<Measured> {
    match run(options).await {
        Ok(figures) => figures,
        Err(e) => vec![
            Measured::failed(FigureId::APostP50, &e),
            Measured::failed(FigureId::AOrdersPerSecond, &e),
        ],
    }
}

async fn run(options: &PerfOptions) -> Result<Vec<Measured>, LabError> {
    let work = Workdir::new(&options.logs)?;
    let log = work.log("sync_rest")?;
    let mut service = Service::spawn(
        &options.bin_dir.join("sync_rest"),
        &[],
        &[(STOCK_ENV, STOCK.to_owned())],
        work.path(),
        &log,
    )?;
    let base = format!("http://127.0.0.1:{}", HttpConfig::ORDER_PORT);
    let client = reqwest::Client::new();
    wait_ready(
        &client,
        &mut service,
        &format!("{base}/health"),
        &log,
        Duration::from_secs(30),
    )
    .await?;
    let url = format!("{base}{}", HttpConfig::ORDER_PATH);
    let wrk = Wrk {
        bin: &options.wrk,
        dir: work.path(),
    };
    wrk.run(2, 16, options.warmup, &url).await?;
    let one = wrk.run(1, 1, options.duration, &url).await?;
    let many = wrk.run(2, 16, options.duration, &url).await?;
    service.check_running(&log)?;
    service.stop().await?;
    for (run, what) in [(&one, "1 connection"), (&many, "16 connections")] {
        if run.errors > 0 {
            return Err(LabError::Unexpected {
                what: format!("Part A, {what}"),
                status: 0,
                body: format!("{} failed requests (see {})", run.errors, log.display()),
            });
        }
    }
    Ok(vec![
        Measured::ok(
            FigureId::APostP50,
            one.p50_ms,
            format!(
                "p99 {:.2} ms, {:.0} orders/s on one connection",
                one.p99_ms, one.rps
            ),
        ),
        Measured::ok(
            FigureId::AOrdersPerSecond,
            many.rps,
            format!("p50 {:.2} ms, p99 {:.2} ms", many.p50_ms, many.p99_ms),
        ),
    ])
}
