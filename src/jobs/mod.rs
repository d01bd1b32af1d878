//! The jobs, one file each, grouped by the system whose batch JAR they
//! replace, and the registry: the list of every job in the seed's order.
//!
//! Adding a job: write `src/jobs/<system>/<what_it_does>.rs` with its `ID`,
//! its `DEF` (names, schedule, default date, lock, settings, options) and
//! the type implementing [`crate::runtime::Job`]; add `pub mod` to the
//! system's `mod.rs`; put `&<system>::<file>::DEF` in [`JOBS`] in place of
//! its entry in [`java`]. README "Adding a job" shows the whole diff.

use std::path::Path;

use crate::config::{self, ConfigError, LoadedConfig, Profile, Settings};
use crate::runtime::registry::{JobDef, Registry};

pub mod bo;
pub mod dc;
pub mod java;
pub mod lms;
pub mod lrs;
pub mod privacy;
pub mod shared;

/// The lock of every job that writes `keris_batch_data` or the error table
/// `tb_dc_error_data_info` (aggregation, sending, resending, regeneration,
/// privacy deletion): at most one of them runs at a time.
pub const KERIS_XAPI_LOCK: &str = "keris-xapi";
/// The lock of the jobs that write the teacher view and send API-005.
pub const KERIS_DASHBOARD_LOCK: &str = "keris-dashboard";

/// Every job of the seed's table, in its order.
pub static JOBS: &[&JobDef] = &[
    &lms::log_cleanup::DEF,
    &java::LMS_01_002,
    &java::LMS_01_003,
    &java::LMS_01_004,
    &java::LMS_01_005,
    &java::LMS_01_006,
    &lms::delete_unconsented_students::DEF,
    &lms::keris_dashboard::DEF,
    &java::LMS_01_009,
    &java::LMS_01_010,
    &dc::send_statements::DEF,
    &dc::resend_errors::DEF,
    &dc::delete_unconsented_data::DEF,
    &dc::achievement_levels::DEF,
    &lrs::aggregate_statements::DEF,
    &lrs::regenerate_statements::DEF,
    &java::LCMS_01_001,
    &bo::admin_dormancy::DEF,
    &bo::pm_schedule::DEF,
    &java::BO_01_003,
    &bo::login_counts::DEF,
    &bo::notice_expiry::DEF,
    &java::BO_05_006,
    &bo::login_users::DEF,
];

/// The registry the CLI, `list`, `crontab` and the runner read.
pub static REGISTRY: Registry = Registry::new(JOBS);

/// Loads the configuration and checks every job's own section too.
pub fn load_config(profile: Profile, extra: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    let loaded = config::load(profile, extra)?;
    check_settings(&loaded.settings)?;
    Ok(loaded)
}

/// Every `[jobs.<name>]` that is not a shared section must be a job's own
/// section, and deserialize as that job's settings: a typo in any job's
/// section fails every command, as an unknown key anywhere else does.
pub fn check_settings(settings: &Settings) -> Result<(), ConfigError> {
    for name in settings.jobs.own.keys() {
        let Some(def) = REGISTRY.by_config(name) else {
            let known: Vec<String> = REGISTRY.iter().map(JobDef::config_name).collect();
            return Err(ConfigError::BadValue {
                key: format!("jobs.{name}"),
                reason: format!(
                    "no job has this section; shared: privacy, keris_transfer, keris_dashboard, \
                     lrs_aggregate; a job's own: jobs.<job id with _>, one of {}",
                    known.join(", ")
                ),
            });
        };
        settings.jobs.lock_wait_secs(name)?;
        let section = settings.jobs.own_section(name);
        let result = match def.settings {
            Some(check) => check(section),
            None => match section.into_table() {
                Ok(rest) if rest.is_empty() => Ok(()),
                Ok(rest) => Err(format!(
                    "unknown key(s) {}: {} has no settings but `{}`",
                    rest.keys().cloned().collect::<Vec<_>>().join(", "),
                    def.id,
                    config::LOCK_WAIT_KEY
                )),
                Err(e) => Err(e.to_string()),
            },
        };
        result.map_err(|reason| ConfigError::BadValue {
            key: format!("jobs.{name}"),
            reason: format!("{} ({}): {reason}", def.id, def.name_en),
        })?;
    }
    Ok(())
}
