//! BO-01-001 — back-office admins with no access for 15 days become dormant.
//!
//! Reads and writes `tb_bo_admin_user`: an `ACTIVE`, approved admin whose
//! last access — the later of `last_login_at` and `approved_at`, so an admin
//! who never logged in counts from approval — is older than
//! `jobs.admin_dormancy.inactive_days` (default 15) becomes `DORMANT` with
//! `status_chg_dt` set. `LOCKED` and already `DORMANT` admins, and admins not
//! yet approved, are left alone. Daily at 00:35.
//!
//! Rerun: safe; a dormant admin is not touched again. `--dry-run` performs the
//! update in a transaction, reports it and rolls back.

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::runtime::registry::{settings_of, DefaultDate, JobDef, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "BO-01-001";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 승인 기준 15일 미접속자 일배치",
    name_en: "Mark admins inactive 15 days since approval dormant",
    about: "Reads and writes tb_bo_admin_user: ACTIVE approved back-office admins become DORMANT when neither their last login nor their approval is more recent than [jobs.bo_01_001] inactive_days (15).",
    schedule: Schedule::Cron("35 0 * * *"),
    default_date: DefaultDate::Today,
    settings: Some(settings_of::<AdminDormancySettings>()),
    job: Some(&AdminDormancy),
    ..JobDef::DEFAULTS
};

pub struct AdminDormancy;

/// `[jobs.bo_01_001]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminDormancySettings {
    /// Days without a login (or since approval) before an admin is dormant.
    pub inactive_days: u32,
}

impl Default for AdminDormancySettings {
    fn default() -> Self {
        Self { inactive_days: 15 }
    }
}

#[async_trait::async_trait]
impl Job for AdminDormancy {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let inactive_days = ctx.own_settings::<AdminDormancySettings>()?.inactive_days;
        let mut tx = ctx.pg().begin().await?;
        let dormant = mark_dormant(&mut tx, ctx.reference_time(), inactive_days).await?;
        if ctx.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        ctx.counts.add_read(dormant.len() as u64);
        if !ctx.dry_run {
            ctx.counts.add_written(dormant.len() as u64);
        }
        ctx.set_detail("inactive_days", inactive_days);
        ctx.set_detail(
            if ctx.dry_run {
                "would_mark_dormant"
            } else {
                "marked_dormant"
            },
            &dormant,
        );
        Ok(())
    }
}

/// Marks the admins inactive for more than `inactive_days` before `now` as
/// dormant; returns their ids.
#[tracing::instrument(skip_all, fields(%now, inactive_days), err)]
pub async fn mark_dormant(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    inactive_days: u32,
) -> anyhow::Result<Vec<i64>> {
    let cutoff = now - Duration::days(i64::from(inactive_days));
    sqlx::query_scalar(
        "UPDATE tb_bo_admin_user SET status = 'DORMANT', status_chg_dt = $1
          WHERE status = 'ACTIVE'
            AND approved_at IS NOT NULL
            AND GREATEST(approved_at, last_login_at) < $2
          RETURNING admin_id",
    )
    .bind(now)
    .bind(cutoff)
    .fetch_all(conn)
    .await
    .context("Failed to mark inactive admins dormant in tb_bo_admin_user")
}
