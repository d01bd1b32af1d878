//! BO-01-004 — LMS logins per day. Daily at 03:05, for yesterday.
//!
//! Reads `tb_lms_login_hist` (logins with `login_at` on D in Asia/Seoul,
//! through its `login_at` index), `tb_lms_user` and `tb_lms_school`; writes
//! `tb_bo_lms_login_stats_daily` for D: per user type and school level
//! `login_cnt` (logins) and `login_user_cnt` (distinct users). Every (type,
//! level) of [`USER_TYPES`] × [`SCHOOL_LEVELS`] gets a row, zeros included,
//! so a day without logins differs from a day not computed (BO-05-006 relies
//! on it). Users without a school count under
//! [`super::NO_SCHOOL_LEVEL`].
//!
//! One set-based statement in one transaction that first deletes D's rows:
//! a rerun replaces them exactly. `--dry-run` computes inside the
//! transaction, reports the figures and rolls back.

use chrono::{Days, NaiveDate};
use serde::Serialize;
use sqlx::PgConnection;

use super::{finish, level_expr, level_joins, replace_rows, Owned, SCHOOL_LEVELS, USER_TYPES};
use crate::runtime::registry::{JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;

pub const ID: &str = "BO-01-004";

const TABLE: &str = "tb_bo_lms_login_stats_daily";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 LMS 로그인 집계 일배치",
    name_en: "LMS login aggregation (daily)",
    about: "Counts the day's LMS logins (tb_lms_login_hist) and distinct login users per user type and school level into tb_bo_lms_login_stats_daily (every type and level, zeros included); a rerun replaces the day's rows.",
    schedule: Schedule::Cron("5 3 * * *"),
    lock: Lock::JobAndDate,
    job: Some(&LoginCounts),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

pub struct LoginCounts;

/// What one day's computation wrote.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoginDay {
    pub rows: u64,
    pub logins: u64,
    pub login_users: u64,
}

#[async_trait::async_trait]
impl Job for LoginCounts {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let mut tx = ctx.pg().begin().await?;
        let day = compute_day(&mut tx, ctx.business_date).await?;
        finish(ctx, tx, TABLE, day.rows).await?;
        ctx.counts.add_read(day.logins);
        ctx.set_detail("logins", day.logins);
        ctx.set_detail("login_users", day.login_users);
        Ok(())
    }
}

/// Replaces `date`'s rows of `tb_bo_lms_login_stats_daily`, inside the
/// caller's transaction.
#[tracing::instrument(skip_all, fields(%date), err)]
pub async fn compute_day(conn: &mut PgConnection, date: NaiveDate) -> anyhow::Result<LoginDay> {
    // Logins are counted per (user, type) first, so the user/school join
    // runs once per user instead of once per login.
    let sql = format!(
        "WITH per_user AS (
             SELECT h.user_id, h.user_type, count(*) AS logins
               FROM tb_lms_login_hist h
              WHERE h.login_at >= $1 AND h.login_at < $2
              GROUP BY h.user_id, h.user_type
         ), agg AS (
             SELECT p.user_type, {level} AS school_level,
                    sum(p.logins)::int AS login_cnt, count(*)::int AS login_user_cnt
               FROM per_user p
               {joins}
              GROUP BY 1, 2
         ), grid AS (
             SELECT t.user_type, l.school_level
               FROM unnest($4::text[]) AS t(user_type) CROSS JOIN unnest($5::text[]) AS l(school_level)
             UNION
             SELECT user_type, school_level FROM agg
         )
         INSERT INTO {TABLE} (base_dt, user_type, school_level, login_cnt, login_user_cnt)
         SELECT $3, g.user_type, g.school_level, COALESCE(a.login_cnt, 0), COALESCE(a.login_user_cnt, 0)
           FROM grid g LEFT JOIN agg a USING (user_type, school_level)
         RETURNING login_cnt, login_user_cnt",
        level = level_expr(),
        joins = level_joins("p"),
    );
    let insert = sqlx::query_as(&sql)
        .bind(time::start_of_day_seoul(date))
        .bind(time::start_of_day_seoul(date + Days::new(1)))
        .bind(date)
        .bind(&USER_TYPES[..])
        .bind(&SCHOOL_LEVELS[..]);
    let rows: Vec<(i32, i32)> = replace_rows(conn, ID, TABLE, Owned::Day(date), insert).await?;
    Ok(LoginDay {
        rows: rows.len() as u64,
        logins: rows.iter().map(|r| r.0 as u64).sum(),
        login_users: rows.iter().map(|r| r.1 as u64).sum(),
    })
}
