//! Prometheus metrics of a run, written once at its end by the runner for
//! every job: to the node-exporter textfile collector's directory (one
//! `aidt_batch_<job>.prom` per job, replaced atomically) and/or pushed to a
//! Pushgateway (`POST <url>/metrics/job/<JOB-ID>`), per `[metrics]`. A
//! partition's run (`--partition 2/4`) has its own file
//! (`aidt_batch_<job>_p2of4.prom`), a `partition="2-of-4"` label and its own
//! push group (`…/metrics/job/<JOB-ID>/partition/2-of-4`), so partitions
//! never overwrite each other's metrics.
//!
//! Metrics never decide a run's outcome: a directory that cannot be written
//! or a Pushgateway that is down is logged as a warning and the run keeps
//! its status and exit code.
//!
//! `aidt_batch_last_success_timestamp_seconds` is the end of the job's last
//! `COMPLETED` (exit 0, not dry) run, read from the history after the run is
//! recorded, so a failed run carries the earlier success forward; when the
//! history cannot be read (PostgreSQL down) the value is taken back from the
//! job's existing textfile. It is left out when unknown, and pushes use
//! `POST`, which replaces only the metrics sent: the Pushgateway then keeps
//! the value it had.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use sqlx::PgPool;

use super::exit::Exit;
use super::history::RunStatus;
use super::job::CountsSnapshot;
use crate::config::MetricsSettings;

/// Prefix of every metric name.
pub const PREFIX: &str = "aidt_batch";
/// The metric whose value survives failed runs.
pub const LAST_SUCCESS: &str = "aidt_batch_last_success_timestamp_seconds";
/// The statuses `aidt_batch_last_run_status` lists (1 for the run's, 0 else).
const STATUSES: [RunStatus; 5] = [
    RunStatus::Completed,
    RunStatus::CompletedWithErrors,
    RunStatus::Failed,
    RunStatus::Stopped,
    RunStatus::Skipped,
];

/// How one run ended, as the metrics report it.
#[derive(Debug, Clone)]
pub struct RunMetrics<'a> {
    /// The job's id (`DC-01-001`): the `job_id` label and the push's group.
    pub job_id: &'a str,
    /// The job's configuration name (`dc_01_001`), with the partition
    /// (`dc_01_001_p2of4`): the textfile's name ([`file_stem`]).
    pub file_stem: String,
    /// The run's partition: a `partition` label and push group of its own.
    pub partition: Option<super::partition::Partition>,
    pub status: RunStatus,
    pub exit: Exit,
    pub counts: CountsSnapshot,
    /// From the start of the command's run (lock wait included) to its end.
    pub duration: Duration,
    pub finished_at: DateTime<Utc>,
}

/// The textfile name of a run of `def` on `partition`.
pub fn file_stem(
    def: &super::registry::JobDef,
    partition: Option<super::partition::Partition>,
) -> String {
    match partition {
        None => def.config_name(),
        Some(p) => format!("{}_p{}of{}", def.config_name(), p.index, p.count),
    }
}

/// The `partition` label's value (`2-of-4`: no `/`, so it can be a push
/// group's path segment as it is).
pub fn partition_label(p: super::partition::Partition) -> String {
    format!("{}-of-{}", p.index, p.count)
}

/// Writes and pushes the metrics of `run` as `settings` ask; logs what
/// fails. `history` is the database the last success is read from (`None`
/// when it could not be reached: the textfile's value is kept).
pub async fn export(settings: &MetricsSettings, history: Option<&PgPool>, run: &RunMetrics<'_>) {
    let dir = settings.textfile_dir();
    let url = settings.pushgateway_url();
    if dir.is_none() && url.is_none() {
        return;
    }
    let from_history = match history {
        Some(pg) => last_success_from_history(pg, run.job_id)
            .await
            .map_err(|e| {
                tracing::warn!(
                    error = %e,
                    "could not read the last success from batch_job_run; keeping the textfile's"
                );
            }),
        None => Err(()),
    };
    let last_success = match from_history {
        Ok(found) => found.map(|at| at.timestamp_millis() as f64 / 1000.0),
        Err(()) => dir.and_then(|d| last_success_from_textfile(&textfile_path(d, &run.file_stem))),
    };
    let last_success = match (last_success, run.status) {
        (None, RunStatus::Completed) => Some(run.finished_at.timestamp_millis() as f64 / 1000.0),
        (found, _) => found,
    };
    let body = render(run, last_success);
    if let Some(dir) = dir {
        match write_textfile(dir, &run.file_stem, &body) {
            Ok(path) => tracing::debug!(path = %path.display(), "metrics written"),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "could not write the metrics textfile (metrics.textfile_dir); the run's outcome is unchanged"
            ),
        }
    }
    if let Some(url) = url {
        let timeout = Duration::from_secs(settings.push_timeout_secs.max(1));
        let group = match run.partition {
            None => run.job_id.to_string(),
            Some(p) => format!("{}/partition/{}", run.job_id, partition_label(p)),
        };
        match push(url.expose_secret(), &group, body, timeout).await {
            Ok(()) => tracing::debug!("metrics pushed"),
            Err(e) => tracing::warn!(
                error = %e,
                "could not push the metrics to the Pushgateway (metrics.pushgateway_url); the run's outcome is unchanged"
            ),
        }
    }
}

/// The exposition text of `run` (Prometheus text format; every metric a
/// gauge, so the OpenMetrics text the encoder writes parses as both).
pub fn render(run: &RunMetrics<'_>, last_success: Option<f64>) -> String {
    let mut labels = vec![(
        std::borrow::Cow::Borrowed("job_id"),
        std::borrow::Cow::Owned(run.job_id.to_string()),
    )];
    if let Some(p) = run.partition {
        labels.push((
            std::borrow::Cow::Borrowed("partition"),
            std::borrow::Cow::Owned(partition_label(p)),
        ));
    }
    let mut registry = Registry::with_prefix_and_labels(PREFIX, labels.into_iter());
    let gauge_f64 = |registry: &mut Registry, name: &str, help: &str, value: f64| {
        let gauge = Gauge::<f64, AtomicU64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    };
    let gauge_i64 = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    };
    gauge_f64(
        &mut registry,
        "last_run_duration_seconds",
        "Wall time of the job's last run, lock wait included",
        run.duration.as_secs_f64(),
    );
    gauge_f64(
        &mut registry,
        "last_run_timestamp_seconds",
        "When the job's last run ended (Unix time)",
        run.finished_at.timestamp_millis() as f64 / 1000.0,
    );
    for (name, help, value) in [
        (
            "last_run_items_read",
            "Items the job's last run read",
            run.counts.read,
        ),
        (
            "last_run_items_written",
            "Items the job's last run wrote or sent",
            run.counts.written,
        ),
        (
            "last_run_items_skipped",
            "Items the job's last run skipped",
            run.counts.skipped,
        ),
        (
            "last_run_items_failed",
            "Items that failed in the job's last run (recorded for a rerun)",
            run.counts.failed,
        ),
    ] {
        gauge_i64(&mut registry, name, help, value as i64);
    }
    gauge_i64(
        &mut registry,
        "last_run_exit_code",
        "Exit code of the job's last run (0 success, 1 failure, 2 configuration, 3 lock busy, 4 item failures, 130/143 stopped)",
        run.exit.code().into(),
    );
    let status = Family::<Vec<(String, String)>, Gauge>::default();
    for each in STATUSES {
        status
            .get_or_create(&vec![("status".to_string(), each.as_str().to_string())])
            .set(i64::from(each == run.status));
    }
    registry.register(
        "last_run_status",
        "Status of the job's last run: 1 for its status, 0 for the others",
        status,
    );
    if let Some(at) = last_success {
        gauge_f64(
            &mut registry,
            "last_success_timestamp_seconds",
            "When the job's last COMPLETED run (exit 0, not a dry run) ended (Unix time)",
            at,
        );
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// `<dir>/aidt_batch_<stem>.prom`.
pub fn textfile_path(dir: &Path, file_stem: &str) -> PathBuf {
    dir.join(format!("{PREFIX}_{file_stem}.prom"))
}

/// Replaces the job's textfile atomically: a temporary file in the same
/// directory (a name the collector ignores), synced, then renamed over it,
/// so the collector reads the old file or the new one, never half of one.
fn write_textfile(dir: &Path, file_stem: &str, body: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = textfile_path(dir, file_stem);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{PREFIX}_{file_stem}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    // node-exporter usually runs as another user: the file must be readable.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(body.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// The last-success value of an earlier textfile, if there is one.
pub fn last_success_from_textfile(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|line| {
            line.strip_prefix(LAST_SUCCESS)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The end of the job's last `COMPLETED` real run.
async fn last_success_from_history(
    pg: &PgPool,
    job_id: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT max(ended_at) FROM batch_job_run
          WHERE job_id = $1 AND status = 'COMPLETED' AND NOT dry_run",
    )
    .bind(job_id)
    .fetch_one(pg)
    .await
}

/// Why a push failed; never carries the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the Pushgateway could not be reached: {0}")]
    Transport(String),
    #[error("the Pushgateway answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// `e` and its causes on one line, without the URL.
fn transport_error(e: reqwest::Error) -> PushError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    PushError::Transport(text)
}

/// `POST <base>/metrics/job/<group>` with `body`: replaces the metrics of
/// that name in the group and leaves the others (a last success that this
/// run could not determine) as they were. `group` is the job id, followed by
/// `/partition/<I>-of-<N>` for a partition's run.
pub async fn push(
    base: &str,
    group: &str,
    body: String,
    timeout: Duration,
) -> Result<(), PushError> {
    let url = format!("{}/metrics/job/{group}", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(transport_error)?;
    let response = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body)
        .send()
        .await
        .map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(200);
    Err(PushError::Refused {
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, exit: Exit) -> RunMetrics<'static> {
        RunMetrics {
            job_id: "DC-01-001",
            file_stem: "dc_01_001".into(),
            partition: None,
            status,
            exit,
            counts: CountsSnapshot {
                read: 10,
                written: 7,
                skipped: 2,
                failed: 1,
            },
            duration: Duration::from_millis(1500),
            finished_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn render_writes_every_figure_with_the_job_label() {
        let text = render(
            &run(RunStatus::CompletedWithErrors, Exit::CompletedWithErrors),
            Some(1_690_000_000.5),
        );
        for line in [
            "aidt_batch_last_run_duration_seconds{job_id=\"DC-01-001\"} 1.5",
            "aidt_batch_last_run_timestamp_seconds{job_id=\"DC-01-001\"} 1700000000.0",
            "aidt_batch_last_run_items_read{job_id=\"DC-01-001\"} 10",
            "aidt_batch_last_run_items_written{job_id=\"DC-01-001\"} 7",
            "aidt_batch_last_run_items_skipped{job_id=\"DC-01-001\"} 2",
            "aidt_batch_last_run_items_failed{job_id=\"DC-01-001\"} 1",
            "aidt_batch_last_run_exit_code{job_id=\"DC-01-001\"} 4",
            "aidt_batch_last_run_status{job_id=\"DC-01-001\",status=\"COMPLETED_WITH_ERRORS\"} 1",
            "aidt_batch_last_run_status{job_id=\"DC-01-001\",status=\"COMPLETED\"} 0",
            "aidt_batch_last_success_timestamp_seconds{job_id=\"DC-01-001\"} 1690000000.5",
            "# TYPE aidt_batch_last_run_exit_code gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
    }

    #[test]
    fn an_unknown_last_success_is_left_out() {
        let text = render(&run(RunStatus::Failed, Exit::Failure), None);
        assert!(!text.contains(LAST_SUCCESS), "{text}");
    }

    #[test]
    fn the_last_success_is_read_back_from_a_textfile() {
        let dir = tempfile::tempdir().unwrap();
        let body = render(
            &run(RunStatus::Completed, Exit::Success),
            Some(1_690_000_123.25),
        );
        let path = write_textfile(dir.path(), "dc_01_001", &body).unwrap();
        assert_eq!(path, dir.path().join("aidt_batch_dc_01_001.prom"));
        assert_eq!(last_success_from_textfile(&path), Some(1_690_000_123.25));
        assert_eq!(
            last_success_from_textfile(&dir.path().join("none.prom")),
            None
        );
        // Only the final file is left: the temporary one was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["aidt_batch_dc_01_001.prom"]);
    }
}
