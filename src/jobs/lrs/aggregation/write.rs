//! Writing outputs to `keris_batch_data`: insert, then compare and update
//! the ones that already exist.

use std::time::Duration;

use anyhow::Context as _;
use mongodb::bson::{doc, Document, RawDocumentBuf};

use super::{Coverage, Output, Report, INVALID, READY};
use crate::contract::KERIS_BATCH_DATA;
use crate::jobs::shared::keris_batch_data;
use crate::xapi;

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
