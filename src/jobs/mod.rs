//! The jobs, one file each, grouped by the system whose batch JAR they
//! replace (`<system>/`, each with its list `JOBS` in the seed's order), and
//! the registry built from those lists.
//!
//! Adding a job: write `src/jobs/<system>/<what_it_does>.rs` with its `ID`,
//! its `DEF` (names, schedule, default date, lock, settings, options) and
//! the type implementing [`crate::runtime::Job`]; add `pub mod` to the
//! system's `mod.rs` and `&<file>::DEF` to its `JOBS`.
//! docs/contributing.md ("Adding a job") shows the whole diff.

use std::path::Path;

use crate::config::{self, ConfigError, LoadedConfig, Profile, Settings};
use crate::runtime::registry::{ChainDef, DefaultDate, JobDef, Registry};

pub mod bo;
pub mod dc;
pub mod lcms;
pub mod lms;
pub mod lrs;
pub mod shared;

/// The job docs/contributing.md ("Adding a job") adds, compiled from the
/// doc's own text (tests/layout.rs checks that they are the same).
#[cfg(test)]
mod example;

/// The lock of every job that writes `keris_batch_data` or the error table
/// `tb_dc_error_data_info` (aggregation, sending, resending, regeneration,
/// privacy deletion): at most one of them runs at a time.
pub const KERIS_XAPI_LOCK: &str = "keris-xapi";
/// The lock of the jobs that write the teacher view and send API-005.
pub const KERIS_DASHBOARD_LOCK: &str = "keris-dashboard";

/// The seed's nightly KERIS flow (its "data flow", steps 2–8): the dashboard
/// data, the achievement levels, the day's xAPI aggregate, its transfer and
/// the resend of what failed. `aidt-batch chain keris-nightly --date D`
/// finishes a broken night: the steps already `COMPLETED` for D are skipped.
pub static KERIS_NIGHTLY: ChainDef = ChainDef {
    name: "keris-nightly",
    about: "the nightly KERIS flow: LMS-01-008 → DC-01-004 → LRS-01-001 → DC-01-001 → DC-01-002",
    default_date: DefaultDate::Yesterday,
    steps: &[
        &lms::keris_dashboard::DEF,
        &dc::achievement_levels::DEF,
        &lrs::aggregate_statements::DEF,
        &dc::send_statements::DEF,
        &dc::resend_errors::DEF,
    ],
};

/// Every chain, for `aidt-batch chain`.
pub static CHAINS: &[&ChainDef] = &[&KERIS_NIGHTLY];

/// The registry the CLI, `list`, `crontab` and the runner read: every job of
/// the seed's table, in its order.
pub static REGISTRY: Registry = Registry::new(
    &[lms::JOBS, dc::JOBS, lrs::JOBS, lcms::JOBS, bo::JOBS],
    CHAINS,
);

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
                     lrs_aggregate, lcms_copy; a job's own: jobs.<job id with _>, one of {}",
                    known.join(", ")
                ),
            });
        };
        for key in config::RUNTIME_KEYS {
            settings.jobs.runtime_secs(name, key)?;
        }
        crate::runtime::timeouts::Timeouts::resolve(def, &settings.jobs)?;
        let section = settings.jobs.own_section(name);
        let result = match def.settings {
            Some(decl) => (decl.check)(section),
            None => match section.into_table() {
                Ok(rest) if rest.is_empty() => Ok(()),
                Ok(rest) => Err(format!(
                    "unknown key(s) {}: {} has no settings but the runtime's {}",
                    rest.keys().cloned().collect::<Vec<_>>().join(", "),
                    def.id,
                    config::RUNTIME_KEYS.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The example job of docs/contributing.md, registered the way the doc
    /// says, is a job like the others: found by id, with its section.
    #[test]
    fn the_documented_example_job_registers_with_its_settings() {
        static WITH_EXAMPLE: &[&JobDef] = &[&example::DEF];
        static REGISTRY: Registry = Registry::new(
            &[
                lms::JOBS,
                dc::JOBS,
                lrs::JOBS,
                lcms::JOBS,
                bo::JOBS,
                WITH_EXAMPLE,
            ],
            CHAINS,
        );
        let def = REGISTRY.find("bo-01-006").expect("registered");
        assert_eq!(REGISTRY.by_config("bo_01_006").map(|d| d.id), Some(def.id));
        assert_eq!(REGISTRY.iter().count(), super::REGISTRY.iter().count() + 1);
        let check = def.settings.expect("settings").check;
        let section = |toml: &str| {
            ::config::Config::builder()
                .add_source(::config::File::from_str(toml, ::config::FileFormat::Toml))
                .build()
                .unwrap()
                .cache
        };
        assert_eq!(check(section("keep_days = 3")), Ok(()));
        let typo = check(section("keep_dayz = 3")).unwrap_err();
        assert!(typo.contains("keep_dayz"), "{typo}");
    }
}
