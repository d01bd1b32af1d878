//! LRS-01-001 — aggregate the day's xAPI statements into KERIS statements.
//!
//! For the business date D (default yesterday, Asia/Seoul) reads the
//! non-voided documents of `statements` whose `timestamp` lies within D
//! (00:00–24:00 +09:00) as a cursor sorted by `(user_id, _id)`, and keeps in
//! memory only the current student's groups: when `user_id` changes, the
//! student's groups are turned into KERIS-profile statements. Memory stays
//! flat whatever the day's volume (one student's statements at most).
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
//! inserted or updated, skipped = voided source statements + source
//! statements of INVALID groups. `--dry-run` computes and reports, writes
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use serde_json::{json, Map, Value};

use crate::config::LrsAggregateSettings;
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::jobs::shared::in_flight::run_in_flight;
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
        let mut agg = Aggregator::new(ctx.business_date, settings, ctx.dry_run);
        let db = &ctx.app.mongo;
        let source = db.collection::<Document>(crate::contract::STATEMENTS);
        let (start, end) = day_bounds(ctx.business_date);
        let voided_filter =
            doc! { "timestamp": { "$gte": start.clone(), "$lt": end.clone() }, "voided": true };
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

        // A day sorted by student is bigger than the 100 MB a server sorts
        // in memory: let it spill to disk (MongoDB 6+ does by default, 5 not).
        // Raw documents: the aggregator takes the few fields it needs from
        // the bytes (see [`Aggregator::add`]).
        let mut cursor = source
            .clone_with_type::<RawDocumentBuf>()
            .find(source_filter(ctx.business_date))
            .sort(source_sort())
            .allow_disk_use(true)
            .batch_size(agg.settings.batch_size)
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
        let batch_size = agg.settings.batch_size as usize;
        let in_flight = agg.settings.writes_in_flight.max(1) as usize;
        let (date, dry_run, max_time) = (agg.date, agg.dry_run, ctx.mongo_max_time());
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Vec<Output>>(in_flight);
        let reading = async {
            while let Some(source_doc) = cursor
                .try_next()
                .await
                .context("Failed to read the statements")?
            {
                // A partition reads the whole day and keeps its students: the
                // LRS's documents carry no partition hash an index could serve.
                if !ctx.owns_user(source_doc.get_str("user_id").unwrap_or_default()) {
                    continue;
                }
                ctx.counts.add_read(1);
                agg.add(&source_doc)?;
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
                    if outputs.is_empty() {
                        return Ok((0, batch));
                    }
                    let written = write_outputs(&db, date, &outputs, &mut batch, max_time).await?;
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

        ctx.set_detail("statements", agg.report.statements);
        ctx.set_detail(
            "per_partner",
            per_partner_by_name(&ctx.settings().keris, &agg.report.per_partner)?,
        );
        ctx.set_detail("invalid_reasons", &agg.report.invalid_reasons);
        ctx.set_detail("kept_sent_or_error", agg.report.kept);
        ctx.set_detail("unchanged", agg.report.unchanged);
        ctx.set_detail(
            if ctx.dry_run {
                "would_write"
            } else {
                "inserted"
            },
            agg.report.inserted,
        );
        if !ctx.dry_run {
            ctx.set_detail("updated", agg.report.updated);
        }
        Ok(())
    }
}

/// The counts per Partner-ID under the partners' configuration names: a
/// Partner-ID is a credential and never goes into a run's details or logs.
/// Ids no partner is configured with are counted together.
fn per_partner_by_name(
    keris: &crate::config::KerisSettings,
    by_id: &BTreeMap<String, BTreeMap<&'static str, u64>>,
) -> anyhow::Result<BTreeMap<String, BTreeMap<&'static str, u64>>> {
    let names = crate::jobs::shared::transfer::partners_by_id(keris)?;
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

/// The combined source statements of one (student, verb, object).
#[derive(Debug, Default)]
struct Group {
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

/// One aggregated statement, ready to write.
#[derive(Debug)]
pub struct Output {
    pub id: String,
    pub partner_id: String,
    pub user_id: String,
    pub area: String,
    pub attempts: u64,
    pub statement: Value,
    pub error: Option<ProfileError>,
}

#[derive(Debug, Default)]
struct Report {
    statements: u64,
    per_partner: BTreeMap<String, BTreeMap<&'static str, u64>>,
    invalid_reasons: BTreeMap<String, u64>,
    inserted: u64,
    updated: u64,
    unchanged: u64,
    kept: u64,
}

impl Report {
    /// Adds a write batch's outcome (its counts of what was written).
    fn merge(&mut self, write: Report) {
        self.inserted += write.inserted;
        self.updated += write.updated;
        self.unchanged += write.unchanged;
        self.kept += write.kept;
    }
}

/// Groups the cursor's documents per student and turns each student's groups
/// into [`Output`]s.
pub struct Aggregator {
    date: NaiveDate,
    settings: LrsAggregateSettings,
    dry_run: bool,
    now: chrono::DateTime<chrono::Utc>,
    user: Option<(String, String)>,
    /// The last student seen, to catch a cursor that is not sorted by user.
    last_user: Option<String>,
    groups: HashMap<(String, String), Group>,
    pub pending: Vec<Output>,
    report: Report,
}

impl Aggregator {
    pub fn new(date: NaiveDate, settings: LrsAggregateSettings, dry_run: bool) -> Self {
        Self {
            date,
            settings,
            dry_run,
            now: chrono::Utc::now(),
            user: None,
            last_user: None,
            groups: HashMap::new(),
            pending: Vec::new(),
            report: Report::default(),
        }
    }

    /// Adds one source document, read raw: only `user_id`, `partner_id`,
    /// `timestamp` and the statement are taken from its bytes, the
    /// statement deserialized straight into JSON (no `Document` tree; the
    /// job reads every statement of the day). Documents must come sorted by
    /// `user_id`: a student seen again after another one would get a
    /// second, partial aggregate written over the first, so that is refused.
    pub fn add(&mut self, source: &RawDocument) -> anyhow::Result<()> {
        let user_id = source.get_str("user_id").unwrap_or_default().to_string();
        let partner_id = source.get_str("partner_id").unwrap_or_default().to_string();
        if let Some(last) = &self.last_user {
            anyhow::ensure!(
                user_id >= *last,
                "the statements cursor is not sorted by user_id ({user_id:?} after {last:?}); nothing of this student is written"
            );
        }
        if self.last_user.as_deref() != Some(user_id.as_str()) {
            self.last_user = Some(user_id.clone());
        }
        if self.user.as_ref().is_some_and(|(u, _)| *u != user_id) {
            self.finish_user();
        }
        if self.user.is_none() {
            self.user = Some((user_id, partner_id.clone()));
        }
        let ts = source
            .get_datetime("timestamp")
            .map_or(0, |d| d.timestamp_millis());
        let statement = match source.get_document("statement") {
            Ok(d) => xapi::decode_keys(statement_json(d)?),
            Err(_) => Value::Null,
        };
        let verb_id = statement
            .pointer("/verb/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let object_id = statement
            .pointer("/object/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let group = self.groups.entry((verb_id, object_id)).or_default();
        if group.attempts == 0 {
            group.verb = statement.get("verb").cloned().unwrap_or(Value::Null);
            group.object = statement.get("object").cloned().unwrap_or(Value::Null);
        }
        group.attempts += 1;
        match xapi::partner_id(&statement) {
            Some(p) if !p.eq_ignore_ascii_case(&partner_id) => {
                group.partner_ext = Some(p.to_string())
            }
            None if group.partner_ext.is_none() => group.partner_ext = Some(String::new()),
            _ => {}
        }
        let Some(result) = statement.get("result") else {
            return Ok(());
        };
        if let Some(secs) = result
            .get("duration")
            .and_then(Value::as_str)
            .and_then(xapi::parse_duration_secs)
        {
            group.duration = Some(group.duration.unwrap_or(0) + secs);
        } else if let Some(secs) = result.get("duration").and_then(Value::as_i64) {
            group.duration = Some(group.duration.unwrap_or(0) + secs);
        }
        if let Some(raw) = result.pointer("/score/raw") {
            if group.score.as_ref().is_none_or(|(t, _)| *t <= ts) {
                group.score = Some((ts, raw.clone()));
            }
        }
        if let Some(b) = result.get("completion").and_then(Value::as_bool) {
            group.completion = Some(group.completion.unwrap_or(false) || b);
        }
        if let Some(b) = result.get("success").and_then(Value::as_bool) {
            group.success = Some(group.success.unwrap_or(false) || b);
        }
        if let Some(list) = result
            .pointer("/extensions")
            .and_then(|e| e.get(xapi::EXT_CURRICULUM_STANDARD))
        {
            for entry in list.as_array().into_iter().flatten() {
                let (Some(id), Some(level)) = (
                    entry.get("id").and_then(Value::as_str),
                    entry.get("achievement-level"),
                ) else {
                    continue;
                };
                if group.standards.get(id).is_none_or(|(t, _)| *t <= ts) {
                    group.standards.insert(id.to_string(), (ts, level.clone()));
                }
            }
        }
        Ok(())
    }

    /// Turns the current student's groups into outputs.
    pub fn finish_user(&mut self) {
        let Some((user_id, partner_id)) = self.user.take() else {
            return;
        };
        let mut groups: Vec<_> = self.groups.drain().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for ((verb_id, object_id), group) in groups {
            let out = self.output(&user_id, &partner_id, &verb_id, &object_id, group);
            self.pending.push(out);
        }
    }

    fn output(
        &mut self,
        user_id: &str,
        partner_id: &str,
        verb_id: &str,
        object_id: &str,
        g: Group,
    ) -> Output {
        let id = xapi::statement_id(
            &self.settings.id_namespace,
            self.date,
            user_id,
            verb_id,
            object_id,
        )
        .to_string();
        let area = xapi::area_of(verb_id).unwrap_or_default().to_string();
        let mut statement = Map::new();
        statement.insert("id".into(), json!(id));
        statement.insert(
            "actor".into(),
            json!({"objectType": "Agent", "account": {"homePage": self.settings.home_page, "name": user_id}}),
        );
        if !g.verb.is_null() {
            statement.insert("verb".into(), g.verb);
        }
        if !g.object.is_null() {
            statement.insert("object".into(), g.object);
        }
        let mut result = Map::new();
        if let Some((_, raw)) = g.score {
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
        if !self.settings.attempts_extension.is_empty() {
            ext.insert(self.settings.attempts_extension.clone(), json!(g.attempts));
        }
        if !g.standards.is_empty() {
            let list: Vec<Value> = g
                .standards
                .into_iter()
                .map(|(id, (_, level))| json!({"id": id, "achievement-level": level}))
                .collect();
            ext.insert(xapi::EXT_CURRICULUM_STANDARD.into(), Value::Array(list));
        }
        result.insert("extensions".into(), Value::Object(ext));
        statement.insert("result".into(), Value::Object(result));
        let partner_ext = match g.partner_ext {
            None => Some(partner_id.to_string()),
            Some(p) if p.is_empty() => None,
            Some(p) => Some(p),
        };
        let mut context_ext = Map::new();
        if let Some(p) = partner_ext {
            context_ext.insert(xapi::EXT_PARTNER_ID.into(), json!(p));
        }
        statement.insert(
            "context".into(),
            json!({"platform": self.settings.platform, "extensions": Value::Object(context_ext)}),
        );
        statement.insert(
            "timestamp".into(),
            json!(format!("{}T00:00:00.000+09:00", self.date)),
        );
        let statement = Value::Object(statement);
        let error = xapi::validate_at(&statement, Some(partner_id), self.now).err();
        Output {
            id,
            partner_id: partner_id.to_string(),
            user_id: user_id.to_string(),
            area,
            attempts: g.attempts,
            statement,
            error,
        }
    }

    /// Takes the pending outputs for writing and counts them in the report.
    fn take_batch(&mut self, ctx: &JobContext) -> Vec<Output> {
        let outputs = std::mem::take(&mut self.pending);
        for out in &outputs {
            self.report.statements += 1;
            let per = self
                .report
                .per_partner
                .entry(out.partner_id.clone())
                .or_default();
            match &out.error {
                None => *per.entry("ready").or_default() += 1,
                Some(e) => {
                    *per.entry("invalid").or_default() += 1;
                    *self
                        .report
                        .invalid_reasons
                        .entry(e.code().to_string())
                        .or_default() += 1;
                    ctx.counts.add_skipped(out.attempts);
                }
            }
        }
        outputs
    }
}

/// A source statement as JSON, deserialized from its bytes. JSON's own
/// types (strings, numbers, booleans, arrays, objects) come out as the
/// driver's relaxed Extended JSON gives them; a statement holding a BSON
/// type plain JSON cannot take (binary data) takes the driver's path.
fn statement_json(raw: &RawDocument) -> anyhow::Result<Value> {
    match mongodb::bson::from_slice::<Value>(raw.as_bytes()) {
        Ok(v) => Ok(v),
        Err(_) => {
            let doc =
                Document::try_from(raw).context("Failed to read a source statement's BSON")?;
            Ok(Bson::Document(doc).into_relaxed_extjson())
        }
    }
}

/// The stored document of an output (without `_id`, `created_at`,
/// `updated_at`), as raw BSON: serialized straight to bytes, with no
/// `Document` tree in between — the job writes about one document per
/// statement it reads, and building trees (then encoding them for the
/// driver) took a third of its CPU.
fn stored(date: NaiveDate, out: &Output) -> anyhow::Result<RawDocumentBuf> {
    let statement = mongodb::bson::to_raw_document_buf(&xapi::encode_keys(out.statement.clone()))
        .context("Failed to convert a statement to BSON")?;
    let mut d = RawDocumentBuf::new();
    d.append("base_dt", date.to_string());
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
async fn write_outputs(
    db: &mongodb::Database,
    date: NaiveDate,
    outputs: &[Output],
    report: &mut Report,
    max_time: Duration,
) -> anyhow::Result<u64> {
    let coll = db.collection::<RawDocumentBuf>(KERIS_BATCH_DATA);
    let now = mongodb::bson::DateTime::now();
    let mut inserts = Vec::with_capacity(outputs.len());
    for out in outputs {
        let mut new = stored(date, out)?;
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
    let existing =
        crate::jobs::shared::transfer::find_by_ids(db, KERIS_BATCH_DATA, &ids, None, max_time)
            .await
            .context("Failed to read keris_batch_data")?;
    let mut updates = Vec::new();
    for index in duplicates {
        let out = &outputs[index];
        let Some(old) = existing.get(&out.id) else {
            // Deleted since the insert (DC-01-003): nothing to compare with.
            continue;
        };
        let status = old.get_str("status").unwrap_or_default();
        if status != READY && status != INVALID {
            report.kept += 1;
            continue;
        }
        let mut new = stored(date, out)?
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
    let updated = crate::jobs::shared::transfer::run_updates(
        db,
        KERIS_BATCH_DATA,
        &updates,
        UPDATES_PER_COMMAND,
    )
    .await
    .context("Failed to update keris_batch_data")?;
    report.updated += updated;
    Ok(inserted + updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::rawdoc;

    #[test]
    fn a_statement_read_from_its_bytes_is_the_json_the_driver_gives() {
        let statement = rawdoc! {
            "id": "6f1c1f5e-9f1b-5a4e-8d3f-000000000000",
            "verb": { "id": "http://aidtbook.kr/xapi/verbs/submitted", "display": { "ko-KR": "제출" } },
            "result": {
                "score": { "raw": 85.0_f64, "scaled": 0.85_f64, "min": 0_i32, "max": 100_i64 },
                "success": true, "completion": false, "response": mongodb::bson::RawBson::Null,
                "extensions": { "https://aidtbook&46;kr/ext/attempts": 3_i32, "list": [1_i32, "a", { "x": -2.5_f64 }] },
            },
        };
        let by_driver = Bson::Document(statement.to_document().unwrap()).into_relaxed_extjson();
        assert!(by_driver["result"]["extensions"]["list"].is_array());
        assert_eq!(statement_json(&statement).unwrap(), by_driver);
        // Binary data has no plain JSON form: the driver's path.
        let with_binary = rawdoc! {
            "id": "x",
            "attachment": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        };
        let by_driver = Bson::Document(with_binary.to_document().unwrap()).into_relaxed_extjson();
        assert_eq!(statement_json(&with_binary).unwrap(), by_driver);
    }

    #[test]
    fn a_student_seen_again_after_another_one_is_refused() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        let mut agg = Aggregator::new(date, LrsAggregateSettings::default(), true);
        for user in ["a", "a", "b"] {
            agg.add(&rawdoc! { "user_id": user, "partner_id": "p" })
                .unwrap();
        }
        let err = agg
            .add(&rawdoc! { "user_id": "a", "partner_id": "p" })
            .unwrap_err();
        assert!(err.to_string().contains("not sorted by user_id"), "{err}");
    }
}
