//! Sessions clipped to a business day, as LMS-01-002, LMS-01-006 and
//! BO-01-003 count them: the business day D as a half-open instant range,
//! the settings of how an open session counts, the SQL of every session's
//! part in D ([`clipped_sessions_ctes`]) and the indexes on the contract
//! tables those statements read by (`aidt-batch migrate` creates them).
//!
//! An open session, once for every job:
//! - a session counts for its part inside D `[00:00, 24:00)` KST, so one
//!   crossing midnight counts on both days;
//! - an open session (`ended_at` NULL: most web sessions end without a
//!   logout) ends at the user's last recorded activity in it — the latest
//!   result solved (`tb_lms_lrn_result.solved_at`) or page accessed
//!   (`tb_lms_access_log.accessed_at`) after its start and before the
//!   user's next session, at most `open_session_max_hours` after its
//!   start — and lasts at least `open_session_idle_minutes` (the user
//!   was there when it opened, and a page opened at that instant says no
//!   more).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

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
