//! BO-01-006 — delete expired back-office sessions. Daily at 00:45.
//! Rerun: safe. `--dry-run` counts and deletes nothing.

use serde::Deserialize;

use crate::runtime::registry::{settings_of, DefaultDate, JobDef, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "BO-01-006";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 만료 세션 삭제 일배치",
    name_en: "Delete expired back-office sessions",
    about: "Deletes back-office sessions that expired more than [jobs.bo_01_006] keep_days ago.",
    schedule: Schedule::Cron("45 0 * * *"),
    default_date: DefaultDate::Today,
    settings: Some(settings_of::<SessionExpirySettings>()),
    job: Some(&SessionExpiry),
    ..JobDef::DEFAULTS
};

/// `[jobs.bo_01_006]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionExpirySettings {
    pub keep_days: u32,
}

impl Default for SessionExpirySettings {
    fn default() -> Self {
        Self { keep_days: 7 }
    }
}

pub struct SessionExpiry;

#[async_trait::async_trait]
impl Job for SessionExpiry {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let settings: SessionExpirySettings = ctx.own_settings()?;
        let mut tx = ctx.pg().begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM tb_bo_admin_session WHERE expires_at < $1 - make_interval(days => $2)",
        )
        .bind(ctx.reference_time())
        .bind(settings.keep_days as i32)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if ctx.dry_run {
            tx.rollback().await?;
            ctx.set_detail("would_delete", deleted);
        } else {
            tx.commit().await?;
            ctx.counts.add_written(deleted);
        }
        Ok(())
    }
}
