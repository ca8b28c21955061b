//! # campusfood-testkit
//!
//! Test support shared by the workspace's test suites. Not for production
//! use: it panics freely.
//!
//! - [`Outage`]: a TCP proxy in front of a broker that can be cut and
//!   restored — a broker outage for one test's connections, without stopping
//!   the broker every other test shares.
//! - [`on_own_runtime`]: async clean-up from `Drop`.
//! - [`ledger_contract`]: the suite every inventory ledger must pass.
//! - [`conformance`]: the suite every transport must pass
//!   ([`pub_sub_suite!`], [`request_suite!`]).
//! - [`gated`]: a ledger that reserves at once and answers when told.
//! - [`postgres`]: a Postgres schema of a test's own.
//! - [`rabbitmq`]: deleting a test's queues and exchanges.
//! - [`prometheus`]: a scrape in Prometheus text, parsed strictly.
//! - [`example_binary`]: the path of a shipped example, to run it as a
//!   separate process as users do.
//! - [`until`]: waiting on a condition with a deadline.
//! - [`unique`], [`init_logging`]: unique broker names and test logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;
pub mod gated;
pub mod ledger_contract;
pub mod postgres;
pub mod prometheus;
pub mod rabbitmq;

/// The example binary `name` as `cargo test` built it
/// (`target/<profile>/examples/<name>`, beside the test binary's `deps/`).
/// Panics, saying how to build it, when it is not there.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples` (cargo test builds it too)",
        path.display()
    );
    path
}

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP proxy to `upstream` that can be cut and restored. While cut it
/// drops every connection and refuses new ones (counting them). Plain
/// threads and blocking sockets, so it works under any async runtime.
#[derive(Debug)]
pub struct Outage {
    port: u16,
    state: Arc<ProxyState>,
}

#[derive(Debug, Default)]
struct ProxyState {
    up: AtomicBool,
    closed: AtomicBool,
    refused: AtomicU32,
    live: Mutex<Vec<TcpStream>>,
}

impl Outage {
    /// A proxy on a free loopback port forwarding to `upstream`
    /// (`host:port`), up.
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        state.up.store(true, Ordering::SeqCst);
        let st = state.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            while !st.closed.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Polling the non-blocking listener; the test's
                        // deadlines bound how long anyone waits.
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                if !st.up.load(Ordering::SeqCst) {
                    st.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&upstream) else {
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let mut live = st.live.lock().unwrap();
                live.push(client.try_clone().unwrap());
                live.push(upstream.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, state }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An AMQP URL (guest/guest) through the proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}", self.port)
    }

    /// The broker "goes down": connections drop, new ones are refused.
    pub fn cut(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        for s in self.state.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// The broker is back.
    pub fn restore(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u32 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Runs `work` to completion on a runtime of its own, on a thread of its
/// own, and returns its output (`None` if it panicked). For clean-up in
/// `Drop` (deleting a test's queues or topics, also after a failed
/// assertion): `Drop` runs inside the test's runtime, which cannot block on
/// a future itself.
pub fn on_own_runtime<F>(work: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .map(|rt| rt.block_on(work))
    })
    .join()
    .ok()
    .flatten()
}

/// Async clean-up that runs when dropped — also after a failed assertion —
/// on a runtime of its own ([`on_own_runtime`]), saying on stderr when it
/// failed (a test's topics or queues left behind).
#[must_use = "dropping it runs the clean-up at once"]
pub struct CleanUp {
    what: &'static str,
    /// In a mutex only to be `Sync`: it is taken once, when dropped.
    work: Mutex<Option<CleanUpWork>>,
}

/// What a [`CleanUp`] runs.
type CleanUpWork = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

impl std::fmt::Debug for CleanUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanUp").field("what", &self.what).finish()
    }
}

impl CleanUp {
    /// Runs `work` when dropped; `what` names what it deletes.
    pub fn new<F, T, E>(what: &'static str, work: F) -> Self
    where
        F: std::future::Future<Output = Result<T, E>> + Send + 'static,
        E: std::fmt::Debug,
    {
        Self {
            what,
            work: Mutex::new(Some(Box::pin(async move {
                work.await.map(drop).map_err(|e| format!("{e:?}"))
            }))),
        }
    }
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        let work = self.work.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(work) = work.take() else { return };
        if let Some(Ok(())) = on_own_runtime(work) {
            return;
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!("could not delete {}: left behind", self.what);
        }
    }
}

/// Waits until `cond` holds, polling every 10 ms; panics naming `what`
/// after `deadline`. Takes async closures (`async || flag.load(..)`,
/// `|| async { .. }`), paced by [`campusfood_core::task::Deadline`].
pub async fn until(what: &str, deadline: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let pace = campusfood_core::task::Deadline::after(deadline, Duration::from_millis(10));
    while !cond().await {
        if pace.tick().await.is_err() {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
    }
}

/// `test` with a random 48-bit suffix: names of queues, topics and groups
/// that no other test (or earlier run) uses.
pub fn unique(test: &str) -> String {
    format!("{test}-{:012x}", fastrand::u64(..) & 0xFFFF_FFFF_FFFF)
}

/// Test logs go nowhere unless `TEST_LOG` is set; then to the test's
/// output, filtered by `RUST_LOG`. Safe to call from every test.
pub fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
