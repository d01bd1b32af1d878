//! Runs one job: lock, history, stale-run recovery, signals, outcome.
//!
//! The sequence, written once for every job:
//! 1. take the advisory lock of (job, business date) — or record `SKIPPED`, exit 3;
//! 2. mark runs of this job left `STARTED` by a dead process as `FAILED`;
//! 3. insert the `STARTED` row and enter a span carrying job id and run id;
//! 4. run the job; SIGINT/SIGTERM cancel it at its next stop point, and after
//!    `runtime.stop_grace_secs` it is abandoned;
//! 5. record the outcome, free the lock, log one summary line.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::exit::Exit;
use super::history::{self, Finish, NewRun, RunStatus, Runner};
use super::job::{JobContext, JobStopped};
use super::lock::LockConnection;
use super::registry::{DefaultDate, JobDef};
use crate::context::AppContext;
use crate::time;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub def: &'static JobDef,
    pub date: Option<NaiveDate>,
    pub dry_run: bool,
    /// `--full` (only jobs that offer it: LMS-01-008).
    pub full: bool,
    /// Recorded in the history row's `params` as given (profile, config file).
    pub params: serde_json::Value,
}

/// The business date a run works on: `--date`, or the job's default.
pub fn business_date(def: &JobDef, date: Option<NaiveDate>) -> NaiveDate {
    date.unwrap_or_else(|| {
        let today = time::today_seoul();
        match def.default_date {
            DefaultDate::Today => today,
            DefaultDate::Yesterday => today.pred_opt().expect("date in range"),
        }
    })
}

/// What ended the run, as the history and the exit code see it.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: Option<i64>,
    pub exit: Exit,
}

/// Runs `request` to the end and returns how it ended. Errors before the run
/// exists (database down, tables missing) come back as `Err`.
pub async fn run(app: AppContext, request: RunRequest) -> anyhow::Result<RunOutcome> {
    let def = request.def;
    let Some(job) = def.job else {
        return Err(super::SetupError::NotImplemented(def.id).into());
    };
    let date = business_date(def, request.date);
    ensure_schema(&app.pg).await?;

    let runner = Runner::current();
    let new_run = NewRun {
        job_id: def.id,
        business_date: date,
        params: request.params.clone(),
        dry_run: request.dry_run,
        runner: &runner,
    };

    let mut lock = LockConnection::open(&app.pg).await?;
    if !lock.try_lock(def.id, date).await? {
        let holder = history::open_runs(&app.pg, def.id)
            .await?
            .into_iter()
            .filter(|r| r.business_date == date)
            .map(|r| format!("run {} on {} pid {}", r.run_id, r.host, r.pid))
            .next()
            .unwrap_or_else(|| "another process".into());
        let reason = format!("{} for {date} is already running ({holder})", def.id);
        let run_id = history::insert_skipped(
            &app.pg,
            &new_run,
            &reason,
            Exit::AlreadyRunning.code().into(),
        )
        .await?;
        tracing::warn!(job_id = def.id, run_id, business_date = %date, status = "SKIPPED", "{reason}");
        lock.close().await;
        return Ok(RunOutcome {
            run_id: Some(run_id),
            exit: Exit::AlreadyRunning,
        });
    }

    reap_abandoned_runs(&app, &mut lock, def.id, date).await?;
    let run_id = history::insert_started(&app.pg, &new_run).await?;
    let span = tracing::info_span!("run", job_id = def.id, run_id, business_date = %date, dry_run = request.dry_run);

    let outcome = async {
        tracing::info!(job = def.name_en, "run started");
        let cancel = CancellationToken::new();
        let signal = Arc::new(AtomicI32::new(0));
        let listener = tokio::spawn(listen_for_stop(cancel.clone(), signal.clone()));

        let mut ctx = JobContext::new(def, run_id, date, request.dry_run, app.clone(), cancel.clone());
        ctx.full = request.full;
        let started = Instant::now();
        let grace = Duration::from_secs(app.settings.runtime.stop_grace_secs);
        let result = tokio::select! {
            result = job.run(&ctx) => Some(result),
            _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => None,
        };
        listener.abort();

        let stop_exit = match signal.load(Ordering::SeqCst) {
            2 => Exit::Interrupted,
            _ => Exit::Terminated,
        };
        let counts = ctx.counts.snapshot();
        let (status, exit, error) = match result {
            Some(Ok(())) if counts.failed == 0 => (RunStatus::Completed, Exit::Success, None),
            Some(Ok(())) => (
                RunStatus::CompletedWithErrors,
                Exit::CompletedWithErrors,
                Some(format!("{} item(s) failed and were recorded", counts.failed)),
            ),
            Some(Err(e)) if e.is::<JobStopped>() || (cancel.is_cancelled() && is_stop_related(&e)) => {
                (RunStatus::Stopped, stop_exit, Some(format!("{e:#}")))
            }
            Some(Err(e)) => (RunStatus::Failed, Exit::Failure, Some(format!("{e:#}"))),
            None => (
                RunStatus::Stopped,
                stop_exit,
                Some(format!("did not reach a stop point within {}s of the stop request; abandoned", grace.as_secs())),
            ),
        };
        if matches!(status, RunStatus::Completed | RunStatus::CompletedWithErrors) {
            if let Err(e) = ctx.checkpoints().clear().await {
                tracing::warn!(error = %format!("{e:#}"), "failed to clear the checkpoint");
            }
        }
        let finish = Finish {
            status,
            counts,
            exit_code: exit.code().into(),
            error: error.as_deref(),
            details: ctx.details(),
        };
        let recorded = history::finish(&app.pg, run_id, &finish).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let summary = format!(
            "run finished: {} read={} written={} skipped={} failed={} in {duration_ms} ms",
            status.as_str(),
            counts.read,
            counts.written,
            counts.skipped,
            counts.failed
        );
        match (&error, status) {
            (Some(error), RunStatus::Failed) => tracing::error!(
                status = status.as_str(), read = counts.read, written = counts.written, skipped = counts.skipped,
                failed = counts.failed, duration_ms, exit_code = exit.code(), error = %error, "{summary}"),
            (Some(error), _) => tracing::warn!(
                status = status.as_str(), read = counts.read, written = counts.written, skipped = counts.skipped,
                failed = counts.failed, duration_ms, exit_code = exit.code(), error = %error, "{summary}"),
            (None, _) => tracing::info!(
                status = status.as_str(), read = counts.read, written = counts.written, skipped = counts.skipped,
                failed = counts.failed, duration_ms, exit_code = exit.code(), details = %ctx.details(), "{summary}"),
        }
        if let Err(e) = recorded {
            tracing::error!(error = %e, "failed to record the run's outcome in batch_job_run");
            return Exit::Failure;
        }
        exit
    }
    .instrument(span)
    .await;

    let _ = lock.unlock(def.id, date).await;
    lock.close().await;
    Ok(RunOutcome {
        run_id: Some(run_id),
        exit: outcome,
    })
}

/// A job interrupted mid-query may surface the cancellation as an ordinary
/// error (a dropped connection, a closed channel); once a stop was requested
/// such errors count as the stop, not as a failure.
fn is_stop_related(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| cause.is::<JobStopped>() || cause.is::<sqlx::Error>())
}

/// Waits for SIGINT or SIGTERM, remembers which (2 or 15) and cancels the run.
async fn listen_for_stop(cancel: CancellationToken, signal: Arc<AtomicI32>) {
    use tokio::signal::unix::{signal as unix_signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        unix_signal(SignalKind::terminate()),
        unix_signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("could not install signal handlers; SIGTERM will kill the run abruptly");
        return;
    };
    let which = tokio::select! {
        _ = term.recv() => 15,
        _ = int.recv() => 2,
    };
    signal.store(which, Ordering::SeqCst);
    tracing::warn!(
        signal = which,
        "stop requested; stopping after the current chunk"
    );
    cancel.cancel();
}

/// Marks runs of `job_id` that are still `STARTED` but whose lock is free —
/// their process died — as `FAILED`, so history never shows a phantom run.
async fn reap_abandoned_runs(
    app: &AppContext,
    lock: &mut LockConnection,
    job_id: &str,
    our_date: NaiveDate,
) -> anyhow::Result<()> {
    for open in history::open_runs(&app.pg, job_id).await? {
        // We hold our own date's lock, so a STARTED run of that date is dead;
        // for other dates, a lock we can take means nobody holds it.
        let dead = open.business_date == our_date || {
            let free = lock.try_lock(job_id, open.business_date).await?;
            if free {
                lock.unlock(job_id, open.business_date).await?;
            }
            free
        };
        if dead {
            let reason = format!(
                "process ended without recording an outcome (host {}, pid {}); found by a later start",
                open.host, open.pid
            );
            history::mark_abandoned(&app.pg, open.run_id, &reason).await?;
            tracing::warn!(job_id, abandoned_run_id = open.run_id, business_date = %open.business_date, "{reason}");
        }
    }
    Ok(())
}

/// Fails early, with the fix, when `migrate` has not been run.
async fn ensure_schema(pg: &sqlx::PgPool) -> anyhow::Result<()> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass('batch_job_run') IS NOT NULL")
        .fetch_one(pg)
        .await?;
    if !present {
        return Err(crate::runtime::SetupError::NotMigrated.into());
    }
    Ok(())
}
