//! Dispatch of a parsed command line, and the operator commands.

pub mod check;
pub mod history;
pub mod list;
pub mod migrate;

use std::path::Path;

use crate::cli::{Cli, Command, DevCommand, Invocation};
use crate::config::{self, ConfigError, LoadedConfig, Profile};
use crate::context::AppContext;
use crate::runtime::runner::{self, RunRequest};
use crate::runtime::{crontab, registry, Exit, SetupError};

/// Runs what the command line asks for and returns the process's exit.
pub async fn execute(invocation: Invocation) -> Exit {
    let result = match invocation {
        Invocation::Job {
            def,
            args,
            profile,
            config,
        } => {
            let profile = profile.unwrap_or(Profile::Local);
            run_job(def, args, profile, config.as_deref()).await
        }
        Invocation::Operator(cli) => operator(cli).await,
    };
    result.unwrap_or_else(|e| report(&e))
}

/// Prints an error with its whole cause chain on one line and picks the exit:
/// 2 for what the operator must fix in configuration or set-up, else 1.
pub fn report(e: &anyhow::Error) -> Exit {
    let usage = e
        .chain()
        .any(|c| c.is::<ConfigError>() || c.is::<SetupError>());
    tracing::error!(error = %format!("{e:#}"), "command failed");
    eprintln!("aidt-batch: error: {e:#}");
    if usage {
        Exit::Usage
    } else {
        Exit::Failure
    }
}

/// Loads configuration and installs logging; a bad configuration is reported
/// before any logging exists, so it goes straight to stderr.
fn load_config(profile: Profile, extra: Option<&Path>) -> anyhow::Result<LoadedConfig> {
    let loaded = config::load(profile, extra)?;
    crate::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    Ok(loaded)
}

async fn run_job(
    def: &'static registry::JobDef,
    args: crate::cli::JobArgs,
    profile: Profile,
    extra: Option<&Path>,
) -> anyhow::Result<Exit> {
    if !def.is_implemented() {
        return Err(SetupError::NotImplemented(def.id).into());
    }
    let loaded = load_config(profile, extra)?;
    let app = AppContext::connect(&loaded).await?;
    let params = serde_json::json!({
        "profile": profile.as_str(),
        "date": args.date.map(|d| d.to_string()),
        "dry_run": args.dry_run,
        "full": args.full,
        "config_file": extra.map(|p| p.display().to_string()),
    });
    let request = RunRequest {
        def,
        date: args.date,
        dry_run: args.dry_run,
        full: args.full,
        params,
    };
    let outcome = runner::run(app, request).await?;
    Ok(outcome.exit)
}

async fn operator(cli: Cli) -> anyhow::Result<Exit> {
    let extra = cli.config.as_deref();
    match cli.command {
        Command::Crontab => {
            print!("{}", crontab::render(cli.profile.unwrap_or(Profile::Prod)));
            Ok(Exit::Success)
        }
        Command::List => list::run(cli.profile.unwrap_or(Profile::Local), extra).await,
        Command::History { job, limit } => {
            let job = match job {
                None => None,
                Some(given) => match registry::find(&given) {
                    Some(def) => Some(def),
                    None => {
                        eprintln!(
                            "aidt-batch: error: {}",
                            crate::cli::unknown_job_message(&given)
                        );
                        return Ok(Exit::Usage);
                    }
                },
            };
            let loaded = load_config(cli.profile.unwrap_or(Profile::Local), extra)?;
            let pg = crate::context::connect_pg(&loaded.settings).await?;
            history::run(&pg, job, limit).await
        }
        Command::Migrate => {
            let loaded = load_config(cli.profile.unwrap_or(Profile::Local), extra)?;
            let app = AppContext::connect(&loaded).await?;
            migrate::run(&app).await
        }
        Command::Check => {
            let profile = cli.profile.unwrap_or(Profile::Local);
            check::run(profile, extra).await
        }
        Command::Dev(dev) => {
            let profile = cli.profile.unwrap_or(Profile::Local);
            if profile == Profile::Prod {
                eprintln!("aidt-batch: error: `dev` commands create and fill tables that other systems own; refused in the prod profile");
                return Ok(Exit::Usage);
            }
            let loaded = load_config(profile, extra)?;
            let app = AppContext::connect(&loaded).await?;
            match dev {
                DevCommand::Schema => crate::dev::schema::apply(&app)
                    .await
                    .map(|()| Exit::Success),
                DevCommand::BenchData(args) => crate::dev::bench::bench_data(&app, &args)
                    .await
                    .map(|()| Exit::Success),
                DevCommand::Scan(args) => crate::dev::bench::scan(&app, &args)
                    .await
                    .map(|()| Exit::Success),
                DevCommand::Seed(args) => {
                    let report = crate::dev::seed::seed(&app, &args).await?;
                    println!("{report}");
                    Ok(Exit::Success)
                }
            }
        }
    }
}
