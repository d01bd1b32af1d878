//! The simulator's memory: transfers, stored statement ids, records,
//! counters and faults, behind one mutex taken a few times per request
//! (statements are parsed outside it).

use std::collections::{hash_map::Entry, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::validate::ValidStatement;
use super::{
    DashboardEvent, Faults, PartnerStats, RecordedStatement, RequestRecord, SimulatorConfig, Stats,
};
use aidt_batch::keris::types::{Api, StatementError};
use aidt_batch::keris::{
    CODE_BAD_REQUEST, CODE_CLOSED, CODE_NOT_FOUND, CODE_UNAUTHORIZED, XAPI_DUP_ERR, XAPI_USER_ERR,
    XAPI_VAL_ERR,
};

/// A business error answer: code and message.
pub(crate) type Refusal = (&'static str, String);

/// What to do to a request instead of (or besides) answering it normally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    None,
    /// HTTP 429, code 42901.
    TooMany {
        retry_after: u64,
    },
    /// Close the connection after part of the body.
    Reset,
    /// HTTP 500, code 50001, after processing (`stored`) or not.
    ServerError {
        stored: bool,
    },
    /// Answer after `secs`, having processed the request (`stored`) or not.
    Hang {
        secs: f64,
        stored: bool,
    },
    /// A proxy's HTML page with this HTTP status; nothing processed.
    Proxy {
        status: u16,
    },
}

/// One statement of an API-007 body after the profile checks.
pub(crate) struct Item {
    pub verdict: Result<ValidStatement, String>,
    /// The bytes, when recording is on and the statement is valid.
    pub bytes: Option<Box<[u8]>>,
    /// `actor.account.name`, read only while users are being rejected.
    pub user: Option<Box<str>>,
}

pub(crate) struct Shared {
    pub config: SimulatorConfig,
    allowed: HashSet<String>,
    signing_key: [u8; 32],
    state: Mutex<State>,
}

struct State {
    faults: Faults,
    reject_ids: HashSet<u128>,
    reject_users: HashSet<String>,
    proxy_ids: HashSet<u128>,
    rng: SmallRng,
    partners: HashMap<String, PartnerState>,
    transfers: HashMap<String, TransferState>,
    recorded: Vec<StoredStatement>,
    recorded_by_id: HashMap<u128, usize>,
    dashboard: VecDeque<DashboardEvent>,
    requests: VecDeque<RequestRecord>,
    connections: u64,
}

#[derive(Default)]
struct PartnerState {
    /// Statement id → canonical hash, for duplicate detection.
    stored: HashMap<u128, u64>,
    stats: PartnerStats,
    bucket: Option<TokenBucket>,
}

struct TransferState {
    partner: Arc<str>,
    id: Arc<str>,
    token: String,
    expires_at: Instant,
    /// Last absolute index stored.
    index: u64,
    closed: bool,
}

struct StoredStatement {
    id: Option<u128>,
    partner: Arc<str>,
    transfer: Arc<str>,
    index: u64,
    bytes: Box<[u8]>,
}

impl StoredStatement {
    fn to_record(&self) -> RecordedStatement {
        RecordedStatement {
            id: self.id.map(Uuid::from_u128),
            partner_id: self.partner.to_string(),
            transfer_id: self.transfer.to_string(),
            index: self.index,
            statement: serde_json::from_slice(&self.bytes).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Requests per second with a one-second burst.
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// `Ok` if a request may pass now, else how long until it may.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

impl State {
    fn new(faults: Faults) -> Self {
        let mut state = Self {
            faults: Faults::default(),
            reject_ids: HashSet::new(),
            reject_users: HashSet::new(),
            proxy_ids: HashSet::new(),
            rng: SmallRng::seed_from_u64(0),
            partners: HashMap::new(),
            transfers: HashMap::new(),
            recorded: Vec::new(),
            recorded_by_id: HashMap::new(),
            dashboard: VecDeque::new(),
            requests: VecDeque::new(),
            connections: 0,
        };
        state.set_faults(faults);
        state
    }

    fn set_faults(&mut self, faults: Faults) {
        self.rng = SmallRng::seed_from_u64(faults.seed);
        self.reject_ids = faults
            .reject_statement_ids
            .iter()
            .map(|id| id.as_u128())
            .collect();
        self.reject_users = faults
            .reject_user_ids
            .iter()
            .map(|u| u.to_ascii_lowercase())
            .collect();
        self.proxy_ids = faults
            .proxy_statement_ids
            .iter()
            .map(|id| id.as_u128())
            .collect();
        self.faults = faults;
    }

    fn partner(&mut self, partner: &str) -> &mut PartnerState {
        if !self.partners.contains_key(partner) {
            self.partners
                .insert(partner.to_string(), PartnerState::default());
        }
        self.partners.get_mut(partner).expect("just inserted")
    }
}

impl Shared {
    pub fn new(config: SimulatorConfig) -> Self {
        let allowed = config
            .partners
            .iter()
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        let state = Mutex::new(State::new(config.faults.clone()));
        Self {
            allowed,
            signing_key: rand::thread_rng().gen(),
            state,
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counters.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The call served at `path` (without the leading `/`).
    pub fn route(&self, path: &str) -> Option<Api> {
        let path = path.trim_start_matches('/');
        Api::ALL
            .into_iter()
            .find(|api| api.path(&self.config.paths).trim_start_matches('/') == path)
    }

    /// Whether `partner` (lowercased header value) may call.
    pub fn check_partner(&self, partner: Option<&str>) -> Result<(), Refusal> {
        let Some(partner) = partner else {
            return Err((CODE_UNAUTHORIZED, "Partner-ID header missing".into()));
        };
        if Uuid::try_parse(partner).is_err() {
            return Err((CODE_UNAUTHORIZED, "Partner-ID is not a UUID".into()));
        }
        if !self.allowed.is_empty() && !self.allowed.contains(partner) {
            return Err((CODE_UNAUTHORIZED, "unknown Partner-ID".into()));
        }
        Ok(())
    }

    /// Whether statements must be checked against `reject_user_ids`.
    pub fn rejects_users(&self) -> bool {
        !self.lock().reject_users.is_empty()
    }

    pub fn count_connection(&self) {
        self.lock().connections += 1;
    }

    /// Rate limit, then injected faults, for one request.
    pub fn decide_fault(&self, api: Api, partner: &str) -> Fault {
        let mut state = self.lock();
        if let Some(rate) = self.config.rate_limit.filter(|r| *r > 0.0) {
            let bucket = state
                .partner(partner)
                .bucket
                .get_or_insert_with(|| TokenBucket::new(rate));
            if let Err(wait) = bucket.take(Instant::now()) {
                return Fault::TooMany {
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                };
            }
        }
        let state = &mut *state;
        let f = &mut state.faults;
        if !f.only_apis.is_empty() && !f.only_apis.iter().any(|a| a.eq_ignore_ascii_case(api.id()))
        {
            return Fault::None;
        }
        if f.proxy_status != 0 && f.proxy_statement_ids.is_empty() {
            return Fault::Proxy {
                status: f.proxy_status,
            };
        }
        let stored_share = f.stored_before_error_share;
        let hang_secs = f.hang_secs;
        if f.too_many_requests_next > 0 {
            f.too_many_requests_next -= 1;
            return Fault::TooMany {
                retry_after: f.retry_after_secs,
            };
        }
        if f.reset_next > 0 {
            f.reset_next -= 1;
            return Fault::Reset;
        }
        if f.server_error_next > 0 {
            f.server_error_next -= 1;
            return Fault::ServerError {
                stored: state.rng.gen_bool(stored_share.clamp(0.0, 1.0)),
            };
        }
        if f.hang_next > 0 {
            f.hang_next -= 1;
            return Fault::Hang {
                secs: hang_secs,
                stored: state.rng.gen_bool(stored_share.clamp(0.0, 1.0)),
            };
        }
        let (reset, error, hang) = (f.reset_share, f.server_error_share, f.hang_share);
        if reset + error + hang <= 0.0 {
            return Fault::None;
        }
        let roll: f64 = state.rng.gen();
        let stored = state.rng.gen_bool(stored_share.clamp(0.0, 1.0));
        if roll < reset {
            Fault::Reset
        } else if roll < reset + error {
            Fault::ServerError { stored }
        } else if roll < reset + error + hang {
            Fault::Hang {
                secs: hang_secs,
                stored,
            }
        } else {
            Fault::None
        }
    }

    /// The proxy's status when one of `items` is a statement the proxy
    /// refuses (`proxy_statement_ids`).
    pub fn proxy_refuses(&self, items: &[Item]) -> Option<u16> {
        let state = self.lock();
        if state.faults.proxy_status == 0 || state.proxy_ids.is_empty() {
            return None;
        }
        items
            .iter()
            .filter_map(|i| i.verdict.as_ref().ok().and_then(|v| v.id))
            .any(|id| state.proxy_ids.contains(&id))
            .then_some(state.faults.proxy_status)
    }

    /// Opens a transfer (if `commit`) and returns its id, token and start time.
    pub fn open_transfer(&self, partner: &str, commit: bool) -> (String, String, String) {
        let id = Uuid::new_v4().to_string();
        let now = Utc::now();
        let token = self.make_token(&id, partner, now.timestamp());
        if commit {
            let mut state = self.lock();
            state.partner(partner).stats.transfers_opened += 1;
            let transfer = TransferState {
                partner: partner.into(),
                id: id.as_str().into(),
                token: token.clone(),
                expires_at: Instant::now() + self.config.token_ttl,
                index: 0,
                closed: false,
            };
            state.transfers.insert(id.clone(), transfer);
        }
        (
            id,
            token,
            aidt_batch::keris::types::format_timestamp(
                &now.with_timezone(&aidt_batch::time::seoul()),
            ),
        )
    }

    /// A JWT-shaped token (header.payload.signature, base64url) longer than
    /// 256 characters, like KERIS's; only its identity matters here.
    fn make_token(&self, transfer_id: &str, partner: &str, now: i64) -> String {
        let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let partner_hash: String = Sha256::digest(partner.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let payload = serde_json::json!({
            "iss": "keris-simulator",
            "aud": "aidt_rawdata/send_statement",
            "sub": transfer_id,
            "ptn": partner_hash,
            "iat": now,
            "exp": now + self.config.token_ttl.as_secs() as i64,
            "jti": Uuid::new_v4(),
        });
        let payload = base64url(&serde_json::to_vec(&payload).expect("json"));
        let mut mac = Sha256::new();
        mac.update(self.signing_key);
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        let signature = base64url(&mac.finalize());
        format!("{header}.{payload}.{signature}")
    }

    /// Header checks of API-007 against the transfer.
    pub fn check_transfer(
        &self,
        partner: &str,
        transfer_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<(), Refusal> {
        // Every failure here means "open a new transfer", hence 40101 even
        // for an unknown Transfer-Id (KERIS forgot it, or it was reset).
        let transfer_id =
            transfer_id.ok_or((CODE_UNAUTHORIZED, "Transfer-Id header missing".to_string()))?;
        let token = token.ok_or((
            CODE_UNAUTHORIZED,
            "Partner-Access-Token header missing".to_string(),
        ))?;
        let state = self.lock();
        let transfer = state
            .transfers
            .get(transfer_id)
            .filter(|t| &*t.partner == partner)
            .ok_or((CODE_UNAUTHORIZED, "unknown Transfer-Id".to_string()))?;
        if transfer.token != token {
            return Err((
                CODE_UNAUTHORIZED,
                "Partner-Access-Token does not belong to this transfer".into(),
            ));
        }
        if Instant::now() >= transfer.expires_at {
            return Err((CODE_UNAUTHORIZED, "Partner-Access-Token expired".into()));
        }
        if transfer.closed {
            return Err((CODE_CLOSED, "transfer already closed".into()));
        }
        Ok(())
    }

    /// Stores the statements of one API-007 request (if `commit`) and
    /// returns the rejected ones.
    pub fn apply_statements(
        &self,
        partner: &str,
        transfer_id: &str,
        chunked_index: u64,
        chunks: u64,
        items: Vec<Item>,
        commit: bool,
    ) -> Result<Vec<StatementError>, Refusal> {
        let record = self.config.record_statements;
        let max_recorded = self.config.max_recorded_statements;
        let mut guard = self.lock();
        let state = &mut *guard;
        state.partner(partner).stats.chunks_received += chunks;
        if !commit {
            return Ok(Vec::new());
        }
        let transfer = state
            .transfers
            .get_mut(transfer_id)
            .ok_or((CODE_UNAUTHORIZED, "unknown Transfer-Id".to_string()))?;
        if chunked_index > transfer.index + 1 {
            return Err((
                CODE_BAD_REQUEST,
                format!(
                    "Chunked-Index {chunked_index} leaves a gap: last stored index is {}",
                    transfer.index
                ),
            ));
        }
        let n = items.len() as u64;
        transfer.index = transfer.index.max(chunked_index + n - 1);
        let (transfer_name, partner_name) = (transfer.id.clone(), transfer.partner.clone());
        let p = state.partners.get_mut(partner).expect("counted above");
        p.stats.statements_received += n;
        let mut errors = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let index = chunked_index + i as u64;
            let mut reject = |code: &str, message: String| {
                errors.push(StatementError {
                    index,
                    code: code.into(),
                    message,
                })
            };
            let valid = match item.verdict {
                Err(message) => {
                    reject(XAPI_VAL_ERR, message);
                    continue;
                }
                Ok(valid) => valid,
            };
            if valid.id.is_some_and(|id| state.reject_ids.contains(&id)) {
                reject(XAPI_VAL_ERR, "rejected by fault injection".into());
                continue;
            }
            if item
                .user
                .as_deref()
                .is_some_and(|u| state.reject_users.contains(&u.to_ascii_lowercase()))
            {
                reject(XAPI_USER_ERR, "unknown user (actor.account.name)".into());
                continue;
            }
            if let Some(id) = valid.id {
                match p.stored.entry(id) {
                    Entry::Vacant(slot) => {
                        slot.insert(valid.hash);
                    }
                    Entry::Occupied(seen) if *seen.get() == valid.hash => {
                        p.stats.statements_duplicate += 1;
                        continue;
                    }
                    Entry::Occupied(_) => {
                        reject(
                            XAPI_DUP_ERR,
                            "a statement with this id was received with other content".into(),
                        );
                        continue;
                    }
                }
            }
            p.stats.statements_accepted += 1;
            if let (true, Some(bytes)) = (record, item.bytes) {
                if state.recorded.len() < max_recorded {
                    if let Some(id) = valid.id {
                        state.recorded_by_id.insert(id, state.recorded.len());
                    }
                    state.recorded.push(StoredStatement {
                        id: valid.id,
                        partner: partner_name.clone(),
                        transfer: transfer_name.clone(),
                        index,
                        bytes,
                    });
                }
            }
        }
        p.stats.statements_rejected += errors.len() as u64;
        Ok(errors)
    }

    /// Last stored index and token of a transfer of `partner`.
    pub fn transfer_status(
        &self,
        partner: &str,
        transfer_id: &str,
    ) -> Result<(u64, String), Refusal> {
        let state = self.lock();
        let t = state
            .transfers
            .get(transfer_id)
            .filter(|t| &*t.partner == partner)
            .ok_or((CODE_NOT_FOUND, "no such transfer".to_string()))?;
        Ok((t.index, t.token.clone()))
    }

    pub fn record_dashboard(&self, event: DashboardEvent) {
        let mut state = self.lock();
        state.partner(&event.partner_id).stats.dashboard_events += 1;
        if state.dashboard.len() >= self.config.max_recorded_requests {
            state.dashboard.pop_front();
        }
        state.dashboard.push_back(event);
    }

    /// Counts an answer and keeps the request record.
    pub fn record_request(&self, partner: &str, record: RequestRecord) {
        let mut state = self.lock();
        if let Some(api) = &record.api {
            let answer = match (&record.code, record.http_status) {
                (_, 0) => "reset".to_string(),
                (Some(code), _) => code.clone(),
                (None, status) => format!("http-{status}"),
            };
            let calls = state
                .partner(partner)
                .stats
                .calls
                .entry(api.clone())
                .or_default();
            calls.requests += 1;
            *calls.answers.entry(answer).or_default() += 1;
        }
        if self.config.max_recorded_requests > 0 {
            if state.requests.len() >= self.config.max_recorded_requests {
                state.requests.pop_front();
            }
            state.requests.push_back(record);
        }
    }

    pub fn stats(&self) -> Stats {
        let state = self.lock();
        Stats {
            partners: state
                .partners
                .iter()
                .map(|(k, v)| (k.clone(), v.stats.clone()))
                .collect(),
            connections: state.connections,
        }
    }

    pub fn statement(&self, id: Uuid) -> Option<RecordedStatement> {
        let state = self.lock();
        state
            .recorded_by_id
            .get(&id.as_u128())
            .map(|&i| state.recorded[i].to_record())
    }

    pub fn statements(&self, limit: usize) -> Vec<RecordedStatement> {
        let state = self.lock();
        let skip = state.recorded.len().saturating_sub(limit);
        state.recorded[skip..]
            .iter()
            .map(StoredStatement::to_record)
            .collect()
    }

    pub fn dashboard_events(&self, limit: usize) -> Vec<DashboardEvent> {
        let state = self.lock();
        let skip = state.dashboard.len().saturating_sub(limit);
        state.dashboard.iter().skip(skip).cloned().collect()
    }

    pub fn requests(&self, limit: usize) -> Vec<RequestRecord> {
        let state = self.lock();
        let skip = state.requests.len().saturating_sub(limit);
        state.requests.iter().skip(skip).cloned().collect()
    }

    pub fn transfer_index(&self, transfer_id: &str) -> Option<u64> {
        self.lock().transfers.get(transfer_id).map(|t| t.index)
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        tracing::info!(?faults, "KERIS simulator faults changed");
        self.lock().set_faults(faults);
    }

    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.lock().transfers.values_mut() {
            t.expires_at = now;
        }
    }

    pub fn close_transfer(&self, transfer_id: &str) -> bool {
        self.lock()
            .transfers
            .get_mut(transfer_id)
            .map(|t| t.closed = true)
            .is_some()
    }

    pub fn reset(&self) {
        let mut state = self.lock();
        let faults = state.faults.clone();
        *state = State::new(faults);
    }
}

/// Base64url without padding (RFC 4648 §5), as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=group.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors_without_padding() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), want);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn tokens_look_like_jwts_longer_than_256_characters() {
        let shared = Shared::new(SimulatorConfig::default());
        let token = shared.make_token(
            &Uuid::new_v4().to_string(),
            "11111111-2222-4333-8444-555555555555",
            1_772_000_000,
        );
        assert!(token.len() > 256, "{}", token.len());
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains("11111111-2222"));
    }

    #[test]
    fn token_bucket_refuses_after_a_burst_and_refills() {
        let mut b = TokenBucket::new(2.0);
        let t0 = Instant::now();
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn counted_faults_come_first_and_in_order() {
        let shared = Shared::new(SimulatorConfig {
            faults: Faults {
                too_many_requests_next: 1,
                reset_next: 1,
                server_error_next: 1,
                stored_before_error_share: 1.0,
                ..Faults::default()
            },
            ..SimulatorConfig::default()
        });
        let p = "p";
        assert_eq!(
            shared.decide_fault(Api::OpenTransfer, p),
            Fault::TooMany { retry_after: 1 }
        );
        assert_eq!(shared.decide_fault(Api::OpenTransfer, p), Fault::Reset);
        assert_eq!(
            shared.decide_fault(Api::OpenTransfer, p),
            Fault::ServerError { stored: true }
        );
        assert_eq!(shared.decide_fault(Api::OpenTransfer, p), Fault::None);
    }

    #[test]
    fn fault_shares_are_deterministic_per_seed_and_roughly_proportional() {
        let faults = Faults {
            seed: 7,
            server_error_share: 0.2,
            reset_share: 0.1,
            ..Faults::default()
        };
        let run = || {
            let shared = Shared::new(SimulatorConfig {
                faults: faults.clone(),
                ..SimulatorConfig::default()
            });
            (0..2000)
                .map(|_| shared.decide_fault(Api::SendStatements, "p"))
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        let errors = a
            .iter()
            .filter(|f| matches!(f, Fault::ServerError { .. }))
            .count();
        let stored = a
            .iter()
            .filter(|f| matches!(f, Fault::ServerError { stored: true }))
            .count();
        let resets = a.iter().filter(|f| matches!(f, Fault::Reset)).count();
        assert!((300..500).contains(&errors), "{errors}");
        assert!((100..300).contains(&resets), "{resets}");
        assert!(
            stored > 0 && stored < errors,
            "both stored and unstored 5xx happen: {stored}/{errors}"
        );
    }

    #[test]
    fn only_apis_limits_faults_to_those_calls() {
        let shared = Shared::new(SimulatorConfig {
            faults: Faults {
                server_error_next: 1,
                only_apis: vec!["API-007".into()],
                ..Faults::default()
            },
            ..SimulatorConfig::default()
        });
        assert_eq!(shared.decide_fault(Api::OpenTransfer, "p"), Fault::None);
        assert!(matches!(
            shared.decide_fault(Api::SendStatements, "p"),
            Fault::ServerError { .. }
        ));
    }
}
