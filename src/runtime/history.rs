//! Execution history: one `batch_job_run` row per run, written at start and
//! finished with status, counts, exit code and error.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgExecutor, PgPool};

use super::job::CountsSnapshot;

/// The status of a run, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Started,
    Completed,
    CompletedWithErrors,
    Failed,
    Stopped,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Started => "STARTED",
            RunStatus::Completed => "COMPLETED",
            RunStatus::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
            RunStatus::Failed => "FAILED",
            RunStatus::Stopped => "STOPPED",
            RunStatus::Skipped => "SKIPPED",
        }
    }
}

/// Who is running: recorded on every row so a stale run can be traced.
#[derive(Debug, Clone)]
pub struct Runner {
    pub host: String,
    pub pid: i32,
    pub version: &'static str,
}

impl Runner {
    pub fn current() -> Self {
        Self {
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id() as i32,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// What a new row records.
pub struct NewRun<'a> {
    pub job_id: &'a str,
    pub business_date: NaiveDate,
    pub params: serde_json::Value,
    pub dry_run: bool,
    pub runner: &'a Runner,
}

/// Inserts a `STARTED` row and returns its run id.
pub async fn insert_started(pg: &PgPool, run: &NewRun<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO batch_job_run (job_id, business_date, params, dry_run, status, host, pid, version)
         VALUES ($1, $2, $3, $4, 'STARTED', $5, $6, $7) RETURNING run_id",
    )
    .bind(run.job_id)
    .bind(run.business_date)
    .bind(&run.params)
    .bind(run.dry_run)
    .bind(&run.runner.host)
    .bind(run.runner.pid)
    .bind(run.runner.version)
    .fetch_one(pg)
    .await
}

/// Records a run that did not start because another one holds the lock.
pub async fn insert_skipped(
    pg: &PgPool,
    run: &NewRun<'_>,
    reason: &str,
    exit_code: i32,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO batch_job_run (job_id, business_date, params, dry_run, status, ended_at,
                                    exit_code, error_msg, host, pid, version)
         VALUES ($1, $2, $3, $4, 'SKIPPED', now(), $5, $6, $7, $8, $9) RETURNING run_id",
    )
    .bind(run.job_id)
    .bind(run.business_date)
    .bind(&run.params)
    .bind(run.dry_run)
    .bind(exit_code)
    .bind(reason)
    .bind(&run.runner.host)
    .bind(run.runner.pid)
    .bind(run.runner.version)
    .fetch_one(pg)
    .await
}

/// Stores the counts so far of a run that is still going.
pub async fn update_counts<'e>(
    pg: impl PgExecutor<'e>,
    run_id: i64,
    counts: CountsSnapshot,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE batch_job_run SET read_cnt = $2, write_cnt = $3, skip_cnt = $4, fail_cnt = $5 WHERE run_id = $1")
        .bind(run_id)
        .bind(counts.read as i64)
        .bind(counts.written as i64)
        .bind(counts.skipped as i64)
        .bind(counts.failed as i64)
        .execute(pg)
        .await?;
    Ok(())
}

/// How a run ended.
pub struct Finish<'a> {
    pub status: RunStatus,
    pub counts: CountsSnapshot,
    pub exit_code: i32,
    pub error: Option<&'a str>,
    pub details: serde_json::Value,
}

pub async fn finish(pg: &PgPool, run_id: i64, finish: &Finish<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE batch_job_run
            SET status = $2, ended_at = now(), read_cnt = $3, write_cnt = $4, skip_cnt = $5,
                fail_cnt = $6, exit_code = $7, error_msg = $8, details = $9
          WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(finish.status.as_str())
    .bind(finish.counts.read as i64)
    .bind(finish.counts.written as i64)
    .bind(finish.counts.skipped as i64)
    .bind(finish.counts.failed as i64)
    .bind(finish.exit_code)
    .bind(finish.error)
    .bind(&finish.details)
    .execute(pg)
    .await?;
    Ok(())
}

/// A run still marked `STARTED`.
#[derive(Debug, sqlx::FromRow)]
pub struct OpenRun {
    pub run_id: i64,
    pub job_id: String,
    pub business_date: NaiveDate,
    pub host: String,
    pub pid: i32,
}

/// The runs of any of `job_ids` still marked `STARTED`, oldest first.
pub async fn open_runs(pg: &PgPool, job_ids: &[&str]) -> sqlx::Result<Vec<OpenRun>> {
    sqlx::query_as(
        "SELECT run_id, job_id, business_date, host, pid FROM batch_job_run
          WHERE job_id = ANY($1) AND status = 'STARTED' ORDER BY run_id",
    )
    .bind(job_ids)
    .fetch_all(pg)
    .await
}

/// Marks a run whose process died as `FAILED`, with the reason.
pub async fn mark_abandoned(pg: &PgPool, run_id: i64, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE batch_job_run SET status = 'FAILED', ended_at = now(), error_msg = $2
          WHERE run_id = $1 AND status = 'STARTED'",
    )
    .bind(run_id)
    .bind(reason)
    .execute(pg)
    .await?;
    Ok(())
}

/// One history row as `history` and `list` show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: i64,
    pub job_id: String,
    pub business_date: NaiveDate,
    pub dry_run: bool,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub read_cnt: i64,
    pub write_cnt: i64,
    pub skip_cnt: i64,
    pub fail_cnt: i64,
    pub exit_code: Option<i32>,
    pub error_msg: Option<String>,
    pub details: serde_json::Value,
    pub host: String,
    pub pid: i32,
}

const RUN_COLUMNS: &str =
    "run_id, job_id, business_date, dry_run, status, started_at, ended_at, read_cnt, \
                           write_cnt, skip_cnt, fail_cnt, exit_code, error_msg, details, host, pid";

/// The newest runs, of one job or of all, newest first.
pub async fn recent_runs(
    pg: &PgPool,
    job_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM batch_job_run
          WHERE ($1::text IS NULL OR job_id = $1) ORDER BY run_id DESC LIMIT $2"
    ))
    .bind(job_id)
    .bind(limit)
    .fetch_all(pg)
    .await
}

/// The last run of every job that has one.
pub async fn last_runs(pg: &PgPool) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT DISTINCT ON (job_id) {RUN_COLUMNS} FROM batch_job_run ORDER BY job_id, run_id DESC"
    ))
    .fetch_all(pg)
    .await
}

pub async fn get_run(pg: &PgPool, run_id: i64) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM batch_job_run WHERE run_id = $1"
    ))
    .bind(run_id)
    .fetch_optional(pg)
    .await
}
