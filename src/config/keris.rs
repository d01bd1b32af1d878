//! `[keris]`: the KERIS endpoint, the client's limits and the partners.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use super::{at_least, between, missing, ConfigError};

/// `[keris]`: where KERIS is and how the client treats it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KerisSettings {
    pub api_domain: Option<String>,
    /// In `prod`, an `http://` API domain is refused unless this is true; a
    /// warning is logged at every run that uses it.
    #[serde(default)]
    pub allow_insecure: bool,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_keris_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_keris_request_timeout")]
    pub request_timeout_secs: u64,
    /// Attempts per call, the first included; only transient failures retry.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_base_backoff_ms")]
    pub base_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// A longer `Retry-After` ends the call instead of sleeping inside it.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
    /// Requests per second per partner, retries included; 0 = unlimited.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: f64,
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
    /// Requests in flight at once per partner.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Statements per API-007 request (KERIS limit 500).
    #[serde(default = "default_max_statements_per_request")]
    pub max_statements_per_request: usize,
    /// Body bytes per API-007 request (KERIS limit 5 MiB).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Paths of the calls, should a later KERIS version move them.
    #[serde(default)]
    pub paths: crate::keris::options::ApiPaths,
    /// One entry per textbook brand, keyed by a short name used in logs
    /// instead of the (secret) Partner-ID.
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSettings {
    /// The KERIS Partner-ID: a credential, never printed.
    pub partner_id: Option<SecretString>,
}

fn default_api_version() -> String {
    "2.4".into()
}
fn default_keris_connect_timeout() -> u64 {
    5
}
fn default_keris_request_timeout() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    5
}
fn default_base_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_max_retry_after_secs() -> u64 {
    60
}
fn default_requests_per_second() -> f64 {
    0.0
}
fn default_rate_burst() -> u32 {
    5
}
fn default_max_concurrency() -> usize {
    4
}
fn default_max_statements_per_request() -> usize {
    500
}
fn default_max_request_bytes() -> usize {
    5 * 1024 * 1024
}

impl KerisSettings {
    /// The endpoint, at least one partner with a UUID Partner-ID, and the
    /// client's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.api_domain.as_deref() {
            None | Some("") => return Err(missing("keris.api_domain")),
            Some(domain) if !(domain.starts_with("http://") || domain.starts_with("https://")) => {
                return Err(ConfigError::BadValue {
                    key: "keris.api_domain".into(),
                    reason: "must start with http:// or https://".into(),
                })
            }
            Some(_) => {}
        }
        if self.partners.is_empty() {
            return Err(missing("keris.partners.<name>.partner_id"));
        }
        self.partner_ids()?;
        at_least("keris.max_attempts", self.max_attempts, 1)?;
        at_least("keris.max_concurrency", self.max_concurrency, 1)?;
        between(
            "keris.max_statements_per_request",
            self.max_statements_per_request,
            1,
            500,
        )
    }

    /// The configured partners (configuration name, Partner-ID), in name
    /// order. Every job that matches stored data to a partner reads the ids
    /// here; errors name the key, never the value (it is a secret).
    pub fn partner_ids(&self) -> Result<Vec<(&str, uuid::Uuid)>, ConfigError> {
        let mut ids = Vec::with_capacity(self.partners.len());
        for (name, partner) in &self.partners {
            let key = format!("keris.partners.{name}.partner_id");
            let Some(id) = &partner.partner_id else {
                return Err(missing(&key));
            };
            let id =
                uuid::Uuid::parse_str(secrecy::ExposeSecret::expose_secret(id)).map_err(|_| {
                    ConfigError::BadValue {
                        key,
                        reason: "not a UUID".into(),
                    }
                })?;
            ids.push((name.as_str(), id));
        }
        Ok(ids)
    }
}
