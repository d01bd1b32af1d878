//! Dispatch of a parsed command line: a job ([`run_job`]) or an operator
//! command (one module each).

pub mod chain;
pub mod check;
pub mod completions;
pub mod crontab;
pub mod history;
pub mod k8s;
pub mod list;
pub mod man;
pub mod migrate;
pub mod purge;
pub mod report;
pub mod run_job;

use std::path::Path;

use crate::cli::{Cli, Command, Invocation};
use crate::config::{LoadedConfig, Profile};
use crate::jobs::REGISTRY;
use crate::runtime::Exit;

/// Runs what the command line asks for and returns the process's exit.
pub async fn execute(invocation: Invocation) -> Exit {
    let result = match invocation {
        Invocation::Job {
            def,
            args,
            matches,
            profile,
            config,
            ..
        } => match Profile::resolve(profile, Profile::Local) {
            Ok(profile) => run_job::run(def, args, matches, profile, config.as_deref()).await,
            Err(e) => Err(e.into()),
        },
        Invocation::Operator(cli) => operator(cli).await,
    };
    result.unwrap_or_else(|e| report(&e))
}

/// Prints an error with its whole cause chain on one line and picks the exit:
/// 2 for what the operator must fix in configuration or set-up, else 1.
pub fn report(e: &anyhow::Error) -> Exit {
    tracing::error!(error = %format!("{e:#}"), "command failed");
    eprintln!("aidt-batch: error: {e:#}");
    crate::runtime::exit::exit_for_error(e)
}

/// Loads configuration and installs logging; a bad configuration is reported
/// before any logging exists, so it goes straight to stderr. Clear-text
/// transport that `prod` allows is logged as a warning, in the run's span
/// when `job` is a job's id.
fn load_config(
    profile: Profile,
    extra: Option<&Path>,
    job: Option<&str>,
) -> anyhow::Result<LoadedConfig> {
    let loaded = crate::jobs::load_config(profile, extra)?;
    crate::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    let span = match job {
        Some(job_id) => tracing::info_span!("run", job_id),
        None => tracing::Span::none(),
    };
    span.in_scope(|| {
        for (key, why) in insecure_transport(&loaded) {
            tracing::warn!(key, "clear-text transport allowed by configuration: {why}");
        }
    });
    Ok(loaded)
}

/// The clear-text transports `prod` was told to allow (elsewhere none is
/// reported: `local` talks to loopback servers).
pub fn insecure_transport(loaded: &LoadedConfig) -> Vec<(String, String)> {
    if loaded.profile == Profile::Prod {
        loaded.settings.insecure_transport()
    } else {
        Vec::new()
    }
}

async fn operator(cli: Cli) -> anyhow::Result<Exit> {
    let extra = cli.config.as_deref();
    let profile = |default| Profile::resolve(cli.profile, default);
    match cli.command {
        Command::Crontab { system } => crontab::run(profile(Profile::Prod)?, system),
        Command::K8s { out, image } => k8s::run(out.as_deref(), image),
        Command::Report { date, html } => {
            report::run(profile(Profile::Local)?, extra, date, &html).await
        }
        Command::Completions { shell } => completions::run(shell),
        Command::Man { out_dir } => man::run(out_dir.as_deref()),
        Command::List => list::run(profile(Profile::Local)?, extra).await,
        Command::History {
            job,
            limit,
            status,
            since,
            date,
        } => {
            let filter = history::Filter {
                job,
                statuses: status,
                since,
                business_date: date,
            };
            history::exec(profile(Profile::Local)?, extra, filter, limit).await
        }
        Command::Purge {
            older_than,
            dry_run,
        } => purge::run(profile(Profile::Local)?, extra, older_than, dry_run).await,
        Command::Migrate => migrate::exec(profile(Profile::Local)?, extra).await,
        Command::Chain {
            name,
            list,
            date,
            plan,
        } => {
            if list {
                print!("{}", chain::render_list(&REGISTRY));
                return Ok(Exit::Success);
            }
            let name = name.unwrap_or_default();
            chain::exec(profile(Profile::Local)?, extra, &name, date, plan).await
        }
        Command::Check => check::run(profile(Profile::Local)?, extra).await,
    }
}
