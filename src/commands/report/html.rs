//! The night report's page: one HTML document with its style and charts
//! inline. Every value goes through maud's escaping; the charts are SVG
//! that `plotters` wrote from escaped text.
//!
//! Rows carry `data-*` attributes (run id, job, status, partner, code, the
//! figure's name) so a test, or a person with the browser's inspector, can
//! find a figure without reading the layout.

use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::charts;
use super::{Lane, NightReport};
use crate::runtime::history::{RunRow, RunStatus};
use crate::time;

/// Nothing may be loaded: styles are inline, images are the inline SVG.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const CSS: &str = r#"
body { font-family: sans-serif; margin: 24px auto; max-width: 1120px; color: #1d1d1d; background: #fff; font-size: 14px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.sub { color: #555; margin: 0 0 12px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-size: 16px; margin: 12px 0; }
.verdict.ok { background: #e8f5e9; border: 1px solid #a5d6a7; }
.verdict.bad { background: #ffebee; border: 1px solid #ef9a9a; }
.verdict.warn { background: #fff8e1; border: 1px solid #ffe082; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.j { white-space: nowrap; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; color: #fff; font-size: 12px; white-space: nowrap; }
.dry { color: #666; font-style: italic; }
pre.err { white-space: pre-wrap; word-break: break-word; margin: 0; font-family: monospace; font-size: 13px; background: #fafafa; padding: 4px 6px; border-left: 3px solid #c62828; }
.legend span.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin: 0 4px -1px 12px; }
.legend { color: #444; font-size: 13px; }
figure { margin: 6px 0; }
figure svg { max-width: 100%; height: auto; }
.muted { color: #777; }
"#;

pub fn render(report: &NightReport, profile: &str) -> String {
    let kst = |t: DateTime<Utc>| {
        t.with_timezone(&time::seoul())
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let attention = report.attention();
    let missing = report.missing_steps();
    let failed_runs = attention
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
        .count();
    let (from, to) = report.window;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CSP);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "aidt-batch night report " (report.date) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "Night report for business date " span #date { (report.date) } }
                p.sub {
                    "Runs of business date " (report.date) " and runs started "
                    (kst(from)) " – " (to.with_timezone(&time::seoul()).format("%H:%M")) " KST. "
                    "Made " (kst(report.generated_at)) " KST, profile " (profile) ". "
                    "All times KST."
                }
                (verdict(report, attention.len(), failed_runs, &missing))

                h2 { "Timeline" }
                @if report.runs.is_empty() {
                    p.muted { "No runs recorded for this night." }
                } @else {
                    figure #timeline { (PreEscaped(charts::timeline(report))) }
                    p.legend {
                        "Run status:"
                        @for s in LEGEND {
                            span.sw style=(format!("background:{}", charts::status_hex(s))) {} (s)
                        }
                        span.sw style=(format!("background:{}", charts::hex(charts::LEGEND_NIGHT))) {}
                        "night window (D+1 00:00–08:00)"
                        "; pale bars are dry runs."
                    }
                }

                h2 { "What failed and why" }
                (failures(report, &attention, &missing))

                h2 { "Jobs" }
                (jobs_table(report))
                @let timed: Vec<&Lane> = report.lanes.iter().filter(|l| l.processed_per_sec().is_some()).collect();
                @if !timed.is_empty() {
                    p.legend { "Throughput: items read per second of run time (items written for jobs that count no reads); dry and SKIPPED runs left out." }
                    figure #throughput { (PreEscaped(charts::throughput(&timed))) }
                }

                h2 { "KERIS per partner" }
                (keris(report))

                h2 { "Open error rows (" (crate::contract::ERROR_TABLE) ")" }
                (open_errors(report, &kst))

                h2 { "Every run" }
                (runs_table(&report.runs))
            }
        }
    };
    page.into_string()
}

fn verdict(report: &NightReport, attention: usize, failed: usize, missing: &[&Lane]) -> Markup {
    let (class, text) = if report.runs.is_empty() {
        ("bad", "No runs recorded for this night.".to_string())
    } else if failed > 0 || !missing.is_empty() {
        let mut parts = Vec::new();
        if failed > 0 {
            parts.push(format!("{failed} run(s) FAILED"));
        }
        if !missing.is_empty() {
            let ids: Vec<&str> = missing.iter().map(|l| l.job_id.as_str()).collect();
            parts.push(format!("no run of {}", ids.join(", ")));
        }
        ("bad", format!("Needs a look: {}.", parts.join("; ")))
    } else if attention > 0 {
        (
            "warn",
            format!(
                "{} of {} runs did not end COMPLETED (see below).",
                attention,
                report.runs.len()
            ),
        )
    } else {
        ("ok", format!("All {} runs COMPLETED.", report.runs.len()))
    };
    html! { div.verdict.(class) #verdict data-failed=(failed) data-runs=(report.runs.len()) { (text) } }
}

/// The statuses the timeline's legend explains, in its order.
const LEGEND: [RunStatus; 6] = [
    RunStatus::Completed,
    RunStatus::CompletedWithErrors,
    RunStatus::Failed,
    RunStatus::Stopped,
    RunStatus::Skipped,
    RunStatus::Started,
];

fn badge(status: RunStatus) -> Markup {
    html! { span.badge style=(format!("background:{}", charts::status_hex(status))) { (status) } }
}

fn failures(report: &NightReport, attention: &[&RunRow], missing: &[&Lane]) -> Markup {
    html! {
        @if attention.is_empty() && missing.is_empty() {
            p #no-failures { "Nothing failed." }
        } @else {
            table #failures {
                thead { tr { th { "Run" } th { "Job" } th { "Date" } th { "Status" } th.n { "Exit" } th { "Started" } th { "Why" } } }
                tbody {
                    @for lane in missing {
                        tr.failure data-job=(lane.job_id) data-status="MISSING" {
                            td { "–" } td.j { (lane.job_id) } td { (report.date) } td { (badge(RunStatus::Failed)) " no run" } td.n { "–" } td { "–" }
                            td { "The keris-nightly step did not run this night: "
                                 code { "aidt-batch chain keris-nightly --date " (report.date) } " runs it and the steps after it." }
                        }
                    }
                    @for r in attention {
                        tr.failure data-run-id=(r.run_id) data-job=(r.job_id) data-status=(r.status) {
                            td.n { (r.run_id) }
                            td.j { (r.job_id) }
                            td.t { (r.business_date) }
                            td { (badge(r.status)) @if r.dry_run { " " span.dry { "dry run" } } }
                            td.n { (r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "–".into())) }
                            td.t { (r.started_at.with_timezone(&time::seoul()).format("%m-%d %H:%M:%S")) }
                            td.why { (why(r)) }
                        }
                    }
                }
            }
        }
    }
}

/// The reason a run did not complete cleanly, in the history's own words.
fn why(r: &RunRow) -> Markup {
    match (r.status, r.error_msg.as_deref()) {
        (RunStatus::CompletedWithErrors, _) => {
            let codes = error_codes(&r.details);
            html! {
                (number(r.fail_cnt)) " item(s) failed and were recorded"
                @if !codes.is_empty() { ": " (codes) }
                "."
            }
        }
        (RunStatus::Started, _) => {
            html! { "Still running, or its process died (the next start of a job of its lock marks it FAILED)." }
        }
        (_, Some(msg)) => html! { pre.err { (msg) } },
        (_, None) => html! { span.muted { "(no error text recorded)" } },
    }
}

/// `CODE ×n` over every `errors_by_code` / `failed_by_code` in the details.
fn error_codes(details: &serde_json::Value) -> String {
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    fn walk(v: &serde_json::Value, codes: &mut std::collections::BTreeMap<String, u64>) {
        if let Some(map) = v.as_object() {
            for (k, v) in map {
                if k == "errors_by_code" || k == "failed_by_code" {
                    for (code, n) in v.as_object().into_iter().flatten() {
                        *codes.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
                    }
                } else {
                    walk(v, codes);
                }
            }
        }
    }
    walk(details, &mut codes);
    codes
        .iter()
        .map(|(c, n)| format!("{c} ×{}", number(*n as i64)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn jobs_table(report: &NightReport) -> Markup {
    html! {
        table #jobs {
            thead { tr {
                th { "Job" } th { "Name" } th.n { "Runs" } th { "Statuses" }
                th.n { "Read" } th.n { "Written" } th.n { "Skipped" } th.n { "Failed" }
                th.n { "Run time" } th.n { "Read/s" } th.n { "Written/s" }
            } }
            tbody {
                @for lane in &report.lanes {
                    tr.job data-job=(lane.job_id) {
                        td.j { (lane.job_id) }
                        td { (lane.name) @if lane.chain_step { " " span.muted { "(keris-nightly)" } } }
                        td.n data-k="runs" { (lane.runs.len()) }
                        td {
                            @for (status, n) in &lane.by_status {
                                (badge(*status)) " ×" (n) " "
                            }
                            @if lane.runs.is_empty() { span.muted { "no run" } }
                        }
                        td.n data-k="read" { (number(lane.read)) }
                        td.n data-k="written" { (number(lane.written)) }
                        td.n data-k="skipped" { (number(lane.skipped)) }
                        td.n data-k="failed" { (number(lane.failed)) }
                        td.n data-k="seconds" { (duration(lane.seconds)) }
                        td.n data-k="read_per_sec" { (lane.read_per_sec().map(number_f).unwrap_or_else(|| "–".into())) }
                        td.n data-k="written_per_sec" { (lane.written_per_sec().map(number_f).unwrap_or_else(|| "–".into())) }
                    }
                }
            }
        }
        p.legend { "Sums over the runs that were not dry runs; run time counts the runs that did work (not SKIPPED)." }
    }
}

fn keris(report: &NightReport) -> Markup {
    html! {
        @if report.keris.is_empty() && report.aggregated.is_empty() {
            p.muted { "No KERIS transfers recorded this night." }
        }
        @if !report.keris.is_empty() {
            table #keris {
                thead { tr {
                    th { "Partner" } th { "Job" } th { "Unit" }
                    th.n { "Accepted" } th.n { "Failed" } th.n { "Deferred" } th { "Failures by code" }
                } }
                tbody {
                    @for f in &report.keris {
                        tr.keris data-partner=(f.partner) data-job=(f.job_id) {
                            td { (f.partner) } td.j { (f.job_id) } td { (f.unit) }
                            td.n data-k="accepted" { (number(f.accepted as i64)) }
                            td.n data-k="failed" { (number(f.failed as i64)) }
                            td.n data-k="deferred" { (number(f.deferred as i64)) }
                            td { (f.codes.iter().map(|(c, n)| format!("{c} ×{n}")).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
            }
            p.legend {
                "Partners by configuration name ([keris.partners.<name>]). Failed: refused by KERIS or not delivered after retries (recorded in the error table or left for the next run). Deferred: not sent because KERIS kept failing for the partner."
                span.sw style=(format!("background:{}", charts::hex(charts::LEGEND_ACCEPTED))) {} "accepted"
                span.sw style=(format!("background:{}", charts::hex(charts::LEGEND_FAILED))) {} "failed"
                span.sw style=(format!("background:{}", charts::hex(charts::LEGEND_DEFERRED))) {} "deferred"
            }
            figure #keris-chart { (PreEscaped(charts::keris(report))) }
        }
        @if !report.aggregated.is_empty() {
            table #aggregated {
                thead { tr { th { "Partner" } th.n { "Statements ready to send (LRS-01-001)" } th.n { "Invalid for the profile" } } }
                tbody {
                    @for (partner, ready, invalid) in &report.aggregated {
                        tr.aggregated data-partner=(partner) {
                            td { (partner) }
                            td.n data-k="ready" { (number(*ready as i64)) }
                            td.n data-k="invalid" { (number(*invalid as i64)) }
                        }
                    }
                }
            }
        }
        @if report.sent_per_day.len() > 1 || report.sent_per_day.values().any(|d| d.withheld > 0) {
            table #sent-per-day {
                thead { tr { th { "Learning day (DC-01-001)" } th.n { "Sent" } th.n { "Failed" } th.n { "Withheld (no consent)" } } }
                tbody {
                    @for (day, f) in &report.sent_per_day {
                        tr.day data-day=(day) {
                            td { (day) }
                            td.n data-k="sent" { (number(f.sent as i64)) }
                            td.n data-k="failed" { (number(f.failed as i64)) }
                            td.n data-k="withheld" { (number(f.withheld as i64)) }
                        }
                    }
                }
            }
            p.legend { "Days before the night's date are late statements and nights caught up within the look-back (jobs.keris_transfer.look_back_days)." }
        }
        @if report.aggregation_exceptions.values().any(|n| *n > 0) {
            p #aggregation-exceptions {
                "LRS-01-001 (ids in the run's details): "
                @for (label, n) in report.aggregation_exceptions.iter().filter(|(_, n)| **n > 0) {
                    span data-k=(label) { (label) ": " (number(*n as i64)) ". " }
                }
            }
        }
    }
}

fn open_errors(report: &NightReport, kst: &dyn Fn(DateTime<Utc>) -> String) -> Markup {
    html! {
        @match &report.open_errors {
            None => p.muted { "This database has no " (crate::contract::ERROR_TABLE) " table." },
            Some(rows) if rows.is_empty() => p #no-open-errors { "No open rows (PENDING or REGENERATED) as of " (kst(report.generated_at)) "." },
            Some(rows) => {
                p.legend { "As of " (kst(report.generated_at)) ". PENDING: waiting for DC-01-002 (transient failures) or LRS-01-002 (content rejections); REGENERATED: rebuilt, DC-01-002 resends it."
                    span.sw style=(format!("background:{}", charts::hex(charts::LEGEND_PENDING))) {} "pending"
                    span.sw style=(format!("background:{}", charts::hex(charts::LEGEND_REGENERATED))) {} "regenerated"
                }
                table #open-errors {
                    thead { tr { th { "Code" } th.n { "Pending" } th.n { "Regenerated" } th.n { "Open" } th { "Oldest business date" } } }
                    tbody {
                        @for e in rows {
                            tr.open-error data-code=(e.err_code) {
                                td { (e.err_code) }
                                td.n data-k="pending" { (number(e.pending)) }
                                td.n data-k="regenerated" { (number(e.regenerated)) }
                                td.n data-k="open" { (number(e.pending + e.regenerated)) }
                                td.t { (e.oldest_base_dt) }
                            }
                        }
                    }
                }
                figure #open-errors-chart { (PreEscaped(charts::open_errors(rows))) }
            }
        }
    }
}

fn runs_table(runs: &[RunRow]) -> Markup {
    // The year is in the page's title line; month and day are enough here.
    let short = |t: DateTime<Utc>| {
        t.with_timezone(&time::seoul())
            .format("%m-%d %H:%M:%S")
            .to_string()
    };
    html! {
        @if runs.is_empty() {
            p.muted { "None." }
        } @else {
            table #runs {
                thead { tr {
                    th.n { "Run" } th { "Job" } th { "Date" } th { "Status" } th { "Started" } th { "Ended" }
                    th.n { "Duration" } th.n { "Read" } th.n { "Written" } th.n { "Skipped" } th.n { "Failed" } th.n { "Exit" }
                } }
                tbody {
                    @for r in runs {
                        tr.run data-run-id=(r.run_id) data-job=(r.job_id) data-status=(r.status) data-dry=(r.dry_run) {
                            td.n { (r.run_id) }
                            td.j { (r.job_id) }
                            td.t { (r.business_date) }
                            td { (badge(r.status)) @if r.dry_run { " " span.dry { "dry" } } }
                            td.t { (short(r.started_at)) }
                            td.t { (r.ended_at.map(short).unwrap_or_else(|| "–".into())) }
                            td.n { (r.ended_at.map(|e| duration((e - r.started_at).num_milliseconds() as f64 / 1000.0)).unwrap_or_else(|| "–".into())) }
                            td.n data-k="read" { (number(r.read_cnt)) }
                            td.n data-k="written" { (number(r.write_cnt)) }
                            td.n data-k="skipped" { (number(r.skip_cnt)) }
                            td.n data-k="failed" { (number(r.fail_cnt)) }
                            td.n data-k="exit" { (r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "–".into())) }
                        }
                    }
                }
            }
        }
    }
}

pub use crate::format::thousands as number;

/// A rate: whole numbers from 100 up, one decimal below.
pub fn number_f(x: f64) -> String {
    if x >= 100.0 {
        number(x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

/// `0.4 s`, `12.3 s`, `4 min 05 s`, `1 h 02 min`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_rates_and_durations_read_easily() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1000), "1,000");
        assert_eq!(number(-1234567), "-1,234,567");
        assert_eq!(number_f(12.345), "12.3");
        assert_eq!(number_f(68882.4), "68,882");
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
    }
}
