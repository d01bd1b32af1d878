//! What serde can't check: required keys, value ranges, and (in `prod`)
//! clear-text transport.

use super::{env_var, missing, ConfigError, Settings};

impl Settings {
    /// Checks what serde can't: required keys and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        if self
            .database
            .url
            .as_ref()
            .is_none_or(|u| u.expose_secret().is_empty())
        {
            return Err(missing("database.url"));
        }
        if self
            .mongo
            .uri
            .as_ref()
            .is_none_or(|u| u.expose_secret().is_empty())
        {
            return Err(missing("mongo.uri"));
        }
        if self.mongo.database.as_deref().is_none_or(str::is_empty) {
            return Err(missing("mongo.database"));
        }
        match self.keris.api_domain.as_deref() {
            None | Some("") => return Err(missing("keris.api_domain")),
            Some(domain) if !(domain.starts_with("http://") || domain.starts_with("https://")) => {
                return Err(ConfigError::BadValue {
                    key: "keris.api_domain".into(),
                    reason: "must start with http:// or https://".into(),
                })
            }
            Some(_) => {}
        }
        if self.keris.partners.is_empty() {
            return Err(missing("keris.partners.<name>.partner_id"));
        }
        self.keris.partner_ids()?;
        if self.keris.max_attempts == 0 {
            return Err(ConfigError::BadValue {
                key: "keris.max_attempts".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.keris.max_concurrency == 0 {
            return Err(ConfigError::BadValue {
                key: "keris.max_concurrency".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=500).contains(&self.keris.max_statements_per_request) {
            return Err(ConfigError::BadValue {
                key: "keris.max_statements_per_request".into(),
                reason: "must be between 1 and 500".into(),
            });
        }
        if self.jobs.privacy.batch_size == 0 {
            return Err(ConfigError::BadValue {
                key: "jobs.privacy.batch_size".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.jobs.lrs_aggregate.batch_size == 0 {
            return Err(ConfigError::BadValue {
                key: "jobs.lrs_aggregate.batch_size".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=16).contains(&self.jobs.lrs_aggregate.writes_in_flight) {
            return Err(ConfigError::BadValue {
                key: "jobs.lrs_aggregate.writes_in_flight".into(),
                reason: "must be between 1 and 16".into(),
            });
        }
        if self.jobs.keris_transfer.look_back_days > 366 {
            return Err(ConfigError::BadValue {
                key: "jobs.keris_transfer.look_back_days".into(),
                reason: "must be between 0 and 366".into(),
            });
        }
        if !(1..=100_000).contains(&self.jobs.keris_transfer.sent_marks_per_command) {
            return Err(ConfigError::BadValue {
                key: "jobs.keris_transfer.sent_marks_per_command".into(),
                reason: "must be between 1 and 100000".into(),
            });
        }
        let attempts = &self.jobs.lrs_aggregate.attempts_extension;
        let is_iri = attempts.starts_with("http://") || attempts.starts_with("https://");
        if !attempts.is_empty() && !is_iri {
            return Err(ConfigError::BadValue {
                key: "jobs.lrs_aggregate.attempts_extension".into(),
                reason: "must be an http:// or https:// IRI, or empty".into(),
            });
        }
        if let Some(url) = self.metrics.pushgateway_url() {
            let bad = |reason: &str| ConfigError::BadValue {
                key: "metrics.pushgateway_url".into(),
                reason: reason.into(),
            };
            let parsed = reqwest::Url::parse(url.expose_secret())
                .map_err(|_| bad("not a URL (expected http://host:9091)"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("must start with http:// or https://"));
            }
        }
        for (key, value) in [
            ("runtime.lock_probe_secs", self.runtime.lock_probe_secs),
            (
                "runtime.lock_probe_timeout_secs",
                self.runtime.lock_probe_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::BadValue {
                    key: key.into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        self.jobs.lcms_copy.validate()?;
        if self.jobs.keris_dashboard.page_size == 0 {
            return Err(ConfigError::BadValue {
                key: "jobs.keris_dashboard.page_size".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// In `prod`: an `http://` KERIS or a PostgreSQL URL that may fall back
    /// to clear text is refused unless its `allow_insecure` says otherwise.
    pub(super) fn refuse_insecure_transport(&self) -> Result<(), ConfigError> {
        for (key, reason) in self.insecure_transport() {
            let allow = if key == "keris.api_domain" {
                self.keris.allow_insecure
            } else {
                self.database.allow_insecure
            };
            if !allow {
                let switch = allow_key(&key);
                return Err(ConfigError::BadValue {
                    key,
                    reason: format!(
                        "{reason}; refused in prod unless `{switch} = true` ({}=true)",
                        env_var(switch)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The clear-text transports this configuration uses, as (key, why):
    /// what `prod` refuses, or warns of at every run when allowed.
    pub fn insecure_transport(&self) -> Vec<(String, String)> {
        use secrecy::ExposeSecret;
        let mut found = Vec::new();
        if self
            .keris
            .api_domain
            .as_deref()
            .is_some_and(|d| d.starts_with("http://"))
        {
            found.push((
                "keris.api_domain".to_string(),
                "http:// sends the Partner-IDs and the students' records in clear; use https://"
                    .to_string(),
            ));
        }
        let urls = [
            ("database.url", self.database.url.as_ref()),
            (
                "jobs.lcms_copy.source_url",
                self.jobs.lcms_copy.source_url.as_ref(),
            ),
        ];
        for (key, url) in urls {
            if let Some(reason) = url.and_then(|u| pg_clear_text(u.expose_secret())) {
                found.push((key.to_string(), reason));
            }
        }
        found
    }
}

/// The switch that allows the clear-text transport of `key`.
fn allow_key(key: &str) -> &'static str {
    if key == "keris.api_domain" {
        "keris.allow_insecure"
    } else {
        "database.allow_insecure"
    }
}

/// Why a PostgreSQL URL may travel in clear, if it may: without
/// `sslmode=require` (or `verify-ca`, `verify-full`) a TCP connection falls
/// back to clear text, or never tries TLS. A Unix socket stays on the host.
fn pg_clear_text(url: &str) -> Option<String> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let options = url.parse::<PgConnectOptions>().ok()?;
    let mode = options.get_ssl_mode();
    let secure = matches!(
        mode,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    if secure || options.get_socket().is_some() || options.get_host().starts_with('/') {
        return None;
    }
    let mode = format!("{mode:?}").to_lowercase();
    Some(format!(
        "sslmode={mode} may send the password and the data in clear; add sslmode=require \
         (or verify-ca, verify-full)"
    ))
}
