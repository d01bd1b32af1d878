//! BO-01-007 — distinct LMS login users per day, ISO week and month. Daily
//! at 04:05, for yesterday.
//!
//! Reads `tb_lms_login_hist` (through its `login_at` index), `tb_lms_user`
//! and `tb_lms_school`; writes `tb_bo_lms_login_user_stats` rows of three
//! periods: `D` (the day D), `W` (the ISO week containing D, from its
//! Monday) and `M` (the calendar month containing D, from its first day),
//! each counting the distinct users with a login from the period's start to
//! the end of D (or the period's end, if earlier), per user type and school
//! level. The week and month rows are recomputed from the logins in every
//! run: a distinct count is not a sum of days.
//!
//! A week or month that ended before today (Asia/Seoul, the run's clock)
//! is closed: it is counted whole, whatever D is, so rerunning any of its
//! days (in any order) writes the same rows. One still running is counted
//! up to the end of the later of D and yesterday — every complete day so
//! far — so rerunning an earlier day of it never takes days away from it.
//! A week that starts in the previous month is read whole.
//!
//! Every (type, level) of [`USER_TYPES`] × [`SCHOOL_LEVELS`] gets a row per
//! period, zeros included. One read of the logins of the union of the
//! periods, grouped per (user, type) with a flag per period, then one join to
//! the user's school per user; one transaction that first deletes the
//! periods' rows, so a rerun replaces them exactly. `--dry-run` computes
//! inside the transaction and rolls back.

use anyhow::Context as _;
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::{finish, level_expr, level_joins, replace_rows, Owned, SCHOOL_LEVELS, USER_TYPES};
use crate::runtime::registry::{JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;

pub const ID: &str = "BO-01-007";

const TABLE: &str = "tb_bo_lms_login_user_stats";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 LMS 로그인 유저기준 집계 일/주/월 통계 일배치",
    name_en: "Login-user statistics, daily/weekly/monthly",
    about: "Counts the distinct LMS login users (tb_lms_login_hist) per user type and school level of the day, of its ISO week (Monday start) and of its month into tb_bo_lms_login_user_stats (period D/W/M): a week or month already over is counted whole, one still running up to yesterday (or the day, if later); a rerun replaces those periods' rows.",
    schedule: Schedule::Cron("5 4 * * *"),
    lock: Lock::JobAndDate,
    job: Some(&LoginUsers),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

pub struct LoginUsers;

/// One period of `tb_bo_lms_login_user_stats` and the logins it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    /// `D`, `W` or `M`.
    pub kind: &'static str,
    pub start: NaiveDate,
    /// The last day counted.
    pub through: NaiveDate,
    /// Logins with `from <= login_at < to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Period {
    /// Days `start` (inclusive) to `end` (exclusive), in Seoul.
    pub fn days(kind: &'static str, start: NaiveDate, end: NaiveDate) -> Self {
        Self {
            kind,
            start,
            through: end.pred_opt().expect("date in range"),
            from: time::start_of_day_seoul(start),
            to: time::start_of_day_seoul(end),
        }
    }
}

/// The Monday of `date`'s ISO week.
pub fn week_start(date: NaiveDate) -> NaiveDate {
    date - Days::new(u64::from(date.weekday().num_days_from_monday()))
}

/// The day `date`, and the ISO week and the month containing it: whole when
/// they ended before `today`, else up to the end of the later of `date` and
/// the day before `today`.
pub fn periods_of(date: NaiveDate, today: NaiveDate) -> [Period; 3] {
    let next = date + Days::new(1);
    let counted_to = next.max(today);
    let week = week_start(date);
    let month = date.with_day(1).expect("first of month");
    [
        Period::days("D", date, next),
        Period::days("W", week, counted_to.min(week + Days::new(7))),
        Period::days("M", month, counted_to.min(month + Months::new(1))),
    ]
}

/// Distinct users per period, summed over types and levels.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeriodTotal {
    pub period_type: String,
    pub period_start: NaiveDate,
    /// The last day counted.
    pub through: Option<NaiveDate>,
    pub login_users: i64,
}

#[async_trait::async_trait]
impl Job for LoginUsers {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let today = time::today_seoul_at(ctx.now());
        let periods = periods_of(ctx.business_date, today);
        let mut tx = ctx.pg().begin().await?;
        let written = compute(&mut tx, &periods).await?;
        let totals = totals(&mut tx, &periods).await?;
        finish(ctx, tx, TABLE, written).await?;
        ctx.counts.add_read(
            totals
                .iter()
                .map(|t| t.login_users as u64)
                .max()
                .unwrap_or(0),
        );
        ctx.set_detail("periods", &totals);
        Ok(())
    }
}

/// Replaces the rows of `periods` in `tb_bo_lms_login_user_stats`, inside
/// the caller's transaction; returns the rows written.
#[tracing::instrument(skip_all, fields(periods = periods.len()), err)]
pub async fn compute(conn: &mut PgConnection, periods: &[Period]) -> anyhow::Result<u64> {
    if periods.is_empty() {
        return Ok(0);
    }
    let keys: Vec<(&str, NaiveDate)> = periods.iter().map(|p| (p.kind, p.start)).collect();
    let kinds: Vec<&str> = periods.iter().map(|p| p.kind).collect();
    let starts: Vec<NaiveDate> = periods.iter().map(|p| p.start).collect();
    let froms: Vec<DateTime<Utc>> = periods.iter().map(|p| p.from).collect();
    let tos: Vec<DateTime<Utc>> = periods.iter().map(|p| p.to).collect();
    let lo = *froms.iter().min().expect("not empty");
    let hi = *tos.iter().max().expect("not empty");

    // One flag column per period (the count only is formatted in: the
    // bounds are bound arrays), so the logins are read once for all periods.
    let flags: Vec<String> = (1..=periods.len())
        .map(|i| format!("bool_or(h.login_at >= ($3::timestamptz[])[{i}] AND h.login_at < ($4::timestamptz[])[{i}]) AS p{i}"))
        .collect();
    let values: Vec<String> = (1..=periods.len())
        .map(|i| format!("({i}, l.p{i})"))
        .collect();
    let sql = format!(
        "WITH per_user AS (
             SELECT h.user_id, h.user_type, {flags}
               FROM tb_lms_login_hist h
              WHERE h.login_at >= $5 AND h.login_at < $6
              GROUP BY h.user_id, h.user_type
         ), leveled AS (
             SELECT p.*, {level} AS school_level FROM per_user p {joins}
         ), counts AS (
             SELECT v.i, l.user_type, l.school_level, count(*) FILTER (WHERE v.hit)::int AS n
               FROM leveled l CROSS JOIN LATERAL (VALUES {values}) AS v(i, hit)
              GROUP BY 1, 2, 3
         ), periods AS (
             SELECT p.period_type, p.period_start, p.i::int AS i
               FROM unnest($1::text[], $2::date[]) WITH ORDINALITY AS p(period_type, period_start, i)
         ), grid AS (
             SELECT p.i, t.user_type, l.school_level
               FROM periods p
              CROSS JOIN unnest($7::text[]) AS t(user_type)
              CROSS JOIN unnest($8::text[]) AS l(school_level)
             UNION
             SELECT i, user_type, school_level FROM counts
         )
         INSERT INTO {TABLE} (period_type, period_start, user_type, school_level, login_user_cnt)
         SELECT p.period_type, p.period_start, g.user_type, g.school_level, COALESCE(c.n, 0)
           FROM grid g
           JOIN periods p ON p.i = g.i
           LEFT JOIN counts c ON c.i = g.i AND c.user_type = g.user_type AND c.school_level = g.school_level
         RETURNING login_user_cnt",
        flags = flags.join(", "),
        values = values.join(", "),
        level = level_expr(),
        joins = level_joins("p"),
    );
    let insert = sqlx::query_as(&sql)
        .bind(&kinds)
        .bind(&starts)
        .bind(&froms)
        .bind(&tos)
        .bind(lo)
        .bind(hi)
        .bind(&USER_TYPES[..])
        .bind(&SCHOOL_LEVELS[..]);
    let rows: Vec<(i32,)> = replace_rows(conn, ID, TABLE, Owned::Periods(&keys), insert).await?;
    let written = rows.len() as u64;
    Ok(written)
}

/// The periods' totals as written, for the run's details.
async fn totals(conn: &mut PgConnection, periods: &[Period]) -> anyhow::Result<Vec<PeriodTotal>> {
    let kinds: Vec<&str> = periods.iter().map(|p| p.kind).collect();
    let starts: Vec<NaiveDate> = periods.iter().map(|p| p.start).collect();
    let rows: Vec<(String, NaiveDate, i64)> = sqlx::query_as(&format!(
        "SELECT period_type, period_start, sum(login_user_cnt)::bigint FROM {TABLE}
          WHERE (period_type, period_start) IN (SELECT * FROM unnest($1::text[], $2::date[]))
          GROUP BY 1, 2 ORDER BY 2 DESC, 1"
    ))
    .bind(&kinds)
    .bind(&starts)
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("{ID}: Failed to read back {TABLE}"))?;
    Ok(rows
        .into_iter()
        .map(|(period_type, period_start, login_users)| PeriodTotal {
            through: periods
                .iter()
                .find(|p| p.kind == period_type && p.start == period_start)
                .map(|p| p.through),
            period_type,
            period_start,
            login_users,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_month_starting_mid_week_keeps_the_whole_iso_week() {
        // 2026-04-01 is a Wednesday: its week starts on Monday 2026-03-30.
        let [day, week, month] = periods_of(d("2026-04-01"), d("2026-04-02"));
        assert_eq!(
            (day.start, week.start, month.start),
            (d("2026-04-01"), d("2026-03-30"), d("2026-04-01"))
        );
        assert_eq!(week.to, time::start_of_day_seoul(d("2026-04-02")));
        assert_eq!(month.to, week.to);
    }

    #[test]
    fn a_sunday_closes_its_week_and_the_last_day_its_month() {
        let [_, week, month] = periods_of(d("2026-05-31"), d("2026-06-01"));
        assert_eq!(week.start, d("2026-05-25"));
        assert_eq!(month.to, time::start_of_day_seoul(d("2026-06-01")));
    }

    #[test]
    fn closed_periods_are_whole_and_running_ones_reach_yesterday_whatever_the_date() {
        // Run on Friday 2026-04-10 for Tuesday 7 April: its week is still
        // running (to Thursday 9 April); March, for 3 March, is over.
        let [day, week, month] = periods_of(d("2026-04-07"), d("2026-04-10"));
        assert_eq!(
            (day.through, week.through),
            (d("2026-04-07"), d("2026-04-09"))
        );
        assert_eq!(month.through, d("2026-04-09"));
        let [_, week, month] = periods_of(d("2026-03-03"), d("2026-04-10"));
        assert_eq!(
            (week.start, week.through),
            (d("2026-03-02"), d("2026-03-08"))
        );
        assert_eq!(month.through, d("2026-03-31"));
        // A run for today counts today so far.
        let [_, week, _] = periods_of(d("2026-04-10"), d("2026-04-10"));
        assert_eq!(week.through, d("2026-04-10"));
    }
}
