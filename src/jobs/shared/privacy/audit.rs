//! What a privacy run records: its audit row (counts, the hashes of the
//! students of each committed batch, the swept rows), and the figures it
//! keeps across its batches.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    audit_salt, count_completed, record_completed, student_hash, Candidate, ConsentRule,
    SkipCompleted, Tally,
};

/// Sets the run's swept rows per table so far (`swept_counts` of its audit
/// row), in the transaction that commits them. They are in `counts` too.
pub async fn record_swept(
    conn: &mut PgConnection,
    run_id: i64,
    late: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE batch_privacy_audit SET swept_counts = $2, updated_at = now() WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(serde_json::to_value(late)?)
    .execute(conn)
    .await
    .context("Failed to record the sweep's rows in batch_privacy_audit")?;
    Ok(())
}

/// The start every privacy run shares: the salt (the job refuses to run
/// without one), this run's rule (also in the run's details), unless a dry
/// run the audit row, and the count of students `job_id` already recorded
/// as complete (detail `students_already_complete`: the ones this run
/// leaves out, see [`SkipCompleted`]).
pub async fn start_run(
    ctx: &crate::runtime::JobContext,
    job_id: &str,
) -> anyhow::Result<(String, ConsentRule)> {
    let settings = &ctx.settings().jobs.privacy;
    let salt = audit_salt(settings)?;
    let rule = ConsentRule {
        reference_time: ctx.reference_time(),
        grace_days: settings.grace_days,
    };
    ctx.set_detail("grace_days", settings.grace_days);
    ctx.set_detail("cutoff", rule.cutoff());
    if !ctx.dry_run {
        start_audit(ctx.pg(), ctx.run_id, job_id, ctx.business_date, &rule).await?;
    }
    let mut conn = ctx
        .pg()
        .acquire()
        .await
        .context("Failed to get a PostgreSQL connection")?;
    let skip = SkipCompleted {
        job_id,
        salt: &salt,
    };
    let already_complete = count_completed(&mut conn, &rule, skip).await?;
    ctx.set_detail("students_already_complete", already_complete);
    Ok((salt, rule))
}

/// Creates the run's audit row (empty); batches fill it in.
async fn start_audit(
    pg: &PgPool,
    run_id: i64,
    job_id: &str,
    business_date: chrono::NaiveDate,
    rule: &ConsentRule,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO batch_privacy_audit (run_id, job_id, business_date, dry_run, reference_time, grace_days)
         VALUES ($1, $2, $3, false, $4, $5)
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(run_id)
    .bind(job_id)
    .bind(business_date)
    .bind(rule.reference_time)
    .bind(rule.grace_days as i32)
    .execute(pg)
    .await
    .context("Failed to create the run's row in batch_privacy_audit")?;
    Ok(())
}

/// Records a committed batch: the run's counts so far and the hashes of the
/// batch's students. Called in the batch's own transaction where it has one.
pub async fn record_batch(
    conn: &mut PgConnection,
    run_id: i64,
    run_counts: &BTreeMap<String, u64>,
    hashes: &[String],
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE batch_privacy_audit
            SET counts = $2,
                -- Kept sorted, so the order says nothing about ids or batches.
                student_hashes = ARRAY(SELECT DISTINCT h FROM unnest(student_hashes || $3) h ORDER BY h),
                updated_at = now()
          WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(serde_json::to_value(run_counts)?)
    .bind(hashes)
    .execute(conn)
    .await
    .context("Failed to record a batch in batch_privacy_audit")?;
    Ok(())
}

/// A privacy run's figures across its batches, and the end of a batch that
/// both jobs share.
#[derive(Debug, Default)]
pub struct RunFigures {
    /// Rows (documents) per table (collection) this run, and their students.
    pub run: Tally,
    /// Students probed this run (those recorded complete earlier are not).
    pub students_seen: u64,
    /// Students this run recorded as complete.
    pub recorded: u64,
    /// What the sweep found: rows written after a recorded deletion (also
    /// in `run`).
    pub swept: Tally,
}

impl RunFigures {
    /// Ends a batch whose deletions `batch` tallies in `tx`: for real, the
    /// audit's counts and hashes and the batch's completed students go in the
    /// same transaction, which commits (a kill before leaves the whole batch
    /// to the next run), and `so_far` (the checkpoint's totals per table)
    /// grows; a dry run rolls back. The caller saves its checkpoint after.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_batch(
        &mut self,
        ctx: &crate::runtime::JobContext,
        job_id: &str,
        salt: &str,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        batch: Tally,
        candidates: &[Candidate],
        so_far: &mut BTreeMap<String, u64>,
    ) -> anyhow::Result<()> {
        self.run.merge(&batch);
        if ctx.dry_run {
            tx.rollback()
                .await
                .context("Failed to roll back a dry-run batch")?;
        } else {
            let hashes = hashes(salt, &batch.students);
            record_batch(&mut tx, ctx.run_id, &self.run.counts, &hashes).await?;
            record_completed(&mut tx, job_id, ctx.run_id, salt, candidates).await?;
            self.recorded += candidates.len() as u64;
            tx.commit()
                .await
                .with_context(|| format!("{job_id}: Failed to commit a batch of deletions"))?;
            ctx.counts.add_written(batch.total());
            for (table, n) in &batch.counts {
                *so_far.entry(table.clone()).or_default() += n;
            }
        }
        self.students_seen += candidates.len() as u64;
        ctx.counts.add_read(candidates.len() as u64);
        tracing::info!(
            students = candidates.len(),
            changed_students = batch.students.len(),
            rows = batch.total(),
            "batch done"
        );
        Ok(())
    }

    /// Ends the sweep's batch (rows of students recorded complete earlier;
    /// no one is recorded again): like [`RunFigures::end_batch`], and the
    /// audit's `swept_counts` in the same transaction.
    pub async fn end_sweep(
        &mut self,
        ctx: &crate::runtime::JobContext,
        job_id: &str,
        salt: &str,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        batch: Tally,
        so_far: &mut BTreeMap<String, u64>,
    ) -> anyhow::Result<()> {
        self.swept.merge(&batch);
        if !ctx.dry_run {
            record_swept(&mut tx, ctx.run_id, &self.swept.counts).await?;
        }
        self.end_batch(ctx, job_id, salt, tx, batch, &[], so_far)
            .await
    }

    /// The run's details: students probed, recorded and changed, rows per
    /// table as `{verb}d` (`would_{verb}` when dry), of which the sweep's as
    /// `swept` (`would_sweep`), and, for real, the date's totals so far as
    /// `{verb}d_including_earlier_runs`.
    pub fn report(
        &self,
        ctx: &crate::runtime::JobContext,
        verb: &str,
        so_far: &BTreeMap<String, u64>,
    ) {
        ctx.set_detail("students_in_set", self.students_seen);
        if !ctx.dry_run {
            ctx.set_detail("students_recorded_complete", self.recorded);
        }
        ctx.set_detail("students_changed", self.run.students.len());
        ctx.set_detail("students_swept_changed", self.swept.students.len());
        if ctx.dry_run {
            ctx.set_detail(&format!("would_{verb}"), &self.run.counts);
            ctx.set_detail("would_sweep", &self.swept.counts);
        } else {
            ctx.set_detail("swept", &self.swept.counts);
            ctx.set_detail(&format!("{verb}d"), &self.run.counts);
            ctx.set_detail(&format!("{verb}d_including_earlier_runs"), so_far);
        }
    }
}

/// Sorted hashes of `students`: the order says nothing about the ids.
pub fn hashes(salt: &str, students: &BTreeSet<Uuid>) -> Vec<String> {
    let mut hashes: Vec<String> = students.iter().map(|id| student_hash(salt, *id)).collect();
    hashes.sort();
    hashes
}
