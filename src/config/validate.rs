//! What serde can't check: required keys, value ranges, and (in `prod`)
//! clear-text transport.

use super::{at_least, env_var, missing, ConfigError, Settings};

impl Settings {
    /// Checks what serde can't: required keys and value ranges, each
    /// section by its own `validate()`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.require_connections()?;
        self.keris.validate()?;
        self.metrics.validate()?;
        for (key, value) in [
            ("runtime.lock_probe_secs", self.runtime.lock_probe_secs),
            (
                "runtime.lock_probe_timeout_secs",
                self.runtime.lock_probe_timeout_secs,
            ),
        ] {
            at_least(key, value, 1)?;
        }
        self.jobs.privacy.validate()?;
        self.jobs.lrs_aggregate.validate()?;
        self.jobs.keris_transfer.validate()?;
        self.jobs.lcms_copy.validate()?;
        self.jobs.keris_dashboard.validate()
    }

    /// The database URL, the MongoDB URI and database: set and not empty.
    fn require_connections(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let empty =
            |s: Option<&secrecy::SecretString>| s.is_none_or(|u| u.expose_secret().is_empty());
        if empty(self.database.url.as_ref()) {
            return Err(missing("database.url"));
        }
        if empty(self.mongo.uri.as_ref()) {
            return Err(missing("mongo.uri"));
        }
        if self.mongo.database.as_deref().is_none_or(str::is_empty) {
            return Err(missing("mongo.database"));
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
