//! The KERIS client for one partner: typed calls, retries with backoff,
//! per-partner rate and concurrency limits.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::error::{classify, excerpt, Class, ClientBuildError, KerisError};
use super::options::{backoff_delay, ClientOptions};
use super::types::{
    Api, ApiResponse, CompleteRequest, InitializedRequest, ProgressRequest, ScoreRequest,
    SendStatementsResponse, TerminatedRequest, Transfer, TransferStatus,
};

/// Header carrying the Partner-ID on every call.
pub const HEADER_PARTNER_ID: &str = "Partner-ID";
/// Header carrying the API version on every call.
pub const HEADER_API_VERSION: &str = "API-version";
/// API-007: the transfer id.
pub const HEADER_TRANSFER_ID: &str = "Transfer-Id";
/// API-007: the transfer's JWT.
pub const HEADER_PARTNER_ACCESS_TOKEN: &str = "Partner-Access-Token";
/// API-007: absolute 1-based index of the request's first statement.
pub const HEADER_CHUNKED_INDEX: &str = "Chunked-Index";

/// A KERIS partner (one textbook brand): a name for logs and the secret
/// Partner-ID. `Debug` shows only the name.
#[derive(Clone)]
pub struct Partner {
    name: String,
    id: SecretString,
}

impl Partner {
    /// `name` is the configuration key (`keris.partners.<name>`), `id` the
    /// Partner-ID.
    pub fn new(name: impl Into<String>, id: SecretString) -> Self {
        Self {
            name: name.into(),
            id,
        }
    }

    /// The name used in logs instead of the Partner-ID.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Partner-ID, for the request header only.
    pub fn id(&self) -> &SecretString {
        &self.id
    }
}

impl fmt::Debug for Partner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partner")
            .field("name", &self.name)
            .field("id", &"[REDACTED]")
            .finish()
    }
}

/// A KERIS client bound to one partner. Cheap to clone; clones share the
/// connection pool and the partner's rate and concurrency limits, so build
/// one per partner and share it.
#[derive(Clone)]
pub struct KerisClient {
    inner: Arc<Inner>,
}

struct Inner {
    partner_name: String,
    /// Marked sensitive, so even reqwest's own `Debug` hides it.
    partner_header: HeaderValue,
    api_version: HeaderValue,
    base: String,
    http: reqwest::Client,
    options: ClientOptions,
    limiter: Option<RateLimiter>,
    permits: Semaphore,
}

impl fmt::Debug for KerisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KerisClient")
            .field("partner", &self.inner.partner_name)
            .field("api_domain", &self.inner.base)
            .field("api_version", &self.inner.options.api_version)
            .finish_non_exhaustive()
    }
}

impl KerisClient {
    /// A client for `partner` at `api_domain` (e.g. `https://…` or the
    /// simulator's `http://127.0.0.1:PORT`).
    pub fn new(
        api_domain: &str,
        partner: Partner,
        options: ClientOptions,
    ) -> Result<Self, ClientBuildError> {
        if !(api_domain.starts_with("http://") || api_domain.starts_with("https://")) {
            return Err(ClientBuildError::BadApiDomain);
        }
        let mut partner_header = HeaderValue::from_str(partner.id.expose_secret())
            .map_err(|_| ClientBuildError::BadPartnerId(partner.name.clone()))?;
        partner_header.set_sensitive(true);
        let api_version = HeaderValue::from_str(&options.api_version).map_err(|_| {
            ClientBuildError::Http("api_version is not a valid header value".into())
        })?;
        // HTTP/1.1 only: API-007's "one statement per chunk" exists only in
        // HTTP/1.1 chunked encoding; HTTP/2 has no chunks.
        let http = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.max_concurrency.max(1))
            .tcp_nodelay(true)
            .user_agent(concat!("aidt-batch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError::Http(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                partner_name: partner.name,
                partner_header,
                api_version,
                base: api_domain.trim_end_matches('/').to_string(),
                http,
                limiter: RateLimiter::new(options.requests_per_second, options.rate_burst),
                permits: Semaphore::new(options.max_concurrency.max(1)),
                options,
            }),
        })
    }

    /// A client for partner `partner_name` of the configuration.
    pub fn from_settings(
        settings: &crate::config::KerisSettings,
        partner_name: &str,
        options: ClientOptions,
    ) -> Result<Self, ClientBuildError> {
        let domain = settings
            .api_domain
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or(ClientBuildError::MissingApiDomain)?;
        let id = settings
            .partners
            .get(partner_name)
            .and_then(|p| p.partner_id.clone())
            .ok_or_else(|| ClientBuildError::UnknownPartner(partner_name.to_string()))?;
        Self::new(domain, Partner::new(partner_name, id), options)
    }

    /// The partner's name (never its id).
    pub fn partner_name(&self) -> &str {
        &self.inner.partner_name
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// API-001: a student started learning.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "API-001"), err(Display, level = "warn"))]
    pub async fn initialized(
        &self,
        request: &InitializedRequest,
    ) -> Result<ApiResponse, KerisError> {
        self.dashboard(Api::Initialized, request).await
    }

    /// API-002: a student ended learning.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "API-002"), err(Display, level = "warn"))]
    pub async fn terminated(&self, request: &TerminatedRequest) -> Result<ApiResponse, KerisError> {
        self.dashboard(Api::Terminated, request).await
    }

    /// API-003: progress through a curriculum element.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "API-003"), err(Display, level = "warn"))]
    pub async fn curriculum_progress(
        &self,
        request: &ProgressRequest,
    ) -> Result<ApiResponse, KerisError> {
        self.dashboard(Api::CurriculumProgress, request).await
    }

    /// API-004: a curriculum element completed.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "API-004"), err(Display, level = "warn"))]
    pub async fn curriculum_complete(
        &self,
        request: &CompleteRequest,
    ) -> Result<ApiResponse, KerisError> {
        self.dashboard(Api::CurriculumComplete, request).await
    }

    /// API-005: a score on a curriculum element.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "API-005"), err(Display, level = "warn"))]
    pub async fn curriculum_score(
        &self,
        request: &ScoreRequest,
    ) -> Result<ApiResponse, KerisError> {
        self.dashboard(Api::CurriculumScore, request).await
    }

    async fn dashboard<B: Serialize>(
        &self,
        api: Api,
        request: &B,
    ) -> Result<ApiResponse, KerisError> {
        let body = serde_json::to_vec(request).map_err(|e| KerisError::InvalidRequest {
            api,
            reason: format!("cannot serialize the body: {e}"),
        })?;
        self.call(api, None, &|req| {
            req.header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    /// API-006: opens a learning-history transfer. Retrying a failed open is
    /// harmless: an unused transfer simply expires.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "API-006"), err(Display, level = "warn"))]
    pub async fn open_transfer(&self) -> Result<Transfer, KerisError> {
        let transfer: Transfer = self
            .call(Api::OpenTransfer, None, &|req| {
                req.header(CONTENT_TYPE, "application/json")
            })
            .await?;
        tracing::debug!(transfer_id = %transfer.transfer_id, "transfer opened");
        Ok(transfer)
    }

    /// Transfer status: the last index KERIS stored for `transfer_id`; an
    /// interrupted sender resumes at `index + 1`.
    #[tracing::instrument(skip_all, fields(partner = %self.inner.partner_name, api = "TRANSFER-STATUS", transfer_id = %transfer_id), err(Display, level = "warn"))]
    pub async fn transfer_status(&self, transfer_id: &str) -> Result<TransferStatus, KerisError> {
        #[derive(Serialize)]
        struct Body<'a> {
            transfer_id: &'a str,
        }
        let body =
            serde_json::to_vec(&Body { transfer_id }).expect("a struct of one string serializes");
        self.call(Api::TransferStatus, None, &|req| {
            req.header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    /// API-007: sends `statements` (each the serialized JSON of one xAPI
    /// statement) on `transfer`, the first one having absolute index
    /// `chunked_index` (1-based, across the transfer). Each statement goes
    /// out as one HTTP/1.1 chunk.
    ///
    /// At most `max_statements_per_request` statements and
    /// `max_request_bytes` bytes per call (see [`plan_requests`]). A retry
    /// resends the same statements with the same `Chunked-Index`, which KERIS
    /// deduplicates by statement id. `Ok` may still list rejected statements
    /// in `list_error`; [`KerisError::TokenExpired`] means: open a new
    /// transfer and resend.
    #[tracing::instrument(
        skip_all,
        fields(partner = %self.inner.partner_name, api = "API-007", transfer_id = %transfer.transfer_id, chunked_index = chunked_index, statements = statements.len()),
        err(Display, level = "warn")
    )]
    pub async fn send_statements(
        &self,
        transfer: &Transfer,
        chunked_index: u64,
        statements: &[Vec<u8>],
    ) -> Result<SendStatementsResponse, KerisError> {
        let api = Api::SendStatements;
        let options = &self.inner.options;
        let invalid = |reason: String| KerisError::InvalidRequest { api, reason };
        if statements.is_empty() {
            return Err(invalid("no statements to send".into()));
        }
        if chunked_index == 0 {
            return Err(invalid("Chunked-Index is 1-based".into()));
        }
        if statements.len() > options.max_statements_per_request {
            return Err(invalid(format!(
                "{} statements in one request; at most {} (split with plan_requests)",
                statements.len(),
                options.max_statements_per_request
            )));
        }
        let bytes: usize = statements.iter().map(Vec::len).sum();
        if bytes > options.max_request_bytes {
            return Err(invalid(format!(
                "{bytes} bytes in one request; at most {}",
                options.max_request_bytes
            )));
        }
        if statements.iter().any(Vec::is_empty) {
            return Err(invalid("an empty statement cannot be a chunk".into()));
        }
        let transfer_id = HeaderValue::from_str(&transfer.transfer_id)
            .map_err(|_| invalid("the transfer id is not a valid header value".into()))?;
        let mut token = HeaderValue::from_str(transfer.partner_access_token.expose_secret())
            .map_err(|_| invalid("the partner access token is not a valid header value".into()))?;
        token.set_sensitive(true);
        let index = HeaderValue::from(chunked_index);

        let secret = Some(transfer.partner_access_token.expose_secret());
        let response: SendStatementsResponse = self
            .call(api, secret, &|req| {
                // A fresh stream per attempt: the same bytes, one chunk each.
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    statements.iter().map(|s| Ok(s.clone())).collect();
                req.header(HEADER_TRANSFER_ID, transfer_id.clone())
                    .header(HEADER_PARTNER_ACCESS_TOKEN, token.clone())
                    .header(HEADER_CHUNKED_INDEX, index.clone())
                    .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            })
            .await?;
        tracing::debug!(rejected = response.list_error.len(), "statements sent");
        Ok(response)
    }

    /// Runs one call with retries. `build` adds the call's own headers and
    /// body to a request that already has the common headers; it runs once
    /// per attempt. `secret` (a transfer's token) is masked, like the
    /// Partner-ID, in what an error quotes of an answer.
    async fn call<T: DeserializeOwned>(
        &self,
        api: Api,
        secret: Option<&str>,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<T, KerisError> {
        let options = &self.inner.options;
        let url = format!(
            "{}/{}",
            self.inner.base,
            api.path(&options.paths).trim_start_matches('/')
        );
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (reason, retry_after) = match self.attempt(api, &url, secret, build).await {
                Ok(value) => return Ok(value),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retryable {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            let give_up = |reason: String| KerisError::Transient {
                api,
                attempts: attempt,
                reason,
                retry_after,
            };
            if attempt >= options.max_attempts.max(1) {
                return Err(give_up(reason));
            }
            if retry_after.is_some_and(|ra| ra > options.max_retry_after) {
                return Err(give_up(format!(
                    "{reason}; Retry-After longer than {:?}",
                    options.max_retry_after
                )));
            }
            let jitter = rand::thread_rng().gen::<f64>();
            let backoff = backoff_delay(attempt, options.base_backoff, options.max_backoff, jitter);
            let delay = backoff.max(retry_after.unwrap_or_default());
            tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, %reason, "KERIS call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        api: Api,
        url: &str,
        secret: Option<&str>,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<T, Failure> {
        let inner = &self.inner;
        if let Some(limiter) = &inner.limiter {
            limiter.acquire().await;
        }
        let permit = inner
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let request = inner
            .http
            .post(url)
            .header(HEADER_PARTNER_ID, inner.partner_header.clone())
            .header(HEADER_API_VERSION, inner.api_version.clone());
        let response = build(request)
            .send()
            .await
            .map_err(|e| Failure::retry(describe(&e)))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::retry(describe(&e)))?;
        drop(permit);

        #[derive(Deserialize)]
        struct Envelope {
            code: String,
            #[serde(default)]
            message: String,
        }
        let envelope: Option<Envelope> = serde_json::from_slice(&body).ok();
        let code = envelope.as_ref().map(|e| e.code.as_str());
        let secrets = [
            inner.partner_header.to_str().unwrap_or_default(),
            secret.unwrap_or_default(),
        ];
        // Without KERIS's envelope (a proxy's or a firewall's page), what
        // the body says, shortened and without secrets.
        let message = match &envelope {
            Some(e) => e.message.clone(),
            None => excerpt(&body, &secrets),
        };
        match classify(api, status, code) {
            Class::Ok => serde_json::from_slice(&body).map_err(|e| {
                // Not `e`'s Display: it may quote a value from the answer.
                Failure::retry(format!(
                    "unreadable answer ({:?} error at column {})",
                    e.classify(),
                    e.column()
                ))
            }),
            Class::Transient => Err(Failure::Retryable {
                reason: match code {
                    Some(code) => format!("HTTP {status}, code {code}: {message}"),
                    None if message.is_empty() => format!("HTTP {status}"),
                    None => format!("HTTP {status}: {message}"),
                },
                retry_after,
            }),
            Class::Permanent => Err(Failure::Final(KerisError::Permanent {
                api,
                http_status: status,
                code: code.map_or_else(|| format!("HTTP {status}"), str::to_string),
                message,
            })),
            Class::TokenExpired => Err(Failure::Final(KerisError::TokenExpired { api })),
        }
    }
}

/// The outcome of one failed attempt.
enum Failure {
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    Final(KerisError),
}

impl Failure {
    fn retry(reason: String) -> Self {
        Failure::Retryable {
            reason,
            retry_after: None,
        }
    }
}

/// A transport error as text: its kind and cause chain. reqwest errors
/// carry the URL (no secrets in it) but never headers.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() {
        "body error"
    } else if e.is_decode() {
        "decode error"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or_default())
}

/// Splits statements into API-007 requests of at most `max_statements`
/// statements and `max_bytes` bytes each, in order. A statement larger than
/// `max_bytes` gets a request of its own (KERIS will refuse it, which is
/// then recorded like any other rejection).
pub fn plan_requests<S: AsRef<[u8]>>(
    statements: &[S],
    max_statements: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let max_statements = max_statements.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, s) in statements.iter().enumerate() {
        let len = s.as_ref().len();
        if i > start && (i - start == max_statements || bytes + len > max_bytes) {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < statements.len() {
        ranges.push(start..statements.len());
    }
    ranges
}

/// GCRA rate limiter: requests are spaced `interval` apart, with up to
/// `burst` of them allowed back to back.
struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next request.
    tat: Mutex<Instant>,
}

impl RateLimiter {
    fn new(per_second: f64, burst: u32) -> Option<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let interval = Duration::from_secs_f64(1.0 / per_second);
        Some(Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: Mutex::new(Instant::now()),
        })
    }

    /// The instant at which a request asked for at `now` may go out.
    fn reserve(&self, now: Instant) -> Instant {
        let mut tat = self.tat.lock().expect("rate limiter lock");
        let t = (*tat).max(now);
        *tat = t + self.interval;
        t.checked_sub(self.tolerance).unwrap_or(now).max(now)
    }

    async fn acquire(&self) {
        let at = self.reserve(Instant::now());
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_requests_respects_both_limits() {
        let s: Vec<Vec<u8>> = (0..7).map(|_| vec![b'x'; 10]).collect();
        assert_eq!(plan_requests(&s, 3, 1000), vec![0..3, 3..6, 6..7]);
        assert_eq!(plan_requests(&s, 100, 25), vec![0..2, 2..4, 4..6, 6..7]);
        let big = vec![vec![b'x'; 50], vec![b'x'; 5], vec![b'x'; 5]];
        assert_eq!(plan_requests(&big, 100, 20), vec![0..1, 1..3]);
        assert!(plan_requests::<Vec<u8>>(&[], 3, 10).is_empty());
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_spaces_requests() {
        let limiter = RateLimiter::new(10.0, 3).unwrap();
        let now = Instant::now();
        let slots: Vec<Duration> = (0..6).map(|_| limiter.reserve(now) - now).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(slots[..3], [ms(0), ms(0), ms(0)]);
        assert_eq!(slots[3..], [ms(100), ms(200), ms(300)]);
    }

    #[test]
    fn zero_rate_means_unlimited() {
        assert!(RateLimiter::new(0.0, 1).is_none());
        assert!(RateLimiter::new(f64::NAN, 1).is_none());
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn debug_of_partner_and_client_hides_the_partner_id() {
        let partner = Partner::new(
            "brand-a",
            SecretString::from("5f1c8a9e-0000-4000-8000-00000000abcd"),
        );
        assert!(!format!("{partner:?}").contains("5f1c8a9e"));
        let client =
            KerisClient::new("http://127.0.0.1:9", partner, ClientOptions::default()).unwrap();
        let debug = format!("{client:?}");
        assert!(
            debug.contains("brand-a") && !debug.contains("5f1c8a9e"),
            "{debug}"
        );
    }
}
