//! What a job declares about itself: id, names, schedule, default date, lock
//! and its own settings. Each job's file defines its [`JobDef`]; the list of
//! all of them lives with the jobs (`crate::jobs::REGISTRY`), so this module
//! — like the rest of the runtime — knows no job.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::job::Job;
use super::settings_keys::{keys_of, Kind};
pub use super::timeouts::Timeouts;

/// The system whose Java batch JAR a job replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Lms,
    Dc,
    Lrs,
    Lcms,
    Bo,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Lms => "LMS",
            System::Dc => "DC",
            System::Lrs => "LRS",
            System::Lcms => "LCMS",
            System::Bo => "BO",
        }
    }
}

/// When cron starts a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// A five-field cron expression, in Asia/Seoul (the host's time zone).
    Cron(&'static str),
    /// Not scheduled; the reason is printed in the crontab.
    Unscheduled(&'static str),
}

/// A start of a job besides its [`Schedule`], with options of its own
/// (LCMS-01-001's weekly `--full`). Every generated form has it: a line in
/// both crontabs, a CronJob of its own in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledRun {
    /// A short name for it: the CronJob is `aidt-batch-<job>-<name>`.
    pub name: &'static str,
    /// A five-field cron expression, in Asia/Seoul.
    pub cron: &'static str,
    /// The job's own options given after its id (`--full`).
    pub args: &'static [&'static str],
    /// Why it runs: a comment beside it in the generated files.
    pub why: &'static str,
}

/// Which business date a run works on when `--date` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultDate {
    /// Yesterday in Asia/Seoul: daily aggregations of a finished day.
    Yesterday,
    /// Today in Asia/Seoul: state changes that look at "now".
    Today,
}

/// What a run locks, so that two runs that would write the same data never
/// run at once (across hosts: a PostgreSQL advisory lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// One run of this job at a time, whatever its business date: jobs that
    /// change "now" (an hourly run still going at midnight works on the same
    /// rows as the next one, although its date differs).
    Job,
    /// One run per (job, business date): an aggregation that owns the rows of
    /// its date alone, so a rerun of another day may run beside it.
    JobAndDate,
    /// One run among every job of the named group: jobs that write the same
    /// tables or collections (a group ignores the date).
    Group(&'static str),
}

/// One registered job.
pub struct JobDef {
    /// The seed's id, upper-case (`LMS-01-001`). The CLI accepts any case.
    pub id: &'static str,
    pub system: System,
    pub name_ko: &'static str,
    pub name_en: &'static str,
    /// What the job reads, writes and sends: its `--help`.
    pub about: &'static str,
    pub schedule: Schedule,
    /// Why the schedule differs from the seed's crontab, if it does.
    pub schedule_note: Option<&'static str>,
    /// Starts besides `schedule`, each with options of its own.
    pub also_scheduled: &'static [ScheduledRun],
    pub default_date: DefaultDate,
    pub lock: Lock,
    /// How long a run waits for a busy lock before it records `SKIPPED`
    /// (exit 3); `lock_wait_secs` in the job's own section overrides it.
    pub lock_wait_secs: u64,
    /// How long the run's statements, lock waits and MongoDB reads may take
    /// ([`Timeouts::DEFAULT`] unless the job's work needs others);
    /// `statement_timeout_secs`, `lock_timeout_secs` and
    /// `mongo_max_time_secs` in the job's own section override them.
    pub timeouts: Timeouts,
    /// Whether the job's work splits by student: it takes `--partition I/N`
    /// (or `JOB_COMPLETION_INDEX` and `AIDT_PARTITIONS`) and then does the
    /// students of that partition only ([`super::partition`]).
    pub partitioned: bool,
    /// Kubernetes runs the job as an Indexed Job of this many partitions
    /// (`aidt-batch k8s`: pod i runs partition i of N); `None`: one pod.
    pub k8s_partitions: Option<u32>,
    /// For a job that sends to KERIS: where the night report finds what
    /// each partner was sent.
    pub keris_figures: Option<KerisFigures>,
    /// The job's own settings type (`[jobs.<this>]` without the runtime's
    /// keys, `config::RUNTIME_KEYS`). `None`: the section may hold the
    /// runtime's keys only.
    pub settings: Option<SettingsDecl>,
    /// Adds the job's own command-line options to its subcommand.
    pub args: fn(clap::Command) -> clap::Command,
    /// `None` while the job is registered but still runs on the Java JAR.
    pub job: Option<&'static dyn Job>,
}

/// For [`JobDef::args`] of a job without options of its own.
/// Where a job that sends to KERIS keeps its per-partner figures in its
/// run's details: `partners.<name>.<key>`, counted in `unit`.
#[derive(Debug, Clone, Copy)]
pub struct KerisFigures {
    /// What one figure counts (`calls`, `statements`).
    pub unit: &'static str,
    /// The keys whose sum is what KERIS accepted; a run whose figures lack
    /// the first one says nothing (recorded before the job kept them).
    pub accepted: &'static [&'static str],
}

pub fn no_args(cmd: clap::Command) -> clap::Command {
    cmd
}

/// A job's settings type, for [`JobDef::settings`]: how its section is
/// checked and which keys it has. Made by [`settings_of`] from the type, so
/// the keys are the type's own (`tests/config_reference.rs` holds
/// `docs/configuration.md` to them).
#[derive(Clone, Copy)]
pub struct SettingsDecl {
    /// Deserializes the section as the type (`deny_unknown_fields`) and
    /// checks its values; the error names the key.
    pub check: fn(config::Value) -> Result<(), String>,
    /// Every key of the type, nested tables dotted (`smtp.security`).
    pub keys: fn() -> BTreeMap<String, Kind>,
    /// The section as the type reads it (`Debug`, secrets redacted), so the
    /// reference's documented defaults can be compared with the type's.
    pub show: fn(config::Value) -> Result<String, String>,
}

/// The [`SettingsDecl`] of `T`: the section must deserialize as `T`.
pub const fn settings_of<T: DeserializeOwned + std::fmt::Debug>() -> SettingsDecl {
    SettingsDecl {
        check: deserializes_as::<T>,
        keys: keys_of::<T>,
        show: show_as::<T>,
    }
}

impl SettingsDecl {
    /// The same type, checked by `check` instead: a function that
    /// deserializes the section as this type and checks value ranges too.
    pub const fn checked_by(self, check: fn(config::Value) -> Result<(), String>) -> Self {
        Self { check, ..self }
    }
}

fn deserializes_as<T: DeserializeOwned>(section: config::Value) -> Result<(), String> {
    section
        .try_deserialize::<T>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn show_as<T: DeserializeOwned + std::fmt::Debug>(
    section: config::Value,
) -> Result<String, String> {
    section
        .try_deserialize::<T>()
        .map(|t| format!("{t:?}"))
        .map_err(|e| e.to_string())
}

impl JobDef {
    /// What a job's `DEF` does not say: `..JobDef::DEFAULTS` fills the rest,
    /// so a `DEF` lists only what differs (its id, names, about, schedule and
    /// job at least; `registry_declarations_are_complete` checks that).
    /// Unscheduled and no other start, yesterday's date, a lock of its own
    /// taken at once, the default timeouts, one process, no settings section
    /// beyond the runtime's keys, no options.
    pub const DEFAULTS: JobDef = JobDef {
        id: "",
        system: System::Lms,
        name_ko: "",
        name_en: "",
        about: "",
        schedule: Schedule::Unscheduled("not declared"),
        schedule_note: None,
        also_scheduled: &[],
        default_date: DefaultDate::Yesterday,
        lock: Lock::Job,
        lock_wait_secs: 0,
        timeouts: Timeouts::DEFAULT,
        partitioned: false,
        k8s_partitions: None,
        keris_figures: None,
        settings: None,
        args: no_args,
        job: None,
    };

    /// The id as typed on the command line and in the crontab.
    pub fn cli_name(&self) -> String {
        self.id.to_ascii_lowercase()
    }

    pub fn is_implemented(&self) -> bool {
        self.job.is_some()
    }

    /// Every scheduled start: the [`Schedule`] (name `""`, no options), if
    /// it is a cron expression, then [`JobDef::also_scheduled`].
    pub fn scheduled_runs(&self) -> Vec<ScheduledRun> {
        let main = match self.schedule {
            Schedule::Cron(cron) => Some(ScheduledRun {
                name: "",
                cron,
                args: &[],
                why: "",
            }),
            Schedule::Unscheduled(_) => None,
        };
        main.into_iter()
            .chain(self.also_scheduled.iter().copied())
            .collect()
    }

    /// The job's own configuration section, `[jobs.<this>]`: the id in
    /// lower case with `_` (`lms_01_001`), so `AIDT__JOBS__LMS_01_001__…`
    /// sets it from the environment.
    pub fn config_name(&self) -> String {
        self.id.to_ascii_lowercase().replace('-', "_")
    }

    /// The advisory-lock key text of a run of this job on `business_date`.
    pub fn lock_key(&self, business_date: chrono::NaiveDate) -> String {
        match self.lock {
            Lock::Job => format!("aidt-batch/job/{}", self.id),
            Lock::JobAndDate => format!("aidt-batch/job/{}/{business_date}", self.id),
            Lock::Group(group) => format!("aidt-batch/group/{group}"),
        }
    }

    /// The locks of a run on `business_date`, as `(key, exclusive)`, taken
    /// in this order. An unpartitioned run takes [`JobDef::lock_key`]
    /// exclusively. A partition takes that key shared — so partitions run
    /// side by side but never beside an unpartitioned run — the shape key
    /// of its count `N` shared (see [`partition_shape`]), and a key of its
    /// own partition exclusively, so the same partition never runs twice.
    pub fn run_locks(
        &self,
        business_date: chrono::NaiveDate,
        partition: Option<super::partition::Partition>,
    ) -> Vec<(String, bool)> {
        let key = self.lock_key(business_date);
        match partition {
            None => vec![(key, true)],
            Some(p) => {
                let shape = format!("{key}{SHAPE_SEGMENT}{}", p.count);
                let own = format!("{key}/partition/{}/{}", p.index, p.count);
                vec![(key, false), (shape, false), (own, true)]
            }
        }
    }
}

/// Partitions of one count `N` hold `<lock key>/partitions/N` shared. A
/// partition of another count would split the students differently (its
/// partition 0 of 2 is partitions 0 and 1 of 4), so it must not run beside
/// them: after taking its keys, a partition checks that no other count's
/// shape key is held (`LockConnection::other_held`), else it lets go and
/// counts as busy.
pub const SHAPE_SEGMENT: &str = "/partitions/";

/// The shape key's prefix (`<lock key>/partitions/`) and the partition
/// count of a run holding `locks`; `None` for an unpartitioned run.
pub fn partition_shape(locks: &[(String, bool)]) -> Option<(String, u32)> {
    locks.iter().find_map(|(key, _)| {
        let (group, count) = key.rsplit_once(SHAPE_SEGMENT)?;
        Some((format!("{group}{SHAPE_SEGMENT}"), count.parse().ok()?))
    })
}

impl std::fmt::Debug for JobDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDef")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A named sequence of jobs run in order for one business date (`aidt-batch
/// chain <name>`): one of the seed's data flows, declared beside the jobs.
pub struct ChainDef {
    /// As typed after `chain` (`keris-nightly`).
    pub name: &'static str,
    /// What the chain is for: `chain --list` prints it.
    pub about: &'static str,
    /// The business date of every step when `--date` is not given.
    pub default_date: DefaultDate,
    /// The jobs, in the order they run.
    pub steps: &'static [&'static JobDef],
}

impl std::fmt::Debug for ChainDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainDef")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every job, in the seed's order, and the chains of them.
#[derive(Clone, Copy)]
pub struct Registry {
    lists: &'static [&'static [&'static JobDef]],
    chains: &'static [&'static ChainDef],
}

impl Registry {
    /// The jobs are the systems' lists, one after the other: each list in
    /// its own order, the lists in the order given.
    pub const fn new(
        lists: &'static [&'static [&'static JobDef]],
        chains: &'static [&'static ChainDef],
    ) -> Self {
        Self { lists, chains }
    }

    pub fn chains(&self) -> impl Iterator<Item = &'static ChainDef> + '_ {
        self.chains.iter().copied()
    }

    /// Finds a chain by name, ignoring case.
    pub fn chain(&self, name: &str) -> Option<&'static ChainDef> {
        self.chains().find(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static JobDef> + '_ {
        self.lists.iter().flat_map(|list| list.iter().copied())
    }

    /// Finds a job by id, ignoring case (`lms-01-001` and `LMS-01-001` alike).
    pub fn find(&self, id: &str) -> Option<&'static JobDef> {
        self.iter().find(|job| job.id.eq_ignore_ascii_case(id))
    }

    /// The job whose own configuration section is `[jobs.<name>]`.
    pub fn by_config(&self, name: &str) -> Option<&'static JobDef> {
        self.iter().find(|job| job.config_name() == name)
    }

    /// The registered id closest to a mistyped one, if any is close enough
    /// to be a plausible typo.
    pub fn closest(&self, id: &str) -> Option<&'static JobDef> {
        let wanted = id.to_ascii_uppercase();
        self.iter()
            .map(|job| (strsim::levenshtein(job.id, &wanted), job))
            .filter(|(distance, _)| *distance <= 3)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, job)| job)
    }

    /// The jobs whose runs take the same lock as a run of `def` would.
    pub fn sharing_lock_with(&self, def: &JobDef) -> Vec<&'static JobDef> {
        self.iter()
            .filter(|other| match (def.lock, other.lock) {
                (Lock::Group(a), Lock::Group(b)) => a == b,
                _ => other.id == def.id,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_declarations_are_complete() {
        // `..JobDef::DEFAULTS` fills what a DEF leaves out; what identifies
        // and explains a job has no meaningful default.
        for def in crate::jobs::REGISTRY.iter() {
            assert!(!def.id.is_empty(), "a job without an id");
            for (field, text) in [
                ("name_ko", def.name_ko),
                ("name_en", def.name_en),
                ("about", def.about),
            ] {
                assert!(!text.is_empty(), "{}: `{field}` is empty", def.id);
            }
            assert!(def.job.is_some(), "{}: no `job`", def.id);
            assert_ne!(
                def.schedule,
                JobDef::DEFAULTS.schedule,
                "{}: no schedule declared (say why it is unscheduled)",
                def.id
            );
        }
    }

    #[test]
    fn other_scheduled_starts_are_named_timed_and_take_options_the_job_has() {
        let mut names = std::collections::BTreeSet::new();
        for def in crate::jobs::REGISTRY.iter() {
            for run in def.also_scheduled {
                assert!(
                    !run.name.is_empty() && names.insert((def.id, run.name)),
                    "{}: a name of its own",
                    def.id
                );
                assert!(!run.why.is_empty(), "{} {}: say why", def.id, run.name);
                assert_eq!(run.cron.split_whitespace().count(), 5, "{}", run.cron);
                let cli = def.cli_name();
                let args = std::iter::once(cli.as_str()).chain(run.args.iter().copied());
                (def.args)(clap::Command::new(cli.clone()))
                    .try_get_matches_from(args)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", def.id, run.name));
            }
        }
        let lcms = crate::jobs::REGISTRY.find("LCMS-01-001").unwrap();
        let runs = lcms.scheduled_runs();
        assert_eq!(runs.len(), 2, "daily, and weekly --full");
        assert_eq!(runs[1].args, ["--full"]);
    }

    #[test]
    fn a_partition_takes_the_lock_shared_its_count_shared_and_itself_exclusively() {
        let def = crate::jobs::REGISTRY.find("DC-01-001").unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        let group = "aidt-batch/group/keris-xapi";
        assert_eq!(def.run_locks(day, None), [(group.to_string(), true)]);
        assert_eq!(partition_shape(&def.run_locks(day, None)), None);
        let locks = def.run_locks(day, super::super::partition::Partition::new(2, 4));
        assert_eq!(
            locks,
            [
                (group.to_string(), false),
                (format!("{group}/partitions/4"), false),
                (format!("{group}/partition/2/4"), true),
            ]
        );
        assert_eq!(
            partition_shape(&locks),
            Some((format!("{group}/partitions/"), 4))
        );
    }
}
