//! [`DashboardSender`]: one client per partner, the run's figures per API
//! and partner, and the give-up policy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use uuid::Uuid;

use super::{DashboardRequest, DashboardRequestBuilder, StudentRef};
use crate::keris::{Api, StudentAccessToken};

use crate::jobs::shared::give_up::GiveUp;
use crate::jobs::shared::partners::PartnerClients;
use crate::runtime::JobContext;

/// Figures of one API in the run's details.
#[derive(Debug, Default, Clone, Serialize)]
struct Tally {
    sent: u64,
    failed: u64,
    skipped: u64,
    /// Failures by KERIS code (`transient` when retries ran out).
    failed_by_code: BTreeMap<String, u64>,
}

/// KERIS calls of one partner (its configuration name, never the
/// Partner-ID) in the run's details, all APIs together.
#[derive(Debug, Default, Clone, Serialize)]
struct PartnerTally {
    /// Calls KERIS accepted.
    sent: u64,
    /// Calls KERIS refused or that failed after the client's retries.
    failed: u64,
    /// Calls not made because KERIS kept failing for the partner.
    deferred: u64,
}

/// A permanent rejection, for the details: which event and which code.
#[derive(Debug, Clone, Serialize)]
struct Rejection {
    api: &'static str,
    /// The audit's salted hash of the student (never the id: details
    /// outlive a privacy deletion); absent without a configured salt.
    #[serde(skip_serializing_if = "Option::is_none")]
    student: Option<String>,
    partner: String,
    code: String,
}

#[derive(Debug, Default)]
struct Report {
    tallies: BTreeMap<&'static str, Tally>,
    partners: BTreeMap<String, PartnerTally>,
    /// Salted hashes of skipped students (at most `max_reported_ids`).
    skipped_no_token: BTreeSet<String>,
    skipped_no_token_count: u64,
    skipped_unknown_partner: BTreeSet<String>,
    skipped_unknown_partner_count: u64,
    rejections: Vec<Rejection>,
    /// Partners (config names) whose remaining events were deferred.
    gave_up: BTreeSet<String>,
}

/// Why an event is not sent.
#[derive(Debug, Clone, Copy)]
enum Skip {
    NoToken,
    UnknownPartner,
}

/// Sends dashboard events through one client per configured partner and
/// keeps the run's figures. Shared by LMS-01-008 and DC-01-004.
pub struct DashboardSender<'a> {
    pub(super) ctx: &'a JobContext,
    clients: PartnerClients,
    pub(super) page_size: i64,
    max_reported_ids: usize,
    /// Per client: transient failures in a row, and the limit after which
    /// the partner's remaining events are deferred to the next run.
    give_up: Vec<GiveUp>,
    /// The privacy audit's salt: details and logs name a student by its
    /// salted hash, or not at all without one.
    salt: Option<String>,
    /// The run's students, as a condition on `x.user_id` (`TRUE` when the
    /// run is not partitioned).
    pub(super) ours: String,
    report: Mutex<Report>,
}

impl<'a> DashboardSender<'a> {
    pub fn new(ctx: &'a JobContext) -> anyhow::Result<Self> {
        let clients = PartnerClients::from_settings(&ctx.settings().keris)?;
        let job = &ctx.settings().jobs.keris_dashboard;
        Ok(Self {
            ctx,
            give_up: (0..clients.len())
                .map(|_| GiveUp::new(job.give_up_after_transient_failures))
                .collect(),
            clients,
            page_size: i64::from(job.page_size),
            max_reported_ids: job.max_reported_ids,
            salt: crate::jobs::shared::privacy::audit_salt(&ctx.settings().jobs.privacy).ok(),
            ours: ctx.owns_user_sql("x.user_id::text"),
            report: Mutex::new(Report::default()),
        })
    }

    fn resolve(&self, student: &StudentRef) -> Result<(usize, StudentAccessToken), Skip> {
        let client = student
            .partner_id
            .and_then(|p| self.clients.position(&p))
            .ok_or(Skip::UnknownPartner)?;
        match (&student.token, &student.access_id) {
            (Some(token), Some(access_id)) if !token.is_empty() => Ok((
                client,
                StudentAccessToken::new(token.clone(), access_id.clone()),
            )),
            _ => Err(Skip::NoToken),
        }
    }

    fn skip(&self, api: Api, user_id: Uuid, why: Skip) {
        self.ctx.counts.add_read(1);
        self.ctx.counts.add_skipped(1);
        let mut guard = self.report.lock().expect("report lock");
        let report = &mut *guard;
        report.tallies.entry(api.id()).or_default().skipped += 1;
        let max = self.max_reported_ids;
        let (ids, count) = match why {
            Skip::NoToken => (
                &mut report.skipped_no_token,
                &mut report.skipped_no_token_count,
            ),
            Skip::UnknownPartner => (
                &mut report.skipped_unknown_partner,
                &mut report.skipped_unknown_partner_count,
            ),
        };
        *count += 1;
        if ids.len() < max {
            if let Some(student) = self.student_ref(user_id) {
                ids.insert(student);
            }
        }
    }

    /// Sends `events` — each a key and the requests that make it up, sent in
    /// order; an event counts as sent only if all its requests were accepted
    /// — concurrently per partner; returns the keys of the events sent.
    pub(super) async fn dispatch<K: Send>(
        &self,
        events: Vec<(K, StudentRef, Vec<DashboardRequestBuilder>)>,
    ) -> Vec<K> {
        let mut per_partner: Vec<Vec<(K, Uuid, Vec<DashboardRequest>)>> =
            (0..self.clients.len()).map(|_| Vec::new()).collect();
        for (key, student, builders) in events {
            match self.resolve(&student) {
                Ok((client, token)) => {
                    let requests = builders
                        .into_iter()
                        .map(|b| b.build(student.user_id, token.clone()))
                        .collect();
                    per_partner[client].push((key, student.user_id, requests));
                }
                Err(why) => {
                    for b in &builders {
                        self.skip(b.api(), student.user_id, why);
                    }
                }
            }
        }
        let mut partners = Vec::new();
        for (i, events) in per_partner.into_iter().enumerate() {
            let client = &self.clients.get(i).client;
            let sends: Vec<_> = events
                .into_iter()
                .map(|(key, user_id, requests)| self.send_event(i, key, user_id, requests))
                .collect();
            partners.push(
                stream::iter(sends)
                    .buffer_unordered(client.options().max_concurrency.max(1))
                    .collect::<Vec<Option<K>>>(),
            );
        }
        futures::future::join_all(partners)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    }

    /// Sends the requests of one event in order; `Some(key)` if all were accepted.
    async fn send_event<K>(
        &self,
        client: usize,
        key: K,
        user_id: Uuid,
        requests: Vec<DashboardRequest>,
    ) -> Option<K> {
        for request in &requests {
            if !self.send_one(client, user_id, request).await {
                return None;
            }
        }
        Some(key)
    }

    async fn send_one(&self, index: usize, user_id: Uuid, request: &DashboardRequest) -> bool {
        let api = request.api();
        let client = &self.clients.get(index).client;
        let give_up = &self.give_up[index];
        self.ctx.counts.add_read(1);
        if give_up.gave_up() {
            // KERIS looks down for this partner: leave the event for the next run.
            self.ctx.counts.add_failed(1);
            let mut report = self.report.lock().expect("report lock");
            let tally = report.tallies.entry(api.id()).or_default();
            tally.failed += 1;
            *tally.failed_by_code.entry("deferred".into()).or_default() += 1;
            report.gave_up.insert(client.partner_name().to_string());
            let partner = client.partner_name().to_string();
            report.partners.entry(partner).or_default().deferred += 1;
            return false;
        }
        let result = request.send(client).await;
        match &result {
            Ok(_) => give_up.success(),
            Err(e) if e.is_transient() => {
                if give_up.transient_failure() {
                    tracing::error!(partner = client.partner_name(), failures = give_up.limit(), "KERIS keeps failing for this partner; its remaining events wait for the next run");
                }
            }
            Err(_) => {}
        }
        let mut report = self.report.lock().expect("report lock");
        let partner = report
            .partners
            .entry(client.partner_name().to_string())
            .or_default();
        if result.is_ok() {
            partner.sent += 1;
        } else {
            partner.failed += 1;
        }
        let tally = report.tallies.entry(api.id()).or_default();
        match result {
            Ok(_) => {
                tally.sent += 1;
                self.ctx.counts.add_written(1);
                true
            }
            Err(e) => {
                tally.failed += 1;
                self.ctx.counts.add_failed(1);
                let code = e
                    .code()
                    .map(str::to_string)
                    .unwrap_or_else(|| "transient".into());
                *tally.failed_by_code.entry(code.clone()).or_default() += 1;
                let student = self.student_ref(user_id);
                tracing::warn!(api = api.id(), student = student.as_deref().unwrap_or("-"), partner = client.partner_name(), error = %e, "dashboard event not sent; the next run retries it");
                if e.code().is_some() && report.rejections.len() < self.max_reported_ids {
                    report.rejections.push(Rejection {
                        api: api.id(),
                        student,
                        partner: client.partner_name().to_string(),
                        code,
                    });
                }
                false
            }
        }
    }

    /// How details and logs name a student: the privacy audit's salted hash.
    fn student_ref(&self, user_id: Uuid) -> Option<String> {
        self.salt
            .as_deref()
            .map(|salt| crate::jobs::shared::privacy::student_hash(salt, user_id))
    }

    /// Writes the figures to the run's details.
    pub fn finish(&self) {
        let report = self.report.lock().expect("report lock");
        self.ctx.set_detail("apis", &report.tallies);
        self.ctx.set_detail("partners", &report.partners);
        self.ctx
            .set_detail("skipped_no_token", &report.skipped_no_token);
        self.ctx
            .set_detail("skipped_no_token_events", report.skipped_no_token_count);
        self.ctx
            .set_detail("skipped_unknown_partner", &report.skipped_unknown_partner);
        self.ctx.set_detail(
            "skipped_unknown_partner_events",
            report.skipped_unknown_partner_count,
        );
        self.ctx.set_detail("rejected", &report.rejections);
        if !report.gave_up.is_empty() {
            self.ctx.set_detail("gave_up_partners", &report.gave_up);
        }
        if report.skipped_no_token_count > 0 || report.skipped_unknown_partner_count > 0 {
            tracing::warn!(
                no_token = report.skipped_no_token_count,
                unknown_partner = report.skipped_unknown_partner_count,
                "dashboard events skipped (students listed by salted hash in the run's details)"
            );
        }
    }
}
