//! `aidt-batch <job-id> …`: runs one job through the runner.

use std::path::Path;

use crate::config::Profile;
use crate::context::AppContext;
use crate::jobs::REGISTRY;
use crate::runtime::history::RunStatus;
use crate::runtime::partition::Partition;
use crate::runtime::runner::{self, RunRequest};
use crate::runtime::{metrics, registry, Exit, SetupError};

use super::{insecure_transport, load_config};

pub async fn run(
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
