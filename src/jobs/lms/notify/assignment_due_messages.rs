//! LMS-01-004 — assignment-deadline messages. Every 30 minutes.
//!
//! Reads `tb_lms_assignment`, `tb_lms_lecture_member`, `tb_lms_user` and
//! `tb_lms_assignment_submit`; writes `tb_lms_ntcn_msg`. For every `OPEN`
//! assignment not yet past due (`due_dt` after the reference time) and due
//! within one of the thresholds (`[jobs.lms_01_004] thresholds_minutes`,
//! default 24 h and 1 h), one `ASGN_DUE` message per student of its lecture
//! (`user_type = 'S'`, `del_yn = 'N'`, still a member) who has not
//! submitted (`submit_dt` set). Only the nearest threshold the assignment is
//! within counts: an assignment first seen 30 minutes before it is due (or
//! after cron was down) gets "due in 1 hour" only, never "24 hours" and
//! "1 hour" at once; the 24-hour message of an assignment seen earlier stays
//! the one it got. `ref_key` is `asgn:<asgn_id>:<threshold>m`.
//!
//! One set-based `INSERT … SELECT … ON CONFLICT DO NOTHING` over every
//! assignment in the window: the unique key (`user_id`, `msg_type`,
//! `ref_key`) makes a rerun, or an overlapping run, harmless — a message is
//! never written twice. An `OPEN` assignment with a NULL `due_dt` (the
//! contract's `NOT NULL` is the test schema's; the LMS's column may allow it)
//! cannot be placed: it is counted as skipped, named (id, lecture, title) in
//! the run's details and a warning, and picked up by the first run after
//! its due time is set.
//!
//! "Now" is the run's reference time: the moment it got its lock (after up
//! to 10 minutes of waiting, past midnight too), or for a `--date` in the
//! past the end of that day (the runtime's rule; it is how the tests pin the
//! clock). Replaying a past day in production would send reminders judged
//! as of that midnight: don't.
//!
//! Rerun: safe. `--dry-run` counts the messages it would write (those not
//! already in `tb_lms_ntcn_msg`) and writes nothing.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::jobs::lms::notify;
use crate::runtime::registry::{settings_of, DefaultDate, JobDef, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-004";

/// `tb_lms_ntcn_msg.msg_type` of these messages.
pub const MSG_TYPE: &str = "ASGN_DUE";

/// The placeholders the templates may use.
pub const PLACEHOLDERS: [&str; 3] = ["title", "due", "threshold"];

/// This job in the registry.
///
/// `Lock::Job`: the job works on "now", not on a date's rows — a run still
/// going at 00:00 and the next one have different business dates but the
/// same assignments, so a per-date lock would not keep them apart. The
/// unique key already makes an overlap harmless for the data; the lock keeps
/// a slow run and the next half-hour's from doing the same work twice on the
/// LMS database. The next run waits up to 10 minutes (its "now" is taken
/// after the wait) instead of being skipped, so a threshold as short as the
/// 30-minute cadence is not missed; it stays well under 30 minutes so runs
/// never pile up behind a stuck one.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "학습 관리 시스템 과제 마감 알림메세지 생성 일배치",
    name_en: "Create assignment-deadline notifications",
    about: "Reads the OPEN assignments of tb_lms_assignment due within a threshold ([jobs.lms_01_004] thresholds_minutes, default 1440,60; only the nearest one), their lectures' students and tb_lms_assignment_submit; writes one ASGN_DUE message into tb_lms_ntcn_msg per student who has not submitted; a rerun writes nothing twice.",
    schedule: Schedule::Cron("*/30 * * * *"),
    schedule_note: Some("the seed prints `_/30_ * * *` (Markdown mangling of */30)"),
    default_date: DefaultDate::Today,
    lock_wait_secs: 600,
    settings: Some(settings_of::<AssignmentDueSettings>().checked_by(notify::validate::<AssignmentDueSettings>)),
    job: Some(&AssignmentDueMessages),
    ..JobDef::DEFAULTS
};

/// `[jobs.lms_01_004]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssignmentDueSettings {
    /// Minutes before `due_dt` at which a reminder is due: `[1440, 60]` or
    /// `"1440,60"`. With the 30-minute schedule a threshold under 30 minutes
    /// may fall between two runs.
    #[serde(deserialize_with = "notify::number_list")]
    pub thresholds_minutes: Vec<u32>,
    /// `{title}` the assignment's title, `{due}` its due time in KST
    /// (`YYYY-MM-DD HH:MI`), `{threshold}` the threshold (`24시간`, `1시간`).
    pub title_template: String,
    pub body_template: String,
    /// Assignments with a NULL `due_dt` named in the run's details, at most.
    pub max_reported: u32,
}

impl Default for AssignmentDueSettings {
    fn default() -> Self {
        Self {
            thresholds_minutes: vec![24 * 60, 60],
            title_template: "[과제 마감 {threshold} 전] {title}".into(),
            body_template: "'{title}' 과제가 {due}(KST)에 마감됩니다. 아직 제출하지 않았어요. 마감 전에 제출해 주세요.".into(),
            max_reported: 20,
        }
    }
}

/// The longest threshold accepted: a week. Longer is not a deadline reminder.
const MAX_THRESHOLD_MINUTES: u32 = 7 * 24 * 60;

impl notify::MessageSettings for AssignmentDueSettings {
    fn check(&self) -> Result<(), String> {
        let t = &self.thresholds_minutes;
        if t.is_empty() {
            return Err("thresholds_minutes: give at least one threshold (minutes before due_dt), e.g. [1440, 60]".into());
        }
        if let Some(bad) = t.iter().find(|&&m| m == 0 || m > MAX_THRESHOLD_MINUTES) {
            return Err(format!(
                "thresholds_minutes: {bad} is out of range (1..={MAX_THRESHOLD_MINUTES} minutes)"
            ));
        }
        let mut sorted = t.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("thresholds_minutes: {} is given twice", w[0]));
        }
        notify::check("title_template", &self.title_template, &PLACEHOLDERS)?;
        notify::check("body_template", &self.body_template, &PLACEHOLDERS)?;
        Ok(())
    }
}

/// How a threshold reads in a message: `24시간`, `1시간`, `1시간 30분`, `30분`.
pub fn threshold_label(minutes: u32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}분"),
        (h, 0) => format!("{h}시간"),
        (h, m) => format!("{h}시간 {m}분"),
    }
}

/// Messages of one threshold: candidates (students due one) and written.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ThresholdCount {
    pub candidates: u64,
    pub written: u64,
}

/// An `OPEN` assignment whose `due_dt` is NULL.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UndatedAssignment {
    pub asgn_id: i64,
    pub lecture_code: String,
    pub title: String,
}

pub struct AssignmentDueMessages;

#[async_trait::async_trait]
impl Job for AssignmentDueMessages {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: AssignmentDueSettings = notify::settings(ctx)?;
        let now = ctx.reference_time();
        ctx.set_detail("reference_time", now);

        let (undated, undated_total) = undated_assignments(ctx.pg(), settings.max_reported).await?;
        if undated_total > 0 {
            tracing::warn!(
                count = undated_total,
                first = ?undated.iter().map(|a| a.asgn_id).collect::<Vec<_>>(),
                "OPEN assignments without a due_dt (tb_lms_assignment.due_dt IS NULL) get no reminder until it is set"
            );
            ctx.counts.add_skipped(undated_total);
            ctx.set_detail("null_due_dt_count", undated_total);
            ctx.set_detail("null_due_dt", &undated);
        }

        let by_threshold = write_messages(ctx.pg(), now, &settings, ctx.dry_run).await?;
        let candidates: u64 = by_threshold.values().map(|c| c.candidates).sum();
        let written: u64 = by_threshold.values().map(|c| c.written).sum();
        notify::report(ctx, candidates, written);
        let by_threshold: BTreeMap<String, ThresholdCount> = by_threshold
            .into_iter()
            .map(|(m, c)| (format!("{m}m"), c))
            .collect();
        ctx.set_detail("by_threshold", by_threshold);
        Ok(())
    }
}

/// The `OPEN` assignments with a NULL `due_dt`: the first `limit` of them
/// and how many there are.
#[tracing::instrument(skip_all, err)]
pub async fn undated_assignments(
    pg: &PgPool,
    limit: u32,
) -> anyhow::Result<(Vec<UndatedAssignment>, u64)> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tb_lms_assignment WHERE status = 'OPEN' AND due_dt IS NULL",
    )
    .fetch_one(pg)
    .await
    .context("Failed to count OPEN assignments without due_dt in tb_lms_assignment")?;
    if total == 0 {
        return Ok((Vec::new(), 0));
    }
    let first = sqlx::query_as(
        "SELECT asgn_id, lecture_code, title FROM tb_lms_assignment
          WHERE status = 'OPEN' AND due_dt IS NULL ORDER BY asgn_id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pg)
    .await
    .context("Failed to list OPEN assignments without due_dt in tb_lms_assignment")?;
    Ok((first, total as u64))
}

/// The students due a message as of `now`, one row each, with its text:
/// `$1` now, `$2` thresholds (minutes), `$3` their labels, `$4`/`$5` the
/// title/body templates, `$6` the widest threshold. Templates are filled in
/// SQL; `{title}` last, so a title that happens to contain `{due}` is kept
/// as written.
const CANDIDATES: &str = "
WITH thresholds AS (
    SELECT minutes, label FROM unnest($2::int[], $3::text[]) AS t(minutes, label)
),
due AS (
    SELECT a.asgn_id, a.lecture_code, a.title, t.minutes, t.label,
           to_char(a.due_dt AT TIME ZONE 'Asia/Seoul', 'YYYY-MM-DD HH24:MI') AS due_kst
      FROM tb_lms_assignment a
     CROSS JOIN LATERAL (
           -- The nearest threshold the assignment is within.
           SELECT minutes, label FROM thresholds
            WHERE a.due_dt <= $1 + make_interval(mins => minutes)
            ORDER BY minutes LIMIT 1) t
     WHERE a.status = 'OPEN'
       AND a.due_dt > $1
       AND a.due_dt <= $1 + make_interval(mins => $6)
),
candidates AS (
    SELECT m.user_id, d.minutes,
           'asgn:' || d.asgn_id || ':' || d.minutes || 'm' AS ref_key,
           replace(replace(replace($4, '{threshold}', d.label), '{due}', d.due_kst), '{title}', d.title) AS title,
           replace(replace(replace($5, '{threshold}', d.label), '{due}', d.due_kst), '{title}', d.title) AS body
      FROM due d
      JOIN tb_lms_lecture_member m ON m.lecture_code = d.lecture_code
      JOIN tb_lms_user u ON u.user_id = m.user_id AND u.user_type = 'S' AND u.del_yn = 'N'
     WHERE NOT EXISTS (SELECT 1 FROM tb_lms_assignment_submit s
                        WHERE s.asgn_id = d.asgn_id AND s.user_id = m.user_id
                          AND s.submit_dt IS NOT NULL)
)";

/// Writes the messages due as of `now` (or, with `dry_run`, counts those not
/// yet written) in one statement; per threshold (minutes): candidates and
/// messages written (would be written).
#[tracing::instrument(skip_all, fields(%now, dry_run), err)]
pub async fn write_messages(
    pg: &PgPool,
    now: DateTime<Utc>,
    settings: &AssignmentDueSettings,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<u32, ThresholdCount>> {
    let thresholds: Vec<i32> = settings
        .thresholds_minutes
        .iter()
        .map(|&m| m as i32)
        .collect();
    let labels: Vec<String> = settings
        .thresholds_minutes
        .iter()
        .map(|&m| threshold_label(m))
        .collect();
    let widest = thresholds.iter().copied().max().unwrap_or(0);
    let tail = notify::write_or_count(MSG_TYPE, "minutes", dry_run);
    let sql = format!("{CANDIDATES} {tail}");
    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(&sql)
        .bind(now)
        .bind(&thresholds)
        .bind(&labels)
        .bind(&settings.title_template)
        .bind(&settings.body_template)
        .bind(widest)
        .fetch_all(pg)
        .await
        .context(if dry_run {
            "Failed to count the assignment-deadline messages due (tb_lms_assignment → tb_lms_ntcn_msg)"
        } else {
            "Failed to write the assignment-deadline messages (tb_lms_assignment → tb_lms_ntcn_msg)"
        })?;
    let mut out: BTreeMap<u32, ThresholdCount> = settings
        .thresholds_minutes
        .iter()
        .map(|&m| (m, ThresholdCount::default()))
        .collect();
    for (minutes, candidates, written) in rows {
        out.insert(
            minutes as u32,
            ThresholdCount {
                candidates: candidates as u64,
                written: written as u64,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::lms::notify::MessageSettings as _;

    #[test]
    fn thresholds_read_as_hours_and_minutes() {
        assert_eq!(threshold_label(1440), "24시간");
        assert_eq!(threshold_label(60), "1시간");
        assert_eq!(threshold_label(90), "1시간 30분");
        assert_eq!(threshold_label(30), "30분");
    }

    #[test]
    fn the_defaults_pass_and_each_bad_setting_names_its_key() {
        assert!(AssignmentDueSettings::default().check().is_ok());
        let with = |f: fn(&mut AssignmentDueSettings)| {
            let mut s = AssignmentDueSettings::default();
            f(&mut s);
            s.check().unwrap_err()
        };
        assert!(with(|s| s.thresholds_minutes.clear()).starts_with("thresholds_minutes"));
        assert!(with(|s| s.thresholds_minutes = vec![0]).starts_with("thresholds_minutes"));
        assert!(with(|s| s.thresholds_minutes = vec![60, 60]).contains("twice"));
        assert!(with(|s| s.body_template = "{when}".into()).starts_with("body_template"));
    }
}
