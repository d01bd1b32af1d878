//! Client tuning knobs and the API paths, with the defaults the project uses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The path of every KERIS call, relative to `api_domain`.
///
/// Kept configurable because a later KERIS version may move them; the
/// defaults are those of the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiPaths {
    /// API-001, start of learning.
    pub initialized: String,
    /// API-002, end of learning.
    pub terminated: String,
    /// API-003, curriculum progress.
    pub curriculum_progress: String,
    /// API-004, curriculum completion.
    pub curriculum_complete: String,
    /// API-005, curriculum score.
    pub curriculum_score: String,
    /// API-006, open a transfer.
    pub get_transfer_id: String,
    /// API-007, send statements.
    pub send_statement: String,
    /// Transfer status (resume point).
    pub get_transfer_status: String,
}

impl Default for ApiPaths {
    fn default() -> Self {
        Self {
            initialized: "aidt_dashboard/initialized".into(),
            terminated: "aidt_dashboard/terminated".into(),
            curriculum_progress: "aidt_dashboard/curriculum_progress".into(),
            curriculum_complete: "aidt_dashboard/curriculum_complete".into(),
            curriculum_score: "aidt_dashboard/curriculum_score".into(),
            get_transfer_id: "aidt_rawdata/get_transfer_id".into(),
            send_statement: "aidt_rawdata/send_statement".into(),
            get_transfer_status: "aidt_rawdata/get_transfer_status".into(),
        }
    }
}

/// How a [`KerisClient`](super::KerisClient) talks to KERIS: timeouts,
/// retries, per-partner limits and request size limits.
///
/// Every field comes from the `[keris]` section of the configuration (see
/// [`ClientOptions::from_settings`]); [`Default`] gives the same defaults.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Value of the `API-version` header on every call.
    pub api_version: String,
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time allowed for one HTTP exchange, request body and answer included.
    /// A 500-statement API-007 request is at most 5 MiB, so 30 s leaves room
    /// for a slow uplink.
    pub request_timeout: Duration,
    /// Attempts per call, the first included. Only transient failures are
    /// retried.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles for each further attempt.
    pub base_backoff: Duration,
    /// Upper bound of the exponential backoff (before jitter).
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this ends the call with a transient error
    /// instead of sleeping inside it, so the job can decide (stop, resume
    /// later) rather than hang.
    pub max_retry_after: Duration,
    /// Requests per second sent for this partner, retries included; `0`
    /// disables the limit. Shared by all clones of one client.
    pub requests_per_second: f64,
    /// Requests that may go out back to back before `requests_per_second`
    /// spaces them.
    pub rate_burst: u32,
    /// Requests in flight at once for this partner. Shared by all clones.
    pub max_concurrency: usize,
    /// Statements per API-007 request (KERIS/simulator limit: 500).
    pub max_statements_per_request: usize,
    /// Body bytes per API-007 request (KERIS limit: 5 MiB).
    pub max_request_bytes: usize,
    /// Paths of the calls.
    pub paths: ApiPaths,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            api_version: "2.4".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            requests_per_second: 0.0,
            rate_burst: 5,
            max_concurrency: 4,
            max_statements_per_request: 500,
            max_request_bytes: 5 * 1024 * 1024,
            paths: ApiPaths::default(),
        }
    }
}

impl ClientOptions {
    /// The options the `[keris]` configuration section sets.
    pub fn from_settings(settings: &crate::config::KerisSettings) -> Self {
        Self {
            api_version: settings.api_version.clone(),
            connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
            request_timeout: Duration::from_secs(settings.request_timeout_secs),
            max_attempts: settings.max_attempts,
            base_backoff: Duration::from_millis(settings.base_backoff_ms),
            max_backoff: Duration::from_millis(settings.max_backoff_ms),
            max_retry_after: Duration::from_secs(settings.max_retry_after_secs),
            requests_per_second: settings.requests_per_second,
            rate_burst: settings.rate_burst,
            max_concurrency: settings.max_concurrency,
            max_statements_per_request: settings.max_statements_per_request,
            max_request_bytes: settings.max_request_bytes,
            paths: settings.paths.clone(),
        }
    }
}

/// The pause before attempt `attempt + 1` after `attempt` failed (1-based):
/// `min(max, base · 2^(attempt-1))`, of which the upper half is jittered by
/// `jitter` ∈ [0, 1] ("equal jitter": never less than half the exponential
/// value, so a burst of clients spreads out without retrying at once).
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let exp = base.saturating_mul(1u32 << exponent).min(max);
    let half = exp / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn backoff_doubles_per_attempt_between_half_and_full_value() {
        for (attempt, full_ms) in [(1, 200), (2, 400), (3, 800), (4, 1600), (5, 3200)] {
            let full = Duration::from_millis(full_ms);
            assert_eq!(
                backoff_delay(attempt, BASE, MAX, 0.0),
                full / 2,
                "attempt {attempt}"
            );
            assert_eq!(
                backoff_delay(attempt, BASE, MAX, 1.0),
                full,
                "attempt {attempt}"
            );
            let mid = backoff_delay(attempt, BASE, MAX, 0.5);
            assert!(mid > full / 2 && mid < full, "attempt {attempt}: {mid:?}");
        }
    }

    #[test]
    fn backoff_is_capped_and_does_not_overflow() {
        assert_eq!(backoff_delay(7, BASE, MAX, 1.0), MAX);
        assert_eq!(backoff_delay(1000, BASE, MAX, 1.0), MAX);
        assert_eq!(backoff_delay(u32::MAX, BASE, MAX, 0.0), MAX / 2);
        assert_eq!(backoff_delay(0, BASE, MAX, 1.0), BASE);
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(backoff_delay(2, BASE, MAX, 7.0), Duration::from_millis(400));
        assert_eq!(
            backoff_delay(2, BASE, MAX, -1.0),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn defaults_follow_the_spec() {
        let o = ClientOptions::default();
        assert_eq!(o.api_version, "2.4");
        assert_eq!(o.max_attempts, 5);
        assert_eq!(o.max_statements_per_request, 500);
        assert_eq!(o.paths.send_statement, "aidt_rawdata/send_statement");
    }
}
