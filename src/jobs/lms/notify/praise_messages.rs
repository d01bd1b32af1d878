//! LMS-01-005 — praise messages for business date D (default yesterday).
//! Daily at 01:00.
//!
//! Reads `tb_lms_assignment`, `tb_lms_assignment_submit`,
//! `tb_lms_lecture_member`, `tb_lms_lrn_result`, `tb_lms_lrn_session` and
//! `tb_lms_user`; writes `tb_lms_ntcn_msg`. One `PRAISE` message per active
//! student (`user_type = 'S'`, `del_yn = 'N'`) per reason, `ref_key`
//! `<D>:<reason>`, with a body that gives the figures:
//!
//! - `assignments`: every assignment due on D (KST) in the student's
//!   lectures — at least one — was submitted by its `due_dt` (`submit_dt <=
//!   due_dt`; the assignment's status does not matter, a due assignment is
//!   usually `CLOSED` by then);
//! - `avg_score`: the average score of the day's results is at least
//!   `min_avg_score` (90) over at least `min_items` (5) distinct items
//!   solved on D;
//! - `streak`: the learning streak — consecutive KST days with at least one
//!   result (`solved_at`) or session (`started_at`) — ending on D is a
//!   multiple of `streak_step_days` (7): on its 7th day, 14th, 21st, …, not
//!   every day of a long streak. Days are read back `streak_lookback_days`
//!   (400) for the students active on D; a streak that fills that whole
//!   window has no known length: it is counted as skipped (and in the
//!   details), never praised on a guess.
//!
//! D is `[D 00:00, D+1 00:00)` in Asia/Seoul. One set-based `INSERT …
//! SELECT … ON CONFLICT DO NOTHING` for all three reasons: the unique key
//! makes a rerun (or an overlapping run) write nothing twice.
//!
//! Rerun: safe. `--dry-run` counts the messages it would write and writes
//! nothing.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::jobs::lms::notify;
use crate::runtime::registry::{settings_of, JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;

pub const ID: &str = "LMS-01-005";

/// `tb_lms_ntcn_msg.msg_type` of these messages.
pub const MSG_TYPE: &str = "PRAISE";

/// The reasons, as `ref_key` spells them after the date.
pub const REASONS: [&str; 3] = ["assignments", "avg_score", "streak"];

/// This job in the registry. `Lock::JobAndDate`: a run owns the messages of
/// its date (`ref_key` starts with it), so a rerun of another day may run
/// beside it; the unique key makes even an overlap of the same day harmless.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "학습 관리 시스템 칭찬 알림메세지 생성 일배치",
    name_en: "Create praise notifications (daily)",
    about: "Reads the business date's (default yesterday) assignments and submissions, tb_lms_lrn_result and tb_lms_lrn_session; writes PRAISE messages into tb_lms_ntcn_msg: every assignment due that day submitted on time, an average score of at least 90 over at least 5 items, a learning streak reaching a multiple of 7 days ([jobs.lms_01_005]); a rerun writes nothing twice.",
    schedule: Schedule::Cron("0 1 * * *"),
    lock: Lock::JobAndDate,
    settings: Some(settings_of::<PraiseSettings>().checked_by(notify::validate::<PraiseSettings>)),
    job: Some(&PraiseMessages),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

/// `[jobs.lms_01_005]`. Every template may use `{date}` (D, `3월 5일`);
/// the assignment ones `{count}`, the score ones `{avg}` and `{items}`,
/// the streak ones `{days}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PraiseSettings {
    pub min_avg_score: f64,
    pub min_items: u32,
    pub streak_step_days: u32,
    pub streak_lookback_days: u32,
    pub assignments_title: String,
    pub assignments_body: String,
    pub avg_score_title: String,
    pub avg_score_body: String,
    pub streak_title: String,
    pub streak_body: String,
}

impl Default for PraiseSettings {
    fn default() -> Self {
        Self {
            min_avg_score: 90.0,
            min_items: 5,
            streak_step_days: 7,
            streak_lookback_days: 400,
            assignments_title: "과제를 모두 제출했어요!".into(),
            assignments_body:
                "{date}에 마감된 과제 {count}개를 모두 기한 안에 제출했어요. 정말 잘했어요!".into(),
            avg_score_title: "평균 {avg}점, 훌륭해요!".into(),
            avg_score_body: "{date}에 푼 문항 {items}개의 평균 점수가 {avg}점이에요. 멋져요!"
                .into(),
            streak_title: "{days}일 연속 학습 달성!".into(),
            streak_body: "{date}까지 {days}일 연속으로 학습했어요. 꾸준함이 최고예요!".into(),
        }
    }
}

/// The longest look-back accepted, about ten years.
const MAX_LOOKBACK_DAYS: u32 = 3660;

impl notify::MessageSettings for PraiseSettings {
    fn check(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.min_avg_score) {
            return Err(format!(
                "min_avg_score: {} is not a score (0..=100)",
                self.min_avg_score
            ));
        }
        if self.min_items == 0 {
            return Err("min_items: must be at least 1".into());
        }
        if self.streak_step_days < 2 {
            return Err(
                "streak_step_days: must be at least 2 (1 would praise every day of learning)"
                    .into(),
            );
        }
        if self.streak_lookback_days <= self.streak_step_days
            || self.streak_lookback_days > MAX_LOOKBACK_DAYS
        {
            return Err(format!(
                "streak_lookback_days: {} must be more than streak_step_days ({}) and at most {MAX_LOOKBACK_DAYS}",
                self.streak_lookback_days, self.streak_step_days
            ));
        }
        for (key, template, known) in [
            (
                "assignments_title",
                &self.assignments_title,
                &["date", "count"][..],
            ),
            (
                "assignments_body",
                &self.assignments_body,
                &["date", "count"],
            ),
            (
                "avg_score_title",
                &self.avg_score_title,
                &["date", "avg", "items"],
            ),
            (
                "avg_score_body",
                &self.avg_score_body,
                &["date", "avg", "items"],
            ),
            ("streak_title", &self.streak_title, &["date", "days"]),
            ("streak_body", &self.streak_body, &["date", "days"]),
        ] {
            notify::check(key, template, known)?;
        }
        Ok(())
    }
}

/// Messages of one reason: students who earned it, and messages written.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ReasonCount {
    pub candidates: u64,
    pub written: u64,
}

/// What one run found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PraiseOutcome {
    pub by_reason: BTreeMap<String, ReasonCount>,
    /// Streaks as long as the whole look-back window: length unknown.
    pub streaks_beyond_lookback: u64,
}

pub struct PraiseMessages;

#[async_trait::async_trait]
impl Job for PraiseMessages {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: PraiseSettings = notify::settings(ctx)?;
        let outcome = write_praise(ctx.pg(), ctx.business_date, &settings, ctx.dry_run).await?;
        let candidates: u64 = outcome.by_reason.values().map(|c| c.candidates).sum();
        let written: u64 = outcome.by_reason.values().map(|c| c.written).sum();
        notify::report(ctx, candidates, written);
        if outcome.streaks_beyond_lookback > 0 {
            tracing::warn!(
                students = outcome.streaks_beyond_lookback,
                lookback_days = settings.streak_lookback_days,
                "learning streaks fill the whole look-back window: their length is unknown, no streak praise for them ([jobs.lms_01_005] streak_lookback_days)"
            );
            ctx.counts.add_skipped(outcome.streaks_beyond_lookback);
        }
        ctx.set_detail("by_reason", &outcome.by_reason);
        ctx.set_detail("streaks_beyond_lookback", outcome.streaks_beyond_lookback);
        Ok(())
    }
}

/// The praise each active student earned on `$1` (D), with its text: `$2`
/// D 00:00 KST, `$3` D+1 00:00 KST, `$4` min_avg_score, `$5` min_items,
/// `$6` streak_step_days, `$7` the look-back's first instant, `$8` its
/// length in days, `$9..$14` the templates. `streaks` counts, per student
/// active on D, the days d (newest first, numbered rn from 1) with
/// `d + rn = D + 1`: exactly the unbroken run of days ending on D (after the
/// first gap `d + rn` stays below it).
const CANDIDATES: &str = "
WITH day AS (
    SELECT to_char($1::date, 'FMMM\"월\" FMDD\"일\"') AS label
),
students AS (
    SELECT user_id FROM tb_lms_user WHERE user_type = 'S' AND del_yn = 'N'
),
due_on_d AS (
    SELECT m.user_id, count(*) AS due_cnt,
           count(*) FILTER (WHERE s.submit_dt IS NOT NULL AND s.submit_dt <= a.due_dt) AS on_time_cnt
      FROM tb_lms_assignment a
      JOIN tb_lms_lecture_member m ON m.lecture_code = a.lecture_code
      LEFT JOIN tb_lms_assignment_submit s ON s.asgn_id = a.asgn_id AND s.user_id = m.user_id
     WHERE a.due_dt >= $2 AND a.due_dt < $3
     GROUP BY m.user_id
),
scores AS (
    SELECT user_id, count(DISTINCT item_id) AS items, avg(score) AS avg_score
      FROM tb_lms_lrn_result
     WHERE solved_at >= $2 AND solved_at < $3
     GROUP BY user_id
),
active_on_d AS (
    SELECT user_id FROM tb_lms_lrn_result WHERE solved_at >= $2 AND solved_at < $3
    UNION
    SELECT user_id FROM tb_lms_lrn_session WHERE started_at >= $2 AND started_at < $3
),
learning_days AS (
    SELECT r.user_id, (r.solved_at AT TIME ZONE 'Asia/Seoul')::date AS d
      FROM tb_lms_lrn_result r JOIN active_on_d USING (user_id)
     WHERE r.solved_at >= $7 AND r.solved_at < $3
    UNION
    SELECT s.user_id, (s.started_at AT TIME ZONE 'Asia/Seoul')::date
      FROM tb_lms_lrn_session s JOIN active_on_d USING (user_id)
     WHERE s.started_at >= $7 AND s.started_at < $3
),
streaks AS (
    SELECT user_id, count(*) FILTER (WHERE d + rn::int = $1::date + 1) AS days
      FROM (SELECT user_id, d, row_number() OVER (PARTITION BY user_id ORDER BY d DESC) AS rn
              FROM learning_days) numbered
     GROUP BY user_id
),
earned AS (
    SELECT d.user_id, 'assignments' AS reason,
           replace(replace($9, '{date}', day.label), '{count}', d.due_cnt::text) AS title,
           replace(replace($10, '{date}', day.label), '{count}', d.due_cnt::text) AS body
      FROM due_on_d d JOIN students USING (user_id), day
     WHERE d.due_cnt = d.on_time_cnt
    UNION ALL
    SELECT c.user_id, 'avg_score',
           replace(replace(replace($11, '{date}', day.label), '{avg}', c.avg_txt), '{items}', c.items::text),
           replace(replace(replace($12, '{date}', day.label), '{avg}', c.avg_txt), '{items}', c.items::text)
      FROM (SELECT user_id, items, trim_scale(round(avg_score, 1))::text AS avg_txt
              FROM scores WHERE items >= $5 AND avg_score >= $4::numeric) c
      JOIN students USING (user_id), day
    UNION ALL
    SELECT k.user_id, 'streak',
           replace(replace($13, '{date}', day.label), '{days}', k.days::text),
           replace(replace($14, '{date}', day.label), '{days}', k.days::text)
      FROM streaks k JOIN students USING (user_id), day
     WHERE k.days % $6 = 0 AND k.days < $8
),
candidates AS (
    SELECT user_id, reason, to_char($1::date, 'YYYY-MM-DD') || ':' || reason AS ref_key, title, body
      FROM earned
)";

/// Writes D's praise (or, with `dry_run`, counts what is not yet written)
/// in one statement.
#[tracing::instrument(skip_all, fields(%date, dry_run), err)]
pub async fn write_praise(
    pg: &PgPool,
    date: NaiveDate,
    settings: &PraiseSettings,
    dry_run: bool,
) -> anyhow::Result<PraiseOutcome> {
    let next = date.succ_opt().context("business date out of range")?;
    let lookback_first = date
        .checked_sub_days(Days::new(u64::from(settings.streak_lookback_days) - 1))
        .context("streak look-back out of range")?;
    let tail = notify::write_or_count(MSG_TYPE, "reason", dry_run);
    // The streaks no window can measure, reported beside the reasons.
    let sql = format!(
        "{CANDIDATES} {tail}
         UNION ALL
         SELECT 'beyond_lookback', count(*), 0 FROM streaks k JOIN students USING (user_id)
          WHERE k.days >= $8"
    );
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(&sql)
        .bind(date)
        .bind(time::start_of_day_seoul(date))
        .bind(time::start_of_day_seoul(next))
        .bind(settings.min_avg_score)
        .bind(settings.min_items as i32)
        .bind(settings.streak_step_days as i32)
        .bind(time::start_of_day_seoul(lookback_first))
        .bind(settings.streak_lookback_days as i32)
        .bind(&settings.assignments_title)
        .bind(&settings.assignments_body)
        .bind(&settings.avg_score_title)
        .bind(&settings.avg_score_body)
        .bind(&settings.streak_title)
        .bind(&settings.streak_body)
        .fetch_all(pg)
        .await
        .with_context(|| {
            format!(
                "Failed to {} the praise messages of {date} (tb_lms_lrn_result, tb_lms_lrn_session, tb_lms_assignment → tb_lms_ntcn_msg)",
                if dry_run { "count" } else { "write" }
            )
        })?;
    let mut outcome = PraiseOutcome {
        by_reason: REASONS
            .iter()
            .map(|r| (r.to_string(), ReasonCount::default()))
            .collect(),
        streaks_beyond_lookback: 0,
    };
    for (reason, candidates, written) in rows {
        if reason == "beyond_lookback" {
            outcome.streaks_beyond_lookback = candidates as u64;
        } else {
            outcome.by_reason.insert(
                reason,
                ReasonCount {
                    candidates: candidates as u64,
                    written: written as u64,
                },
            );
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::lms::notify::MessageSettings as _;

    #[test]
    fn the_defaults_pass_and_each_bad_setting_names_its_key() {
        assert!(PraiseSettings::default().check().is_ok());
        let with = |f: fn(&mut PraiseSettings)| {
            let mut s = PraiseSettings::default();
            f(&mut s);
            s.check().unwrap_err()
        };
        assert!(with(|s| s.min_avg_score = 101.0).starts_with("min_avg_score"));
        assert!(with(|s| s.min_items = 0).starts_with("min_items"));
        assert!(with(|s| s.streak_step_days = 1).starts_with("streak_step_days"));
        assert!(with(|s| s.streak_lookback_days = 7).starts_with("streak_lookback_days"));
        assert!(with(|s| s.streak_body = "{count}".into()).starts_with("streak_body"));
    }
}
