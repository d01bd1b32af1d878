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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::late_statements::{self, Exceptions, Window};
use super::source::{self, Kind, Source};
use crate::config::LrsAggregateSettings;
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::jobs::shared::in_flight::run_in_flight;
use crate::jobs::shared::keris_batch_data;
use crate::jobs::shared::privacy;
use crate::runtime::registry::{JobDef, Lock, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;
use crate::xapi::{self, ProfileError};

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

pub const READY: &str = BatchStatus::Ready.as_str();
pub const INVALID: &str = BatchStatus::Invalid.as_str();

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
        let mut rebuilt = late_statements::rebuild_user_days(
            ctx, &settings, &window, &withheld, &ex.voided, &rebuilds,
        )
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

/// Whether a student's records are withheld from KERIS (no consent, grace
/// period passed). A user id that is no UUID names no LMS student.
pub fn is_withheld(withheld: &HashSet<Uuid>, user_id: &str) -> bool {
    !withheld.is_empty() && Uuid::parse_str(user_id).is_ok_and(|u| withheld.contains(&u))
}

/// Whether this run reports documents whose student cannot be read (so
/// belong to no partition): the unpartitioned run, or partition 0.
pub fn owns_unknown(ctx: &JobContext) -> bool {
    ctx.partition.is_none_or(|p| p.index == 0)
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

/// The day's non-voided source statements: what LRS-01-001 aggregates.
pub fn source_filter(date: NaiveDate) -> Document {
    let (start, end) = day_bounds(date);
    doc! { "timestamp": { "$gte": start, "$lt": end }, "voided": { "$ne": true } }
}

/// The order the [`Aggregator`] needs: each student's statements together.
pub fn source_sort() -> Document {
    doc! { "user_id": 1, "_id": 1 }
}

/// D 00:00 and D+1 00:00 in Asia/Seoul, as BSON dates.
pub fn day_bounds(date: NaiveDate) -> (Bson, Bson) {
    let start = time::start_of_day_seoul(date);
    let end = time::start_of_day_seoul(date.succ_opt().expect("date in range"));
    (
        Bson::DateTime(mongodb::bson::DateTime::from_millis(
            start.timestamp_millis(),
        )),
        Bson::DateTime(mongodb::bson::DateTime::from_millis(end.timestamp_millis())),
    )
}

/// The combined source statements of one (student, verb, object) and day,
/// or of the part of them one document covers.
#[derive(Debug, Default)]
pub struct Group {
    verb: Value,
    object: Value,
    /// The partner-id of the output: the document's, or a foreign extension value.
    partner_ext: Option<String>,
    attempts: u64,
    duration: Option<i64>,
    /// (timestamp ms, raw score) of the latest scored attempt.
    score: Option<(i64, Value)>,
    completion: Option<bool>,
    success: Option<bool>,
    /// standard id → (timestamp ms, achievement level).
    standards: BTreeMap<String, (i64, Value)>,
}

impl Group {
    /// Adds one source statement of the group (whose document's partner is
    /// `partner_id`).
    pub fn add(&mut self, src: &Source, partner_id: &str) {
        let statement = &src.statement;
        let ts = src.timestamp;
        if self.attempts == 0 {
            self.verb = statement.get("verb").cloned().unwrap_or(Value::Null);
            self.object = statement.get("object").cloned().unwrap_or(Value::Null);
        }
        self.attempts += 1;
        match xapi::partner_id(statement) {
            Some(p) if !p.eq_ignore_ascii_case(partner_id) => {
                self.partner_ext = Some(p.to_string())
            }
            None if self.partner_ext.is_none() => self.partner_ext = Some(String::new()),
            _ => {}
        }
        let Some(result) = statement.get("result") else {
            return;
        };
        let duration = result.get("duration");
        if let Some(secs) = duration
            .and_then(Value::as_str)
            .and_then(xapi::parse_duration_secs)
            .or_else(|| duration.and_then(Value::as_i64))
        {
            self.duration = Some(self.duration.unwrap_or(0) + secs);
        }
        if let Some(raw) = result.pointer("/score/raw") {
            if self.score.as_ref().is_none_or(|(t, _)| *t <= ts) {
                self.score = Some((ts, raw.clone()));
            }
        }
        if let Some(b) = result.get("completion").and_then(Value::as_bool) {
            self.completion = Some(self.completion.unwrap_or(false) || b);
        }
        if let Some(b) = result.get("success").and_then(Value::as_bool) {
            self.success = Some(self.success.unwrap_or(false) || b);
        }
        let standards = result
            .pointer("/extensions")
            .and_then(|e| e.get(xapi::EXT_CURRICULUM_STANDARD));
        for entry in standards.and_then(Value::as_array).into_iter().flatten() {
            let (Some(id), Some(level)) = (
                entry.get("id").and_then(Value::as_str),
                entry.get("achievement-level"),
            ) else {
                continue;
            };
            if self.standards.get(id).is_none_or(|(t, _)| *t <= ts) {
                self.standards.insert(id.to_string(), (ts, level.clone()));
            }
        }
    }
}

/// Which source statements one stored document covers: those of its group
/// whose `stored` lies in `(after, until]` (milliseconds; no lower bound
/// for the group's first document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub after: Option<i64>,
    pub until: i64,
}

/// What names one KERIS statement: its group and the stored window it covers.
#[derive(Debug, Clone)]
pub struct Key<'a> {
    pub date: NaiveDate,
    pub user_id: &'a str,
    pub partner_id: &'a str,
    pub verb_id: &'a str,
    pub object_id: &'a str,
}

/// One aggregated statement, ready to write.
#[derive(Debug)]
pub struct Output {
    pub id: String,
    pub base_dt: NaiveDate,
    pub partner_id: String,
    pub user_id: String,
    pub area: String,
    pub attempts: u64,
    pub coverage: Coverage,
    pub statement: Value,
    pub error: Option<ProfileError>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub statements: u64,
    pub per_partner: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub invalid_reasons: BTreeMap<String, u64>,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub kept: u64,
    /// Students of the day pass whose stored documents cover another
    /// window than this run's: their day is rebuilt window by window.
    pub irregular: Vec<String>,
}

impl Report {
    /// Adds another report's counts (a write batch's, the rebuilt days').
    pub fn merge(&mut self, other: Report) {
        self.statements += other.statements;
        for (partner, counts) in other.per_partner {
            let entry = self.per_partner.entry(partner).or_default();
            for (what, n) in counts {
                *entry.entry(what).or_default() += n;
            }
        }
        for (reason, n) in other.invalid_reasons {
            *self.invalid_reasons.entry(reason).or_default() += n;
        }
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.kept += other.kept;
        self.irregular.extend(other.irregular);
    }

    /// Counts outputs about to be written: per partner, ready or invalid
    /// (an invalid one's source statements are skipped).
    pub fn count_outputs(&mut self, ctx: &JobContext, outputs: &[Output]) {
        for out in outputs {
            self.statements += 1;
            let per = self.per_partner.entry(out.partner_id.clone()).or_default();
            match &out.error {
                None => *per.entry("ready").or_default() += 1,
                Some(e) => {
                    *per.entry("invalid").or_default() += 1;
                    *self
                        .invalid_reasons
                        .entry(e.code().to_string())
                        .or_default() += 1;
                    ctx.counts.add_skipped(out.attempts);
                }
            }
        }
    }
}

/// Groups the cursor's documents per student and turns each student's groups
/// into [`Output`]s: the groups' first documents, covering what was stored
/// up to [`Aggregator::stored_until`].
pub struct Aggregator {
    date: NaiveDate,
    settings: LrsAggregateSettings,
    now: chrono::DateTime<chrono::Utc>,
    /// The end of the stored window the outputs cover (ms).
    pub stored_until: i64,
    user: Option<(String, String)>,
    /// The last student seen, to catch a cursor that is not sorted by user.
    last_user: Option<String>,
    groups: HashMap<(String, String), Group>,
    pub pending: Vec<Output>,
    report: Report,
}

impl Aggregator {
    pub fn new(date: NaiveDate, settings: LrsAggregateSettings, _dry_run: bool) -> Self {
        Self {
            date,
            settings,
            now: chrono::Utc::now(),
            stored_until: i64::MAX,
            user: None,
            last_user: None,
            groups: HashMap::new(),
            pending: Vec::new(),
            report: Report::default(),
        }
    }

    /// Adds one source statement. Statements must come sorted by
    /// `user_id`: a student seen again after another one would get a
    /// second, partial aggregate written over the first, so that is refused
    /// (the message names no student: it ends in the run's history).
    pub fn add(&mut self, src: &Source) -> anyhow::Result<()> {
        if let Some(last) = &self.last_user {
            anyhow::ensure!(
                src.user_id >= *last,
                "the statements cursor is not sorted by user_id; nothing of the student is written"
            );
        }
        if self.last_user.as_deref() != Some(src.user_id.as_str()) {
            self.last_user = Some(src.user_id.clone());
        }
        if self.user.as_ref().is_some_and(|(u, _)| *u != src.user_id) {
            self.finish_user();
        }
        let partner = &self
            .user
            .get_or_insert_with(|| (src.user_id.clone(), src.partner_id.clone()))
            .1;
        let key = (src.verb_id().to_string(), src.object_id().to_string());
        self.groups.entry(key).or_default().add(src, partner);
        Ok(())
    }

    /// Turns the current student's groups into outputs.
    pub fn finish_user(&mut self) {
        let Some((user_id, partner_id)) = self.user.take() else {
            return;
        };
        let mut groups: Vec<_> = self.groups.drain().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let coverage = Coverage {
            after: None,
            until: self.stored_until,
        };
        for ((verb_id, object_id), group) in groups {
            let key = Key {
                date: self.date,
                user_id: &user_id,
                partner_id: &partner_id,
                verb_id: &verb_id,
                object_id: &object_id,
            };
            let id = first_id(&self.settings, &key);
            let out = output(&self.settings, self.now, &key, id, coverage, group);
            self.pending.push(out);
        }
    }

    /// Takes the pending outputs for writing and counts them in the report.
    fn take_batch(&mut self, ctx: &JobContext) -> Vec<Output> {
        let outputs = std::mem::take(&mut self.pending);
        self.report.count_outputs(ctx, &outputs);
        outputs
    }
}

/// The id of a group's first document: UUID v5 of `D|user|verb|object`.
pub fn first_id(settings: &LrsAggregateSettings, key: &Key) -> String {
    xapi::statement_id(
        &settings.id_namespace,
        key.date,
        key.user_id,
        key.verb_id,
        key.object_id,
    )
    .to_string()
}

/// The KERIS statement of a group (or of the part of it one window covers).
pub fn output(
    settings: &LrsAggregateSettings,
    now: chrono::DateTime<chrono::Utc>,
    key: &Key,
    id: String,
    coverage: Coverage,
    g: Group,
) -> Output {
    let area = xapi::area_of(key.verb_id).unwrap_or_default().to_string();
    let mut statement = Map::new();
    statement.insert("id".into(), json!(id));
    statement.insert(
        "actor".into(),
        json!({"objectType": "Agent", "account": {"homePage": settings.home_page, "name": key.user_id}}),
    );
    if !g.verb.is_null() {
        statement.insert("verb".into(), g.verb.clone());
    }
    if !g.object.is_null() {
        statement.insert("object".into(), g.object.clone());
    }
    statement.insert("result".into(), result_of(settings, &g));
    let partner_ext = match g.partner_ext {
        None => Some(key.partner_id.to_string()),
        Some(p) if p.is_empty() => None,
        Some(p) => Some(p),
    };
    let mut context_ext = Map::new();
    if let Some(p) = partner_ext {
        context_ext.insert(xapi::EXT_PARTNER_ID.into(), json!(p));
    }
    statement.insert(
        "context".into(),
        json!({"platform": settings.platform, "extensions": Value::Object(context_ext)}),
    );
    statement.insert(
        "timestamp".into(),
        json!(format!("{}T00:00:00.000+09:00", key.date)),
    );
    let statement = Value::Object(statement);
    let error = xapi::validate_at(&statement, Some(key.partner_id), now).err();
    Output {
        id,
        base_dt: key.date,
        partner_id: key.partner_id.to_string(),
        user_id: key.user_id.to_string(),
        area,
        attempts: g.attempts,
        coverage,
        statement,
        error,
    }
}

/// The `result` of a group's statement.
fn result_of(settings: &LrsAggregateSettings, g: &Group) -> Value {
    let mut result = Map::new();
    if let Some((_, raw)) = &g.score {
        result.insert("score".into(), json!({ "raw": raw }));
    }
    if let Some(b) = g.success {
        result.insert("success".into(), json!(b));
    }
    if let Some(b) = g.completion {
        result.insert("completion".into(), json!(b));
    }
    if let Some(d) = g.duration {
        result.insert("duration".into(), json!(d));
    }
    let mut ext = Map::new();
    if !settings.attempts_extension.is_empty() {
        ext.insert(settings.attempts_extension.clone(), json!(g.attempts));
    }
    if !g.standards.is_empty() {
        let list: Vec<Value> = g
            .standards
            .iter()
            .map(|(id, (_, level))| json!({"id": id, "achievement-level": level}))
            .collect();
        ext.insert(xapi::EXT_CURRICULUM_STANDARD.into(), Value::Array(list));
    }
    result.insert("extensions".into(), Value::Object(ext));
    Value::Object(result)
}

/// The stored document of an output (without `_id`, `created_at`,
/// `updated_at`), as raw BSON: serialized straight to bytes, with no
/// `Document` tree in between — the job writes about one document per
/// statement it reads, and building trees (then encoding them for the
/// driver) took a third of its CPU. `stored_after`/`stored_until` record
/// the window of `stored` the document covers (see [`Coverage`]).
fn stored(out: &Output) -> anyhow::Result<RawDocumentBuf> {
    let statement = mongodb::bson::to_raw_document_buf(&xapi::encode_keys(out.statement.clone()))
        .context("Failed to convert a statement to BSON")?;
    let mut d = RawDocumentBuf::new();
    d.append("base_dt", out.base_dt.to_string());
    d.append("partner_id", out.partner_id.clone());
    d.append("user_id", out.user_id.clone());
    // DC-01-001's partitions read their students by a range of this.
    d.append(
        "user_hash",
        crate::runtime::partition::user_hash(&out.user_id),
    );
    d.append("area", out.area.clone());
    d.append("statement", statement);
    let status = if out.error.is_some() { INVALID } else { READY };
    d.append("status", status.to_string());
    if let Some(e) = &out.error {
        d.append("err_code", e.code().to_string());
        d.append("err_msg", e.to_string());
    }
    if let Some(after) = out.coverage.after {
        d.append("stored_after", mongodb::bson::DateTime::from_millis(after));
    }
    d.append(
        "stored_until",
        mongodb::bson::DateTime::from_millis(out.coverage.until),
    );
    Ok(d)
}

/// Statements per `update` command when rewriting changed statements.
const UPDATES_PER_COMMAND: usize = 100;

/// Inserts the new outputs, updates the READY/INVALID ones that changed,
/// leaves SENT/ERROR ones alone. Returns the documents written.
///
/// Insert first (`ordered(false)`): the ids that already exist come back as
/// duplicate-key errors (11000). Those are read back in one `find` by
/// `_id $in` and the changed ones rewritten by `_id`-filtered statements of
/// unordered `update` commands: a rerun over a day costs a few round trips
/// per batch, not two per statement, and holds one batch at a time.
///
/// `check_coverage` (the day pass): a stored document that covers another
/// window of `stored` than the output is not compared but its student
/// listed in [`Report::irregular`], to be rebuilt window by window.
pub async fn write_outputs(
    db: &mongodb::Database,
    outputs: &[Output],
    report: &mut Report,
    check_coverage: bool,
    max_time: Duration,
) -> anyhow::Result<u64> {
    if outputs.is_empty() {
        return Ok(0);
    }
    let coll = db.collection::<RawDocumentBuf>(KERIS_BATCH_DATA);
    let now = mongodb::bson::DateTime::now();
    let mut inserts = Vec::with_capacity(outputs.len());
    for out in outputs {
        let mut new = stored(out)?;
        new.append("_id", out.id.clone());
        new.append("created_at", now);
        new.append("updated_at", now);
        inserts.push(new);
    }
    let n = inserts.len() as u64;
    let duplicates: Vec<usize> = match coll.insert_many(inserts).ordered(false).await {
        Ok(_) => Vec::new(),
        Err(e) => match *e.kind {
            mongodb::error::ErrorKind::InsertMany(ref failure)
                if failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|w| w.iter().all(|x| x.code == 11000))
                    && failure.write_concern_error.is_none() =>
            {
                failure
                    .write_errors
                    .as_ref()
                    .map(|w| w.iter().map(|x| x.index).collect())
                    .unwrap_or_default()
            }
            _ => return Err(e).context("Failed to insert into keris_batch_data"),
        },
    };
    let inserted = n - duplicates.len() as u64;
    report.inserted += inserted;
    if duplicates.is_empty() {
        return Ok(inserted);
    }
    let ids: Vec<String> = duplicates.iter().map(|&i| outputs[i].id.clone()).collect();
    let existing = keris_batch_data::find_by_ids(db, &ids, None, max_time)
        .await
        .context("Failed to read keris_batch_data")?;
    let mut updates = Vec::new();
    for index in duplicates {
        let out = &outputs[index];
        let Some(old) = existing.get(&out.id) else {
            // Deleted since the insert (DC-01-003): nothing to compare with.
            continue;
        };
        if check_coverage && coverage_of(old) != Some(out.coverage) {
            report.irregular.push(out.user_id.clone());
            continue;
        }
        let status = old.get_str("status").unwrap_or_default();
        if status != READY && status != INVALID {
            report.kept += 1;
            continue;
        }
        let mut new = stored(out)?
            .to_document()
            .context("Failed to read back a statement's BSON")?;
        let same = new.iter().all(|(k, v)| old.get(k) == Some(v))
            && (out.error.is_some() || old.get("err_code").is_none());
        if same {
            report.unchanged += 1;
            continue;
        }
        new.insert("updated_at", now);
        let mut update = doc! { "$set": new };
        if out.error.is_none() {
            update.insert("$unset", doc! { "err_code": "", "err_msg": "" });
        }
        // Only over READY/INVALID: a statement sent meanwhile stays as sent.
        updates.push(doc! {
            "q": { "_id": &out.id, "status": { "$in": [READY, INVALID] } },
            "u": update,
        });
    }
    let updated = keris_batch_data::run_updates(db, &updates, UPDATES_PER_COMMAND)
        .await
        .context("Failed to update keris_batch_data")?;
    report.updated += updated;
    Ok(inserted + updated)
}

/// The window of `stored` a stored document covers; `None` for a document
/// written before documents recorded it.
pub fn coverage_of(stored: &Document) -> Option<Coverage> {
    let until = stored.get_datetime("stored_until").ok()?.timestamp_millis();
    let after = stored
        .get_datetime("stored_after")
        .ok()
        .map(|d| d.timestamp_millis());
    Some(Coverage { after, until })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(user: &str) -> Source {
        Source {
            id: String::new(),
            user_id: user.into(),
            partner_id: "p".into(),
            timestamp: 0,
            stored: 0,
            voided: false,
            statement: json!({ "actor": {} }),
        }
    }

    #[test]
    fn a_student_seen_again_after_another_one_is_refused_without_naming_either() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        let mut agg = Aggregator::new(date, LrsAggregateSettings::default(), true);
        for user in ["a-student", "a-student", "b-student"] {
            agg.add(&src(user)).unwrap();
        }
        let err = agg.add(&src("a-student")).unwrap_err().to_string();
        assert!(err.contains("not sorted by user_id"), "{err}");
        assert!(!err.contains("student\""), "{err}");
    }
}
