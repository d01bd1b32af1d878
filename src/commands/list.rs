//! `aidt-batch list`: every registered job with its schedule and last run.
//! Works without a database too (the last-run columns then show `?`).

use std::collections::HashMap;
use std::path::Path;

use crate::config::Profile;
use crate::jobs::REGISTRY;
use crate::runtime::history::{self, RunRow};
use crate::runtime::registry::Schedule;
use crate::runtime::Exit;
use crate::time;

pub async fn run(profile: Profile, extra: Option<&Path>) -> anyhow::Result<Exit> {
    let last = match last_runs(profile, extra).await {
        Ok(rows) => Some(rows),
        Err(e) => {
            eprintln!("aidt-batch: note: last runs unavailable: {e:#}");
            None
        }
    };
    print!("{}", render(last.as_ref()));
    Ok(Exit::Success)
}

async fn last_runs(
    profile: Profile,
    extra: Option<&Path>,
) -> anyhow::Result<HashMap<String, RunRow>> {
    let loaded = crate::jobs::load_config(profile, extra)?;
    crate::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    let pg = crate::context::connect_pg(&loaded.settings).await?;
    let rows = history::last_runs(&pg).await?;
    Ok(rows.into_iter().map(|r| (r.job_id.clone(), r)).collect())
}

/// The table `list` prints.
pub fn render(last: Option<&HashMap<String, RunRow>>) -> String {
    let mut out = format!(
        "{:<12} {:<5} {:<14} {:<28} {:<10} {:<22} {:<50} {}\n",
        "ID", "SYS", "SCHEDULE", "LAST RUN (KST)", "DATE", "STATUS", "NAME", "이름"
    );
    for job in REGISTRY.iter() {
        let schedule = match job.schedule {
            Schedule::Cron(expr) => expr.to_string(),
            Schedule::Unscheduled(_) => "(unscheduled)".into(),
        };
        let (started, date, status) = match last.map(|m| m.get(job.id)) {
            None => ("?".into(), "?".into(), "?".into()),
            Some(None) => ("-".into(), "-".into(), "never run".into()),
            Some(Some(run)) => (
                run.started_at
                    .with_timezone(&time::seoul())
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                run.business_date.to_string(),
                run.status.to_string(),
            ),
        };
        let name = if job.is_implemented() {
            job.name_en.to_string()
        } else {
            format!("{} (not implemented)", job.name_en)
        };
        out.push_str(&format!(
            "{:<12} {:<5} {:<14} {:<28} {:<10} {:<22} {:<50} {}\n",
            job.cli_name(),
            job.system.as_str(),
            schedule,
            started,
            date,
            status,
            name,
            job.name_ko
        ));
    }
    out
}
