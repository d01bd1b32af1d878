//! The weekly report as people read it: the mail's subject, its plain text
//! and its HTML, from the figures of [`super`].

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, Weekday};

use super::super::{SCHOOL_LEVELS, USER_TYPES};
use super::{Busiest, Report, WeekFigures};
use crate::format::thousands;

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
        super::super::NO_SCHOOL_LEVEL => "학교 없음",
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
pub(super) fn escape(s: &str) -> String {
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
