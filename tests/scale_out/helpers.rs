//! Running the shipped example binaries as separate OS processes: where
//! they are, free ports, a child guard that SIGKILLs on drop, a test's own
//! RabbitMQ prefix and Postgres schema (both removed at the end, also when
//! the test fails), and waiting on conditions with deadlines.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use campusfood_testkit::postgres::TestSchema;
use serde_json::{Value, json};

/// The management API of the broker `scripts/brokers.sh up rabbitmq` starts.
use campusfood_testkit::rabbitmq::MANAGEMENT;

/// The example binary `name`, as `cargo test` (or `cargo build --examples`)
/// builds it in `target/<profile>/examples/` (panics saying how to build it
/// when it is missing), with a warning when it looks older than the
/// libraries it links.
pub fn example(name: &str) -> PathBuf {
    let path = campusfood_testkit::example_binary(name);
    if let Some(deps) = path.parent().and_then(Path::parent).map(|p| p.join("deps")) {
        warn_if_stale(&path, &deps);
    }
    path
}

/// Says so when a library the examples link was built after the example:
/// the test would run yesterday's code. (A warning only: other feature
/// sets build their own copies of the libraries in the same folder.)
fn warn_if_stale(example: &Path, deps: &Path) {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let Some(built) = modified(example) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(deps) else {
        return;
    };
    let newer = entries.flatten().map(|e| e.path()).find(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.starts_with("libcampusfood_")
            && name.ends_with(".rlib")
            && modified(p).is_some_and(|m| m > built)
    });
    if let Some(lib) = newer {
        eprintln!(
            "warning: {} is newer than {}: if library code changed, run `cargo build --examples`",
            lib.display(),
            example.display()
        );
    }
}

/// A free loopback port: bound, read, released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A short random hex string for unique names.
pub fn hex() -> String {
    format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// How to start one process: binary, arguments, environment, working
/// directory and the file its stderr (and stdout) go to.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log: PathBuf,
}

impl Spec {
    /// `bin args…` in `cwd`, logging to `<logs>/<name>.log`.
    pub fn new(name: &str, bin: &Path, args: &[&str], cwd: &Path, logs: &Path) -> Self {
        Self {
            name: name.to_owned(),
            bin: bin.to_path_buf(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
            env: vec![
                ("RUST_LOG".to_owned(), "warn".to_owned()),
                // An error's message, not pages of its backtrace, in the
                // log tails (panics still get theirs with RUST_BACKTRACE).
                ("RUST_LIB_BACKTRACE".to_owned(), "0".to_owned()),
            ],
            cwd: cwd.to_path_buf(),
            log: logs.join(format!("{name}.log")),
        }
    }

    /// Sets `key=value` in the child's environment.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Sets every pair of `vars`.
    pub fn envs(mut self, vars: &[(String, String)]) -> Self {
        self.env.extend(vars.iter().cloned());
        self
    }
}

/// A running child process. Dropping it SIGKILLs and reaps it, so a
/// failing test leaves no process behind.
#[derive(Debug)]
pub struct Proc {
    pub spec: Spec,
    child: Option<Child>,
}

impl Proc {
    /// Starts `spec`. The child sees none of this process's `CAMPUSFOOD_*`
    /// variables, only those of `spec`; its output is appended to
    /// `spec.log`.
    pub fn start(spec: Spec) -> Self {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log)
            .expect("the child's log file");
        let _ = writeln!(
            log,
            "==== {} {} (cwd {})",
            spec.bin.display(),
            spec.args.join(" "),
            spec.cwd.display()
        );
        let mut cmd = Command::new(&spec.bin);
        cmd.args(&spec.args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CAMPUSFOOD_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.bin.display()));
        Self {
            spec,
            child: Some(child),
        }
    }

    /// The child's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// SIGKILLs the child and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `kill -<signal>` (e.g. `STOP`, `CONT`) to the child.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running child").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// Kills the child and starts it again with the same settings.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start(self.spec.clone());
    }

    /// Waits for the child to exit by itself, up to `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let name = self.spec.name.clone();
        let mut status = None;
        until(&format!("{name} to exit"), deadline, async || {
            status = self.exited();
            status.is_some()
        })
        .await;
        status.expect("exited")
    }

    /// The child's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The last `lines` lines of its output.
    pub fn tail(&self, lines: usize) -> String {
        let out = self.output();
        let all: Vec<&str> = out.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics with the child's output if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}); its output ends with:\n{}",
                self.spec.name,
                self.tail(40)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test's processes and what they share. On drop the processes are
/// killed first (printing the tails of their logs when the test failed),
/// then the schema is dropped, the RabbitMQ names deleted and the folder
/// removed.
#[derive(Debug)]
pub struct Cluster {
    pub procs: Vec<Proc>,
    pub schema: Option<TestSchema>,
    pub rabbit: Option<RabbitNames>,
    /// The working directory of every process (logs in `logs/`).
    pub dir: tempfile::TempDir,
    pub logs: PathBuf,
    pub client: reqwest::Client,
}

impl Cluster {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).expect("the logs folder");
        Self {
            procs: Vec::new(),
            schema: None,
            rabbit: None,
            dir,
            logs,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// The folder every process runs in.
    pub fn cwd(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A spec for `bin args…` run from the cluster's folder.
    pub fn spec(&self, name: &str, bin: &Path, args: &[&str]) -> Spec {
        Spec::new(name, bin, args, self.dir.path(), &self.logs)
    }

    /// Starts `spec`; returns its index in `procs`.
    pub fn start(&mut self, spec: Spec) -> usize {
        self.procs.push(Proc::start(spec));
        self.procs.len() - 1
    }

    /// Waits until `GET <base>/health` answers 200, failing at once if
    /// process `index` exits.
    pub async fn wait_healthy(&mut self, index: usize, base: &str, deadline: Duration) {
        let url = format!("{base}/health");
        let client = self.client.clone();
        let proc = &mut self.procs[index];
        let what = format!("{} to answer {url}", proc.spec.name);
        until(&what, deadline, async || {
            proc.assert_running();
            matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
        })
        .await;
    }

    /// Panics if any process has exited.
    pub fn assert_all_running(&mut self) {
        for p in &mut self.procs {
            p.assert_running();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &mut self.procs {
                let status = p.exited().map_or("running".to_owned(), |s| s.to_string());
                eprintln!(
                    "---- {} ({status}), last lines of {}:\n{}",
                    p.spec.name,
                    p.spec.log.display(),
                    p.tail(30)
                );
            }
        }
        for p in &mut self.procs {
            p.kill();
        }
        self.procs.clear();
        // Then the fields: schema, RabbitMQ names, folder.
    }
}

/// The dead-letter queues under `prefix` that hold messages, with how
/// many.
pub async fn dead_letters(client: &reqwest::Client, prefix: &str) -> Vec<(String, u64)> {
    let Ok(resp) = client
        .get(format!("{MANAGEMENT}/queues/%2F?columns=name,messages"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let queues: Vec<Value> = resp.json().await.unwrap_or_default();
    queues
        .iter()
        .filter_map(|q| Some((q["name"].as_str()?, q["messages"].as_u64().unwrap_or(0))))
        .filter(|(name, n)| name.starts_with(prefix) && name.ends_with("dlq") && *n > 0)
        .map(|(name, n)| (name.to_owned(), n))
        .collect()
}

/// One test's RabbitMQ names: everything under `<prefix>.`, deleted
/// through the management API on drop (also after a failed assertion;
/// leftovers of a killed run expire through the broker's policy on
/// `cftest-` queues).
#[derive(Debug)]
pub struct RabbitNames {
    pub prefix: String,
}

impl RabbitNames {
    pub fn new(test: &str) -> Self {
        Self {
            prefix: campusfood_testkit::rabbitmq::unique_prefix(test),
        }
    }
}

impl Drop for RabbitNames {
    fn drop(&mut self) {
        let prefix = format!("{}.", self.prefix);
        let deleted = campusfood_testkit::on_own_runtime(async move {
            campusfood_testkit::rabbitmq::delete_prefixed(MANAGEMENT, &prefix).await
        });
        if !matches!(deleted, Some(Some(()))) {
            eprintln!(
                "could not delete the test's RabbitMQ queues ({}.*); the broker policy expires them",
                self.prefix
            );
        }
    }
}

/// `host:port` of a `postgres://user:password@host:port/db` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// `url` with its `host:port` replaced by `host_port`.
pub fn with_host_port(url: &str, host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{userinfo}{host_port}{tail}")
}

/// A Postgres schema of the test's own (`t_scale_<hex>`; the services
/// create their tables in it), dropped with everything in it when the
/// cluster is, after checking that the test database answers.
pub async fn test_schema() -> TestSchema {
    let schema = TestSchema::new("scale");
    let shown = campusfood::core::config::redact_url(&campusfood_testkit::postgres::url());
    match tokio::time::timeout(Duration::from_secs(10), schema.session()).await {
        Ok(session) => drop(session),
        Err(_) => panic!(
            "Postgres at {shown} did not answer within 10 s: start it with `scripts/brokers.sh up postgres`"
        ),
    }
    schema
}

pub use campusfood_testkit::until;

/// `POST <base>/order {"item", "qty"}`: the status and the JSON body.
pub async fn place(client: &reqwest::Client, base: &str, item: &str, qty: u32) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/order"))
        .json(&json!({"item": item, "qty": qty}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/order: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `GET <base>/orders/{id}`'s `status` (`None` when it does not answer 200).
pub async fn order_status(client: &reqwest::Client, base: &str, id: &str) -> Option<String> {
    let resp = client
        .get(format!("{base}/orders/{id}"))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    body["status"].as_str().map(str::to_owned)
}

/// `GET /orders/{id}/timeline`: each hop's (step, service).
pub async fn timeline(client: &reqwest::Client, base: &str, id: &str) -> Vec<(String, String)> {
    let url = format!("{base}/orders/{id}/timeline");
    let resp = client.get(&url).send().await.expect("GET timeline");
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let body: Value = resp.json().await.expect("a JSON timeline");
    body["hops"]
        .as_array()
        .unwrap_or_else(|| panic!("no hops: {body}"))
        .iter()
        .map(|h| {
            let field = |k: &str| h[k].as_str().unwrap_or_default().to_owned();
            (field("step"), field("service"))
        })
        .collect()
}

/// `GET <base>/inventory`'s level of `item`.
pub async fn stock(client: &reqwest::Client, base: &str, item: &str) -> u64 {
    let body: Value = client
        .get(format!("{base}/inventory"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/inventory: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/inventory: {e}"));
    body[item]
        .as_u64()
        .unwrap_or_else(|| panic!("GET {base}/inventory has no {item}: {body}"))
}

pub fn base(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}
