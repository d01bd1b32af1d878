//! What LRS-01-001 and LRS-01-002 share to turn the LRS's xAPI statements
//! into KERIS statements: reading source documents ([`source`]), grouping
//! them per (student, verb, object) into outputs ([`group`]), writing the
//! outputs to `keris_batch_data` ([`write`]), the late statements of earlier
//! days ([`late_statements`]), rebuilding a student's day window by window
//! ([`rebuild`]) and the bounded tasks writes run as ([`in_flight`]).

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use mongodb::bson::{doc, Bson, Document};
use uuid::Uuid;

use crate::contract::BatchStatus;
use crate::runtime::JobContext;
use crate::time;

pub mod group;
pub mod in_flight;
pub mod late_statements;
pub mod rebuild;
pub mod settings;
pub mod source;
pub mod write;

pub use group::{first_id, output, Aggregator, Coverage, Group, Key, Output};
pub use write::{coverage_of, write_outputs};

pub const READY: &str = BatchStatus::Ready.as_str();
pub const INVALID: &str = BatchStatus::Invalid.as_str();

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
