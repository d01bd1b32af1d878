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
//! - transient failure after the client's retries: every statement of the
//!   request gets that failure as its verdict ([`ERR_UNAVAILABLE`],
//!   [`ERR_TOKEN`], or [`ERR_INVALID_REQUEST`] for a request that could not
//!   be built) and the transfer is dropped, because KERIS may have stored
//!   part of the request and the next index is no longer known;
//! - refused as a whole (a business code such as `40001`, or an HTTP 4xx
//!   without KERIS's envelope, e.g. a proxy's 413 page): KERIS took nothing
//!   (it takes a request only with `00000`), so the transfer and its next
//!   index stay, and the request is split in halves, sent in order, down to
//!   the one statement to blame, which gets the code. Refusals alike in a
//!   row are judged by [`super::refusal`]: when they are not about the
//!   statements the sender stops ([`PartnerSender::stopped`]) and nothing of
//!   them is recorded, so the statements wait for a later run instead of
//!   all failing.
//!
//! Resending a statement is always safe: its id is a UUID v5 of its content's
//! identity, and KERIS drops a statement it already holds with the same
//! content.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;
use mongodb::bson::{doc, Document};
use sqlx::PgPool;

use super::give_up::GiveUp;
use super::keris_batch_data::stored_projection;
use super::refusal::{Next, Refusal, Streak, SystemicRefusal};
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::keris::{
    Api, KerisClient, KerisError, SendStatementsResponse, Transfer, CODE_CLOSED, XAPI_DUP_ERR,
    XAPI_USER_ERR, XAPI_VAL_ERR,
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
    /// Requests (or halves of them) KERIS refused as a whole, each split
    /// until the statement to blame was alone.
    pub refused_requests: u64,
    /// Statements KERIS already held, sent to tell a refusal of the
    /// statements from a refusal of everything.
    pub probes: u64,
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

/// Where the sender finds a statement KERIS already holds, to probe with
/// (see [`super::refusal`]) before this run had one accepted: a `SENT`
/// statement of the partner, looked up once, by day (each lookup an
/// equality on `keris_batch_data`'s first index keys).
#[derive(Clone)]
pub struct ProbeSource {
    pub db: mongodb::Database,
    pub partner_id: String,
    /// Days to look in, most recent first.
    pub days: Vec<NaiveDate>,
}

impl ProbeSource {
    async fn find(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let coll = self.db.collection::<Document>(KERIS_BATCH_DATA);
        for day in &self.days {
            let filter = doc! { "base_dt": day.to_string(), "partner_id": &self.partner_id, "status": BatchStatus::Sent.as_str() };
            let found = coll
                .find_one(filter)
                .projection(stored_projection())
                .await
                .context("Failed to read keris_batch_data")?;
            if let Some(item) = found.and_then(|d| Item::from_stored(&d).ok()) {
                return Ok(Some(item.bytes));
            }
        }
        Ok(None)
    }
}

/// What one API-007 call came to.
enum Posted {
    /// KERIS took the request (`00000`): its transfer, first index, journal
    /// row and answer (`list_error`).
    Taken {
        transfer_id: String,
        index: u64,
        journal_id: Option<i64>,
        answer: SendStatementsResponse,
    },
    /// Refused as a whole (API-006 or API-007): nothing was stored, the
    /// journal row is gone, the transfer and its next index stay.
    Refused(Refusal),
    /// Not delivered (transient failure, tokens refused again and again, a
    /// request that could not be built): the transfer it went out on, if
    /// any, is dropped.
    Failed {
        transfer_id: Option<String>,
        index: u64,
        journal_id: Option<i64>,
        error: KerisError,
    },
}

/// Sends one partner's requests, one at a time, on a transfer it opens and
/// renews as needed; splits a request KERIS refuses as a whole and stops
/// when the refusals are not about the statements ([`super::refusal`]).
pub struct PartnerSender {
    client: KerisClient,
    journal: Option<Journal>,
    give_up: GiveUp,
    streak: Streak,
    transfer: Option<Transfer>,
    next_index: u64,
    /// A statement KERIS holds (the first this run had accepted, or one
    /// found by `probe_source`).
    probe: Option<Vec<u8>>,
    probe_source: Option<ProbeSource>,
    /// Statements refused alone, waiting until KERIS is seen to take other
    /// requests (then they are failed verdicts) or the refusal turns out to
    /// be systemic (then they are dropped: nothing recorded).
    held: Vec<RequestOutcome>,
    stopped: Option<SystemicRefusal>,
    pub report: SendReport,
}

impl PartnerSender {
    /// `journal`: write each request to `batch_keris_request` before it goes
    /// out (DC-01-001). `cfg`: `give_up_after_transient_failures` and
    /// `stop_after_refusals` of `[jobs.keris_transfer]`.
    pub fn new(
        client: KerisClient,
        journal: Option<Journal>,
        cfg: &crate::config::KerisTransferSettings,
    ) -> Self {
        Self {
            client,
            journal,
            give_up: GiveUp::new(cfg.give_up_after_transient_failures),
            streak: Streak::new(cfg.stop_after_refusals),
            transfer: None,
            next_index: 1,
            probe: None,
            probe_source: None,
            held: Vec::new(),
            stopped: None,
            report: SendReport::default(),
        }
    }

    /// Where to find a statement to probe with before one was accepted.
    pub fn with_probe_source(mut self, source: ProbeSource) -> Self {
        self.probe_source = Some(source);
        self
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

    /// The systemic refusal that stopped this sender: nothing more is sent,
    /// and what was not recorded waits for a later run.
    pub fn stopped(&self) -> Option<&SystemicRefusal> {
        self.stopped.as_ref()
    }

    /// Sends `items` (at most one request's worth, see [`Batcher`]) and
    /// returns what became of them, one outcome per request KERIS took or
    /// that failed (a refused request is split, down to the statement to
    /// blame). A statement refused alone may be returned by a later call,
    /// once KERIS is seen to take other requests, or by [`Self::finish`].
    /// Statements without an outcome after [`Self::stopped`] are left as
    /// they are. `Err` only when the journal or the probe's lookup fails
    /// (the databases are down): nothing of the failed step was sent then.
    pub async fn send(&mut self, items: Vec<Item>) -> anyhow::Result<Vec<RequestOutcome>> {
        self.report.requests += 1;
        let mut out = Vec::new();
        let mut pending = VecDeque::from([items]);
        while let Some(mut items) = pending.pop_front() {
            if self.stopped.is_some() {
                break;
            }
            let bodies: Vec<Vec<u8>> = items
                .iter_mut()
                .map(|i| std::mem::take(&mut i.bytes))
                .collect();
            match self.post(&bodies, Some(&items)).await? {
                Posted::Taken {
                    transfer_id,
                    index,
                    journal_id,
                    answer,
                } => {
                    let outcome = taken(transfer_id, index, journal_id, items, &answer);
                    self.answered(&bodies, &outcome, &mut out);
                    out.push(outcome);
                }
                Posted::Failed {
                    transfer_id,
                    index,
                    journal_id,
                    error,
                } => out.push(self.failed(transfer_id, index, journal_id, items, &error)),
                Posted::Refused(refusal) => {
                    for (item, body) in items.iter_mut().zip(bodies) {
                        item.bytes = body;
                    }
                    self.refused(items, refusal, &mut pending, &mut out).await?;
                }
            }
        }
        Ok(out)
    }

    /// The statements refused alone and still held, once the last request
    /// was sent: KERIS is asked to take a statement it holds; unless it
    /// refuses that too (then the refusal is systemic: [`Self::stopped`]),
    /// they are returned as failed.
    pub async fn finish(&mut self) -> anyhow::Result<Vec<RequestOutcome>> {
        if self.held.is_empty() || self.stopped.is_some() {
            return Ok(Vec::new());
        }
        if self.streak.stops() && self.probe().await? == Some(false) {
            self.stop();
            return Ok(Vec::new());
        }
        self.streak.answered();
        Ok(std::mem::take(&mut self.held))
    }

    /// KERIS took a request: refusals so far were about their statements,
    /// and one of its accepted statements can serve as a probe.
    fn answered(
        &mut self,
        bodies: &[Vec<u8>],
        outcome: &RequestOutcome,
        out: &mut Vec<RequestOutcome>,
    ) {
        self.give_up.success();
        self.streak.answered();
        out.append(&mut self.held);
        if self.probe.is_none() {
            let accepted = outcome
                .verdicts
                .iter()
                .position(|v| *v == Verdict::Accepted);
            self.probe = accepted.map(|n| bodies[n].clone());
        }
    }

    /// A request refused as a whole: split it, hold its one statement, try
    /// API-006 again, or stop when the refusal is systemic.
    async fn refused(
        &mut self,
        mut items: Vec<Item>,
        refusal: Refusal,
        pending: &mut VecDeque<Vec<Item>>,
        out: &mut Vec<RequestOutcome>,
    ) -> anyhow::Result<()> {
        self.report.refused_requests += 1;
        let opening = refusal.api == Api::OpenTransfer;
        let (code, message) = (refusal.code.clone(), refusal.message.clone());
        tracing::warn!(partner = self.client.partner_name(), statements = items.len(), api = %refusal.api, %code, %message, "KERIS refused a request as a whole");
        let mut next = self
            .streak
            .refused(refusal, if opening { 0 } else { items.len() });
        if next == Next::Probe {
            let accepted = self.probe().await?;
            next = self.streak.probed(accepted);
            if accepted == Some(true) {
                out.append(&mut self.held);
            }
        }
        if next == Next::Stop {
            self.stop();
        } else if opening && self.streak.stops() {
            pending.push_front(items);
        } else if opening {
            // Never to stop: the statements get the refusal, as they would
            // be given any failure of their request.
            out.push(refused_outcome(items, code, message));
        } else if items.len() == 1 {
            self.held.push(refused_outcome(items, code, message));
        } else {
            let second = items.split_off(items.len() / 2);
            pending.push_front(second);
            pending.push_front(items);
        }
        Ok(())
    }

    /// Sends one statement KERIS already holds: `Some(true)` taken,
    /// `Some(false)` refused, `None` no statement to probe with or no
    /// answer.
    async fn probe(&mut self) -> anyhow::Result<Option<bool>> {
        if self.probe.is_none() {
            if let Some(source) = self.probe_source.take() {
                self.probe = source.find().await?;
            }
        }
        let Some(body) = self.probe.clone() else {
            return Ok(None);
        };
        self.report.probes += 1;
        Ok(match self.post(&[body], None).await? {
            Posted::Taken { .. } => Some(true),
            Posted::Refused(_) => Some(false),
            Posted::Failed { .. } => None,
        })
    }

    fn stop(&mut self) {
        self.stopped = self.streak.systemic(self.client.partner_name());
        // Their statements stay as they are (READY, the rows open).
        self.held.clear();
        if let Some(stop) = &self.stopped {
            tracing::error!(partner = self.client.partner_name(), error = %stop, "KERIS refuses every request for this partner; the rest waits for a later run");
        }
    }

    /// The open transfer, or a new one (also when the open one is about to
    /// expire).
    async fn transfer(&mut self) -> Result<Transfer, KerisError> {
        if self
            .transfer
            .as_ref()
            .is_some_and(|t| t.received_at.elapsed() >= TRANSFER_RENEW_AFTER)
        {
            self.transfer = None;
        }
        if let Some(t) = &self.transfer {
            return Ok(t.clone());
        }
        let t = self.client.open_transfer().await?;
        self.report.transfers_opened += 1;
        self.transfer = Some(t.clone());
        self.next_index = 1;
        Ok(t)
    }

    /// One API-007 call of `bodies` at the transfer's next index, journaled
    /// first when `journaled` (the request's items) is given; `40101` and
    /// `40901` open a new transfer and go again (at most [`MAX_RENEWALS`]
    /// times).
    async fn post(
        &mut self,
        bodies: &[Vec<u8>],
        journaled: Option<&[Item]>,
    ) -> anyhow::Result<Posted> {
        let mut renewals = 0;
        loop {
            let transfer = match self.transfer().await {
                Ok(t) => t,
                Err(e) => return Ok(not_sent(e)),
            };
            let index = self.next_index;
            let journal_id = match (&self.journal, journaled) {
                (Some(j), Some(items)) => {
                    Some(j.insert(&transfer.transfer_id, index, items).await?)
                }
                _ => None,
            };
            let error = match self.client.send_statements(&transfer, index, bodies).await {
                Ok(answer) => {
                    self.next_index += bodies.len() as u64;
                    return Ok(Posted::Taken {
                        transfer_id: transfer.transfer_id,
                        index,
                        journal_id,
                        answer,
                    });
                }
                Err(e) => e,
            };
            let renew = error.is_token_expired() || error.code() == Some(CODE_CLOSED);
            if let Some(refusal) = Refusal::of(&error).filter(|_| !renew) {
                // Refused before anything was stored (KERIS takes a request
                // only with 00000): the transfer's next index is unchanged.
                self.forget(journal_id).await?;
                return Ok(Posted::Refused(refusal));
            }
            if !renew {
                // KERIS may have stored part of the request: the next
                // index on this transfer is unknown, so start a new one.
                self.transfer = None;
                return Ok(Posted::Failed {
                    transfer_id: Some(transfer.transfer_id),
                    index,
                    journal_id,
                    error,
                });
            }
            // Refused before anything was stored: go again on a new transfer.
            self.forget(journal_id).await?;
            self.transfer = None;
            self.report.token_renewals += 1;
            renewals += 1;
            if renewals > MAX_RENEWALS {
                return Ok(not_sent(error));
            }
            tracing::info!(partner = self.client.partner_name(), transfer_id = %transfer.transfer_id, "transfer token expired or closed; opening a new transfer");
        }
    }

    /// Deletes the journal row of a request KERIS did not take.
    async fn forget(&self, journal_id: Option<i64>) -> anyhow::Result<()> {
        if let (Some(j), Some(id)) = (&self.journal, journal_id) {
            Journal::delete(&j.pg, id).await?;
        }
        Ok(())
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

/// The outcome of a request KERIS took: each statement accepted unless
/// `list_error` names it (by absolute index).
fn taken(
    transfer_id: String,
    index: u64,
    journal_id: Option<i64>,
    items: Vec<Item>,
    answer: &SendStatementsResponse,
) -> RequestOutcome {
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
    RequestOutcome {
        transfer_id: Some(transfer_id),
        chunked_index: index,
        journal_id,
        items,
        verdicts,
    }
}

/// Statements refused as a whole: the refusal is each one's verdict, on no
/// transfer (KERIS stored them nowhere).
fn refused_outcome(mut items: Vec<Item>, code: String, message: String) -> RequestOutcome {
    for item in &mut items {
        item.bytes = Vec::new();
    }
    let verdict = Verdict::Failed { code, message };
    RequestOutcome {
        transfer_id: None,
        chunked_index: 0,
        journal_id: None,
        verdicts: vec![verdict; items.len()],
        items,
    }
}

/// A request that reached no transfer: API-006 refused it (a refusal) or
/// failed, or the tokens were refused again and again.
fn not_sent(error: KerisError) -> Posted {
    match Refusal::of(&error) {
        Some(refusal) if error.api() == Api::OpenTransfer => Posted::Refused(refusal),
        _ => Posted::Failed {
            transfer_id: None,
            index: 0,
            journal_id: None,
            error,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

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
