//! What can go wrong with a KERIS call, classified by what the caller does
//! next. No variant carries a Partner-ID or a token.

use std::time::Duration;

use super::types::Api;
use super::{CODE_RATE_LIMITED, CODE_SYSTEM_ERROR, CODE_UNAUTHORIZED};

/// A failed KERIS call.
#[derive(Debug, thiserror::Error)]
pub enum KerisError {
    /// Worth retrying later: connect/reset/timeout, HTTP 5xx or 429, body
    /// code `50001` or `42901`. Returned once the client's own attempts are
    /// used up. For API-007 the statements may or may not have been stored;
    /// resending them (same ids) is safe.
    #[error("KERIS {api}: transient failure after {attempts} attempt(s): {reason}")]
    Transient {
        /// The call.
        api: Api,
        /// Attempts made.
        attempts: u32,
        /// What the last attempt ran into.
        reason: String,
        /// The server's `Retry-After`, if the last answer had one.
        retry_after: Option<Duration>,
    },
    /// KERIS refused this payload (business code `4xxxx`, e.g. `40001`,
    /// `40401`, `40901`, or an HTTP 4xx without KERIS's envelope, e.g. a
    /// proxy's or a firewall's page): sending it again will not help. Record
    /// it.
    #[error("KERIS {api}: rejected with {}: {message}", answer(*http_status, code))]
    Permanent {
        /// The call.
        api: Api,
        /// The answer's HTTP status.
        http_status: u16,
        /// KERIS business code, or `HTTP <status>` when the answer had none.
        code: String,
        /// KERIS message, or for an answer without KERIS's envelope a short
        /// excerpt of its body (see [`excerpt`]).
        message: String,
    },
    /// API-007 answered `40101`: the transfer's partner access token expired
    /// or was refused. Open a new transfer and resend from the last index
    /// KERIS acknowledged.
    #[error("KERIS {api}: partner access token expired or refused (40101); open a new transfer")]
    TokenExpired {
        /// The call.
        api: Api,
    },
    /// The request could not be built (too many statements, a header value
    /// that is not valid HTTP, …): a bug or bad data on our side.
    #[error("KERIS {api}: invalid request: {reason}")]
    InvalidRequest {
        /// The call.
        api: Api,
        /// What is wrong.
        reason: String,
    },
}

impl KerisError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, KerisError::Transient { .. })
    }

    /// Whether the caller must open a new transfer.
    pub fn is_token_expired(&self) -> bool {
        matches!(self, KerisError::TokenExpired { .. })
    }

    /// The call that failed.
    pub fn api(&self) -> Api {
        match self {
            KerisError::Transient { api, .. }
            | KerisError::Permanent { api, .. }
            | KerisError::TokenExpired { api }
            | KerisError::InvalidRequest { api, .. } => *api,
        }
    }

    /// The KERIS business code, for permanent rejections.
    pub fn code(&self) -> Option<&str> {
        match self {
            KerisError::Permanent { code, .. } => Some(code),
            KerisError::TokenExpired { .. } => Some(CODE_UNAUTHORIZED),
            _ => None,
        }
    }

    /// The server's `Retry-After` on the last attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KerisError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `HTTP 413` for an answer without a business code (its code already says
/// it), else `HTTP 200, code 40001`.
fn answer(http_status: u16, code: &str) -> String {
    if code.starts_with("HTTP ") {
        code.to_string()
    } else {
        format!("HTTP {http_status}, code {code}")
    }
}

/// Longest [`excerpt`] of an answer's body, in characters.
pub const EXCERPT_CHARS: usize = 160;

/// A short, single-line excerpt of an answer's body for error messages:
/// markup dropped, whitespace collapsed, at most [`EXCERPT_CHARS`]
/// characters, each of `secrets` (the Partner-ID, a transfer's token) and
/// anything shaped like a UUID (a Partner-ID, a student's id quoted back by
/// a proxy's page) replaced by `…`.
pub fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut plain = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            _ if in_tag => {}
            _ => plain.push(c),
        }
    }
    let mut masked = plain;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        masked = masked.replace(secret, "…");
    }
    let collapsed = mask_uuids(&masked)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match collapsed.char_indices().nth(EXCERPT_CHARS) {
        Some((at, _)) => format!("{}…", &collapsed[..at]),
        None => collapsed,
    }
}

/// `text` with every 8-4-4-4-12 hex group (any case) replaced by `…`.
fn mask_uuids(text: &str) -> String {
    let is_uuid = |b: &[u8]| {
        b.iter().enumerate().all(|(n, c)| match n {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut start, mut i) = (0, 0);
    while i + 36 <= bytes.len() {
        // A UUID starts with an ASCII byte, so `i` is a char boundary then.
        if is_uuid(&bytes[i..i + 36]) {
            out.push_str(&text[start..i]);
            out.push('…');
            i += 36;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[start..]);
    out
}

/// Why a client could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// `keris.api_domain` is not set.
    #[error("keris.api_domain is not set")]
    MissingApiDomain,
    /// `keris.api_domain` is not an http(s) URL.
    #[error("keris.api_domain must start with http:// or https://")]
    BadApiDomain,
    /// No `[keris.partners.<name>]` with this name, or no partner_id in it.
    #[error("no partner_id configured for KERIS partner `{0}` (keris.partners.{0}.partner_id)")]
    UnknownPartner(String),
    /// The Partner-ID is not a valid header value (the value is not shown).
    #[error("the Partner-ID of KERIS partner `{0}` is not a valid header value")]
    BadPartnerId(String),
    /// The HTTP client could not be built (TLS setup).
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// What one attempt's answer means, before retry decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// `00000`.
    Ok,
    /// Retry with backoff.
    Transient,
    /// Do not retry.
    Permanent,
    /// API-007 `40101`.
    TokenExpired,
}

/// Classifies an answer by HTTP status and business code (the code wins for
/// 2xx and 4xx; 5xx and 429 are transient whatever the body says).
pub(crate) fn classify(api: Api, http_status: u16, code: Option<&str>) -> Class {
    if http_status == 429 || http_status == 408 || (500..=599).contains(&http_status) {
        return Class::Transient;
    }
    match code {
        Some(super::CODE_OK) if (200..300).contains(&http_status) => Class::Ok,
        Some(CODE_SYSTEM_ERROR) | Some(CODE_RATE_LIMITED) => Class::Transient,
        Some(CODE_UNAUTHORIZED) if api == Api::SendStatements => Class::TokenExpired,
        Some(_) => Class::Permanent,
        // A 2xx without a readable envelope: a proxy page or a truncated
        // answer; bounded retries are the safe reading.
        None if (200..300).contains(&http_status) => Class::Transient,
        None => Class::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_codes_are_classified_as_the_spec_says() {
        use Class::*;
        let cases: &[(Api, u16, Option<&str>, Class)] = &[
            (Api::SendStatements, 200, Some("00000"), Ok),
            (Api::Initialized, 200, Some("50001"), Transient),
            (Api::Initialized, 200, Some("42901"), Transient),
            (Api::Initialized, 200, Some("40001"), Permanent),
            (Api::TransferStatus, 200, Some("40401"), Permanent),
            (Api::SendStatements, 200, Some("40901"), Permanent),
            (Api::SendStatements, 200, Some("40101"), TokenExpired),
            (Api::SendStatements, 401, Some("40101"), TokenExpired),
            // A bad Partner-ID on other calls is a configuration problem.
            (Api::OpenTransfer, 200, Some("40101"), Permanent),
            (Api::Initialized, 200, Some("49999"), Permanent),
        ];
        for (api, status, code, want) in cases {
            assert_eq!(
                &classify(*api, *status, *code),
                want,
                "{api} {status} {code:?}"
            );
        }
    }

    #[test]
    fn http_5xx_429_and_408_are_transient_whatever_the_body() {
        for status in [500, 502, 503, 504, 429, 408] {
            assert_eq!(
                classify(Api::SendStatements, status, None),
                Class::Transient,
                "{status}"
            );
            assert_eq!(
                classify(Api::SendStatements, status, Some("00000")),
                Class::Transient,
                "{status}"
            );
            assert_eq!(
                classify(Api::SendStatements, status, Some("40001")),
                Class::Transient,
                "{status}"
            );
        }
    }

    #[test]
    fn other_http_errors_without_envelope_are_permanent_but_2xx_without_envelope_is_not() {
        assert_eq!(classify(Api::Initialized, 404, None), Class::Permanent);
        assert_eq!(classify(Api::Initialized, 400, None), Class::Permanent);
        assert_eq!(classify(Api::Initialized, 200, None), Class::Transient);
    }

    #[test]
    fn an_excerpt_is_one_short_line_of_text_without_secrets_or_ids() {
        let page = b"<html>\n<head><title>403 Forbidden</title></head>\n<body>\n<h1>403   Forbidden</h1>\n<p>Partner-ID: 5F1C8A9E-0000-4000-8000-00000000ABCD, token eyJabc.def.ghi</p></body></html>";
        let text = excerpt(page, &["eyJabc.def.ghi"]);
        assert_eq!(text, "403 Forbidden 403 Forbidden Partner-ID: …, token …");
        let long = "x".repeat(1000);
        let cut = excerpt(long.as_bytes(), &[]);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        // Not quite a UUID: left alone; invalid UTF-8 does not panic.
        assert_eq!(
            excerpt(b"5f1c8a9e-0000-4000-8000-00000000abc", &[]),
            "5f1c8a9e-0000-4000-8000-00000000abc"
        );
        assert_eq!(excerpt(b"\xff\xfe ok", &[]), "\u{fffd}\u{fffd} ok");
    }

    #[test]
    fn error_messages_name_the_call_and_transience() {
        let e = KerisError::Transient {
            api: Api::SendStatements,
            attempts: 5,
            reason: "HTTP 503".into(),
            retry_after: None,
        };
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "KERIS API-007: transient failure after 5 attempt(s): HTTP 503"
        );
        let p = KerisError::Permanent {
            api: Api::Initialized,
            http_status: 200,
            code: "40001".into(),
            message: "bad user_id".into(),
        };
        assert_eq!(
            p.to_string(),
            "KERIS API-001: rejected with HTTP 200, code 40001: bad user_id"
        );
        let proxy = KerisError::Permanent {
            api: Api::SendStatements,
            http_status: 413,
            code: "HTTP 413".into(),
            message: "413 Request Entity Too Large".into(),
        };
        assert_eq!(
            proxy.to_string(),
            "KERIS API-007: rejected with HTTP 413: 413 Request Entity Too Large"
        );
        assert!(!p.is_transient());
        assert_eq!(p.code(), Some("40001"));
        assert!(KerisError::TokenExpired {
            api: Api::SendStatements
        }
        .is_token_expired());
    }
}
