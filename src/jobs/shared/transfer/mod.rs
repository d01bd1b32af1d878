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

use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;
use mongodb::bson::{doc, Document};
use sqlx::PgPool;

use crate::keris::{XAPI_DUP_ERR, XAPI_USER_ERR, XAPI_VAL_ERR};

mod sender;
pub mod settings;

pub use sender::{PartnerSender, ProbeSource};

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
