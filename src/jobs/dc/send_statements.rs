//! DC-01-001 — send the day's learning history to KERIS (API-006/007).
//!
//! For the business date D (default yesterday), per configured partner and
//! concurrently across partners: the `READY` documents of D in
//! `keris_batch_data` are read as a cursor (never the whole day in memory),
//! cut into API-007 requests of at most `keris.max_statements_per_request`
//! statements and `keris.max_request_bytes` bytes, and sent one statement per
//! HTTP chunk on the partner's transfer (see [`crate::jobs::shared::transfer`]). Reading,
//! sending and recording overlap: while KERIS works on one request the next
//! is being read and the previous one recorded.
//!
//! Outcomes: accepted statements become `SENT` (transfer id, `stmt_index`,
//! `sent_at`); statements in `list_error`, and those of a request that failed
//! after the client's retries, get a `PENDING` row in `tb_dc_error_data_info`
//! (code, message, exact index) and become `ERROR`; DC-01-002 and LRS-01-002
//! take it from there. Any error ends the run `COMPLETED_WITH_ERRORS` (exit 4).
//! After `jobs.keris_transfer.give_up_after_transient_failures` failed
//! requests in a row KERIS is taken to be down for the partner: its remaining
//! statements stay `READY`, are counted as failed (`deferred`) and go out
//! with a rerun.
//!
//! Kill-safety: each request is written to `batch_keris_request` before it
//! goes out and deleted once its outcome is recorded. A rerun first asks
//! KERIS for the status of the transfers of rows left behind and sends those
//! requests again on their transfer at their own indexes — KERIS drops what
//! it already holds (same id, same content) and names again what it refused,
//! so no verdict is lost and nothing is stored twice — then sends everything
//! still `READY`. A request KERIS never received (index beyond the transfer's
//! status) or whose transfer is gone goes out with the rest.
//!
//! Documents of partners that are not configured are counted as skipped and
//! left `READY`. `--dry-run` counts what would be sent, per partner.
//!
//! Partitions (`--partition I/N`): a partition sends the students whose
//! `user_hash` (written by LRS-01-001) lies in its range
//! ([`crate::runtime::partition`]), on transfers of its own (one per partner
//! and partition: KERIS numbers each transfer on its own), with a journal
//! of its own (`batch_keris_request.part`), so its rerun resumes only its
//! own requests in doubt. Documents without `user_hash` (written before
//! LRS-01-001 stored it) are left to an unpartitioned run and counted as
//! skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt};
use mongodb::bson::{doc, Document};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::config::KerisTransferSettings;
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::jobs::shared::transfer::{
    load_stored, mark_error, mark_sent, partners_by_id, record_errors, stored_projection, Batcher,
    FailedColumns, Item, Journal, Marks, PartnerSender, RequestOutcome, SendReport,
};
use crate::keris::{ClientOptions, KerisClient, KerisError, Transfer};
use crate::runtime::partition::Partition;
use crate::runtime::registry::{JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "DC-01-001";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Dc,
    name_ko: "KERIS 학습 이력 데이터 일괄 전송",
    name_en: "Bulk send of learning history to KERIS",
    about: "Sends the business date's READY xAPI statements of keris_batch_data to KERIS in chunked transfers (API-006/007), per partner, marks them SENT with their transfer and index, records refusals in tb_dc_error_data_info; a rerun after a kill resumes the open transfers.",
    schedule: Schedule::Cron("10 1 * * *"),
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 3600,
    partitioned: true,
    job: Some(&SendStatements),
    timeouts: Timeouts::DAY_STREAM,
    ..JobDef::DEFAULTS
};

/// The status DC-01-001 sends.
const READY: &str = BatchStatus::Ready.as_str();

pub struct SendStatements;

/// The `READY` statements of one partner and day: what DC-01-001 sends;
/// of one partition's students only when `partition` is given.
pub fn ready_filter(base_dt: &str, partner_id: &str, partition: Option<Partition>) -> Document {
    let mut filter = doc! { "base_dt": base_dt, "partner_id": partner_id, "status": READY };
    if let Some(p) = partition {
        filter.insert("user_hash", hash_range(p));
    }
    filter
}

/// `{$gte: lo, $lt: hi}` over `user_hash`: one partition's students, as a
/// range an index serves (MongoDB 6/7 and FerretDB alike).
pub fn hash_range(partition: Partition) -> Document {
    let (lo, hi) = partition.range();
    match hi {
        Some(hi) => doc! { "$gte": lo, "$lt": hi },
        None => doc! { "$gte": lo },
    }
}

/// The order DC-01-001 reads [`ready_filter`] in, partitioned or not. The
/// index `(base_dt, partner_id, status, user_hash, _id)` (created by
/// `migrate`) serves the filter, a partition's `user_hash` range and this
/// sort with one forward index scan on MongoDB, so the sort costs nothing;
/// on FerretDB v2/DocumentDB the same filter without a sort reads 7–8×
/// slower. Documents without `user_hash` sort first (null). A cursor in
/// this order also never meets a document twice while the same run marks
/// the documents behind it `SENT` (moving their index keys out of the
/// scanned `READY` range). One index for both: each index is one more
/// write per SENT mark and per inserted statement.
pub fn ready_sort() -> Document {
    doc! { "user_hash": 1, "_id": 1 }
}

/// What happened for one partner, stored in the run's details.
#[derive(Debug, Default, Serialize)]
struct PartnerReport {
    read: u64,
    sent: u64,
    /// Accepted by KERIS but already `SENT` here (a request in doubt sent again).
    already_sent: u64,
    failed: u64,
    errors_by_code: BTreeMap<String, u64>,
    /// Statements left `READY` because KERIS looked down.
    deferred: u64,
    /// Documents that could not be turned into a statement (left as they are).
    unreadable: Vec<String>,
    /// Requests in doubt found in the journal and sent again.
    resumed_requests: u64,
    #[serde(flatten)]
    sending: SendReport,
}

#[async_trait::async_trait]
impl Job for SendStatements {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings = ctx.settings();
        let cfg = settings.jobs.keris_transfer.clone();
        let coll = ctx.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
        let date = ctx.business_date.to_string();
        let partners = partners_by_id(&settings.keris)?;
        if ctx.dry_run {
            count_unknown_partners(ctx, &partners).await?;
            let mut would_send = BTreeMap::new();
            for (partner_id, name) in &partners {
                let n = coll
                    .count_documents(ready_filter(&date, partner_id, ctx.partition))
                    .max_time(ctx.mongo_max_time())
                    .await
                    .context("Failed to count keris_batch_data")?;
                ctx.counts.add_read(n);
                would_send.insert(name.clone(), n);
            }
            ctx.set_detail("would_send", would_send);
            return Ok(());
        }

        ctx.progress
            .set_total_with(|| async {
                let ids: Vec<&String> = partners.keys().collect();
                let mut ready =
                    doc! { "base_dt": &date, "status": READY, "partner_id": { "$in": ids } };
                if let Some(p) = ctx.partition {
                    ready.insert("user_hash", hash_range(p));
                }
                Ok(coll
                    .count_documents(ready)
                    .max_time(ctx.mongo_max_time())
                    .await?)
            })
            .await;
        let options = ClientOptions::from_settings(&settings.keris);
        let runs = partners.iter().map(|(partner_id, name)| {
            let (options, cfg) = (options.clone(), &cfg);
            async move {
                let client = KerisClient::from_settings(&settings.keris, name, options)?;
                let report = send_partner(ctx, cfg, client, partner_id).await?;
                Ok::<_, anyhow::Error>((name.clone(), report))
            }
        });
        let mut reports = BTreeMap::new();
        let mut first_error = None;
        for result in futures::future::join_all(runs).await {
            match result {
                Ok((name, report)) => {
                    reports.insert(name, report);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        ctx.set_detail("partners", &reports);
        if let Some(e) = first_error {
            return Err(e);
        }
        // Only a report, so after the sending: KERIS gets the first request
        // at once (on a server without the index this count reads the day).
        count_unknown_partners(ctx, &partners).await?;
        ctx.stop_point()?;
        Ok(())
    }
}

/// Counts (as skipped, with a warning) the day's `READY` statements of
/// partners that are not configured: they are left as they are.
async fn count_unknown_partners(
    ctx: &JobContext,
    partners: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let configured: Vec<&str> = partners.keys().map(String::as_str).collect();
    let coll = ctx.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let mut filter = doc! { "base_dt": ctx.business_date.to_string(), "status": READY, "partner_id": { "$nin": &configured } };
    if let Some(p) = ctx.partition {
        filter.insert("user_hash", hash_range(p));
        let unhashed = coll
            .count_documents(doc! { "base_dt": ctx.business_date.to_string(), "status": READY, "user_hash": { "$exists": false } })
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to count keris_batch_data")?;
        if unhashed > 0 {
            ctx.counts.add_skipped(unhashed);
            ctx.set_detail("skipped_without_user_hash", unhashed);
            tracing::warn!(statements = unhashed, "READY statements without user_hash (written before LRS-01-001 stored it) belong to no partition: run {ID} without --partition for them");
        }
    }
    let unknown = coll
        .count_documents(filter)
        .max_time(ctx.mongo_max_time())
        .await
        .context("Failed to count keris_batch_data")?;
    if unknown > 0 {
        ctx.counts.add_skipped(unknown);
        ctx.set_detail("skipped_unknown_partner", unknown);
        tracing::warn!(statements = unknown, "READY statements of partners that are not configured (keris.partners) are left as they are");
    }
    Ok(())
}

/// Sends one partner's `READY` statements of the day: first the requests a
/// killed run left in doubt, then the rest.
///
/// Three stages overlap: the reader (cursor → requests, a couple of requests
/// ahead), the sender (one request at a time on the transfer, as KERIS
/// numbers its statements) and the recorders (the outcomes of up to
/// `keris.max_concurrency` requests recorded at once). A request holds one of
/// `max_concurrency` permits from just before it is journaled until its
/// outcome is recorded and its journal row deleted, so at any moment at most
/// `max_concurrency` requests are sent-but-not-recorded: what a kill can
/// leave in doubt, and so what a rerun may send again, is at most
/// `max_concurrency × max_statements_per_request` statements per partner.
async fn send_partner(
    ctx: &JobContext,
    cfg: &KerisTransferSettings,
    client: KerisClient,
    partner_id: &str,
) -> anyhow::Result<PartnerReport> {
    let journal = Journal {
        pg: ctx.pg().clone(),
        job_id: ID,
        base_dt: ctx.business_date,
        partner_name: client.partner_name().to_string(),
        part: ctx.partition.map(|p| p.label()).unwrap_or_default(),
        run_id: ctx.run_id,
    };
    let options = client.options().clone();
    let mut sender = PartnerSender::new(
        client,
        Some(journal.clone()),
        cfg.give_up_after_transient_failures,
    );
    let report = Mutex::new(PartnerReport::default());
    resume(ctx, &mut sender, &journal, &report).await?;

    let db = &ctx.app.mongo;
    let coll = db.collection::<Document>(KERIS_BATCH_DATA);
    let date = ctx.business_date.to_string();
    let in_doubt = options.max_concurrency.max(1);
    let permits = Arc::new(Semaphore::new(in_doubt));
    let (request_tx, mut request_rx) = mpsc::channel::<Vec<Item>>(2);
    let (outcome_tx, mut outcome_rx) =
        mpsc::channel::<(RequestOutcome, OwnedSemaphorePermit)>(in_doubt);
    let gave_up = AtomicBool::new(false);
    let read = AtomicU64::new(0);
    let mut unreadable = Vec::new();

    let reading = async {
        let mut cursor = coll
            .find(ready_filter(&date, partner_id, ctx.partition))
            .sort(ready_sort())
            .projection(stored_projection())
            .batch_size(cfg.read_batch_size)
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to read keris_batch_data")?;
        let mut batcher = Batcher::new(
            options.max_statements_per_request,
            options.max_request_bytes,
        );
        while let Some(doc) = cursor
            .try_next()
            .await
            .context("Failed to read keris_batch_data")?
        {
            read.fetch_add(1, Ordering::Relaxed);
            ctx.counts.add_read(1);
            let item = match Item::from_stored(&doc) {
                Ok(item) => item,
                Err(why) => {
                    ctx.counts.add_skipped(1);
                    tracing::warn!(%why, "keris_batch_data document skipped");
                    if unreadable.len() < cfg.max_reported_ids {
                        unreadable.push(why);
                    }
                    continue;
                }
            };
            if let Some(request) = batcher.push(item) {
                if request_tx.send(request).await.is_err() {
                    return Ok(());
                }
                if ctx.stop_requested() || gave_up.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        }
        let rest = batcher.take();
        if !rest.is_empty() && !ctx.stop_requested() {
            let _ = request_tx.send(rest).await;
        }
        drop(request_tx);
        Ok::<_, anyhow::Error>(())
    };
    let sending = async {
        while let Some(items) = request_rx.recv().await {
            if sender.gave_up() {
                gave_up.store(true, Ordering::Relaxed);
                continue;
            }
            // Taken before the request is journaled, given back once its
            // outcome is recorded (by the recorder dropping it).
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let outcome = sender.send(items).await?;
            if outcome_tx.send((outcome, permit)).await.is_err() {
                break;
            }
        }
        drop(outcome_tx);
        Ok::<_, anyhow::Error>(())
    };
    let recording = async {
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(done) = running.next(), if !running.is_empty() => done?,
                next = outcome_rx.recv(), if running.len() < in_doubt => match next {
                    Some((outcome, permit)) => running.push(record_request(ctx, outcome, permit, &report)),
                    None => break,
                },
            }
        }
        while let Some(done) = running.next().await {
            done?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::try_join!(reading, sending, recording)?;
    let mut report = report.into_inner().expect("no recorder panicked");
    report.read += read.load(Ordering::Relaxed);
    report.unreadable = unreadable;
    if sender.gave_up() {
        let left = coll
            .count_documents(ready_filter(&date, partner_id, ctx.partition))
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to count keris_batch_data")?;
        report.deferred = left;
        ctx.counts.add_failed(left);
        tracing::error!(
            partner = sender.client().partner_name(),
            left,
            "KERIS keeps failing for this partner; its remaining statements stay READY: rerun DC-01-001 --date {}",
            ctx.business_date
        );
    }
    report.sending = sender.report.clone();
    Ok(report)
}

/// Records one request's outcome, then gives its permit back.
async fn record_request(
    ctx: &JobContext,
    outcome: RequestOutcome,
    permit: OwnedSemaphorePermit,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    // Read READY by this run's cursor, under the group lock.
    record(ctx, &outcome, Marks::JustRead, report).await?;
    drop(permit);
    Ok(())
}

/// Applies one request's outcome: error rows and `ERROR` first, then `SENT`,
/// then the journal row goes.
async fn record(
    ctx: &JobContext,
    outcome: &RequestOutcome,
    marks: Marks,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    let db = &ctx.app.mongo;
    let failed = FailedColumns::of(outcome)?;
    if !failed.is_empty() {
        record_errors(ctx.pg(), ID, outcome.transfer_id.as_deref(), &failed).await?;
        mark_error(db, outcome).await?;
        let n = failed.statement_ids.len() as u64;
        ctx.counts.add_failed(n);
        let mut r = report.lock().expect("no recorder panicked");
        r.failed += n;
        for code in &failed.codes {
            *r.errors_by_code.entry(code.clone()).or_default() += 1;
        }
    }
    let accepted = outcome.accepted().count() as u64;
    let sent = mark_sent(
        db,
        outcome,
        ctx.app.settings.jobs.keris_transfer.sent_marks_per_command,
        marks,
    )
    .await?;
    ctx.counts.add_written(sent);
    {
        let mut r = report.lock().expect("no recorder panicked");
        r.sent += sent;
        r.already_sent += accepted - sent.min(accepted);
    }
    if let Some(id) = outcome.journal_id {
        Journal::delete(ctx.pg(), id).await?;
    }
    Ok(())
}

/// Sends again the requests a killed run left in the journal, on their
/// transfer at their own index when KERIS still knows the transfer; the
/// others are dropped from the journal and their `READY` statements go out
/// with the rest.
///
/// A journal row is deleted only once its request needs nothing more (sent
/// again and recorded, never received, or already recorded): a kill during
/// the resume leaves it for the next rerun. A transfer status KERIS cannot
/// give now (transient failure) ends the run with the journal untouched,
/// instead of sending the request's statements again on a new transfer.
async fn resume(
    ctx: &JobContext,
    sender: &mut PartnerSender,
    journal: &Journal,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    let rows: Vec<(i64, String, i64, Vec<String>)> = sqlx::query_as(
        "SELECT request_id, transfer_id, chunked_index, statement_ids FROM batch_keris_request
          WHERE job_id = $1 AND base_dt = $2 AND partner_name = $3 AND part = $4
          ORDER BY request_id",
    )
    .bind(journal.job_id)
    .bind(journal.base_dt)
    .bind(&journal.partner_name)
    .bind(&journal.part)
    .fetch_all(ctx.pg())
    .await
    .context("Failed to read batch_keris_request")?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut statuses: HashMap<String, Option<(u64, Transfer)>> = HashMap::new();
    for (request_id, transfer_id, chunked_index, ids) in rows {
        if !statuses.contains_key(&transfer_id) {
            let status = match sender.client().transfer_status(&transfer_id).await {
                Ok(s) => s.partner_access_token.map(|token| {
                    (
                        s.index,
                        Transfer {
                            transfer_id: transfer_id.clone(),
                            partner_access_token: token,
                            start_time: None,
                            received_at: std::time::Instant::now(),
                        },
                    )
                }),
                Err(e @ KerisError::Transient { .. }) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{ID}: cannot ask KERIS what it holds of the requests a killed run left in doubt (batch_keris_request, partner {}); they stay journaled for the next run",
                        journal.partner_name
                    )));
                }
                Err(e) => {
                    tracing::warn!(%transfer_id, error = %e, "transfer of a request in doubt is not known any more; its statements go out on a new transfer");
                    None
                }
            };
            if let Some((index, _)) = &status {
                tracing::info!(%transfer_id, keris_index = index, "resuming a transfer a killed run left in doubt");
            }
            statuses.insert(transfer_id.clone(), status);
        }
        let Some((kept, transfer)) = statuses[&transfer_id].clone() else {
            Journal::delete(ctx.pg(), request_id).await?;
            continue;
        };
        // KERIS never received this request: its statements are still READY
        // and go out with the rest.
        if chunked_index as u64 > kept + 1 {
            Journal::delete(ctx.pg(), request_id).await?;
            continue;
        }
        let docs = load_stored(&ctx.app.mongo, &ids, ctx.mongo_max_time()).await?;
        if docs
            .values()
            .all(|d| d.get_str("status").is_ok_and(|s| s != READY))
        {
            // recorded before the kill; only the journal row was left
            Journal::delete(ctx.pg(), request_id).await?;
            continue;
        }
        // The same statements in the same order, or the indexes would not match.
        let items: Option<Vec<Item>> = ids
            .iter()
            .map(|id| docs.get(id).and_then(|d| Item::from_stored(d).ok()))
            .collect();
        let Some(items) = items else {
            Journal::delete(ctx.pg(), request_id).await?;
            continue;
        };
        ctx.counts.add_read(items.len() as u64);
        {
            let mut r = report.lock().expect("no recorder panicked");
            r.read += items.len() as u64;
            r.resumed_requests += 1;
        }
        sender.continue_transfer(transfer, chunked_index as u64);
        let outcome = sender.send(items).await?;
        // Part of it may have been marked before the kill.
        record(ctx, &outcome, Marks::Checked, report).await?;
        Journal::delete(ctx.pg(), request_id).await?;
    }
    Ok(())
}
