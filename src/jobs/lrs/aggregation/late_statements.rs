//! LRS-01-001's statements that arrive late or are voided, and the
//! window-by-window rebuild of a student's day.
//!
//! The LRS's `stored` is the clock. Each run covers a window of it: from
//! the partition's watermark ([`Window`], `batch_lrs_watermark`) to the end
//! of the business date D (never later than `stored_settle_secs` before the
//! run). Every `keris_batch_data` document records the window of `stored` it
//! covers (`stored_after`, `stored_until`): a group's first document covers
//! everything stored up to the cutoff of the run that made it; each later
//! one, a window after that. So every source statement belongs to exactly
//! one document of its group, whatever order runs come in.
//!
//! A statement stored in the run's window for an earlier day D−k
//! (`k ≤ late_lookback_days`) makes its student's day D−k be rebuilt
//! ([`super::rebuild`]): the statements go into the group's last
//! document while it is `READY`/`INVALID` (same id, content not yet sent),
//! else into a new document with its own id ([`crate::xapi::late_statement_id`],
//! named by the window) — a document's content never changes once it is
//! `SENT`/`ERROR`. Older late statements are counted per day (`too_late`).
//!
//! Voiding statements (verb `voided`, object a `StatementRef`) are not
//! aggregated; the statements they void no longer count: their day is
//! rebuilt without them, and one voided after its document was sent (or
//! whose day is outside the look-back) is counted and listed
//! (`voided_after_sent`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, RawDocumentBuf};
use serde::Serialize;
use uuid::Uuid;

use super::rebuild::Rebuilt;
use super::source::{self, Kind, Source, Undecodable};
use super::{is_withheld, owns_unknown};
use crate::config::LrsAggregateSettings;
use crate::contract::STATEMENTS;
use crate::runtime::JobContext;
use crate::time;

/// Statement ids per `$in` when looking up what voiding statements void.
const IDS_PER_LOOKUP: usize = 1000;

/// The window of `stored` a run covers, in milliseconds since the epoch:
/// `(after, until]` for late statements; the business date's own
/// statements are taken up to `until`.
#[derive(Debug, Clone)]
pub struct Window {
    part: String,
    pub date: NaiveDate,
    pub after: i64,
    pub until: i64,
    /// The oldest learning day late statements are still aggregated for.
    pub lookback_start: NaiveDate,
}

impl Window {
    /// The partition's window: from its watermark (the start of D on its
    /// first run) to the end of D or `stored_settle_secs` ago, whichever is
    /// earlier.
    pub async fn open(ctx: &JobContext, settings: &LrsAggregateSettings) -> anyhow::Result<Self> {
        let part = ctx.partition.map(|p| p.label()).unwrap_or_default();
        let recorded: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT stored_until FROM batch_lrs_watermark WHERE part = $1")
                .bind(&part)
                .fetch_optional(ctx.pg())
                .await
                .context("Failed to read batch_lrs_watermark")?;
        let date = ctx.business_date;
        let end_of_day = time::start_of_day_seoul(date.succ_opt().expect("date in range"));
        let settled = ctx.now() - chrono::Duration::seconds(settings.stored_settle_secs as i64);
        let after = recorded.unwrap_or_else(|| time::start_of_day_seoul(date));
        Ok(Self {
            part,
            date,
            after: after.timestamp_millis(),
            until: end_of_day.min(settled).timestamp_millis(),
            lookback_start: date - chrono::Days::new(u64::from(settings.late_lookback_days)),
        })
    }

    /// Whether a statement stored at `stored` is new in this window.
    pub fn is_new(&self, stored: i64) -> bool {
        stored > self.after && stored <= self.until
    }

    /// Moves the watermark to the window's end (never backwards): called
    /// once everything the window covers is written.
    pub async fn commit(&self, ctx: &JobContext) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO batch_lrs_watermark (part, stored_until, run_id) VALUES ($1, $2, $3)
             ON CONFLICT (part) DO UPDATE
                SET stored_until = GREATEST(batch_lrs_watermark.stored_until, EXCLUDED.stored_until),
                    run_id = EXCLUDED.run_id, updated_at = now()",
        )
        .bind(&self.part)
        .bind(instant(self.until))
        .bind(ctx.run_id)
        .execute(ctx.pg())
        .await
        .context("Failed to update batch_lrs_watermark")?;
        Ok(())
    }

    /// The window and what came late in it, in the run's details.
    pub fn set_details(&self, ctx: &JobContext, late: &LateReport, rebuilt: &Rebuilt) {
        ctx.set_detail(
            "stored_window",
            serde_json::json!({ "after": instant(self.after), "until": instant(self.until) }),
        );
        ctx.set_detail(
            "late",
            serde_json::json!({
                "statements": late.statements,
                "per_day": late.per_day,
                "student_days_rebuilt": rebuilt.user_days,
                "emptied_by_voiding_deleted": rebuilt.deleted,
            }),
        );
        ctx.set_detail(
            "too_late",
            serde_json::json!({
                "statements": late.too_late,
                "per_day": late.too_late_per_day,
                "lookback_days": (self.date - self.lookback_start).num_days(),
            }),
        );
    }
}

fn instant(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

fn bson_date(millis: i64) -> Bson {
    Bson::DateTime(mongodb::bson::DateTime::from_millis(millis))
}

/// The statements a run cannot or must not aggregate, counted for its
/// details; documents by `_id` only, students never.
#[derive(Debug, Default)]
pub struct Exceptions {
    max_ids: usize,
    undecodable: u64,
    undecodable_reasons: BTreeMap<&'static str, u64>,
    undecodable_ids: Vec<String>,
    /// Statements of students whose records are withheld (no consent).
    pub withheld: u64,
    voiding: u64,
    /// xAPI id of each statement a voiding statement read by this run
    /// voids → whether the voiding statement is new in this run's window.
    pub voided: HashMap<String, bool>,
    /// Statements of the business date stored after the window: the next
    /// run's late statements.
    pub after_cutoff: u64,
    voided_after_sent: u64,
    voided_after_sent_ids: Vec<VoidedAfterSent>,
}

/// A statement voided after the document holding it was sent.
#[derive(Debug, Clone, Serialize)]
pub struct VoidedAfterSent {
    pub base_dt: NaiveDate,
    /// The voided statement's xAPI id (the LRS's).
    pub voided_statement_id: String,
    /// The KERIS statement that holds it; `None` outside the look-back.
    pub keris_statement_id: Option<String>,
}

impl Exceptions {
    pub fn new(max_ids: usize) -> Self {
        Self {
            max_ids,
            ..Self::default()
        }
    }

    pub fn undecodable(&mut self, bad: Undecodable) {
        tracing::warn!(document = %bad.id, reason = bad.reason, "statements document skipped: it cannot be read");
        self.undecodable += 1;
        *self.undecodable_reasons.entry(bad.reason).or_default() += 1;
        if self.undecodable_ids.len() < self.max_ids {
            self.undecodable_ids.push(bad.id);
        }
    }

    pub fn voiding(&mut self, target: String, new: bool) {
        self.voiding += 1;
        if !target.is_empty() {
            let entry = self.voided.entry(target).or_insert(false);
            *entry |= new;
        }
    }

    pub fn add_voided_after_sent(&mut self, found: Vec<VoidedAfterSent>) {
        self.voided_after_sent += found.len() as u64;
        let room = self
            .max_ids
            .saturating_sub(self.voided_after_sent_ids.len());
        self.voided_after_sent_ids
            .extend(found.into_iter().take(room));
    }

    pub fn set_details(&self, ctx: &JobContext) {
        ctx.set_detail(
            "undecodable",
            serde_json::json!({
                "documents": self.undecodable,
                "reasons": self.undecodable_reasons,
                "first_ids": self.undecodable_ids,
            }),
        );
        ctx.set_detail("withheld_statements", self.withheld);
        ctx.set_detail("voiding_statements", self.voiding);
        ctx.set_detail("stored_after_window", self.after_cutoff);
        ctx.set_detail(
            "voided_after_sent",
            serde_json::json!({
                "statements": self.voided_after_sent,
                "first": self.voided_after_sent_ids,
            }),
        );
        if self.voided_after_sent > 0 {
            tracing::warn!(
                statements = self.voided_after_sent,
                "statements were voided after KERIS received them; see the run's details (voided_after_sent)"
            );
        }
    }
}

/// What the late window held.
#[derive(Debug, Default)]
pub struct LateReport {
    pub statements: u64,
    pub per_day: BTreeMap<NaiveDate, u64>,
    pub too_late: u64,
    pub too_late_per_day: BTreeMap<NaiveDate, u64>,
}

/// Reads the statements the LRS stored in the window for days before the
/// business date (and those whose `timestamp` is no date, to name them):
/// each late one's student-day goes into `rebuilds`; one older than the
/// look-back is counted as too late. Served by the `stored` index.
pub async fn late_pass(
    ctx: &JobContext,
    window: &Window,
    withheld: &HashSet<Uuid>,
    ex: &mut Exceptions,
    rebuilds: &mut BTreeSet<(String, NaiveDate)>,
) -> anyhow::Result<LateReport> {
    let mut late = LateReport::default();
    if window.until <= window.after {
        return Ok(late);
    }
    let (day_start, _) = super::day_bounds(window.date);
    let filter = doc! {
        "stored": { "$gt": bson_date(window.after), "$lte": bson_date(window.until) },
        "timestamp": { "$not": { "$gte": day_start } },
    };
    let mut cursor = ctx
        .app
        .mongo
        .collection::<RawDocumentBuf>(STATEMENTS)
        .find(filter)
        .batch_size(ctx.settings().jobs.lrs_aggregate.batch_size)
        .max_time(ctx.mongo_max_time())
        .await
        .context("Failed to read the late statements")?;
    while let Some(raw) = cursor
        .try_next()
        .await
        .context("Failed to read the late statements")?
    {
        let src = match source::decode(&raw) {
            Ok(src) => src,
            Err(bad) => {
                if owns_unknown(ctx) {
                    ex.undecodable(bad);
                    ctx.counts.add_skipped(1);
                }
                continue;
            }
        };
        if !ctx.owns_user(&src.user_id) || src.day() >= window.date {
            continue;
        }
        ctx.counts.add_read(1);
        take_late(ctx, window, withheld, ex, &mut late, rebuilds, src);
    }
    Ok(late)
}

/// Sorts one late statement: voiding, voided, too late, withheld, or late.
fn take_late(
    ctx: &JobContext,
    window: &Window,
    withheld: &HashSet<Uuid>,
    ex: &mut Exceptions,
    late: &mut LateReport,
    rebuilds: &mut BTreeSet<(String, NaiveDate)>,
    src: Source,
) {
    let day = src.day();
    if let Kind::Voiding { target } = src.kind() {
        ex.voiding(target, true);
        ctx.counts.add_skipped(1);
    } else if src.voided {
        ctx.counts.add_skipped(1);
    } else if day < window.lookback_start {
        late.too_late += 1;
        *late.too_late_per_day.entry(day).or_default() += 1;
        ctx.counts.add_skipped(1);
    } else if is_withheld(withheld, &src.user_id) {
        ex.withheld += 1;
        ctx.counts.add_skipped(1);
    } else {
        late.statements += 1;
        *late.per_day.entry(day).or_default() += 1;
        rebuilds.insert((src.user_id, day));
    }
}

/// Looks up the statements this run's voiding statements void: their
/// student-days within the look-back go into `rebuilds`; one outside it,
/// voided in this window, is counted as voided after sending.
pub async fn voided_targets(
    ctx: &JobContext,
    window: &Window,
    ex: &mut Exceptions,
    rebuilds: &mut BTreeSet<(String, NaiveDate)>,
) -> anyhow::Result<()> {
    let ids: Vec<String> = ex.voided.keys().cloned().collect();
    let coll = ctx.app.mongo.collection::<RawDocumentBuf>(STATEMENTS);
    let mut outside = Vec::new();
    for chunk in ids.chunks(IDS_PER_LOOKUP) {
        let mut cursor = coll
            .find(doc! { "statement.id": { "$in": chunk } })
            .max_time(ctx.mongo_max_time())
            .await
            .context("Failed to read the voided statements")?;
        while let Some(raw) = cursor
            .try_next()
            .await
            .context("Failed to read the voided statements")?
        {
            let Ok(src) = source::decode(&raw) else {
                continue;
            };
            let Some(id) = src.statement_id().map(str::to_string) else {
                continue;
            };
            if src.kind() != Kind::Learning || !ctx.owns_user(&src.user_id) {
                continue;
            }
            let day = src.day();
            if (window.lookback_start..=window.date).contains(&day) {
                rebuilds.insert((src.user_id, day));
            } else if ex.voided.get(&id) == Some(&true) && day < window.lookback_start {
                outside.push(VoidedAfterSent {
                    base_dt: day,
                    voided_statement_id: id,
                    keris_statement_id: None,
                });
            }
        }
    }
    ex.add_voided_after_sent(outside);
    Ok(())
}
