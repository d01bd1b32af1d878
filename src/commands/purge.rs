//! `aidt-batch purge --older-than DAYS [--dry-run]`: deletes the batch's own
//! run history (`batch_job_run`) older than DAYS. What it keeps, and why, is
//! [`history::purge`]'s; the privacy audit (`batch_privacy_audit`) and the
//! other batch tables are never purged.

use std::path::Path;

use chrono::{Duration, Utc};

use crate::config::Profile;
use crate::runtime::history::{self, PurgeReport};
use crate::runtime::Exit;
use crate::time;

pub async fn run(
    profile: Profile,
    extra: Option<&Path>,
    older_than_days: u32,
    dry_run: bool,
) -> anyhow::Result<Exit> {
    let loaded = crate::jobs::load_config(profile, extra)?;
    crate::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    let pg = crate::context::connect_pg(&loaded.settings).await?;
    crate::runtime::runner::ensure_schema(&pg).await?;
    let before = Utc::now() - Duration::days(i64::from(older_than_days));
    let report = history::purge(&pg, before, dry_run).await?;
    print!("{}", render(&report, before, dry_run));
    tracing::info!(
        deleted = report.deleted,
        dry_run,
        older_than_days,
        "run history purged"
    );
    Ok(Exit::Success)
}

/// The lines `purge` prints.
pub fn render(report: &PurgeReport, before: chrono::DateTime<Utc>, dry_run: bool) -> String {
    let cut = before
        .with_timezone(&time::seoul())
        .format("%Y-%m-%d %H:%M:%S KST");
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut out = format!(
        "{verb} {} run(s) of batch_job_run started before {cut}\n",
        report.deleted
    );
    out.push_str(&format!(
        "kept {} still STARTED, {} named by {}, {} the latest (or latest COMPLETED) run of their job\n",
        report.kept_started,
        report.kept_referenced,
        if report.referencing.is_empty() {
            "another table".to_string()
        } else {
            report.referencing.join(", ")
        },
        report.kept_latest,
    ));
    out
}
