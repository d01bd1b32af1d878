//! `aidt-batch history [JOB] [--limit N] [--status S] [--since WHEN] [--date D]`:
//! past runs, newest first.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::config::Profile;
use crate::jobs::REGISTRY;
use crate::runtime::history::{self, RunFilter, RunRow, RunStatus};
use crate::runtime::Exit;
use crate::time;

/// What the command line asks for: a job id as typed (any case), statuses,
/// a start and a business date.
pub struct Filter {
    pub job: Option<String>,
    pub statuses: Vec<RunStatus>,
    pub since: Option<DateTime<Utc>>,
    pub business_date: Option<NaiveDate>,
}

/// The command: an unknown job id is a usage error (exit 2) naming the
/// known ones; else the runs from the batch's database.
pub async fn exec(
    profile: Profile,
    extra: Option<&Path>,
    filter: Filter,
    limit: i64,
) -> anyhow::Result<Exit> {
    let job = match &filter.job {
        None => None,
        Some(given) => match REGISTRY.find(given) {
            Some(def) => Some(def),
            None => {
                eprintln!(
                    "aidt-batch: error: {}",
                    crate::cli::unknown_job_message(given)
                );
                return Ok(Exit::Usage);
            }
        },
    };
    let loaded = super::load_config(profile, extra, None)?;
    let pg = crate::context::connect_pg(&loaded.settings).await?;
    let runs = RunFilter {
        job_id: job.map(|j| j.id),
        statuses: filter.statuses,
        since: filter.since,
        business_date: filter.business_date,
    };
    run(&pg, &runs, limit).await
}

pub async fn run(pg: &PgPool, filter: &RunFilter<'_>, limit: i64) -> anyhow::Result<Exit> {
    let rows = history::find_runs(pg, filter, limit.max(1)).await?;
    print!("{}", render(&rows));
    Ok(Exit::Success)
}

/// The table `history` prints.
pub fn render(rows: &[RunRow]) -> String {
    let mut out = format!(
        "{:>7} {:<15} {:<10} {:<22} {:>9} {:>9} {:>9} {:>9} {:<19} {:>9} {:>4}  {}\n",
        "RUN",
        "JOB",
        "DATE",
        "STATUS",
        "READ",
        "WRITTEN",
        "SKIPPED",
        "FAILED",
        "STARTED (KST)",
        "DURATION",
        "EXIT",
        "ERROR"
    );
    for r in rows {
        let duration = match r.ended_at {
            Some(end) => format!(
                "{:.1}s",
                (end - r.started_at).num_milliseconds() as f64 / 1000.0
            ),
            None => "-".into(),
        };
        let status = if r.dry_run {
            format!("{} (dry)", r.status)
        } else {
            r.status.to_string()
        };
        let error: String = r
            .error_msg
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        out.push_str(&format!(
            "{:>7} {:<15} {:<10} {:<22} {:>9} {:>9} {:>9} {:>9} {:<19} {:>9} {:>4}  {}\n",
            r.run_id,
            match &r.partition {
                Some(p) => format!("{} {p}", r.job_id.to_ascii_lowercase()),
                None => r.job_id.to_ascii_lowercase(),
            },
            r.business_date,
            status,
            r.read_cnt,
            r.write_cnt,
            r.skip_cnt,
            r.fail_cnt,
            r.started_at
                .with_timezone(&time::seoul())
                .format("%Y-%m-%d %H:%M:%S"),
            duration,
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            error
        ));
    }
    if rows.is_empty() {
        out.push_str("(no runs recorded)\n");
    }
    out
}
