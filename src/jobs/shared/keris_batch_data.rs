//! Reading and writing `keris_batch_data`, the statements waiting for KERIS:
//! what the senders (DC-01-001, DC-01-002) read and mark, and the batched
//! reads and updates LRS-01-001 and LRS-01-002 write statements with.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document};

use super::transfer::{RequestOutcome, Verdict};
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};

/// The fields of a `keris_batch_data` document the senders read.
pub fn stored_projection() -> Document {
    doc! { "_id": 1, "user_id": 1, "partner_id": 1, "base_dt": 1, "statement": 1, "status": 1 }
}

/// The `keris_batch_data` documents with these ids, by id (ids that are
/// gone are simply absent); `max_time` is the read's `maxTimeMS`.
pub async fn load_stored(
    db: &mongodb::Database,
    ids: &[String],
    max_time: Duration,
) -> anyhow::Result<HashMap<String, Document>> {
    find_by_ids(db, ids, Some(stored_projection()), max_time)
        .await
        .context("Failed to read keris_batch_data")
}

/// The documents with these string `_id`s, by id, in one
/// `find` with `_id: {$in: ids}` (an `_id` index lookup per id on MongoDB
/// and on FerretDB v2; callers pass a batch, not a day), with `maxTimeMS`
/// `max_time` (the run's [`crate::runtime::JobContext::mongo_max_time`]).
pub async fn find_by_ids(
    db: &mongodb::Database,
    ids: &[String],
    projection: Option<Document>,
    max_time: Duration,
) -> anyhow::Result<HashMap<String, Document>> {
    let mut docs = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(docs);
    }
    let coll = db.collection::<Document>(KERIS_BATCH_DATA);
    let mut find = coll
        .find(doc! { "_id": { "$in": ids } })
        .batch_size(ids.len().min(100_000) as u32)
        .max_time(max_time);
    if let Some(projection) = projection {
        find = find.projection(projection);
    }
    let mut cursor = find.await?;
    while let Some(d) = cursor.try_next().await? {
        docs.insert(d.get_str("_id").unwrap_or_default().to_string(), d);
    }
    Ok(docs)
}

/// `update` commands in flight while recording one request: a server works
/// through one command's statements one after the other, so a request's
/// marks go out as a few commands at once.
const COMMANDS_IN_FLIGHT: usize = 8;

/// What a `SENT` mark may assume about the statement it marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marks {
    /// Read `READY` by this run under the `keris-xapi` lock, which every job
    /// writing `keris_batch_data` takes: nothing else changed it since, so
    /// the mark filters by `_id` alone. On DocumentDB an `_id` filter with a
    /// `status` condition beside it runs at half the speed (4.1–4.9k vs
    /// 8.4k statements/s in commands of 500, measured here); on MongoDB both
    /// are one `_id` index lookup.
    JustRead,
    /// Its state is not known (a request a killed run left in doubt, sent
    /// again; an error row resent): only statements still `READY` or `ERROR`
    /// are marked, so the count tells those already `SENT`.
    Checked,
}

/// Marks the accepted statements of `outcome` `SENT` with their transfer id
/// and exact index and returns how many documents changed (with
/// [`Marks::Checked`], only those still `READY` or `ERROR`).
///
/// Each statement has its own `stmt_index`, so each needs its own update,
/// filtered by `_id` (the one filter every server answers from an index).
/// They go out `per_command` to an unordered `update` command (what the
/// drivers' bulk writes send to MongoDB 6/7; the Rust driver's `bulk_write`
/// needs 8.0), [`COMMANDS_IN_FLIGHT`] commands at a time: one round trip per
/// few hundred statements instead of one per statement.
pub async fn mark_sent(
    db: &mongodb::Database,
    outcome: &RequestOutcome,
    per_command: usize,
    marks: Marks,
) -> anyhow::Result<u64> {
    let now = Bson::DateTime(mongodb::bson::DateTime::now());
    let ready_or_error = [BatchStatus::Ready.as_str(), BatchStatus::Error.as_str()];
    let transfer_id = outcome.transfer_id.as_deref();
    let updates: Vec<Document> = outcome
        .items
        .iter()
        .zip(&outcome.verdicts)
        .enumerate()
        .filter(|(_, (_, v))| **v == Verdict::Accepted)
        .map(|(n, (item, _))| {
            doc! {
                "q": match marks {
                    Marks::JustRead => doc! { "_id": item.id.as_str() },
                    Marks::Checked => doc! { "_id": item.id.as_str(), "status": { "$in": &ready_or_error[..] } },
                },
                "u": {
                    "$set": {
                        "status": BatchStatus::Sent.as_str(),
                        "transfer_id": transfer_id,
                        "stmt_index": outcome.index_of(n),
                        "sent_at": now.clone(),
                        "updated_at": now.clone(),
                    },
                    "$unset": { "err_code": "", "err_msg": "" },
                },
            }
        })
        .collect();
    run_updates(db, &updates, per_command)
        .await
        .context("Failed to mark statements SENT in keris_batch_data")
}

/// Runs `updates` (statements of an `update` command: `{q, u}`) as unordered `update` commands of `per_command` statements,
/// [`COMMANDS_IN_FLIGHT`] at a time, and returns how many documents changed.
/// `Err` names the first failed statement (a command can succeed with some
/// of its statements failed).
pub async fn run_updates(
    db: &mongodb::Database,
    updates: &[Document],
    per_command: usize,
) -> anyhow::Result<u64> {
    use futures::StreamExt as _;
    // Owned futures, collected first: a lazy iterator of closures borrowing
    // the caller's data would make the job's future not `Send`.
    let commands: Vec<_> = updates
        .chunks(per_command.max(1))
        .map(|chunk| {
            let command =
                doc! { "update": KERIS_BATCH_DATA, "updates": chunk.to_vec(), "ordered": false };
            let db = db.clone();
            async move { modified_by(db.run_command(command).await?) }
        })
        .collect();
    let changed: Vec<u64> = futures::stream::iter(commands)
        .buffer_unordered(COMMANDS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(changed.iter().sum())
}

/// The reply of an `update` command: how many documents it changed, or the
/// first of its write errors (a command can succeed with some statements
/// failed; `run_command` reports only the command's own failure).
fn modified_by(reply: Document) -> anyhow::Result<u64> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Reply {
        #[serde(default)]
        n_modified: i64,
        #[serde(default)]
        write_errors: Vec<WriteError>,
        write_concern_error: Option<WriteError>,
    }
    #[derive(serde::Deserialize)]
    struct WriteError {
        #[serde(default)]
        code: i32,
        #[serde(default)]
        errmsg: String,
    }
    let reply: Reply =
        mongodb::bson::from_document(reply).context("Unexpected reply to an update command")?;
    if let Some(e) = reply.write_errors.first() {
        anyhow::bail!(
            "{} of the updates failed, the first with code {}: {}",
            reply.write_errors.len(),
            e.code,
            e.errmsg
        );
    }
    if let Some(e) = reply.write_concern_error {
        anyhow::bail!(
            "write concern not satisfied (code {}): {}",
            e.code,
            e.errmsg
        );
    }
    Ok(reply.n_modified.max(0) as u64)
}

/// Marks the failed statements of `outcome` `ERROR` with their code (only
/// those still `READY` or `ERROR`).
pub async fn mark_error(db: &mongodb::Database, outcome: &RequestOutcome) -> anyhow::Result<()> {
    let mut by_code: HashMap<&str, Vec<&str>> = HashMap::new();
    for (_, item, code, _) in outcome.failed() {
        by_code.entry(code).or_default().push(item.id.as_str());
    }
    let coll = db.collection::<Document>(KERIS_BATCH_DATA);
    let now = Bson::DateTime(mongodb::bson::DateTime::now());
    for (code, ids) in by_code {
        coll.update_many(
            doc! { "_id": { "$in": ids }, "status": { "$in": [BatchStatus::Ready.as_str(), BatchStatus::Error.as_str()] } },
            doc! { "$set": { "status": BatchStatus::Error.as_str(), "err_code": code, "updated_at": now.clone() } },
        )
        .await
        .context("Failed to mark statements ERROR in keris_batch_data")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_reply_counts_modified_documents_and_surfaces_write_errors() {
        assert_eq!(
            modified_by(doc! { "n": 3, "nModified": 2, "ok": 1.0 }).unwrap(),
            2
        );
        let partial = doc! {
            "n": 1, "nModified": 1, "ok": 1.0,
            "writeErrors": [{ "index": 1, "code": 11000, "errmsg": "E11000 duplicate key" }, { "index": 2, "code": 2, "errmsg": "x" }],
        };
        let err = modified_by(partial).unwrap_err().to_string();
        assert!(
            err.contains("2 of the updates failed")
                && err.contains("11000")
                && err.contains("E11000"),
            "{err}"
        );
        let concern = doc! { "n": 1, "nModified": 1, "ok": 1.0, "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" } };
        assert!(modified_by(concern)
            .unwrap_err()
            .to_string()
            .contains("replication"));
    }
}
