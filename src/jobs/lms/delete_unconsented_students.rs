//! LMS-01-007 — delete the personal data of students without consent.
//!
//! For every student of the set defined in [`crate::jobs::shared::privacy`] (no
//! `PRVC_PROVIDE` consent, grace period `[jobs.privacy] grace_days` passed
//! as of the reference time): clears `user_nm` and `email` and sets
//! `del_yn = 'Y'` in `tb_lms_user`, and deletes the student's rows in
//! [`TABLES`]. Lecture membership (`tb_lms_lecture_member`) and aggregate
//! statistics without a user id stay; nothing else is touched. Daily at 03:30.
//!
//! Students go in batches of `batch_size`; a batch — selection, every
//! delete, the user update and the audit row's update — is one transaction,
//! all or nothing. `pause_ms` between batches; a stop request ends the run
//! between batches.
//!
//! Rerun: safe. The set ignores `del_yn`, so the run after a killed one
//! finishes what is left and a run with nothing left changes nothing. The
//! students of a committed batch are recorded complete in the same
//! transaction (`batch_privacy_completed`, by salted hash) and later runs do
//! not probe them again; `students_already_complete` in the details counts
//! them, `students_in_set` counts the students probed.
//! Then the sweep: rows written for recorded students after their deletion
//! (and a `tb_lms_user` row given a name again) are deleted in one
//! transaction, one set-based statement per table ([`privacy::load_swept`];
//! `students_swept` and `swept` in the details). A student who consented
//! again is out of the set and keeps new rows.
//! `--dry-run` counts per table what would change (in the run's details) and
//! changes nothing. Each real run writes a `batch_privacy_audit` row: counts
//! per table and salted hashes of the students changed — never ids, names or
//! e-mails, here or in the logs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::jobs::shared::privacy::{
    self, ConsentRule, Recorded, RunFigures, SkipCompleted, Students, Tally,
};
use crate::runtime::registry::{DefaultDate, JobDef, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-007";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "개인정보 제공 미동의 학생정보 삭제 일배치",
    name_en: "Delete data of students without consent (daily)",
    about: "Clears the name and e-mail (tb_lms_user) of every student without PRVC_PROVIDE consent whose grace period ([jobs.privacy] grace_days) has passed, marks them deleted and deletes their LMS rows, one transaction per batch; writes a privacy audit row of counts and salted hashes.",
    schedule: Schedule::Cron("30 3 * * *"),
    default_date: DefaultDate::Today,
    job: Some(&DeleteUnconsentedStudents),
    timeouts: Timeouts::DELETION,
    ..JobDef::DEFAULTS
};

/// The student's rows deleted outright, all keyed by `user_id`. The
/// contract's list, in its order; lecture membership is deliberately absent.
pub const TABLES: [&str; 11] = [
    "tb_lms_lrn_result",
    "tb_lms_lrn_session",
    "tb_lms_lrn_progress",
    "tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys",
    "tb_lms_keris_token",
    "tb_lms_assignment_submit",
    "tb_lms_ntcn_msg",
    "tb_lms_stdnt_cmpt_idx_daily",
    "tb_lms_stdnt_lrn_stats_daily",
    "tb_lms_access_log",
    "tb_lms_login_hist",
];

/// The key under which cleared `tb_lms_user` rows are counted.
pub const USER_TABLE: &str = "tb_lms_user";

pub struct DeleteUnconsentedStudents;

/// Rows changed per table by this date's runs so far: the checkpoint, so a
/// killed run's history shows how far it got. Deliberately no student id.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Progress {
    changed: BTreeMap<String, u64>,
}

#[async_trait::async_trait]
impl Job for DeleteUnconsentedStudents {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings = &ctx.settings().jobs.privacy;
        let (salt, rule) = privacy::start_run(ctx, ID).await?;
        let mut progress: Progress = ctx.load_checkpoint().await?.unwrap_or_default();
        let mut figures = RunFigures::default();
        let skip = SkipCompleted {
            job_id: ID,
            salt: &salt,
        };
        let mut after: Option<Uuid> = None;
        loop {
            ctx.stop_point()?;
            let mut tx = ctx
                .pg()
                .begin()
                .await
                .context("Failed to begin a batch transaction")?;
            let candidates = privacy::next_candidates(
                &mut tx,
                &rule,
                Recorded::Not(skip),
                after,
                settings.batch_size,
            )
            .await?;
            let students: Vec<Uuid> = candidates.iter().map(|c| c.user_id).collect();
            let Some(last) = students.last().copied() else {
                break;
            };
            after = Some(last);
            let batch = erase_students(&mut tx, Students::Listed(&students), ctx.dry_run).await?;
            // Every table of the job is done for the whole batch once it commits.
            figures
                .end_batch(
                    ctx,
                    ID,
                    &salt,
                    tx,
                    batch,
                    &candidates,
                    &mut progress.changed,
                )
                .await?;
            ctx.save_checkpoint(&progress).await?;
            if students.len() < settings.batch_size as usize {
                break;
            }
            ctx.pause(Duration::from_millis(settings.pause_ms)).await;
        }
        ctx.stop_point()?;
        sweep(ctx, skip, &rule, &mut figures, &mut progress.changed).await?;
        ctx.save_checkpoint(&progress).await?;
        figures.report(ctx, "change", &progress.changed);
        Ok(())
    }
}

/// The sweep: rows written for students recorded complete, after their
/// deletion — set-based, one statement per table against the swept students
/// ([`privacy::load_swept`]), one transaction with the audit.
#[tracing::instrument(skip_all, err)]
async fn sweep(
    ctx: &JobContext,
    recorded: SkipCompleted<'_>,
    rule: &ConsentRule,
    figures: &mut RunFigures,
    so_far: &mut BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let mut tx = ctx
        .pg()
        .begin()
        .await
        .context("Failed to begin the sweep's transaction")?;
    let swept = privacy::load_swept(&mut tx, rule, recorded).await?;
    ctx.set_detail("students_swept", swept);
    let batch = erase_students(&mut tx, Students::Swept, ctx.dry_run).await?;
    figures
        .end_sweep(ctx, ID, recorded.salt, tx, batch, so_far)
        .await
}

/// Deletes the rows of `students` in every table of [`TABLES`] and clears
/// their `tb_lms_user` rows — or, for a dry run, counts what would change.
/// The caller owns the transaction.
#[tracing::instrument(skip_all, fields(dry_run), err)]
pub async fn erase_students(
    conn: &mut PgConnection,
    students: Students<'_>,
    dry_run: bool,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    for table in TABLES {
        let rows = privacy::delete_rows(conn, table, students, dry_run).await?;
        tally.add(table, &rows);
    }
    let cleared = clear_users(conn, students, dry_run).await?;
    tally.add(
        USER_TABLE,
        &cleared.into_iter().map(|id| (id, 1)).collect::<Vec<_>>(),
    );
    Ok(tally)
}

/// Clears name and e-mail and sets `del_yn = 'Y'` of the students whose row
/// still needs it (the LMS may write a name again after the deletion);
/// returns them. Only students: the type is checked again.
async fn clear_users(
    conn: &mut PgConnection,
    students: Students<'_>,
    dry_run: bool,
) -> anyhow::Result<Vec<Uuid>> {
    let needs_it = format!(
        "{} AND user_type = 'S' AND (user_nm IS NOT NULL OR email IS NOT NULL OR del_yn <> 'Y')",
        students.condition()
    );
    let sql = if dry_run {
        format!("SELECT user_id FROM tb_lms_user WHERE {needs_it}")
    } else {
        format!("UPDATE tb_lms_user SET user_nm = NULL, email = NULL, del_yn = 'Y' WHERE {needs_it} RETURNING user_id")
    };
    let rows: Vec<(Uuid,)> = students
        .bind(sqlx::query_as(&sql))
        .fetch_all(conn)
        .await
        .context("Failed to clear the personal data of students in tb_lms_user")?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
