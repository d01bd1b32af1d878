//! Rebuilding students' days window by window: a late or voided statement
//! makes its (student, day) be planned again from its source statements and
//! stored documents ([`plan_chunk`]) and the changes written
//! ([`rebuild_user_days`]). Shared by LRS-01-001 and LRS-01-002.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use uuid::Uuid;

use super::late_statements::{VoidedAfterSent, Window};
use super::source::{self, Kind, Source};
use super::{
    coverage_of, first_id, is_withheld, output, write_outputs, Coverage, Group, Key, Output,
    Report, INVALID, READY,
};
use crate::config::LrsAggregateSettings;
use crate::contract::{KERIS_BATCH_DATA, STATEMENTS};
use crate::runtime::JobContext;
use crate::xapi;

/// Student-days rebuilt per round trip (one read of their statements, one
/// of their documents, then the writes).
const USER_DAYS_PER_CHUNK: usize = 200;

/// What rebuilding student-days did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub report: Report,
    pub user_days: usize,
    /// `READY`/`INVALID` documents whose statements were all voided.
    pub deleted: u64,
    pub voided_after_sent: Vec<VoidedAfterSent>,
}

/// Rebuilds each (student, day) of `pairs` window by window (see
/// [`plan_user_day`]) and writes what changed: new documents inserted,
/// `READY`/`INVALID` ones updated (or deleted once every statement of
/// theirs is voided), `SENT`/`ERROR` ones never touched.
pub async fn rebuild_user_days(
    ctx: &JobContext,
    settings: &LrsAggregateSettings,
    window: &Window,
    withheld: &HashSet<Uuid>,
    voided: &HashMap<String, bool>,
    pairs: &BTreeSet<(String, NaiveDate)>,
) -> anyhow::Result<Rebuilt> {
    let mut rebuilt = Rebuilt::default();
    let pairs: Vec<&(String, NaiveDate)> = pairs
        .iter()
        .filter(|(user, _)| !is_withheld(withheld, user))
        .collect();
    rebuilt.user_days = pairs.len();
    let db = &ctx.app.mongo;
    for chunk in pairs.chunks(USER_DAYS_PER_CHUNK) {
        ctx.stop_point()?;
        let plan = plan_chunk(
            db,
            settings,
            ctx.now(),
            chunk,
            Some(window.until),
            voided,
            ctx.mongo_max_time(),
        )
        .await?;
        rebuilt.report.count_outputs(ctx, &plan.writes);
        rebuilt.voided_after_sent.extend(plan.voided_after_sent);
        if ctx.dry_run {
            rebuilt.report.inserted += plan.writes.len() as u64;
            continue;
        }
        write_outputs(
            db,
            &plan.writes,
            &mut rebuilt.report,
            false,
            ctx.mongo_max_time(),
        )
        .await?;
        rebuilt.deleted += delete_emptied(db, &plan.delete).await?;
    }
    Ok(rebuilt)
}

/// Deletes documents not yet sent whose statements were all voided.
async fn delete_emptied(db: &mongodb::Database, ids: &[String]) -> anyhow::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let deleted = db
        .collection::<Document>(KERIS_BATCH_DATA)
        .delete_many(doc! { "_id": { "$in": ids }, "status": { "$in": [READY, INVALID] } })
        .await
        .context("Failed to delete from keris_batch_data")?;
    Ok(deleted.deleted_count)
}

/// What to do with some student-days' documents.
#[derive(Debug, Default)]
pub struct ChunkPlan {
    /// New documents, and `READY`/`INVALID` ones rebuilt.
    pub writes: Vec<Output>,
    /// `SENT`/`ERROR` documents as their statements give them now (never
    /// written by LRS-01-001; LRS-01-002 rebuilds rejected ones from them).
    pub kept: Vec<Output>,
    /// `READY`/`INVALID` documents left without a statement.
    pub delete: Vec<String>,
    pub voided_after_sent: Vec<VoidedAfterSent>,
}

/// A stored document of a student-day, as the rebuild needs it.
#[derive(Debug, Clone)]
pub struct Existing {
    pub id: String,
    pub status: String,
    pub verb_id: String,
    pub object_id: String,
    pub coverage: Coverage,
}

impl Existing {
    fn from_stored(d: &Document) -> Option<Self> {
        let statement = d.get_document("statement").ok();
        let field = |parent: &str| {
            statement
                .and_then(|s| s.get_document(parent).ok())
                .and_then(|p| p.get_str("id").ok())
                .unwrap_or_default()
                .to_string()
        };
        // Documents written before coverage was recorded hold what their
        // run read: everything stored up to when they were written.
        let coverage = coverage_of(d).or_else(|| {
            Some(Coverage {
                after: None,
                until: d.get_datetime("created_at").ok()?.timestamp_millis(),
            })
        })?;
        Some(Self {
            id: d.get_str("_id").ok()?.to_string(),
            status: d.get_str("status").unwrap_or_default().to_string(),
            verb_id: field("verb"),
            object_id: field("object"),
            coverage,
        })
    }

    /// Not yet sent: its content may still change.
    fn is_open(&self) -> bool {
        self.status == READY || self.status == INVALID
    }
}

/// Plans the rebuild of `pairs` (student, day): one read of their
/// statements, one of their documents. `until`: new statements stored up
/// to it are added; `None` adds none (rebuilding what exists only).
pub async fn plan_chunk(
    db: &mongodb::Database,
    settings: &LrsAggregateSettings,
    now: DateTime<Utc>,
    pairs: &[&(String, NaiveDate)],
    until: Option<i64>,
    voided: &HashMap<String, bool>,
    max_time: Duration,
) -> anyhow::Result<ChunkPlan> {
    let mut plan = ChunkPlan::default();
    let Some((first, last)) = pairs
        .iter()
        .map(|(_, d)| *d)
        .min()
        .zip(pairs.iter().map(|(_, d)| *d).max())
    else {
        return Ok(plan);
    };
    let wanted: HashSet<(&str, NaiveDate)> = pairs.iter().map(|(u, d)| (u.as_str(), *d)).collect();
    let users: Vec<&str> = wanted
        .iter()
        .map(|(u, _)| *u)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut sources = read_sources(db, &users, (first, last), &wanted, max_time).await?;
    let mut existing = read_existing(db, &users, &wanted, max_time).await?;
    for (user, day) in pairs {
        let key = (user.clone(), *day);
        plan_user_day(
            settings,
            now,
            (user, *day),
            sources.remove(&key).unwrap_or_default(),
            existing.remove(&key).unwrap_or_default(),
            until,
            voided,
            &mut plan,
        );
    }
    Ok(plan)
}

type ByUserDay<T> = HashMap<(String, NaiveDate), Vec<T>>;

/// The statements of `users` on the days `first..=last`, of the wanted
/// student-days. Undecodable ones were counted when first read.
async fn read_sources(
    db: &mongodb::Database,
    users: &[&str],
    (first, last): (NaiveDate, NaiveDate),
    wanted: &HashSet<(&str, NaiveDate)>,
    max_time: Duration,
) -> anyhow::Result<ByUserDay<Source>> {
    let (start, _) = super::day_bounds(first);
    let (_, end) = super::day_bounds(last);
    let mut cursor = db
        .collection::<RawDocumentBuf>(STATEMENTS)
        .find(doc! { "user_id": { "$in": users }, "timestamp": { "$gte": start, "$lt": end } })
        .max_time(max_time)
        .await
        .context("Failed to read the statements")?;
    let mut by: ByUserDay<Source> = HashMap::new();
    while let Some(raw) = cursor
        .try_next()
        .await
        .context("Failed to read the statements")?
    {
        let Ok(src) = source::decode(&raw) else {
            continue;
        };
        let day = src.day();
        if wanted.contains(&(src.user_id.as_str(), day)) {
            by.entry((src.user_id.clone(), day)).or_default().push(src);
        }
    }
    Ok(by)
}

/// The stored documents of the wanted student-days.
async fn read_existing(
    db: &mongodb::Database,
    users: &[&str],
    wanted: &HashSet<(&str, NaiveDate)>,
    max_time: Duration,
) -> anyhow::Result<ByUserDay<Existing>> {
    let days: BTreeSet<String> = wanted.iter().map(|(_, d)| d.to_string()).collect();
    let mut cursor = db
        .collection::<Document>(KERIS_BATCH_DATA)
        .find(doc! { "user_id": { "$in": users }, "base_dt": { "$in": days.into_iter().collect::<Vec<_>>() } })
        .projection(doc! {
            "user_id": 1, "base_dt": 1, "status": 1, "stored_after": 1, "stored_until": 1,
            "created_at": 1, "statement.verb.id": 1, "statement.object.id": 1,
        })
        .max_time(max_time)
        .await
        .context("Failed to read keris_batch_data")?;
    let mut by: ByUserDay<Existing> = HashMap::new();
    while let Some(d) = cursor
        .try_next()
        .await
        .context("Failed to read keris_batch_data")?
    {
        let (Ok(user), Ok(day)) = (d.get_str("user_id"), d.get_str("base_dt")) else {
            continue;
        };
        let Ok(day) = day.parse::<NaiveDate>() else {
            continue;
        };
        if let (true, Some(e)) = (wanted.contains(&(user, day)), Existing::from_stored(&d)) {
            by.entry((user.to_string(), day)).or_default().push(e);
        }
    }
    Ok(by)
}

/// One group's documents (oldest window first) and its source statements.
#[derive(Default)]
struct GroupParts<'a> {
    docs: Vec<Existing>,
    live: Vec<&'a Source>,
    voided: Vec<&'a Source>,
}

/// Plans one student-day: each live (not voided) statement goes to the
/// document whose window holds its `stored`; statements stored after every
/// window (up to `until`) extend the group's last document while it is not
/// yet sent, else open a new one covering `(last window's end, until]`, or
/// become the group's first document.
#[allow(clippy::too_many_arguments)]
pub fn plan_user_day(
    settings: &LrsAggregateSettings,
    now: DateTime<Utc>,
    (user, date): (&str, NaiveDate),
    mut sources: Vec<Source>,
    existing: Vec<Existing>,
    until: Option<i64>,
    voided: &HashMap<String, bool>,
    plan: &mut ChunkPlan,
) {
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    let is_voided =
        |s: &Source| s.voided || s.statement_id().is_some_and(|id| voided.contains_key(id));
    let partner = sources
        .iter()
        .find(|s| s.kind() == Kind::Learning && !is_voided(s))
        .map(|s| s.partner_id.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<(String, String), GroupParts> = BTreeMap::new();
    for e in existing {
        let key = (e.verb_id.clone(), e.object_id.clone());
        groups.entry(key).or_default().docs.push(e);
    }
    for s in sources.iter().filter(|s| s.kind() == Kind::Learning) {
        let parts = groups
            .entry((s.verb_id().to_string(), s.object_id().to_string()))
            .or_default();
        if is_voided(s) {
            parts.voided.push(s);
        } else {
            parts.live.push(s);
        }
    }
    for ((verb_id, object_id), parts) in groups {
        let key = Key {
            date,
            user_id: user,
            partner_id: &partner,
            verb_id: &verb_id,
            object_id: &object_id,
        };
        plan_group(settings, now, &key, parts, until, voided, plan);
    }
}

/// [`plan_user_day`] for one group.
fn plan_group(
    settings: &LrsAggregateSettings,
    now: DateTime<Utc>,
    key: &Key,
    mut parts: GroupParts,
    until: Option<i64>,
    voided: &HashMap<String, bool>,
    plan: &mut ChunkPlan,
) {
    parts.docs.sort_by_key(|d| d.coverage.until);
    let docs = parts.docs;
    let holder = |stored: i64| docs.iter().position(|d| stored <= d.coverage.until);
    let mut buckets: Vec<Vec<&Source>> = vec![Vec::new(); docs.len()];
    let mut fresh = Vec::new();
    for s in parts.live {
        match holder(s.stored) {
            Some(i) => buckets[i].push(s),
            None if until.is_some_and(|u| s.stored <= u) => fresh.push(s),
            None => {}
        }
    }
    for s in parts.voided {
        let id = s.statement_id().unwrap_or_default();
        if let (Some(true), Some(i)) = (voided.get(id), holder(s.stored)) {
            if !docs[i].is_open() {
                plan.voided_after_sent.push(VoidedAfterSent {
                    base_dt: key.date,
                    voided_statement_id: id.to_string(),
                    keris_statement_id: Some(docs[i].id.clone()),
                });
            }
        }
    }
    let mut coverages: Vec<Coverage> = docs.iter().map(|d| d.coverage).collect();
    let mut new_doc = None;
    if let (false, Some(until)) = (fresh.is_empty(), until) {
        match docs.last() {
            Some(last) if last.is_open() => {
                buckets
                    .last_mut()
                    .expect("a last document")
                    .append(&mut fresh);
                coverages.last_mut().expect("a last document").until = until;
            }
            Some(last) => {
                let after = last.coverage.until;
                let id = xapi::late_statement_id(
                    &settings.id_namespace,
                    key.date,
                    key.user_id,
                    key.verb_id,
                    key.object_id,
                    after,
                    until,
                );
                new_doc = Some((
                    id.to_string(),
                    Coverage {
                        after: Some(after),
                        until,
                    },
                ));
            }
            None => new_doc = Some((first_id(settings, key), Coverage { after: None, until })),
        }
    }
    let build = |bucket: &[&Source], id: String, coverage: Coverage| {
        let mut group = Group::default();
        for s in bucket {
            group.add(s, key.partner_id);
        }
        output(settings, now, key, id, coverage, group)
    };
    for ((doc, bucket), coverage) in docs.iter().zip(&buckets).zip(coverages) {
        match (bucket.is_empty(), doc.is_open()) {
            (true, true) => plan.delete.push(doc.id.clone()),
            (true, false) => {}
            (false, true) => plan.writes.push(build(bucket, doc.id.clone(), coverage)),
            (false, false) => plan.kept.push(build(bucket, doc.id.clone(), coverage)),
        }
    }
    if let Some((id, coverage)) = new_doc {
        plan.writes.push(build(&fresh, id, coverage));
    }
}
