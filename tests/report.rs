//! `aidt-batch report`: a night of real runs (the KERIS jobs against the
//! simulator with two partners and rejected statements, and a job that
//! fails), the page opened in headless Chromium, its DOM checked against
//! figures computed here from the database and the simulator, and a
//! screenshot taken.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use aidt_batch::config::PartnerSettings;
use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::runtime::Exit;
use aidt_dev::seed::{self, SeedArgs};
use futures::TryStreamExt;
use keris_simulator::{self as simulator, Faults, SimulatorConfig};
use mongodb::bson::{doc, Document};
use scraper::{ElementRef, Html, Selector};
use secrecy::SecretString;

use crate::helpers::{date, stderr, stdout, TestEnv};

const DAY: &str = "2026-03-05";
const PARTNER_A: &str = "7d0c1f7e-0a55-4d4e-8a11-00000000aaaa";
const PARTNER_B: &str = "7d0c1f7e-0a55-4d4e-8a11-00000000bbbb";
const LCMS_SECRET: &str = "S3cr3t-report-lcms-pw";

/// Debian's `chromium` (scripts/install-chromium installs it; scripts/test
/// runs that), or `AIDT_CHROMIUM`.
fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("AIDT_CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .expect("chromium is not installed: run scripts/install-chromium (scripts/test does)")
}

/// Headless Chromium with a fresh profile that fetches nothing of its own.
fn browser(profile: &Path) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("120").arg(chromium()).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn text(e: ElementRef) -> String {
    e.text().collect::<String>().trim().to_string()
}

/// The number in a cell, thousands separators removed.
fn cell(row: ElementRef, key: &str) -> i64 {
    let td = row
        .select(&sel(&format!("td[data-k=\"{key}\"]")))
        .next()
        .unwrap_or_else(|| panic!("no {key} cell in {}", row.html()));
    text(td)
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{key}: {}", text(td)))
}

#[tokio::test]
async fn the_night_report_shows_every_run_the_keris_figures_per_partner_and_what_failed() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut env = TestEnv::new().await;
    let base = sim.base_url();
    env.configure(|s| {
        s.keris.api_domain = Some(base);
        s.keris.partners = BTreeMap::from([
            (
                "brand-a".to_string(),
                PartnerSettings {
                    partner_id: Some(SecretString::from(PARTNER_A.to_string())),
                },
            ),
            (
                "brand-b".to_string(),
                PartnerSettings {
                    partner_id: Some(SecretString::from(PARTNER_B.to_string())),
                },
            ),
        ]);
        s.keris.base_backoff_ms = 5;
        s.keris.max_backoff_ms = 20;
        s.keris.max_statements_per_request = 100;
    });
    let d = date(DAY);
    seed::seed(&env.app, &SeedArgs::new(30, 800, Some(d), 7))
        .await
        .unwrap();
    // Every student consents: the figures below count what KERIS receives.
    crate::helpers::consent_all(&env).await;

    // The night: the dashboard, the levels, the aggregate, a dry run.
    assert_eq!(
        env.run_job("LMS-01-008", Some(d), false).await.exit,
        Exit::Success
    );
    assert_eq!(
        env.run_job("DC-01-004", Some(d), false).await.exit,
        Exit::Success
    );
    assert_eq!(
        env.run_job("LRS-01-001", Some(d), false).await.exit,
        Exit::Success
    );
    env.run_ok("DC-01-001", Some(d), true).await;
    // KERIS refuses three of brand-a's statements and one of brand-b's.
    let mut rejected = Vec::new();
    for (partner, n) in [(PARTNER_A, 3), (PARTNER_B, 1)] {
        let docs: Vec<Document> = env
            .app
            .mongo
            .collection::<Document>(KERIS_BATCH_DATA)
            .find(doc! { "status": "READY", "partner_id": partner, "base_dt": DAY })
            .limit(n)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(docs.len(), n as usize, "seeded statements of {partner}");
        rejected.extend(
            docs.iter()
                .map(|d| d.get_str("_id").unwrap().parse::<uuid::Uuid>().unwrap()),
        );
    }
    sim.set_faults(Faults {
        reject_statement_ids: rejected.clone(),
        ..Faults::default()
    });
    let send = env.run_job("DC-01-001", Some(d), false).await;
    assert_eq!(send.exit, Exit::CompletedWithErrors);
    // A run that fails: the LCMS database is unreachable.
    let lcms = env
        .command(&["lcms-01-001", "--date", DAY])
        .env(
            "AIDT__JOBS__LCMS_COPY__SOURCE_URL",
            format!("postgres://lcms_reader:{LCMS_SECRET}@127.0.0.1:1/lcms?sslmode=disable"),
        )
        .output()
        .unwrap();
    assert_eq!(lcms.status.code(), Some(1), "{}", stderr(&lcms));
    // Not of the night: another business date, started now.
    env.run_ok("BO-01-005", Some(date("2026-02-01")), false)
        .await;

    // The report, written by the binary.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", env.pg_name));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("night.html");
    let out = env
        .command(&["report", "--date", DAY, "--html", page.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), page.to_str().unwrap());
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained, no secret: no script, nothing to fetch, generic fonts.
    assert!(!html.to_ascii_lowercase().contains("<script"), "a script");
    for bad in ["src=", "href=", "@import", "url(", "@font-face"] {
        assert!(
            !html.contains(bad),
            "the page would fetch something ({bad})"
        );
    }
    let without_svg_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !without_svg_ns.contains("http://") && !without_svg_ns.contains("https://"),
        "an address in the page"
    );
    let families: BTreeSet<&str> = html
        .split("font-family=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(!families.is_empty(), "the charts have text");
    assert!(
        families
            .iter()
            .all(|f| ["sans-serif", "serif", "monospace"].contains(f)),
        "{families:?}"
    );
    for secret in [PARTNER_A, PARTNER_B, LCMS_SECRET, "lcms_reader"] {
        assert!(!html.contains(secret), "a secret in the page: {secret}");
    }

    // The DOM as Chromium builds it.
    let profile = tempfile::tempdir().unwrap();
    let dump = browser(profile.path())
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", stderr(&dump));
    let dom = Html::parse_document(&stdout(&dump));
    assert!(
        dom.select(&sel("svg")).count() >= 4,
        "timeline, throughput, KERIS and error charts"
    );

    // Every run of the night, none other; timeline lanes in the chain's order.
    let runs: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT run_id, job_id, status FROM batch_job_run WHERE business_date = $1 ORDER BY run_id",
    )
    .bind(d)
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(runs.len(), 6);
    let shown: Vec<(i64, String, String)> = dom
        .select(&sel("#runs tr.run"))
        .map(|tr| {
            let v = tr.value();
            (
                v.attr("data-run-id").unwrap().parse().unwrap(),
                v.attr("data-job").unwrap().to_string(),
                v.attr("data-status").unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = shown.clone();
    sorted.sort();
    assert_eq!(sorted, runs, "the runs table");
    let lanes: Vec<String> = dom
        .select(&sel("#jobs tr.job"))
        .map(|tr| tr.value().attr("data-job").unwrap().to_string())
        .collect();
    assert_eq!(
        lanes,
        [
            "LMS-01-008",
            "DC-01-004",
            "LRS-01-001",
            "DC-01-001",
            "DC-01-002",
            "LCMS-01-001"
        ]
    );

    // Counts per job: sums of the runs that were not dry.
    let sums: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT job_id, count(*), (sum(read_cnt) FILTER (WHERE NOT dry_run))::bigint,
                (sum(write_cnt) FILTER (WHERE NOT dry_run))::bigint,
                (sum(fail_cnt) FILTER (WHERE NOT dry_run))::bigint
           FROM batch_job_run WHERE business_date = $1 GROUP BY job_id",
    )
    .bind(d)
    .fetch_all(env.pg())
    .await
    .unwrap();
    for (job, n, read, written, failed) in sums {
        let tr = dom
            .select(&sel(&format!("#jobs tr.job[data-job=\"{job}\"]")))
            .next()
            .unwrap();
        assert_eq!(cell(tr, "runs"), n, "{job}");
        assert_eq!(cell(tr, "read"), read, "{job}");
        assert_eq!(cell(tr, "written"), written, "{job}");
        assert_eq!(cell(tr, "failed"), failed, "{job}");
    }
    let dc = dom
        .select(&sel("#jobs tr.job[data-job=\"DC-01-001\"]"))
        .next()
        .unwrap();
    assert!(cell(dc, "read") > 0);
    assert_ne!(
        text(
            dc.select(&sel("td[data-k=\"read_per_sec\"]"))
                .next()
                .unwrap()
        ),
        "–"
    );

    // KERIS per partner, by configuration name: what the simulator stored
    // and what the error table holds.
    let stats = sim.stats();
    let keris = |partner: &str, job: &str| {
        dom.select(&sel(&format!(
            "#keris tr.keris[data-partner=\"{partner}\"][data-job=\"{job}\"]"
        )))
        .next()
        .unwrap_or_else(|| panic!("no KERIS row {partner} {job}"))
    };
    for (name, id, refused) in [("brand-a", PARTNER_A, 3), ("brand-b", PARTNER_B, 1)] {
        let p = stats.partner(id);
        assert!(
            p.statements_accepted > 0 && p.dashboard_events > 0,
            "{name}"
        );
        let row = keris(name, "DC-01-001");
        assert_eq!(
            cell(row, "accepted") as u64,
            p.statements_accepted,
            "{name}"
        );
        let errors: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tb_dc_error_data_info
              WHERE job_id = 'DC-01-001' AND partner_id = $1::uuid
                AND created_at >= (SELECT started_at FROM batch_job_run WHERE run_id = $2)",
        )
        .bind(id)
        .bind(send.run_id.unwrap())
        .fetch_one(env.pg())
        .await
        .unwrap();
        assert_eq!(errors, refused);
        assert_eq!(cell(row, "failed"), errors, "{name}");
        assert!(
            text(row).contains(&format!("XAPI_VAL_ERR ×{refused}")),
            "{}",
            text(row)
        );
        let dashboard: i64 = ["LMS-01-008", "DC-01-004"]
            .iter()
            .filter_map(|job| {
                dom.select(&sel(&format!(
                    "#keris tr.keris[data-partner=\"{name}\"][data-job=\"{job}\"]"
                )))
                .next()
            })
            .map(|row| cell(row, "accepted"))
            .sum();
        assert_eq!(dashboard as u64, p.dashboard_events, "{name}");
    }

    // The error table's open rows by code.
    let open: Vec<(String, i64)> = sqlx::query_as(
        "SELECT err_code, count(*) FROM tb_dc_error_data_info
          WHERE status IN ('PENDING', 'REGENERATED') GROUP BY err_code",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert!(
        open.iter().any(|(c, n)| c == "XAPI_VAL_ERR" && *n >= 4),
        "{open:?}"
    );
    let shown: Vec<(String, i64)> = dom
        .select(&sel("#open-errors tr.open-error"))
        .map(|tr| {
            (
                tr.value().attr("data-code").unwrap().to_string(),
                cell(tr, "open"),
            )
        })
        .collect();
    let (mut a, mut b) = (open.clone(), shown);
    a.sort();
    b.sort();
    assert_eq!(a, b, "open rows by code");

    // What failed and why.
    let failures: Vec<(String, String, String)> = dom
        .select(&sel("#failures tr.failure"))
        .map(|tr| {
            let v = tr.value();
            (
                v.attr("data-job").unwrap().to_string(),
                v.attr("data-status").unwrap().to_string(),
                text(tr),
            )
        })
        .collect();
    let jobs: Vec<(&str, &str)> = failures
        .iter()
        .map(|(j, s, _)| (j.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        jobs,
        [
            ("DC-01-002", "MISSING"),
            ("DC-01-001", "COMPLETED_WITH_ERRORS"),
            ("LCMS-01-001", "FAILED")
        ]
    );
    let lcms_error: String =
        sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE job_id = 'LCMS-01-001'")
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert!(lcms_error.contains("jobs.lcms_copy.source_url"));
    assert!(
        failures[2].2.contains(lcms_error.trim()),
        "{}",
        failures[2].2
    );
    assert!(
        failures[1].2.contains("4 item(s) failed"),
        "{}",
        failures[1].2
    );
    let verdict = dom.select(&sel("#verdict")).next().unwrap();
    assert_eq!(verdict.value().attr("data-failed"), Some("1"));
    assert!(
        text(verdict).contains("no run of DC-01-002"),
        "{}",
        text(verdict)
    );

    // A screenshot of the page as a person sees it.
    let shot = dir.join("night.png");
    let out = browser(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,3200")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!(
        "night report: {} (screenshot {})",
        page.display(),
        shot.display()
    );
}
