//! BO-01-003 — LMS connected users per hour. Daily at 02:05, for yesterday.
//!
//! Reads `tb_lms_login_hist` (sessions: `login_at` to `logout_at`),
//! `tb_lms_user` and `tb_lms_school`; writes `tb_bo_lms_conn_stats_daily`
//! for D: for each hour 0–23 of D in Asia/Seoul and each school level, the
//! distinct users with a session overlapping that hour (`[h:00, h+1:00)`).
//!
//! - A session counts for its part inside D, so one crossing midnight counts
//!   on both days; a session of zero length (or with a logout before its
//!   login) counts in the hour of its login.
//! - An open session (`logout_at` NULL: a browser closed without logging
//!   out) ends at the user's last recorded activity in it — the latest
//!   result or access-log row after the login and before the user's next
//!   login, at most `[jobs.bo_01_003] open_session_max_hours` (12) after it
//!   — and lasts at least `open_session_idle_minutes` (10)
//!   ([`crate::jobs::shared::sessions::clipped_sessions_ctes`]).
//! - Users without a school count under
//!   [`super::NO_SCHOOL_LEVEL`], never dropped.
//! - All 24 hours × every level of [`SCHOOL_LEVELS`] are written, zeros
//!   included, so a chart has no gaps and a quiet hour differs from a day
//!   not computed.
//!
//! One set-based statement: the sessions overlapping D come from index
//! ranges (logins from `open_session_max_hours` before D to as long after
//! it by the `login_at` index; sessions that began earlier and end after
//! D's start by the `logout_at` index, which the batch's migration adds),
//! open ones ended by two index probes each, each user's hours are folded
//! into a 24-bit mask, the user's
//! school joined once, and the masks counted per hour and level. The rows of
//! D are deleted and written again in one transaction: a rerun replaces them
//! exactly. `--dry-run` computes inside the transaction, reports and rolls
//! back.

use chrono::{Days, NaiveDate};
use serde::Serialize;
use sqlx::PgConnection;

use super::{finish, level_expr, level_joins, replace_rows, Owned, SCHOOL_LEVELS};
use crate::jobs::shared::sessions::{
    clipped_sessions_ctes, validate_settings, DayBinds, LearningDaySettings, LOGIN_SESSIONS,
};
use crate::runtime::registry::{settings_of, JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;

pub const ID: &str = "BO-01-003";

const TABLE: &str = "tb_bo_lms_conn_stats_daily";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 LMS 접속자 집계 일배치",
    name_en: "LMS connected-user aggregation (daily)",
    about: "Counts, for each hour of the day (KST) and each school level, the distinct LMS users with a session overlapping that hour into tb_bo_lms_conn_stats_daily (24 hours x every level, zeros included); sessions crossing midnight count on both days, open sessions until the user's last activity (results, access log) before their next login, at least [jobs.bo_01_003] open_session_idle_minutes and at most open_session_max_hours after login. A rerun replaces the day's rows.",
    schedule: Schedule::Cron("5 2 * * *"),
    lock: Lock::JobAndDate,
    settings: Some(settings_of::<LearningDaySettings>().checked_by(validate_settings)),
    job: Some(&ConnectedUsers),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

pub struct ConnectedUsers;

/// What one day's computation wrote.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ConnDay {
    pub rows: u64,
    /// Distinct users connected at any time of D.
    pub users: u64,
    /// The hour with the most connected users (all levels), the earliest of
    /// equals, and that count.
    pub peak_hour: i16,
    pub peak_users: i64,
}

#[async_trait::async_trait]
impl Job for ConnectedUsers {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: LearningDaySettings = ctx.own_settings()?;
        let mut tx = ctx.pg().begin().await?;
        let day = compute_day(&mut tx, ctx.business_date, &settings).await?;
        finish(ctx, tx, TABLE, day.rows).await?;
        ctx.counts.add_read(day.users);
        ctx.set_detail("users", day.users);
        ctx.set_detail("peak_hour", day.peak_hour);
        ctx.set_detail("peak_users", day.peak_users);
        Ok(())
    }
}

/// The statement's binds the session CTEs read: `$1` start of D, `$2` end
/// of D, `$3` `open_session_max_hours`, `$6` `open_session_idle_minutes`
/// (`$4` is D, `$5` the levels).
const BINDS: DayBinds = DayBinds {
    day_start: "$1",
    day_end: "$2",
    max_hours: "$3",
    idle_minutes: "$6",
};

/// Replaces `date`'s rows of `tb_bo_lms_conn_stats_daily`, inside the
/// caller's transaction; `sessions` says how open sessions count.
#[tracing::instrument(skip_all, fields(%date), err)]
pub async fn compute_day(
    conn: &mut PgConnection,
    date: NaiveDate,
    sessions: &LearningDaySettings,
) -> anyhow::Result<ConnDay> {
    // Hours are counted from D's start: Seoul has no DST, so hour h is
    // [start + h h, start + (h+1) h). Masks are bigint: bit 23 is the last.
    let sql = format!(
        "WITH {clipped},
         spans AS (
             SELECT user_id,
                    floor(extract(epoch FROM s - $1) / 3600)::int AS h0,
                    ceil(extract(epoch FROM e - $1) / 3600)::int - 1 AS h1
               FROM clipped
         ), per_user AS (
             SELECT user_id,
                    bit_or((1::bigint << (greatest(h0, h1) + 1)) - (1::bigint << h0)) AS mask
               FROM spans
              GROUP BY user_id
         ), per_mask AS (
             SELECT {level} AS school_level, p.mask, count(*) AS n
               FROM per_user p
               {joins}
              GROUP BY 1, 2
         ), agg AS (
             SELECT m.school_level, g.hour,
                    coalesce(sum(m.n) FILTER (WHERE m.mask & (1::bigint << g.hour) <> 0), 0)::int AS n
               FROM per_mask m CROSS JOIN generate_series(0, 23) AS g(hour)
              GROUP BY 1, 2
         ), grid AS (
             SELECT g.hour, l.school_level
               FROM generate_series(0, 23) AS g(hour) CROSS JOIN unnest($5::text[]) AS l(school_level)
             UNION
             SELECT hour, school_level FROM agg
         )
         INSERT INTO {TABLE} (base_dt, hour, school_level, conn_user_cnt)
         SELECT $4, g.hour, g.school_level, coalesce(a.n, 0)
           FROM grid g LEFT JOIN agg a USING (hour, school_level)
         RETURNING hour, conn_user_cnt, (SELECT count(*) FROM per_user)",
        clipped = clipped_sessions_ctes(LOGIN_SESSIONS, "user_id", BINDS),
        level = level_expr(),
        joins = level_joins("p"),
    );
    let insert = sqlx::query_as(&sql)
        .bind(time::start_of_day_seoul(date))
        .bind(time::start_of_day_seoul(date + Days::new(1)))
        .bind(sessions.open_session_max_hours as i32)
        .bind(date)
        .bind(&SCHOOL_LEVELS[..])
        .bind(sessions.open_session_idle_minutes as i32);
    let rows: Vec<(i16, i32, i64)> =
        replace_rows(conn, ID, TABLE, Owned::Day(date), insert).await?;
    let mut per_hour = [0i64; 24];
    for &(hour, n, _) in &rows {
        if let Some(slot) = per_hour.get_mut(hour as usize) {
            *slot += i64::from(n);
        }
    }
    let (peak_hour, peak_users) =
        per_hour.iter().enumerate().fold(
            (0, 0),
            |best, (h, &n)| if n > best.1 { (h, n) } else { best },
        );
    Ok(ConnDay {
        rows: rows.len() as u64,
        users: rows.first().map_or(0, |r| r.2 as u64),
        peak_hour: peak_hour as i16,
        peak_users,
    })
}
