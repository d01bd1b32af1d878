//! The command line: one subcommand per job id (built from the registry) and
//! the operator commands.

use std::ffi::OsString;
use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Profile;
use crate::jobs::REGISTRY;
use crate::runtime::registry::{JobDef, Lock, Schedule};

#[derive(Debug, Parser)]
#[command(
    name = "aidt-batch",
    version,
    about = "Runs one batch job of the AIDT platform and exits; cron does the scheduling.",
    long_about = None,
    after_help = "Run `aidt-batch list` for the jobs and their schedules.\n\
                  Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 already running,\n\
                  4 completed with recorded item failures, 130/143 stopped by SIGINT/SIGTERM."
)]
pub struct Cli {
    /// Configuration profile: config/base.toml + config/<profile>.toml [default: local; prod for `crontab`]
    #[arg(long, global = true, value_enum)]
    pub profile: Option<Profile>,
    /// An extra configuration file layered over the profile
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the jobs: id, system, names, schedule, last run and its status
    List,
    /// Show past runs, newest first
    History {
        /// Only this job's runs
        job: Option<String>,
        /// How many runs to show
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Print the crontab built from the job registry
    Crontab,
    /// Print the Kubernetes manifests built from the job registry (a CronJob per
    /// scheduled job, the ConfigMap), or write them to a directory
    K8s {
        /// Write one file per manifest into DIR (deploy/k8s), removing CronJobs no longer generated
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The image the pods run [default: aidt-batch:<version>]
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
    },
    /// Apply the batch's own migrations and ensure the MongoDB indexes
    Migrate,
    /// Verify configuration, PostgreSQL, MongoDB and KERIS reachability
    Check,
    /// Run a chain of jobs in order for one business date, skipping the steps
    /// already COMPLETED for it and stopping at the first failure
    Chain {
        /// The chain's name (`chain --list` shows them)
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the chains and their steps
        #[arg(long, conflicts_with_all = ["date", "plan"])]
        list: bool,
        /// Business date of every step, Asia/Seoul [default: the chain's own, yesterday for keris-nightly]
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<NaiveDate>,
        /// Show which steps would run and which are already COMPLETED; run nothing
        #[arg(long)]
        plan: bool,
    },
}

/// The options every job has; a job may add its own ([`JobDef::args`]).
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Business date, Asia/Seoul [default: the job's own: yesterday for daily aggregations, else today]
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub date: Option<NaiveDate>,
    /// Read and report what would change; write nothing, send nothing
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_date(value: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|e| format!("expected a calendar date as YYYY-MM-DD ({e})"))
}

/// A parsed command line.
#[derive(Debug)]
pub enum Invocation {
    Job {
        def: &'static JobDef,
        args: JobArgs,
        /// The job subcommand's matches, for the job's own options.
        matches: ArgMatches,
        profile: Option<Profile>,
        config: Option<PathBuf>,
    },
    Operator(Cli),
}

impl Invocation {
    pub fn profile_or(&self, default: Profile) -> Profile {
        match self {
            Invocation::Job { profile, .. } => profile.unwrap_or(default),
            Invocation::Operator(cli) => cli.profile.unwrap_or(default),
        }
    }
}

/// The full clap command: operator commands plus one subcommand per job.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for def in REGISTRY.iter() {
        let schedule = match def.schedule {
            Schedule::Cron(expr) => format!("cron `{expr}`"),
            Schedule::Unscheduled(_) => "unscheduled".into(),
        };
        let status = if def.is_implemented() {
            ""
        } else {
            " (not implemented yet)"
        };
        let lock = match def.lock {
            Lock::Job => "one run of this job at a time".to_string(),
            Lock::JobAndDate => "one run of this job per business date".to_string(),
            Lock::Group(group) => {
                let members: Vec<&str> = REGISTRY
                    .sharing_lock_with(def)
                    .iter()
                    .map(|d| d.id)
                    .collect();
                format!(
                    "one run at a time among {} (lock group `{group}`)",
                    members.join(", ")
                )
            }
        };
        // The common options first: their struct's doc would replace the about.
        let sub = JobArgs::augment_args(clap::Command::new(def.cli_name()))
            .about(format!("{} — {}; {schedule}{status}", def.id, def.name_en))
            .long_about(format!(
                "{} [{}] {} / {}\n\n{}\n\nSchedule: {schedule}{status}\nLock: {lock}; waits up to {} s \
                 for a busy lock (`[jobs.{}] lock_wait_secs`), then records SKIPPED and exits 3.",
                def.id,
                def.system.as_str(),
                def.name_en,
                def.name_ko,
                def.about,
                def.lock_wait_secs,
                def.config_name(),
            ));
        cmd = cmd.subcommand((def.args)(sub));
    }
    cmd
}

/// Job ids are accepted in any case: rewrite them to the registered spelling
/// before clap sees them.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| match arg.to_str().and_then(|a| REGISTRY.find(a)) {
            Some(def) => OsString::from(def.cli_name()),
            None => arg,
        })
        .collect()
}

/// Parses a command line (`args[0]` is the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, clap::Error> {
    let matches = command()
        .try_get_matches_from(normalize(args))
        .map_err(explain_unknown)?;
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(def) = REGISTRY.find(name) {
            let args = JobArgs::from_arg_matches(sub)?;
            return Ok(Invocation::Job {
                def,
                args,
                matches: sub.clone(),
                profile: global_profile(&matches),
                config: global_config(&matches),
            });
        }
    }
    Ok(Invocation::Operator(Cli::from_arg_matches(&matches)?))
}

fn global_profile(matches: &ArgMatches) -> Option<Profile> {
    matches.get_one::<Profile>("profile").copied()
}

fn global_config(matches: &ArgMatches) -> Option<PathBuf> {
    matches.get_one::<PathBuf>("config").cloned()
}

/// Replaces clap's "unrecognized subcommand" with a message that suggests the
/// closest job id and lists the valid ones.
fn explain_unknown(err: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::InvalidSubcommand {
        return err;
    }
    let Some(ContextValue::String(given)) = err.get(ContextKind::InvalidSubcommand) else {
        return err;
    };
    command().error(ErrorKind::InvalidSubcommand, unknown_job_message(given))
}

/// "unknown job id …; did you mean …; valid ids: …".
pub fn unknown_job_message(given: &str) -> String {
    let mut msg = format!("unknown job id or command `{given}`\n");
    if let Some(def) = REGISTRY.closest(given) {
        msg.push_str(&format!(
            "  did you mean `{}` ({})?\n",
            def.cli_name(),
            def.name_en
        ));
    }
    let ids: Vec<String> = REGISTRY.iter().map(JobDef::cli_name).collect();
    msg.push_str(&format!("  valid job ids: {}\n", ids.join(", ")));
    msg.push_str("  commands: list, history, crontab, k8s, migrate, check, chain");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Invocation, clap::Error> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn job_ids_parse_in_any_case_with_their_options() {
        let inv = parse_str(&[
            "aidt-batch",
            "LMS-01-001",
            "--profile",
            "prod",
            "--date",
            "2026-03-05",
            "--dry-run",
        ])
        .unwrap();
        let Invocation::Job {
            def, args, profile, ..
        } = inv
        else {
            panic!("not a job")
        };
        assert_eq!(def.id, "LMS-01-001");
        assert_eq!(profile, Some(Profile::Prod));
        assert_eq!(args.date, NaiveDate::from_ymd_opt(2026, 3, 5));
        assert!(args.dry_run);
    }

    #[test]
    fn unknown_id_suggests_the_closest_and_exits_2() {
        let err = parse_str(&["aidt-batch", "lms-01-01"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("did you mean `lms-01-001`"), "{text}");
        assert!(text.contains("bo-01-007"), "{text}");
    }

    #[test]
    fn bad_date_names_the_flag() {
        let err = parse_str(&["aidt-batch", "bo-01-005", "--date", "2026-02-30"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--date"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }
}
