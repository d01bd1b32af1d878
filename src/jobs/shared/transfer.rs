//! Sending learning-history statements to KERIS (API-006/007), shared by
//! DC-01-001 (send) and DC-01-002 (resend).
//!
//! A [`PartnerSender`] owns one partner's transfer and sends requests one at
//! a time: KERIS numbers a transfer's statements (`Chunked-Index`) and its
//! transfer status reports the last index it stored, which only means
//! something if requests arrive in order. Reading MongoDB, sending and
//! recording outcomes overlap (see DC-01-001), so KERIS is kept busy without
//! requests racing each other on one transfer.
//!
//! What can happen to a request, and what the sender does:
//! - answered `00000`: each statement is accepted, or rejected with its code
//!   (`list_error`);
//! - `40101` (token expired or refused) or `40901` (transfer closed): open a
//!   new transfer and send the same statements at index 1 of it (at most
//!   [`MAX_RENEWALS`] times per request);
//! - transient failure after the client's retries, or a refusal of the whole
//!   request: every statement of the request gets that failure as its
//!   verdict ([`ERR_UNAVAILABLE`], [`ERR_TOKEN`], the KERIS code, or
//!   [`ERR_INVALID_REQUEST`]) and the transfer is dropped, because KERIS may
//!   have stored part of the request and the next index is no longer known.
//!
//! Resending a statement is always safe: its id is a UUID v5 of its content's
//! identity, and KERIS drops a statement it already holds with the same
//! content.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document};
use sqlx::PgPool;

use super::give_up::GiveUp;
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::keris::{
    KerisClient, KerisError, Transfer, CODE_CLOSED, XAPI_DUP_ERR, XAPI_USER_ERR, XAPI_VAL_ERR,
};

/// Error code of statements whose request failed transiently (transport,
/// timeout, HTTP 5xx or 429) after the client's retries. Resent by DC-01-002.
pub const ERR_UNAVAILABLE: &str = "KERIS_UNAVAILABLE";
/// Error code of statements whose request kept meeting an expired or refused
/// transfer token. Resent by DC-01-002.
pub const ERR_TOKEN: &str = "KERIS_TOKEN_EXPIRED";
/// Error code of statements whose request could not be built (e.g. one
/// statement larger than `keris.max_request_bytes`). Not resendable as is.
pub const ERR_INVALID_REQUEST: &str = "INVALID_REQUEST";

/// New transfers opened for one request before its statements are recorded
/// as [`ERR_TOKEN`].
pub const MAX_RENEWALS: u32 = 2;

/// A transfer older than this is replaced before the next request: KERIS's
/// token lives 30 minutes (simulator) and a request should not start at the
/// edge of it. An earlier expiry is still handled (40101 → new transfer).
pub const TRANSFER_RENEW_AFTER: Duration = Duration::from_secs(25 * 60);

/// Codes of failures that may succeed when the statement is sent again as
/// it is (DC-01-002).
pub const RESENDABLE_CODES: [&str; 2] = [ERR_UNAVAILABLE, ERR_TOKEN];
/// Codes of statements KERIS refused for their content (LRS-01-002 rebuilds them).
pub const CONTENT_CODES: [&str; 2] = [XAPI_VAL_ERR, XAPI_USER_ERR];

/// Whether a failure with this code may succeed when the statement is sent
/// again as it is.
pub fn is_transient_code(code: &str) -> bool {
    RESENDABLE_CODES.contains(&code)
}

/// Whether KERIS refused the statement for its content: LRS-01-002 rebuilds it.
pub fn is_content_code(code: &str) -> bool {
    CONTENT_CODES.contains(&code)
}

/// Whether KERIS holds another statement under this id: a person decides.
pub fn is_duplicate_code(code: &str) -> bool {
    code == XAPI_DUP_ERR
}

/// One statement to send: its identity and its wire bytes.
#[derive(Debug, Clone)]
pub struct Item {
    /// Statement id (UUID v5), `keris_batch_data._id`.
    pub id: String,
    pub user_id: String,
    /// Partner-ID as stored with the statement.
    pub partner_id: String,
    pub base_dt: NaiveDate,
    /// UTF-8 JSON of the statement; emptied once sent.
    pub bytes: Vec<u8>,
}

impl Item {
    /// An item from a `keris_batch_data` document read with
    /// [`stored_projection`] (`statement` stored with `&46;` keys); `Err`
    /// names what is missing.
    pub fn from_stored(doc: &Document) -> Result<Item, String> {
        let id = doc
            .get_str("_id")
            .map_err(|_| "no string _id".to_string())?;
        let statement = doc
            .get_document("statement")
            .map_err(|_| format!("document {id} has no statement"))?;
        let base_dt = doc
            .get_str("base_dt")
            .ok()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| format!("document {id} has no valid base_dt"))?;
        Ok(Item {
            id: id.to_string(),
            user_id: doc.get_str("user_id").unwrap_or_default().to_string(),
            partner_id: doc.get_str("partner_id").unwrap_or_default().to_string(),
            base_dt,
            bytes: crate::xapi::keris_statement_bytes(statement),
        })
    }
}

/// What became of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Rejected by KERIS (`list_error`) or not delivered (request failed).
    Failed {
        code: String,
        message: String,
    },
}

/// The outcome of one request: per statement (in order) its verdict.
#[derive(Debug)]
pub struct RequestOutcome {
    /// The transfer the statements went out on (`None`: none could be opened).
    pub transfer_id: Option<String>,
    /// Index of the first statement on that transfer.
    pub chunked_index: u64,
    /// The journal row to delete once the outcome is recorded.
    pub journal_id: Option<i64>,
    pub items: Vec<Item>,
    pub verdicts: Vec<Verdict>,
}

impl RequestOutcome {
    /// The absolute index of item `i` on the transfer.
    pub fn index_of(&self, i: usize) -> Option<i64> {
        self.transfer_id
            .as_ref()
            .map(|_| (self.chunked_index + i as u64) as i64)
    }

    pub fn accepted(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .zip(&self.verdicts)
            .filter(|(_, v)| **v == Verdict::Accepted)
            .map(|(i, _)| i)
    }

    /// Failed items with their index and verdict.
    pub fn failed(&self) -> impl Iterator<Item = (usize, &Item, &str, &str)> {
        self.items
            .iter()
            .zip(&self.verdicts)
            .enumerate()
            .filter_map(|(n, (item, v))| match v {
                Verdict::Failed { code, message } => {
                    Some((n, item, code.as_str(), message.as_str()))
                }
                Verdict::Accepted => None,
            })
    }
}

/// Counters of one partner's sending.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SendReport {
    pub requests: u64,
    pub transfers_opened: u64,
    pub token_renewals: u64,
    pub failed_requests: u64,
    pub gave_up: bool,
}

/// DC-01-001's journal of requests in doubt (`batch_keris_request`).
#[derive(Clone)]
pub struct Journal {
    pub pg: PgPool,
    pub job_id: &'static str,
    pub base_dt: NaiveDate,
    pub partner_name: String,
    /// The run's partition (`I/N`), `''` when unpartitioned: a partition
    /// resumes its own requests only.
    pub part: String,
    pub run_id: i64,
}

impl Journal {
    async fn insert(
        &self,
        transfer_id: &str,
        chunked_index: u64,
        items: &[Item],
    ) -> anyhow::Result<i64> {
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        sqlx::query_scalar(
            "INSERT INTO batch_keris_request (job_id, base_dt, partner_name, transfer_id, chunked_index, statement_ids, run_id, part)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING request_id",
        )
        .bind(self.job_id)
        .bind(self.base_dt)
        .bind(&self.partner_name)
        .bind(transfer_id)
        .bind(chunked_index as i64)
        .bind(&ids)
        .bind(self.run_id)
        .bind(&self.part)
        .fetch_one(&self.pg)
        .await
        .context("Failed to journal an API-007 request in batch_keris_request")
    }

    pub async fn delete(pg: &PgPool, request_id: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batch_keris_request WHERE request_id = $1")
            .bind(request_id)
            .execute(pg)
            .await
            .context("Failed to delete a journal row of batch_keris_request")?;
        Ok(())
    }
}

/// Sends one partner's requests, one at a time, on a transfer it opens and
/// renews as needed.
pub struct PartnerSender {
    client: KerisClient,
    journal: Option<Journal>,
    give_up: GiveUp,
    transfer: Option<Transfer>,
    next_index: u64,
    pub report: SendReport,
}

impl PartnerSender {
    /// `journal`: write each request to `batch_keris_request` before it goes
    /// out (DC-01-001). `give_up_after`: see
    /// `jobs.keris_transfer.give_up_after_transient_failures`.
    pub fn new(client: KerisClient, journal: Option<Journal>, give_up_after: u32) -> Self {
        Self {
            client,
            journal,
            give_up: GiveUp::new(give_up_after),
            transfer: None,
            next_index: 1,
            report: SendReport::default(),
        }
    }

    pub fn client(&self) -> &KerisClient {
        &self.client
    }

    /// Continue `transfer` at `next_index` (resuming after a kill).
    pub fn continue_transfer(&mut self, transfer: Transfer, next_index: u64) {
        self.transfer = Some(transfer);
        self.next_index = next_index;
    }

    /// Whether KERIS failed so many requests in a row that the rest should
    /// wait for a later run.
    pub fn gave_up(&self) -> bool {
        self.give_up.gave_up()
    }

    /// Sends `items` (at most one request's worth, see [`Batcher`]) and
    /// returns what became of each. `Err` only when the journal cannot be
    /// written (PostgreSQL down): nothing was sent then.
    pub async fn send(&mut self, mut items: Vec<Item>) -> anyhow::Result<RequestOutcome> {
        let bodies: Vec<Vec<u8>> = items
            .iter_mut()
            .map(|i| std::mem::take(&mut i.bytes))
            .collect();
        self.report.requests += 1;
        let mut renewals = 0;
        loop {
            if self
                .transfer
                .as_ref()
                .is_some_and(|t| t.received_at.elapsed() >= TRANSFER_RENEW_AFTER)
            {
                self.transfer = None;
            }
            let transfer = match &self.transfer {
                Some(t) => t.clone(),
                None => match self.client.open_transfer().await {
                    Ok(t) => {
                        self.report.transfers_opened += 1;
                        self.transfer = Some(t.clone());
                        self.next_index = 1;
                        t
                    }
                    Err(e) => return Ok(self.failed(None, 0, None, items, &e)),
                },
            };
            let index = self.next_index;
            let journal_id = match &self.journal {
                Some(j) => Some(j.insert(&transfer.transfer_id, index, &items).await?),
                None => None,
            };
            match self.client.send_statements(&transfer, index, &bodies).await {
                Ok(answer) => {
                    self.next_index += bodies.len() as u64;
                    self.give_up.success();
                    let mut verdicts = vec![Verdict::Accepted; items.len()];
                    for rejected in &answer.list_error {
                        let at = rejected.index.checked_sub(index).map(|n| n as usize);
                        if let Some(v) = at.and_then(|n| verdicts.get_mut(n)) {
                            *v = Verdict::Failed {
                                code: rejected.code.clone(),
                                message: rejected.message.clone(),
                            };
                        } else {
                            tracing::warn!(index = rejected.index, code = %rejected.code, "KERIS listed an error outside the request; ignored");
                        }
                    }
                    return Ok(RequestOutcome {
                        transfer_id: Some(transfer.transfer_id),
                        chunked_index: index,
                        journal_id,
                        items,
                        verdicts,
                    });
                }
                Err(e) if e.is_token_expired() || e.code() == Some(CODE_CLOSED) => {
                    // Refused before anything was stored: forget the journal
                    // row and go again on a new transfer.
                    if let (Some(j), Some(id)) = (&self.journal, journal_id) {
                        Journal::delete(&j.pg, id).await?;
                    }
                    self.transfer = None;
                    self.report.token_renewals += 1;
                    renewals += 1;
                    if renewals > MAX_RENEWALS {
                        return Ok(self.failed(None, 0, None, items, &e));
                    }
                    tracing::info!(partner = self.client.partner_name(), transfer_id = %transfer.transfer_id, "transfer token expired or closed; opening a new transfer");
                }
                Err(e) => {
                    // KERIS may have stored part of the request: the next
                    // index on this transfer is unknown, so start a new one.
                    self.transfer = None;
                    return Ok(self.failed(
                        Some(transfer.transfer_id),
                        index,
                        journal_id,
                        items,
                        &e,
                    ));
                }
            }
        }
    }

    fn failed(
        &mut self,
        transfer_id: Option<String>,
        chunked_index: u64,
        journal_id: Option<i64>,
        items: Vec<Item>,
        e: &KerisError,
    ) -> RequestOutcome {
        self.report.failed_requests += 1;
        let code = match e {
            KerisError::Transient { .. } => ERR_UNAVAILABLE,
            KerisError::TokenExpired { .. } => ERR_TOKEN,
            KerisError::Permanent { code, .. } if code == CODE_CLOSED => ERR_TOKEN,
            KerisError::Permanent { code, .. } => code.as_str(),
            KerisError::InvalidRequest { .. } => ERR_INVALID_REQUEST,
        }
        .to_string();
        if is_transient_code(&code) {
            if self.give_up.transient_failure() {
                tracing::error!(partner = self.client.partner_name(), failures = self.give_up.limit(), "KERIS keeps failing for this partner; its remaining statements wait for a later run");
            }
            self.report.gave_up = self.gave_up();
        }
        tracing::warn!(partner = self.client.partner_name(), statements = items.len(), %code, error = %e, "request failed; its statements are recorded as errors");
        let verdict = Verdict::Failed {
            code,
            message: e.to_string(),
        };
        RequestOutcome {
            transfer_id,
            chunked_index,
            journal_id,
            verdicts: vec![verdict; items.len()],
            items,
        }
    }
}

/// Collects items into requests of at most `max_statements` statements and
/// `max_bytes` bytes.
pub struct Batcher {
    max_statements: usize,
    max_bytes: usize,
    items: Vec<Item>,
    bytes: usize,
}

impl Batcher {
    pub fn new(max_statements: usize, max_bytes: usize) -> Self {
        Self {
            max_statements: max_statements.max(1),
            max_bytes,
            items: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds `item`; returns a full request when `item` does not fit in the
    /// current one (or fills it).
    pub fn push(&mut self, item: Item) -> Option<Vec<Item>> {
        let mut full = None;
        if !self.items.is_empty() && self.bytes + item.bytes.len() > self.max_bytes {
            full = Some(self.take());
        }
        self.bytes += item.bytes.len();
        self.items.push(item);
        if full.is_none() && self.items.len() >= self.max_statements {
            full = Some(self.take());
        }
        full
    }

    /// The last, partly filled request.
    pub fn take(&mut self) -> Vec<Item> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

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
    find_by_ids(
        db,
        KERIS_BATCH_DATA,
        ids,
        Some(stored_projection()),
        max_time,
    )
    .await
    .context("Failed to read keris_batch_data")
}

/// The documents of `collection` with these string `_id`s, by id, in one
/// `find` with `_id: {$in: ids}` (an `_id` index lookup per id on MongoDB
/// and on FerretDB v2; callers pass a batch, not a day), with `maxTimeMS`
/// `max_time` (the run's [`crate::runtime::JobContext::mongo_max_time`]).
pub async fn find_by_ids(
    db: &mongodb::Database,
    collection: &str,
    ids: &[String],
    projection: Option<Document>,
    max_time: Duration,
) -> anyhow::Result<HashMap<String, Document>> {
    let mut docs = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(docs);
    }
    let coll = db.collection::<Document>(collection);
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
    run_updates(db, KERIS_BATCH_DATA, &updates, per_command)
        .await
        .context("Failed to mark statements SENT in keris_batch_data")
}

/// Runs `updates` (statements of an `update` command: `{q, u}`) on
/// `collection` as unordered `update` commands of `per_command` statements,
/// [`COMMANDS_IN_FLIGHT`] at a time, and returns how many documents changed.
/// `Err` names the first failed statement (a command can succeed with some
/// of its statements failed).
pub async fn run_updates(
    db: &mongodb::Database,
    collection: &str,
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
                doc! { "update": collection, "updates": chunk.to_vec(), "ordered": false };
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

/// The failed statements of `outcome` as the columns of an `UNNEST`:
/// statement ids, user ids, stmt indexes, codes, messages.
#[derive(Default)]
pub struct FailedColumns {
    pub statement_ids: Vec<uuid::Uuid>,
    pub user_ids: Vec<Option<uuid::Uuid>>,
    pub partner_ids: Vec<Option<uuid::Uuid>>,
    pub base_dts: Vec<NaiveDate>,
    pub indexes: Vec<Option<i64>>,
    pub codes: Vec<String>,
    pub messages: Vec<String>,
}

impl FailedColumns {
    pub fn of(outcome: &RequestOutcome) -> anyhow::Result<Self> {
        let mut c = FailedColumns::default();
        for (n, item, code, message) in outcome.failed() {
            let id = uuid::Uuid::parse_str(&item.id).with_context(|| {
                format!(
                    "keris_batch_data document {} has an _id that is not a UUID",
                    item.id
                )
            })?;
            c.statement_ids.push(id);
            c.user_ids.push(uuid::Uuid::parse_str(&item.user_id).ok());
            c.partner_ids
                .push(uuid::Uuid::parse_str(&item.partner_id).ok());
            c.base_dts.push(item.base_dt);
            c.indexes.push(outcome.index_of(n));
            c.codes.push(code.to_string());
            c.messages.push(message.to_string());
        }
        Ok(c)
    }

    pub fn is_empty(&self) -> bool {
        self.statement_ids.is_empty()
    }
}

/// Records failed statements in `tb_dc_error_data_info` as `PENDING`: a
/// statement that already has an open row (`PENDING` or `REGENERATED`) gets
/// that row updated (code, message, index, `retry_cnt + 1`) instead of a
/// second row. Set-based: one statement for the whole request.
pub async fn record_errors(
    pg: &PgPool,
    job_id: &str,
    transfer_id: Option<&str>,
    failed: &FailedColumns,
) -> anyhow::Result<()> {
    sqlx::query(
        "WITH input AS (
             SELECT * FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::date[], $6::bigint[], $7::text[], $8::text[])
                 AS t(statement_id, user_id, partner_id, base_dt, stmt_index, err_code, err_msg)
         ), open AS (
             UPDATE tb_dc_error_data_info e
                SET err_code = i.err_code, err_msg = i.err_msg, transfer_id = $9, stmt_index = i.stmt_index,
                    status = 'PENDING', retry_cnt = e.retry_cnt + 1, upd_dt = now()
               FROM input i
              WHERE e.statement_id = i.statement_id AND e.status IN ('PENDING', 'REGENERATED')
             RETURNING e.statement_id
         )
         INSERT INTO tb_dc_error_data_info
                (job_id, base_dt, partner_id, user_id, transfer_id, stmt_index, statement_id, err_code, err_msg)
         SELECT $1, i.base_dt, i.partner_id, i.user_id, $9, i.stmt_index, i.statement_id, i.err_code, i.err_msg
           FROM input i
          WHERE i.statement_id NOT IN (SELECT statement_id FROM open)",
    )
    .bind(job_id)
    .bind(&failed.statement_ids)
    .bind(&failed.user_ids)
    .bind(&failed.partner_ids)
    .bind(&failed.base_dts)
    .bind(&failed.indexes)
    .bind(&failed.codes)
    .bind(&failed.messages)
    .bind(transfer_id)
    .execute(pg)
    .await
    .context("Failed to record statement errors in tb_dc_error_data_info")?;
    Ok(())
}

/// Partner-ID (lower-case UUID text, as stored) → configured partner name.
pub fn partners_by_id(
    settings: &crate::config::KerisSettings,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(settings
        .partner_ids()?
        .into_iter()
        .map(|(name, id)| (id.to_string(), name.to_string()))
        .collect())
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

    fn item(n: usize, len: usize) -> Item {
        Item {
            id: format!("id-{n}"),
            user_id: String::new(),
            partner_id: String::new(),
            base_dt: NaiveDate::from_ymd_opt(2026, 3, 5).unwrap(),
            bytes: vec![b'x'; len],
        }
    }

    #[test]
    fn batcher_cuts_by_count_and_by_bytes() {
        let mut b = Batcher::new(3, 100);
        let mut out = Vec::new();
        for n in 0..7 {
            out.extend(b.push(item(n, 10)));
        }
        out.push(b.take());
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 1]);

        let mut b = Batcher::new(100, 25);
        let mut out = Vec::new();
        for n in 0..5 {
            out.extend(b.push(item(n, 10)));
        }
        out.push(b.take());
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        // A statement bigger than the limit travels alone.
        let mut b = Batcher::new(100, 25);
        assert!(b.push(item(0, 5)).is_none());
        assert_eq!(b.push(item(1, 50)).map(|r| r.len()), Some(1));
        assert_eq!(b.push(item(2, 5)).map(|r| r.len()), Some(1));
        assert_eq!(b.take().len(), 1);
    }

    #[test]
    fn codes_are_sorted_into_what_happens_next() {
        assert!(is_transient_code(ERR_UNAVAILABLE) && is_transient_code(ERR_TOKEN));
        assert!(!is_transient_code(XAPI_VAL_ERR) && !is_transient_code("40001"));
        assert!(
            is_content_code(XAPI_VAL_ERR)
                && is_content_code(XAPI_USER_ERR)
                && !is_content_code(XAPI_DUP_ERR)
        );
        assert!(is_duplicate_code(XAPI_DUP_ERR));
    }
}
