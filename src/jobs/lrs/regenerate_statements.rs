//! LRS-01-002 — rebuild the statements KERIS rejected for their content.
//!
//! Takes the `PENDING` rows of `tb_dc_error_data_info` with `base_dt` up to
//! the business date D (default today: it runs at 23:30) whose code says the
//! content was wrong (`XAPI_VAL_ERR`, `XAPI_USER_ERR`). For each student and
//! day among them it reads the student's current source statements of that
//! day from `statements` and aggregates them exactly as LRS-01-001 does (same
//! [`Aggregator`], current `jobs.lrs_aggregate` mapping), then per row:
//! - the statement id is produced again and passes the profile → the
//!   statement is written back to `keris_batch_data` as `READY` and the row
//!   becomes `REGENERATED` (DC-01-002 sends it);
//! - the id is no longer produced (its source statements were voided or
//!   deleted), or the rebuilt statement fails the profile → the row becomes
//!   `FAILED` with the reason.
//!
//! A statement KERIS keeps rejecting comes back here each time; DC-01-002
//! counts each failed resend in `retry_cnt` and stops at
//! `jobs.keris_transfer.max_retries`. Only `ERROR`/`READY` documents are
//! rewritten, never a `SENT` one. `--dry-run` reports, writes nothing.
//!
//! Scale: the rows are streamed (one query sorted by day and student, read
//! as it arrives, so memory does not grow with the backlog) and handled in
//! chunks of about `jobs.keris_transfer.read_batch_size` rows of one day,
//! never splitting a student. A chunk costs a fixed number of round trips:
//! one read of its students' source statements, one read and a few `update`
//! commands on `keris_batch_data`, two `UPDATE`s of the rows. At most
//! `max_reported_ids` failed rows are listed in the run's details.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;
use uuid::Uuid;

use super::aggregate_statements::{source_filter, source_sort, Aggregator, Output};
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::jobs::shared::transfer::{find_by_ids, run_updates, CONTENT_CODES};
use crate::runtime::registry::{no_args, DefaultDate, JobDef, Lock, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LRS-01-002";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lrs,
    name_ko: "공공 배치데이터 오류 재전송용 집계(xAPI) 일배치",
    name_en: "Aggregate batch data for error resend (xAPI)",
    about: "Reads the PENDING tb_dc_error_data_info rows KERIS rejected for their content (XAPI_VAL_ERR, XAPI_USER_ERR) and rebuilds each statement from the student's current LRS statements (statements): written back READY to keris_batch_data and the row REGENERATED for DC-01-002 to resend, or the row FAILED with the reason.",
    schedule: Schedule::Cron("30 23 * * *"),
    schedule_note: None,
    default_date: DefaultDate::Today,
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 1800,
    partitioned: false,
    settings: None,
    args: no_args,
    job: Some(&RegenerateStatements),
};

pub struct RegenerateStatements;

/// Statements per `update` command when writing rebuilt statements back.
const UPDATES_PER_COMMAND: usize = 100;

#[derive(Debug, Serialize)]
struct FailedRow {
    statement_id: Uuid,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    regenerated: u64,
    /// Regenerated with the same content as the rejected statement.
    unchanged: u64,
    failed: Vec<FailedRow>,
    failed_count: u64,
}

#[async_trait::async_trait]
impl Job for RegenerateStatements {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let cfg = ctx.settings().jobs.keris_transfer.clone();
        let chunk_rows = cfg.read_batch_size.max(1) as usize;
        let mut report = Report::default();
        // A connection of its own for the stream: the chunks write through
        // the pool while it is open.
        let mut conn = ctx
            .pg()
            .acquire()
            .await
            .context("Failed to connect to PostgreSQL")?;
        let mut rows = sqlx::query_as::<_, (Uuid, Uuid, NaiveDate)>(
            "SELECT statement_id, user_id, base_dt FROM tb_dc_error_data_info
              WHERE status = 'PENDING' AND err_code = ANY($1) AND base_dt <= $2 AND user_id IS NOT NULL
              ORDER BY base_dt, user_id, err_id",
        )
        .bind(&CONTENT_CODES[..])
        .bind(ctx.business_date)
        .fetch(&mut *conn);
        let mut chunk = Chunk::default();
        while let Some((statement_id, user_id, base_dt)) = rows
            .try_next()
            .await
            .context("Failed to read tb_dc_error_data_info")?
        {
            let new_day = chunk.base_dt.is_some_and(|d| d != base_dt);
            let full = chunk.rows.len() >= chunk_rows && chunk.users.last() != Some(&user_id);
            if new_day || full {
                regenerate(ctx, &cfg, std::mem::take(&mut chunk), &mut report).await?;
                ctx.stop_point()?;
            }
            chunk.push(base_dt, user_id, statement_id);
        }
        regenerate(ctx, &cfg, chunk, &mut report).await?;
        if report.failed_count > 0 {
            tracing::warn!(
                rows = report.failed_count,
                "error rows cannot be regenerated and became FAILED; see the run's details (failed)"
            );
        }
        ctx.set_detail(
            if ctx.dry_run {
                "would_regenerate"
            } else {
                "regenerated"
            },
            report.regenerated,
        );
        ctx.set_detail("unchanged", report.unchanged);
        ctx.set_detail("failed_count", report.failed_count);
        ctx.set_detail("failed", &report.failed);
        Ok(())
    }
}

/// Rows of one day, whole students, in the stream's order.
#[derive(Debug, Default)]
struct Chunk {
    base_dt: Option<NaiveDate>,
    /// The chunk's students, each once.
    users: Vec<Uuid>,
    /// Statement ids of the rows.
    rows: Vec<Uuid>,
}

impl Chunk {
    fn push(&mut self, base_dt: NaiveDate, user_id: Uuid, statement_id: Uuid) {
        self.base_dt = Some(base_dt);
        if self.users.last() != Some(&user_id) {
            self.users.push(user_id);
        }
        self.rows.push(statement_id);
    }
}

/// Rebuilds the statements of one chunk's rows, writes the good ones back
/// and resolves the rows.
async fn regenerate(
    ctx: &JobContext,
    cfg: &crate::config::KerisTransferSettings,
    chunk: Chunk,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(base_dt) = chunk.base_dt else {
        return Ok(());
    };
    ctx.counts.add_read(chunk.rows.len() as u64);
    let wanted: HashSet<String> = chunk.rows.iter().map(Uuid::to_string).collect();
    let mut outputs = rebuild(ctx, base_dt, &chunk.users, &wanted).await?;
    let mut good: Vec<(Uuid, Output)> = Vec::new();
    let mut failed: Vec<(Uuid, String)> = Vec::new();
    for statement_id in chunk.rows {
        match outputs.remove(&statement_id.to_string()) {
            None => failed.push((
                statement_id,
                "no source statement produces this statement any more (voided or deleted)"
                    .to_string(),
            )),
            Some(out) => match &out.error {
                Some(e) => failed.push((
                    statement_id,
                    format!("the rebuilt statement still fails the profile: {e}"),
                )),
                None => good.push((statement_id, out)),
            },
        }
    }
    if ctx.dry_run {
        report.regenerated += good.len() as u64;
    } else if !good.is_empty() {
        report.unchanged += write_back(ctx, &good).await?;
        let ids: Vec<Uuid> = good.iter().map(|(id, _)| *id).collect();
        let n = sqlx::query(
            "UPDATE tb_dc_error_data_info SET status = 'REGENERATED', upd_dt = now()
              WHERE statement_id = ANY($1) AND status = 'PENDING'",
        )
        .bind(&ids)
        .execute(ctx.pg())
        .await
        .context("Failed to update tb_dc_error_data_info")?
        .rows_affected();
        ctx.counts.add_written(n);
        report.regenerated += n;
    }
    if failed.is_empty() {
        return Ok(());
    }
    if !ctx.dry_run {
        let (ids, reasons): (Vec<Uuid>, Vec<String>) = failed.iter().cloned().unzip();
        sqlx::query(
            "UPDATE tb_dc_error_data_info e SET status = 'FAILED', err_msg = i.reason, upd_dt = now()
               FROM UNNEST($1::uuid[], $2::text[]) AS i(statement_id, reason)
              WHERE e.statement_id = i.statement_id AND e.status = 'PENDING'",
        )
        .bind(&ids)
        .bind(&reasons)
        .execute(ctx.pg())
        .await
        .context("Failed to update tb_dc_error_data_info")?;
    }
    for (statement_id, reason) in failed {
        ctx.counts.add_failed(1);
        report.failed_count += 1;
        if report.failed.len() < cfg.max_reported_ids {
            tracing::warn!(%statement_id, %reason, "statement cannot be regenerated");
            report.failed.push(FailedRow {
                statement_id,
                reason,
            });
        }
    }
    Ok(())
}

/// The statements with the `wanted` ids that LRS-01-001 would build now
/// from the source statements of `base_dt` of `users`, by id: one sorted
/// read for all of them, keeping only the wanted outputs (a student's other
/// statements are dropped as soon as they are built).
async fn rebuild(
    ctx: &JobContext,
    base_dt: NaiveDate,
    users: &[Uuid],
    wanted: &HashSet<String>,
) -> anyhow::Result<HashMap<String, Output>> {
    let settings = ctx.settings().jobs.lrs_aggregate.clone();
    let source = ctx
        .app
        .mongo
        .collection::<Document>(crate::contract::STATEMENTS);
    let mut filter = source_filter(base_dt);
    let users: Vec<String> = users.iter().map(Uuid::to_string).collect();
    filter.insert("user_id", doc! { "$in": users });
    let mut cursor = source
        .find(filter)
        .sort(source_sort())
        .batch_size(settings.batch_size)
        .await
        .context("Failed to read the statements")?;
    let mut agg = Aggregator::new(base_dt, settings, true);
    let mut found = HashMap::new();
    let mut keep = |agg: &mut Aggregator| {
        for out in agg.pending.drain(..) {
            if wanted.contains(&out.id) {
                found.insert(out.id.clone(), out);
            }
        }
    };
    while let Some(d) = cursor
        .try_next()
        .await
        .context("Failed to read the statements")?
    {
        agg.add(&d)?;
        keep(&mut agg);
    }
    agg.finish_user();
    keep(&mut agg);
    Ok(found)
}

/// Writes the rebuilt statements back as `READY` (only over an `ERROR` or
/// `READY` document): one read of the stored statements, then `_id`-filtered
/// statements of unordered `update` commands. Returns how many had the same
/// content as before.
async fn write_back(ctx: &JobContext, good: &[(Uuid, Output)]) -> anyhow::Result<u64> {
    let db = &ctx.app.mongo;
    let ids: Vec<String> = good.iter().map(|(_, out)| out.id.clone()).collect();
    let old = find_by_ids(db, KERIS_BATCH_DATA, &ids, Some(doc! { "statement": 1 }))
        .await
        .context("Failed to read keris_batch_data")?;
    let now = Bson::DateTime(mongodb::bson::DateTime::now());
    let mut unchanged = 0;
    let mut updates = Vec::with_capacity(good.len());
    for (_, out) in good {
        let statement =
            mongodb::bson::to_document(&crate::xapi::encode_keys(out.statement.clone()))
                .context("Failed to convert a statement to BSON")?;
        if old
            .get(&out.id)
            .and_then(|d| d.get_document("statement").ok())
            == Some(&statement)
        {
            unchanged += 1;
        }
        updates.push(doc! {
            "q": { "_id": &out.id, "status": { "$in": [BatchStatus::Error.as_str(), BatchStatus::Ready.as_str()] } },
            "u": {
                "$set": { "statement": statement, "status": BatchStatus::Ready.as_str(), "updated_at": now.clone() },
                "$unset": { "err_code": "", "err_msg": "" },
            },
        });
    }
    run_updates(db, KERIS_BATCH_DATA, &updates, UPDATES_PER_COMMAND)
        .await
        .context("Failed to update keris_batch_data")?;
    Ok(unchanged)
}
