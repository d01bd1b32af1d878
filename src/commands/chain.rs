//! `aidt-batch chain <name> [--date D] [--plan]` and `chain --list`: the
//! operator's side of [`crate::runtime::chain`], one line per step.

use chrono::NaiveDate;

use crate::context::AppContext;
use crate::jobs::REGISTRY;
use crate::runtime::chain::{self, StepOutcome};
use crate::runtime::registry::{ChainDef, JobDef, Registry};
use crate::runtime::runner;
use crate::runtime::Exit;

/// `chain --list`: each chain, what it is for and its steps.
pub fn render_list(registry: &Registry) -> String {
    let mut out = String::new();
    for c in registry.chains() {
        out.push_str(&format!("{:<16} {}\n", c.name, c.about));
        for (i, step) in c.steps.iter().enumerate() {
            out.push_str(&format!("  {}. {:<12} {}\n", i + 1, step.id, step.name_en));
        }
    }
    out
}

/// The command: an unknown chain is a usage error (exit 2) naming the
/// known ones; else the chain runs (or, with `plan`, says what it would).
pub async fn exec(
    profile: crate::config::Profile,
    extra: Option<&std::path::Path>,
    name: &str,
    date: Option<NaiveDate>,
    plan: bool,
) -> anyhow::Result<Exit> {
    let Some(def) = REGISTRY.chain(name) else {
        let known: Vec<&str> = REGISTRY.chains().map(|c| c.name).collect();
        eprintln!(
            "aidt-batch: error: unknown chain `{name}`; chains: {}",
            known.join(", ")
        );
        return Ok(Exit::Usage);
    };
    let loaded = super::load_config(profile, extra, None)?;
    let app = AppContext::connect(&loaded).await?;
    let params = serde_json::json!({
        "profile": profile.as_str(),
        "date": date.map(|d| d.to_string()),
        "config_file": extra.map(|p| p.display().to_string()),
    });
    let exit = run(&app, def, date, plan, params).await;
    app.close().await;
    exit
}

pub async fn run(
    app: &AppContext,
    def: &'static ChainDef,
    date: Option<NaiveDate>,
    plan: bool,
    params: serde_json::Value,
) -> anyhow::Result<Exit> {
    let date = runner::date_or_default(def.default_date, date);
    println!("chain {} for {date}", def.name);
    if plan {
        for (step, done) in chain::plan(app, def, date).await? {
            match done {
                Some(run_id) => {
                    println!("  {:<12} already COMPLETED (run {run_id}): skip", step.id)
                }
                None => println!("  {:<12} would run", step.id),
            }
        }
        return Ok(Exit::Success);
    }
    let report = chain::run(app, &REGISTRY, def, date, params, |step, outcome| {
        println!("  {}", step_line(step, outcome));
    })
    .await?;
    match report.steps.iter().find(|(_, o)| {
        matches!(o, StepOutcome::Ran { exit, .. } if !matches!(exit, Exit::Success | Exit::CompletedWithErrors))
    }) {
        Some((step, _)) => println!(
            "chain {} stopped at {} (exit {}); fix the cause, then run the same command again: \
             it continues from {}",
            def.name,
            step.id,
            report.exit.code(),
            step.id
        ),
        None if report.exit == Exit::CompletedWithErrors => println!(
            "chain {} completed; some items failed and were recorded (exit 4)",
            def.name
        ),
        None => println!("chain {} completed", def.name),
    }
    Ok(report.exit)
}

/// `DC-01-001    FAILED (run 17, exit 1)` and the like.
fn step_line(step: &JobDef, outcome: &StepOutcome) -> String {
    let what = match outcome {
        StepOutcome::AlreadyCompleted { run_id } => {
            format!("already COMPLETED (run {run_id}): skipped")
        }
        StepOutcome::NotReached => "not reached".to_string(),
        StepOutcome::Ran { run_id, exit } => {
            let status = match exit {
                Exit::Success => "COMPLETED",
                Exit::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
                Exit::AlreadyRunning => "SKIPPED (lock busy)",
                Exit::Interrupted | Exit::Terminated => "STOPPED",
                Exit::Failure | Exit::Usage => "FAILED",
            };
            match run_id {
                Some(id) => format!("{status} (run {id}, exit {})", exit.code()),
                None => format!("{status} (exit {})", exit.code()),
            }
        }
    };
    format!("{:<12} {what}", step.id)
}
