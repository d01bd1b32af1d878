//! BO-01-002 — apply the planned-maintenance (PM) schedule.
//!
//! Reads and writes `tb_bo_pm_schedule` and `tb_bo_service_status`, every 10
//! minutes, in one transaction:
//! - a `SCHEDULED` window that has started and not ended becomes `ACTIVE`,
//!   and its system's `maint_yn` becomes `Y` with the window's notice;
//! - an `ACTIVE` (or never activated `SCHEDULED`) window that has ended
//!   becomes `DONE`, and its system's `maint_yn` returns to `N` unless another
//!   window of the same system is still active;
//! - an `ACTIVE` window whose start was moved into the future is
//!   `SCHEDULED` again, and its system leaves maintenance until then;
//! - a window that held its system in maintenance and was cancelled, set
//!   `DONE` by hand or deleted ends that maintenance the same way (the
//!   window holding each system is recorded in `batch_pm_maintenance`,
//!   since a deleted row leaves nothing to find);
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
    about: "Reads tb_bo_pm_schedule and writes it and tb_bo_service_status in one transaction: windows that have begun become ACTIVE and their system goes into maintenance (maint_yn = Y), windows that are over become DONE and their system comes back; a window cancelled or deleted while ACTIVE ends its maintenance too.",
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
    /// `ACTIVE` windows whose start was moved into the future: `SCHEDULED`
    /// again.
    pub postponed: Vec<i64>,
    /// Windows that held their system in maintenance and were cancelled,
    /// set `DONE` by hand or deleted since.
    pub withdrawn: Vec<i64>,
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
        let changed = (changes.activated.len()
            + changes.finished.len()
            + changes.postponed.len()
            + changes.withdrawn.len()) as u64;
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
    let activated = move_windows(
        conn,
        now,
        "activate started windows",
        "UPDATE tb_bo_pm_schedule SET status = 'ACTIVE'
          WHERE status = 'SCHEDULED' AND start_dt <= $1 AND end_dt > $1
          RETURNING pm_id, target_sys",
    )
    .await?;
    let finished = move_windows(
        conn,
        now,
        "finish ended windows",
        "UPDATE tb_bo_pm_schedule SET status = 'DONE'
          WHERE status IN ('SCHEDULED', 'ACTIVE') AND end_dt <= $1
          RETURNING pm_id, target_sys",
    )
    .await?;
    let postponed = move_windows(
        conn,
        now,
        "put postponed windows back to SCHEDULED",
        "UPDATE tb_bo_pm_schedule SET status = 'SCHEDULED'
          WHERE status = 'ACTIVE' AND start_dt > $1
          RETURNING pm_id, target_sys",
    )
    .await?;
    adopt_active_windows(conn).await?;
    let mut withdrawn = withdrawn_windows(conn).await?;
    // Those this run finished or postponed itself are reported as such.
    withdrawn.retain(|w| !finished.contains(w) && !postponed.contains(w));

    let touched: BTreeSet<&str> = [&activated, &finished, &postponed, &withdrawn]
        .into_iter()
        .flatten()
        .map(|(_, sys)| sys.as_str())
        .collect();
    let ids = |windows: &[(i64, String)]| windows.iter().map(|(id, _)| *id).collect();
    let mut changes = PmChanges {
        activated: ids(&activated),
        finished: ids(&finished),
        postponed: ids(&postponed),
        withdrawn: ids(&withdrawn),
        ..PmChanges::default()
    };
    for system in touched {
        match settle(conn, system).await? {
            Some(true) => changes.maintenance_on.push(system.to_string()),
            Some(false) => changes.maintenance_off.push(system.to_string()),
            None => {}
        }
    }
    Ok(changes)
}

/// Runs one status change of windows (`sql` binds `$1` now, returns
/// `(pm_id, target_sys)`).
async fn move_windows(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    what: &str,
    sql: &str,
) -> anyhow::Result<Vec<(i64, String)>> {
    sqlx::query_as(sql)
        .bind(now)
        .fetch_all(conn)
        .await
        .with_context(|| format!("Failed to {what} in tb_bo_pm_schedule"))
}

/// Records the systems under an `ACTIVE` window this job did not activate
/// (set `ACTIVE` in the back office, or before `batch_pm_maintenance`
/// existed) as held by it, so that its cancellation is noticed too. Their
/// status is left as it is.
async fn adopt_active_windows(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO batch_pm_maintenance (target_sys, pm_id)
         SELECT DISTINCT ON (target_sys) target_sys, pm_id FROM tb_bo_pm_schedule
          WHERE status = 'ACTIVE'
          ORDER BY target_sys, start_dt DESC, pm_id DESC
         ON CONFLICT (target_sys) DO NOTHING",
    )
    .execute(conn)
    .await
    .context("Failed to record the active windows in batch_pm_maintenance")?;
    Ok(())
}

/// The windows recorded as holding their system in maintenance that are no
/// longer `ACTIVE`: cancelled, set `DONE` by hand, or deleted.
async fn withdrawn_windows(conn: &mut PgConnection) -> anyhow::Result<Vec<(i64, String)>> {
    sqlx::query_as(
        "SELECT m.pm_id, m.target_sys FROM batch_pm_maintenance m
          WHERE NOT EXISTS (SELECT 1 FROM tb_bo_pm_schedule p
                             WHERE p.pm_id = m.pm_id AND p.status = 'ACTIVE')
          ORDER BY m.pm_id",
    )
    .fetch_all(conn)
    .await
    .context("Failed to read batch_pm_maintenance")
}

/// Sets `system`'s maintenance flag from its active windows (the one that
/// started last speaks for it) and records which window holds it. Returns
/// `Some(on)` when the flag or message changed.
async fn settle(conn: &mut PgConnection, system: &str) -> anyhow::Result<Option<bool>> {
    let active: Option<(i64, Option<String>)> = sqlx::query_as(
        "SELECT pm_id, notice_msg FROM tb_bo_pm_schedule
          WHERE target_sys = $1 AND status = 'ACTIVE' ORDER BY start_dt DESC, pm_id DESC LIMIT 1",
    )
    .bind(system)
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("Failed to read the active windows of {system}"))?;
    let (maint_yn, maint_msg) = match &active {
        Some((_, msg)) => ("Y", msg.clone()),
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
    record_holder(conn, system, active.map(|(id, _)| id)).await?;
    Ok((changed > 0).then_some(maint_yn == "Y"))
}

/// Records `pm_id` as the window holding `system` in maintenance, or
/// (`None`) that none does.
async fn record_holder(
    conn: &mut PgConnection,
    system: &str,
    pm_id: Option<i64>,
) -> anyhow::Result<()> {
    let query = match pm_id {
        Some(id) => sqlx::query(
            "INSERT INTO batch_pm_maintenance (target_sys, pm_id) VALUES ($1, $2)
             ON CONFLICT (target_sys) DO UPDATE SET pm_id = EXCLUDED.pm_id, since = now()
              WHERE batch_pm_maintenance.pm_id <> EXCLUDED.pm_id",
        )
        .bind(system)
        .bind(id),
        None => sqlx::query("DELETE FROM batch_pm_maintenance WHERE target_sys = $1").bind(system),
    };
    query
        .execute(conn)
        .await
        .with_context(|| format!("Failed to record the window holding {system} in maintenance"))?;
    Ok(())
}
