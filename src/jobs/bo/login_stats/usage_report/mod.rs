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
use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Serialize;
use sqlx::PgConnection;

use super::login_users::Period;
use super::{connected_users, login_counts, login_users, SCHOOL_LEVELS, USER_TYPES};
use crate::format::thousands;
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

// Rendering -----------------------------------------------------------------

/// Korean names of the user types and school levels; other codes show as
/// they are.
fn type_name(code: &str) -> &str {
    match code {
        "S" => "학생",
        "T" => "교사",
        "P" => "학부모",
        other => other,
    }
}

fn level_name(code: &str) -> &str {
    match code {
        "E" => "초등",
        "M" => "중등",
        "H" => "고등",
        super::NO_SCHOOL_LEVEL => "학교 없음",
        other => other,
    }
}

fn weekday_ko(d: NaiveDate) -> &'static str {
    match d.weekday() {
        Weekday::Mon => "월",
        Weekday::Tue => "화",
        Weekday::Wed => "수",
        Weekday::Thu => "목",
        Weekday::Fri => "금",
        Weekday::Sat => "토",
        Weekday::Sun => "일",
    }
}

/// `3/4(수)`.
fn short_day(d: NaiveDate) -> String {
    format!("{}/{}({})", d.month(), d.day(), weekday_ko(d))
}

/// The change from `previous` to `this`: `+1,345 (+12.2%)`, `-3 (-50.0%)`,
/// `+5` when the week before had none, `0`, or `–` without a week before.
pub fn change(this: i64, previous: Option<i64>) -> String {
    let Some(previous) = previous else {
        return "–".into();
    };
    let diff = this - previous;
    let sign = if diff > 0 { "+" } else { "" };
    if previous == 0 || diff == 0 {
        return format!("{sign}{}", thousands(diff));
    }
    let pct = diff as f64 * 100.0 / previous as f64;
    format!("{sign}{} ({pct:+.1}%)", thousands(diff))
}

fn busiest_text(b: Option<Busiest>) -> String {
    match b {
        Some(b) => format!(
            "{} {}시 {}명",
            short_day(b.date),
            b.hour,
            thousands(b.users)
        ),
        None => "접속 없음".into(),
    }
}

/// One line of the summary table: label, this week, the week before, change.
struct Row {
    label: String,
    this: String,
    previous: String,
    change: String,
}

impl Report {
    /// `[AIDT] LMS 주간 이용 통계 (2026-03-02 ~ 2026-03-08)` from the template's
    /// `{from}` and `{to}`.
    pub fn subject(&self, template: &str) -> String {
        template
            .replace("{from}", &self.this.week.start.to_string())
            .replace("{to}", &self.this.week.end().to_string())
    }

    fn previous_value(&self, f: impl Fn(&WeekFigures) -> i64) -> Option<i64> {
        self.previous.as_ref().map(f)
    }

    fn summary_rows(&self) -> Vec<Row> {
        let prev_text = |f: &dyn Fn(&WeekFigures) -> String| {
            self.previous.as_ref().map_or("통계 없음".to_string(), f)
        };
        let mut rows = vec![
            Row {
                label: "로그인 수".into(),
                this: thousands(self.this.logins),
                previous: prev_text(&|w| thousands(w.logins)),
                change: change(self.this.logins, self.previous_value(|w| w.logins)),
            },
            Row {
                label: "로그인 사용자 수".into(),
                this: thousands(self.this.login_users),
                previous: prev_text(&|w| thousands(w.login_users)),
                change: change(
                    self.this.login_users,
                    self.previous_value(|w| w.login_users),
                ),
            },
            Row {
                label: "최다 접속 시간대".into(),
                this: busiest_text(self.this.busiest),
                previous: prev_text(&|w| busiest_text(w.busiest)),
                change: change(
                    self.this.busiest.map_or(0, |b| b.users),
                    self.previous_value(|w| w.busiest.map_or(0, |b| b.users)),
                ),
            },
        ];
        rows.extend(self.breakdown_rows());
        rows
    }

    /// Distinct users per (type, level), in the contract's order, leaving
    /// out pairs with no one in either week (parents have no school level).
    fn breakdown_rows(&self) -> Vec<Row> {
        let mut keys: Vec<(String, String)> = USER_TYPES
            .iter()
            .flat_map(|t| SCHOOL_LEVELS.iter().map(|l| (t.to_string(), l.to_string())))
            .collect();
        let extra = self
            .this
            .users_by
            .keys()
            .chain(self.previous.iter().flat_map(|p| p.users_by.keys()));
        for key in extra {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys.into_iter()
            .filter_map(|key| {
                let this = self.this.users_by.get(&key).copied().unwrap_or(0);
                let previous = self
                    .previous
                    .as_ref()
                    .map(|p| p.users_by.get(&key).copied().unwrap_or(0));
                if this == 0 && previous.unwrap_or(0) == 0 {
                    return None;
                }
                Some(Row {
                    label: format!("{} · {}", type_name(&key.0), level_name(&key.1)),
                    this: thousands(this),
                    previous: previous.map_or("통계 없음".into(), thousands),
                    change: change(this, previous),
                })
            })
            .collect()
    }

    fn period_line(&self) -> String {
        let w = self.this.week;
        let p = w.previous();
        format!(
            "기간: {} ~ {} (KST, 월~일) · 비교: 전주 {} ~ {}",
            w.start,
            w.end(),
            p.start,
            p.end()
        )
    }

    /// The plain-text part.
    pub fn text(&self, recipient_name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{recipient_name}님, 지난주 AIDT LMS 이용 통계입니다.");
        let _ = writeln!(out, "{}", self.period_line());
        let _ = writeln!(out);
        let rows = self.summary_rows();
        let sections = [
            ("주요 지표", &rows[..3]),
            ("유형·학교급별 로그인 사용자", &rows[3..]),
        ];
        for (title, rows) in sections {
            let _ = writeln!(out, "[{title}] 이번 주 (전주, 증감)");
            for row in rows {
                let _ = writeln!(
                    out,
                    "- {}: {} (전주 {}, {})",
                    row.label, row.this, row.previous, row.change
                );
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "[일별 로그인 사용자]");
        let max = self.this.busiest_day_users();
        for d in &self.this.days {
            let bar = if max > 0 {
                "#".repeat(((d.login_users * 30 + max - 1) / max) as usize)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "- {}: {}명 (로그인 {}) {bar}",
                short_day(d.date),
                thousands(d.login_users),
                thousands(d.logins)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", FOOTNOTE);
        out
    }

    /// The HTML part: tables and inline styles only (what Gmail, Outlook and
    /// phone clients all render); the bars are table cells with a
    /// background colour and a percentage width, not images or CSS boxes.
    pub fn html(&self, recipient_name: &str) -> String {
        let rows = self.summary_rows();
        let mut out = String::new();
        out.push_str("<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\"><title>AIDT LMS 주간 이용 통계</title></head>");
        out.push_str("<body style=\"margin:0;padding:16px;font-family:'Malgun Gothic','Apple SD Gothic Neo',sans-serif;color:#1f2937;\">");
        out.push_str("<table role=\"presentation\" width=\"640\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"max-width:640px;\">");
        let _ = write!(
            out,
            "<tr><td style=\"font-size:20px;font-weight:bold;padding-bottom:8px;\">AIDT LMS 주간 이용 통계</td></tr>\
             <tr><td style=\"font-size:14px;padding-bottom:4px;\">{}님, 지난주 AIDT LMS 이용 통계입니다.</td></tr>\
             <tr><td style=\"font-size:13px;color:#6b7280;padding-bottom:16px;\">{}</td></tr>",
            escape(recipient_name),
            escape(&self.period_line())
        );
        out.push_str("<tr><td>");
        table(&mut out, "주요 지표", &rows[..3]);
        table(&mut out, "유형·학교급별 로그인 사용자", &rows[3..]);
        self.chart(&mut out);
        let _ = write!(
            out,
            "<p style=\"font-size:12px;color:#6b7280;\">{}</p>",
            escape(FOOTNOTE)
        );
        out.push_str("</td></tr></table></body></html>");
        out
    }

    /// The seven days as horizontal bars.
    fn chart(&self, out: &mut String) {
        let max = self.this.busiest_day_users();
        out.push_str("<p style=\"font-size:15px;font-weight:bold;margin:20px 0 8px;\">일별 로그인 사용자</p>");
        out.push_str("<table role=\"presentation\" width=\"100%\" cellpadding=\"3\" cellspacing=\"0\" border=\"0\" style=\"font-size:13px;\">");
        for d in &self.this.days {
            let pct = if max > 0 && d.login_users > 0 {
                ((d.login_users * 100 + max - 1) / max).max(1)
            } else {
                0
            };
            let bar = if pct > 0 {
                format!(
                    "<table role=\"presentation\" width=\"{pct}%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\"><tr>\
                     <td bgcolor=\"#2563eb\" height=\"16\" style=\"background-color:#2563eb;height:16px;font-size:1px;line-height:1px;\">&nbsp;</td>\
                     </tr></table>"
                )
            } else {
                "&nbsp;".into()
            };
            let _ = write!(
                out,
                "<tr><td width=\"70\" style=\"white-space:nowrap;\">{}</td><td>{bar}</td>\
                 <td width=\"150\" align=\"right\" style=\"white-space:nowrap;\">{}명 (로그인 {})</td></tr>",
                short_day(d.date),
                thousands(d.login_users),
                thousands(d.logins)
            );
        }
        out.push_str("</table>");
    }
}

const FOOTNOTE: &str = "로그인 사용자 수는 기간 중 한 번 이상 로그인한 사용자 수(유형·학교급별 고유 사용자의 합)이고, 최다 접속 시간대는 그 한 시간 동안 접속해 있던 사용자 수가 가장 많은 시간대입니다. 학교 정보가 없는 사용자(학부모 등)는 '학교 없음'으로 집계합니다. 이 메일은 AIDT 배치(BO-05-006)가 보냈습니다.";

fn table(out: &mut String, title: &str, rows: &[Row]) {
    let th = "width=\"34%\" style=\"text-align:left;padding:6px 8px;border-bottom:2px solid #d1d5db;background-color:#f3f4f6;\"";
    let th_num = "width=\"22%\" style=\"text-align:right;padding:6px 8px;border-bottom:2px solid #d1d5db;background-color:#f3f4f6;\"";
    let td = "style=\"padding:6px 8px;border-bottom:1px solid #e5e7eb;\"";
    let num = "align=\"right\" style=\"padding:6px 8px;border-bottom:1px solid #e5e7eb;white-space:nowrap;\"";
    let _ = write!(
        out,
        "<p style=\"font-size:15px;font-weight:bold;margin:20px 0 8px;\">{}</p>\
         <table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;font-size:13px;\">\
         <tr><th {th}>항목</th><th {th_num}>이번 주</th><th {th_num}>전주</th><th {th_num}>증감</th></tr>",
        escape(title)
    );
    for row in rows {
        let _ = write!(
            out,
            "<tr><td {td}>{}</td><td {num}>{}</td><td {num}>{}</td><td {num}>{}</td></tr>",
            escape(&row.label),
            escape(&row.this),
            escape(&row.previous),
            escape(&row.change)
        );
    }
    out.push_str("</table>");
}

/// HTML text escaping (names come from a table people edit).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
