//! The command line: one subcommand per job id (built from the registry) and
//! the operator commands.

use std::ffi::OsString;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Profile;
use crate::jobs::REGISTRY;
use crate::runtime::history::RunStatus;
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
    /// Configuration profile: config/base.toml + config/<profile>.toml [default: $AIDT_PROFILE,
    /// else local; prod for `crontab`]
    #[arg(long, global = true, value_enum)]
    pub profile: Option<Profile>,
    /// An extra configuration file layered over the profile
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// KEY=value lines read literally (as `kubectl create secret --from-env-file` reads them)
    /// into the environment; variables already set win [default: $AIDT_ENV_FILE, else
    /// /etc/aidt-batch/env when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
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
        /// Only runs with this status: started, completed, completed-with-errors, failed,
        /// stopped, skipped (any case; repeat or separate with commas)
        #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
        status: Vec<RunStatus>,
        /// Only runs started at or after WHEN: a date (00:00 KST), a KST date and time
        /// (2026-03-05T01:00), or a time back from now (90m, 12h, 7d)
        #[arg(long, value_name = "WHEN", value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only runs of this business date
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<NaiveDate>,
    },
    /// Delete the batch's run history (batch_job_run) older than DAYS; keeps STARTED runs,
    /// runs the privacy audit or another batch table names, and each job's latest run
    Purge {
        /// Delete the runs started more than DAYS days ago
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        older_than: u32,
        /// Count what would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the crontab built from the job registry: a user crontab (`crontab -u aidt FILE`,
    /// for a host installed without the package), or with --system the package's /etc/cron.d file
    Crontab {
        /// The /etc/cron.d form (a user field on each line) the Debian package installs
        #[arg(long)]
        system: bool,
    },
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
    /// Write the night report: one self-contained HTML page of a business date's runs
    /// (timeline, failures and why, counts and throughput per job, KERIS per partner,
    /// open error rows)
    Report {
        /// Business date, Asia/Seoul [default: yesterday]
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<NaiveDate>,
        /// The HTML file to write (replaced atomically)
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
    },
    /// Print a shell completion script built from this command line
    /// (bash: `source <(aidt-batch completions bash)`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) built from this command line, or write one page per command
    /// into DIR (`man -l DIR/aidt-batch.1`)
    Man {
        /// Write aidt-batch.1 and aidt-batch-<command>.1 for every command here instead
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
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

fn parse_partition(value: &str) -> Result<crate::runtime::partition::Partition, String> {
    crate::runtime::partition::Partition::parse(value).ok_or_else(|| {
        format!(
            "expected I/N with 0 <= I < N <= {}",
            crate::runtime::partition::MAX_PARTITIONS
        )
    })
}

fn parse_status(value: &str) -> Result<RunStatus, String> {
    RunStatus::parse(value).ok_or_else(|| {
        let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", all.join(", "))
    })
}

/// `--since`: a date (its 00:00 in Asia/Seoul), a date and time in Asia/Seoul,
/// or a span back from now (`90m`, `12h`, `7d`).
fn parse_since(value: &str) -> Result<DateTime<Utc>, String> {
    parse_since_at(value, Utc::now())
}

fn parse_since_at(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    use chrono::TimeZone;
    let value = value.trim();
    if let Some((number, unit)) = value
        .char_indices()
        .last()
        .filter(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, c)| (&value[..i], c))
    {
        if let Ok(n) = number.parse::<i64>() {
            let span = match unit {
                'm' => chrono::Duration::try_minutes(n),
                'h' => chrono::Duration::try_hours(n),
                'd' => chrono::Duration::try_days(n),
                _ => None,
            };
            if let Some(span) = span.filter(|_| n >= 0) {
                return Ok(now - span);
            }
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(crate::time::start_of_day_seoul(date));
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(value, format) {
            if let Some(at) = crate::time::seoul().from_local_datetime(&at).single() {
                return Ok(at.with_timezone(&Utc));
            }
        }
    }
    Err("expected YYYY-MM-DD, YYYY-MM-DDTHH:MM (Asia/Seoul), or a span back from now such as 90m, 12h, 7d".into())
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
        env_file: Option<PathBuf>,
    },
    Operator(Cli),
}

impl Invocation {
    /// The env file to read before anything else, for a command that loads
    /// the configuration (the generators and `chain --list` read none).
    pub fn env_file(&self) -> Option<PathBuf> {
        match self {
            Invocation::Job { env_file, .. } => crate::env_file::choose(env_file.as_deref()),
            Invocation::Operator(cli) => match cli.command {
                Command::Crontab { .. }
                | Command::K8s { .. }
                | Command::Completions { .. }
                | Command::Man { .. }
                | Command::Chain { list: true, .. } => None,
                _ => crate::env_file::choose(cli.env_file.as_deref()),
            },
        }
    }
}

/// The full clap command: operator commands plus one subcommand per job.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for def in REGISTRY.iter() {
        let mut schedule = match def.schedule {
            Schedule::Cron(expr) => format!("cron `{expr}`"),
            Schedule::Unscheduled(_) => "unscheduled".into(),
        };
        for run in def.also_scheduled {
            schedule.push_str(&format!(
                "; also `{}` with {} ({})",
                run.cron,
                run.args.join(" "),
                run.why
            ));
        }
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
                 for a busy lock (`[jobs.{name}] lock_wait_secs`), then records SKIPPED and exits 3.\n\
                 Timeouts: a statement {} s, a row or table lock {} s, a MongoDB read {} s \
                 (`[jobs.{name}] statement_timeout_secs`, `lock_timeout_secs`, `mongo_max_time_secs`; 0: none).",
                def.id,
                def.system.as_str(),
                def.name_en,
                def.name_ko,
                def.about,
                def.lock_wait_secs,
                def.timeouts.statement_secs,
                def.timeouts.lock_secs,
                def.timeouts.mongo_secs,
                name = def.config_name(),
            ));
        let sub = if def.partitioned {
            sub.arg(
                clap::Arg::new(crate::runtime::partition::OPTION)
                    .long(crate::runtime::partition::OPTION)
                    .value_name("I/N")
                    .value_parser(parse_partition)
                    .help(format!(
                        "Do the students of partition I of N only (0 <= I < N) [default: {}/{} when set, else all]",
                        crate::runtime::partition::INDEX_ENV,
                        crate::runtime::partition::COUNT_ENV
                    )),
            )
        } else {
            sub
        };
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
                env_file: matches.get_one::<PathBuf>("env_file").cloned(),
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
    msg.push_str(
        "  commands: list, history, purge, report, crontab, k8s, migrate, check, chain, completions, man",
    );
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
    fn since_takes_a_kst_date_a_kst_time_or_a_span_back_from_now() {
        use chrono::TimeZone;
        let now = Utc.with_ymd_and_hms(2026, 3, 6, 0, 0, 0).unwrap();
        let at = |v: &str| parse_since_at(v, now).unwrap().to_rfc3339();
        assert_eq!(at("2026-03-05"), "2026-03-04T15:00:00+00:00");
        assert_eq!(at("2026-03-05T01:30"), "2026-03-04T16:30:00+00:00");
        assert_eq!(at("90m"), "2026-03-05T22:30:00+00:00");
        assert_eq!(at("12h"), "2026-03-05T12:00:00+00:00");
        assert_eq!(at("7d"), "2026-02-27T00:00:00+00:00");
        for bad in ["yesterday", "7w", "-3d", "2026-02-30"] {
            assert!(parse_since_at(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_status_accepts_stored_and_dashed_spellings() {
        let inv = parse_str(&[
            "aidt-batch",
            "history",
            "--status",
            "failed,COMPLETED_WITH_ERRORS",
            "--status",
            "completed-with-errors",
        ])
        .unwrap();
        let Invocation::Operator(Cli {
            command: Command::History { status, .. },
            ..
        }) = inv
        else {
            panic!("not history")
        };
        assert_eq!(
            status,
            [
                RunStatus::Failed,
                RunStatus::CompletedWithErrors,
                RunStatus::CompletedWithErrors
            ]
        );
        let err = parse_str(&["aidt-batch", "history", "--status", "done"]).unwrap_err();
        assert!(err.to_string().contains("COMPLETED_WITH_ERRORS"), "{err}");
        let err = parse_str(&["aidt-batch", "purge", "--older-than", "0"]).unwrap_err();
        assert!(err.to_string().contains("--older-than"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }
}
