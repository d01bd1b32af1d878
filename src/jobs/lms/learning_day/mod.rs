//! What LMS-01-002 and LMS-01-006 share: the learning time of D's sessions
//! (clipped to D and open ones ended as [`crate::jobs::shared::sessions`]
//! says, overlaps merged) as one SQL fragment, and the run itself (a
//! [`DayTable`]: D's rows replaced in one transaction, or counted when dry).
//!
//! Overlapping sessions of one key (a student, or a student in a lecture)
//! are merged before summing, so two tabs open at once count once.

pub mod competency_indicators;
pub mod learning_stats;

use anyhow::Context as _;
use sqlx::PgPool;

use crate::jobs::shared::sessions::{
    clipped_sessions_ctes, Day, DayBinds, LearningDaySettings, LEARNING_SESSIONS,
};
use crate::runtime::JobContext;

/// The binds of a [`DayTable`]'s statement: `$2`/`$3` D's range, `$4`
/// `open_session_max_hours`, `$5` `open_session_idle_minutes`.
const DAY_TABLE_BINDS: DayBinds = DayBinds {
    day_start: "$2",
    day_end: "$3",
    max_hours: "$4",
    idle_minutes: "$5",
};

/// CTEs (without the leading `WITH`) ending in `session_time(<keys>,
/// lrn_time_sec)`: the merged learning time on D per `keys` (a
/// comma-separated list of `tb_lms_lrn_session` columns, `user_id` first,
/// e.g. `user_id` or `user_id, lecture_code`), one row per key with a
/// session overlapping D (`lrn_time_sec` may be 0 for less than a second).
/// Binds as [`DayTable`]; the sessions are [`clipped_sessions_ctes`].
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
        "{clipped},
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
         )",
        clipped = clipped_sessions_ctes(LEARNING_SESSIONS, keys, DAY_TABLE_BINDS),
    )
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
/// `open_session_max_hours` and `$5` `open_session_idle_minutes`
/// ([`session_time_ctes`]).
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
        .bind(settings.open_session_max_hours as i32)
        .bind(settings.open_session_idle_minutes as i32)
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
        .bind(settings.open_session_max_hours as i32)
        .bind(settings.open_session_idle_minutes as i32)
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
