//! DC-01-004 — KERIS achievement-level update.
//!
//! Completes `tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys` for KERIS:
//! 1. creates the rows missing for every lecture member and standard-system
//!    id of the lecture's course (`tb_lms_course_std_sys`) the student has
//!    results for (score = the student's average on that id, level from the
//!    spec's cut-offs, progress from `tb_lms_lrn_progress`);
//! 2. fills every NULL `achievement_level` of a row that has a score;
//! 3. sends API-005 (score) for the rows it created or changed, through
//!    LMS-01-008's sender ([`dashboard::send_scores`]): same token and
//!    partner resolution, skips, failure handling and `keris_sent_at` rule.
//!
//! Daily at 04:50, after LMS-01-008's 04:00 run refreshed the view, so only
//! what that refresh cannot produce is left here.
//!
//! Rerun: safe; a second run finds nothing missing or NULL and sends nothing
//! new (rows whose send failed stay pending for the next run of either job).
//! `--dry-run` creates and fills in a rolled-back transaction, reports the
//! counts and sends nothing.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::jobs::shared::dashboard::{self, level_sql, school_level_sql, DashboardSender};
use crate::runtime::registry::{
    DefaultDate, JobDef, KerisFigures, Lock, Schedule, System, Timeouts,
};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "DC-01-004";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Dc,
    name_ko: "KERIS 성취 수준 업데이트",
    name_en: "KERIS achievement-level update",
    about: "Creates the missing rows of the teacher view tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys for every lecture member and standard-system id of the course (tb_lms_course_std_sys) the student has results for, fills the achievement levels left NULL, and sends their scores to KERIS (API-005).",
    schedule: Schedule::Cron("50 4 * * *"),
    schedule_note: Some("the seed leaves it undecided (미정, temporary job); daily at dawn after LMS-01-008's 04:00 run refreshed the view, so it only creates the rows and fills the levels that refresh left missing, then sends their scores (API-005)"),
    default_date: DefaultDate::Today,
    lock: Lock::Group(crate::jobs::KERIS_DASHBOARD_LOCK),
    lock_wait_secs: 1800,
    job: Some(&AchievementLevels),
    timeouts: Timeouts::STATISTICS,
    keris_figures: Some(KerisFigures {
        unit: "calls",
        accepted: &["sent"],
    }),
    ..JobDef::DEFAULTS
};

pub struct AchievementLevels;

#[async_trait::async_trait]
impl Job for AchievementLevels {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let stamp = Utc::now();
        let mut tx = ctx.pg().begin().await?;
        let created = create_missing_rows(&mut tx, stamp).await?;
        let filled = fill_missing_levels(&mut tx, stamp).await?;
        ctx.counts.add_read(created + filled);
        if ctx.dry_run {
            tx.rollback().await?;
            ctx.set_detail("would_create_rows", created);
            ctx.set_detail("would_fill_levels", filled);
            return Ok(());
        }
        tx.commit().await?;
        tracing::info!(created, filled, "achievement levels completed");
        ctx.set_detail("created_rows", created);
        ctx.set_detail("filled_levels", filled);

        let sender = DashboardSender::new(ctx)?;
        let outcome = dashboard::send_scores(&sender, ctx.pg(), Some(stamp)).await;
        sender.finish();
        outcome
    }
}

/// Inserts the view rows missing for lecture members' standard-system ids
/// with results; returns how many. Their `upd_dt` is `stamp`.
#[tracing::instrument(skip_all, err)]
pub async fn create_missing_rows(
    conn: &mut PgConnection,
    stamp: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let level = level_sql(
        &school_level_sql("src.user_id", "src.std_sys_id"),
        "src.score",
    );
    let sql = format!(
        "WITH wanted AS (
             -- one lecture per (student, id): the first by code when a student is in several
             SELECT DISTINCT ON (m.user_id, cs.std_sys_id) m.user_id, cs.std_sys_id, m.lecture_code, l.teacher_id
               FROM tb_lms_lecture_member m
               JOIN tb_lms_lecture l ON l.lecture_code = m.lecture_code
               JOIN tb_lms_course_std_sys cs ON cs.course_id = l.course_id
              WHERE NOT EXISTS (SELECT 1 FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys v
                                 WHERE v.user_id = m.user_id AND v.std_sys_id = cs.std_sys_id)
              ORDER BY m.user_id, cs.std_sys_id, m.lecture_code
         ), src AS (
             SELECT w.user_id, w.std_sys_id, w.lecture_code, w.teacher_id, sc.score, p.progress_rate,
                    CASE WHEN p.completed_at IS NULL THEN 'N' ELSE 'Y' END AS completed_yn
               FROM wanted w
               JOIN LATERAL (SELECT round(avg(r.score), 2) AS score FROM tb_lms_lrn_result r
                              WHERE r.user_id = w.user_id AND r.std_sys_id = w.std_sys_id) sc ON sc.score IS NOT NULL
               LEFT JOIN tb_lms_lrn_progress p ON p.user_id = w.user_id AND p.std_sys_id = w.std_sys_id
         )
         INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys
                (user_id, std_sys_id, lecture_code, teacher_id, score, achievement_level, progress_rate, completed_yn, upd_dt)
         SELECT src.user_id, src.std_sys_id, src.lecture_code, src.teacher_id, src.score, {level},
                src.progress_rate, src.completed_yn, $1
           FROM src
         ON CONFLICT (user_id, std_sys_id) DO NOTHING"
    );
    let done =
        sqlx::query(&sql).bind(stamp).execute(conn).await.context(
            "Failed to create missing rows of tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys",
        )?;
    Ok(done.rows_affected())
}

/// Sets the achievement level of every row with a score and no level;
/// returns how many. Their `upd_dt` becomes `stamp`.
#[tracing::instrument(skip_all, err)]
pub async fn fill_missing_levels(
    conn: &mut PgConnection,
    stamp: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let level = level_sql(&school_level_sql("v.user_id", "v.std_sys_id"), "v.score");
    let sql = format!(
        "UPDATE tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys v
            SET achievement_level = {level}, upd_dt = $1
          WHERE v.achievement_level IS NULL AND v.score IS NOT NULL AND {level} IS NOT NULL"
    );
    let done = sqlx::query(&sql).bind(stamp).execute(conn).await.context(
        "Failed to fill achievement levels in tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys",
    )?;
    Ok(done.rows_affected())
}
