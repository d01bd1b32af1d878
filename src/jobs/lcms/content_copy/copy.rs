//! LCMS-01-001 — copy the LCMS content and items into the LMS. Daily at 01:00.
//!
//! Source `tb_lcms_content` / `tb_lcms_item`, target `tb_lms_content` /
//! `tb_lms_item` (the same columns plus `sync_dt`). The LCMS is usually a
//! database of its own: `[jobs.lcms_copy] source_url` (a secret, never
//! printed; errors name the key) points at it; absent, the LMS database
//! (`database.url`) is the source and the copy is plain SQL inside it.
//!
//! Incremental by `mod_dt`: per source table the batch keeps a watermark
//! (`batch_lcms_watermark`: the highest `mod_dt` the last committed copy
//! read, capped at the source's clock). A run reads the rows with
//! `mod_dt >= watermark - overlap_secs` (3600): rows that share the
//! watermark's timestamp and rows committed late by a long LCMS transaction
//! with an older `mod_dt` are read again, and the upsert makes that
//! harmless. The first run (no watermark) and `--full` read everything. A
//! row later than the overlap *and* committed after the run that passed its
//! `mod_dt` (or a row deleted and restored with its old `mod_dt`) is only
//! caught by `--full`.
//!
//! Written: changed rows only (`IS DISTINCT FROM` over every column; an
//! unchanged row keeps its `sync_dt`), with `sync_dt = now()`. A row whose
//! source has `use_yn = 'N'` is copied as it is; a row that no longer exists
//! in the source gets `use_yn = 'N'` in the copy, never deleted (learning
//! results reference it). Finding those needs every source key, so each run
//! reads the source's keys in full (ids only).
//!
//! With a separate source the rows stream in bounded memory: `COPY (SELECT
//! …) TO STDOUT` on the source relayed in buffers of [`RELAY_BUFFER`] bytes
//! (at most [`RELAY_BUFFERS`] in flight) into `COPY … FROM STDIN` of a
//! temporary staging table on the LMS (no index, not WAL-logged), then one
//! set-based upsert per table. Both source reads (changed rows and keys) see
//! one REPEATABLE READ snapshot of the source; a full read stages every key
//! with the rows, so it reads no keys apart.
//!
//! A copy that has no row (the first copy, or one emptied since: then every
//! row is read, whatever the watermark) is filled directly: the relayed
//! rows go into `COPY tb_lms_… FROM STDIN` itself (from the LMS database, a
//! plain `INSERT … SELECT`), so each row is written once — nothing in the
//! copy to compare with or to mark unused. Same transaction, same
//! guarantees.
//!
//! Everything the run writes — both tables and the watermarks — commits in
//! one transaction: a kill at any point (mid-copy included) leaves the
//! previous copy and watermark, which the next run completes; readers of the
//! copy (LMS-01-003/010) see the old copy or the new one. A stop request
//! (SIGINT/SIGTERM) aborts the copy and rolls back.
//!
//! An empty or truncated source looks like a source whose rows were all
//! removed. A run that would take more than `[jobs.lcms_copy]
//! max_retire_share` (10%) of a table's rows in use out of use (gone from
//! the source, or `use_yn = 'N'` there), or all of them, is refused: it rolls
//! back (the copy and the watermarks stay as they were), fails (exit 1)
//! and names the figures and the key; `--allow-shrink` applies it. The rows
//! in use are counted only when a run retires some.
//!
//! Rerun: safe; a second run writes nothing. `--dry-run` does the whole copy
//! inside the transaction, reports what it would change and rolls back.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection};

use super::{
    configured_source_url, connect_source, copy_is_empty, copy_local, copy_remote,
    copy_remote_into_empty, source_clock, CopiedTable, ReadMode, Source, TableReport, CONTENT,
    ITEM,
};
use secrecy::SecretString;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::jobs::shared::shrink::{self, Shrink};
use crate::runtime::registry::{DefaultDate, JobDef, Schedule, ScheduledRun, System, Timeouts};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LCMS-01-001";

/// The configuration key of the separate LCMS database: errors name it.
pub const SOURCE_URL_KEY: &str = "jobs.lcms_copy.source_url";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lcms,
    name_ko: "콘텐츠, 문항 데이터 select 일배치",
    name_en: "Copy LCMS content and items (daily)",
    about: "Copies the LCMS content and items changed since the last copy (mod_dt watermark minus [jobs.lcms_copy] overlap_secs) into tb_lms_content / tb_lms_item, changed rows only; rows gone from the LCMS become use_yn = 'N', but a run retiring more than [jobs.lcms_copy] max_retire_share of the rows in use (or all of them) is refused unless --allow-shrink. The LCMS database is [jobs.lcms_copy] source_url, else the LMS database. One transaction: a killed run leaves the previous copy.",
    schedule: Schedule::Cron("0 1 * * *"),
    schedule_note: Some("the seed's line passes no job id; this one does"),
    also_scheduled: &[ScheduledRun {
        name: "full",
        cron: "30 2 * * 0",
        args: &["--full"],
        why: "weekly full read, Sunday 02:30: rows committed late with a mod_dt behind the watermark come back",
    }],
    default_date: DefaultDate::Today,
    args: copy_args,
    job: Some(&ContentCopy),
    timeouts: Timeouts {
        // A full copy streams each LCMS table through one COPY.
        statement_secs: 3600,
        ..Timeouts::DEFAULT
    },
    ..JobDef::DEFAULTS
};

pub struct ContentCopy;

/// `--full`: ignore the watermarks. (`--allow-shrink`: [`shrink`].)
const FULL: &str = "full";

fn copy_args(cmd: clap::Command) -> clap::Command {
    shrink::allow_shrink_arg(
        cmd.arg(
            clap::Arg::new(FULL)
                .long("full")
                .action(clap::ArgAction::SetTrue)
                .help("Read every LCMS row, not only those changed since the watermark"),
        ),
    )
}

/// LCMS-01-001: the copy of the LCMS content and items into the LMS. A
/// section of its own name, not `[jobs.lcms_01_001]`, because the key
/// `jobs.lcms_copy.source_url` is the one operators were given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LcmsCopySettings {
    /// The LCMS database, when it is not the LMS's (`database.url`): a URL
    /// with a password, so a secret, never printed. Absent or empty: the
    /// LMS database is the source.
    pub source_url: Option<SecretString>,
    /// Each incremental run re-reads rows whose `mod_dt` is up to this many
    /// seconds before the watermark, so rows committed late by a long LCMS
    /// transaction with an earlier `mod_dt` are not missed; the upsert makes
    /// the re-read rows harmless.
    pub overlap_secs: u64,
    /// A run that would take more than this share (0–1) of the copy's rows
    /// in use out of use, or all of them, is refused unless `--allow-shrink`:
    /// an empty or truncated LCMS source looks exactly like that.
    pub max_retire_share: f64,
}

impl Default for LcmsCopySettings {
    fn default() -> Self {
        Self {
            source_url: None,
            overlap_secs: 3600,
            max_retire_share: 0.10,
        }
    }
}

impl LcmsCopySettings {
    /// The checks beyond the types: `max_retire_share` is a fraction.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let share = self.max_retire_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(ConfigError::BadValue {
                key: MAX_RETIRE_SHARE_KEY.into(),
                reason: format!("must be a fraction between 0 and 1 (0.1 = 10%), not {share}"),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Job for ContentCopy {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        ctx.progress.show_counts();
        let settings = ctx.settings().jobs.lcms_copy.clone();
        let settings = &settings;
        let mut source = open_source(ctx, settings).await?;
        let mut tx = ctx
            .pg()
            .begin()
            .await
            .context("Failed to begin the LCMS copy")?;
        if matches!(source, Source::Local) {
            // One snapshot of the source tables for every read of the run.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .context("Failed to set the copy's isolation level")?;
        }
        let plan = Plan {
            marks: read_watermarks(&mut tx).await?,
            source_now: source_clock(&mut source, &mut tx).await?,
            overlap: chrono::Duration::try_seconds(settings.overlap_secs as i64)
                .unwrap_or(chrono::Duration::MAX),
            full: ctx.flag(FULL),
        };

        let mut reports = Vec::new();
        for table in [CONTENT, ITEM] {
            ctx.stop_point()?;
            let report = copy_table(ctx, &mut source, &mut tx, table, &plan).await?;
            reports.push((table, report));
        }
        ctx.stop_point()?;
        let shrinks = shrinks(&mut tx, &reports).await?;
        if !shrinks.is_empty() {
            ctx.set_detail("retired", &shrinks);
        }
        let guard = shrink::check(
            ID,
            MAX_RETIRE_SHARE_KEY,
            settings.max_retire_share,
            &shrinks,
            ctx.flag(shrink::ALLOW_SHRINK),
        );
        let applied = !ctx.dry_run && guard.is_ok();
        if applied {
            tx.commit()
                .await
                .context("Failed to commit the LCMS copy")?;
        } else {
            tx.rollback().await?;
        }
        close_source(source).await;
        report_run(ctx, settings, &reports, applied);
        guard?;
        Ok(())
    }
}

/// The configuration key of the share of the copy's rows in use a run may
/// retire without `--allow-shrink`.
pub const MAX_RETIRE_SHARE_KEY: &str = "jobs.lcms_copy.max_retire_share";

/// What every table's copy of a run reads by.
struct Plan {
    marks: Vec<(String, DateTime<Utc>)>,
    source_now: DateTime<Utc>,
    overlap: chrono::Duration,
    full: bool,
}

/// Connects to the separate LCMS database and opens its read-only snapshot,
/// or says the LMS database is the source.
async fn open_source(ctx: &JobContext, settings: &LcmsCopySettings) -> anyhow::Result<Source> {
    let Some(url) = configured_source_url(settings) else {
        return Ok(Source::Local);
    };
    let timeout = Duration::from_secs(ctx.settings().database.connect_timeout_secs);
    let mut conn = connect_source(url, timeout).await?;
    let limits = ctx.timeouts();
    crate::context::set_pg_limits(&mut conn, limits.statement(), limits.lock())
        .await
        .with_context(|| {
            format!("Failed to set the run's timeouts on the LCMS database ({SOURCE_URL_KEY})")
        })?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .context("Failed to begin the read of the LCMS database (jobs.lcms_copy.source_url)")?;
    Ok(Source::Remote(conn))
}

async fn close_source(source: Source) {
    if let Source::Remote(mut conn) = source {
        // Read only: ending it is tidiness, not correctness.
        let _ = sqlx::query("COMMIT").execute(&mut conn).await;
        let _ = conn.close().await;
    }
}

/// Copies one table inside the run's transaction and moves its watermark.
async fn copy_table(
    ctx: &JobContext,
    source: &mut Source,
    tx: &mut PgConnection,
    table: CopiedTable,
    plan: &Plan,
) -> anyhow::Result<TableReport> {
    let mark = plan
        .marks
        .iter()
        .find(|(name, _)| name == table.source)
        .map(|(_, at)| *at);
    let empty = copy_is_empty(tx, table).await?;
    let mode = if plan.full {
        ReadMode::Full
    } else if mark.is_none() {
        ReadMode::NoWatermark
    } else if empty {
        ReadMode::EmptyCopy
    } else {
        ReadMode::Incremental
    };
    let since = match (mode, mark) {
        (ReadMode::Incremental, Some(at)) => Some(
            at.checked_sub_signed(plan.overlap)
                .unwrap_or(DateTime::UNIX_EPOCH),
        ),
        _ => None,
    };
    let mut report = match (source, empty) {
        (Source::Local, _) => copy_local(tx, table, since, empty).await?,
        (Source::Remote(conn), true) => copy_remote_into_empty(ctx, conn, tx, table).await?,
        (Source::Remote(conn), false) => copy_remote(ctx, conn, tx, table, since).await?,
    };
    report.mode = mode.label();
    report.watermark = advance_watermark(
        tx,
        ctx.run_id,
        table,
        mark,
        report.watermark,
        plan.source_now,
    )
    .await?;
    tracing::info!(
        table = table.target,
        read = report.read,
        inserted = report.inserted,
        updated = report.updated,
        marked_unused = report.marked_unused,
        retired = report.retired,
        since = ?report.since,
        dry_run = ctx.dry_run,
        "table copied"
    );
    Ok(report)
}

/// For each table whose copy took rows in use out of use: how many were in
/// use before and after. The copy's rows in use are counted only then.
async fn shrinks(
    tx: &mut PgConnection,
    reports: &[(CopiedTable, TableReport)],
) -> anyhow::Result<Vec<Shrink>> {
    let mut shrinks = Vec::new();
    for (table, report) in reports.iter().filter(|(_, r)| r.retired > 0) {
        let after: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE use_yn = 'Y'",
            table.target
        ))
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("Failed to count the rows in use of {}", table.target))?;
        let after = after as u64;
        shrinks.push(Shrink {
            table: table.target,
            rows: table.in_use,
            before: after + report.retired - report.put_in_use,
            removed: report.retired,
            after,
        });
    }
    Ok(shrinks)
}

/// The run's counts and details.
fn report_run(
    ctx: &JobContext,
    settings: &LcmsCopySettings,
    reports: &[(CopiedTable, TableReport)],
    applied: bool,
) {
    let mut tables = serde_json::Map::new();
    for (table, report) in reports {
        ctx.counts.add_read(report.read);
        ctx.counts.add_skipped(report.unchanged);
        if applied {
            ctx.counts
                .add_written(report.inserted + report.updated + report.marked_unused);
        }
        tables.insert(
            table.target.into(),
            serde_json::to_value(report).unwrap_or_default(),
        );
    }
    ctx.set_detail(
        "source",
        if configured_source_url(settings).is_some() {
            SOURCE_URL_KEY
        } else {
            "database.url (the LMS database)"
        },
    );
    let mut modes: Vec<&str> = reports.iter().map(|(_, r)| r.mode).collect();
    modes.dedup();
    ctx.set_detail(
        "mode",
        if modes.len() == 1 {
            modes[0].to_string()
        } else {
            format!("{} (contents), {} (items)", modes[0], modes[1])
        },
    );
    ctx.set_detail("overlap_secs", settings.overlap_secs);
    ctx.set_detail(if applied { "copied" } else { "would_copy" }, tables);
}

async fn read_watermarks(conn: &mut PgConnection) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    sqlx::query_as("SELECT source_table, max_mod_dt FROM batch_lcms_watermark")
        .fetch_all(conn)
        .await
        .context("Failed to read batch_lcms_watermark (run `aidt-batch migrate`)")
}

/// Moves the watermark of `table` to the highest `mod_dt` read, capped at
/// the source's clock (a row stamped in the future must not push it past
/// rows still to come) and never backwards. Returns the new value.
async fn advance_watermark(
    conn: &mut PgConnection,
    run_id: i64,
    table: CopiedTable,
    old: Option<DateTime<Utc>>,
    max_read: Option<DateTime<Utc>>,
    source_now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(max_read) = max_read else {
        return Ok(old);
    };
    let new = match old {
        Some(old) => old.max(max_read.min(source_now)),
        None => max_read.min(source_now),
    };
    if Some(new) != old {
        sqlx::query(
            "INSERT INTO batch_lcms_watermark (source_table, max_mod_dt, run_id, updated_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (source_table) DO UPDATE
                SET max_mod_dt = EXCLUDED.max_mod_dt, run_id = EXCLUDED.run_id, updated_at = now()",
        )
        .bind(table.source)
        .bind(new)
        .bind(run_id)
        .execute(conn)
        .await
        .with_context(|| format!("Failed to move the watermark of {}", table.source))?;
    }
    Ok(Some(new))
}
