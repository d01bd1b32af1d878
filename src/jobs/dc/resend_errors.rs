//! DC-01-002 — resend the statements whose sending failed.
//!
//! Works on the error rows of `tb_dc_error_data_info` with `base_dt` up to
//! the business date D (default yesterday), so a row missed on one day is
//! taken by the next run:
//! - `PENDING` rows whose failure was transient (`KERIS_UNAVAILABLE`:
//!   transport, timeout, 5xx, 429; `KERIS_TOKEN_EXPIRED`) and every
//!   `REGENERATED` row (rebuilt by LRS-01-002) are sent again — the statement
//!   as it is now in `keris_batch_data` — through the same sender as
//!   DC-01-001 (see [`crate::jobs::shared::transfer`]);
//! - `PENDING` rows rejected for their content (`XAPI_VAL_ERR`,
//!   `XAPI_USER_ERR`) are left for LRS-01-002 (counted as
//!   `waiting_for_regeneration`);
//! - `PENDING` rows with `XAPI_DUP_ERR` (KERIS holds a different statement
//!   under this id) or a code no resend can fix (a request KERIS refused as a
//!   whole, a statement too large to send) become `FAILED`, for a person.
//!
//! Accepted → the row `RESENT` with the transfer and the exact index its
//! statement was stored at, and the statement `SENT`. Failed again →
//! `retry_cnt + 1` with the new code; at `jobs.keris_transfer.max_retries`
//! (or on `XAPI_DUP_ERR`) → `FAILED`. Rows that became `FAILED` are counted
//! in the run's details and the first `max_reported_ids` listed (statement
//! id, code, reason with the student's id taken out); every row not
//! delivered by this run counts as failed, so such a run ends
//! `COMPLETED_WITH_ERRORS` (exit 4).
//!
//! Rows are read and updated in pages of `read_batch_size` (keyset on
//! `err_id`), the unfixable ones too: memory stays flat whatever the
//! backlog, and each page costs a fixed number of round trips. A stop
//! request ends the run between pages; a rerun simply takes what is still
//! open. `--dry-run` reports what would be resent and marked `FAILED`,
//! changing nothing.
//!
//! Partitions (`--partition I/N`): a partition takes the rows of its
//! students (`aidt_user_hash(user_id::text)` in its range, the hash
//! DC-01-001's partitions use, so partition I of both jobs works on the same
//! students) and resends them on transfers of its own. Rows without a
//! `user_id` belong to no partition: they are left to an unpartitioned run,
//! counted as `skipped_without_user_id` and warned about.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::contract::ErrorStatus;
use crate::jobs::shared::transfer::{
    is_content_code, is_duplicate_code, load_stored, mark_error, mark_sent, partners_by_id,
    Batcher, FailedColumns, Item, Marks, PartnerSender, RequestOutcome, Verdict,
    CONTENT_CODES as CONTENT, RESENDABLE_CODES as RESENDABLE,
};
use crate::keris::{ClientOptions, KerisClient, XAPI_DUP_ERR};
use crate::runtime::registry::{JobDef, Lock, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "DC-01-002";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Dc,
    name_ko: "KERIS 학습 이력 데이터 재전송",
    name_en: "Resend of learning history to KERIS",
    about: "Resends the statements of open tb_dc_error_data_info rows up to the business date (transient failures and regenerated statements); accepted rows become RESENT, rows out of retries or unfixable become FAILED with their reason.",
    schedule: Schedule::Cron("0 5 * * *"),
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 3600,
    partitioned: true,
    job: Some(&ResendErrors),
    ..JobDef::DEFAULTS
};

pub struct ResendErrors;

/// A row that became `FAILED`, listed in the run's details.
#[derive(Debug, Serialize)]
struct FailedRow {
    statement_id: Uuid,
    err_code: String,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    resent: u64,
    will_retry: u64,
    failed_for_good: u64,
    failed_rows: Vec<FailedRow>,
    waiting_for_regeneration: i64,
    skipped_unknown_partner: u64,
    per_partner: BTreeMap<String, PartnerResend>,
    gave_up: Vec<String>,
}

/// What the resend did for one partner (its configuration name, never the
/// Partner-ID), in the run's details under `partners`.
#[derive(Debug, Default, Clone, Serialize)]
struct PartnerResend {
    /// Rows whose statement KERIS accepted: now `RESENT`.
    resent: u64,
    /// Rows whose statement KERIS refused or could not take after the
    /// client's retries: back to `PENDING` with a new code, or `FAILED`.
    failed: u64,
    /// Rows not sent because KERIS kept failing for the partner: left as
    /// they are for the next run.
    deferred: u64,
    #[serde(flatten)]
    sending: crate::jobs::shared::transfer::SendReport,
}

#[async_trait::async_trait]
impl Job for ResendErrors {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings = ctx.settings();
        let cfg = settings.jobs.keris_transfer.clone();
        let pg = ctx.pg();
        // This run's rows (all of them when it is not partitioned).
        let ours = ctx.owns_user_sql("user_id::text");
        let waiting_for_regeneration = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM tb_dc_error_data_info WHERE status = 'PENDING' AND base_dt <= $1 AND err_code = ANY($2) AND {ours}",
        ))
        .bind(ctx.business_date)
        .bind(&CONTENT[..])
        .fetch_one(pg)
        .await
        .context("Failed to count tb_dc_error_data_info")?;
        let mut report = Report {
            waiting_for_regeneration,
            ..Report::default()
        };

        if ctx.dry_run {
            let (resend, fail): (i64, i64) = sqlx::query_as(&format!(
                "SELECT count(*) FILTER (WHERE status = 'REGENERATED' OR err_code = ANY($2)),
                        count(*) FILTER (WHERE status = 'PENDING' AND NOT err_code = ANY($2) AND NOT err_code = ANY($3))
                   FROM tb_dc_error_data_info WHERE status IN ('PENDING', 'REGENERATED') AND base_dt <= $1 AND {ours}",
            ))
            .bind(ctx.business_date)
            .bind(&RESENDABLE[..])
            .bind(&CONTENT[..])
            .fetch_one(pg)
            .await
            .context("Failed to count tb_dc_error_data_info")?;
            ctx.counts.add_read(resend as u64);
            ctx.set_detail("would_resend", resend);
            ctx.set_detail("would_fail", fail);
            ctx.set_detail("waiting_for_regeneration", report.waiting_for_regeneration);
            return Ok(());
        }

        if ctx.partition.is_some() {
            warn_rows_without_user(ctx).await?;
        }

        // Rows no resend can fix: a person decides. A batch at a time
        // (keyset on err_id), so memory stays flat whatever the backlog.
        let batch_size = i64::from(cfg.read_batch_size.max(1));
        let mut last_err_id = 0i64;
        loop {
            ctx.stop_point()?;
            let batch: Vec<(i64, Uuid, String, Option<String>, Option<Uuid>)> =
                sqlx::query_as(&format!(
                    "WITH batch AS (
                     SELECT err_id FROM tb_dc_error_data_info
                      WHERE err_id > $4 AND status = 'PENDING' AND base_dt <= $1
                        AND NOT err_code = ANY($2) AND NOT err_code = ANY($3) AND {ours}
                      ORDER BY err_id LIMIT $5
                 )
                 UPDATE tb_dc_error_data_info e SET status = 'FAILED', upd_dt = now()
                   FROM batch WHERE e.err_id = batch.err_id AND e.status = 'PENDING'
                 RETURNING e.err_id, e.statement_id, e.err_code, e.err_msg, e.user_id",
                ))
                .bind(ctx.business_date)
                .bind(&RESENDABLE[..])
                .bind(&CONTENT[..])
                .bind(last_err_id)
                .bind(batch_size)
                .fetch_all(pg)
                .await
                .context("Failed to update tb_dc_error_data_info")?;
            let Some(last) = batch.iter().map(|r| r.0).max() else {
                break;
            };
            last_err_id = last;
            for (_, statement_id, err_code, err_msg, user_id) in batch {
                let reason = failed_reason(&err_code, err_msg, "not resendable as it is");
                report.add_failed(&cfg, statement_id, err_code, &reason, user_id);
                ctx.counts.add_failed(1);
            }
        }

        ctx.progress
            .set_total_with(|| async {
                let sql = format!(
                    "SELECT count(*) FROM tb_dc_error_data_info WHERE base_dt <= $1 \
                     AND (status = 'REGENERATED' OR (status = 'PENDING' AND err_code = ANY($2))) AND {ours}"
                );
                let n: i64 = sqlx::query_scalar(&sql)
                    .bind(ctx.business_date)
                    .bind(&RESENDABLE[..])
                    .fetch_one(pg)
                    .await?;
                Ok(n as u64)
            })
            .await;
        let partners = partners_by_id(&settings.keris)?;
        let options = ClientOptions::from_settings(&settings.keris);
        let mut senders: HashMap<String, PartnerSender> = HashMap::new();
        for (partner_id, name) in &partners {
            let client = KerisClient::from_settings(&settings.keris, name, options.clone())?;
            senders.insert(
                partner_id.clone(),
                PartnerSender::new(client, None, cfg.give_up_after_transient_failures),
            );
        }

        let mut last_err_id = 0i64;
        loop {
            ctx.stop_point()?;
            let page: Vec<(i64, Uuid, Uuid)> = sqlx::query_as(&format!(
                "SELECT err_id, statement_id, partner_id FROM tb_dc_error_data_info
                  WHERE err_id > $1 AND base_dt <= $2
                    AND (status = 'REGENERATED' OR (status = 'PENDING' AND err_code = ANY($3))) AND {ours}
                  ORDER BY err_id LIMIT $4",
            ))
            .bind(last_err_id)
            .bind(ctx.business_date)
            .bind(&RESENDABLE[..])
            .bind(i64::from(cfg.read_batch_size.max(1)))
            .fetch_all(pg)
            .await
            .context("Failed to read tb_dc_error_data_info")?;
            let Some(&(last, _, _)) = page.last() else {
                break;
            };
            last_err_id = last;
            ctx.counts.add_read(page.len() as u64);

            let ids: Vec<String> = page.iter().map(|(_, id, _)| id.to_string()).collect();
            let docs = load_stored(&ctx.app.mongo, &ids, ctx.mongo_max_time()).await?;

            let mut per_partner: HashMap<String, Vec<Item>> = HashMap::new();
            let mut unsendable: Vec<(Uuid, String)> = Vec::new();
            for (_, statement_id, partner_id) in &page {
                let partner_id = partner_id.to_string();
                if !senders.contains_key(&partner_id) {
                    report.skipped_unknown_partner += 1;
                    ctx.counts.add_skipped(1);
                    continue;
                }
                let item = docs.get(&statement_id.to_string()).map(Item::from_stored);
                match item {
                    Some(Ok(item)) => per_partner.entry(partner_id).or_default().push(item),
                    Some(Err(why)) => unsendable.push((*statement_id, why)),
                    None => unsendable.push((
                        *statement_id,
                        "the statement is no longer in keris_batch_data".to_string(),
                    )),
                }
            }
            fail_rows(ctx, &cfg, &mut report, unsendable).await?;
            for (partner_id, items) in per_partner {
                let sender = senders.get_mut(&partner_id).expect("checked above");
                let mut batcher = Batcher::new(
                    options.max_statements_per_request,
                    options.max_request_bytes,
                );
                let mut requests: Vec<Vec<Item>> =
                    items.into_iter().filter_map(|i| batcher.push(i)).collect();
                requests.push(batcher.take());
                for request in requests.into_iter().filter(|r| !r.is_empty()) {
                    let partner = sender.client().partner_name().to_string();
                    if sender.gave_up() {
                        // KERIS looks down: the rows stay as they are for the next run.
                        report.will_retry += request.len() as u64;
                        report.per_partner.entry(partner).or_default().deferred +=
                            request.len() as u64;
                        ctx.counts.add_failed(request.len() as u64);
                        continue;
                    }
                    let outcome = sender.send(request).await?;
                    record(ctx, &cfg, &outcome, &partner, &mut report).await?;
                }
            }
        }

        for sender in senders.values() {
            let name = sender.client().partner_name().to_string();
            if sender.gave_up() {
                tracing::error!(partner = %name, "KERIS keeps failing for this partner; its rows wait for the next run");
                report.gave_up.push(name.clone());
            }
            report.per_partner.entry(name).or_default().sending = sender.report.clone();
        }
        if report.failed_for_good > 0 {
            tracing::warn!(
                rows = report.failed_for_good,
                "error rows became FAILED; see the run's details (failed_rows)"
            );
        }
        ctx.set_detail("resent", report.resent);
        ctx.set_detail("will_retry", report.will_retry);
        ctx.set_detail("failed_for_good", report.failed_for_good);
        ctx.set_detail("failed_rows", &report.failed_rows);
        ctx.set_detail("waiting_for_regeneration", report.waiting_for_regeneration);
        ctx.set_detail("skipped_unknown_partner", report.skipped_unknown_partner);
        ctx.set_detail("partners", &report.per_partner);
        if !report.gave_up.is_empty() {
            ctx.set_detail("gave_up_partners", &report.gave_up);
        }
        Ok(())
    }
}

/// A partitioned run cannot take the open rows without a `user_id` (they
/// belong to no partition): counts them in the run's details and says that
/// an unpartitioned run takes them.
async fn warn_rows_without_user(ctx: &JobContext) -> anyhow::Result<()> {
    let unowned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tb_dc_error_data_info
          WHERE status IN ('PENDING', 'REGENERATED') AND base_dt <= $1 AND user_id IS NULL",
    )
    .bind(ctx.business_date)
    .fetch_one(ctx.pg())
    .await
    .context("Failed to count tb_dc_error_data_info")?;
    if unowned > 0 {
        ctx.set_detail("skipped_without_user_id", unowned);
        tracing::warn!(
            rows = unowned,
            "open error rows without user_id belong to no partition: run {ID} without --partition for them"
        );
    }
    Ok(())
}

/// Marks the open rows of these statements `FAILED`, each with its reason:
/// one statement for the page.
async fn fail_rows(
    ctx: &JobContext,
    cfg: &crate::config::KerisTransferSettings,
    report: &mut Report,
    rows: Vec<(Uuid, String)>,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, reasons): (Vec<Uuid>, Vec<String>) = rows.into_iter().unzip();
    let failed: Vec<(Uuid, String, String, Option<Uuid>)> = sqlx::query_as(
        "UPDATE tb_dc_error_data_info e SET status = 'FAILED', err_msg = i.reason, upd_dt = now()
           FROM UNNEST($1::uuid[], $2::text[]) AS i(statement_id, reason)
          WHERE e.statement_id = i.statement_id AND e.status IN ('PENDING', 'REGENERATED')
         RETURNING e.statement_id, e.err_code, i.reason, e.user_id",
    )
    .bind(&ids)
    .bind(&reasons)
    .fetch_all(ctx.pg())
    .await
    .context("Failed to update tb_dc_error_data_info")?;
    for (statement_id, code, reason, user_id) in failed {
        report.add_failed(cfg, statement_id, code, &reason, user_id);
        ctx.counts.add_failed(1);
    }
    Ok(())
}

impl Report {
    /// Counts a row that became `FAILED`; the first `max_reported_ids` are
    /// listed, with the student's id taken out of the reason (KERIS's
    /// message may quote it, and the details outlive the privacy deletion).
    fn add_failed(
        &mut self,
        cfg: &crate::config::KerisTransferSettings,
        statement_id: Uuid,
        err_code: String,
        reason: &str,
        user_id: Option<Uuid>,
    ) {
        self.failed_for_good += 1;
        if self.failed_rows.len() < cfg.max_reported_ids {
            self.failed_rows.push(FailedRow {
                statement_id,
                err_code,
                reason: without_user_id(reason, user_id),
            });
        }
    }
}

/// Applies one resend's outcome to the rows and the statements.
async fn record(
    ctx: &JobContext,
    cfg: &crate::config::KerisTransferSettings,
    outcome: &RequestOutcome,
    partner: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pg = ctx.pg();
    // Each accepted statement with the index KERIS stored it at.
    let mut accepted: Vec<Uuid> = Vec::new();
    let mut indexes: Vec<Option<i64>> = Vec::new();
    for (n, (item, verdict)) in outcome.items.iter().zip(&outcome.verdicts).enumerate() {
        if *verdict == Verdict::Accepted {
            if let Ok(id) = Uuid::parse_str(&item.id) {
                accepted.push(id);
                indexes.push(outcome.index_of(n));
            }
        }
    }
    if !accepted.is_empty() {
        mark_sent(
            &ctx.app.mongo,
            outcome,
            cfg.sent_marks_per_command,
            Marks::Checked,
        )
        .await?;
        let resent = resolve_rows(pg, &accepted, &indexes, outcome.transfer_id.as_deref()).await?;
        ctx.counts.add_written(resent);
        report.resent += resent;
        report
            .per_partner
            .entry(partner.to_string())
            .or_default()
            .resent += resent;
    }
    let failed = FailedColumns::of(outcome)?;
    if failed.is_empty() {
        return Ok(());
    }
    let rows: Vec<ClosedRow> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[]) AS t(statement_id, stmt_index, err_code, err_msg)
         )
         UPDATE tb_dc_error_data_info e
            SET retry_cnt = e.retry_cnt + 1, err_code = i.err_code, err_msg = i.err_msg,
                transfer_id = $5, stmt_index = i.stmt_index, upd_dt = now(),
                status = CASE WHEN i.err_code = $6 OR e.retry_cnt + 1 >= $7 THEN 'FAILED' ELSE 'PENDING' END
           FROM input i
          WHERE e.statement_id = i.statement_id AND e.status IN ('PENDING', 'REGENERATED')
         RETURNING e.statement_id, e.status, e.err_code, e.err_msg, e.user_id",
    )
    .bind(&failed.statement_ids)
    .bind(&failed.indexes)
    .bind(&failed.codes)
    .bind(&failed.messages)
    .bind(outcome.transfer_id.as_deref())
    .bind(XAPI_DUP_ERR)
    .bind(cfg.max_retries as i32)
    .fetch_all(pg)
    .await
    .context("Failed to update tb_dc_error_data_info")?;
    mark_error(&ctx.app.mongo, outcome).await?;
    report
        .per_partner
        .entry(partner.to_string())
        .or_default()
        .failed += rows.len() as u64;
    for (statement_id, status, code, message, user_id) in rows {
        ctx.counts.add_failed(1);
        if status == ErrorStatus::Failed.as_str() {
            let reason = failed_reason(
                &code,
                message,
                &format!("still failing after {} attempts", cfg.max_retries),
            );
            report.add_failed(cfg, statement_id, code, &reason, user_id);
        } else {
            report.will_retry += 1;
            if is_content_code(&code) {
                report.waiting_for_regeneration += 1;
            }
        }
    }
    Ok(())
}

/// A row a resend closed: statement id, status, code, message, student.
type ClosedRow = (Uuid, String, String, Option<String>, Option<Uuid>);

/// Why a row became `FAILED`, for the run's details: a duplicate says so,
/// anything else is `otherwise` with KERIS's message.
fn failed_reason(code: &str, message: Option<String>, otherwise: &str) -> String {
    let message = message.unwrap_or_default();
    if is_duplicate_code(code) {
        format!("KERIS holds a different statement under this id: {message}")
    } else {
        format!("{otherwise}: {message}")
    }
}

/// `reason` with the student's id (in either case) replaced by `(student)`.
fn without_user_id(reason: &str, user_id: Option<Uuid>) -> String {
    let Some(user_id) = user_id else {
        return reason.to_string();
    };
    let lower = user_id.to_string();
    let upper = lower.to_ascii_uppercase();
    reason
        .replace(&lower, "(student)")
        .replace(&upper, "(student)")
}

/// Marks the open rows of the accepted statements `RESENT`, each with the
/// index its statement was stored at (`indexes[i]` for `ids[i]`).
async fn resolve_rows(
    pg: &PgPool,
    ids: &[Uuid],
    indexes: &[Option<i64>],
    transfer_id: Option<&str>,
) -> anyhow::Result<u64> {
    let r = sqlx::query(
        "UPDATE tb_dc_error_data_info e
            SET status = 'RESENT', transfer_id = $3, stmt_index = i.stmt_index, upd_dt = now()
           FROM UNNEST($1::uuid[], $2::bigint[]) AS i(statement_id, stmt_index)
          WHERE e.statement_id = i.statement_id AND e.status IN ('PENDING', 'REGENERATED')",
    )
    .bind(ids)
    .bind(indexes)
    .bind(transfer_id)
    .execute(pg)
    .await
    .context("Failed to update tb_dc_error_data_info")?;
    Ok(r.rows_affected())
}
