//! KERIS interface: client (API-001..007, transfer status) and its types.
//!
//! The interface is fixed by `shared/spec/keris-api.md`. The client
//! ([`KerisClient`]) is built for one partner (one textbook brand) and turns
//! every answer into `Ok(typed response)` or a [`KerisError`] that says what
//! the caller should do: retry later ([`KerisError::Transient`]), record and
//! move on ([`KerisError::Permanent`]), or open a new transfer
//! ([`KerisError::TokenExpired`]). Retries with backoff, the per-partner rate
//! and concurrency limits happen inside the client.
//!
//! The KERIS simulator (crate `crates/keris-simulator`, not part of this
//! library or the production binary) is a real HTTP/1.1 server implementing
//! the same interface, used by the tests in-process and by operators as the
//! `keris-simulator` binary.
//!
//! Secrets (the Partner-ID, partner access tokens, students' access tokens)
//! are held in [`secrecy`] types; no `Debug`, `Display` or log line of this
//! module prints them.
//!
//! A learning-history sender, in outline:
//!
//! ```no_run
//! # async fn send(settings: &aidt_batch::config::KerisSettings, statements: Vec<Vec<u8>>) -> anyhow::Result<()> {
//! use aidt_batch::keris::{plan_requests, ClientOptions, KerisClient, KerisError};
//!
//! let options = ClientOptions::from_settings(settings);
//! let client = KerisClient::from_settings(settings, "brand-a", options.clone())?;
//! let transfer = client.open_transfer().await?;
//! for range in plan_requests(&statements, options.max_statements_per_request, options.max_request_bytes) {
//!     let first_index = range.start as u64 + 1;
//!     let answer = match client.send_statements(&transfer, first_index, &statements[range.clone()]).await {
//!         Ok(answer) => answer,
//!         // Open a new transfer (its indexes start at 1 again) and resend
//!         // what KERIS has not acknowledged.
//!         Err(KerisError::TokenExpired { .. }) => anyhow::bail!("token expired; resume on a new transfer"),
//!         Err(e) if e.is_transient() => anyhow::bail!("KERIS unavailable, resume later: {e}"),
//!         Err(e) => return Err(e.into()),
//!     };
//!     for rejected in &answer.list_error {
//!         tracing::warn!(index = rejected.index, code = %rejected.code, "statement rejected");
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod error;
pub mod options;
pub mod types;

pub use client::{plan_requests, KerisClient, Partner};
pub use error::{ClientBuildError, KerisError};
pub use options::{backoff_delay, ApiPaths, ClientOptions};
pub use types::{
    AchievementLevel, Api, ApiResponse, CompleteRequest, InitializedRequest, ProgressRequest,
    ScoreRequest, SendStatementsResponse, StatementError, StudentAccessToken, TerminatedRequest,
    Transfer, TransferStatus,
};

/// Business code of a successful call.
pub const CODE_OK: &str = "00000";
/// Malformed request (simulator and this project).
pub const CODE_BAD_REQUEST: &str = "40001";
/// Bad or expired Partner-ID or partner access token.
pub const CODE_UNAUTHORIZED: &str = "40101";
/// No such data (unknown transfer, unknown path).
pub const CODE_NOT_FOUND: &str = "40401";
/// Transfer already closed.
pub const CODE_CLOSED: &str = "40901";
/// Rate limited; also sent as HTTP 429 with `Retry-After`.
pub const CODE_RATE_LIMITED: &str = "42901";
/// KERIS system error.
pub const CODE_SYSTEM_ERROR: &str = "50001";

/// Statement-level code: the statement fails the AIDT profile.
pub const XAPI_VAL_ERR: &str = "XAPI_VAL_ERR";
/// Statement-level code: the `id` was already received with other content.
pub const XAPI_DUP_ERR: &str = "XAPI_DUP_ERR";
/// Statement-level code: unknown user.
pub const XAPI_USER_ERR: &str = "XAPI_USER_ERR";

/// Context extension carrying the Partner-ID inside each statement.
pub const PARTNER_ID_EXTENSION: &str =
    "http://aidtbook.kr/xapi/profiles/cmn/1.0/contexts/extensions/partner-id";

/// Whether `s` is a KERIS standard-system (curriculum) id, i.e. matches
/// `^[EMH]\d(KOR|SOC|ENG|SCI|PRA|MAT|INF)A\d{2}(B\d{2})?(C\d{2})?(D\d{2})?$`.
///
/// Hand-written because the project has no regex crate.
pub fn is_curriculum_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !matches!(b[0], b'E' | b'M' | b'H') || !b[1].is_ascii_digit() {
        return false;
    }
    const SUBJECTS: [&[u8]; 7] = [b"KOR", b"SOC", b"ENG", b"SCI", b"PRA", b"MAT", b"INF"];
    if !SUBJECTS.contains(&&b[2..5]) {
        return false;
    }
    let two_digits =
        |at: usize| b.len() >= at + 2 && b[at].is_ascii_digit() && b[at + 1].is_ascii_digit();
    if b[5] != b'A' || !two_digits(6) {
        return false;
    }
    // Optional B, C, D groups, each at most once and in this order.
    let mut at = 8;
    for letter in [b'B', b'C', b'D'] {
        if at < b.len() && b[at] == letter {
            if !two_digits(at + 1) {
                return false;
            }
            at += 3;
        }
    }
    at == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curriculum_ids_follow_the_standard_system_pattern() {
        for ok in [
            "E4MATA01",
            "E4MATA01B01C01",
            "M1KORA12D03",
            "H2INFA00B00C00D00",
            "E6SCIA01C02",
        ] {
            assert!(is_curriculum_id(ok), "{ok}");
        }
        for bad in [
            "",
            "E4MATA1",
            "X4MATA01",
            "EXMATA01",
            "E4ARTA01",
            "E4MATB01",
            "E4MATA01B1",
            "E4MATA01C01B01",
            "E4MATA01B01B01",
            "E4MATA01E01",
            "E4MATA01 ",
            "e4MATA01",
            "E4MATA01B01C01D01X",
        ] {
            assert!(!is_curriculum_id(bad), "{bad}");
        }
    }
}
