//! The weekly LMS usage report BO-05-006 mails: which week, making sure its
//! statistics exist (computing the days the daily jobs left missing with
//! their own code), reading the figures, and rendering them as plain text
//! and as HTML.
//!
//! The figures of a week, each beside the week before:
//! - logins: the sum of BO-01-004's `login_cnt` over the seven days;
//! - distinct login users of the week per user type and school level:
//!   BO-01-007's `W` rows (a distinct count is not a sum of days), and their
//!   sum;
//! - the busiest hour: the (day, hour) with the most connected users over
//!   all levels in BO-01-003's table (the earliest of equals);
//! - per day: BO-01-004's distinct login users (the bar chart) and logins.
//!
//! A day without rows in BO-01-003's or BO-01-004's table was not computed
//! (both write every hour/type × level, zeros included): it is computed here
//! first, by the jobs' own functions. BO-01-007's week row is recomputed
//! for the whole week, since a row written by a run for a day before the
//! Sunday is only the week to that day and nothing in it says so. Logins
//! already past LMS-01-001's retention (before the oldest login left)
//! cannot be counted again: a missing day among them cannot be computed, and
//! a week that begins before them keeps the week row it has (recomputed from
//! what is left it would shrink). A week that cannot be computed is, for the
//! reported week, an error (never a mail of zeros); for the week before, the
//! comparison says "no data".

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{Datelike, Days, NaiveDate};
use serde::Serialize;
use sqlx::PgConnection;

mod render;

pub use render::change;

use super::login_users::Period;
use super::{connected_users, login_counts, login_users};
use crate::jobs::shared::sessions::LearningDaySettings;

/// A Monday-to-Sunday week, Asia/Seoul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Week {
    /// The Monday.
    pub start: NaiveDate,
}

impl Week {
    /// The last complete Monday–Sunday week ending on or before `date`.
    pub fn last_complete(date: NaiveDate) -> Self {
        let back = (date.weekday().num_days_from_monday() + 1) % 7;
        let sunday = date - Days::new(u64::from(back));
        Week {
            start: sunday - Days::new(6),
        }
    }

    /// The Sunday.
    pub fn end(&self) -> NaiveDate {
        self.start + Days::new(6)
    }

    pub fn previous(&self) -> Self {
        Week {
            start: self.start - Days::new(7),
        }
    }

    pub fn days(&self) -> impl Iterator<Item = NaiveDate> {
        let start = self.start;
        (0..7).map(move |i| start + Days::new(i))
    }
}

/// What [`ensure_statistics`] had to do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preparation {
    /// `"BO-01-004 2026-03-04"`: days computed because their rows were missing.
    pub computed: Vec<String>,
    /// Weeks whose days are missing and can no longer be computed.
    pub unavailable: Vec<Week>,
}

/// Makes sure `weeks` have their statistics rows, inside the caller's
/// transaction: days missing from BO-01-003's or BO-01-004's table are
/// computed with their code, BO-01-007's week row of each week is
/// recomputed. A missing day before `oldest_computable` (the login history's
/// retention limit) makes its week unavailable instead; a week that begins
/// before it keeps its week row, and without one is unavailable.
pub async fn ensure_statistics(
    conn: &mut PgConnection,
    weeks: &[Week],
    sessions: &LearningDaySettings,
    oldest_computable: NaiveDate,
) -> anyhow::Result<Preparation> {
    let mut prep = Preparation::default();
    for &week in weeks {
        let missing_daily = missing_days(conn, "tb_bo_lms_login_stats_daily", week).await?;
        let missing_hourly = missing_days(conn, "tb_bo_lms_conn_stats_daily", week).await?;
        if missing_daily
            .iter()
            .chain(&missing_hourly)
            .any(|d| *d < oldest_computable)
        {
            prep.unavailable.push(week);
            continue;
        }
        for day in missing_daily {
            login_counts::compute_day(conn, day).await?;
            prep.computed.push(format!("{} {day}", login_counts::ID));
        }
        for day in missing_hourly {
            connected_users::compute_day(conn, day, sessions).await?;
            prep.computed.push(format!("{} {day}", connected_users::ID));
        }
        if week.start >= oldest_computable {
            let whole_week = Period::days("W", week.start, week.end() + Days::new(1));
            login_users::compute(conn, &[whole_week]).await?;
        } else if !has_week_row(conn, week).await? {
            prep.unavailable.push(week);
        }
    }
    Ok(prep)
}

/// Whether BO-01-007 wrote `week`'s row (a week whose logins are partly
/// past the login history's retention keeps the row it has: recomputed,
/// it would count only the logins left).
async fn has_week_row(conn: &mut PgConnection, week: Week) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tb_bo_lms_login_user_stats
                         WHERE period_type = 'W' AND period_start = $1)",
    )
    .bind(week.start)
    .fetch_one(&mut *conn)
    .await
    .context("Failed to look for the week's row of tb_bo_lms_login_user_stats")
}

/// The days of `week` without a row in `table` (keyed by `base_dt`).
async fn missing_days(
    conn: &mut PgConnection,
    table: &str,
    week: Week,
) -> anyhow::Result<Vec<NaiveDate>> {
    sqlx::query_scalar(&format!(
        "SELECT d::date FROM generate_series($1::date, $2::date, interval '1 day') AS d
          WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.base_dt = d::date)
          ORDER BY 1"
    ))
    .bind(week.start)
    .bind(week.end())
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("Failed to look for the missing days of {table}"))
}

/// One day of a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayFigures {
    pub date: NaiveDate,
    pub logins: i64,
    pub login_users: i64,
}

/// The busiest hour of a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Busiest {
    pub date: NaiveDate,
    pub hour: i16,
    pub users: i64,
}

/// One week's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeekFigures {
    pub week: Week,
    pub logins: i64,
    /// Distinct login users of the week, summed over types and levels.
    pub login_users: i64,
    /// (user type, school level) → distinct login users of the week.
    pub users_by: BTreeMap<(String, String), i64>,
    pub days: Vec<DayFigures>,
    /// `None` when no one was connected all week.
    pub busiest: Option<Busiest>,
}

impl WeekFigures {
    /// The most login users of one day: the chart's full bar.
    fn busiest_day_users(&self) -> i64 {
        self.days.iter().map(|d| d.login_users).max().unwrap_or(0)
    }
}

/// The reported week and, when its statistics are there, the week before.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub this: WeekFigures,
    pub previous: Option<WeekFigures>,
}

/// Reads `week`'s figures from the statistics tables.
pub async fn read_week(conn: &mut PgConnection, week: Week) -> anyhow::Result<WeekFigures> {
    let daily: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT base_dt, sum(login_cnt)::bigint, sum(login_user_cnt)::bigint
           FROM tb_bo_lms_login_stats_daily WHERE base_dt BETWEEN $1 AND $2
          GROUP BY 1 ORDER BY 1",
    )
    .bind(week.start)
    .bind(week.end())
    .fetch_all(&mut *conn)
    .await
    .context("Failed to read tb_bo_lms_login_stats_daily")?;
    let days: Vec<DayFigures> = week
        .days()
        .map(|date| {
            let row = daily.iter().find(|r| r.0 == date);
            DayFigures {
                date,
                logins: row.map_or(0, |r| r.1),
                login_users: row.map_or(0, |r| r.2),
            }
        })
        .collect();
    let users: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT user_type, school_level, login_user_cnt FROM tb_bo_lms_login_user_stats
          WHERE period_type = 'W' AND period_start = $1",
    )
    .bind(week.start)
    .fetch_all(&mut *conn)
    .await
    .context("Failed to read tb_bo_lms_login_user_stats")?;
    let users_by: BTreeMap<(String, String), i64> = users
        .into_iter()
        .map(|(t, l, n)| ((t, l), i64::from(n)))
        .collect();
    let busiest: Option<(NaiveDate, i16, i64)> = sqlx::query_as(
        "SELECT base_dt, hour, sum(conn_user_cnt)::bigint AS n
           FROM tb_bo_lms_conn_stats_daily WHERE base_dt BETWEEN $1 AND $2
          GROUP BY 1, 2 HAVING sum(conn_user_cnt) > 0
          ORDER BY n DESC, 1, 2 LIMIT 1",
    )
    .bind(week.start)
    .bind(week.end())
    .fetch_optional(&mut *conn)
    .await
    .context("Failed to read tb_bo_lms_conn_stats_daily")?;
    Ok(WeekFigures {
        week,
        logins: days.iter().map(|d| d.logins).sum(),
        login_users: users_by.values().sum(),
        users_by,
        days,
        busiest: busiest.map(|(date, hour, users)| Busiest { date, hour, users }),
    })
}

#[cfg(test)]
mod tests {
    use super::render::escape;
    use super::*;
    use crate::format::thousands;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_last_complete_week_ends_on_the_latest_sunday_up_to_the_date() {
        // Saturday 14 March 2026 (the cron run's yesterday is Friday 13th).
        assert_eq!(Week::last_complete(d("2026-03-13")).start, d("2026-03-02"));
        assert_eq!(Week::last_complete(d("2026-03-14")).start, d("2026-03-02"));
        // A Sunday closes its own week; the Monday after still reports it.
        assert_eq!(Week::last_complete(d("2026-03-08")).start, d("2026-03-02"));
        assert_eq!(Week::last_complete(d("2026-03-09")).start, d("2026-03-02"));
        assert_eq!(Week::last_complete(d("2026-03-07")).start, d("2026-02-23"));
        // A week across a month's start.
        let w = Week::last_complete(d("2026-04-05"));
        assert_eq!((w.start, w.end()), (d("2026-03-30"), d("2026-04-05")));
    }

    #[test]
    fn numbers_and_changes_read_as_operators_expect() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1_000), "-1,000");
        assert_eq!(change(12_345, Some(11_000)), "+1,345 (+12.2%)");
        assert_eq!(change(5, Some(10)), "-5 (-50.0%)");
        assert_eq!(change(5, Some(0)), "+5");
        assert_eq!(change(7, Some(7)), "0");
        assert_eq!(change(7, None), "–");
    }

    #[test]
    fn html_escapes_names() {
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
