//! DC-01-001 — send the day's learning history to KERIS (API-006/007).
//!
//! For the business date D (default yesterday) and the
//! `jobs.keris_transfer.look_back_days` (7) days before it, oldest day first
//! (a night that was skipped, deferred or not run at all, and late
//! statements LRS-01-001 wrote for an earlier day, go out with the next
//! night), per configured partner and concurrently across partners: the
//! `READY` documents of each day in `keris_batch_data` are read as a cursor
//! (never a whole day in memory), cut into API-007 requests of at most
//! `keris.max_statements_per_request` statements and
//! `keris.max_request_bytes` bytes, and sent one statement per HTTP chunk on
//! the partner's transfer (see [`crate::jobs::shared::transfer`]). Reading,
//! sending and recording overlap: while KERIS works on one request the next
//! is being read and the previous one recorded.
//!
//! Outcomes: accepted statements become `SENT` (transfer id, `stmt_index`,
//! `sent_at`); statements in `list_error`, those of a request that failed
//! after the client's retries, and a statement KERIS refused alone once its
//! request was split, get a `PENDING` row in `tb_dc_error_data_info` (code,
//! message, exact index) and become `ERROR`; DC-01-002 and LRS-01-002 take
//! it from there. Any error ends the run `COMPLETED_WITH_ERRORS` (exit 4).
//! Refusals that are not about the statements (a firewall's 403, a proxy's
//! 404, a refused Partner-ID; see [`crate::jobs::shared::refusal`]) stop the
//! partner's sending: its statements stay `READY`, nothing of the refusals is
//! recorded, and the run ends `FAILED` (exit 1) with what KERIS answered.
//! After `jobs.keris_transfer.give_up_after_transient_failures` failed
//! requests in a row KERIS is taken to be down for the partner: its
//! remaining statements stay `READY`, are counted as failed (`deferred`) and
//! go out with a rerun. Per day the run's details count what was read, sent,
//! failed and withheld (`days`); `READY` statements older than the look-back
//! are counted per day (`older_than_look_back`), not sent: `--date` of that
//! day sends them.
//!
//! Consent: the students who must not reach KERIS
//! ([`crate::jobs::shared::privacy::withheld_students`], loaded once per run) are
//! checked again here, as LRS-01-001 checks them when it aggregates (a grace
//! period may end in between): their statements stay `READY` (DC-01-003
//! deletes them), counted as `withheld`, never sent.
//!
//! Kill-safety: each request is written to `batch_keris_request` before it
//! goes out and deleted once its outcome is recorded. The next run, of any
//! date, first asks KERIS for the status of the transfers of rows left
//! behind and sends those requests again on their transfer at their own
//! indexes — KERIS drops what it already holds (same id, same content) and
//! names again what it refused, so no verdict is lost and nothing is stored
//! twice — then sends everything still `READY`. A request KERIS never
//! received (index beyond the transfer's status), whose transfer is gone, or
//! which holds a withheld student's statement goes out with the rest.
//!
//! Documents of partners that are not configured are counted as skipped and
//! left `READY`. `--dry-run` counts what would be sent, per partner, and what
//! is older than the look-back.
//!
//! Partitions (`--partition I/N`): a partition sends the students whose
//! `user_hash` (written by LRS-01-001) lies in its range
//! ([`crate::runtime::partition`]), on transfers of its own (one per partner
//! and partition: KERIS numbers each transfer on its own), with a journal
//! of its own (`batch_keris_request.part`), so its rerun resumes only its
//! own requests in doubt. Documents without `user_hash` (written before
//! LRS-01-001 stored it) are left to an unpartitioned run and counted as
//! skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::{StreamExt as _, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::config::KerisTransferSettings;
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::jobs::shared::error_data::{record_errors, FailedColumns};
use crate::jobs::shared::keris_batch_data::{
    load_stored, mark_error, mark_sent, stored_projection, Marks,
};
use crate::jobs::shared::partners::{partners_by_id, PartnerClients};
use crate::jobs::shared::privacy;
use crate::jobs::shared::refusal::SystemicRefusal;
use crate::jobs::shared::transfer::{
    Batcher, Item, Journal, PartnerSender, ProbeSource, RequestOutcome, SendReport, Verdict,
};
use crate::keris::{ClientOptions, KerisClient, KerisError, Transfer};
use crate::runtime::partition::Partition;
use crate::runtime::registry::{JobDef, KerisFigures, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "DC-01-001";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Dc,
    name_ko: "KERIS 학습 이력 데이터 일괄 전송",
    name_en: "Bulk send of learning history to KERIS",
    about: "Sends the READY xAPI statements of keris_batch_data of the business date and the look-back days before it to KERIS in chunked transfers (API-006/007), per partner, marks them SENT with their transfer and index, records refusals in tb_dc_error_data_info; a rerun after a kill resumes the open transfers.",
    schedule: Schedule::Cron("10 1 * * *"),
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 3600,
    partitioned: true,
    job: Some(&SendStatements),
    timeouts: Timeouts::DAY_STREAM,
    k8s_partitions: Some(4),
    // `already_sent`: accepted again after a kill left the request in doubt.
    keris_figures: Some(KerisFigures {
        unit: "statements",
        accepted: &["sent", "already_sent"],
    }),
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
/// write per SENT mark and per inserted statement. The look-back reads one
/// such cursor per day, so each stays one index scan.
pub fn ready_sort() -> Document {
    doc! { "user_hash": 1, "_id": 1 }
}

/// The run's `READY` statements of `partners` on `days` (a count's filter:
/// the read goes day by day).
fn window_filter(days: &[NaiveDate], partners: &[&str], partition: Option<Partition>) -> Document {
    let days: Vec<String> = days.iter().map(NaiveDate::to_string).collect();
    let mut filter =
        doc! { "base_dt": { "$in": days }, "status": READY, "partner_id": { "$in": partners } };
    if let Some(p) = partition {
        filter.insert("user_hash", hash_range(p));
    }
    filter
}

/// One day's figures in the run's details (`days`).
#[derive(Debug, Default, Clone, Serialize)]
struct DayFigures {
    /// `READY` statements read.
    ready: u64,
    /// Accepted by KERIS.
    sent: u64,
    /// Recorded as errors.
    failed: u64,
    /// Left `READY`: the student's consent does not allow sending.
    withheld: u64,
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
    /// Statements left `READY` because KERIS looked down or refused
    /// everything (the withheld ones of the days included).
    deferred: u64,
    /// Statements left `READY` because their student's consent does not
    /// allow sending.
    withheld: u64,
    /// Documents that could not be turned into a statement (left as they are).
    unreadable: Vec<String>,
    /// Requests in doubt found in the journal and sent again.
    resumed_requests: u64,
    /// The refusal that stopped the partner's sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<SystemicRefusal>,
    #[serde(flatten)]
    sending: SendReport,
    /// Per day, merged into the run's `days`.
    #[serde(skip)]
    days: BTreeMap<NaiveDate, DayFigures>,
}

/// What the partners' runs share: the settings, the days (oldest first) and
/// the students whose statements are withheld.
struct Window<'a> {
    cfg: &'a KerisTransferSettings,
    days: Vec<NaiveDate>,
    withheld: HashSet<Uuid>,
}

impl Window<'_> {
    fn withholds(&self, item: &Item) -> bool {
        !self.withheld.is_empty()
            && Uuid::parse_str(&item.user_id).is_ok_and(|u| self.withheld.contains(&u))
    }
}

#[async_trait::async_trait]
impl Job for SendStatements {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings = ctx.settings();
        let cfg = settings.jobs.keris_transfer.clone();
        let partners = partners_by_id(&settings.keris)?;
        let days = cfg.days_up_to(ctx.business_date);
        if ctx.dry_run {
            count_unknown_partners(ctx, &partners, &days).await?;
            count_older(ctx, &partners, days[0]).await?;
            return dry_run(ctx, &partners, &days).await;
        }
        let withheld = privacy::withheld_students(ctx.pg(), &privacy::sending_rule(ctx))
            .await
            .context("Failed to read the students whose records are withheld from KERIS")?;
        let window = Window {
            cfg: &cfg,
            days,
            withheld,
        };
        set_progress_total(ctx, &partners, &window.days).await;
        let reports = send_all(ctx, &window).await?;
        set_day_details(ctx, &reports);
        ctx.set_detail("partners", &reports);
        if let Some(stop) = reports.values().find_map(|r| r.stopped.clone()) {
            return Err(anyhow::Error::new(stop).context(format!(
                "{ID} stopped sending: the statements KERIS did not take stay READY for the next run"
            )));
        }
        // Only reports, so after the sending: KERIS gets the first request
        // at once (on a server without the index these counts read the days).
        count_unknown_partners(ctx, &partners, &window.days).await?;
        count_older(ctx, &partners, window.days[0]).await?;
        ctx.stop_point()?;
        Ok(())
    }
}

/// `--dry-run`: what each partner would send, over the days.
async fn dry_run(
    ctx: &JobContext,
    partners: &HashMap<String, String>,
    days: &[NaiveDate],
) -> anyhow::Result<()> {
    let coll = ctx.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let mut would_send = BTreeMap::new();
    for (partner_id, name) in partners {
        let n = coll
            .count_documents(window_filter(days, &[partner_id], ctx.partition))
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to count keris_batch_data")?;
        ctx.counts.add_read(n);
        would_send.insert(name.clone(), n);
    }
    ctx.set_detail("would_send", would_send);
    Ok(())
}

async fn set_progress_total(
    ctx: &JobContext,
    partners: &HashMap<String, String>,
    days: &[NaiveDate],
) {
    let ids: Vec<&str> = partners.keys().map(String::as_str).collect();
    let coll = ctx.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    ctx.progress
        .set_total_with(|| async {
            Ok(coll
                .count_documents(window_filter(days, &ids, ctx.partition))
                .max_time(ctx.mongo_max_time())
                .await?)
        })
        .await;
}

/// Every partner's sending, concurrently; a partner's error does not stop
/// the others, and the first one is returned once all have ended.
async fn send_all(
    ctx: &JobContext,
    window: &Window<'_>,
) -> anyhow::Result<BTreeMap<String, PartnerReport>> {
    let partners = PartnerClients::from_settings(&ctx.settings().keris)?;
    let runs = partners.iter().map(|partner| async move {
        let report =
            send_partner(ctx, window, partner.client.clone(), &partner.stored_id()).await?;
        Ok::<_, anyhow::Error>((partner.name.clone(), report))
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
    if let Some(e) = first_error {
        ctx.set_detail("partners", &reports);
        return Err(e);
    }
    Ok(reports)
}

/// The partners' figures per day, summed, as the run's `days` (the days
/// with something to say).
fn set_day_details(ctx: &JobContext, reports: &BTreeMap<String, PartnerReport>) {
    let mut days: BTreeMap<String, DayFigures> = BTreeMap::new();
    for (day, f) in reports.values().flat_map(|r| &r.days) {
        let sum = days.entry(day.to_string()).or_default();
        sum.ready += f.ready;
        sum.sent += f.sent;
        sum.failed += f.failed;
        sum.withheld += f.withheld;
    }
    ctx.set_detail("days", days);
}

/// Counts (as skipped, with a warning) the `READY` statements of the days
/// of partners that are not configured: they are left as they are.
async fn count_unknown_partners(
    ctx: &JobContext,
    partners: &HashMap<String, String>,
    days: &[NaiveDate],
) -> anyhow::Result<()> {
    let configured: Vec<&str> = partners.keys().map(String::as_str).collect();
    let coll = ctx.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let day_list: Vec<String> = days.iter().map(NaiveDate::to_string).collect();
    let mut filter = doc! { "base_dt": { "$in": &day_list }, "status": READY, "partner_id": { "$nin": &configured } };
    if let Some(p) = ctx.partition {
        filter.insert("user_hash", hash_range(p));
        let unhashed = coll
            .count_documents(doc! { "base_dt": { "$in": &day_list }, "status": READY, "user_hash": { "$exists": false } })
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

/// Counts (as skipped, per day, with a warning) the configured partners'
/// `READY` statements of days before `first`, the look-back's oldest day:
/// not sent by this run, and not forgotten.
async fn count_older(
    ctx: &JobContext,
    partners: &HashMap<String, String>,
    first: NaiveDate,
) -> anyhow::Result<()> {
    let configured: Vec<&str> = partners.keys().map(String::as_str).collect();
    let mut filter = doc! { "base_dt": { "$lt": first.to_string() }, "partner_id": { "$in": &configured }, "status": READY };
    if let Some(p) = ctx.partition {
        filter.insert("user_hash", hash_range(p));
    }
    let pipeline = [
        doc! { "$match": filter },
        doc! { "$group": { "_id": "$base_dt", "n": { "$sum": 1 } } },
    ];
    let groups: Vec<Document> = ctx
        .app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .aggregate(pipeline)
        .max_time(ctx.mongo_max_time())
        .await
        .context("Failed to count keris_batch_data")?
        .try_collect()
        .await
        .context("Failed to count keris_batch_data")?;
    let by_day: BTreeMap<String, i64> = groups
        .iter()
        .map(|g| {
            let day = g.get_str("_id").unwrap_or("(no base_dt)").to_string();
            let n = match g.get("n") {
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Int64(n)) => *n,
                _ => 0,
            };
            (day, n)
        })
        .collect();
    let total: i64 = by_day.values().sum();
    if total > 0 {
        ctx.counts.add_skipped(total as u64);
        tracing::warn!(statements = total, oldest = %by_day.keys().next().map(String::as_str).unwrap_or_default(), look_back_days = ctx.settings().jobs.keris_transfer.look_back_days,
            "READY statements older than the look-back are not sent: run {ID} --date <day> for them");
        ctx.set_detail("older_than_look_back", by_day);
    }
    Ok(())
}

/// Sends one partner's `READY` statements of the days: first the requests a
/// killed run left in doubt, then the rest, day by day, oldest first.
///
/// Three stages overlap: the reader (cursors → requests, a couple of
/// requests ahead), the sender (one request at a time on the transfer, as
/// KERIS numbers its statements) and the recorders (the outcomes of up to
/// `keris.max_concurrency` requests recorded at once). A request holds one of
/// `max_concurrency` permits from just before it is journaled until its
/// outcomes are recorded and its journal rows deleted, so at any moment at
/// most `max_concurrency` requests are sent-but-not-recorded (a request split
/// after a refusal counts once: its parts hold its statements): what a kill
/// can leave in doubt, and so what a rerun may send again, is at most
/// `max_concurrency × max_statements_per_request` statements per partner.
async fn send_partner(
    ctx: &JobContext,
    window: &Window<'_>,
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
    let in_doubt = client.options().max_concurrency.max(1);
    let probe = ProbeSource {
        db: ctx.app.mongo.clone(),
        partner_id: partner_id.to_string(),
        days: window.days.iter().rev().copied().collect(),
    };
    let mut sender =
        PartnerSender::new(client, Some(journal.clone()), window.cfg).with_probe_source(probe);
    let report = Mutex::new(PartnerReport::default());
    resume(ctx, window, &mut sender, &journal, &report).await?;

    let permits = Arc::new(Semaphore::new(in_doubt));
    let (request_tx, request_rx) = mpsc::channel::<Vec<Item>>(2);
    let (outcome_tx, outcome_rx) = mpsc::channel(in_doubt);
    let halted = AtomicBool::new(false);
    tokio::try_join!(
        read_days(ctx, window, partner_id, &halted, request_tx, &report),
        send_requests(&mut sender, request_rx, outcome_tx, permits, &halted),
        record_outcomes(ctx, outcome_rx, in_doubt, &report),
    )?;
    let mut report = report.into_inner().expect("no recorder panicked");
    if sender.gave_up() || sender.stopped().is_some() {
        let ids = [partner_id];
        let left = ctx
            .app
            .mongo
            .collection::<Document>(KERIS_BATCH_DATA)
            .count_documents(window_filter(&window.days, &ids, ctx.partition))
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to count keris_batch_data")?;
        report.deferred = left;
        report.stopped = sender.stopped().cloned();
        if sender.gave_up() {
            ctx.counts.add_failed(left);
            tracing::error!(
                partner = sender.client().partner_name(),
                left,
                "KERIS keeps failing for this partner; its remaining statements stay READY: rerun DC-01-001 --date {}",
                ctx.business_date
            );
        }
    }
    report.sending = sender.report.clone();
    Ok(report)
}

/// The reader: each day's `READY` statements in [`ready_sort`] order, cut
/// into requests; a withheld student's statement is counted and left.
/// Ends early when the sender stops taking requests.
async fn read_days(
    ctx: &JobContext,
    window: &Window<'_>,
    partner_id: &str,
    halted: &AtomicBool,
    requests: mpsc::Sender<Vec<Item>>,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    let options = ClientOptions::from_settings(&ctx.settings().keris);
    let mut batcher = Batcher::new(
        options.max_statements_per_request,
        options.max_request_bytes,
    );
    let mut read = Reading::default();
    let result = async {
        for day in &window.days {
            let mut cursor = open_day(ctx, window.cfg, *day, partner_id).await?;
            while let Some(doc) = cursor
                .try_next()
                .await
                .context("Failed to read keris_batch_data")?
            {
                let Some(item) = read.take(ctx, window, *day, &doc) else {
                    continue;
                };
                if let Some(request) = batcher.push(item) {
                    if requests.send(request).await.is_err()
                        || ctx.stop_requested()
                        || halted.load(Ordering::Relaxed)
                    {
                        return Ok(());
                    }
                }
            }
        }
        let rest = batcher.take();
        if !rest.is_empty() && !ctx.stop_requested() {
            let _ = requests.send(rest).await;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    read.into_report(report);
    result
}

/// One day's cursor over the partner's `READY` statements.
async fn open_day(
    ctx: &JobContext,
    cfg: &KerisTransferSettings,
    day: NaiveDate,
    partner_id: &str,
) -> anyhow::Result<mongodb::Cursor<Document>> {
    ctx.app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .find(ready_filter(&day.to_string(), partner_id, ctx.partition))
        .sort(ready_sort())
        .projection(stored_projection())
        .batch_size(cfg.read_batch_size)
        .max_time(ctx.mongo_max_time())
        .await
        .context("Failed to read keris_batch_data")
}

/// What the reader saw, kept outside the shared report while reading.
#[derive(Default)]
struct Reading {
    read: u64,
    withheld: u64,
    unreadable: Vec<String>,
    days: BTreeMap<NaiveDate, DayFigures>,
}

impl Reading {
    /// `doc` as an item to send, or `None` (counted) when it cannot be read
    /// or its student's statements are withheld.
    fn take(
        &mut self,
        ctx: &JobContext,
        window: &Window<'_>,
        day: NaiveDate,
        doc: &Document,
    ) -> Option<Item> {
        self.read += 1;
        ctx.counts.add_read(1);
        let figures = self.days.entry(day).or_default();
        figures.ready += 1;
        match Item::from_stored(doc) {
            Ok(item) if window.withholds(&item) => {
                figures.withheld += 1;
                self.withheld += 1;
                ctx.counts.add_skipped(1);
                None
            }
            Ok(item) => Some(item),
            Err(why) => {
                ctx.counts.add_skipped(1);
                tracing::warn!(%why, "keris_batch_data document skipped");
                if self.unreadable.len() < window.cfg.max_reported_ids {
                    self.unreadable.push(why);
                }
                None
            }
        }
    }

    fn into_report(self, report: &Mutex<PartnerReport>) {
        let mut r = report.lock().expect("no recorder panicked");
        r.read += self.read;
        r.withheld += self.withheld;
        r.unreadable = self.unreadable;
        for (day, f) in self.days {
            let sum = r.days.entry(day).or_default();
            sum.ready += f.ready;
            sum.withheld += f.withheld;
        }
    }
}

/// The sender: one request at a time; after it gave up or stopped, the
/// rest is left (`halted` tells the reader). The statements it still holds
/// once the last request went out are judged ([`PartnerSender::finish`]).
async fn send_requests(
    sender: &mut PartnerSender,
    mut requests: mpsc::Receiver<Vec<Item>>,
    outcomes: mpsc::Sender<(Vec<RequestOutcome>, OwnedSemaphorePermit)>,
    permits: Arc<Semaphore>,
    halted: &AtomicBool,
) -> anyhow::Result<()> {
    let permit = || async {
        // Taken before the request is journaled, given back once its
        // outcomes are recorded (by the recorder dropping it).
        permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    };
    while let Some(items) = requests.recv().await {
        if sender.gave_up() || sender.stopped().is_some() {
            halted.store(true, Ordering::Relaxed);
            requests.close();
            continue;
        }
        let permit = permit().await;
        let sent = sender.send(items).await?;
        if outcomes.send((sent, permit)).await.is_err() {
            return Ok(());
        }
    }
    let permit = permit().await;
    let _ = outcomes.send((sender.finish().await?, permit)).await;
    Ok(())
}

/// The recorders: up to `in_doubt` requests' outcomes recorded at once.
async fn record_outcomes(
    ctx: &JobContext,
    mut outcomes: mpsc::Receiver<(Vec<RequestOutcome>, OwnedSemaphorePermit)>,
    in_doubt: usize,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = running.next(), if !running.is_empty() => done?,
            next = outcomes.recv(), if running.len() < in_doubt => match next {
                Some((sent, permit)) => running.push(record_request(ctx, sent, permit, report)),
                None => break,
            },
        }
    }
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(())
}

/// Records one request's outcomes, then gives its permit back.
async fn record_request(
    ctx: &JobContext,
    sent: Vec<RequestOutcome>,
    permit: OwnedSemaphorePermit,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    for outcome in &sent {
        // Read READY by this run's cursor, under the group lock.
        record(ctx, outcome, Marks::JustRead, report).await?;
    }
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
        for (item, verdict) in outcome.items.iter().zip(&outcome.verdicts) {
            let day = r.days.entry(item.base_dt).or_default();
            match verdict {
                Verdict::Accepted => day.sent += 1,
                Verdict::Failed { .. } => day.failed += 1,
            }
        }
    }
    if let Some(id) = outcome.journal_id {
        Journal::delete(ctx.pg(), id).await?;
    }
    Ok(())
}

/// Sends again the requests a killed run left in the journal (of any date),
/// on their transfer at their own index when KERIS still knows the
/// transfer; the others are dropped from the journal and their `READY`
/// statements go out with the rest.
///
/// A journal row is deleted only once its request needs nothing more (sent
/// again and recorded, never received, or already recorded): a kill during
/// the resume leaves it for the next rerun. A transfer status KERIS cannot
/// give now (transient failure) ends the run with the journal untouched,
/// instead of sending the request's statements again on a new transfer.
async fn resume(
    ctx: &JobContext,
    window: &Window<'_>,
    sender: &mut PartnerSender,
    journal: &Journal,
    report: &Mutex<PartnerReport>,
) -> anyhow::Result<()> {
    let rows: Vec<(i64, String, i64, Vec<String>)> = sqlx::query_as(
        "SELECT request_id, transfer_id, chunked_index, statement_ids FROM batch_keris_request
          WHERE job_id = $1 AND partner_name = $2 AND part = $3
          ORDER BY request_id",
    )
    .bind(journal.job_id)
    .bind(&journal.partner_name)
    .bind(&journal.part)
    .fetch_all(ctx.pg())
    .await
    .context("Failed to read batch_keris_request")?;
    let mut statuses: HashMap<String, Option<(u64, Transfer)>> = HashMap::new();
    for (request_id, transfer_id, chunked_index, ids) in rows {
        if !statuses.contains_key(&transfer_id) {
            let status = transfer_status(sender, journal, &transfer_id).await?;
            statuses.insert(transfer_id.clone(), status);
        }
        let Some((kept, transfer)) = statuses[&transfer_id].clone() else {
            Journal::delete(ctx.pg(), request_id).await?;
            continue;
        };
        // KERIS never received this request: its statements are still READY
        // and go out with the rest.
        let items = if chunked_index as u64 > kept + 1 {
            None
        } else {
            in_doubt(ctx, window, &ids).await?
        };
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
        // Part of it may have been marked before the kill.
        for outcome in sender.send(items).await? {
            record(ctx, &outcome, Marks::Checked, report).await?;
        }
        Journal::delete(ctx.pg(), request_id).await?;
        if sender.stopped().is_some() {
            break;
        }
    }
    Ok(())
}

/// What KERIS holds of a transfer a killed run left requests in doubt on:
/// its last index and a handle to go on with it, or `None` when KERIS does
/// not know it (any more).
async fn transfer_status(
    sender: &PartnerSender,
    journal: &Journal,
    transfer_id: &str,
) -> anyhow::Result<Option<(u64, Transfer)>> {
    let status = match sender.client().transfer_status(transfer_id).await {
        Ok(s) => s.partner_access_token.map(|token| {
            (
                s.index,
                Transfer {
                    transfer_id: transfer_id.to_string(),
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
    Ok(status)
}

/// The statements of a request in doubt, in its order (or the indexes would
/// not match), to send again; `None` when there is nothing to send again on
/// its transfer: all recorded before the kill, one gone or unreadable, or a
/// student's statements withheld since (the others go out with the rest).
async fn in_doubt(
    ctx: &JobContext,
    window: &Window<'_>,
    ids: &[String],
) -> anyhow::Result<Option<Vec<Item>>> {
    let docs = load_stored(&ctx.app.mongo, ids, ctx.mongo_max_time()).await?;
    if docs
        .values()
        .all(|d| d.get_str("status").is_ok_and(|s| s != READY))
    {
        return Ok(None);
    }
    let items: Option<Vec<Item>> = ids
        .iter()
        .map(|id| docs.get(id).and_then(|d| Item::from_stored(d).ok()))
        .collect();
    Ok(items.filter(|items| !items.iter().any(|i| window.withholds(i))))
}
