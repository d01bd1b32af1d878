//! LCMS-01-001 ([`copy`]) and its parts: the copied tables, reaching the
//! source (the LMS database itself or a separate LCMS database), the
//! watermarks, and the copy itself (streamed with COPY between the two
//! databases, staged and merged in the LMS's transaction).

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::runtime::{JobContext, JobStopped};

use copy::{LcmsCopySettings, SOURCE_URL_KEY};

pub mod copy;

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
