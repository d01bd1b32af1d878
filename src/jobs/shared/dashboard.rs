//! Sending the KERIS dashboard events (API-001..005), shared by LMS-01-008
//! (which refreshes the teacher view, then sends everything pending) and
//! DC-01-004 (which fills missing achievement levels, then sends their
//! scores): the achievement-level scales, the per-partner sender with its
//! figures and give-up policy, and the paged readers of each API's pending
//! events. `[jobs.keris_dashboard]` configures it.
//!
//! Each event is sent with the student's KERIS launch token through the
//! client of the student's partner; a student without a token or of a
//! partner that is not configured is skipped, counted and listed by the
//! privacy audit's salted hash in the run's details. A `*_sent_at` is set,
//! once per page, only for events KERIS answered `00000`.
//!
//! A partitioned run (LMS-01-008 `--partition I/N`) reads and sends the
//! events of its students only: every reader adds the run's
//! [`JobContext::owns_user_sql`] condition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::give_up::GiveUp;
use super::partners::PartnerClients;
use crate::keris::{
    AchievementLevel, Api, ApiResponse, CompleteRequest, InitializedRequest, KerisClient,
    KerisError, ProgressRequest, ScoreRequest, StudentAccessToken, TerminatedRequest,
};
use crate::runtime::partition::{sql_condition, Partition};
use crate::runtime::JobContext;
use crate::time;

/// School level of a student, which decides the achievement-level scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchoolLevel {
    Elementary,
    Middle,
    High,
}

impl SchoolLevel {
    /// From `tb_lms_school.school_level` (`E`, `M`, `H`).
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "E" => Some(SchoolLevel::Elementary),
            "M" => Some(SchoolLevel::Middle),
            "H" => Some(SchoolLevel::High),
            _ => None,
        }
    }
}

/// Elementary school: three levels, `≥ 80` A, `≥ 60` B, else C (spec,
/// "Achievement levels"). Lowest score of each level, highest level first.
pub const ELEMENTARY_CUTOFFS: &[(f64, AchievementLevel)] =
    &[(80.0, AchievementLevel::A), (60.0, AchievementLevel::B)];
/// Below every elementary cut-off.
pub const ELEMENTARY_LOWEST: AchievementLevel = AchievementLevel::C;
/// Middle and high school: five levels, `≥ 90` A, `≥ 80` B, `≥ 70` C,
/// `≥ 60` D, else E.
pub const SECONDARY_CUTOFFS: &[(f64, AchievementLevel)] = &[
    (90.0, AchievementLevel::A),
    (80.0, AchievementLevel::B),
    (70.0, AchievementLevel::C),
    (60.0, AchievementLevel::D),
];
/// Below every middle/high-school cut-off.
pub const SECONDARY_LOWEST: AchievementLevel = AchievementLevel::E;

fn scale(level: SchoolLevel) -> (&'static [(f64, AchievementLevel)], AchievementLevel) {
    match level {
        SchoolLevel::Elementary => (ELEMENTARY_CUTOFFS, ELEMENTARY_LOWEST),
        SchoolLevel::Middle | SchoolLevel::High => (SECONDARY_CUTOFFS, SECONDARY_LOWEST),
    }
}

/// The achievement level of `score` (0–100) at `school_level`.
pub fn achievement_level(school_level: SchoolLevel, score: f64) -> AchievementLevel {
    let (cutoffs, lowest) = scale(school_level);
    cutoffs
        .iter()
        .find(|(min, _)| score >= *min)
        .map(|(_, level)| *level)
        .unwrap_or(lowest)
}

/// `A`..`E`.
pub fn level_letter(level: AchievementLevel) -> &'static str {
    match level {
        AchievementLevel::A => "A",
        AchievementLevel::B => "B",
        AchievementLevel::C => "C",
        AchievementLevel::D => "D",
        AchievementLevel::E => "E",
    }
}

fn parse_level(letter: &str) -> Option<AchievementLevel> {
    match letter {
        "A" => Some(AchievementLevel::A),
        "B" => Some(AchievementLevel::B),
        "C" => Some(AchievementLevel::C),
        "D" => Some(AchievementLevel::D),
        "E" => Some(AchievementLevel::E),
        _ => None,
    }
}

/// The same cut-offs as [`achievement_level`], as a SQL expression over the
/// SQL expressions `school_level` (`'E'`/`'M'`/`'H'`) and `score`; NULL when
/// either is NULL or unknown. Generated from the same tables, so the two
/// cannot drift apart.
pub fn level_sql(school_level: &str, score: &str) -> String {
    let case = |level: SchoolLevel| {
        let (cutoffs, lowest) = scale(level);
        let whens: String = cutoffs
            .iter()
            .map(|(min, l)| format!(" WHEN {score} >= {min:.2} THEN '{}'", level_letter(*l)))
            .collect();
        format!("CASE{whens} ELSE '{}' END", level_letter(lowest))
    };
    format!(
        "(CASE WHEN {score} IS NULL THEN NULL WHEN {school_level} = 'E' THEN {} WHEN {school_level} IN ('M', 'H') THEN {} END)",
        case(SchoolLevel::Elementary),
        case(SchoolLevel::Middle)
    )
}

/// School level of the row's student (`tb_lms_user.school_id` →
/// `tb_lms_school`), or, for a student without a known school, the level
/// the standard-system id itself names (its first letter, `E`/`M`/`H`).
pub fn school_level_sql(user_id: &str, std_sys_id: &str) -> String {
    format!(
        "COALESCE((SELECT s.school_level FROM tb_lms_user u JOIN tb_lms_school s ON s.school_id = u.school_id
                     WHERE u.user_id = {user_id}), left({std_sys_id}, 1))"
    )
}

/// The `WHERE` of each API's pending events (without pagination).
/// The table is aliased `x` everywhere.
const PENDING_INIT: &str = "x.keris_init_sent_at IS NULL";
const PENDING_TERM: &str =
    "x.keris_term_sent_at IS NULL AND x.ended_at IS NOT NULL AND x.keris_init_sent_at IS NOT NULL";
const PENDING_PROGRESS: &str = "(x.keris_sent_at IS NULL OR x.upd_dt > x.keris_sent_at)";
const PENDING_SCORE: &str = "x.score IS NOT NULL AND x.achievement_level IS NOT NULL
     AND (x.keris_sent_at IS NULL OR x.upd_dt > x.keris_sent_at)";

/// Events each API would send now (for `--dry-run`), of `partition`'s
/// students or all. API-002 counts ended sessions whose start is not sent
/// yet too: this run would send both.
pub async fn count_pending(
    conn: &mut PgConnection,
    partition: Option<Partition>,
) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let ours = sql_condition(partition, "x.user_id::text");
    let queries = [
        (Api::Initialized, format!("SELECT count(*) FROM tb_lms_lrn_session x WHERE {PENDING_INIT}")),
        (
            Api::Terminated,
            "SELECT count(*) FROM tb_lms_lrn_session x WHERE x.keris_term_sent_at IS NULL AND x.ended_at IS NOT NULL"
                .to_string(),
        ),
        (Api::CurriculumProgress, format!("SELECT count(*) FROM tb_lms_lrn_progress x WHERE {PENDING_PROGRESS}")),
        (
            Api::CurriculumComplete,
            format!("SELECT count(*) FROM tb_lms_lrn_progress x WHERE {PENDING_PROGRESS} AND x.completed_at IS NOT NULL"),
        ),
        (
            Api::CurriculumScore,
            format!("SELECT count(*) FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys x WHERE {PENDING_SCORE}"),
        ),
    ];
    let mut out = BTreeMap::new();
    for (api, sql) in queries {
        let n: i64 = sqlx::query_scalar(&format!("{sql} AND {ours}"))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("Failed to count {api} events"))?;
        out.insert(api.id(), n as u64);
    }
    Ok(out)
}

/// A student as the pages read them: partner and KERIS token (NULL when
/// the user row or token row is missing).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StudentRef {
    pub user_id: Uuid,
    pub partner_id: Option<Uuid>,
    pub token: Option<String>,
    pub access_id: Option<String>,
}

/// One dashboard call, ready to go.
#[derive(Debug, Clone)]
pub enum DashboardRequest {
    Initialized(InitializedRequest),
    Terminated(TerminatedRequest),
    Progress(ProgressRequest),
    Complete(CompleteRequest),
    Score(ScoreRequest),
}

impl DashboardRequest {
    pub fn api(&self) -> Api {
        match self {
            DashboardRequest::Initialized(_) => Api::Initialized,
            DashboardRequest::Terminated(_) => Api::Terminated,
            DashboardRequest::Progress(_) => Api::CurriculumProgress,
            DashboardRequest::Complete(_) => Api::CurriculumComplete,
            DashboardRequest::Score(_) => Api::CurriculumScore,
        }
    }

    async fn send(&self, client: &KerisClient) -> Result<ApiResponse, KerisError> {
        match self {
            DashboardRequest::Initialized(r) => client.initialized(r).await,
            DashboardRequest::Terminated(r) => client.terminated(r).await,
            DashboardRequest::Progress(r) => client.curriculum_progress(r).await,
            DashboardRequest::Complete(r) => client.curriculum_complete(r).await,
            DashboardRequest::Score(r) => client.curriculum_score(r).await,
        }
    }
}

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
    ctx: &'a JobContext,
    clients: PartnerClients,
    page_size: i64,
    max_reported_ids: usize,
    /// Per client: transient failures in a row, and the limit after which
    /// the partner's remaining events are deferred to the next run.
    give_up: Vec<GiveUp>,
    /// The privacy audit's salt: details and logs name a student by its
    /// salted hash, or not at all without one.
    salt: Option<String>,
    /// The run's students, as a condition on `x.user_id` (`TRUE` when the
    /// run is not partitioned).
    ours: String,
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
    async fn dispatch<K: Send>(
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

/// A request without its token: the page builds these, the sender adds the
/// student's token once it has resolved it.
#[derive(Debug, Clone)]
pub enum DashboardRequestBuilder {
    Initialized {
        at: DateTime<Utc>,
        lecture_code: String,
    },
    Terminated {
        at: DateTime<Utc>,
        lecture_code: String,
        duration: u64,
    },
    Progress {
        at: DateTime<Utc>,
        curriculum: String,
        percent: f64,
    },
    Complete {
        at: DateTime<Utc>,
        curriculum: String,
    },
    Score {
        at: DateTime<Utc>,
        curriculum: String,
        score: f64,
        level: AchievementLevel,
    },
}

impl DashboardRequestBuilder {
    fn api(&self) -> Api {
        match self {
            DashboardRequestBuilder::Initialized { .. } => Api::Initialized,
            DashboardRequestBuilder::Terminated { .. } => Api::Terminated,
            DashboardRequestBuilder::Progress { .. } => Api::CurriculumProgress,
            DashboardRequestBuilder::Complete { .. } => Api::CurriculumComplete,
            DashboardRequestBuilder::Score { .. } => Api::CurriculumScore,
        }
    }

    fn build(self, user_id: Uuid, access_token: StudentAccessToken) -> DashboardRequest {
        let ts = |at: DateTime<Utc>| at.with_timezone(&time::seoul());
        match self {
            DashboardRequestBuilder::Initialized { at, lecture_code } => {
                DashboardRequest::Initialized(InitializedRequest {
                    access_token,
                    user_id,
                    timestamp: ts(at),
                    lecture_code,
                })
            }
            DashboardRequestBuilder::Terminated {
                at,
                lecture_code,
                duration,
            } => DashboardRequest::Terminated(TerminatedRequest {
                access_token,
                user_id,
                timestamp: ts(at),
                lecture_code,
                duration,
            }),
            DashboardRequestBuilder::Progress {
                at,
                curriculum,
                percent,
            } => DashboardRequest::Progress(ProgressRequest {
                access_token,
                user_id,
                timestamp: ts(at),
                curriculum,
                percent,
            }),
            DashboardRequestBuilder::Complete { at, curriculum } => {
                DashboardRequest::Complete(CompleteRequest {
                    access_token,
                    user_id,
                    timestamp: ts(at),
                    curriculum,
                })
            }
            DashboardRequestBuilder::Score {
                at,
                curriculum,
                score,
                level,
            } => DashboardRequest::Score(ScoreRequest {
                access_token,
                user_id,
                timestamp: ts(at),
                curriculum,
                score,
                achievement_level: level,
            }),
        }
    }
}

const STUDENT_JOINS: &str = "LEFT JOIN tb_lms_user u ON u.user_id = x.user_id
     LEFT JOIN tb_lms_keris_token t ON t.user_id = x.user_id";

#[derive(Debug, sqlx::FromRow)]
struct SessionRow {
    session_id: i64,
    #[sqlx(flatten)]
    student: StudentRef,
    lecture_code: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

async fn session_page(
    pg: &PgPool,
    pending: &str,
    ours: &str,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<SessionRow>> {
    let sql = format!(
        "SELECT x.session_id, x.user_id, u.partner_id, t.token, t.access_id, x.lecture_code, x.started_at, x.ended_at
           FROM tb_lms_lrn_session x {STUDENT_JOINS}
          WHERE {pending} AND {ours} AND x.session_id > $1
          ORDER BY x.session_id LIMIT $2"
    );
    sqlx::query_as(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(pg)
        .await
        .context("Failed to read tb_lms_lrn_session")
}

/// API-001 for sessions whose start is not sent yet.
#[tracing::instrument(skip_all, err)]
pub async fn send_sessions_started(
    sender: &DashboardSender<'_>,
    pg: &PgPool,
) -> anyhow::Result<()> {
    send_sessions(sender, pg, true).await
}

/// API-002 for ended sessions whose start was sent and whose end was not.
#[tracing::instrument(skip_all, err)]
pub async fn send_sessions_ended(sender: &DashboardSender<'_>, pg: &PgPool) -> anyhow::Result<()> {
    send_sessions(sender, pg, false).await
}

async fn send_sessions(
    sender: &DashboardSender<'_>,
    pg: &PgPool,
    start: bool,
) -> anyhow::Result<()> {
    let (pending, column) = if start {
        (PENDING_INIT, "keris_init_sent_at")
    } else {
        (PENDING_TERM, "keris_term_sent_at")
    };
    let mut after = 0i64;
    loop {
        sender.ctx.stop_point()?;
        let rows = session_page(pg, pending, &sender.ours, after, sender.page_size).await?;
        let Some(last) = rows.last() else { break };
        after = last.session_id;
        let full = rows.len() as i64 == sender.page_size;
        let events = rows
            .into_iter()
            .map(|r| {
                let builder = if start {
                    DashboardRequestBuilder::Initialized {
                        at: r.started_at,
                        lecture_code: r.lecture_code,
                    }
                } else {
                    let ended = r.ended_at.expect("pending API-002 rows have ended_at");
                    let duration = (ended - r.started_at).num_seconds().max(0) as u64;
                    DashboardRequestBuilder::Terminated {
                        at: ended,
                        lecture_code: r.lecture_code,
                        duration,
                    }
                };
                (r.session_id, r.student, vec![builder])
            })
            .collect();
        let sent = sender.dispatch(events).await;
        if !sent.is_empty() {
            sqlx::query(&format!(
                "UPDATE tb_lms_lrn_session x SET {column} = now() FROM UNNEST($1::bigint[]) AS k(id) WHERE x.session_id = k.id"
            ))
            .bind(&sent)
            .execute(pg)
            .await
            .with_context(|| format!("Failed to set tb_lms_lrn_session.{column}"))?;
        }
        if !full {
            break;
        }
    }
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct ProgressRow {
    #[sqlx(flatten)]
    student: StudentRef,
    std_sys_id: String,
    progress_rate: f64,
    completed_at: Option<DateTime<Utc>>,
    upd_dt: DateTime<Utc>,
}

/// API-003, and API-004 for completed rows, for progress rows changed since
/// they were last sent. A row is marked sent only if every call for it was
/// accepted and it did not change meanwhile (same `upd_dt`).
#[tracing::instrument(skip_all, err)]
pub async fn send_progress(sender: &DashboardSender<'_>, pg: &PgPool) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT x.user_id, u.partner_id, t.token, t.access_id, x.std_sys_id, x.progress_rate::float8 AS progress_rate,
                x.completed_at, x.upd_dt
           FROM tb_lms_lrn_progress x {STUDENT_JOINS}
          WHERE {} AND {} AND (x.user_id, x.std_sys_id) > ($1, $2)
          ORDER BY x.user_id, x.std_sys_id LIMIT $3",
        PENDING_PROGRESS, sender.ours
    );
    let (mut after_user, mut after_id) = (Uuid::nil(), String::new());
    loop {
        sender.ctx.stop_point()?;
        let rows: Vec<ProgressRow> = sqlx::query_as(&sql)
            .bind(after_user)
            .bind(&after_id)
            .bind(sender.page_size)
            .fetch_all(pg)
            .await
            .context("Failed to read tb_lms_lrn_progress")?;
        let Some(last) = rows.last() else { break };
        (after_user, after_id) = (last.student.user_id, last.std_sys_id.clone());
        let full = rows.len() as i64 == sender.page_size;
        let events = rows
            .into_iter()
            .map(|r| {
                let mut builders = vec![DashboardRequestBuilder::Progress {
                    at: r.upd_dt,
                    curriculum: r.std_sys_id.clone(),
                    percent: r.progress_rate,
                }];
                if let Some(at) = r.completed_at {
                    builders.push(DashboardRequestBuilder::Complete {
                        at,
                        curriculum: r.std_sys_id.clone(),
                    });
                }
                (
                    (r.student.user_id, r.std_sys_id, r.upd_dt),
                    r.student,
                    builders,
                )
            })
            .collect();
        let sent = sender.dispatch(events).await;
        mark_sent(pg, "tb_lms_lrn_progress", &sent).await?;
        if !full {
            break;
        }
    }
    Ok(())
}

/// Sets `keris_sent_at` of the `(user_id, std_sys_id)` rows still at the
/// `upd_dt` that was sent; a row changed meanwhile stays pending.
async fn mark_sent(
    pg: &PgPool,
    table: &str,
    sent: &[(Uuid, String, DateTime<Utc>)],
) -> anyhow::Result<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = sent.iter().map(|k| k.0).collect();
    let ids: Vec<&str> = sent.iter().map(|k| k.1.as_str()).collect();
    let versions: Vec<DateTime<Utc>> = sent.iter().map(|k| k.2).collect();
    // `table` is one of this module's constants, never input.
    sqlx::query(&format!(
        "UPDATE {table} x SET keris_sent_at = now()
           FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS k(user_id, std_sys_id, upd_dt)
          WHERE x.user_id = k.user_id AND x.std_sys_id = k.std_sys_id AND x.upd_dt = k.upd_dt"
    ))
    .bind(&users)
    .bind(&ids)
    .bind(&versions)
    .execute(pg)
    .await
    .with_context(|| format!("Failed to set {table}.keris_sent_at"))?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct ScoreRow {
    #[sqlx(flatten)]
    student: StudentRef,
    std_sys_id: String,
    score: f64,
    achievement_level: String,
    upd_dt: DateTime<Utc>,
}

/// API-005 for view rows whose score changed since they were last sent;
/// with `changed_since`, only rows changed at or after that instant (DC-01-004
/// sends what it created or filled).
#[tracing::instrument(skip_all, err)]
pub async fn send_scores(
    sender: &DashboardSender<'_>,
    pg: &PgPool,
    changed_since: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT x.user_id, u.partner_id, t.token, t.access_id, x.std_sys_id, x.score::float8 AS score,
                x.achievement_level, x.upd_dt
           FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys x {STUDENT_JOINS}
          WHERE {} AND {} AND ($4::timestamptz IS NULL OR x.upd_dt >= $4) AND (x.user_id, x.std_sys_id) > ($1, $2)
          ORDER BY x.user_id, x.std_sys_id LIMIT $3",
        PENDING_SCORE, sender.ours
    );
    let (mut after_user, mut after_id) = (Uuid::nil(), String::new());
    loop {
        sender.ctx.stop_point()?;
        let rows: Vec<ScoreRow> = sqlx::query_as(&sql)
            .bind(after_user)
            .bind(&after_id)
            .bind(sender.page_size)
            .bind(changed_since)
            .fetch_all(pg)
            .await
            .context("Failed to read tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys")?;
        let Some(last) = rows.last() else { break };
        (after_user, after_id) = (last.student.user_id, last.std_sys_id.clone());
        let full = rows.len() as i64 == sender.page_size;
        let events = rows
            .into_iter()
            .filter_map(|r| {
                let level = parse_level(&r.achievement_level)?;
                let builder = DashboardRequestBuilder::Score {
                    at: r.upd_dt,
                    curriculum: r.std_sys_id.clone(),
                    score: r.score,
                    level,
                };
                Some((
                    (r.student.user_id, r.std_sys_id, r.upd_dt),
                    r.student,
                    vec![builder],
                ))
            })
            .collect();
        let sent = sender.dispatch(events).await;
        mark_sent(pg, "tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys", &sent).await?;
        if !full {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use AchievementLevel::*;

    #[test]
    fn middle_and_high_school_use_five_levels_at_90_80_70_60() {
        for school in [SchoolLevel::Middle, SchoolLevel::High] {
            let cases = [
                (100.0, A),
                (90.0, A),
                (89.99, B),
                (80.0, B),
                (79.99, C),
                (70.0, C),
                (69.99, D),
                (60.0, D),
                (59.99, E),
                (0.0, E),
            ];
            for (score, want) in cases {
                assert_eq!(achievement_level(school, score), want, "{school:?} {score}");
            }
        }
    }

    #[test]
    fn elementary_school_uses_three_levels_at_80_60() {
        let cases = [
            (100.0, A),
            (90.0, A),
            (80.0, A),
            (79.99, B),
            (60.0, B),
            (59.99, C),
            (0.0, C),
        ];
        for (score, want) in cases {
            assert_eq!(
                achievement_level(SchoolLevel::Elementary, score),
                want,
                "{score}"
            );
        }
    }

    #[test]
    fn level_sql_is_generated_from_the_same_cutoffs() {
        let sql = level_sql("sl", "sc");
        assert!(sql.contains("WHEN sc >= 90.00 THEN 'A' WHEN sc >= 80.00 THEN 'B' WHEN sc >= 70.00 THEN 'C' WHEN sc >= 60.00 THEN 'D' ELSE 'E'"), "{sql}");
        assert!(
            sql.contains("WHEN sc >= 80.00 THEN 'A' WHEN sc >= 60.00 THEN 'B' ELSE 'C'"),
            "{sql}"
        );
    }
}
