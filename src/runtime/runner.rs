//! Runs one job: lock, history, stale-run recovery, signals, outcome.
//!
//! The sequence, written once for every job:
//! 1. take the job's advisory lock ([`super::registry::Lock`]: per job, per job and date, or
//!    per group of jobs sharing data), waiting up to `lock_wait_secs` for a
//!    busy one — then record `SKIPPED`, exit 3;
//! 2. mark runs left `STARTED` by a dead process under the same lock as `FAILED`;
//! 3. insert the `STARTED` row; every line logged from here on (the job's,
//!    its spawned tasks', the signal listener's) is inside a span carrying
//!    job id and run id;
//! 4. run the job on a pool of its own carrying its timeouts
//!    ([`super::timeouts`]), its "now" taken once the lock is held.
//!    SIGINT/SIGTERM cancel it at its next stop point, and after
//!    `runtime.stop_grace_secs` it is abandoned. Every `runtime.lock_probe_secs`
//!    the lock's own session is asked whether it still holds the lock; a lost
//!    lock stops the job the same way and the run is `FAILED`;
//! 5. record the outcome (only over a run still `STARTED`), free the lock,
//!    log one summary line.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::exit::Exit;
use super::history::{self, Finish, NewRun, Recorded, RunStatus, Runner};
use super::job::{CountsSnapshot, JobContext, JobStopped, RunScope};
use super::lock::LockConnection;
use super::metrics::{self, RunMetrics};
use super::partition::{Partition, MAX_PARTITIONS};
use super::progress;
use super::registry::{self, DefaultDate, JobDef, Registry};
use super::timeouts::{self, Timeouts};
use crate::context::AppContext;
use crate::time;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub def: &'static JobDef,
    /// Every job taking the same lock as `def` (itself included): whose
    /// `STARTED` runs a start may name as the holder or find dead.
    pub lock_peers: Vec<&'static JobDef>,
    pub date: Option<NaiveDate>,
    /// `--partition I/N` (jobs with [`JobDef::partitioned`] only): recorded
    /// in the history row's `params.partition`.
    pub partition: Option<Partition>,
    pub dry_run: bool,
    /// Recorded in the history row's `params` as given (profile, config file).
    pub params: serde_json::Value,
    /// The job's own command-line options, parsed.
    pub args: clap::ArgMatches,
}

impl RunRequest {
    /// A run of `def` on its default date, for real, without options.
    pub fn new(registry: &Registry, def: &'static JobDef) -> Self {
        Self {
            def,
            lock_peers: registry.sharing_lock_with(def),
            date: None,
            partition: None,
            dry_run: false,
            params: serde_json::json!({}),
            args: clap::ArgMatches::default(),
        }
    }
}

/// The business date a run works on: `--date`, or the job's default.
pub fn business_date(def: &JobDef, date: Option<NaiveDate>) -> NaiveDate {
    date_or_default(def.default_date, date)
}

/// `date`, or the one `default` names today in Asia/Seoul.
pub fn date_or_default(default: DefaultDate, date: Option<NaiveDate>) -> NaiveDate {
    date.unwrap_or_else(|| {
        let today = time::today_seoul();
        match default {
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
    let (def, dry_run) = (request.def, request.dry_run);
    let request_partition = request.partition;
    let started = Instant::now();
    let result = run_from(app.clone(), request, started).await;
    if let (Err(e), false) = (&result, dry_run) {
        // No run row (tables missing, database gone, a bad lock_wait_secs):
        // the metrics still say the job failed, with the command's exit code.
        let ended = Ended {
            status: RunStatus::Failed,
            exit: super::exit::exit_for_error(e),
            counts: CountsSnapshot::default(),
        };
        export_metrics(&app, def, request_partition, &ended, started)
            .instrument(tracing::info_span!("run", job_id = def.id))
            .await;
    }
    result
}

/// What a run is, besides the request: fixed before the lock is taken.
struct Plan {
    job: &'static dyn super::Job,
    date: NaiveDate,
    wait: Duration,
    timeouts: Timeouts,
    /// `(key, exclusive)`, in the order they are taken.
    locks: Vec<(String, bool)>,
    /// The key named in messages: the one only this run (or this partition) holds.
    key: String,
    started: Instant,
}

async fn run_from(
    app: AppContext,
    request: RunRequest,
    started: Instant,
) -> anyhow::Result<RunOutcome> {
    let def = request.def;
    let Some(job) = def.job else {
        return Err(super::SetupError::NotImplemented(def.id).into());
    };
    let date = business_date(def, request.date);
    ensure_schema(&app.pg).await?;
    let wait = Duration::from_secs(
        app.settings
            .jobs
            .lock_wait_secs(&def.config_name())?
            .unwrap_or(def.lock_wait_secs),
    );
    let locks = def.run_locks(date, request.partition);
    let plan = Plan {
        job,
        date,
        wait,
        timeouts: Timeouts::resolve(def, &app.settings.jobs)?,
        key: locks.last().expect("a run takes a lock").0.clone(),
        locks,
        started,
    };

    // The span exists before the run row, so the lock wait's lines carry the
    // job id; the run id is filled in as soon as there is one.
    let span = tracing::info_span!(
        "run",
        job_id = def.id,
        run_id = tracing::field::Empty,
        business_date = %date,
        dry_run = request.dry_run
    );
    let stop = Stop {
        cancel: CancellationToken::new(),
        signal: Arc::new(AtomicI32::new(0)),
    };
    let listener = tokio::spawn(
        listen_for_stop(stop.cancel.clone(), stop.signal.clone()).instrument(span.clone()),
    );
    let result = run_locked(app, request, plan, &stop, &span)
        .instrument(span.clone())
        .await;
    listener.abort();
    result
}

/// How a run is asked to stop: the token a stop cancels, and the signal
/// (2 or 15) that did, if one did.
struct Stop {
    cancel: CancellationToken,
    signal: Arc<AtomicI32>,
}

/// Takes the lock (or records `SKIPPED`), then runs the job under it.
async fn run_locked(
    app: AppContext,
    request: RunRequest,
    plan: Plan,
    stop: &Stop,
    span: &tracing::Span,
) -> anyhow::Result<RunOutcome> {
    let def = request.def;
    let runner = Runner::current();
    let mut params = request.params.clone();
    if let (Some(p), Some(map)) = (request.partition, params.as_object_mut()) {
        map.insert("partition".into(), p.label().into());
    }
    let new_run = NewRun {
        job_id: def.id,
        business_date: plan.date,
        params,
        dry_run: request.dry_run,
        runner: &runner,
    };
    let peer_ids: Vec<&str> = request.lock_peers.iter().map(|p| p.id).collect();
    // The job's own pool, carrying its limits; it connects on first use.
    let job_app = app.with_pg_limits(plan.timeouts.statement(), plan.timeouts.lock())?;

    let mut lock = LockConnection::open(&app.pg).await?;
    if !acquire(
        &app,
        &mut lock,
        &plan.locks,
        &peer_ids,
        plan.wait,
        &stop.cancel,
    )
    .await?
    {
        let outcome = record_skipped(&app, &request, &plan, &new_run, stop, span).await;
        lock.close().await;
        return outcome;
    }

    reap_abandoned_runs(&app, &mut lock, &request.lock_peers, &plan.locks).await?;
    let run_id = history::insert_started(&app.pg, &new_run).await?;
    span.record("run_id", run_id);
    tracing::info!(job = def.name_en, lock = %plan.key, partition = request.partition.map(|p| p.label()), "run started");

    let scope = RunScope {
        run_id,
        business_date: plan.date,
        date_given: request.date.is_some(),
        partition: request.partition,
        dry_run: request.dry_run,
        timeouts: plan.timeouts,
    };
    let ctx = JobContext::new(
        def,
        scope,
        job_app,
        request.args.clone(),
        stop.cancel.clone(),
    );
    let job_started = Instant::now();
    let execution = execute(&app, &ctx, plan.job, &mut lock, &plan, &stop.cancel).await;
    let ended = record_outcome(&app, &ctx, &plan, execution, stop, job_started).await;
    close_pool(&ctx.app.pg).await;

    for (key, exclusive) in plan.locks.iter().rev() {
        let _ = lock.unlock_as(key, *exclusive).await;
    }
    lock.close().await;
    // Dry runs change nothing: their counts would hide the last real run.
    if !request.dry_run {
        export_metrics(&app, def, request.partition, &ended, plan.started).await;
    }
    Ok(RunOutcome {
        run_id: Some(run_id),
        exit: ended.exit,
    })
}

/// Records a run that did not get its lock: `SKIPPED`, with the holder, or
/// stopped by a signal while it waited.
async fn record_skipped(
    app: &AppContext,
    request: &RunRequest,
    plan: &Plan,
    new_run: &NewRun<'_>,
    stop: &Stop,
    span: &tracing::Span,
) -> anyhow::Result<RunOutcome> {
    let (def, date) = (request.def, plan.date);
    let holder = describe_holder(app, &request.lock_peers, &plan.locks).await?;
    let (reason, exit) = if stop.cancel.is_cancelled() {
        (
            format!("{} for {date} not started: stopped by a signal while waiting for {holder} to finish", def.id),
            stop_exit(&stop.signal),
        )
    } else {
        (
            format!(
                "{} for {date} not started: {holder} is already running (lock {}, waited {} s)",
                def.id,
                plan.key,
                plan.wait.as_secs()
            ),
            Exit::AlreadyRunning,
        )
    };
    let run_id = history::insert_skipped(&app.pg, new_run, &reason, exit.code().into()).await?;
    span.record("run_id", run_id);
    tracing::warn!(status = "SKIPPED", exit_code = exit.code(), "{reason}");
    if !request.dry_run {
        let ended = Ended {
            status: RunStatus::Skipped,
            exit,
            counts: CountsSnapshot::default(),
        };
        export_metrics(app, def, request.partition, &ended, plan.started).await;
    }
    Ok(RunOutcome {
        run_id: Some(run_id),
        exit,
    })
}

/// How the job's run went: its result (`None`: abandoned after a stop
/// request), and why its lock was lost, if it was.
struct Execution {
    result: Option<anyhow::Result<()>>,
    lost_lock: Option<String>,
}

/// Runs the job while the lock is checked every `runtime.lock_probe_secs`
/// on its own session; a stop request (a signal, or the lock found lost)
/// gives the job `runtime.stop_grace_secs` to reach a stop point. The lock
/// is checked once more when the job has ended.
async fn execute(
    app: &AppContext,
    ctx: &JobContext,
    job: &'static dyn super::Job,
    lock: &mut LockConnection,
    plan: &Plan,
    cancel: &CancellationToken,
) -> Execution {
    let runtime = &app.settings.runtime;
    let grace = Duration::from_secs(runtime.stop_grace_secs);
    let mut watch = LockWatch {
        lock,
        key: &plan.key,
        keys: plan.locks.iter().map(|(k, _)| k.clone()).collect(),
        timeout: Duration::from_secs(runtime.lock_probe_timeout_secs),
    };
    let every = Duration::from_secs(runtime.lock_probe_secs);
    let mut lost_lock = None;
    let result = {
        let watching = async {
            let why = watch.until_lost(every).await;
            tracing::error!(lock = %plan.key, "{why}; stopping the job at its next stop point");
            lost_lock = Some(why);
            cancel.cancel();
            std::future::pending::<()>().await
        };
        tokio::select! {
            result = job.run(ctx) => Some(result),
            _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => None,
            _ = progress::draw(ctx) => unreachable!("the progress bar never ends by itself"),
            _ = watching => unreachable!("the lock watch never ends by itself"),
        }
    };
    progress::finish();
    if lost_lock.is_none() {
        lost_lock = watch.check().await;
    }
    Execution { result, lost_lock }
}

/// Checks that the run's lock session still holds the run's keys.
struct LockWatch<'a> {
    lock: &'a mut LockConnection,
    /// The key named in messages.
    key: &'a str,
    keys: Vec<String>,
    /// A check without an answer this long counts as a lost lock.
    timeout: Duration,
}

impl LockWatch<'_> {
    /// Checks every `every` until the lock is lost, and says why it is.
    async fn until_lost(&mut self, every: Duration) -> String {
        loop {
            tokio::time::sleep(every).await;
            if let Some(why) = self.check().await {
                return why;
            }
        }
    }

    /// Why the lock is lost, or `None` while the session holds every key.
    async fn check(&mut self) -> Option<String> {
        let why = match tokio::time::timeout(self.timeout, self.lock.holds(&self.keys)).await {
            Ok(Ok(true)) => return None,
            Ok(Ok(false)) => "its session no longer holds it".to_string(),
            Ok(Err(e)) => format!("its session failed: {e}"),
            Err(_) => format!(
                "its session did not answer within {} s (runtime.lock_probe_timeout_secs)",
                self.timeout.as_secs()
            ),
        };
        Some(format!("lost its lock {} ({why})", self.key))
    }
}

/// How a run ended, as recorded.
struct Ended {
    status: RunStatus,
    exit: Exit,
    counts: CountsSnapshot,
}

/// Records the run's outcome (over a run still `STARTED` only), clears the
/// checkpoint of a completed run and logs the summary line.
async fn record_outcome(
    app: &AppContext,
    ctx: &JobContext,
    plan: &Plan,
    execution: Execution,
    stop: &Stop,
    job_started: Instant,
) -> Ended {
    let counts = ctx.counts.snapshot();
    let grace = Duration::from_secs(app.settings.runtime.stop_grace_secs);
    let (status, exit, error) = verdict(ctx.def, &plan.timeouts, execution, counts, stop, grace);
    if matches!(
        status,
        RunStatus::Completed | RunStatus::CompletedWithErrors
    ) {
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
    let (status, exit) = match history::finish(&app.pg, ctx.run_id, &finish).await {
        Ok(Recorded::Yes) => (status, exit),
        Ok(Recorded::AlreadyEnded {
            status: found,
            error: found_error,
        }) => {
            tracing::error!(
                recorded_status = %found,
                recorded_error = found_error.as_deref().unwrap_or(""),
                outcome = status.as_str(),
                "run {} was already marked {found} by another process; it stays so and this outcome is not recorded",
                ctx.run_id
            );
            let found = RunStatus::parse(&found).unwrap_or(RunStatus::Failed);
            (found, Exit::Failure)
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to record the run's outcome in batch_job_run");
            (status, Exit::Failure)
        }
    };
    log_summary(ctx, status, exit, error.as_deref(), job_started);
    Ended {
        status,
        exit,
        counts,
    }
}

/// The status, exit code and error of a run that went as `execution` says.
fn verdict(
    def: &JobDef,
    limits: &Timeouts,
    execution: Execution,
    counts: CountsSnapshot,
    stop: &Stop,
    grace: Duration,
) -> (RunStatus, Exit, Option<String>) {
    let abandoned = || {
        format!(
            "did not reach a stop point within {}s of the stop request; abandoned",
            grace.as_secs()
        )
    };
    let stopped = |e: &anyhow::Error| {
        e.is::<JobStopped>() || (stop.cancel.is_cancelled() && is_stop_related(e))
    };
    if let Some(lost) = execution.lost_lock {
        let then = match &execution.result {
            Some(Ok(())) => {
                "the job had finished its work, part of it without the lock".to_string()
            }
            Some(Err(e)) if stopped(e) => "stopped at its next stop point".to_string(),
            Some(Err(e)) => format!("then failed: {e:#}"),
            None => abandoned(),
        };
        let error = format!(
            "{lost}; {then}; another run may have taken the lock meanwhile: rerun {} to finish",
            def.id
        );
        return (RunStatus::Failed, Exit::Failure, Some(error));
    }
    match execution.result {
        Some(Ok(())) if counts.failed == 0 => (RunStatus::Completed, Exit::Success, None),
        Some(Ok(())) => (
            RunStatus::CompletedWithErrors,
            Exit::CompletedWithErrors,
            Some(format!(
                "{} item(s) failed and were recorded",
                counts.failed
            )),
        ),
        Some(Err(e)) if stopped(&e) => (
            RunStatus::Stopped,
            stop_exit(&stop.signal),
            Some(format!("{e:#}")),
        ),
        Some(Err(e)) => {
            let error = match timeouts::explain(def, limits, &e) {
                Some(limit) => format!("{limit} — {e:#}"),
                None => format!("{e:#}"),
            };
            (RunStatus::Failed, Exit::Failure, Some(error))
        }
        None => (
            RunStatus::Stopped,
            stop_exit(&stop.signal),
            Some(abandoned()),
        ),
    }
}

/// The run's one summary line: an error for `FAILED`, a warning for any
/// other ending with an error, else info with the job's details.
fn log_summary(
    ctx: &JobContext,
    status: RunStatus,
    exit: Exit,
    error: Option<&str>,
    job_started: Instant,
) {
    let counts = ctx.counts.snapshot();
    let duration_ms = job_started.elapsed().as_millis() as u64;
    let summary = format!(
        "run finished: {} read={} written={} skipped={} failed={} in {duration_ms} ms",
        status.as_str(),
        counts.read,
        counts.written,
        counts.skipped,
        counts.failed
    );
    match (error, status) {
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
}

/// Closes the run's own pool; a connection a task abandoned after a stop
/// request still holds is left to the process's end.
async fn close_pool(pg: &sqlx::PgPool) {
    if tokio::time::timeout(Duration::from_secs(2), pg.close())
        .await
        .is_err()
    {
        tracing::debug!("the run's database pool did not close within 2 s");
    }
}

/// Writes the run's metrics per `[metrics]` (off unless configured).
async fn export_metrics(
    app: &AppContext,
    def: &JobDef,
    partition: Option<Partition>,
    ended: &Ended,
    started: Instant,
) {
    let run = RunMetrics {
        job_id: def.id,
        file_stem: metrics::file_stem(def, partition),
        partition,
        status: ended.status,
        exit: ended.exit,
        counts: ended.counts,
        duration: started.elapsed(),
        finished_at: chrono::Utc::now(),
    };
    metrics::export(&app.settings.metrics, Some(&app.pg), &run).await;
}

/// Which signal stopped the run: 130 for SIGINT, 143 for SIGTERM.
fn stop_exit(signal: &AtomicI32) -> Exit {
    match signal.load(Ordering::SeqCst) {
        2 => Exit::Interrupted,
        _ => Exit::Terminated,
    }
}

/// Takes every lock of `locks` (`(key, exclusive)`, in order), polling
/// once a second for up to `wait` while another run holds one; `false` when
/// one stayed busy or a stop was requested meanwhile. Never holds part of
/// them while waiting.
async fn acquire(
    app: &AppContext,
    lock: &mut LockConnection,
    locks: &[(String, bool)],
    peer_ids: &[&str],
    wait: Duration,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + wait;
    let mut announced = false;
    let key = &locks.last().expect("a run takes a lock").0;
    loop {
        if try_all(lock, locks).await? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline || cancel.is_cancelled() {
            return Ok(false);
        }
        if !announced {
            announced = true;
            let holders: Vec<String> = history::open_runs(&app.pg, peer_ids)
                .await?
                .into_iter()
                .map(|r| format!("{} run {}", r.job_id, r.run_id))
                .collect();
            tracing::info!(
                lock = key,
                holders = %holders.join(", "),
                wait_secs = wait.as_secs(),
                "lock busy; waiting for it"
            );
        }
        let pause = (deadline - now).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = cancel.cancelled() => {}
        }
    }
}

/// Takes all of `locks` or none. A partition also needs no partition of
/// another count to be running ([`registry::SHAPE_SEGMENT`]): it takes its
/// keys first and looks second, so of two partitions of different counts
/// starting at once at least one sees the other.
async fn try_all(lock: &mut LockConnection, locks: &[(String, bool)]) -> anyhow::Result<bool> {
    for (n, (key, exclusive)) in locks.iter().enumerate() {
        if !lock.try_lock_as(key, *exclusive).await? {
            release(lock, &locks[..n]).await?;
            return Ok(false);
        }
    }
    if let Some((prefix, count)) = registry::partition_shape(locks) {
        if lock.other_held(&prefix, MAX_PARTITIONS, count).await? {
            release(lock, locks).await?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Frees `taken`, last first.
async fn release(lock: &mut LockConnection, taken: &[(String, bool)]) -> anyhow::Result<()> {
    for (key, exclusive) in taken.iter().rev() {
        lock.unlock_as(key, *exclusive).await?;
    }
    Ok(())
}

/// Whether a run holding `theirs` keeps a run wanting `ours` out: some key
/// both take, exclusively on one side at least, or partitions of two
/// counts of one lock.
fn conflicts(ours: &[(String, bool)], theirs: &[(String, bool)]) -> bool {
    let shared_key = ours
        .iter()
        .any(|(k, x)| theirs.iter().any(|(k2, x2)| k == k2 && (*x || *x2)));
    let other_shape = matches!(
        (registry::partition_shape(ours), registry::partition_shape(theirs)),
        (Some((a, n)), Some((b, m))) if a == b && n != m
    );
    shared_key || other_shape
}

/// "DC-01-001 run 7 (partition 2/4) on host-a pid 1234" for the runs
/// holding what `locks` needs, as far as the history tells.
async fn describe_holder(
    app: &AppContext,
    peers: &[&'static JobDef],
    locks: &[(String, bool)],
) -> anyhow::Result<String> {
    let ids: Vec<&str> = peers.iter().map(|p| p.id).collect();
    let mut holders = Vec::new();
    for open in history::open_runs(&app.pg, &ids).await? {
        let Some(peer) = peers.iter().find(|p| p.id == open.job_id) else {
            continue;
        };
        if conflicts(locks, &peer.run_locks(open.business_date, open.partition())) {
            let partition = open
                .partition
                .as_deref()
                .map(|p| format!(" (partition {p})"))
                .unwrap_or_default();
            holders.push(format!(
                "{} run {}{partition} on {} pid {}",
                open.job_id, open.run_id, open.host, open.pid
            ));
        }
    }
    Ok(if holders.is_empty() {
        "another process".into()
    } else {
        holders.join(", ")
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

/// Marks runs of the lock's jobs that are still `STARTED` but whose lock is
/// free — their process died, or lost its lock — as `FAILED`, so history never shows a
/// phantom run. Called while holding `ours`.
async fn reap_abandoned_runs(
    app: &AppContext,
    lock: &mut LockConnection,
    peers: &[&'static JobDef],
    ours: &[(String, bool)],
) -> anyhow::Result<()> {
    let ids: Vec<&str> = peers.iter().map(|p| p.id).collect();
    for open in history::open_runs(&app.pg, &ids).await? {
        let Some(peer) = peers.iter().find(|p| p.id == open.job_id) else {
            continue;
        };
        // A STARTED run whose locks conflict with those we hold is dead (a
        // live one would hold them); otherwise (same job, other date or
        // other partition) it is dead if its exclusive key is free.
        let theirs = peer.run_locks(open.business_date, open.partition());
        let dead = conflicts(ours, &theirs) || {
            let (key, _) = theirs.last().expect("a run takes a lock");
            let free = lock.try_lock(key).await?;
            if free {
                lock.unlock(key).await?;
            }
            free
        };
        if dead {
            // Its lock was free: the process died, or (still alive) lost
            // the lock's session; then it stops by itself, and its row stays
            // FAILED ([`history::finish`] changes only a STARTED run).
            let reason = format!(
                "process ended without recording an outcome, or lost its lock (host {}, pid {}); \
                 found by a later start that got the lock",
                open.host, open.pid
            );
            history::mark_abandoned(&app.pg, open.run_id, &reason).await?;
            tracing::warn!(
                abandoned_job_id = open.job_id,
                abandoned_run_id = open.run_id,
                abandoned_business_date = %open.business_date,
                "{reason}"
            );
        }
    }
    Ok(())
}

/// Fails early, with the fix, when `migrate` has not been run.
pub(crate) async fn ensure_schema(pg: &sqlx::PgPool) -> anyhow::Result<()> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass('batch_job_run') IS NOT NULL")
        .fetch_one(pg)
        .await?;
    if !present {
        return Err(crate::runtime::SetupError::NotMigrated.into());
    }
    Ok(())
}
