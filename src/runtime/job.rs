//! The trait every job implements and the context a run hands to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoints;
use super::partition::Partition;
use super::progress::Progress;
use super::registry::JobDef;
use super::timeouts::Timeouts;
use crate::config::Settings;
use crate::context::AppContext;
use crate::time;

/// A batch job. `run` gathers what it needs from the context and calls plain
/// functions that tests can call directly.
///
/// A job records its figures in `ctx.counts`, calls [`JobContext::stop_point`]
/// between chunks so that SIGINT/SIGTERM stop it cleanly, and returns `Err`
/// only when the run as a whole failed: an item that fails is counted in
/// `ctx.counts.failed` (and recorded by the job), which ends the run with
/// `COMPLETED_WITH_ERRORS` and exit code 4.
#[async_trait::async_trait]
pub trait Job: Send + Sync {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()>;
}

/// Returned (inside `anyhow::Error`) by [`JobContext::stop_point`] when a stop
/// was requested; the runner records the run as `STOPPED` (or `FAILED`
/// when the stop came from a lost lock).
#[derive(Debug, thiserror::Error)]
#[error("stopped on request before finishing")]
pub struct JobStopped;

/// Read / written / skipped / failed item counts of a run.
#[derive(Debug, Default)]
pub struct Counts {
    read: AtomicU64,
    written: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`Counts`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountsSnapshot {
    pub read: u64,
    pub written: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_failed(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> CountsSnapshot {
        CountsSnapshot {
            read: self.read.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What the runner tells a job about its run, besides the job's options.
#[derive(Debug, Clone, Copy)]
pub struct RunScope {
    pub run_id: i64,
    pub business_date: NaiveDate,
    /// Whether `--date` named the business date (else it is the job's default).
    pub date_given: bool,
    pub partition: Option<Partition>,
    pub dry_run: bool,
    /// The run's limits: already on every connection of `app.pg`; the job
    /// puts [`JobContext::mongo_max_time`] on its MongoDB reads.
    pub timeouts: Timeouts,
}

/// Everything one run of one job may use.
pub struct JobContext {
    pub def: &'static JobDef,
    pub run_id: i64,
    pub business_date: NaiveDate,
    /// `--partition I/N`: the run does the students of this partition only
    /// (jobs with [`JobDef::partitioned`]); `None`: all of them.
    pub partition: Option<Partition>,
    /// The job reads and reports; it writes no business data and sends nothing.
    pub dry_run: bool,
    pub app: AppContext,
    /// The job's own command-line options ([`JobDef::args`]), parsed.
    pub args: clap::ArgMatches,
    pub counts: Counts,
    /// The progress bar at a terminal: a long job sets its total once.
    pub progress: Progress,
    details: Mutex<serde_json::Map<String, serde_json::Value>>,
    checkpoints: Checkpoints,
    cancel: CancellationToken,
    date_given: bool,
    timeouts: Timeouts,
    now: DateTime<Utc>,
}

impl JobContext {
    /// The context of a run that holds its lock: its "now" is taken here, so
    /// a run that waited for its lock judges "now" as of the moment it got it.
    pub fn new(
        def: &'static JobDef,
        scope: RunScope,
        app: AppContext,
        args: clap::ArgMatches,
        cancel: CancellationToken,
    ) -> Self {
        let checkpoints = Checkpoints::new(
            app.pg.clone(),
            def.id,
            scope.business_date,
            scope.partition,
            scope.run_id,
        );
        Self {
            def,
            run_id: scope.run_id,
            business_date: scope.business_date,
            partition: scope.partition,
            dry_run: scope.dry_run,
            app,
            args,
            counts: Counts::default(),
            progress: Progress::new(super::progress::should_draw_here()),
            details: Mutex::new(serde_json::Map::new()),
            checkpoints,
            cancel,
            date_given: scope.date_given,
            timeouts: scope.timeouts,
            now: Utc::now(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.app.settings
    }

    /// Whether the job's own flag `id` ([`JobDef::args`]) was given; false
    /// when the job has no such flag.
    pub fn flag(&self, id: &str) -> bool {
        matches!(self.args.try_get_one::<bool>(id), Ok(Some(true)))
    }

    /// The job's own section `[jobs.<job id with _>]`, as the job's type
    /// (checked when the configuration was loaded; defaults when absent).
    pub fn own_settings<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        let name = self.def.config_name();
        self.app
            .settings
            .jobs
            .own_section(&name)
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration section [jobs.{name}]: {e}"))
    }

    /// Whether the student with this user id is one of this run's (always,
    /// when the run is not partitioned).
    pub fn owns_user(&self, user_id: &str) -> bool {
        self.partition.is_none_or(|p| p.contains(user_id))
    }

    /// The SQL condition [`Self::owns_user`] is for rows whose user id as
    /// text is `user_id_text` (`TRUE` when the run is not partitioned; see
    /// [`super::partition::sql_condition`]).
    pub fn owns_user_sql(&self, user_id_text: &str) -> String {
        super::partition::sql_condition(self.partition, user_id_text)
    }

    pub fn pg(&self) -> &sqlx::PgPool {
        &self.app.pg
    }

    /// The run's "now": the moment it held its lock.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The instant a state-changing job compares against: see [`reference_time`].
    pub fn reference_time(&self) -> DateTime<Utc> {
        reference_time(self.business_date, self.date_given, self.now)
    }

    /// `maxTimeMS` for every MongoDB read of the run (zero: no limit).
    pub fn mongo_max_time(&self) -> Duration {
        self.timeouts.mongo()
    }

    /// The run's limits (see [`Timeouts`]).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Records a job-specific figure, stored in the run's history `details`.
    pub fn set_detail(&self, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.details
            .lock()
            .expect("details lock")
            .insert(key.to_string(), value);
    }

    pub fn details(&self) -> serde_json::Value {
        serde_json::Value::Object(self.details.lock().expect("details lock").clone())
    }

    /// Whether the run was asked to stop: SIGINT/SIGTERM, or its lock was lost.
    pub fn stop_requested(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Call between chunks: `Err(JobStopped)` once a stop was requested, so a
    /// job written with `?` stops at the next chunk boundary.
    pub fn stop_point(&self) -> Result<(), JobStopped> {
        if self.stop_requested() {
            Err(JobStopped)
        } else {
            Ok(())
        }
    }

    /// Sleeps for `pause` unless a stop is requested first.
    pub async fn pause(&self, pause: Duration) {
        if pause.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    /// The checkpoint a previous unfinished run of this job and date saved.
    pub async fn load_checkpoint<T: DeserializeOwned>(&self) -> anyhow::Result<Option<T>> {
        self.checkpoints.load().await
    }

    /// Saves where the job is, together with its counts so far, so that the
    /// history of a run that is killed shows how far it got.
    pub async fn save_checkpoint<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        self.checkpoints.save(value, self.counts.snapshot()).await
    }

    pub(crate) fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }
}

/// Shared handle so a spawned task can hold the context.
pub type SharedJobContext = Arc<JobContext>;

/// The instant a state-changing job compares against, for a run whose "now"
/// is `now`. A run on its default date: `now`, even when it waited for its
/// lock past midnight (the date it was started for is then yesterday). A
/// `--date` of today (or later): `now` too; of a past day: the end of that
/// day, so `--date` replays a job "as of" that day.
pub fn reference_time(
    business_date: NaiveDate,
    date_given: bool,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    if !date_given || business_date >= time::today_seoul_at(now) {
        now
    } else {
        time::start_of_day_seoul(business_date.succ_opt().expect("date in range"))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn kst(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        chrono::FixedOffset::east_opt(9 * 3600)
            .unwrap()
            .with_ymd_and_hms(2026, 3, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_run_on_its_default_date_that_got_its_lock_after_midnight_judges_as_of_then() {
        // Started at 23:55 on the 5th for the 5th; got its lock at 00:05 on the 6th.
        let day = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        let got_lock = kst(6, 0, 5);
        assert_eq!(reference_time(day, false, got_lock), got_lock);
    }

    #[test]
    fn a_past_date_given_replays_the_job_as_of_the_end_of_that_day() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        assert_eq!(reference_time(day, true, kst(9, 10, 0)), kst(6, 0, 0));
        let today = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        assert_eq!(reference_time(today, true, kst(9, 10, 0)), kst(9, 10, 0));
    }
}
