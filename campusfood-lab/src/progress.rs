//! Progress bars for long runs: indicatif, drawn to stderr, and hidden
//! when stderr is not a terminal (CI, tests, redirected output).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress bars go.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    /// Bars on stderr when it is a terminal and `show` is set; hidden
    /// otherwise.
    pub fn new(show: bool) -> Self {
        let target = if show && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    /// Never draws.
    pub fn hidden() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        }
    }

    /// A bar of `len` steps with `prefix` (the experiment id) and `message`.
    pub fn bar(&self, prefix: &str, len: u64, message: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix:>3} {msg:40!} [{bar:30}] {pos:>5}/{len:<5} {elapsed:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self.multi.add(
            ProgressBar::new(len)
                .with_style(style)
                .with_prefix(prefix.to_owned())
                .with_message(message.to_owned()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}
