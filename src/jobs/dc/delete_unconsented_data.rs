//! DC-01-003 — delete the learning data of students without consent.
//!
//! For every student of the set defined in [`crate::jobs::privacy`] (the set
//! LMS-01-007 clears in the LMS): deletes their documents in MongoDB
//! `statements` and `keris_batch_data` (field `user_id`, the uuid as a
//! string) and their `tb_dc_error_data_info` rows. Nothing else is touched.
//! Daily at 03:00, before LMS-01-007; the set does not depend on what
//! LMS-01-007 did (it ignores `del_yn`), so the order does not matter.
//!
//! Students go in batches of `batch_size`, with `pause_ms` between batches;
//! a stop request ends the run between batches. No MongoDB transaction
//! (they need a replica set, and none could span PostgreSQL anyway): a batch
//! deletes the documents, then the error rows and updates the audit in one
//! PostgreSQL transaction.
//!
//! Rerun: safe; a rerun (or the run after a kill) deletes what is left and
//! otherwise changes nothing. A batch's students are recorded complete
//! (`batch_privacy_completed`, by salted hash) in the transaction that
//! deletes their error rows, after their documents are gone; later runs do
//! not probe them again (`students_already_complete` in the details). `--dry-run` counts per collection and table what
//! would be deleted (in the run's details) and deletes nothing. Each real run
//! writes a `batch_privacy_audit` row with counts and salted hashes of the
//! students changed — never ids, here or in the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use mongodb::bson::{doc, Bson, Document};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::jobs::privacy::{self, RunFigures, SkipCompleted, Tally};
use crate::runtime::registry::{DefaultDate, JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "DC-01-003";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Dc,
    name_ko: "개인정보 미동의 데이터 일괄 삭제",
    name_en: "Bulk delete of data without consent",
    about: "Deletes the MongoDB statements and keris_batch_data documents and the tb_dc_error_data_info rows of every student without PRVC_PROVIDE consent whose grace period has passed, in batches; writes a privacy audit row. Shares the xAPI lock so nothing it deletes is sent or regenerated meanwhile.",
    schedule: Schedule::Cron("0 3 * * *"),
    default_date: DefaultDate::Today,
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 3600,
    job: Some(&DeleteUnconsentedData),
    timeouts: Timeouts::DELETION,
    ..JobDef::DEFAULTS
};

/// The MongoDB collections holding the student's documents, by `user_id`.
pub const COLLECTIONS: [&str; 2] = [
    crate::contract::STATEMENTS,
    crate::contract::KERIS_BATCH_DATA,
];

/// The PostgreSQL table holding the student's error rows, by `user_id`.
pub const ERROR_TABLE: &str = "tb_dc_error_data_info";

pub struct DeleteUnconsentedData;

/// Rows and documents deleted per table / collection by this date's runs so
/// far: the checkpoint. Deliberately no student id.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Progress {
    deleted: BTreeMap<String, u64>,
}

#[async_trait::async_trait]
impl Job for DeleteUnconsentedData {
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
            let candidates = {
                let mut conn = ctx
                    .pg()
                    .acquire()
                    .await
                    .context("Failed to get a PostgreSQL connection")?;
                privacy::next_candidates(&mut conn, &rule, Some(skip), after, settings.batch_size)
                    .await?
            };
            let students: Vec<Uuid> = candidates.iter().map(|c| c.user_id).collect();
            let Some(last) = students.last().copied() else {
                break;
            };
            after = Some(last);

            let mut batch =
                delete_documents(&ctx.app.mongo, &students, ctx.dry_run, ctx.mongo_max_time())
                    .await?;
            let mut tx = ctx
                .pg()
                .begin()
                .await
                .context("Failed to begin a batch transaction")?;
            let errors = delete_error_rows(&mut tx, &students, ctx.dry_run).await?;
            batch.merge(&errors);
            // The documents are gone (delete_many returned) and the error rows
            // go with this batch's commit: the batch is complete everywhere.
            figures
                .end_batch(
                    ctx,
                    ID,
                    &salt,
                    tx,
                    batch,
                    &candidates,
                    &mut progress.deleted,
                )
                .await?;
            ctx.save_checkpoint(&progress).await?;
            if students.len() < settings.batch_size as usize {
                break;
            }
            ctx.pause(Duration::from_millis(settings.pause_ms)).await;
        }
        figures.report(ctx, "delete", &progress.deleted);
        Ok(())
    }
}

/// The filter matching the students' documents. The contract stores the
/// lower-case form; the upper-case one is matched too, because a document
/// left behind by a spelling difference would be a missed deletion.
fn user_filter(students: &[Uuid]) -> Document {
    let ids: Vec<String> = students
        .iter()
        .flat_map(|id| {
            let lower = id.hyphenated().to_string();
            let upper = lower.to_ascii_uppercase();
            [lower, upper]
        })
        .collect();
    doc! { "user_id": { "$in": ids } }
}

/// Deletes (or, for a dry run, counts) the students' documents in
/// [`COLLECTIONS`]; `max_time` is the `maxTimeMS` of the reads.
#[tracing::instrument(skip_all, fields(students = students.len(), dry_run), err)]
pub async fn delete_documents(
    db: &mongodb::Database,
    students: &[Uuid],
    dry_run: bool,
    max_time: std::time::Duration,
) -> anyhow::Result<Tally> {
    let filter = user_filter(students);
    let mut tally = Tally::default();
    for name in COLLECTIONS {
        let coll = db.collection::<Document>(name);
        // Which students have documents, for the audit: distinct before the delete.
        let owners: BTreeSet<Uuid> = coll
            .distinct("user_id", filter.clone())
            .max_time(max_time)
            .await
            .with_context(|| format!("Failed to find the students' documents in {name}"))?
            .into_iter()
            .filter_map(|v| match v {
                Bson::String(s) => Uuid::parse_str(&s).ok(),
                _ => None,
            })
            .collect();
        let n = if dry_run {
            coll.count_documents(filter.clone())
                .max_time(max_time)
                .await
                .with_context(|| format!("Failed to count the students' documents in {name}"))?
        } else {
            coll.delete_many(filter.clone())
                .await
                .with_context(|| format!("Failed to delete the students' documents from {name}"))?
                .deleted_count
        };
        *tally.counts.entry(name.to_string()).or_default() += n;
        if n > 0 {
            tally.students.extend(owners);
        }
    }
    Ok(tally)
}

/// Deletes (or, for a dry run, counts) the students' `tb_dc_error_data_info`
/// rows. The caller owns the transaction.
pub async fn delete_error_rows(
    conn: &mut PgConnection,
    students: &[Uuid],
    dry_run: bool,
) -> anyhow::Result<Tally> {
    let rows = privacy::delete_rows(conn, ERROR_TABLE, students, dry_run).await?;
    let mut tally = Tally::default();
    tally.add(ERROR_TABLE, &rows);
    Ok(tally)
}
