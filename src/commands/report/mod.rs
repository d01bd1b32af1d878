//! `aidt-batch report --date D --html FILE`: the night report, one
//! self-contained HTML page for the operator's morning look at business
//! date D.
//!
//! The night of D is every run of business date D and every run that
//! started between D+1 00:00 and D+1 08:00 KST (the hourly and daily jobs
//! that ran that night with their own dates). The page shows them on a
//! timeline in the seed's order (the `keris-nightly` chain's steps first, in
//! the chain's order, then the registry's), what failed and why (the
//! history's error text, which never holds a secret), the counts and the
//! throughput per job, what KERIS accepted and refused per partner
//! (configuration names, taken from the runs' details: a Partner-ID is never
//! stored there), and the error table's open rows by code as they are when
//! the report is made. Charts are inline SVG drawn by `plotters`; the page
//! loads nothing (no script, font, style sheet or image from anywhere, and
//! a Content-Security-Policy that forbids it).
//!
//! Everything is read from PostgreSQL (`batch_job_run`,
//! `tb_dc_error_data_info`); nothing is written but FILE, replaced
//! atomically (a reader never sees half a page).

mod charts;
mod html;
mod sums;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::config::Profile;
use crate::jobs;
use crate::runtime::history::{self, RunRow, RunStatus};
use crate::runtime::registry::Registry;
use crate::runtime::Exit;
use crate::time;

/// The night of business date D ends at 08:00 KST on D+1: the operator's
/// morning look. Runs of date D itself are included whenever they started.
pub const NIGHT_END_HOUR: i64 = 8;

pub async fn run(
    profile: Profile,
    extra: Option<&Path>,
    date: Option<NaiveDate>,
    out: &Path,
) -> anyhow::Result<Exit> {
    let loaded = jobs::load_config(profile, extra)?;
    crate::telemetry::init(
        profile,
        loaded.settings.log.format,
        &loaded.settings.log.level,
    );
    let pg = crate::context::connect_pg(&loaded.settings).await?;
    crate::runtime::runner::ensure_schema(&pg).await?;
    let date = date.unwrap_or_else(time::yesterday_seoul);
    let report = gather(&pg, &jobs::REGISTRY, date, Utc::now()).await?;
    let page = html::render(&report, profile.as_str());
    write_atomically(out, page.as_bytes())?;
    tracing::info!(date = %date, runs = report.runs.len(), file = %out.display(), "night report written");
    println!("{}", out.display());
    Ok(Exit::Success)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile_in(dir)
        .with_context(|| format!("Failed to create a temporary file in {}", dir.display()))?;
    tmp.1
        .write_all(bytes)
        .and_then(|_| tmp.1.sync_all())
        .with_context(|| format!("Failed to write {}", tmp.0.display()))?;
    std::fs::rename(&tmp.0, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp.0);
        format!("Failed to write {}", path.display())
    })
}

/// A new file `.<pid>-<n>.report.tmp` in `dir`, created exclusively.
fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let mut n = 0u32;
    loop {
        let path = dir.join(format!(".aidt-report-{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct NightReport {
    pub date: NaiveDate,
    /// `[D+1 00:00, D+1 08:00)` KST.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    pub generated_at: DateTime<Utc>,
    /// Oldest first.
    pub runs: Vec<RunRow>,
    /// One lane per job, in the seed's order.
    pub lanes: Vec<Lane>,
    pub keris: Vec<KerisFigure>,
    /// LRS-01-001's statements per partner: ready to send, invalid.
    pub aggregated: Vec<(String, u64, u64)>,
    /// LRS-01-001's statements that were not aggregated as usual, summed
    /// over the night's runs: late, too late, voided after sending,
    /// undecodable, withheld (see [`LRS_EXCEPTIONS`]).
    pub aggregation_exceptions: BTreeMap<&'static str, u64>,
    /// DC-01-001's statements per learning day, summed over the night's
    /// runs: the night's day and the earlier days it caught up.
    pub sent_per_day: BTreeMap<String, DayFigures>,
    /// `None` when the error table does not exist in this database.
    pub open_errors: Option<Vec<OpenErrors>>,
}

/// DC-01-001's figures of one learning day (its details' `days`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayFigures {
    pub sent: u64,
    pub failed: u64,
    /// Left unsent: the student's consent is missing past the grace period.
    pub withheld: u64,
}

/// One job's runs of the night and their sums.
#[derive(Debug, Clone)]
pub struct Lane {
    pub job_id: String,
    pub name: String,
    /// A step of the `keris-nightly` chain: shown even without a run.
    pub chain_step: bool,
    /// Indexes into [`NightReport::runs`].
    pub runs: Vec<usize>,
    pub by_status: BTreeMap<RunStatus, u64>,
    /// Sums over the runs that were not dry.
    pub read: i64,
    pub written: i64,
    pub skipped: i64,
    pub failed: i64,
    /// Run time of the runs that did work (not dry, not SKIPPED, ended).
    pub seconds: f64,
    /// Read and written of those runs, for the rates.
    pub timed_read: i64,
    pub timed_written: i64,
}

impl Lane {
    pub fn read_per_sec(&self) -> Option<f64> {
        rate(self.timed_read, self.seconds)
    }

    pub fn written_per_sec(&self) -> Option<f64> {
        rate(self.timed_written, self.seconds)
    }

    /// What the throughput chart shows: items read per second, or for a job
    /// that reads nothing it counts (one SQL statement), items written.
    pub fn processed_per_sec(&self) -> Option<f64> {
        if self.timed_read > 0 {
            self.read_per_sec()
        } else {
            self.written_per_sec()
        }
    }
}

fn rate(items: i64, seconds: f64) -> Option<f64> {
    (seconds > 0.0 && items > 0).then(|| items as f64 / seconds)
}

/// What one job's runs of the night got from KERIS for one partner.
#[derive(Debug, Clone, PartialEq)]
pub struct KerisFigure {
    /// The partner's configuration name (`[keris.partners.<name>]`).
    pub partner: String,
    pub job_id: &'static str,
    /// What was sent: `statements` (xAPI) or `calls` (dashboard APIs).
    pub unit: &'static str,
    pub accepted: u64,
    pub failed: u64,
    /// Not sent because KERIS kept failing: left for the next run.
    pub deferred: u64,
    /// Failures by code, where the job records them per partner.
    pub codes: BTreeMap<String, u64>,
}

/// Open rows (`PENDING`, `REGENERATED`) of `tb_dc_error_data_info` with one code.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OpenErrors {
    pub err_code: String,
    pub pending: i64,
    pub regenerated: i64,
    pub oldest_base_dt: NaiveDate,
}

/// Reads the night of `date` from PostgreSQL.
pub async fn gather(
    pg: &PgPool,
    registry: &Registry,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> anyhow::Result<NightReport> {
    let window = night_window(date);
    let runs = history::night_runs(pg, date, window.0, window.1)
        .await
        .context("Failed to read batch_job_run")?;
    let open_errors = open_errors(pg).await?;
    Ok(NightReport::build(registry, date, now, runs, open_errors))
}

/// `[D+1 00:00, D+1 08:00)` in Asia/Seoul.
pub fn night_window(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let from = time::start_of_day_seoul(date.succ_opt().expect("date in range"));
    (from, from + Duration::hours(NIGHT_END_HOUR))
}

async fn open_errors(pg: &PgPool) -> anyhow::Result<Option<Vec<OpenErrors>>> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(crate::contract::ERROR_TABLE)
        .fetch_one(pg)
        .await?;
    if !present {
        return Ok(None);
    }
    let rows = sqlx::query_as(
        "SELECT err_code,
                count(*) FILTER (WHERE status = 'PENDING') AS pending,
                count(*) FILTER (WHERE status = 'REGENERATED') AS regenerated,
                min(base_dt) AS oldest_base_dt
           FROM tb_dc_error_data_info
          WHERE status IN ('PENDING', 'REGENERATED')
          GROUP BY err_code
          ORDER BY count(*) DESC, err_code",
    )
    .fetch_all(pg)
    .await
    .context("Failed to read tb_dc_error_data_info")?;
    Ok(Some(rows))
}

impl NightReport {
    /// Arranges the runs: lanes in the seed's order, sums, KERIS figures.
    pub fn build(
        registry: &Registry,
        date: NaiveDate,
        now: DateTime<Utc>,
        runs: Vec<RunRow>,
        open_errors: Option<Vec<OpenErrors>>,
    ) -> Self {
        let lanes = sums::lanes(registry, &runs);
        let figures = sums::Figures::of(registry, &runs);
        let keris = order_keris(figures.keris.into_values().collect(), &lanes);

        NightReport {
            date,
            window: night_window(date),
            generated_at: now,
            runs,
            lanes,
            keris,
            sent_per_day: figures.sent_per_day,
            aggregated: figures
                .aggregated
                .into_iter()
                .map(|(p, (ready, invalid))| (p, ready, invalid))
                .collect(),
            aggregation_exceptions: figures.aggregation_exceptions,
            open_errors,
        }
    }

    /// Runs that need a look: not `COMPLETED`, oldest first.
    pub fn attention(&self) -> Vec<&RunRow> {
        self.runs
            .iter()
            .filter(|r| r.status != RunStatus::Completed)
            .collect()
    }

    /// Steps of the nightly chain with no run in the night.
    pub fn missing_steps(&self) -> Vec<&Lane> {
        self.lanes
            .iter()
            .filter(|l| l.chain_step && l.runs.is_empty())
            .collect()
    }
}

/// Partners in name order, each partner's jobs in the lanes' order (the
/// chain's).
fn order_keris(mut figures: Vec<KerisFigure>, lanes: &[Lane]) -> Vec<KerisFigure> {
    let rank = |job: &str| {
        lanes
            .iter()
            .position(|l| l.job_id == job)
            .unwrap_or(usize::MAX)
    };
    figures.sort_by(|a, b| {
        a.partner
            .cmp(&b.partner)
            .then(rank(a.job_id).cmp(&rank(b.job_id)))
    });
    figures
}

fn objects(value: &Value) -> impl Iterator<Item = (&String, &Value)> {
    value.as_object().into_iter().flatten()
}

/// LRS-01-001's figures of statements not aggregated as usual: (label,
/// details key, field of it).
pub const LRS_EXCEPTIONS: &[(&str, &str, Option<&str>)] = &[
    ("late statements aggregated", "late", Some("statements")),
    (
        "too late (past the look-back), not sent",
        "too_late",
        Some("statements"),
    ),
    (
        "voided after sending",
        "voided_after_sent",
        Some("statements"),
    ),
    (
        "undecodable documents skipped",
        "undecodable",
        Some("documents"),
    ),
    (
        "statements of withheld students",
        "withheld_statements",
        None,
    ),
];

fn count(figures: &Value, key: &str) -> u64 {
    figures.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(id: i64, job: &str, status: &str, minute: i64, secs: i64, details: Value) -> RunRow {
        let start = Utc.with_ymd_and_hms(2026, 3, 5, 16, 0, 0).unwrap() + Duration::minutes(minute);
        RunRow {
            run_id: id,
            job_id: job.into(),
            business_date: NaiveDate::from_ymd_opt(2026, 3, 5).unwrap(),
            dry_run: false,
            status: RunStatus::parse(status).expect("a run status"),
            started_at: start,
            ended_at: Some(start + Duration::seconds(secs)),
            read_cnt: 100,
            write_cnt: 40,
            skip_cnt: 1,
            fail_cnt: 2,
            exit_code: Some(0),
            error_msg: None,
            details,
            host: "h".into(),
            pid: 1,
            partition: None,
        }
    }

    #[test]
    fn the_night_is_d_plus_one_from_midnight_to_eight_kst() {
        let (from, to) = night_window(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        assert_eq!(from.to_rfc3339(), "2026-03-05T15:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-03-05T23:00:00+00:00");
    }

    #[test]
    fn lanes_follow_the_chain_then_the_registry_and_sum_the_runs() {
        let runs = vec![
            run(1, "BO-01-002", "COMPLETED", 0, 1, Value::Null),
            run(2, "DC-01-001", "FAILED", 1, 10, Value::Null),
            run(3, "DC-01-001", "COMPLETED", 20, 30, Value::Null),
            run(4, "XX-99-999", "COMPLETED", 21, 1, Value::Null),
        ];
        let r = NightReport::build(
            &jobs::REGISTRY,
            runs[0].business_date,
            Utc::now(),
            runs,
            None,
        );
        let ids: Vec<&str> = r.lanes.iter().map(|l| l.job_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "LMS-01-008",
                "DC-01-004",
                "LRS-01-001",
                "DC-01-001",
                "DC-01-002",
                "BO-01-002",
                "XX-99-999"
            ]
        );
        let dc = &r.lanes[3];
        assert_eq!(dc.runs, [1, 2]);
        assert_eq!((dc.read, dc.written, dc.failed), (200, 80, 4));
        assert_eq!(dc.seconds, 40.0);
        assert_eq!(dc.read_per_sec(), Some(5.0));
        assert_eq!(dc.by_status[&RunStatus::Failed], 1);
        assert_eq!(r.missing_steps().len(), 4);
        assert_eq!(r.attention().len(), 1);
    }

    #[test]
    fn keris_figures_sum_per_partner_and_job_from_the_details() {
        let send = serde_json::json!({"partners": {
            "brand-a": {"sent": 90, "already_sent": 2, "failed": 3, "deferred": 0, "errors_by_code": {"XAPI_VAL_ERR": 3}},
            "brand-b": {"sent": 50, "already_sent": 0, "failed": 0, "deferred": 7, "errors_by_code": {}}},
            "days": {"2026-03-05": {"sent": 130, "failed": 3, "withheld": 2},
                     "2026-03-02": {"sent": 10, "failed": 0, "withheld": 0}}});
        let resend_old =
            serde_json::json!({"partners": {"brand-a": {"requests": 1, "gave_up": false}}});
        let resend =
            serde_json::json!({"partners": {"brand-a": {"resent": 2, "failed": 1, "deferred": 0}}});
        let agg = serde_json::json!({
            "per_partner": {"brand-a": {"ready": 95, "invalid": 1}},
            "late": {"statements": 7}, "undecodable": {"documents": 2}, "withheld_statements": 4,
        });
        let runs = vec![
            run(1, "LRS-01-001", "COMPLETED", 0, 1, agg),
            run(2, "DC-01-001", "COMPLETED_WITH_ERRORS", 1, 1, send.clone()),
            run(3, "DC-01-001", "COMPLETED", 2, 1, send),
            run(4, "DC-01-002", "COMPLETED", 3, 1, resend_old),
            run(5, "DC-01-002", "COMPLETED", 4, 1, resend),
        ];
        let r = NightReport::build(
            &jobs::REGISTRY,
            runs[0].business_date,
            Utc::now(),
            runs,
            None,
        );
        assert_eq!(r.aggregated, [("brand-a".to_string(), 95, 1)]);
        assert_eq!(r.aggregation_exceptions["late statements aggregated"], 7);
        assert_eq!(r.aggregation_exceptions["undecodable documents skipped"], 2);
        assert_eq!(
            r.aggregation_exceptions["statements of withheld students"],
            4
        );
        assert_eq!(r.aggregation_exceptions["voided after sending"], 0);
        let day = |sent, failed, withheld| DayFigures {
            sent,
            failed,
            withheld,
        };
        assert_eq!(
            r.sent_per_day.iter().collect::<Vec<_>>(),
            [
                (&"2026-03-02".to_string(), &day(20, 0, 0)),
                (&"2026-03-05".to_string(), &day(260, 6, 4)),
            ]
        );
        let got: Vec<(&str, &str, u64, u64, u64)> = r
            .keris
            .iter()
            .map(|f| {
                (
                    f.partner.as_str(),
                    f.job_id,
                    f.accepted,
                    f.failed,
                    f.deferred,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("brand-a", "DC-01-001", 184, 6, 0),
                ("brand-a", "DC-01-002", 2, 1, 0),
                ("brand-b", "DC-01-001", 100, 0, 14),
            ]
        );
        assert_eq!(r.keris[0].codes["XAPI_VAL_ERR"], 6);
    }
}
