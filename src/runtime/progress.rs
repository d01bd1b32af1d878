//! A progress bar with rate and ETA for a person watching a long job at a
//! terminal, drawn by the runner from the run's counts: a job only says how
//! many items it expects ([`Progress::set_total`] or
//! [`Progress::set_total_with`]), once.
//!
//! No bar under cron, Kubernetes or any redirected stderr, with JSON logs,
//! or on a `dumb` terminal ([`should_draw`]); there the calls cost nothing
//! (a total that needs a query is not even counted). While a bar is drawn,
//! log lines are written above it ([`SuspendingStderr`]).

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::job::JobContext;

/// The bar being drawn, if any: the log writer hides it around each line.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// How often the bar takes the run's counts.
const TICK: Duration = Duration::from_millis(200);
/// `position` when the bar follows the run's read count.
const FOLLOW_READ: u64 = u64::MAX;

/// Whether a bar is drawn: only for a person at a terminal reading text logs.
pub fn should_draw(stderr_is_terminal: bool, json_logs: bool, term: Option<&str>) -> bool {
    stderr_is_terminal && !json_logs && term != Some("dumb")
}

/// [`should_draw`] for this process.
pub fn should_draw_here() -> bool {
    should_draw(
        std::io::stderr().is_terminal(),
        crate::telemetry::json_logs(),
        std::env::var("TERM").ok().as_deref(),
    )
}

/// What a job tells the runner's bar; a field of [`JobContext`].
#[derive(Debug)]
pub struct Progress {
    shown: bool,
    wanted: AtomicBool,
    /// 0: not known (a spinner with the counts and their rate).
    total: AtomicU64,
    position: AtomicU64,
}

impl Progress {
    pub(crate) fn new(shown: bool) -> Self {
        Self {
            shown,
            wanted: AtomicBool::new(false),
            total: AtomicU64::new(0),
            position: AtomicU64::new(FOLLOW_READ),
        }
    }

    /// Whether this run draws a bar (a terminal, text logs).
    pub fn is_shown(&self) -> bool {
        self.shown
    }

    /// Shows a bar running to `total` items; its position is the run's read
    /// count (`ctx.counts.add_read`).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// [`Self::set_total`] with what `count` returns; `count` runs only when
    /// a bar is drawn, so a run under cron never pays for it. A count that
    /// fails leaves a bar without a total; it never fails the run.
    pub async fn set_total_with<F, Fut>(&self, count: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<u64>>,
    {
        if !self.shown {
            return;
        }
        self.wanted.store(true, Ordering::Relaxed);
        match count().await {
            Ok(total) => self.set_total(total),
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "no total for the progress bar"),
        }
    }

    /// Shows a bar without a total: elapsed time, the counts and their rate
    /// (a job whose items cannot be counted ahead).
    pub fn show_counts(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// For a job that adds its counts only at the end: `done` of `total`
    /// items so far (the bar stops following the read count).
    pub fn set_position(&self, done: u64, total: u64) {
        self.position.store(done, Ordering::Relaxed);
        self.set_total(total);
    }

    fn position(&self, read: u64) -> u64 {
        match self.position.load(Ordering::Relaxed) {
            FOLLOW_READ => read,
            done => done,
        }
    }
}

/// Draws the bar of `ctx` until dropped (the runner polls it beside the job
/// and calls [`finish`] once the job returned). Never completes.
pub async fn draw(ctx: &JobContext) {
    if !ctx.progress.shown {
        return std::future::pending().await;
    }
    while !ctx.progress.wanted.load(Ordering::Relaxed) {
        tokio::time::sleep(TICK).await;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    bar.set_prefix(ctx.def.id);
    let mut bounded = None;
    let mut started = false;
    loop {
        let counts = ctx.counts.snapshot();
        let total = ctx.progress.total.load(Ordering::Relaxed);
        if bounded != Some(total > 0) {
            bounded = Some(total > 0);
            bar.set_style(style(total > 0));
        }
        if total > 0 {
            bar.set_length(total);
        }
        bar.set_position(ctx.progress.position(counts.read));
        bar.set_message(format!(
            "written {} skipped {} failed {}",
            counts.written, counts.skipped, counts.failed
        ));
        if !started {
            // Drawn from here on, with its style and figures set.
            started = true;
            bar.enable_steady_tick(TICK);
            *ACTIVE.lock().expect("progress bar lock") = Some(bar.clone());
        }
        tokio::time::sleep(TICK).await;
    }
}

fn style(bounded: bool) -> ProgressStyle {
    let template = if bounded {
        "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, ETA {eta}) {msg}"
    } else {
        "{spinner} {prefix} [{elapsed_precise}] read {human_pos} ({rate}) {msg}"
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", indicatif::HumanCount(state.per_sec() as u64));
            },
        )
        .progress_chars("=> ")
}

/// Removes the bar, if one is drawn, before the run's summary line.
pub fn finish() {
    if let Some(bar) = ACTIVE.lock().expect("progress bar lock").take() {
        bar.finish_and_clear();
    }
}

/// Runs `f` with the bar (if any) hidden, so its output is not mixed into it.
fn with_bar_hidden<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE.lock().expect("progress bar lock").clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// stderr for the text log layer: each line is written above the bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct SuspendingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SuspendingStderr {
    type Writer = SuspendingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        SuspendingStderr
    }
}

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        with_bar_hidden(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        with_bar_hidden(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_only_for_a_terminal_with_text_logs() {
        assert!(should_draw(true, false, Some("xterm-256color")));
        assert!(should_draw(true, false, None));
        // cron, Kubernetes, `> file 2>&1`: stderr is no terminal
        assert!(!should_draw(false, false, Some("xterm")));
        assert!(!should_draw(false, false, None));
        // JSON log mode (prod): lines for a collector, never a bar
        assert!(!should_draw(true, true, Some("xterm")));
        assert!(!should_draw(false, true, None));
        assert!(!should_draw(true, false, Some("dumb")));
    }

    #[tokio::test]
    async fn a_total_is_only_counted_when_a_bar_is_drawn() {
        let hidden = Progress::new(false);
        let mut counted = false;
        hidden
            .set_total_with(|| {
                counted = true;
                async { Ok(10) }
            })
            .await;
        assert!(!counted);
        assert!(!hidden.wanted.load(Ordering::Relaxed));

        let shown = Progress::new(true);
        shown.set_total_with(|| async { Ok(42) }).await;
        assert!(shown.wanted.load(Ordering::Relaxed));
        assert_eq!(shown.total.load(Ordering::Relaxed), 42);
        assert_eq!(shown.position(7), 7, "follows the read count");

        let failed = Progress::new(true);
        failed
            .set_total_with(|| async { Err(anyhow::anyhow!("no count")) })
            .await;
        assert!(
            failed.wanted.load(Ordering::Relaxed),
            "a bar without a total"
        );
        assert_eq!(failed.total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_explicit_position_replaces_the_read_count() {
        let p = Progress::new(true);
        p.set_position(50, 200);
        assert_eq!(p.position(7), 50);
        assert_eq!(p.total.load(Ordering::Relaxed), 200);
    }
}
