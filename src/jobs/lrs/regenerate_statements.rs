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

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;
use uuid::Uuid;

use super::aggregate_statements::{source_filter, source_sort, Aggregator, Output};
use crate::contract::KERIS_BATCH_DATA;
use crate::jobs::dc::transfer::CONTENT_CODES;
use crate::runtime::registry::{no_args, DefaultDate, JobDef, Lock, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LRS-01-002";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lrs,
    name_ko: "공공 배치데이터 오류 재전송용 집계(xAPI) 일배치",
    name_en: "Aggregate batch data for error resend (xAPI)",
    about: "Rebuilds the statements KERIS rejected for their content from the student's current LRS statements: READY and REGENERATED for DC-01-002 to resend, or FAILED with the reason.",
    schedule: Schedule::Cron("30 23 * * *"),
    schedule_note: None,
    default_date: DefaultDate::Today,
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 1800,
    settings: None,
    args: no_args,
    job: Some(&RegenerateStatements),
};

pub struct RegenerateStatements;

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
        let rows: Vec<(Uuid, Uuid, NaiveDate)> = sqlx::query_as(
            "SELECT statement_id, user_id, base_dt FROM tb_dc_error_data_info
              WHERE status = 'PENDING' AND err_code = ANY($1) AND base_dt <= $2 AND user_id IS NOT NULL
              ORDER BY user_id, base_dt, err_id",
        )
        .bind(&CONTENT_CODES[..])
        .bind(ctx.business_date)
        .fetch_all(ctx.pg())
        .await
        .context("Failed to read tb_dc_error_data_info")?;
        // Rows are few (one per rejected statement): grouped per student and day.
        let mut groups: BTreeMap<(Uuid, NaiveDate), Vec<Uuid>> = BTreeMap::new();
        for (statement_id, user_id, base_dt) in rows {
            groups
                .entry((user_id, base_dt))
                .or_default()
                .push(statement_id);
        }
        let mut report = Report::default();
        for ((user_id, base_dt), statement_ids) in groups {
            ctx.stop_point()?;
            ctx.counts.add_read(statement_ids.len() as u64);
            let outputs = rebuild(ctx, user_id, base_dt).await?;
            for statement_id in statement_ids {
                let verdict = match outputs.get(&statement_id.to_string()) {
                    None => Err(
                        "no source statement produces this statement any more (voided or deleted)"
                            .to_string(),
                    ),
                    Some(out) => match &out.error {
                        Some(e) => Err(format!(
                            "the rebuilt statement still fails the profile: {e}"
                        )),
                        None => Ok(out),
                    },
                };
                match verdict {
                    Ok(out) if !ctx.dry_run => {
                        if write_back(ctx, out).await? {
                            report.unchanged += 1;
                        }
                        let n = sqlx::query(
                            "UPDATE tb_dc_error_data_info SET status = 'REGENERATED', upd_dt = now()
                              WHERE statement_id = $1 AND status = 'PENDING'",
                        )
                        .bind(statement_id)
                        .execute(ctx.pg())
                        .await
                        .context("Failed to update tb_dc_error_data_info")?
                        .rows_affected();
                        ctx.counts.add_written(n);
                        report.regenerated += n;
                    }
                    Ok(_) => report.regenerated += 1,
                    Err(reason) => {
                        tracing::warn!(%statement_id, %reason, "statement cannot be regenerated");
                        if !ctx.dry_run {
                            sqlx::query(
                                "UPDATE tb_dc_error_data_info SET status = 'FAILED', err_msg = $2, upd_dt = now()
                                  WHERE statement_id = $1 AND status = 'PENDING'",
                            )
                            .bind(statement_id)
                            .bind(&reason)
                            .execute(ctx.pg())
                            .await
                            .context("Failed to update tb_dc_error_data_info")?;
                        }
                        ctx.counts.add_failed(1);
                        report.failed_count += 1;
                        if report.failed.len() < cfg.max_reported_ids {
                            report.failed.push(FailedRow {
                                statement_id,
                                reason,
                            });
                        }
                    }
                }
            }
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

/// The statements LRS-01-001 would build now from the student's source
/// statements of `base_dt`, by id.
async fn rebuild(
    ctx: &JobContext,
    user_id: Uuid,
    base_dt: NaiveDate,
) -> anyhow::Result<HashMap<String, Output>> {
    let settings = ctx.settings().jobs.lrs_aggregate.clone();
    let source = ctx
        .app
        .mongo
        .collection::<Document>(crate::contract::STATEMENTS);
    let mut filter = source_filter(base_dt);
    filter.insert("user_id", user_id.to_string());
    let mut cursor = source
        .find(filter)
        .sort(source_sort())
        .await
        .context("Failed to read the statements")?;
    let mut agg = Aggregator::new(base_dt, settings, true);
    while let Some(d) = cursor
        .try_next()
        .await
        .context("Failed to read the statements")?
    {
        agg.add(&d)?;
    }
    agg.finish_user();
    Ok(std::mem::take(&mut agg.pending)
        .into_iter()
        .map(|o| (o.id.clone(), o))
        .collect())
}

/// Writes the rebuilt statement back as `READY` (only over an `ERROR` or
/// `READY` document). Returns whether the content was unchanged.
async fn write_back(ctx: &JobContext, out: &Output) -> anyhow::Result<bool> {
    let coll = ctx.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let statement = mongodb::bson::to_document(&crate::xapi::encode_keys(out.statement.clone()))
        .context("Failed to convert a statement to BSON")?;
    let old = coll
        .find_one(doc! { "_id": &out.id })
        .await
        .context("Failed to read keris_batch_data")?;
    let unchanged = old.as_ref().and_then(|d| d.get_document("statement").ok()) == Some(&statement);
    coll.update_one(
        doc! { "_id": &out.id, "status": { "$in": ["ERROR", "READY"] } },
        doc! {
            "$set": { "statement": statement, "status": "READY", "updated_at": Bson::DateTime(mongodb::bson::DateTime::now()) },
            "$unset": { "err_code": "", "err_msg": "" },
        },
    )
    .await
    .context("Failed to update keris_batch_data")?;
    Ok(unchanged)
}
