//! The shipped binaries as child processes: started with their defaults
//! (plus the environment a figure needs), their logs in a file, stopped
//! with SIGTERM as a user's Ctrl-C would.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::LabError;

/// How long a service gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running shipped binary. Killed if dropped while running.
#[derive(Debug)]
pub(super) struct Service {
    name: String,
    child: Child,
}

/// A [`LabError::Process`] about `what`.
pub(super) fn process_err(what: impl Into<String>, message: impl ToString) -> LabError {
    LabError::Process {
        what: what.into(),
        message: message.to_string(),
    }
}

impl Service {
    /// Starts `bin` with `args` in `cwd`, the environment of this process
    /// plus `env`, stdout and stderr appended to `log`.
    pub(super) fn spawn(
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        cwd: &Path,
        log: &Path,
    ) -> Result<Self, LabError> {
        let name = format!(
            "{} {}",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| process_err(format!("opening {}", log.display()), e))
        };
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                process_err(
                    format!("starting {name}"),
                    format!("{e} (build the examples: cargo build --release --examples)"),
                )
            })?;
        Ok(Self { name, child })
    }

    /// The command line, for messages.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Fails when the process has already exited.
    pub(super) fn check_running(&mut self, log: &Path) -> Result<(), LabError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(process_err(
                self.name.clone(),
                format!("exited ({status}); its log: {}", log.display()),
            )),
            Err(e) => Err(process_err(self.name.clone(), e)),
        }
    }

    /// Waits for the process to exit by itself within `deadline`.
    pub(super) async fn wait(mut self, deadline: Duration) -> Result<ExitStatus, LabError> {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.map_err(|e| process_err(self.name.clone(), e)),
            Err(_) => Err(LabError::Deadline {
                what: format!("{} to exit", self.name),
                after: deadline,
            }),
        }
    }

    /// SIGTERM, then waits for the exit (killed after [`STOP_GRACE`]).
    pub(super) async fn stop(mut self) -> Result<(), LabError> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| process_err(format!("signalling {}", self.name), e))?;
        if !sent.success() {
            return Err(process_err(format!("signalling {}", self.name), sent));
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.name, "did not stop on SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
        Ok(())
    }
}

/// Polls `url` until it answers 2xx, while `service` runs, within
/// `deadline`.
pub(super) async fn wait_ready(
    client: &reqwest::Client,
    service: &mut Service,
    url: &str,
    log: &Path,
    deadline: Duration,
) -> Result<(), LabError> {
    let start = Instant::now();
    loop {
        service.check_running(log)?;
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if start.elapsed() > deadline {
            return Err(LabError::Deadline {
                what: format!("{} to answer {url}", service.name()),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A folder for one part's run: the services' working directory (their
/// `./data`) and their logs.
#[derive(Debug)]
pub(super) struct Workdir {
    dir: tempfile::TempDir,
    logs: PathBuf,
}

impl Workdir {
    /// A fresh working directory; logs go to `logs/<part>-<service>.log`.
    pub(super) fn new(logs: &Path) -> Result<Self, LabError> {
        let dir =
            tempfile::tempdir().map_err(|e| process_err("creating a working directory", e))?;
        std::fs::create_dir_all(logs)
            .map_err(|e| process_err(format!("creating {}", logs.display()), e))?;
        Ok(Self {
            dir,
            logs: logs.to_owned(),
        })
    }

    /// The services' working directory.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The log file of `name`, emptied: it holds this run's lines only
    /// (a service restarted within the run appends to it).
    pub(super) fn log(&self, name: &str) -> Result<PathBuf, LabError> {
        let path = self.logs.join(format!("{name}.log"));
        std::fs::File::create(&path)
            .map_err(|e| process_err(format!("emptying {}", path.display()), e))?;
        Ok(path)
    }
}
