//! Dispatch of a parsed command line, and the operator commands.

pub mod chain;
pub mod check;
pub mod completions;
pub mod history;
pub mod list;
pub mod man;
pub mod migrate;
pub mod purge;
pub mod report;

use std::path::Path;

use crate::cli::{Cli, Command, Invocation};
use crate::config::{LoadedConfig, Profile};
use crate::context::AppContext;
use crate::jobs::REGISTRY;
use crate::runtime::history::RunStatus;
use crate::runtime::partition::Partition;
use crate::runtime::runner::{self, RunRequest};
use crate::runtime::{crontab, k8s, metrics, registry, Exit, SetupError};

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
            Ok(profile) => run_job(def, args, matches, profile, config.as_deref()).await,
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

async fn run_job(
    def: &'static registry::JobDef,
    args: crate::cli::JobArgs,
    matches: clap::ArgMatches,
    profile: Profile,
    extra: Option<&Path>,
) -> anyhow::Result<Exit> {
    if !def.is_implemented() {
        return Err(SetupError::NotImplemented(def.id).into());
    }
    let partition = match matches
        .try_get_one::<Partition>(crate::runtime::partition::OPTION)
        .ok()
        .flatten()
    {
        Some(p) => Some(*p),
        None if def.partitioned => {
            Partition::from_env(|name| std::env::var(name).ok()).map_err(SetupError::from)?
        }
        None => None,
    };
    let loaded = load_config(profile, extra, Some(def.id))?;
    let started = std::time::Instant::now();
    let app = match AppContext::connect(&loaded).await {
        Ok(app) => app,
        Err(e) => {
            // No database, so no run row: the metrics still record the failure.
            if !args.dry_run {
                let run = metrics::RunMetrics {
                    job_id: def.id,
                    file_stem: metrics::file_stem(def, partition),
                    partition,
                    status: RunStatus::Failed,
                    exit: crate::runtime::exit::exit_for_error(&e),
                    counts: Default::default(),
                    duration: started.elapsed(),
                    finished_at: chrono::Utc::now(),
                };
                metrics::export(&loaded.settings.metrics, None, &run).await;
            }
            return Err(e);
        }
    };
    let params = serde_json::json!({
        "profile": profile.as_str(),
        "date": args.date.map(|d| d.to_string()),
        "dry_run": args.dry_run,
        "options": own_options(&matches),
        "config_file": extra.map(|p| p.display().to_string()),
    });
    let mut params = params;
    let insecure: Vec<String> = insecure_transport(&loaded)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    if !insecure.is_empty() {
        params["insecure_transport"] = insecure.into();
    }
    let request = RunRequest {
        date: args.date,
        partition,
        dry_run: args.dry_run,
        params,
        args: matches,
        ..RunRequest::new(&REGISTRY, def)
    };
    let outcome = runner::run(app.clone(), request).await;
    app.close().await;
    Ok(outcome?.exit)
}

/// The job's own options given on the command line (name → value), for the
/// history's `params`.
fn own_options(matches: &clap::ArgMatches) -> serde_json::Map<String, serde_json::Value> {
    let mut given = serde_json::Map::new();
    for id in matches.ids() {
        let id = id.as_str();
        if ["date", "dry_run", crate::runtime::partition::OPTION].contains(&id)
            || matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine)
        {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        given.insert(id.to_string(), values.join(",").into());
    }
    given
}

async fn operator(cli: Cli) -> anyhow::Result<Exit> {
    let extra = cli.config.as_deref();
    let profile = |default| Profile::resolve(cli.profile, default);
    match cli.command {
        Command::Crontab { system } => {
            let form = if system {
                crontab::Form::System
            } else {
                crontab::Form::User
            };
            print!(
                "{}",
                crontab::render(&REGISTRY, profile(Profile::Prod)?, form)
            );
            Ok(Exit::Success)
        }
        Command::K8s { out, image } => {
            let mut options = k8s::Options::default();
            if let Some(image) = image {
                options.image = image;
            }
            match out {
                None => print!("{}", k8s::render_stream(&REGISTRY, &options)),
                Some(dir) => write_manifests(&dir, &k8s::render(&REGISTRY, &options))?,
            }
            Ok(Exit::Success)
        }
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
            let job = match job {
                None => None,
                Some(given) => match REGISTRY.find(&given) {
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
            let loaded = load_config(profile(Profile::Local)?, extra, None)?;
            let pg = crate::context::connect_pg(&loaded.settings).await?;
            let filter = crate::runtime::history::RunFilter {
                job_id: job.map(|j| j.id),
                statuses: status,
                since,
                business_date: date,
            };
            history::run(&pg, &filter, limit).await
        }
        Command::Purge {
            older_than,
            dry_run,
        } => purge::run(profile(Profile::Local)?, extra, older_than, dry_run).await,
        Command::Migrate => {
            let loaded = load_config(profile(Profile::Local)?, extra, None)?;
            let app = AppContext::connect(&loaded).await?;
            let exit = migrate::run(&app).await;
            app.close().await;
            exit
        }
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
            let Some(def) = REGISTRY.chain(&name) else {
                let known: Vec<&str> = REGISTRY.chains().map(|c| c.name).collect();
                eprintln!(
                    "aidt-batch: error: unknown chain `{name}`; chains: {}",
                    known.join(", ")
                );
                return Ok(Exit::Usage);
            };
            let profile = profile(Profile::Local)?;
            let loaded = load_config(profile, extra, None)?;
            let app = AppContext::connect(&loaded).await?;
            let params = serde_json::json!({
                "profile": profile.as_str(),
                "date": date.map(|d| d.to_string()),
                "config_file": extra.map(|p| p.display().to_string()),
            });
            let exit = chain::run(&app, def, date, plan, params).await;
            app.close().await;
            exit
        }
        Command::Check => check::run(profile(Profile::Local)?, extra).await,
    }
}

/// Writes `manifests` into `dir` (created if missing) and removes the
/// `cronjob-*.yaml` there that are no longer generated (a job that became
/// unscheduled); other files are left alone.
fn write_manifests(dir: &Path, manifests: &[k8s::Manifest]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("Failed to read {}", dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let generated = manifests.iter().any(|m| m.file == name);
        if name.starts_with("cronjob-") && name.ends_with(".yaml") && !generated {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("Failed to remove {}", entry.path().display()))?;
            eprintln!("removed {}", entry.path().display());
        }
    }
    for manifest in manifests {
        let path = dir.join(&manifest.file);
        std::fs::write(&path, &manifest.text)
            .with_context(|| format!("Failed to write {}", path.display()))?;
    }
    eprintln!("wrote {} manifests to {}", manifests.len(), dir.display());
    Ok(())
}
