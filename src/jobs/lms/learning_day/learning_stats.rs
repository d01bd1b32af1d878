//! LMS-01-006 — daily learning statistics per student and lecture. Daily at
//! 06:00, for yesterday (Asia/Seoul).
//!
//! Writes `tb_lms_stdnt_lrn_stats_daily` for business date D: one row per
//! (active student, lecture) with activity on D — a result solved on D or a
//! session of that lecture overlapping D: `std_sys_cnt` (distinct
//! standard-system ids), `item_cnt` (distinct items), `correct_cnt` (correct
//! results), `avg_score` (NULL without results), `lrn_time_sec` (that
//! lecture's sessions clipped to D and merged, [`super`]).
//!
//! One set-based statement computes the rows; the run deletes D's rows and
//! inserts them in one transaction, so a rerun replaces D exactly.
//! Rerun: safe. `--dry-run` computes the rows and writes nothing.

use super::{session_time_ctes, DayTable};
use crate::jobs::shared::sessions::{validate_settings, LearningDaySettings};
use crate::runtime::registry::{settings_of, JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-006";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "학생 학습 통계 일배치",
    name_en: "Student learning statistics (daily)",
    about: "Reads the business date's tb_lms_lrn_result and tb_lms_lrn_session; writes tb_lms_stdnt_lrn_stats_daily: per active student and lecture with a result or a session that day, distinct standard codes and items, correct results, average score and the lecture's learning time (clipped, open sessions ended at the student's last activity, at least [jobs.lms_01_006] open_session_idle_minutes and at most open_session_max_hours, overlaps merged); a rerun replaces the day's rows.",
    schedule: Schedule::Cron("0 6 * * *"),
    lock: Lock::JobAndDate,
    settings: Some(settings_of::<LearningDaySettings>().checked_by(validate_settings)),
    job: Some(&LearningStats),
    timeouts: Timeouts::STATISTICS,
    ..JobDef::DEFAULTS
};

pub struct LearningStats;

/// The rows of D; binds as [`DayTable`]. The keys with activity are those of
/// `solved` and of `session_time` (one row per key with a session
/// overlapping D): their full join.
fn rows_sql() -> String {
    format!(
        "WITH {sessions},
         solved AS (
           SELECT user_id, lecture_code,
                  count(DISTINCT std_sys_id) AS std_sys_cnt,
                  count(DISTINCT item_id) AS item_cnt,
                  count(*) FILTER (WHERE correct_yn = 'Y') AS correct_cnt,
                  round(avg(score), 2) AS avg_score
             FROM tb_lms_lrn_result
            WHERE solved_at >= $2 AND solved_at < $3
            GROUP BY user_id, lecture_code
         )
         SELECT $1::date AS base_dt, k.user_id, k.lecture_code,
                coalesce(r.std_sys_cnt, 0)::int AS std_sys_cnt,
                coalesce(r.item_cnt, 0)::int AS item_cnt,
                coalesce(r.correct_cnt, 0)::int AS correct_cnt,
                r.avg_score,
                coalesce(t.lrn_time_sec, 0) AS lrn_time_sec
           FROM solved r
           FULL JOIN session_time t USING (user_id, lecture_code) AS k
           JOIN tb_lms_user u ON u.user_id = k.user_id AND u.user_type = 'S' AND u.del_yn = 'N'",
        sessions = session_time_ctes("user_id, lecture_code"),
    )
}

/// The table and its rows.
static TABLE: DayTable = DayTable {
    job_id: ID,
    table: "tb_lms_stdnt_lrn_stats_daily",
    columns: "base_dt, user_id, lecture_code, std_sys_cnt, item_cnt, correct_cnt, avg_score, lrn_time_sec",
    rows_sql,
    active_students: "count(DISTINCT user_id)",
    what: "learning statistics",
};

#[async_trait::async_trait]
impl Job for LearningStats {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        TABLE.run(ctx).await
    }
}
