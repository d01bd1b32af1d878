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
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Environment variable prefix; `__` separates the prefix and nested keys.
pub const ENV_PREFIX: &str = "AIDT";
/// Points at the directory holding `base.toml` and the profile files.
pub const CONFIG_DIR_ENV: &str = "AIDT_CONFIG_DIR";
/// The profile when `--profile` is not given (`prod` on a packaged host and
/// in the image); unset: `local`.
pub const PROFILE_ENV: &str = "AIDT_PROFILE";

/// Deployment profile: which `config/<profile>.toml` is layered on the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Local,
    Dev,
    Prod,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Dev => "dev",
            Profile::Prod => "prod",
        }
    }
}

impl Profile {
    /// `--profile` when given, else `$AIDT_PROFILE`, else `default`.
    pub fn resolve(flag: Option<Profile>, default: Profile) -> Result<Profile, ConfigError> {
        if let Some(profile) = flag {
            return Ok(profile);
        }
        match std::env::var(PROFILE_ENV) {
            Ok(value) if !value.is_empty() => <Profile as clap::ValueEnum>::from_str(&value, true)
                .map_err(|_| ConfigError::BadValue {
                    key: PROFILE_ENV.into(),
                    reason: format!("`{value}` is not a profile: local, dev or prod"),
                }),
            _ => Ok(default),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// DC-01-001, DC-01-002 and LRS-01-002: learning-history transfer (API-006/007).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KerisTransferSettings {
    /// Documents per cursor batch when reading `keris_batch_data`.
    pub read_batch_size: u32,
    /// After this many API-007 requests in a row failed for one partner
    /// (each after the client's retries), KERIS is taken to be down: the
    /// partner's remaining statements stay `READY` for a rerun instead of
    /// each request waiting out its retries. 0 never gives up.
    pub give_up_after_transient_failures: u32,
    /// DC-01-002: an error row that failed this many resends (or
    /// regenerations) becomes `FAILED`, for a person to look at.
    pub max_retries: u32,
    /// At most this many statement ids per list in a run's details.
    pub max_reported_ids: usize,
    /// Statements marked `SENT` per `update` command (1 to 100,000, MongoDB's
    /// largest write batch).
    pub sent_marks_per_command: usize,
    /// After this many requests in a row KERIS refused alike (same call,
    /// same code) with no verdict per statement, and a statement KERIS
    /// already holds refused too, the refusal is taken to be about
    /// everything, not the statements (a firewall, a wrong path, a refused
    /// Partner-ID): the run stops (exit 1) and its statements wait for the
    /// next run. 0 never stops.
    pub stop_after_refusals: u32,
    /// DC-01-001 and DC-01-002 also take the work of the business date's
    /// preceding days, this many of them (READY statements, open error
    /// rows), oldest day first; older work is counted and reported, not
    /// sent. 0: the business date only.
    pub look_back_days: u32,
}

impl Default for KerisTransferSettings {
    fn default() -> Self {
        Self {
            read_batch_size: 1000,
            give_up_after_transient_failures: 20,
            max_retries: 5,
            max_reported_ids: 100,
            sent_marks_per_command: 100,
            stop_after_refusals: 3,
            look_back_days: 7,
        }
    }
}

impl KerisTransferSettings {
    /// The days DC-01-001 and DC-01-002 work on for business date `date`,
    /// oldest first: `look_back_days` before it, then `date`.
    pub fn days_up_to(&self, date: chrono::NaiveDate) -> Vec<chrono::NaiveDate> {
        (0..=i64::from(self.look_back_days))
            .rev()
            .map(|back| date - chrono::Duration::days(back))
            .collect()
    }
}

/// LRS-01-001: aggregation of the day's xAPI statements into KERIS statements.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrsAggregateSettings {
    /// `actor.account.homePage` of the KERIS statements: the vendor's URL.
    pub home_page: String,
    /// `context.platform` of the KERIS statements.
    pub platform: String,
    /// Namespace of the UUID v5 statement ids. Changing it changes every id:
    /// KERIS would receive the same data again under new ids.
    pub id_namespace: uuid::Uuid,
    /// Source statements per cursor batch, and KERIS statements per write batch.
    pub batch_size: u32,
    /// Write batches in flight at once, each on its own connection and
    /// worker thread, while the cursor is read and aggregated.
    pub writes_in_flight: u32,
    /// Result extension IRI carrying how many source statements (attempts) a
    /// KERIS statement combines; empty: not sent. KERIS's profile defines no
    /// such extension, so it is the vendor's own IRI, in the vendor's domain
    /// (xAPI: mint IRIs only in a domain you control, never in aidtbook.kr).
    /// Part of the statement's content: fixed once statements were sent.
    pub attempts_extension: String,
    /// Late statements (stored after their day's night) of the last this
    /// many days before the business date are aggregated by the first run
    /// after they are stored; older ones are counted and reported, not sent.
    pub late_lookback_days: u32,
    /// A run covers what the LRS stored up to the end of the business date,
    /// and never later than this many seconds before the run starts: the
    /// LRS's inserts still in flight, and its clock, get that much slack.
    pub stored_settle_secs: u64,
    /// Undecodable documents and statements voided after they were sent
    /// listed by id in the run's details (the rest are counted).
    pub max_reported_ids: usize,
}

/// The default [`LrsAggregateSettings::id_namespace`].
pub const DEFAULT_LRS_ID_NAMESPACE: uuid::Uuid =
    uuid::uuid!("2f9d6b8e-4c1a-4e57-9b3a-6a0d5c7e1f20");

impl Default for LrsAggregateSettings {
    fn default() -> Self {
        Self {
            home_page: "https://aidt.example.kr".into(),
            platform: "aidt-demo".into(),
            id_namespace: DEFAULT_LRS_ID_NAMESPACE,
            batch_size: 1000,
            writes_in_flight: 2,
            attempts_extension: "https://aidt.example.kr/xapi/extensions/attempts".into(),
            late_lookback_days: 7,
            stored_settle_secs: 300,
            max_reported_ids: 100,
        }
    }
}

/// LMS-01-007 and DC-01-003: deletion of students' data without consent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Days after `reg_dt` (never consented) or `withdraw_dt` (withdrawn)
    /// before a student's personal data is deleted.
    pub grace_days: u32,
    /// Students per batch; each batch is one PostgreSQL transaction (LMS).
    pub batch_size: u32,
    pub pause_ms: u64,
    /// Salt of the SHA-256 student hashes in the audit: a secret, so a hash
    /// cannot be reversed by hashing every known user id.
    pub audit_salt: Option<SecretString>,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            grace_days: 30,
            batch_size: 500,
            pause_ms: 0,
            audit_salt: None,
        }
    }
}

/// LMS-01-008 and DC-01-004 (KERIS dashboard APIs 001–005).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KerisDashboardSettings {
    /// Rows read per page (keyset pagination); `*_sent_at` is updated once per page.
    pub page_size: u32,
    /// At most this many user ids are listed per skip reason in the run's details.
    pub max_reported_ids: usize,
    /// After this many transient failures in a row (retries used up) for one
    /// partner, KERIS is taken to be down: the rest of that partner's events
    /// are left for the next run instead of each waiting out its retries.
    /// 0 never gives up.
    pub give_up_after_transient_failures: u32,
    /// LMS-01-008 refreshes the teacher view incrementally (only students
    /// whose results or progress changed); it re-reads this many seconds
    /// before the last refresh, so a row committed late with an earlier
    /// `solved_at` / `upd_dt` (a long LMS transaction) is not missed.
    pub incremental_overlap_secs: u64,
    /// A run recomputes every student when the last full refresh is older
    /// than this: what has no change timestamp (a lecture's teacher, a
    /// student's school, a deleted result or progress row) is caught up at
    /// least this often. 0: only the first run and `--full`.
    pub full_refresh_after_hours: u64,
}

impl Default for KerisDashboardSettings {
    fn default() -> Self {
        Self {
            page_size: 1000,
            max_reported_ids: 1000,
            give_up_after_transient_failures: 20,
            incremental_overlap_secs: 900,
            full_refresh_after_hours: 24,
        }
    }
}

fn default_max_connections() -> u32 {
    8
}
fn default_connect_timeout() -> u64 {
    10
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

/// Where the configuration came from, for `check` and error messages.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub settings: Settings,
    pub profile: Profile,
    pub files: Vec<PathBuf>,
}

/// Finds the configuration directory: `$AIDT_CONFIG_DIR`, `./config`, the
/// `config/` beside the executable (or its parent, for `target/debug`), then
/// `/etc/aidt-batch`.
pub fn find_config_dir() -> Result<PathBuf, ConfigError> {
    if let Ok(dir) = std::env::var(CONFIG_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates = vec![PathBuf::from("config")];
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1).take(4) {
            candidates.push(ancestor.join("config"));
        }
    }
    candidates.push(PathBuf::from("/etc/aidt-batch"));
    for dir in &candidates {
        if dir.join("base.toml").is_file() {
            return Ok(dir.clone());
        }
    }
    let looked = candidates
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ConfigError::NoConfigDir { looked })
}

/// Loads and validates the configuration of `profile`.
pub fn load(profile: Profile, extra_file: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    let dir = find_config_dir()?;
    load_from(&dir, profile, extra_file)
}

pub fn load_from(
    dir: &Path,
    profile: Profile,
    extra_file: Option<&Path>,
) -> Result<LoadedConfig, ConfigError> {
    load_with_env(dir, profile, extra_file, None)
}

/// [`load_from`] with `env` in place of the process environment (`None`:
/// the process environment), so a test can give variables without
/// changing the process's.
pub fn load_with_env(
    dir: &Path,
    profile: Profile,
    extra_file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<LoadedConfig, ConfigError> {
    use config::{Environment, File, FileFormat};

    let mut files = vec![dir.join("base.toml"), dir.join(format!("{profile}.toml"))];
    if let Some(extra) = extra_file {
        files.push(extra.to_path_buf());
    }
    let mut builder = config::Config::builder();
    for path in &files {
        if !path.is_file() {
            return Err(ConfigError::MissingFile { path: path.clone() });
        }
        builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
    }
    // No `try_parsing`: it would turn a password `0123` into the number 123
    // and `1e3` into 1000; each key's type parses its text instead.
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(env),
    );
    let raw = builder
        .build()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let settings: Settings = raw
        .clone()
        .try_deserialize()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    settings.validate()?;
    if profile != Profile::Local {
        refuse_public_secrets(&raw)?;
    }
    if profile == Profile::Prod {
        settings.refuse_insecure_transport()?;
    }
    Ok(LoadedConfig {
        settings,
        profile,
        files,
    })
}

/// The repository's own configuration files: whatever they give a secret
/// key is public, so no site may use it.
const REPOSITORY_FILES: [(&str, &str); 4] = [
    ("config/base.toml", include_str!("../config/base.toml")),
    ("config/local.toml", include_str!("../config/local.toml")),
    ("config/dev.toml", include_str!("../config/dev.toml")),
    ("config/prod.toml", include_str!("../config/prod.toml")),
];

/// The secret keys whose value is a site's own outside `local`: never
/// empty, never one the repository ships. (The Partner-IDs,
/// `keris.partners.<name>.partner_id`, too.)
pub const SITE_SECRETS: [&str; 6] = [
    "database.url",
    "jobs.privacy.audit_salt",
    "jobs.lms_01_009.pseudonym_key",
    "jobs.lms_01_009.s3.access_key_id",
    "jobs.lms_01_009.s3.secret_access_key",
    "jobs.bo_05_006.smtp.password",
];

/// The secret values of `config`: (key, value) for [`SITE_SECRETS`] that
/// are set and for every partner's Partner-ID.
fn secret_values(config: &config::Config) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = SITE_SECRETS
        .iter()
        .filter_map(|key| Some((key.to_string(), config.get_string(key).ok()?)))
        .collect();
    for name in config
        .get_table("keris.partners")
        .unwrap_or_default()
        .keys()
    {
        let key = format!("keris.partners.{name}.partner_id");
        if let Ok(id) = config.get_string(&key) {
            values.push((key, id));
        }
    }
    values
}

/// Outside `local`: a secret set to nothing, or to a value one of the
/// repository's files ships (local.toml's audit salt, pseudonym key,
/// Partner-ID, database password), is refused, naming the key (never the
/// value).
fn refuse_public_secrets(raw: &config::Config) -> Result<(), ConfigError> {
    let public: Vec<(&str, String)> = REPOSITORY_FILES
        .iter()
        .filter_map(|(name, text)| {
            let file = config::File::from_str(text, config::FileFormat::Toml);
            Some((
                *name,
                config::Config::builder().add_source(file).build().ok()?,
            ))
        })
        .flat_map(|(name, config)| {
            secret_values(&config)
                .into_iter()
                .map(move |(_, value)| (name, value))
        })
        .collect();
    for (key, value) in secret_values(raw) {
        let env = env_var(&key);
        if value.is_empty() {
            return Err(ConfigError::BadValue {
                key,
                reason: format!("empty; set the site's own secret ({env})"),
            });
        }
        if let Some((file, _)) = public.iter().find(|(_, v)| *v == value) {
            return Err(ConfigError::BadValue {
                key,
                reason: format!(
                    "the value shipped in the repository's {file} is public; \
                     set the site's own secret ({env})"
                ),
            });
        }
    }
    Ok(())
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

impl KerisSettings {
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
    fn refuse_insecure_transport(&self) -> Result<(), ConfigError> {
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
