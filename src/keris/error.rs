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
    /// `40401`, `40901`): sending it again will not help. Record it.
    #[error("KERIS {api}: rejected with code {code}: {message}")]
    Permanent {
        /// The call.
        api: Api,
        /// KERIS business code, or `HTTP <status>` when the answer had none.
        code: String,
        /// KERIS message.
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
            code: "40001".into(),
            message: "bad user_id".into(),
        };
        assert!(!p.is_transient());
        assert_eq!(p.code(), Some("40001"));
        assert!(KerisError::TokenExpired {
            api: Api::SendStatements
        }
        .is_token_expired());
    }
}
