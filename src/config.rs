//! Layered configuration: `config/base.toml`, then `config/<profile>.toml`,
//! then an optional `--config FILE`, then environment variables
//! `AIDT__SECTION__KEY` (e.g. `AIDT__DATABASE__URL`), which the env file
//! (`crate::env_file`) may supply. Environment values are text: the type of
//! the key reads them (`0123` stays `0123` for a password, `8` becomes a
//! number for `max_connections`).
//!
//! Unknown keys are errors (a typo must not silently fall back to a default),
//! missing required keys are errors that name the key and the variable that
//! sets it, and secrets are wrapped so that `Debug` never prints them.
//! Outside `local`, a secret that is empty or ships in this repository is
//! refused, and so (in `prod`) is clear-text transport unless allowed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

mod keris;
mod load;
mod profile;
mod secrets;
mod validate;

pub use keris::{KerisSettings, PartnerSettings};
pub use load::{find_config_dir, load, load_from, load_with_env, LoadedConfig};
pub use profile::Profile;
pub use secrets::SITE_SECRETS;

// The jobs' own sections, defined beside the code they configure.
pub use crate::jobs::lrs::aggregation::settings::{LrsAggregateSettings, DEFAULT_LRS_ID_NAMESPACE};
pub use crate::jobs::shared::dashboard::settings::KerisDashboardSettings;
pub use crate::jobs::shared::privacy::settings::PrivacySettings;
pub use crate::jobs::shared::transfer::settings::KerisTransferSettings;

/// Environment variable prefix; `__` separates the prefix and nested keys.
pub const ENV_PREFIX: &str = "AIDT";
/// Points at the directory holding `base.toml` and the profile files.
pub const CONFIG_DIR_ENV: &str = "AIDT_CONFIG_DIR";
/// The profile when `--profile` is not given (`prod` on a packaged host and
/// in the image); unset: `local`.
pub const PROFILE_ENV: &str = "AIDT_PROFILE";

/// A configuration problem; every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration directory not found: looked in {looked}; set {CONFIG_DIR_ENV}")]
    NoConfigDir { looked: String },
    #[error("configuration file {path} not found")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("missing required configuration key `{key}` (set it in the profile file, or as {env} in the environment or the env file)")]
    MissingKey { key: String, env: String },
    #[error("invalid value for configuration key `{key}`: {reason}")]
    BadValue { key: String, reason: String },
    #[error("env file {}: {reason}", path.display())]
    EnvFile { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub mongo: MongoSettings,
    pub keris: KerisSettings,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
    #[serde(default)]
    pub jobs: JobsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Contains the password: never printed.
    pub url: Option<SecretString>,
    /// In `prod`, a PostgreSQL URL without `sslmode=require` (or
    /// `verify-ca`, `verify-full`) is refused unless this is true; a warning
    /// is logged at every run that uses it. Covers `jobs.lcms_copy.source_url` too.
    #[serde(default)]
    pub allow_insecure: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    /// May contain credentials: never printed.
    pub uri: Option<SecretString>,
    pub database: Option<String>,
}

/// `[runtime]`: what the runner does around every job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// After SIGINT/SIGTERM (or a lost lock), how long a job has to reach
    /// its next stop point before the run is abandoned.
    pub stop_grace_secs: u64,
    /// How often a run checks, on the lock's own connection, that
    /// PostgreSQL still shows its advisory lock held (at least 1).
    pub lock_probe_secs: u64,
    /// A check with no answer within this long counts as a lost lock (at least 1).
    pub lock_probe_timeout_secs: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            stop_grace_secs: 5,
            lock_probe_secs: 5,
            lock_probe_timeout_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// `[metrics]`: Prometheus metrics written at the end of every run
/// (`crate::runtime::metrics`). Both outputs are off unless set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// The node-exporter textfile collector's directory: one
    /// `aidt_batch_<job>.prom` per job, replaced atomically. Absent or empty: off.
    pub textfile_dir: Option<PathBuf>,
    /// The Pushgateway's base URL (`http://pushgateway:9091`); may carry
    /// basic-auth credentials, so a secret, never printed. Absent or empty: off.
    pub pushgateway_url: Option<SecretString>,
    /// How long a push may take before it is given up (logged, never failing the run).
    pub push_timeout_secs: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            textfile_dir: None,
            pushgateway_url: None,
            push_timeout_secs: 5,
        }
    }
}

impl MetricsSettings {
    /// The push gateway, when set, is an http(s) URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        if let Some(url) = self.pushgateway_url() {
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
        Ok(())
    }

    /// The textfile directory, if the textfile output is on.
    pub fn textfile_dir(&self) -> Option<&Path> {
        self.textfile_dir
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// The Pushgateway URL, if pushing is on.
    pub fn pushgateway_url(&self) -> Option<&SecretString> {
        use secrecy::ExposeSecret;
        self.pushgateway_url
            .as_ref()
            .filter(|u| !u.expose_secret().is_empty())
    }
}

/// The `[jobs]` table: the sections two or more jobs share, typed here, and
/// each job's own section `[jobs.<job id in snake case>]` (e.g.
/// `[jobs.lms_01_001]`), kept raw: the job's file owns its type, and
/// `crate::jobs::check_settings` rejects a section or key no job knows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobsSettings {
    #[serde(default)]
    pub privacy: PrivacySettings,
    #[serde(default)]
    pub keris_dashboard: KerisDashboardSettings,
    #[serde(default)]
    pub lrs_aggregate: LrsAggregateSettings,
    #[serde(default)]
    pub keris_transfer: KerisTransferSettings,
    #[serde(default)]
    pub lcms_copy: crate::jobs::lcms::content_copy::copy::LcmsCopySettings,
    /// The jobs' own sections, by name.
    #[serde(flatten)]
    pub own: BTreeMap<String, config::Value>,
}

/// The key of a job's own section that the runtime reads, not the job.
pub const LOCK_WAIT_KEY: &str = "lock_wait_secs";
/// PostgreSQL `statement_timeout` of the job's connections, in seconds.
pub const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_secs";
/// PostgreSQL `lock_timeout` of the job's connections, in seconds.
pub const LOCK_TIMEOUT_KEY: &str = "lock_timeout_secs";
/// MongoDB `maxTimeMS` of the job's reads, in seconds.
pub const MONGO_MAX_TIME_KEY: &str = "mongo_max_time_secs";
/// Every key of a job's own section that the runtime reads (seconds, 0 or
/// more): none of them reaches the job's own settings type.
pub const RUNTIME_KEYS: [&str; 4] = [
    LOCK_WAIT_KEY,
    STATEMENT_TIMEOUT_KEY,
    LOCK_TIMEOUT_KEY,
    MONGO_MAX_TIME_KEY,
];

impl JobsSettings {
    /// `[jobs.<name>]` without the [`RUNTIME_KEYS`]: what the job's own
    /// settings type deserializes (an empty table when the section is absent).
    pub fn own_section(&self, name: &str) -> config::Value {
        let mut table = self.section(name);
        for key in RUNTIME_KEYS {
            table.remove(key);
        }
        config::Value::new(None, config::ValueKind::Table(table))
    }

    /// `lock_wait_secs` of `[jobs.<name>]`, if set.
    pub fn lock_wait_secs(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        self.runtime_secs(name, LOCK_WAIT_KEY)
    }

    /// One of the [`RUNTIME_KEYS`] of `[jobs.<name>]`, if set: whole
    /// seconds, 0 or more (a timeout of 0 is no limit).
    pub fn runtime_secs(&self, name: &str, key: &str) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.section(name).remove(key) else {
            return Ok(None);
        };
        value
            .try_deserialize::<u64>()
            .map(Some)
            .map_err(|e| ConfigError::BadValue {
                key: format!("jobs.{name}.{key}"),
                reason: format!("{e} (seconds, 0 or more)"),
            })
    }

    fn section(&self, name: &str) -> config::Map<String, config::Value> {
        self.own
            .get(name)
            .cloned()
            .and_then(|v| v.into_table().ok())
            .unwrap_or_default()
    }
}

fn default_max_connections() -> u32 {
    8
}
fn default_connect_timeout() -> u64 {
    10
}
/// `key`'s `value` is at least `min`, else an error naming the key.
pub fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::BadValue {
            key: key.into(),
            reason: format!("must be at least {min}"),
        });
    }
    Ok(())
}

/// `key`'s `value` is within `min..=max`, else an error naming the key and
/// the range.
pub fn between<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::BadValue {
            key: key.into(),
            reason: format!("must be between {min} and {max}"),
        });
    }
    Ok(())
}

/// The environment variable that sets `key` (`AIDT__DATABASE__URL`).
pub fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase())
}

fn missing(key: &str) -> ConfigError {
    ConfigError::MissingKey {
        key: key.to_string(),
        env: env_var(key),
    }
}

impl Settings {
    pub fn database_url(&self) -> &SecretString {
        self.database.url.as_ref().expect("validated")
    }

    pub fn mongo_uri(&self) -> &SecretString {
        self.mongo.uri.as_ref().expect("validated")
    }

    pub fn mongo_database(&self) -> &str {
        self.mongo.database.as_deref().expect("validated")
    }

    pub fn keris_api_domain(&self) -> &str {
        self.keris.api_domain.as_deref().expect("validated")
    }
}
