//! [`PartnerSender`]: one partner's requests, in order, on a transfer it
//! opens and renews; what the module above describes, as code.

use std::collections::VecDeque;

use anyhow::Context as _;
use chrono::NaiveDate;
use mongodb::bson::{doc, Document};

use super::{
    is_transient_code, Item, Journal, RequestOutcome, SendReport, Verdict, ERR_INVALID_REQUEST,
    ERR_TOKEN, ERR_UNAVAILABLE, MAX_RENEWALS, TRANSFER_RENEW_AFTER,
};
use crate::contract::{BatchStatus, KERIS_BATCH_DATA};
use crate::jobs::shared::give_up::GiveUp;
use crate::jobs::shared::keris_batch_data::stored_projection;
use crate::jobs::shared::refusal::{Next, Refusal, Streak, SystemicRefusal};
use crate::keris::{Api, KerisClient, KerisError, SendStatementsResponse, Transfer, CODE_CLOSED};

/// Where the sender finds a statement KERIS already holds, to probe with
/// (see [`crate::jobs::shared::refusal`]) before this run had one accepted: a `SENT`
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
/// when the refusals are not about the statements ([`crate::jobs::shared::refusal`]).
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
