//! BO-01-002 — apply the planned-maintenance (PM) schedule.
//!
//! Reads and writes `tb_bo_pm_schedule` and `tb_bo_service_status`, every 10
//! minutes, in one transaction:
//! - a `SCHEDULED` window that has started and not ended becomes `ACTIVE`,
//!   and its system's `maint_yn` becomes `Y` with the window's notice;
//! - an `ACTIVE` (or never activated `SCHEDULED`) window that has ended
//!   becomes `DONE`, and its system's `maint_yn` returns to `N` unless another
//!   window of the same system is still active;
//! - `CANCELLED` windows never activate.
//!
//! Only systems whose windows changed in this run are touched, so a flag an
//! operator set by hand in the back office is not overwritten every 10
//! minutes. Rerun: a second run changes nothing. `--dry-run` performs the
//! transaction, reports it and rolls back.

use std::collections::BTreeSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::runtime::registry::{DefaultDate, JobDef, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "BO-01-002";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Bo,
    name_ko: "통합관리시스템 PM일정 일배치",
    name_en: "Apply planned-maintenance schedule",
    about: "Reads tb_bo_pm_schedule and writes it and tb_bo_service_status in one transaction: windows that have begun become ACTIVE and their system goes into maintenance (maint_yn = Y), windows that are over become DONE and their system comes back.",
    schedule: Schedule::Cron("*/10 * * * *"),
    schedule_note: Some("the seed prints `_/10_ * * *` (Markdown mangling of */10)"),
    default_date: DefaultDate::Today,
    job: Some(&PmSchedule),
    ..JobDef::DEFAULTS
};

pub struct PmSchedule;

/// What one pass changed.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct PmChanges {
    pub activated: Vec<i64>,
    pub finished: Vec<i64>,
    /// Systems put into maintenance.
    pub maintenance_on: Vec<String>,
    /// Systems taken out of maintenance.
    pub maintenance_off: Vec<String>,
}

#[async_trait::async_trait]
impl Job for PmSchedule {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let mut tx = ctx.pg().begin().await?;
        let changes = apply(&mut tx, ctx.reference_time()).await?;
        if ctx.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        let changed = (changes.activated.len() + changes.finished.len()) as u64;
        ctx.counts.add_read(changed);
        if !ctx.dry_run {
            ctx.counts.add_written(
                changed + (changes.maintenance_on.len() + changes.maintenance_off.len()) as u64,
            );
        }
        ctx.set_detail(
            if ctx.dry_run {
                "would_change"
            } else {
                "changed"
            },
            &changes,
        );
        Ok(())
    }
}

/// Applies the schedule as of `now`.
#[tracing::instrument(skip_all, fields(%now), err)]
pub async fn apply(conn: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<PmChanges> {
    let activated: Vec<(i64, String)> = sqlx::query_as(
        "UPDATE tb_bo_pm_schedule SET status = 'ACTIVE'
          WHERE status = 'SCHEDULED' AND start_dt <= $1 AND end_dt > $1
          RETURNING pm_id, target_sys",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .context("Failed to activate started windows in tb_bo_pm_schedule")?;

    let finished: Vec<(i64, String)> = sqlx::query_as(
        "UPDATE tb_bo_pm_schedule SET status = 'DONE'
          WHERE status IN ('SCHEDULED', 'ACTIVE') AND end_dt <= $1
          RETURNING pm_id, target_sys",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .context("Failed to finish ended windows in tb_bo_pm_schedule")?;

    let touched: BTreeSet<&str> = activated
        .iter()
        .chain(&finished)
        .map(|(_, sys)| sys.as_str())
        .collect();
    let mut changes = PmChanges {
        activated: activated.iter().map(|(id, _)| *id).collect(),
        finished: finished.iter().map(|(id, _)| *id).collect(),
        ..PmChanges::default()
    };
    for system in touched {
        // The active window that started last speaks for the system.
        let active: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT notice_msg FROM tb_bo_pm_schedule
              WHERE target_sys = $1 AND status = 'ACTIVE' ORDER BY start_dt DESC, pm_id DESC LIMIT 1",
        )
        .bind(system)
        .fetch_optional(&mut *conn)
        .await?;
        let (maint_yn, maint_msg) = match &active {
            Some((msg,)) => ("Y", msg.clone()),
            None => ("N", None),
        };
        let changed = sqlx::query(
            "INSERT INTO tb_bo_service_status (target_sys, maint_yn, maint_msg, upd_dt)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (target_sys) DO UPDATE
                SET maint_yn = EXCLUDED.maint_yn, maint_msg = EXCLUDED.maint_msg, upd_dt = now()
              WHERE tb_bo_service_status.maint_yn IS DISTINCT FROM EXCLUDED.maint_yn
                 OR tb_bo_service_status.maint_msg IS DISTINCT FROM EXCLUDED.maint_msg",
        )
        .bind(system)
        .bind(maint_yn)
        .bind(&maint_msg)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("Failed to update tb_bo_service_status of {system}"))?
        .rows_affected();
        if changed > 0 {
            let list = if maint_yn == "Y" {
                &mut changes.maintenance_on
            } else {
                &mut changes.maintenance_off
            };
            list.push(system.to_string());
        }
    }
    Ok(changes)
}
