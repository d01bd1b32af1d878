//! DC-01-002 — resend the statements whose sending failed.
//!
//! Works on the open error rows of `tb_dc_error_data_info` of the business
//! date D (default yesterday) and the `jobs.keris_transfer.look_back_days`
//! (7) days before it, oldest day first, so a row missed on one day is taken
//! by the next run; open rows of older days are counted per day
//! (`older_than_look_back`), not resent (`--date` of that day resends them):
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
//! `COMPLETED_WITH_ERRORS` (exit 4). A statement KERIS refuses as a whole
//! request is found by splitting the request (its row gets the code; the
//! next run makes it `FAILED`); refusals that are not about the statements
//! (see [`crate::jobs::shared::refusal`]) stop the partner's resending, leave
//! its rows as they are and end the run `FAILED` (exit 1) with what KERIS
//! answered. Rows of students whose statements must not reach KERIS
//! ([`crate::jobs::shared::privacy::withheld_students`]) are left open, counted as
//! `withheld` (DC-01-003 deletes them). Per day the details count what was
//! resent, failed, withheld and deferred (`days`).
//!
//! Rows are read and updated in pages of `read_batch_size` (per day, keyset
//! on `err_id`), the unfixable ones too: memory stays flat whatever the
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

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context as _;
use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::KerisTransferSettings;
use crate::contract::ErrorStatus;
use crate::jobs::shared::error_data::FailedColumns;
use crate::jobs::shared::keris_batch_data::{load_stored, mark_error, mark_sent, Marks};
use crate::jobs::shared::partners::PartnerClients;
use crate::jobs::shared::privacy;
use crate::jobs::shared::refusal::SystemicRefusal;
use crate::jobs::shared::transfer::{
    is_content_code, is_duplicate_code, Batcher, Item, PartnerSender, ProbeSource, RequestOutcome,
    Verdict, CONTENT_CODES as CONTENT, RESENDABLE_CODES as RESENDABLE,
};
use crate::keris::XAPI_DUP_ERR;
use crate::runtime::registry::{JobDef, KerisFigures, Lock, Schedule, System};
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
    keris_figures: Some(KerisFigures {
        unit: "statements",
        accepted: &["resent"],
    }),
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

#[derive(Debug, Default)]
struct Report {
    resent: u64,
    will_retry: u64,
    failed_for_good: u64,
    failed_rows: Vec<FailedRow>,
    waiting_for_regeneration: i64,
    skipped_unknown_partner: u64,
    withheld: u64,
    per_partner: BTreeMap<String, PartnerResend>,
    gave_up: Vec<String>,
    days: BTreeMap<NaiveDate, DayFigures>,
    older_than_look_back: BTreeMap<String, i64>,
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
    /// Rows not sent because KERIS kept failing or refused everything for
    /// the partner: left as they are for the next run.
    deferred: u64,
    /// The refusal that stopped the partner's resending.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<SystemicRefusal>,
    #[serde(flatten)]
    sending: crate::jobs::shared::transfer::SendReport,
}

/// One day's figures in the run's details (`days`).
#[derive(Debug, Default, Clone, Serialize)]
struct DayFigures {
    /// Rows whose statement KERIS accepted.
    resent: u64,
    /// Rows whose statement KERIS refused or could not take.
    failed: u64,
    /// Rows left open: the student's consent does not allow sending.
    withheld: u64,
    /// Rows left open because KERIS looked down or refused everything.
    deferred: u64,
}

/// What the run works on: the settings, the days (oldest first), the rows
/// it owns (partition) and the students whose statements are withheld.
struct Window<'a> {
    cfg: &'a KerisTransferSettings,
    days: Vec<NaiveDate>,
    /// SQL condition on `user_id` for the run's partition.
    ours: String,
    withheld: HashSet<Uuid>,
}

impl Window<'_> {
    fn first(&self) -> NaiveDate {
        self.days[0]
    }

    fn last(&self) -> NaiveDate {
        *self.days.last().expect("at least the business date")
    }
}

#[async_trait::async_trait]
impl Job for ResendErrors {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let cfg = ctx.settings().jobs.keris_transfer.clone();
        let mut window = Window {
            cfg: &cfg,
            days: cfg.days_up_to(ctx.business_date),
            // This run's rows (all of them when it is not partitioned).
            ours: ctx.owns_user_sql("user_id::text"),
            withheld: HashSet::new(),
        };
        let mut report = Report {
            waiting_for_regeneration: count_waiting(ctx, &window).await?,
            ..Report::default()
        };
        if ctx.dry_run {
            return dry_run(ctx, &window, &report).await;
        }
        if ctx.partition.is_some() {
            warn_rows_without_user(ctx, &window).await?;
        }
        fail_unfixable(ctx, &window, &mut report).await?;
        window.withheld = privacy::withheld_students(ctx.pg(), &privacy::sending_rule(ctx))
            .await
            .context("Failed to read the students whose records are withheld from KERIS")?;
        set_progress_total(ctx, &window).await;
        let mut senders = senders(ctx, &window)?;
        for day in window.days.clone() {
            resend_day(ctx, &window, day, &mut senders, &mut report).await?;
        }
        let stopped = finish(ctx, &window, &mut senders, &mut report).await?;
        count_older(ctx, &window, &mut report).await?;
        report.set_details(ctx);
        if let Some(stop) = stopped {
            return Err(anyhow::Error::new(stop).context(format!(
                "{ID} stopped resending: the rows KERIS did not take stay open for the next run"
            )));
        }
        Ok(())
    }
}

/// Open rows rejected for their content: LRS-01-002's work.
async fn count_waiting(ctx: &JobContext, window: &Window<'_>) -> anyhow::Result<i64> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM tb_dc_error_data_info
          WHERE status = 'PENDING' AND base_dt BETWEEN $1 AND $2 AND err_code = ANY($3) AND {}",
        window.ours
    ))
    .bind(window.first())
    .bind(window.last())
    .bind(&CONTENT[..])
    .fetch_one(ctx.pg())
    .await
    .context("Failed to count tb_dc_error_data_info")
}

/// `--dry-run`: what would be resent and what would become `FAILED`.
async fn dry_run(ctx: &JobContext, window: &Window<'_>, report: &Report) -> anyhow::Result<()> {
    let (resend, fail): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE status = 'REGENERATED' OR err_code = ANY($3)),
                count(*) FILTER (WHERE status = 'PENDING' AND NOT err_code = ANY($3) AND NOT err_code = ANY($4))
           FROM tb_dc_error_data_info
          WHERE status IN ('PENDING', 'REGENERATED') AND base_dt BETWEEN $1 AND $2 AND {}",
        window.ours
    ))
    .bind(window.first())
    .bind(window.last())
    .bind(&RESENDABLE[..])
    .bind(&CONTENT[..])
    .fetch_one(ctx.pg())
    .await
    .context("Failed to count tb_dc_error_data_info")?;
    ctx.counts.add_read(resend as u64);
    ctx.set_detail("would_resend", resend);
    ctx.set_detail("would_fail", fail);
    ctx.set_detail("waiting_for_regeneration", report.waiting_for_regeneration);
    Ok(())
}

/// A row made `FAILED`: err_id, statement id, code, message, student.
type UnfixableRow = (i64, Uuid, String, Option<String>, Option<Uuid>);

/// Rows no resend can fix: a person decides. A batch at a time (keyset on
/// err_id), so memory stays flat whatever the backlog.
async fn fail_unfixable(
    ctx: &JobContext,
    window: &Window<'_>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let batch_size = i64::from(window.cfg.read_batch_size.max(1));
    let mut last_err_id = 0i64;
    loop {
        ctx.stop_point()?;
        let batch: Vec<UnfixableRow> = sqlx::query_as(&format!(
            "WITH batch AS (
                     SELECT err_id FROM tb_dc_error_data_info
                      WHERE err_id > $5 AND status = 'PENDING' AND base_dt BETWEEN $1 AND $2
                        AND NOT err_code = ANY($3) AND NOT err_code = ANY($4) AND {}
                      ORDER BY err_id LIMIT $6
                 )
                 UPDATE tb_dc_error_data_info e SET status = 'FAILED', upd_dt = now()
                   FROM batch WHERE e.err_id = batch.err_id AND e.status = 'PENDING'
                 RETURNING e.err_id, e.statement_id, e.err_code, e.err_msg, e.user_id",
            window.ours
        ))
        .bind(window.first())
        .bind(window.last())
        .bind(&RESENDABLE[..])
        .bind(&CONTENT[..])
        .bind(last_err_id)
        .bind(batch_size)
        .fetch_all(ctx.pg())
        .await
        .context("Failed to update tb_dc_error_data_info")?;
        let Some(last) = batch.iter().map(|r| r.0).max() else {
            return Ok(());
        };
        last_err_id = last;
        for (_, statement_id, err_code, err_msg, user_id) in batch {
            let reason = failed_reason(&err_code, err_msg, "not resendable as it is");
            report.add_failed(window.cfg, statement_id, err_code, &reason, user_id);
            ctx.counts.add_failed(1);
        }
    }
}

/// The condition of the rows resent: transient failures and regenerated
/// statements (`$n` the resendable codes).
fn resendable_sql(codes: &str) -> String {
    format!("(status = 'REGENERATED' OR (status = 'PENDING' AND err_code = ANY({codes})))")
}

async fn set_progress_total(ctx: &JobContext, window: &Window<'_>) {
    ctx.progress
        .set_total_with(|| async {
            let sql = format!(
                "SELECT count(*) FROM tb_dc_error_data_info WHERE base_dt BETWEEN $1 AND $2 AND {} AND {}",
                resendable_sql("$3"),
                window.ours
            );
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(window.first())
                .bind(window.last())
                .bind(&RESENDABLE[..])
                .fetch_one(ctx.pg())
                .await?;
            Ok(n as u64)
        })
        .await;
}

/// One sender per configured partner, by Partner-ID.
fn senders(
    ctx: &JobContext,
    window: &Window<'_>,
) -> anyhow::Result<HashMap<String, PartnerSender>> {
    let mut senders = HashMap::new();
    for partner in &PartnerClients::from_settings(&ctx.settings().keris)? {
        let probe = ProbeSource {
            db: ctx.app.mongo.clone(),
            partner_id: partner.stored_id(),
            days: window.days.iter().rev().copied().collect(),
        };
        let sender =
            PartnerSender::new(partner.client.clone(), None, window.cfg).with_probe_source(probe);
        senders.insert(partner.stored_id(), sender);
    }
    Ok(senders)
}

/// Resends the open rows of `day`, a page of `read_batch_size` rows at a
/// time (keyset on err_id): memory stays flat whatever the backlog.
async fn resend_day(
    ctx: &JobContext,
    window: &Window<'_>,
    day: NaiveDate,
    senders: &mut HashMap<String, PartnerSender>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut last_err_id = 0i64;
    loop {
        ctx.stop_point()?;
        let page: Vec<(i64, Uuid, Uuid, Option<Uuid>)> = sqlx::query_as(&format!(
            "SELECT err_id, statement_id, partner_id, user_id FROM tb_dc_error_data_info
              WHERE base_dt = $1 AND err_id > $2 AND {} AND {}
              ORDER BY err_id LIMIT $4",
            resendable_sql("$3"),
            window.ours
        ))
        .bind(day)
        .bind(last_err_id)
        .bind(&RESENDABLE[..])
        .bind(i64::from(window.cfg.read_batch_size.max(1)))
        .fetch_all(ctx.pg())
        .await
        .context("Failed to read tb_dc_error_data_info")?;
        let Some(&(last, ..)) = page.last() else {
            return Ok(());
        };
        last_err_id = last;
        ctx.counts.add_read(page.len() as u64);
        let per_partner = sort_page(ctx, window, day, &page, senders, report).await?;
        for (partner_id, items) in per_partner {
            let sender = senders.get_mut(&partner_id).expect("checked in sort_page");
            resend_partner(ctx, window.cfg, sender, items, report).await?;
        }
    }
}

/// A page's rows as statements to send, per partner; rows of partners not
/// configured, of withheld students, or whose statement cannot be sent are
/// counted (the last become `FAILED`).
async fn sort_page(
    ctx: &JobContext,
    window: &Window<'_>,
    day: NaiveDate,
    page: &[(i64, Uuid, Uuid, Option<Uuid>)],
    senders: &HashMap<String, PartnerSender>,
    report: &mut Report,
) -> anyhow::Result<HashMap<String, Vec<Item>>> {
    let ids: Vec<String> = page.iter().map(|r| r.1.to_string()).collect();
    let docs = load_stored(&ctx.app.mongo, &ids, ctx.mongo_max_time()).await?;
    let mut per_partner: HashMap<String, Vec<Item>> = HashMap::new();
    let mut unsendable: Vec<(Uuid, String)> = Vec::new();
    for (_, statement_id, partner_id, user_id) in page {
        let partner_id = partner_id.to_string();
        if !senders.contains_key(&partner_id) {
            report.skipped_unknown_partner += 1;
            ctx.counts.add_skipped(1);
            continue;
        }
        if user_id.is_some_and(|u| window.withheld.contains(&u)) {
            report.withheld += 1;
            report.days.entry(day).or_default().withheld += 1;
            ctx.counts.add_skipped(1);
            continue;
        }
        match docs.get(&statement_id.to_string()).map(Item::from_stored) {
            Some(Ok(item)) => per_partner.entry(partner_id).or_default().push(item),
            Some(Err(why)) => unsendable.push((*statement_id, why)),
            None => unsendable.push((
                *statement_id,
                "the statement is no longer in keris_batch_data".to_string(),
            )),
        }
    }
    fail_rows(ctx, window.cfg, report, unsendable).await?;
    Ok(per_partner)
}

/// Sends one partner's statements of a page in requests; after the sender
/// gave up or stopped, the rows are left open for the next run.
async fn resend_partner(
    ctx: &JobContext,
    cfg: &KerisTransferSettings,
    sender: &mut PartnerSender,
    items: Vec<Item>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let options = sender.client().options().clone();
    let mut batcher = Batcher::new(
        options.max_statements_per_request,
        options.max_request_bytes,
    );
    let mut requests: Vec<Vec<Item>> = items.into_iter().filter_map(|i| batcher.push(i)).collect();
    requests.push(batcher.take());
    let partner = sender.client().partner_name().to_string();
    for request in requests.into_iter().filter(|r| !r.is_empty()) {
        if sender.gave_up() || sender.stopped().is_some() {
            report.defer(&partner, &request);
            if sender.gave_up() {
                ctx.counts.add_failed(request.len() as u64);
            }
            continue;
        }
        for outcome in sender.send(request).await? {
            record(ctx, cfg, &outcome, &partner, report).await?;
        }
    }
    Ok(())
}

/// Each sender's statements refused alone and still held are judged and
/// recorded; returns the refusal that stopped a sender, if any.
async fn finish(
    ctx: &JobContext,
    window: &Window<'_>,
    senders: &mut HashMap<String, PartnerSender>,
    report: &mut Report,
) -> anyhow::Result<Option<SystemicRefusal>> {
    let mut stopped = None;
    for sender in senders.values_mut() {
        let name = sender.client().partner_name().to_string();
        for outcome in sender.finish().await? {
            record(ctx, window.cfg, &outcome, &name, report).await?;
        }
        if sender.gave_up() {
            tracing::error!(partner = %name, "KERIS keeps failing for this partner; its rows wait for the next run");
            report.gave_up.push(name.clone());
        }
        if let Some(stop) = sender.stopped() {
            stopped.get_or_insert_with(|| stop.clone());
            report.per_partner.entry(name.clone()).or_default().stopped = Some(stop.clone());
        }
        report.per_partner.entry(name).or_default().sending = sender.report.clone();
    }
    Ok(stopped)
}

/// Counts (as skipped, per day, with a warning) the run's open rows of days
/// before the look-back: not resent by this run, and not forgotten.
async fn count_older(
    ctx: &JobContext,
    window: &Window<'_>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let older: Vec<(NaiveDate, i64)> = sqlx::query_as(&format!(
        "SELECT base_dt, count(*) FROM tb_dc_error_data_info
          WHERE status IN ('PENDING', 'REGENERATED') AND base_dt < $1 AND {}
          GROUP BY base_dt ORDER BY base_dt",
        window.ours
    ))
    .bind(window.first())
    .fetch_all(ctx.pg())
    .await
    .context("Failed to count tb_dc_error_data_info")?;
    let total: i64 = older.iter().map(|(_, n)| n).sum();
    if total > 0 {
        ctx.counts.add_skipped(total as u64);
        tracing::warn!(rows = total, oldest = %older[0].0, look_back_days = window.cfg.look_back_days,
            "open error rows older than the look-back are not resent: run {ID} --date <day> for them");
        report.older_than_look_back = older.into_iter().map(|(d, n)| (d.to_string(), n)).collect();
    }
    Ok(())
}

/// A partitioned run cannot take the open rows without a `user_id` (they
/// belong to no partition): counts them in the run's details and says that
/// an unpartitioned run takes them.
async fn warn_rows_without_user(ctx: &JobContext, window: &Window<'_>) -> anyhow::Result<()> {
    let unowned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tb_dc_error_data_info
          WHERE status IN ('PENDING', 'REGENERATED') AND base_dt BETWEEN $1 AND $2 AND user_id IS NULL",
    )
    .bind(window.first())
    .bind(window.last())
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
    cfg: &KerisTransferSettings,
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
    /// A request's rows left open for the next run.
    fn defer(&mut self, partner: &str, request: &[Item]) {
        let n = request.len() as u64;
        self.will_retry += n;
        self.per_partner
            .entry(partner.to_string())
            .or_default()
            .deferred += n;
        for item in request {
            self.days.entry(item.base_dt).or_default().deferred += 1;
        }
    }

    fn set_details(&self, ctx: &JobContext) {
        if self.failed_for_good > 0 {
            tracing::warn!(
                rows = self.failed_for_good,
                "error rows became FAILED; see the run's details (failed_rows)"
            );
        }
        ctx.set_detail("resent", self.resent);
        ctx.set_detail("will_retry", self.will_retry);
        ctx.set_detail("failed_for_good", self.failed_for_good);
        ctx.set_detail("failed_rows", &self.failed_rows);
        ctx.set_detail("waiting_for_regeneration", self.waiting_for_regeneration);
        ctx.set_detail("skipped_unknown_partner", self.skipped_unknown_partner);
        ctx.set_detail("withheld", self.withheld);
        ctx.set_detail("partners", &self.per_partner);
        let days: BTreeMap<String, &DayFigures> =
            self.days.iter().map(|(d, f)| (d.to_string(), f)).collect();
        ctx.set_detail("days", days);
        if !self.older_than_look_back.is_empty() {
            ctx.set_detail("older_than_look_back", &self.older_than_look_back);
        }
        if !self.gave_up.is_empty() {
            ctx.set_detail("gave_up_partners", &self.gave_up);
        }
    }

    /// Counts a row that became `FAILED`; the first `max_reported_ids` are
    /// listed, with the student's id taken out of the reason (KERIS's
    /// message may quote it, and the details outlive the privacy deletion).
    fn add_failed(
        &mut self,
        cfg: &KerisTransferSettings,
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
    cfg: &KerisTransferSettings,
    outcome: &RequestOutcome,
    partner: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pg = ctx.pg();
    // Each accepted statement with the index KERIS stored it at.
    let mut accepted: Vec<Uuid> = Vec::new();
    let mut indexes: Vec<Option<i64>> = Vec::new();
    for (n, (item, verdict)) in outcome.items.iter().zip(&outcome.verdicts).enumerate() {
        let day = report.days.entry(item.base_dt).or_default();
        if *verdict == Verdict::Accepted {
            day.resent += 1;
            if let Ok(id) = Uuid::parse_str(&item.id) {
                accepted.push(id);
                indexes.push(outcome.index_of(n));
            }
        } else {
            day.failed += 1;
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
