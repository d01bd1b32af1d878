//! BO-01-005 — hide notices whose display period is over.
//!
//! Reads and writes `tb_bo_notice`: every notice still displayed
//! (`disp_yn = 'Y'`) whose `disp_end_dt` is before the reference time gets
//! `disp_yn = 'N'`. Current notices, future ones and notices without an end
//! date are left alone. Daily at 00:05.
//!
//! Rerun: safe; a second run finds nothing to hide. `--dry-run` performs the
//! update inside a transaction, reports the count and rolls back.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::runtime::registry::{DefaultDate, JobDef, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "BO-01-005";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 공지사항 기간 비노출 일배치",
    name_en: "Hide notices whose display period is over",
    about: "Reads and writes tb_bo_notice: displayed notices whose display period (disp_end_dt) ended before the reference time get disp_yn = 'N'.",
    schedule: Schedule::Cron("5 0 * * *"),
    default_date: DefaultDate::Today,
    job: Some(&NoticeExpiry),
    ..JobDef::DEFAULTS
};

pub struct NoticeExpiry;

#[async_trait::async_trait]
impl Job for NoticeExpiry {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let mut tx = ctx.pg().begin().await?;
        let hidden = hide_expired(&mut tx, ctx.reference_time()).await?;
        if ctx.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        ctx.counts.add_read(hidden.len() as u64);
        if !ctx.dry_run {
            ctx.counts.add_written(hidden.len() as u64);
        }
        ctx.set_detail(if ctx.dry_run { "would_hide" } else { "hidden" }, &hidden);
        Ok(())
    }
}

/// Hides the notices whose display ended before `now`; returns their ids.
#[tracing::instrument(skip_all, fields(%now), err)]
pub async fn hide_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE tb_bo_notice SET disp_yn = 'N'
          WHERE disp_yn = 'Y' AND disp_end_dt IS NOT NULL AND disp_end_dt < $1
          RETURNING notice_id",
    )
    .bind(now)
    .fetch_all(conn)
    .await
    .context("Failed to hide expired notices in tb_bo_notice")
}
