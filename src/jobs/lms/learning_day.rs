//! What LMS-01-002 and LMS-01-006 share: the business day D as a half-open
//! instant range, the learning time of D's sessions (clipped to D, open
//! sessions capped, overlaps merged) as one SQL fragment, the run itself (a
//! [`DayTable`]: D's rows replaced in one transaction, or counted when dry)
//! and the indexes on the time columns their statements read by.
//!
//! Learning time, once for both jobs:
//! - a session counts for its part inside D `[00:00, 24:00)` KST, so one
//!   crossing midnight counts on both days;
//! - an open session (`ended_at` NULL) counts until the end of D, at most
//!   `max_open_session_hours` after its start (a tab left open for a week is
//!   not a week of learning);
//! - overlapping sessions of one key (a student, or a student in a lecture)
//!   are merged before summing, so two tabs open at once count once.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::runtime::JobContext;
use crate::time;

/// The business date and its instant range `[start, end)` in Asia/Seoul.
#[derive(Debug, Clone, Copy)]
pub struct Day {
    pub date: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Day {
    pub fn new(date: NaiveDate) -> Self {
        Self {
            date,
            start: time::start_of_day_seoul(date),
            end: time::start_of_day_seoul(date.succ_opt().expect("date in range")),
        }
    }
}

/// The setting both jobs have in their own sections
/// (`[jobs.lms_01_002]`, `[jobs.lms_01_006]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearningDaySettings {
    /// An open session counts at most this long after its start.
    pub max_open_session_hours: u32,
}

impl Default for LearningDaySettings {
    fn default() -> Self {
        Self {
            max_open_session_hours: 12,
        }
    }
}

pub fn validate_settings(section: config::Value) -> Result<(), String> {
    let settings: LearningDaySettings = section.try_deserialize().map_err(|e| e.to_string())?;
    if settings.max_open_session_hours == 0 {
        return Err("max_open_session_hours: must be at least 1".into());
    }
    Ok(())
}

/// CTEs (without the leading `WITH`) ending in `session_time(<keys>,
/// lrn_time_sec)`: the merged learning time on D per `keys` (a
/// comma-separated list of `tb_lms_lrn_session` columns, e.g. `user_id` or
/// `user_id, lecture_code`), one row per key with a session overlapping D
/// (`lrn_time_sec` may be 0 for less than a second). Binds: `$2` start of D,
/// `$3` end of D, `$4` `max_open_session_hours` (int).
///
/// The `WHERE` is three ranges, each served by an index (see
/// [`CONTRACT_INDEXES`]): sessions started on D; closed sessions started
/// before D that end after its start; open sessions started less than the cap
/// before D. A session can only overlap D in one of these ways.
///
/// Merging is a sweep over each key's sessions in order of start: `reach` is
/// the latest end among the earlier ones, and a session adds only its part
/// after both its start and `reach` (nothing when `reach` covers it). The sum
/// is the length of the union, the same as merging overlapping sessions into
/// islands and summing those, in one window pass instead of two and a
/// grouping (`extract` gives exact numerics, so the sums agree to the
/// microsecond).
pub fn session_time_ctes(keys: &str) -> String {
    format!(
        "clipped AS (
           SELECT {keys},
                  greatest(started_at, $2) AS s,
                  least(coalesce(ended_at, started_at + make_interval(hours => $4)), $3) AS e
             FROM tb_lms_lrn_session
            WHERE (started_at >= $2 AND started_at < $3)
               OR (started_at < $2 AND ended_at > $2)
               OR (started_at < $2 AND ended_at IS NULL
                   AND started_at > $2 - make_interval(hours => $4))
         ),
         reached AS (
           SELECT {keys}, s, e,
                  max(e) OVER (PARTITION BY {keys} ORDER BY s, e
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
             FROM clipped
            WHERE e > s
         ),
         session_time AS (
           SELECT {keys},
                  floor(sum(extract(epoch FROM e - greatest(s, reach)))
                          FILTER (WHERE reach IS NULL OR reach < e))::int AS lrn_time_sec
             FROM reached
            GROUP BY {keys}
         )"
    )
}

/// Indexes on contract tables that the two jobs' statements read by, which
/// `aidt-batch migrate` creates when missing (`CREATE INDEX CONCURRENTLY`,
/// so a live LMS table is never locked for writes): `(table, index, columns)`.
/// `tb_lms_lrn_result (solved_at)` is in the contract already.
pub const CONTRACT_INDEXES: &[(&str, &str, &str)] = &[
    (
        "tb_lms_lrn_session",
        "tb_lms_lrn_session_started_idx",
        "started_at",
    ),
    (
        "tb_lms_lrn_session",
        "tb_lms_lrn_session_ended_idx",
        "ended_at",
    ),
    ("tb_lms_assignment", "tb_lms_assignment_due_idx", "due_dt"),
];

/// Creates the [`CONTRACT_INDEXES`] that are missing, one statement at a
/// time outside any transaction (CONCURRENTLY refuses to run in one, and
/// PostgreSQL runs a multi-statement query string as one). An index left
/// INVALID by an interrupted build is dropped and built again. A table that
/// does not exist (a database of the batch's tables only) is skipped.
/// Returns what it did, one line per index.
pub async fn ensure_contract_indexes(pg: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let mut done = Vec::new();
    for (table, index, columns) in CONTRACT_INDEXES {
        let table_exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pg)
            .await
            .with_context(|| format!("Failed to look for table {table}"))?;
        if !table_exists {
            done.push(format!("{index}: skipped, no table {table}"));
            continue;
        }
        let valid: Option<bool> = sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
        )
        .bind(index)
        .fetch_optional(pg)
        .await
        .with_context(|| format!("Failed to look for index {index}"))?;
        match valid {
            Some(true) => {
                done.push(format!("{index}: present"));
                continue;
            }
            Some(false) => {
                // Names are the constants above, never input.
                sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                    .execute(pg)
                    .await
                    .with_context(|| format!("Failed to drop the invalid index {index}"))?;
            }
            None => {}
        }
        sqlx::raw_sql(&format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} ({columns})"
        ))
        .execute(pg)
        .await
        .with_context(|| format!("Failed to create index {index} on {table} ({columns})"))?;
        done.push(match valid {
            Some(false) => format!("{index}: rebuilt (was invalid)"),
            _ => format!("{index}: created"),
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_is_seoul_midnight_to_midnight() {
        let day = Day::new(NaiveDate::from_ymd_opt(2026, 6, 30).unwrap());
        assert_eq!(day.start.to_rfc3339(), "2026-06-29T15:00:00+00:00");
        assert_eq!(day.end.to_rfc3339(), "2026-06-30T15:00:00+00:00");
    }
}

/// The temporary table [`DayTable::replace_day`] computes D's rows into.
const DAY_ROWS: &str = "pg_temp.lms_day_rows";

/// `jit = off` for the rest of the transaction (`SET LOCAL`): the planner's
/// row estimates for the session CTEs are far off (hundreds of thousands of
/// rows for hundreds, and the reverse), which pushed LMS-01-006 over the JIT
/// inlining and optimization thresholds: 3.7 s of compiling (EXPLAIN ANALYZE
/// over 1,000,000 results, JIT on) for a statement that takes about 3 s
/// without it. A higher `work_mem` (16 or 64 MB instead of 4) was measured
/// too and bought nothing: LMS-01-006's planner then chose a serial sort of
/// D's results over the parallel one.
async fn set_statement_settings(tx: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    sqlx::query("SELECT set_config('jit', 'off', true)")
        .execute(tx)
        .await
        .context("Failed to turn JIT off for the transaction")?;
    Ok(())
}

/// A daily table one statement fills for D: the job's table, its columns and
/// the `SELECT` of D's rows. Binds `$1` D, `$2`/`$3` its instant range, `$4`
/// the cap on open sessions in hours ([`session_time_ctes`]).
pub struct DayTable {
    pub job_id: &'static str,
    pub table: &'static str,
    /// The columns `rows_sql` selects, in its order.
    pub columns: &'static str,
    /// D's rows.
    pub rows_sql: fn() -> String,
    /// An aggregate over those rows: how many students were active on D.
    pub active_students: &'static str,
    /// What the rows are, for error messages ("competency indicators").
    pub what: &'static str,
}

/// What a run wrote (or, dry, would write).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DayRows {
    pub rows: u64,
    pub active_students: u64,
    /// D's rows before the run (deleted by it, or to be).
    pub replaced: u64,
}

impl DayTable {
    /// The job's run: D's rows replaced, or only computed and counted when
    /// dry; the figures go in the run's counts and details.
    pub async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: LearningDaySettings = ctx.own_settings()?;
        let day = Day::new(ctx.business_date);
        let rows = if ctx.dry_run {
            self.count_rows(ctx.pg(), day, &settings).await?
        } else {
            self.replace_day(ctx.pg(), day, &settings).await?
        };
        ctx.counts.add_read(rows.rows);
        if !ctx.dry_run {
            ctx.counts.add_written(rows.rows);
        }
        ctx.set_detail(
            if ctx.dry_run {
                "would_write"
            } else {
                "written"
            },
            rows,
        );
        Ok(())
    }

    /// Replaces D's rows in one transaction: a rerun replaces D exactly (a
    /// student deleted since loses the row) and readers see either the old
    /// day or the new one.
    ///
    /// The rows are computed into a temporary table first and inserted from
    /// it: PostgreSQL plans no parallel workers for an `INSERT … SELECT`, but
    /// does for `CREATE TABLE … AS`, so D's results are scanned and
    /// aggregated in parallel like a plain `SELECT` (the table is dropped at
    /// commit, and a failed run rolls it back with the rest).
    #[tracing::instrument(skip_all, fields(table = self.table, base_dt = %day.date), err)]
    pub async fn replace_day(
        &self,
        pg: &PgPool,
        day: Day,
        settings: &LearningDaySettings,
    ) -> anyhow::Result<DayRows> {
        let mut tx = pg.begin().await?;
        set_statement_settings(&mut tx).await?;
        let replaced = sqlx::query(&format!("DELETE FROM {} WHERE base_dt = $1", self.table))
            .bind(day.date)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: Failed to delete the rows of {}", self.job_id, day.date))?
            .rows_affected();
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE {DAY_ROWS} ON COMMIT DROP AS {}",
            (self.rows_sql)()
        ))
        .bind(day.date)
        .bind(day.start)
        .bind(day.end)
        .bind(settings.max_open_session_hours as i32)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .with_context(|| {
            format!(
                "{}: Failed to compute the {} of {}",
                self.job_id, self.what, day.date
            )
        })?;
        let (rows, active_students): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), {} FROM {DAY_ROWS}",
            self.active_students
        ))
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("{}: Failed to count the rows of {}", self.job_id, day.date))?;
        sqlx::query(&format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {DAY_ROWS}",
            table = self.table,
            columns = self.columns,
        ))
        .persistent(false)
        .execute(&mut *tx)
        .await
        .with_context(|| {
            format!(
                "{}: Failed to write the {} of {}",
                self.job_id, self.what, day.date
            )
        })?;
        tx.commit().await?;
        Ok(DayRows {
            rows: rows as u64,
            active_students: active_students as u64,
            replaced,
        })
    }

    /// `--dry-run`: the rows D would get, and how many it has now.
    pub async fn count_rows(
        &self,
        pg: &PgPool,
        day: Day,
        settings: &LearningDaySettings,
    ) -> anyhow::Result<DayRows> {
        let mut tx = pg.begin().await?;
        set_statement_settings(&mut tx).await?;
        let (rows, active_students, replaced): (i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), {}, (SELECT count(*) FROM {} WHERE base_dt = $1) FROM ({}) x",
            self.active_students,
            self.table,
            (self.rows_sql)()
        ))
        .bind(day.date)
        .bind(day.start)
        .bind(day.end)
        .bind(settings.max_open_session_hours as i32)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| {
            format!(
                "{}: Failed to compute the {} of {}",
                self.job_id, self.what, day.date
            )
        })?;
        tx.rollback().await?;
        Ok(DayRows {
            rows: rows as u64,
            active_students: active_students as u64,
            replaced: replaced as u64,
        })
    }
}
