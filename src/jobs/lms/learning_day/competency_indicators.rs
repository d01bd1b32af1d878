//! LMS-01-002 — daily student competency indicators. Daily at 04:10, for
//! yesterday (Asia/Seoul).
//!
//! Writes `tb_lms_stdnt_cmpt_idx_daily` for business date D: one row per
//! active student (`user_type = 'S'`, `del_yn = 'N'`) who is a member of at
//! least one lecture, also for a student with no activity on D (zeros,
//! `attend_yn = 'N'`), so teachers see who was absent:
//! - `lrn_time_sec`: the student's sessions of every lecture, clipped to D and
//!   merged ([`super`]);
//! - `solved_cnt`: results solved on D; `correct_rate`: correct / solved in
//!   percent (0–100, two decimals, like scores), NULL when nothing was solved;
//! - `asgn_submit_rate`: of the assignments due on D in the student's
//!   lectures, the percentage submitted by `due_dt`; NULL when none was due;
//! - `attend_yn`: `Y` when any session overlaps D or any result is on D.
//!
//! One set-based statement computes the rows; the run deletes D's rows and
//! inserts them in one transaction, so a rerun replaces D exactly (a student
//! deleted since loses the row) and readers see either the old day or the
//! new one. Rerun: safe. `--dry-run` computes the rows and writes nothing.

use super::{session_time_ctes, DayTable};
use crate::jobs::shared::sessions::{validate_settings, LearningDaySettings};
use crate::runtime::registry::{settings_of, JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-002";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "학생역량지표 일일 데이터 저장 일배치",
    name_en: "Save daily student competency indicators",
    about: "Reads the business date's tb_lms_lrn_session, tb_lms_lrn_result and tb_lms_assignment_submit; writes tb_lms_stdnt_cmpt_idx_daily: per active lecture member, learning time (sessions clipped to the day, open ones ended at the student's last activity, at least [jobs.lms_01_002] open_session_idle_minutes and at most open_session_max_hours, overlaps merged), results solved, correct rate, assignment submit rate, attendance; a rerun replaces the day's rows.",
    schedule: Schedule::Cron("10 4 * * *"),
    lock: Lock::JobAndDate,
    settings: Some(settings_of::<LearningDaySettings>().checked_by(validate_settings)),
    job: Some(&CompetencyIndicators),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

pub struct CompetencyIndicators;

/// The rows of D; binds as [`DayTable`]. `members` is one pass over the
/// lecture members: the students to write (with a user row, below) and the
/// assignments due on D in their lectures (`due_cnt` 0, so a NULL rate, when
/// none). A student has a `session_time` row exactly when a session overlaps
/// D, which makes `attend_yn`.
fn rows_sql() -> String {
    format!(
        "WITH {sessions},
         members AS (
           SELECT m.user_id, count(a.asgn_id) AS due_cnt,
                  count(*) FILTER (WHERE s.submit_dt <= a.due_dt) AS submitted_cnt
             FROM tb_lms_lecture_member m
             LEFT JOIN tb_lms_assignment a
               ON a.lecture_code = m.lecture_code AND a.due_dt >= $2 AND a.due_dt < $3
             LEFT JOIN tb_lms_assignment_submit s
               ON s.asgn_id = a.asgn_id AND s.user_id = m.user_id
            GROUP BY m.user_id
         ),
         solved AS (
           SELECT user_id, count(*) AS solved_cnt,
                  count(*) FILTER (WHERE correct_yn = 'Y') AS correct_cnt
             FROM tb_lms_lrn_result
            WHERE solved_at >= $2 AND solved_at < $3
            GROUP BY user_id
         )
         SELECT $1::date AS base_dt, st.user_id,
                coalesce(t.lrn_time_sec, 0) AS lrn_time_sec,
                coalesce(r.solved_cnt, 0)::int AS solved_cnt,
                round(100.0 * r.correct_cnt / nullif(r.solved_cnt, 0), 2) AS correct_rate,
                round(100.0 * mb.submitted_cnt / nullif(mb.due_cnt, 0), 2) AS asgn_submit_rate,
                CASE WHEN t.user_id IS NOT NULL OR r.user_id IS NOT NULL THEN 'Y' ELSE 'N' END AS attend_yn
           FROM members mb
           JOIN tb_lms_user st
             ON st.user_id = mb.user_id AND st.user_type = 'S' AND st.del_yn = 'N'
           LEFT JOIN session_time t ON t.user_id = st.user_id
           LEFT JOIN solved r ON r.user_id = st.user_id",
        sessions = session_time_ctes("user_id"),
    )
}

/// The table and its rows.
static TABLE: DayTable = DayTable {
    job_id: ID,
    table: "tb_lms_stdnt_cmpt_idx_daily",
    columns:
        "base_dt, user_id, lrn_time_sec, solved_cnt, correct_rate, asgn_submit_rate, attend_yn",
    rows_sql,
    active_students: "count(*) FILTER (WHERE attend_yn = 'Y')",
    what: "competency indicators",
};

#[async_trait::async_trait]
impl Job for CompetencyIndicators {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        TABLE.run(ctx).await
    }
}
