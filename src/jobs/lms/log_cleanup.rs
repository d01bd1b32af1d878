//! LMS-01-001 — delete old log-type data.
//!
//! Deletes rows older than each table's retention (configuration
//! `[jobs.lms_01_001]`, defaults 90 days for `tb_lms_access_log` and
//! `tb_lms_api_log`, 365 days for `tb_lms_login_hist`) counted in whole days
//! before the business date (Asia/Seoul). Daily at 04:00.
//!
//! Deletes run in batches of `batch_size` rows, each its own short
//! transaction, never one giant DELETE that would hold locks and bloat WAL for
//! minutes; `pause_ms` between batches spares replicas. A stop request ends
//! the run between batches.
//!
//! Rerun: safe; a rerun (or the run after a kill) deletes what is left.
//! `--dry-run` counts the rows each table would lose and deletes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::runtime::registry::{settings_of, DefaultDate, JobDef, Schedule, System, Timeouts};
use crate::runtime::{Job, JobContext};
use crate::time;

pub const ID: &str = "LMS-01-001";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "오래된 로그성 데이터 삭제 일배치",
    name_en: "Delete old log-type data (daily)",
    about: "Deletes the rows of tb_lms_access_log, tb_lms_api_log and tb_lms_login_hist older than each table's retention ([jobs.lms_01_001]: 90, 90 and 365 days), in batches; a rerun deletes what is left.",
    schedule: Schedule::Cron("0 4 * * *"),
    default_date: DefaultDate::Today,
    settings: Some(settings_of::<LogCleanupSettings>().checked_by(validate_settings)),
    job: Some(&LogCleanup),
    timeouts: Timeouts::DELETION,
    ..JobDef::DEFAULTS
};

pub struct LogCleanup;

/// `[jobs.lms_01_001]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogCleanupSettings {
    pub access_log_retention_days: u32,
    pub api_log_retention_days: u32,
    pub login_hist_retention_days: u32,
    /// Rows per DELETE: each batch is its own short transaction.
    pub batch_size: u32,
    pub pause_ms: u64,
}

impl Default for LogCleanupSettings {
    fn default() -> Self {
        Self {
            access_log_retention_days: 90,
            api_log_retention_days: 90,
            login_hist_retention_days: 365,
            batch_size: 5000,
            pause_ms: 0,
        }
    }
}

fn validate_settings(section: config::Value) -> Result<(), String> {
    let settings: LogCleanupSettings = section.try_deserialize().map_err(|e| e.to_string())?;
    if settings.batch_size == 0 {
        return Err("batch_size: must be at least 1".into());
    }
    Ok(())
}

/// One log table: its name, time column, key and retention.
#[derive(Debug, Clone, Copy)]
pub struct LogTable {
    pub table: &'static str,
    pub time_column: &'static str,
    pub key_column: &'static str,
    pub retention_days: u32,
}

/// The tables this job cleans, with their retention from configuration.
pub fn log_tables(settings: &LogCleanupSettings) -> [LogTable; 3] {
    [
        LogTable {
            table: "tb_lms_access_log",
            time_column: "accessed_at",
            key_column: "log_id",
            retention_days: settings.access_log_retention_days,
        },
        LogTable {
            table: "tb_lms_api_log",
            time_column: "logged_at",
            key_column: "log_id",
            retention_days: settings.api_log_retention_days,
        },
        LogTable {
            table: "tb_lms_login_hist",
            time_column: "login_at",
            key_column: "hist_id",
            retention_days: settings.login_hist_retention_days,
        },
    ]
}

impl LogTable {
    /// Rows before 00:00 (Seoul) of `business_date - retention_days` are old.
    pub fn cutoff(&self, business_date: NaiveDate) -> DateTime<Utc> {
        time::start_of_day_seoul(business_date - Days::new(u64::from(self.retention_days)))
    }
}

/// Rows deleted so far per table: the checkpoint, so a killed run's history
/// and the resumed run's report are complete.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Progress {
    deleted: BTreeMap<String, u64>,
}

#[async_trait::async_trait]
impl Job for LogCleanup {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: LogCleanupSettings = ctx.own_settings()?;
        let tables = log_tables(&settings);
        if ctx.dry_run {
            let mut would_delete = BTreeMap::new();
            for table in &tables {
                let n = count_old(ctx.pg(), table, table.cutoff(ctx.business_date)).await?;
                ctx.counts.add_read(n);
                would_delete.insert(table.table, n);
            }
            ctx.set_detail("would_delete", would_delete);
            return Ok(());
        }

        let mut progress: Progress = ctx.load_checkpoint().await?.unwrap_or_default();
        if !progress.deleted.is_empty() {
            tracing::info!(previous = ?progress.deleted, "resuming after an unfinished run");
        }
        let mut this_run = BTreeMap::new();
        for table in &tables {
            let cutoff = table.cutoff(ctx.business_date);
            let mut deleted_here = 0;
            loop {
                ctx.stop_point()?;
                let n = delete_batch(ctx.pg(), table, cutoff, settings.batch_size).await?;
                deleted_here += n;
                *progress.deleted.entry(table.table.to_string()).or_default() += n;
                ctx.counts.add_read(n);
                ctx.counts.add_written(n);
                ctx.save_checkpoint(&progress).await?;
                if n < u64::from(settings.batch_size) {
                    break;
                }
                ctx.pause(Duration::from_millis(settings.pause_ms)).await;
            }
            tracing::info!(table = table.table, %cutoff, deleted = deleted_here, "table cleaned");
            this_run.insert(table.table, deleted_here);
        }
        ctx.set_detail("deleted", this_run);
        ctx.set_detail("deleted_including_earlier_runs", &progress.deleted);
        Ok(())
    }
}

/// Deletes at most `batch_size` rows older than `cutoff`; returns how many.
#[tracing::instrument(skip_all, fields(table = table.table, batch_size), err)]
pub async fn delete_batch(
    pg: &PgPool,
    table: &LogTable,
    cutoff: DateTime<Utc>,
    batch_size: u32,
) -> anyhow::Result<u64> {
    let LogTable {
        table: name,
        time_column,
        key_column,
        ..
    } = table;
    // Names come from the constant table list above, never from input.
    let sql = format!(
        "DELETE FROM {name} WHERE {key_column} IN
           (SELECT {key_column} FROM {name} WHERE {time_column} < $1 LIMIT $2)"
    );
    let done = sqlx::query(&sql)
        .bind(cutoff)
        .bind(i64::from(batch_size))
        .execute(pg)
        .await
        .with_context(|| format!("Failed to delete old rows from {name}"))?;
    Ok(done.rows_affected())
}

/// Counts the rows older than `cutoff` (for `--dry-run`).
pub async fn count_old(
    pg: &PgPool,
    table: &LogTable,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let LogTable {
        table: name,
        time_column,
        ..
    } = table;
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {name} WHERE {time_column} < $1"
    ))
    .bind(cutoff)
    .fetch_one(pg)
    .await
    .with_context(|| format!("Failed to count old rows in {name}"))?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_seoul_midnight_retention_days_before_the_business_date() {
        let table = log_tables(&LogCleanupSettings::default())[0];
        let date = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        // 90 days before 2026-11-24 is 2026-08-26; 00:00 KST is 15:00 UTC the day before.
        assert_eq!(table.cutoff(date).to_rfc3339(), "2026-08-25T15:00:00+00:00");
    }
}
