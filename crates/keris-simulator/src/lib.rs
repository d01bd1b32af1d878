//! KERIS simulator: a real HTTP/1.1 server implementing the interface of
//! `shared/spec/keris-api.md`, with records of what it accepted and fault
//! injection, for tests (in-process on `127.0.0.1:0`) and operators (the
//! `keris-simulator` binary).
//!
//! The server is written on a plain `TcpListener` with `httparse` and its
//! own chunked decoder because API-007 carries one statement per HTTP chunk
//! and hyper merges or splits chunks. Operator endpoints:
//!
//! | request | answer |
//! |---|---|
//! | `GET /_sim/stats` | [`Stats`] |
//! | `GET /_sim/statements?limit=N` | the last N [`RecordedStatement`]s |
//! | `GET /_sim/dashboard?limit=N` | the last N [`DashboardEvent`]s |
//! | `GET /_sim/requests?limit=N` | the last N [`RequestRecord`]s |
//! | `GET /_sim/faults`, `POST /_sim/faults` | the [`Faults`] in force / replace them |
//! | `POST /_sim/reset` | forget transfers, statements, records and counters (faults stay) |

pub mod bench;
mod http;
mod server;
mod state;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use aidt_batch::keris::options::ApiPaths;
use state::Shared;

/// How the simulator behaves. `Default` is the spec's behaviour on
/// `127.0.0.1:0` with no faults.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Partner-IDs accepted; empty accepts any UUID.
    pub partners: Vec<String>,
    /// `api_version` put in answers.
    pub api_version: String,
    /// Paths served.
    pub paths: ApiPaths,
    /// Statements per API-007 request before `40001`.
    pub max_statements_per_request: usize,
    /// Body bytes per request before `40001`.
    pub max_request_bytes: usize,
    /// Lifetime of a partner access token.
    pub token_ttl: Duration,
    /// Requests per second per partner before HTTP 429 (`None`: no limit).
    pub rate_limit: Option<f64>,
    /// Faults in force at start.
    pub faults: Faults,
    /// Keep accepted statements (bytes) for [`SimulatorHandle::statement`]
    /// and `/_sim/statements`; off for load tests.
    pub record_statements: bool,
    /// At most this many statements are kept (the first ones); the counters
    /// go on counting.
    pub max_recorded_statements: usize,
    /// At most this many request records and dashboard events are kept (the
    /// most recent ones).
    pub max_recorded_requests: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            partners: Vec::new(),
            api_version: "2.4".into(),
            paths: ApiPaths::default(),
            max_statements_per_request: 500,
            max_request_bytes: 5 * 1024 * 1024,
            token_ttl: Duration::from_secs(30 * 60),
            rate_limit: None,
            faults: Faults::default(),
            record_statements: true,
            max_recorded_statements: 100_000,
            max_recorded_requests: 1_000,
        }
    }
}

/// Injected failures. Counted faults (`…_next`) hit the next requests in
/// order and are checked first (429, reset, 5xx, hang); then the shares are
/// drawn from an RNG seeded with `seed`, so a sequential test sees the same
/// faults on every run. Setting faults reseeds the RNG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed of the fault RNG.
    pub seed: u64,
    /// Only these calls get faults (`API-001` … `API-007`,
    /// `TRANSFER-STATUS`); empty means all.
    pub only_apis: Vec<String>,
    /// Share (0–1) of requests answered HTTP 500 with code `50001`.
    pub server_error_share: f64,
    /// The next N requests are answered HTTP 500.
    pub server_error_next: u32,
    /// Share (0–1) of 5xx answers and hangs for which the request was
    /// processed (statements stored, dashboard event recorded) before
    /// failing; the rest fail before storing anything.
    pub stored_before_error_share: f64,
    /// Share (0–1) of requests answered only after `hang_secs`.
    pub hang_share: f64,
    /// The next N requests are answered only after `hang_secs`.
    pub hang_next: u32,
    /// Delay of a hanging answer, meant to exceed the client's timeout.
    pub hang_secs: f64,
    /// Share (0–1) of requests whose connection is reset after part of the
    /// body was read, without an answer (nothing is stored).
    pub reset_share: f64,
    /// The next N requests are reset mid-body.
    pub reset_next: u32,
    /// The next N requests get HTTP 429 with code `42901`.
    pub too_many_requests_next: u32,
    /// `Retry-After` (seconds) sent with 429 answers of
    /// `too_many_requests_next`.
    pub retry_after_secs: u64,
    /// Statements with these ids are rejected with `XAPI_VAL_ERR`.
    pub reject_statement_ids: Vec<Uuid>,
    /// Statements whose `actor.account.name` is one of these are rejected
    /// with `XAPI_USER_ERR` (KERIS does not know the student).
    pub reject_user_ids: Vec<String>,
    /// HTTP status (e.g. 403, 404, 413) with which a proxy or firewall in
    /// front of KERIS answers instead of KERIS, with an HTML page and no
    /// KERIS envelope (the page quotes the request's Partner-ID, as some
    /// error pages quote headers); nothing is processed. 0: no proxy fault.
    pub proxy_status: u16,
    /// With `proxy_status`: when not empty, only API-007 requests carrying
    /// one of these statements get the proxy's answer (a body it refuses,
    /// e.g. too large); when empty, every request (of `only_apis`).
    pub proxy_statement_ids: Vec<Uuid>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 0,
            only_apis: Vec::new(),
            server_error_share: 0.0,
            server_error_next: 0,
            stored_before_error_share: 0.5,
            hang_share: 0.0,
            hang_next: 0,
            hang_secs: 35.0,
            reset_share: 0.0,
            reset_next: 0,
            too_many_requests_next: 0,
            retry_after_secs: 1,
            reject_statement_ids: Vec::new(),
            reject_user_ids: Vec::new(),
            proxy_status: 0,
            proxy_statement_ids: Vec::new(),
        }
    }
}

/// Counters of one call for one partner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStats {
    /// Requests received.
    pub requests: u64,
    /// Answers by business code (`00000`, `40101`, …) or `reset` / `http-NNN`
    /// when the answer had no code of its own.
    pub answers: BTreeMap<String, u64>,
}

/// Counters of one partner (keyed by the Partner-ID header as received).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerStats {
    /// Per call id (`API-001` … `API-007`, `TRANSFER-STATUS`).
    pub calls: BTreeMap<String, ApiStats>,
    /// Transfers opened.
    pub transfers_opened: u64,
    /// HTTP chunks read in API-007 bodies, faulted requests included.
    pub chunks_received: u64,
    /// Statements processed (answered or stored).
    pub statements_received: u64,
    /// Statements stored for the first time.
    pub statements_accepted: u64,
    /// Statements whose id was already stored with the same content
    /// (accepted silently).
    pub statements_duplicate: u64,
    /// Statements listed in `list_error`.
    pub statements_rejected: u64,
    /// Dashboard events recorded.
    pub dashboard_events: u64,
}

/// What the simulator has seen, per partner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Partner-ID → counters.
    pub partners: BTreeMap<String, PartnerStats>,
    /// Connections accepted.
    pub connections: u64,
}

impl Stats {
    /// Counters of `partner_id` (empty if it never called).
    pub fn partner(&self, partner_id: &str) -> PartnerStats {
        self.partners
            .get(&partner_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Requests for call `api_id` summed over partners.
    pub fn requests(&self, api_id: &str) -> u64 {
        self.partners
            .values()
            .filter_map(|p| p.calls.get(api_id))
            .map(|c| c.requests)
            .sum()
    }

    /// Statements stored for the first time, over all partners.
    pub fn statements_accepted(&self) -> u64 {
        self.partners.values().map(|p| p.statements_accepted).sum()
    }
}

/// A statement the simulator stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedStatement {
    /// Statement id, if it had one.
    pub id: Option<Uuid>,
    /// Partner-ID of the transfer.
    pub partner_id: String,
    /// Transfer it came in.
    pub transfer_id: String,
    /// Absolute index in the transfer.
    pub index: u64,
    /// The statement as received.
    pub statement: serde_json::Value,
}

/// A dashboard call (API-001..005) the simulator accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DashboardEvent {
    /// Call id, `API-001` … `API-005`.
    pub api: String,
    /// Partner-ID of the caller.
    pub partner_id: String,
    /// The student.
    pub user_id: Uuid,
    /// The body as received.
    pub body: serde_json::Value,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// One request as the simulator saw it, for asserting request shapes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Call id, or `None` for unknown paths.
    pub api: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Headers in order received.
    pub headers: Vec<(String, String)>,
    /// JSON body (not kept for API-007).
    pub body: Option<serde_json::Value>,
    /// API-007: HTTP chunks in the body.
    pub chunks: Option<u64>,
    /// HTTP status answered (`0` for a reset).
    pub http_status: u16,
    /// Business code answered.
    pub code: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

impl RequestRecord {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Starts a simulator on `config.listen`, serving on the current tokio
/// runtime until the handle is shut down or dropped.
pub async fn start(config: SimulatorConfig) -> std::io::Result<SimulatorHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let cancel = CancellationToken::new();
    tokio::spawn(server::accept_loop(
        listener,
        shared.clone(),
        cancel.clone(),
    ));
    tracing::info!(%addr, "KERIS simulator listening");
    Ok(SimulatorHandle {
        addr,
        shared,
        cancel,
    })
}

/// A running simulator: its address and in-process access to what it
/// recorded. Dropping the handle stops the server.
pub struct SimulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimulatorHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the `api_domain` for a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// A stored statement by id, if recording is on.
    pub fn statement(&self, id: Uuid) -> Option<RecordedStatement> {
        self.shared.statement(id)
    }

    /// The last `limit` stored statements, oldest first.
    pub fn statements(&self, limit: usize) -> Vec<RecordedStatement> {
        self.shared.statements(limit)
    }

    /// Dashboard events accepted, oldest first.
    pub fn dashboard_events(&self) -> Vec<DashboardEvent> {
        self.shared.dashboard_events(usize::MAX)
    }

    /// Recent requests, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests(usize::MAX)
    }

    /// The last index stored for a transfer.
    pub fn transfer_index(&self, transfer_id: &str) -> Option<u64> {
        self.shared.transfer_index(transfer_id)
    }

    /// Faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the faults (and reseeds the fault RNG).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Makes every partner access token issued so far expired.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    /// Closes a transfer: further API-007 calls on it get `40901`.
    pub fn close_transfer(&self, transfer_id: &str) -> bool {
        self.shared.close_transfer(transfer_id)
    }

    /// Forgets transfers, statements, records and counters; faults stay.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting and closes connections.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until the server is shut down (by [`SimulatorHandle::shutdown`]
    /// or a signal handled by the caller).
    pub async fn stopped(&self) {
        self.cancel.cancelled().await;
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
