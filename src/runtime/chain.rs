//! Chain runs: the jobs of a [`ChainDef`] run one after the other for one
//! business date, each through the ordinary runner (its own lock, history
//! row, checkpoint and exit code). The leading steps already `COMPLETED` for
//! the date are not run again, so rerunning a chain after a failure finishes
//! the night from the step that broke; from the first step that runs, every
//! later step runs too (its input may have changed: DC-01-002 resends what
//! the DC-01-001 just rerun could not deliver).

use chrono::NaiveDate;
use sqlx::PgPool;

use super::exit::Exit;
use super::registry::{ChainDef, JobDef, Registry};
use super::runner::{self, RunRequest};
use crate::context::AppContext;

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// A run of the step already completed for the date: not run again.
    AlreadyCompleted { run_id: i64 },
    /// The step ran (or was recorded `SKIPPED` behind a busy lock).
    Ran { run_id: Option<i64>, exit: Exit },
    /// An earlier step stopped the chain.
    NotReached,
}

/// How a chain run went, step by step.
#[derive(Debug, Clone)]
pub struct ChainReport {
    pub date: NaiveDate,
    pub steps: Vec<(&'static JobDef, StepOutcome)>,
    /// 0 when every step completed or had completed; 4 when one completed
    /// with recorded item failures (the chain goes on: the next steps exist to
    /// handle them, DC-01-002 resending what DC-01-001 could not deliver);
    /// else the exit of the step that stopped the chain.
    pub exit: Exit,
}

/// The last completed, non-dry run of `job_id` for `date`, if any: an
/// unpartitioned run, or — when every partition `0/N … N-1/N` of one `N`
/// has a `COMPLETED` run — the last of those partitions' runs.
pub async fn completed_run(
    pg: &PgPool,
    job_id: &str,
    date: NaiveDate,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "WITH done AS (
             SELECT run_id, params->>'partition' AS part FROM batch_job_run
              WHERE job_id = $1 AND business_date = $2 AND status = 'COMPLETED' AND NOT dry_run
         ), parts AS (
             SELECT split_part(part, '/', 2)::int AS n,
                    count(DISTINCT split_part(part, '/', 1)) AS k, max(run_id) AS last
               FROM done WHERE part IS NOT NULL GROUP BY 1
         )
         SELECT greatest((SELECT max(run_id) FROM done WHERE part IS NULL),
                         (SELECT max(last) FROM parts WHERE k = n))",
    )
    .bind(job_id)
    .bind(date)
    .fetch_one(pg)
    .await
}

/// What each step would do now, without running anything (`chain --plan`):
/// the completed run it would skip at, or `None` where it would run.
pub async fn plan(
    app: &AppContext,
    chain: &'static ChainDef,
    date: NaiveDate,
) -> anyhow::Result<Vec<(&'static JobDef, Option<i64>)>> {
    runner::ensure_schema(&app.pg).await?;
    let mut steps = Vec::with_capacity(chain.steps.len());
    let mut resumed = false;
    for &def in chain.steps {
        let done = if resumed {
            None
        } else {
            completed_run(&app.pg, def.id, date).await?
        };
        resumed |= done.is_none();
        steps.push((def, done));
    }
    Ok(steps)
}

/// Runs the chain's steps in order for `date` (each step's history row
/// records `params` plus the chain's name), calling `on_step` as each step
/// is decided: skips the leading steps completed for `date`, runs the rest,
/// and stops at the first step that neither completed nor completed with
/// recorded item failures.
pub async fn run(
    app: &AppContext,
    registry: &Registry,
    chain: &'static ChainDef,
    date: NaiveDate,
    params: serde_json::Value,
    mut on_step: impl FnMut(&JobDef, &StepOutcome),
) -> anyhow::Result<ChainReport> {
    runner::ensure_schema(&app.pg).await?;
    let mut report = ChainReport {
        date,
        steps: Vec::with_capacity(chain.steps.len()),
        exit: Exit::Success,
    };
    let mut stopped = false;
    let mut resumed = false;
    for &def in chain.steps {
        let done = if resumed || stopped {
            None
        } else {
            completed_run(&app.pg, def.id, date).await?
        };
        let outcome = if stopped {
            StepOutcome::NotReached
        } else if let Some(run_id) = done {
            StepOutcome::AlreadyCompleted { run_id }
        } else {
            resumed = true;
            let mut step_params = params.clone();
            if let Some(map) = step_params.as_object_mut() {
                map.insert("chain".into(), chain.name.into());
            }
            let name = def.cli_name();
            // The step's own options at their defaults, as a bare
            // `aidt-batch <id>` would parse them.
            let args = (def.args)(clap::Command::new(name.clone()))
                .try_get_matches_from([name.as_str()])
                .map_err(|e| {
                    anyhow::anyhow!("{}: its options' defaults do not parse: {e}", def.id)
                })?;
            let request = RunRequest {
                date: Some(date),
                params: step_params,
                args,
                ..RunRequest::new(registry, def)
            };
            let ran = runner::run(app.clone(), request).await?;
            match ran.exit {
                Exit::Success => {}
                Exit::CompletedWithErrors => report.exit = Exit::CompletedWithErrors,
                other => {
                    report.exit = other;
                    stopped = true;
                }
            }
            StepOutcome::Ran {
                run_id: ran.run_id,
                exit: ran.exit,
            }
        };
        on_step(def, &outcome);
        report.steps.push((def, outcome));
    }
    Ok(report)
}
