//! Logging: `tracing` with an env filter; JSON lines in prod (for the log
//! collector), readable text elsewhere. Logs go to stderr so that operator
//! commands can print tables and the crontab on stdout.
//!
//! A run's span carries `job_id` and `run_id`; in JSON the fields of every
//! enclosing span are put on the top level of each line (the event's own
//! fields stay under `fields`, so they can never clash with them), so a
//! collector can filter one run's lines — the KERIS client's retry warnings
//! and the signal listener's included — by two top-level keys. In text the
//! span chain prefixes each line (`run{job_id=… run_id=…}: …`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::{LogFormat, Profile};

/// Whether [`init`] chose JSON lines (no progress bar then).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Whether the logs are JSON lines; false before [`init`].
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `level` is an EnvFilter directive such as
/// `info` or `aidt_batch=debug,sqlx=warn`; `RUST_LOG` overrides it.
pub fn init(profile: Profile, format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(with_quiet_dependencies(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => profile == Profile::Prod,
    };
    JSON_LOGS.store(json, Ordering::Relaxed);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                json_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_current_span(false)
                    .with_span_list(false)
                    .flatten_span_list_on_top_level(true),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_writer(crate::runtime::progress::SuspendingStderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init()
    };
    // A second init (tests that call into the library twice) keeps the first.
    let _ = result;
}

/// The drivers log every statement at info; keep them at warn unless asked.
fn with_quiet_dependencies(level: &str) -> String {
    if level.contains('=') {
        level.to_string()
    } else {
        format!("{level},sqlx=warn,mongodb=warn,hyper=warn,reqwest=warn")
    }
}
