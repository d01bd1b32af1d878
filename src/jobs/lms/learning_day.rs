//! What LMS-01-002 and LMS-01-006 share: the business day D as a half-open
//! instant range, the learning time of D's sessions (clipped to D, open
//! sessions ended at the student's last activity, overlaps merged) as one
//! SQL fragment, the run itself (a [`DayTable`]: D's rows replaced in one
//! transaction, or counted when dry) and the indexes on the columns their
//! statements read by. BO-01-003 counts its login sessions with the same
//! rule for open ones ([`clipped_sessions_ctes`]).
//!
//! Learning time, once for both jobs:
//! - a session counts for its part inside D `[00:00, 24:00)` KST, so one
//!   crossing midnight counts on both days;
//! - an open session (`ended_at` NULL: most web sessions end without a
//!   logout) ends at the student's last recorded activity in it — the latest
//!   result solved (`tb_lms_lrn_result.solved_at`) or page accessed
//!   (`tb_lms_access_log.accessed_at`) after its start and before the
//!   student's next session, at most `open_session_max_hours` after its
//!   start — and lasts at least `open_session_idle_minutes` (the student
//!   was there when it opened; a login writes an access-log row at its
//!   start);
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

/// The settings LMS-01-002, LMS-01-006 and BO-01-003 have in their own
/// sections (`[jobs.lms_01_002]`, `[jobs.lms_01_006]`, `[jobs.bo_01_003]`):
/// how a session without an end is counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearningDaySettings {
    /// An open session lasts at least this long after its start, also when
    /// no activity of the user follows it.
    pub open_session_idle_minutes: u32,
    /// An open session's activity is looked for up to this long after its
    /// start: the longest it can count.
    pub open_session_max_hours: u32,
}

impl Default for LearningDaySettings {
    fn default() -> Self {
        Self {
            open_session_idle_minutes: 10,
            open_session_max_hours: 12,
        }
    }
}

/// The key open sessions were counted by when they counted that long flat.
const REPLACED_KEY: &str = "max_open_session_hours";

pub fn validate_settings(section: config::Value) -> Result<(), String> {
    let replaced = section
        .clone()
        .into_table()
        .is_ok_and(|t| t.contains_key(REPLACED_KEY));
    if replaced {
        return Err(format!(
            "{REPLACED_KEY} is replaced by open_session_max_hours (how long after its start an open session's activity is looked for: the longest it counts) and open_session_idle_minutes (the least it counts)"
        ));
    }
    let settings: LearningDaySettings = section.try_deserialize().map_err(|e| e.to_string())?;
    if settings.open_session_max_hours == 0 {
        return Err("open_session_max_hours: must be at least 1".into());
    }
    if settings.open_session_idle_minutes > settings.open_session_max_hours * 60 {
        return Err(format!(
            "open_session_idle_minutes: at most open_session_max_hours ({} h)",
            settings.open_session_max_hours
        ));
    }
    Ok(())
}

/// Where a kind of session is stored: a table with `user_id`, a start and
/// an end column (NULL while open).
#[derive(Debug, Clone, Copy)]
pub struct SessionTable {
    pub table: &'static str,
    pub start: &'static str,
    pub end: &'static str,
}

/// LMS learning sessions (LMS-01-002, LMS-01-006).
pub const LEARNING_SESSIONS: SessionTable = SessionTable {
    table: "tb_lms_lrn_session",
    start: "started_at",
    end: "ended_at",
};

/// LMS logins (BO-01-003).
pub const LOGIN_SESSIONS: SessionTable = SessionTable {
    table: "tb_lms_login_hist",
    start: "login_at",
    end: "logout_at",
};

/// The SQL placeholders of a statement's binds [`clipped_sessions_ctes`]
/// reads: D's start and end (timestamptz), `open_session_max_hours` and
/// `open_session_idle_minutes` (int).
#[derive(Debug, Clone, Copy)]
pub struct DayBinds {
    pub day_start: &'static str,
    pub day_end: &'static str,
    pub max_hours: &'static str,
    pub idle_minutes: &'static str,
}

/// CTEs (without the leading `WITH`) ending in `clipped(<keys>, s, e)`:
/// every session of `src` overlapping D, as its part in D (`e <= s` for a
/// session of no length, or one that ends before it starts). `keys` are
/// columns of `src`, `user_id` first.
///
/// The sessions come from index ranges (see [`CONTRACT_INDEXES`]): those
/// starting from `max_hours` before D to `max_hours` after it (the open
/// ones that can reach D, and each user's next session after them), and,
/// by the end column, closed ones that started earlier and end inside D or
/// later. An open session ends at the user's last activity after its start
/// and before the earlier of their next session and `max_hours`, or
/// `idle_minutes` after its start if that is later. The next session comes
/// from a hash join of those sessions with themselves (no sort); the
/// activity from two index probes per open session that can reach D
/// (results and access log, by user and time). Both CTEs that feed more
/// than one step are materialized, so each probe runs once.
pub fn clipped_sessions_ctes(src: SessionTable, keys: &str, b: DayBinds) -> String {
    let SessionTable { table, start, end } = src;
    let DayBinds {
        day_start: ds,
        day_end: de,
        max_hours,
        idle_minutes,
    } = b;
    let hours = format!("make_interval(hours => {max_hours})");
    let reach = format!("least(o.st + {hours}, x.next_st)");
    format!(
        "sess_near AS MATERIALIZED (
           SELECT {keys}, {start} AS st, {end} AS en
             FROM {table}
            WHERE {start} > {ds} - {hours} AND {start} < {de} + {hours}
         ),
         sess_next AS (
           SELECT o.user_id, o.st, min(n.st) AS next_st
             FROM sess_near o JOIN sess_near n ON n.user_id = o.user_id AND n.st > o.st
            WHERE o.en IS NULL AND o.st < {de}
            GROUP BY o.user_id, o.st
         ),
         sess_open AS MATERIALIZED (
           SELECT {open_keys}, o.st,
                  least(greatest(o.st + make_interval(mins => {idle_minutes}), act.last_at),
                        o.st + {hours}, x.next_st) AS en
             FROM sess_near o
             LEFT JOIN sess_next x ON x.user_id = o.user_id AND x.st = o.st
             CROSS JOIN LATERAL (
               SELECT greatest(
                 (SELECT max(r.solved_at) FROM tb_lms_lrn_result r
                   WHERE r.user_id = o.user_id AND r.solved_at >= o.st AND r.solved_at < {reach}),
                 (SELECT max(a.accessed_at) FROM tb_lms_access_log a
                   WHERE a.user_id = o.user_id AND a.accessed_at >= o.st AND a.accessed_at < {reach})
               ) AS last_at
             ) act
            WHERE o.en IS NULL AND o.st < {de} AND (x.next_st IS NULL OR x.next_st > {ds})
         ),
         sess_spans AS (
           SELECT {keys}, st, en FROM sess_near
            WHERE en IS NOT NULL AND st < {de} AND (st >= {ds} OR en > {ds})
           UNION ALL
           SELECT {keys}, {start}, {end} FROM {table}
            WHERE {end} > {ds} AND {start} <= {ds} - {hours}
           UNION ALL
           SELECT {keys}, st, en FROM sess_open WHERE st >= {ds} OR en > {ds}
         ),
         clipped AS (
           SELECT {keys}, greatest(st, {ds}) AS s, least(en, {de}) AS e FROM sess_spans
         )",
        open_keys = keys
            .split(',')
            .map(|k| format!("o.{}", k.trim()))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

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

/// Indexes on contract tables that the jobs' session statements read by, which
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
    // An open session's last activity: one probe per session, by user and
    // time (LMS-01-002/006, BO-01-003).
    (
        "tb_lms_lrn_result",
        "tb_lms_lrn_result_user_solved_idx",
        "user_id, solved_at",
    ),
    (
        "tb_lms_access_log",
        "tb_lms_access_log_user_accessed_idx",
        "user_id, accessed_at",
    ),
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
