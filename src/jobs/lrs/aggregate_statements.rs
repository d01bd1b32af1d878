//! LRS-01-001 — aggregate the day's xAPI statements into KERIS statements.
//!
//! For the business date D (default yesterday, Asia/Seoul) reads the
//! non-voided documents of `statements` whose `timestamp` lies within D
//! (00:00–24:00 +09:00) as a cursor sorted by `(user_id, _id)`, and keeps in
//! memory only the current student's groups: when `user_id` changes, the
//! student's groups are turned into KERIS-profile statements. Memory stays
//! flat whatever the day's volume (one student's statements at most). Only
//! statements the LRS stored up to the end of D are taken; those stored
//! later, and late statements of the days before D, are handled window by
//! window of `stored` ([`late_statements`]: watermark, voiding statements,
//! rebuilt student-days). A document that cannot be read is skipped and
//! named by `_id` ([`source`]); students withheld by the privacy rule
//! ([`privacy::withheld_students`]) are left out.
//!
//! One KERIS statement per (student, verb id, object id): durations summed in
//! integer seconds, the number of source statements in the vendor's result
//! extension `[jobs.lrs_aggregate] attempts_extension`, the last score (by timestamp),
//! `completion`/`success` true if any attempt had it, the latest achievement
//! level per standard id in the curriculum-standard extension. `timestamp` is
//! D 00:00:00.000+09:00; `id` a UUID v5 of `"{D}|{user}|{verb}|{object}"` in
//! the configured namespace, so reruns and resends are idempotent.
//!
//! Each statement is checked against the profile ([`crate::xapi`]); a
//! statement that fails is written with status `INVALID`, `err_code` and
//! `err_msg` (never `READY`) and counted as skipped. A group whose source
//! statements carry a partner-id extension different from the document's
//! `partner_id` keeps that foreign value and so fails as `PARTNER_MISMATCH`.
//! A source timestamp string without offset does not matter: the document's
//! `timestamp` (a Date) places it in the day and the output has its own.
//!
//! Reading accepts extension keys with their dots (an LRS on MongoDB 5+) and
//! with the legacy `&46;` encoding alike ([`xapi::decode_keys`]).
//!
//! Writing (`keris_batch_data`, keys stored with `&46;`: why in
//! [`xapi::encode_keys`]):
//! per batch of `batch_size` statements, all are inserted (unordered);
//! the ids that already exist (duplicate key) are read back in one `find`:
//! `READY`/`INVALID` ones whose content changed are updated (`_id`-filtered
//! statements of unordered `update` commands), `SENT`/`ERROR` ones are never
//! touched ("kept"). A rerun therefore writes nothing new, in a few round
//! trips per batch. No transactions needed.
//!
//! Partitions (`--partition I/N`): every document written carries
//! `user_hash` ([`crate::runtime::partition::user_hash`] of its student), so
//! DC-01-001's partitions can read their students by an index range. The
//! LRS's `statements` carry no such field: a partition reads the whole day
//! and aggregates only its own students' statements.
//!
//! Counts: read = source statements read (non-voided), written = documents
//! inserted, updated or deleted, skipped = voided, voiding, undecodable,
//! withheld and too-late source statements + those of INVALID groups.
//! `--dry-run` computes and reports, writes nothing (the watermark stays).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document, RawDocument, RawDocumentBuf};
use uuid::Uuid;

use super::aggregation::late_statements::{self, Exceptions, Window};
use super::aggregation::rebuild;
use super::aggregation::source::{self, Kind, Source};
use super::aggregation::{
    day_bounds, in_flight::run_in_flight, is_withheld, owns_unknown, source_filter, source_sort,
    write_outputs, Aggregator, Output, Report,
};
use crate::config::LrsAggregateSettings;
use crate::jobs::shared::privacy;
use crate::runtime::registry::{JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LRS-01-001";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lrs,
    name_ko: "공공 배치데이터 집계(xAPI) 일배치",
    name_en: "Aggregate public batch data (xAPI), daily",
    about: "Aggregates the business date's LRS statements (statements) per (student, verb, object) into KERIS statements in keris_batch_data (READY, or INVALID with the reason); statements already SENT or in error are kept, so a rerun changes only what changed.",
    schedule: Schedule::Cron("10 0 * * *"),
    lock: Lock::Group(crate::jobs::KERIS_XAPI_LOCK),
    lock_wait_secs: 3600,
    partitioned: true,
    job: Some(&AggregateStatements),
    timeouts: Timeouts::DAY_STREAM,
    ..JobDef::DEFAULTS
};

pub struct AggregateStatements;

#[async_trait::async_trait]
impl Job for AggregateStatements {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings = ctx.settings().jobs.lrs_aggregate.clone();
        let window = Window::open(ctx, &settings).await?;
        let withheld = privacy::withheld_students(ctx.pg(), &privacy::sending_rule(ctx))
            .await
            .context("Failed to read the students whose records are withheld")?;
        let mut ex = Exceptions::new(settings.max_reported_ids);
        count_voided(ctx).await?;
        set_progress_total(ctx).await;

        let mut report = day_pass(ctx, &settings, &window, &withheld, &mut ex).await?;
        ctx.stop_point()?;
        let mut rebuilds: BTreeSet<(String, NaiveDate)> = std::mem::take(&mut report.irregular)
            .into_iter()
            .map(|user| (user, ctx.business_date))
            .collect();
        let late =
            late_statements::late_pass(ctx, &window, &withheld, &mut ex, &mut rebuilds).await?;
        late_statements::voided_targets(ctx, &window, &mut ex, &mut rebuilds).await?;
        ctx.stop_point()?;
        let mut rebuilt =
            rebuild::rebuild_user_days(ctx, &settings, &window, &withheld, &ex.voided, &rebuilds)
                .await?;
        if !ctx.dry_run {
            ctx.counts
                .add_written(rebuilt.report.inserted + rebuilt.report.updated + rebuilt.deleted);
        }
        ex.add_voided_after_sent(std::mem::take(&mut rebuilt.voided_after_sent));
        window.set_details(ctx, &late, &rebuilt);
        report.merge(std::mem::take(&mut rebuilt.report));
        set_details(ctx, &report)?;
        ex.set_details(ctx);
        if !ctx.dry_run {
            window.commit(ctx).await?;
        }
        Ok(())
    }
}

/// Counts the business date's statements the LRS marked voided (skipped).
async fn count_voided(ctx: &JobContext) -> anyhow::Result<()> {
    let source = ctx
        .app
        .mongo
        .collection::<Document>(crate::contract::STATEMENTS);
    let (start, end) = day_bounds(ctx.business_date);
    let voided_filter = doc! { "timestamp": { "$gte": start, "$lt": end }, "voided": true };
    let voided = match ctx.partition {
        None => source
            .count_documents(voided_filter)
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to count the voided statements")?,
        Some(_) => {
            // The LRS's documents carry no partition hash: count ours by user id.
            let mut cursor = source
                .find(voided_filter)
                .projection(doc! { "_id": 0, "user_id": 1 })
                .max_time(ctx.mongo_max_time())
                .await
                .context("Failed to count the voided statements")?;
            let mut ours = 0;
            while let Some(d) = cursor
                .try_next()
                .await
                .context("Failed to count the voided statements")?
            {
                ours += u64::from(ctx.owns_user(d.get_str("user_id").unwrap_or_default()));
            }
            ours
        }
    };
    ctx.counts.add_skipped(voided);
    ctx.set_detail("voided", voided);
    Ok(())
}

async fn set_progress_total(ctx: &JobContext) {
    let source = ctx
        .app
        .mongo
        .collection::<Document>(crate::contract::STATEMENTS);
    ctx.progress
        .set_total_with(|| async {
            // A partition's share is estimated: the LRS's documents carry
            // no partition hash to count by.
            let all = source
                .count_documents(source_filter(ctx.business_date))
                .max_time(ctx.mongo_max_time())
                .await?;
            Ok(all / ctx.partition.map_or(1, |p| u64::from(p.count)))
        })
        .await;
}

/// The business date's statements stored up to the window's end, streamed
/// by student and aggregated into one statement per group (the group's
/// first document, covering everything stored up to the cutoff). Groups
/// whose stored document covers another window are left to
/// [`late_statements::rebuild_user_days`] (`Report::irregular`).
async fn day_pass(
    ctx: &JobContext,
    settings: &LrsAggregateSettings,
    window: &Window,
    withheld: &HashSet<Uuid>,
    ex: &mut Exceptions,
) -> anyhow::Result<Report> {
    let mut agg = Aggregator::new(ctx.business_date, settings.clone(), ctx.dry_run);
    agg.stored_until = window.until;
    let db = &ctx.app.mongo;
    let source = db.collection::<Document>(crate::contract::STATEMENTS);
    // A day sorted by student is bigger than the 100 MB a server sorts
    // in memory: let it spill to disk (MongoDB 6+ does by default, 5 not).
    // Raw documents: only the few fields needed are decoded ([`source::decode`]).
    let mut cursor = source
        .clone_with_type::<RawDocumentBuf>()
        .find(source_filter(ctx.business_date))
        .sort(source_sort())
        .allow_disk_use(true)
        .batch_size(settings.batch_size)
        .max_time(ctx.mongo_max_time())
        .await
        .context("Failed to read the statements")?;
    // Reading and aggregating overlap with writing, and writing — the
    // slow side: a database inserts with indexes several times slower
    // than it reads — runs `writes_in_flight` batches at once, each as a
    // task of its own (its own connection, and a worker thread for the
    // batch's BSON while this one reads). Batches hold whole students
    // and distinct ids, so their order does not matter; a batch left
    // half-written by a crash is finished by the rerun's duplicate path.
    let batch_size = settings.batch_size as usize;
    let in_flight = settings.writes_in_flight.max(1) as usize;
    let (dry_run, max_time) = (ctx.dry_run, ctx.mongo_max_time());
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Vec<Output>>(in_flight);
    let reading = async {
        while let Some(raw) = cursor
            .try_next()
            .await
            .context("Failed to read the statements")?
        {
            let Some(src) = take(ctx, window, withheld, ex, &raw) else {
                continue;
            };
            agg.add(&src)?;
            if agg.pending.len() >= batch_size
                && (batch_tx.send(agg.take_batch(ctx)).await.is_err() || ctx.stop_requested())
            {
                return Ok(());
            }
        }
        agg.finish_user();
        let _ = batch_tx.send(agg.take_batch(ctx)).await;
        drop(batch_tx);
        Ok::<_, anyhow::Error>(())
    };
    let writing = async {
        let mut report = Report::default();
        let write_batch = |outputs: Vec<Output>| {
            let db = db.clone();
            async move {
                let mut batch = Report::default();
                if dry_run {
                    batch.inserted = outputs.len() as u64;
                    return anyhow::Ok((0, batch));
                }
                let written = write_outputs(&db, &outputs, &mut batch, true, max_time).await?;
                Ok((written, batch))
            }
        };
        run_in_flight(batch_rx, in_flight, write_batch, |(written, batch)| {
            ctx.counts.add_written(written);
            report.merge(batch);
            Ok(())
        })
        .await?;
        Ok::<_, anyhow::Error>(report)
    };
    let ((), written) = tokio::try_join!(reading, writing)?;
    ctx.stop_point()?;
    agg.report.merge(written);
    Ok(agg.report)
}

/// Decodes one document of the day pass and decides whether it is
/// aggregated: undecodable ones, voiding statements, withheld students'
/// statements are counted (and skipped); statements stored after the
/// window's end are the next run's.
fn take(
    ctx: &JobContext,
    window: &Window,
    withheld: &HashSet<Uuid>,
    ex: &mut Exceptions,
    raw: &RawDocument,
) -> Option<Source> {
    let src = match source::decode(raw) {
        Ok(src) => src,
        Err(bad) => {
            if owns_unknown(ctx) {
                ex.undecodable(bad);
                ctx.counts.add_skipped(1);
            }
            return None;
        }
    };
    // A partition reads the whole day and keeps its students: the
    // LRS's documents carry no partition hash an index could serve.
    if !ctx.owns_user(&src.user_id) {
        return None;
    }
    if src.stored > window.until {
        ex.after_cutoff += 1;
        return None;
    }
    ctx.counts.add_read(1);
    if let Kind::Voiding { target } = src.kind() {
        ex.voiding(target, window.is_new(src.stored));
        ctx.counts.add_skipped(1);
        return None;
    }
    if is_withheld(withheld, &src.user_id) {
        ex.withheld += 1;
        ctx.counts.add_skipped(1);
        return None;
    }
    Some(src)
}

/// The day's figures in the run's details.
fn set_details(ctx: &JobContext, report: &Report) -> anyhow::Result<()> {
    ctx.set_detail("statements", report.statements);
    ctx.set_detail(
        "per_partner",
        per_partner_by_name(&ctx.settings().keris, &report.per_partner)?,
    );
    ctx.set_detail("invalid_reasons", &report.invalid_reasons);
    ctx.set_detail("kept_sent_or_error", report.kept);
    ctx.set_detail("unchanged", report.unchanged);
    ctx.set_detail(
        if ctx.dry_run {
            "would_write"
        } else {
            "inserted"
        },
        report.inserted,
    );
    if !ctx.dry_run {
        ctx.set_detail("updated", report.updated);
    }
    Ok(())
}

/// The counts per Partner-ID under the partners' configuration names: a
/// Partner-ID is a credential and never goes into a run's details or logs.
/// Ids no partner is configured with are counted together.
fn per_partner_by_name(
    keris: &crate::config::KerisSettings,
    by_id: &BTreeMap<String, BTreeMap<&'static str, u64>>,
) -> anyhow::Result<BTreeMap<String, BTreeMap<&'static str, u64>>> {
    let names = crate::jobs::shared::partners::partners_by_id(keris)?;
    let mut by_name: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (id, counts) in by_id {
        let name = names
            .get(id)
            .cloned()
            .unwrap_or_else(|| NOT_CONFIGURED.to_string());
        let entry = by_name.entry(name).or_default();
        for (what, n) in counts {
            *entry.entry(what).or_default() += n;
        }
    }
    Ok(by_name)
}

/// The `per_partner` name of Partner-IDs no partner is configured with.
const NOT_CONFIGURED: &str = "(not configured)";
