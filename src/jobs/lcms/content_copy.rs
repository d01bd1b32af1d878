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
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::config::LcmsCopySettings;
use crate::jobs::shared::shrink::{self, Shrink};
use crate::runtime::registry::{DefaultDate, JobDef, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext, JobStopped};

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

/// Bytes of COPY data sent to the LMS per message: large enough that
/// messages (each flushed) cost little, small enough to keep memory flat.
pub const RELAY_BUFFER: usize = 256 * 1024;
/// Buffers between the source's reader and the LMS's writer, so both
/// servers work at once; with [`RELAY_BUFFER`] the relay's memory bound.
pub const RELAY_BUFFERS: usize = 4;

/// One copied table.
#[derive(Debug, Clone, Copy)]
pub struct CopiedTable {
    pub source: &'static str,
    pub target: &'static str,
    pub key: &'static str,
    /// Every column but `sync_dt`, the key first.
    pub columns: &'static [&'static str],
    /// What its rows in use are called in a refusal ("items in use").
    pub in_use: &'static str,
}

pub const CONTENT: CopiedTable = CopiedTable {
    source: "tb_lcms_content",
    target: "tb_lms_content",
    key: "content_id",
    columns: &[
        "content_id",
        "course_id",
        "content_type",
        "title",
        "use_yn",
        "mod_dt",
    ],
    in_use: "contents in use",
};

pub const ITEM: CopiedTable = CopiedTable {
    source: "tb_lcms_item",
    target: "tb_lms_item",
    key: "item_id",
    columns: &[
        "item_id",
        "content_id",
        "item_type",
        "difficulty",
        "std_sys_ids",
        "kc_ids",
        "use_yn",
        "mod_dt",
    ],
    in_use: "items in use",
};

impl CopiedTable {
    fn column_list(&self) -> String {
        self.columns.join(", ")
    }
    fn stage(&self) -> String {
        format!("lcms_stage_{}", self.target)
    }
    fn keys(&self) -> String {
        format!("lcms_keys_{}", self.target)
    }
}

/// Why a table's copy reads what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadMode {
    /// `mod_dt >= watermark - overlap`.
    Incremental,
    /// `--full`: every row.
    Full,
    /// No watermark yet: every row.
    NoWatermark,
    /// A watermark, but the copy has no row (it was emptied): every row,
    /// else the rows before the watermark would never come back.
    EmptyCopy,
}

impl ReadMode {
    fn label(self) -> &'static str {
        match self {
            ReadMode::Incremental => "incremental",
            ReadMode::Full => "full (--full)",
            ReadMode::NoWatermark => "full (no watermark yet)",
            ReadMode::EmptyCopy => "full (the copy is empty)",
        }
    }
}

/// What one table's copy did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub mode: &'static str,
    /// The copy had no row: the rows went straight into it (one COPY, or a
    /// plain INSERT), no staging, upsert or search for removed rows.
    pub into_empty_copy: bool,
    /// Rows with `mod_dt` at or after this were read (None: all).
    pub since: Option<DateTime<Utc>>,
    pub read: u64,
    pub inserted: u64,
    pub updated: u64,
    /// Read but identical to the copy: not written.
    pub unchanged: u64,
    /// Rows gone from the source, now `use_yn = 'N'`.
    pub marked_unused: u64,
    /// Rows in use (`use_yn = 'Y'`) taken out of use: gone from the source,
    /// or no longer in use there.
    pub retired: u64,
    /// Rows not in use before (or new) that are in use now.
    #[serde(skip)]
    pub put_in_use: u64,
    /// The watermark after the run.
    pub watermark: Option<DateTime<Utc>>,
}

/// Where the rows come from.
enum Source {
    /// The LMS database itself: the source tables are read in the run's
    /// own transaction.
    Local,
    /// A separate LCMS database, read in a REPEATABLE READ transaction.
    Remote(PgConnection),
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

/// `now()` of the source's snapshot.
async fn source_clock(source: &mut Source, tx: &mut PgConnection) -> anyhow::Result<DateTime<Utc>> {
    let conn = match source {
        Source::Local => tx,
        Source::Remote(conn) => conn,
    };
    sqlx::query_scalar("SELECT now()")
        .fetch_one(conn)
        .await
        .context("Failed to read the LCMS database's clock")
}

/// For `aidt-batch check`: `None` without a separate source; else connects
/// to it, runs a trivial query and says whether the LCMS tables are there.
/// Neither the verdict nor an error quotes the URL (it holds a password).
pub async fn probe_source(settings: &crate::config::Settings) -> Option<anyhow::Result<String>> {
    let url = configured_source_url(&settings.jobs.lcms_copy)?;
    let timeout = Duration::from_secs(settings.database.connect_timeout_secs);
    Some(
        async {
            let mut conn = connect_source(url, timeout).await?;
            let (version, tables): (String, i64) = sqlx::query_as(
                "SELECT current_setting('server_version'),
                        (to_regclass('tb_lcms_content') IS NOT NULL)::int::int8
                      + (to_regclass('tb_lcms_item') IS NOT NULL)::int::int8",
            )
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("Failed to query the LCMS database ({SOURCE_URL_KEY})"))?;
            let _ = conn.close().await;
            anyhow::ensure!(
                tables == 2,
                "{SOURCE_URL_KEY}: the LCMS database answers (PostgreSQL {version}) but lacks tb_lcms_content / tb_lcms_item"
            );
            Ok(format!(
                "{SOURCE_URL_KEY}: PostgreSQL {version}; tb_lcms_content and tb_lcms_item present"
            ))
        }
        .await,
    )
}

/// The separate source, if one is configured (an empty value means none,
/// so an environment variable can unset it).
fn configured_source_url(settings: &LcmsCopySettings) -> Option<&secrecy::SecretString> {
    settings
        .source_url
        .as_ref()
        .filter(|url| !url.expose_secret().trim().is_empty())
}

/// Connects to the LCMS database. Errors name the key, never the URL (it
/// holds a password): a URL that does not parse is reported without the
/// parser's message, which could quote it.
pub async fn connect_source(
    url: &secrecy::SecretString,
    timeout: Duration,
) -> anyhow::Result<PgConnection> {
    let options: PgConnectOptions = url.expose_secret().parse().map_err(|_| {
        anyhow::anyhow!("configuration key `{SOURCE_URL_KEY}` is not a valid PostgreSQL URL")
    })?;
    tokio::time::timeout(timeout, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "Failed to connect to the LCMS database ({SOURCE_URL_KEY}): no answer within {} s",
                timeout.as_secs()
            )
        })?
        .with_context(|| format!("Failed to connect to the LCMS database ({SOURCE_URL_KEY})"))
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

/// `at` as an SQL literal. Formatted from a timestamp, never from input:
/// COPY takes no parameters.
fn timestamp_literal(at: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// `mod_dt >= since` as SQL, or nothing for a full read.
fn since_filter(since: Option<DateTime<Utc>>) -> String {
    match since {
        Some(at) => format!(" WHERE mod_dt >= {}", timestamp_literal(at)),
        None => String::new(),
    }
}

/// Whether the LMS copy of `table` has no row (the first copy, or a copy
/// emptied since): then every source row goes straight in.
async fn copy_is_empty(tx: &mut PgConnection, table: CopiedTable) -> anyhow::Result<bool> {
    sqlx::query_scalar(&format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {})",
        table.target
    ))
    .fetch_one(tx)
    .await
    .with_context(|| format!("Failed to read {}", table.target))
}

/// The copy when the LCMS tables are in the LMS database.
#[tracing::instrument(skip_all, fields(table = table.target), err)]
async fn copy_local(
    tx: &mut PgConnection,
    table: CopiedTable,
    since: Option<DateTime<Utc>>,
    empty: bool,
) -> anyhow::Result<TableReport> {
    let rows = format!(
        "(SELECT {} FROM {}{}) AS src",
        table.column_list(),
        table.source,
        since_filter(since)
    );
    if empty {
        // Every row is new: a plain INSERT, nothing to compare or mark.
        let cols = table.column_list();
        let (read, max_mod_dt): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&format!(
            "WITH ins AS (
                 INSERT INTO {} ({cols}, sync_dt) SELECT {cols}, now() FROM {rows}
                 RETURNING mod_dt)
             SELECT count(*), max(mod_dt) FROM ins",
            table.target
        ))
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("Failed to copy {} into {}", table.source, table.target))?;
        return Ok(TableReport::into_empty(read as u64, max_mod_dt));
    }
    merge(tx, table, &rows, table.source, since).await
}

impl TableReport {
    /// A copy into an empty table: every row read was inserted.
    fn into_empty(read: u64, max_mod_dt: Option<DateTime<Utc>>) -> Self {
        // Nothing was in use before, so nothing was retired.
        TableReport {
            into_empty_copy: true,
            read,
            inserted: read,
            watermark: max_mod_dt,
            ..TableReport::default()
        }
    }
}

/// The copy from a separate LCMS database into an empty LMS copy: the
/// source's rows are relayed straight into `COPY target FROM STDIN`, each
/// row written once (no staging table, no upsert; nothing in the copy to
/// compare with or to mark unused). `sync_dt` is the transaction's `now()`,
/// as the upsert would set it, sent with the rows so that no column default
/// is assumed.
#[tracing::instrument(skip_all, fields(table = table.target), err)]
async fn copy_remote_into_empty(
    ctx: &JobContext,
    source: &mut PgConnection,
    tx: &mut PgConnection,
    table: CopiedTable,
) -> anyhow::Result<TableReport> {
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await
        .context("Failed to read the LMS database's clock")?;
    let cols = table.column_list();
    let read = relay(
        ctx,
        source,
        tx,
        &format!(
            "COPY (SELECT {cols}, {} FROM {}) TO STDOUT",
            timestamp_literal(now),
            table.source
        ),
        &format!("COPY {} ({cols}, sync_dt) FROM STDIN", table.target),
    )
    .await
    .with_context(|| {
        format!(
            "Failed to copy the rows of {} ({SOURCE_URL_KEY}) into {}",
            table.source, table.target
        )
    })?;
    let max_mod_dt: Option<DateTime<Utc>> =
        sqlx::query_scalar(&format!("SELECT max(mod_dt) FROM {}", table.target))
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("Failed to read the copied rows of {}", table.target))?;
    Ok(TableReport::into_empty(read, max_mod_dt))
}

/// The copy from a separate LCMS database into a copy that has rows:
/// changed rows (and, for an incremental read, every key) streamed into
/// staging tables of the run's transaction, then merged.
#[tracing::instrument(skip_all, fields(table = table.target), err)]
async fn copy_remote(
    ctx: &JobContext,
    source: &mut PgConnection,
    tx: &mut PgConnection,
    table: CopiedTable,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<TableReport> {
    let stage = table.stage();
    stage_table(tx, &stage, table.column_list(), table).await?;
    relay(
        ctx,
        source,
        tx,
        &format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT",
            table.column_list(),
            table.source,
            since_filter(since)
        ),
        &format!("COPY {stage} ({}) FROM STDIN", table.column_list()),
    )
    .await
    .with_context(|| {
        format!(
            "Failed to copy the changed rows of {} ({SOURCE_URL_KEY})",
            table.source
        )
    })?;
    // A full read staged every key already; an incremental one reads them.
    let keys = if since.is_some() {
        let keys = table.keys();
        stage_table(tx, &keys, table.key.to_string(), table).await?;
        relay(
            ctx,
            source,
            tx,
            &format!(
                "COPY (SELECT {} FROM {}) TO STDOUT",
                table.key, table.source
            ),
            &format!("COPY {keys} ({}) FROM STDIN", table.key),
        )
        .await
        .with_context(|| {
            format!(
                "Failed to copy the keys of {} ({SOURCE_URL_KEY})",
                table.source
            )
        })?;
        analyze(tx, &keys).await?;
        keys
    } else {
        stage.clone()
    };
    analyze(tx, &stage).await?;
    merge(tx, table, &stage, &keys, since).await
}

/// A temporary table for `columns` of `table`'s copy, with the copy's own
/// column types, no index, not WAL-logged; dropped with the transaction.
async fn stage_table(
    tx: &mut PgConnection,
    name: &str,
    columns: String,
    table: CopiedTable,
) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {columns} FROM {} WITH NO DATA",
        table.target
    ))
    .execute(tx)
    .await
    .with_context(|| format!("Failed to create the staging tables of {}", table.target))?;
    Ok(())
}

/// Temporary tables are never auto-analyzed: without statistics the
/// planner would take a million staged rows for a handful.
async fn analyze(tx: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("ANALYZE {name}"))
        .execute(tx)
        .await
        .context("Failed to analyze the staging tables")?;
    Ok(())
}

/// Streams `copy_out` on the source into `copy_in` on the LMS: a reader
/// fills buffers of [`RELAY_BUFFER`] bytes, a writer sends them, at most
/// [`RELAY_BUFFERS`] waiting between them. Returns the rows written.
async fn relay(
    ctx: &JobContext,
    source: &mut PgConnection,
    target: &mut PgConnection,
    copy_out: &str,
    copy_in: &str,
) -> anyhow::Result<u64> {
    let mut sink = target.copy_in_raw(copy_in).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(RELAY_BUFFERS);
    let read = read_copy(ctx, source, copy_out, tx);
    let write = async {
        while let Some(buf) = rx.recv().await {
            sink.send(buf.as_slice()).await?;
        }
        anyhow::Ok(())
    };
    let joined = tokio::try_join!(read, write);
    match joined {
        Ok(((), ())) => Ok(sink.finish().await?),
        Err(e) => {
            let stopped = e.is::<JobStopped>();
            let _ = sink.abort("LCMS-01-001: the copy failed").await;
            if stopped {
                return Err(JobStopped.into());
            }
            Err(e)
        }
    }
}

/// The reader half of [`relay`]: COPY data in buffers of [`RELAY_BUFFER`].
async fn read_copy(
    ctx: &JobContext,
    source: &mut PgConnection,
    copy_out: &str,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut rows = source.copy_out_raw(copy_out).await?;
    let mut buf = Vec::with_capacity(RELAY_BUFFER);
    while let Some(chunk) = rows.try_next().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() >= RELAY_BUFFER {
            ctx.stop_point()?;
            let full = std::mem::replace(&mut buf, Vec::with_capacity(RELAY_BUFFER));
            if out.send(full).await.is_err() {
                // The writer failed; its error is the one reported.
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        let _ = out.send(buf).await;
    }
    Ok(())
}

/// The set-based part, the same for both sources: read figures, upsert of
/// changed rows, and removed rows marked unused. `rows` is the relation of
/// rows read, `keys` one holding every source key.
async fn merge(
    tx: &mut PgConnection,
    table: CopiedTable,
    rows: &str,
    keys: &str,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<TableReport> {
    let CopiedTable {
        target,
        key,
        columns,
        ..
    } = table;
    let cols = table.column_list();
    let (read, max_mod_dt): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as(&format!("SELECT count(*), max(mod_dt) FROM {rows}"))
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("Failed to read the rows for {target}"))?;

    let values: Vec<&str> = columns.iter().copied().filter(|c| *c != key).collect();
    let set = values
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let old = values
        .iter()
        .map(|c| format!("t.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let new = values
        .iter()
        .map(|c| format!("EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    // A sub-select in RETURNING reads the statement's snapshot: the row as
    // it was before this statement changed it (NULL for a new row).
    let was_in_use = format!("(SELECT o.use_yn FROM {target} o WHERE o.{key} = t.{key}) = 'Y'");
    let (inserted, updated, retired, put_in_use): (i64, i64, i64, i64) = sqlx::query_as(&format!(
        "WITH up AS (
             INSERT INTO {target} AS t ({cols}, sync_dt)
             SELECT {cols}, now() FROM {rows}
             ON CONFLICT ({key}) DO UPDATE SET {set}, sync_dt = EXCLUDED.sync_dt
              WHERE ({old}) IS DISTINCT FROM ({new})
             RETURNING (t.xmax = 0) AS inserted, coalesce(t.use_yn = 'Y', false) AS in_use,
                       coalesce({was_in_use}, false) AS was_in_use
         )
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
                count(*) FILTER (WHERE was_in_use AND NOT in_use),
                count(*) FILTER (WHERE in_use AND NOT was_in_use)
           FROM up"
    ))
    .fetch_one(&mut *tx)
    .await
    .with_context(|| format!("Failed to upsert the changed rows into {target}"))?;

    let (marked_unused, gone_in_use): (i64, i64) = sqlx::query_as(&format!(
        "WITH gone AS (
             UPDATE {target} t SET use_yn = 'N', sync_dt = now()
              WHERE t.use_yn IS DISTINCT FROM 'N'
                AND NOT EXISTS (SELECT 1 FROM {keys} k WHERE k.{key} = t.{key})
             RETURNING coalesce({was_in_use}, false) AS was_in_use
         )
         SELECT count(*), count(*) FILTER (WHERE was_in_use) FROM gone"
    ))
    .fetch_one(&mut *tx)
    .await
    .with_context(|| format!("Failed to mark the rows gone from the LCMS unused in {target}"))?;

    Ok(TableReport {
        since,
        read: read as u64,
        inserted: inserted as u64,
        updated: updated as u64,
        unchanged: (read - inserted - updated).max(0) as u64,
        marked_unused: marked_unused as u64,
        retired: (retired + gone_in_use) as u64,
        put_in_use: put_in_use as u64,
        watermark: max_mod_dt,
        ..TableReport::default()
    })
}
