//! Execution history: one `batch_job_run` row per run, written at start and
//! finished with status, counts, exit code and error.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgExecutor, PgPool};

use super::job::CountsSnapshot;

/// The status of a run, as stored (`batch_job_run.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunStatus {
    Started,
    Completed,
    CompletedWithErrors,
    Failed,
    Stopped,
    Skipped,
}

impl RunStatus {
    /// Every status, in the order a run can reach them.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Started,
        RunStatus::Completed,
        RunStatus::CompletedWithErrors,
        RunStatus::Failed,
        RunStatus::Stopped,
        RunStatus::Skipped,
    ];

    /// Parses a status as stored (`COMPLETED_WITH_ERRORS`), in any case and
    /// with `-` for `_` (`completed-with-errors`).
    pub fn parse(text: &str) -> Option<RunStatus> {
        let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
        Self::ALL.into_iter().find(|s| s.as_str() == wanted)
    }

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

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Read from the `status` column (text): a value outside the column's
/// `CHECK` is an error naming it.
impl sqlx::Type<sqlx::Postgres> for RunStatus {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for RunStatus {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        RunStatus::parse(text)
            .filter(|s| s.as_str() == text)
            .ok_or_else(|| format!("unknown run status {text:?} in batch_job_run.status").into())
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

/// What [`finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The run was still `STARTED`: it now has its outcome.
    Yes,
    /// Something else ended the run first (a later start that found its
    /// lock free marked it `FAILED`): its row is left as it is.
    AlreadyEnded {
        status: String,
        error: Option<String>,
    },
}

/// Records how run `run_id` ended, if it is still `STARTED`. A run someone
/// else already ended keeps that outcome: a run whose lock was lost and
/// that a later start marked `FAILED` never turns `COMPLETED` afterwards.
pub async fn finish(pg: &PgPool, run_id: i64, finish: &Finish<'_>) -> sqlx::Result<Recorded> {
    let updated = sqlx::query(
        "UPDATE batch_job_run
            SET status = $2, ended_at = now(), read_cnt = $3, write_cnt = $4, skip_cnt = $5,
                fail_cnt = $6, exit_code = $7, error_msg = $8, details = $9
          WHERE run_id = $1 AND status = 'STARTED'",
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
    .await?
    .rows_affected();
    if updated == 1 {
        return Ok(Recorded::Yes);
    }
    let (status, error) =
        sqlx::query_as("SELECT status, error_msg FROM batch_job_run WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(pg)
            .await?
            .unwrap_or_else(|| ("(row deleted)".to_string(), None));
    Ok(Recorded::AlreadyEnded { status, error })
}

/// A run still marked `STARTED`.
#[derive(Debug, sqlx::FromRow)]
pub struct OpenRun {
    pub run_id: i64,
    pub job_id: String,
    pub business_date: NaiveDate,
    pub host: String,
    pub pid: i32,
    /// `I/N` for a partition's run (`params.partition`).
    pub partition: Option<String>,
}

impl OpenRun {
    /// The partition the run works on, if any.
    pub fn partition(&self) -> Option<super::partition::Partition> {
        self.partition
            .as_deref()
            .and_then(super::partition::Partition::parse)
    }
}

/// The runs of any of `job_ids` still marked `STARTED`, oldest first.
pub async fn open_runs(pg: &PgPool, job_ids: &[&str]) -> sqlx::Result<Vec<OpenRun>> {
    sqlx::query_as(
        "SELECT run_id, job_id, business_date, host, pid, params->>'partition' AS partition
           FROM batch_job_run WHERE job_id = ANY($1) AND status = 'STARTED' ORDER BY run_id",
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
    pub status: RunStatus,
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
    /// `I/N` for a partition's run (`params.partition`).
    pub partition: Option<String>,
}

const RUN_COLUMNS: &str =
    "run_id, job_id, business_date, dry_run, status, started_at, ended_at, read_cnt, \
                           write_cnt, skip_cnt, fail_cnt, exit_code, error_msg, details, host, pid, \
                           params->>'partition' AS partition";

/// The newest runs, of one job or of all, newest first.
pub async fn recent_runs(
    pg: &PgPool,
    job_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<RunRow>> {
    let filter = RunFilter {
        job_id,
        ..RunFilter::default()
    };
    find_runs(pg, &filter, limit).await
}

/// Which runs `history` shows; every condition given must hold.
#[derive(Debug, Default, Clone)]
pub struct RunFilter<'a> {
    pub job_id: Option<&'a str>,
    /// Any of these statuses; empty: any status.
    pub statuses: Vec<RunStatus>,
    /// Started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    pub business_date: Option<NaiveDate>,
}

/// The newest `limit` runs that pass `filter`, newest first.
pub async fn find_runs(
    pg: &PgPool,
    filter: &RunFilter<'_>,
    limit: i64,
) -> sqlx::Result<Vec<RunRow>> {
    let statuses: Option<Vec<&str>> =
        (!filter.statuses.is_empty()).then(|| filter.statuses.iter().map(|s| s.as_str()).collect());
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM batch_job_run
          WHERE ($1::text IS NULL OR job_id = $1)
            AND ($2::text[] IS NULL OR status = ANY($2))
            AND ($3::timestamptz IS NULL OR started_at >= $3)
            AND ($4::date IS NULL OR business_date = $4)
          ORDER BY run_id DESC LIMIT $5"
    ))
    .bind(filter.job_id)
    .bind(statuses)
    .bind(filter.since)
    .bind(filter.business_date)
    .bind(limit)
    .fetch_all(pg)
    .await
}

/// The runs of the night report: those of business date `date` and those
/// started in `[from, to)`, oldest first.
pub async fn night_runs(
    pg: &PgPool,
    date: NaiveDate,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM batch_job_run
          WHERE business_date = $1 OR (started_at >= $2 AND started_at < $3)
          ORDER BY started_at, run_id"
    ))
    .bind(date)
    .bind(from)
    .bind(to)
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

/// Columns that point at a run without a foreign key, as `(table, column)`:
/// a run they name is kept by [`purge`] like one a foreign key names.
/// `batch_keris_request` is DC-01-001's journal of requests in doubt (state
/// a rerun needs, never history); `batch_view_watermark` names the refresh
/// LMS-01-008's next incremental run starts from.
const UNCONSTRAINED_RUN_REFERENCES: &[(&str, &str)] = &[
    ("batch_keris_request", "run_id"),
    ("batch_view_watermark", "run_id"),
];

/// Rows [`purge`] deletes per statement: short transactions, so a purge of
/// years of history never holds locks for long.
const PURGE_BATCH: i64 = 5_000;

/// What [`purge`] deleted (or, dry, would delete) and what it kept among
/// the runs started before the cut-off.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub deleted: u64,
    /// Still `STARTED`: running, or a stale run the next start marks FAILED.
    pub kept_started: u64,
    /// Named by another batch table (privacy audit, completed students,
    /// checkpoints, watermarks, the KERIS request journal, ...).
    pub kept_referenced: u64,
    /// The latest run of its job, or its latest `COMPLETED` one, which
    /// `list` and the chain's "already COMPLETED" look at.
    pub kept_latest: u64,
    /// The tables whose references keep runs, as `table.column`.
    pub referencing: Vec<String>,
}

/// Deletes the `batch_job_run` rows of runs started before `before`, except
/// the runs still `STARTED`, the runs another table still names (every
/// foreign key to `batch_job_run` in the database, found in the catalog, and
/// [`UNCONSTRAINED_RUN_REFERENCES`]), and each job's latest run and latest
/// `COMPLETED` run. Deletes nothing when `dry_run`. The privacy audit and the
/// other tables are never touched: they keep their runs instead.
pub async fn purge(pg: &PgPool, before: DateTime<Utc>, dry_run: bool) -> sqlx::Result<PurgeReport> {
    let mut references: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, quote_ident(a.attname)
           FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
          WHERE c.contype = 'f' AND c.confrelid = 'batch_job_run'::regclass
          ORDER BY 1, 2",
    )
    .fetch_all(pg)
    .await?;
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = current_schema() AND table_name = ANY($1)",
    )
    .bind(
        UNCONSTRAINED_RUN_REFERENCES
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>(),
    )
    .fetch_all(pg)
    .await?;
    for (table, column) in UNCONSTRAINED_RUN_REFERENCES {
        if known.iter().any(|k| k == table) {
            references.push((table.to_string(), column.to_string()));
        }
    }
    let referenced = references
        .iter()
        .map(|(table, column)| {
            // Both come quoted from the catalog, or are our own plain names.
            format!("EXISTS (SELECT 1 FROM {table} x WHERE x.{column} = r.run_id)")
        })
        .collect::<Vec<_>>();
    let referenced = if referenced.is_empty() {
        "false".to_string()
    } else {
        referenced.join(" OR ")
    };
    // A run started later (the run id breaks ties) makes a run "not the
    // latest"; a later COMPLETED one makes a COMPLETED run "not the latest
    // COMPLETED".
    let superseded = "EXISTS (SELECT 1 FROM batch_job_run n WHERE n.job_id = r.job_id
                             AND (n.started_at, n.run_id) > (r.started_at, r.run_id))
                      AND (r.status <> 'COMPLETED' OR EXISTS (SELECT 1 FROM batch_job_run n
                           WHERE n.job_id = r.job_id AND n.status = 'COMPLETED'
                             AND (n.started_at, n.run_id) > (r.started_at, r.run_id)))";

    let (started, kept_referenced, kept_latest, deletable): (i64, i64, i64, i64) =
        sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE r.status = 'STARTED'),
                    count(*) FILTER (WHERE r.status <> 'STARTED' AND ({referenced})),
                    count(*) FILTER (WHERE r.status <> 'STARTED' AND NOT ({referenced}) AND NOT ({superseded})),
                    count(*) FILTER (WHERE r.status <> 'STARTED' AND NOT ({referenced}) AND ({superseded}))
               FROM batch_job_run r WHERE r.started_at < $1"
        ))
        .bind(before)
        .fetch_one(pg)
        .await?;
    let mut report = PurgeReport {
        deleted: deletable as u64,
        kept_started: started as u64,
        kept_referenced: kept_referenced as u64,
        kept_latest: kept_latest as u64,
        referencing: references.iter().map(|(t, c)| format!("{t}.{c}")).collect(),
    };
    if dry_run {
        return Ok(report);
    }
    report.deleted = 0;
    loop {
        let deleted = sqlx::query(&format!(
            "DELETE FROM batch_job_run WHERE run_id IN (
                 SELECT r.run_id FROM batch_job_run r
                  WHERE r.started_at < $1 AND r.status <> 'STARTED'
                    AND NOT ({referenced}) AND ({superseded})
                  ORDER BY r.run_id LIMIT $2)"
        ))
        .bind(before)
        .bind(PURGE_BATCH)
        .execute(pg)
        .await?
        .rows_affected();
        report.deleted += deleted;
        if deleted == 0 {
            break;
        }
    }
    Ok(report)
}
