//! The operator commands: list, history, crontab, migrate, check.

use std::io::{Read, Write};
use std::net::TcpListener;

use crate::helpers::*;

#[test]
fn the_committed_crontab_is_the_one_the_registry_builds() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crontab/aidt-batch"))
            .unwrap();
    let built = aidt_batch::runtime::crontab::render(
        &aidt_batch::jobs::REGISTRY,
        aidt_batch::config::Profile::Prod,
        aidt_batch::runtime::crontab::Form::User,
    );
    assert!(
        committed == built,
        "crontab/aidt-batch is out of date: run `cargo run -- crontab > crontab/aidt-batch`"
    );
    // And the command prints exactly that.
    let out = bin().arg("crontab").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), committed);
}

#[test]
fn crontab_lines_run_the_jobs_with_the_seeds_times_fixed() {
    let text = aidt_batch::runtime::crontab::render(
        &aidt_batch::jobs::REGISTRY,
        aidt_batch::config::Profile::Prod,
        aidt_batch::runtime::crontab::Form::User,
    );
    let active: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("aidt-batch "))
        .collect();
    assert!(active
        .iter()
        .any(|l| l.starts_with("*/10 * * * * ") && l.contains("bo-01-002 --profile prod")));
    assert!(active
        .iter()
        .any(|l| l.starts_with("5 0 * * * ") && l.contains("bo-01-005")));
    assert!(active
        .iter()
        .any(|l| l.starts_with("0 4 * * * ") && l.contains("lms-01-001")));
    assert!(active
        .iter()
        .any(|l| l.starts_with("0 * * * * ") && l.contains("lms-01-008")));
    // Unscheduled in the seed; at dawn after LMS-01-008's 04:00 run.
    assert!(active
        .iter()
        .any(|l| l.starts_with("50 4 * * * ") && l.contains("dc-01-004")));
    assert!(text.contains("# */30 * * * * ") || active.iter().any(|l| l.starts_with("*/30 ")));
    assert!(text.contains("lcms-01-001 --profile prod"));
    assert!(text.contains("unscheduled: the seed leaves it undecided"));
}

#[tokio::test]
async fn list_shows_every_job_with_schedule_and_last_run_status() {
    let env = TestEnv::new().await;
    env.run_ok("BO-01-005", None, false).await;
    let out = env.run_cli(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 25, "{text}");
    let bo5 = text.lines().find(|l| l.starts_with("bo-01-005")).unwrap();
    assert!(
        bo5.contains("5 0 * * *") && bo5.contains("COMPLETED") && bo5.contains("공지사항"),
        "{bo5}"
    );
    let lms8 = text.lines().find(|l| l.starts_with("lms-01-008")).unwrap();
    assert!(
        lms8.contains("0 * * * *") && lms8.contains("never run"),
        "{lms8}"
    );
}

#[test]
fn list_works_without_a_database() {
    let out = bin()
        .arg("list")
        .env("AIDT_CONFIG_DIR", config_dir())
        .env(
            "AIDT__DATABASE__URL",
            "postgres://aidt:x@127.0.0.1:1/aidt?sslmode=disable",
        )
        .env("AIDT__DATABASE__CONNECT_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).lines().count(), 25);
    assert!(stderr(&out).contains("last runs unavailable"));
}

#[test]
fn list_keeps_the_order_of_the_seeds_table() {
    // The seed's job table, row by row.
    let seed = [
        "LMS-01-001",
        "LMS-01-002",
        "LMS-01-003",
        "LMS-01-004",
        "LMS-01-005",
        "LMS-01-006",
        "LMS-01-007",
        "LMS-01-008",
        "LMS-01-009",
        "LMS-01-010",
        "DC-01-001",
        "DC-01-002",
        "DC-01-003",
        "DC-01-004",
        "LRS-01-001",
        "LRS-01-002",
        "LCMS-01-001",
        "BO-01-001",
        "BO-01-002",
        "BO-01-003",
        "BO-01-004",
        "BO-01-005",
        "BO-05-006",
        "BO-01-007",
    ];
    let out = bin()
        .arg("list")
        .env("AIDT_CONFIG_DIR", config_dir())
        .env(
            "AIDT__DATABASE__URL",
            "postgres://aidt:x@127.0.0.1:1/aidt?sslmode=disable",
        )
        .env("AIDT__DATABASE__CONNECT_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|first| seed.iter().any(|id| id.eq_ignore_ascii_case(first)))
        .map(str::to_ascii_uppercase)
        .collect();
    assert_eq!(listed, seed);
}

#[tokio::test]
async fn history_shows_runs_with_date_status_counts_and_errors() {
    let env = TestEnv::new().await;
    sqlx::query("INSERT INTO tb_bo_notice (title, disp_yn, disp_end_dt) VALUES ('old', 'Y', now() - interval '1 day')")
        .execute(env.pg())
        .await
        .unwrap();
    env.run_ok("BO-01-005", Some(date("2026-03-05")), true)
        .await;
    env.run_ok("BO-01-005", None, false).await;
    env.run_ok("BO-01-002", None, false).await;

    let out = env.run_cli(&["history", "BO-01-005", "--limit", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "header + 2 runs of BO-01-005: {text}");
    assert!(lines[0].contains("STATUS") && lines[0].contains("DURATION"));
    assert!(
        lines[1].contains("bo-01-005")
            && lines[1].contains("COMPLETED")
            && !lines[1].contains("(dry)")
    );
    assert!(
        lines[2].contains("2026-03-05") && lines[2].contains("COMPLETED (dry)"),
        "{}",
        lines[2]
    );

    let all = stdout(&env.run_cli(&["history", "--limit", "1"]));
    assert_eq!(all.lines().count(), 2);
    assert!(all.contains("bo-01-002"));

    let bad = env.run_cli(&["history", "bo-01-05"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("did you mean `bo-01-005`"));
}

#[tokio::test]
async fn migrate_creates_the_batch_tables_and_is_idempotent_without_touching_contract_tables() {
    let env = TestEnv::empty().await;
    for _ in 0..2 {
        let out = env.run_cli(&["migrate"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "batch_checkpoint",
            "batch_job_run",
            "batch_keris_request",
            "batch_lcms_watermark",
            "batch_lrs_watermark",
            "batch_pm_maintenance",
            "batch_privacy_audit",
            "batch_privacy_completed",
            "batch_view_watermark"
        ]
    );
    let names = env
        .app
        .mongo
        .collection::<mongodb::bson::Document>("keris_batch_data")
        .list_index_names()
        .await
        .unwrap();
    assert!(names.len() >= 3, "{names:?}");
}

#[tokio::test]
async fn dev_commands_are_refused_in_prod() {
    let env = TestEnv::empty().await;
    let out = env.run_dev(&["schema", "--profile", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("refused in the prod profile"));
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(tables, 0);
}

/// A loopback HTTP server that answers every request with 404, as an API
/// gateway does for `GET /`.
fn http_stub() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    port
}

#[tokio::test]
async fn check_gives_a_verdict_per_dependency() {
    let env = TestEnv::new().await;
    let port = http_stub();
    let out = env
        .command(&["check"])
        .env(
            "AIDT__KERIS__API_DOMAIN",
            format!("http://127.0.0.1:{port}"),
        )
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for what in ["config", "privacy", "postgresql", "mongodb", "keris"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("{what}: {text}"));
        assert!(line.contains(" OK "), "{line}");
    }
    assert!(text.contains("HTTP 404"));
    assert!(
        !text.contains("0b6a4a8e"),
        "partner ids never print: {text}"
    );
    assert!(
        !text.contains("local-privacy-audit-salt"),
        "the salt never prints: {text}"
    );

    // KERIS down: that line fails, the exit says so, the others still pass.
    let out = env
        .command(&["check"])
        .env("AIDT__KERIS__API_DOMAIN", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("keris") && l.contains("FAIL") && l.contains("unreachable")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("postgresql") && l.contains(" OK ")),
        "{text}"
    );
}

#[tokio::test]
async fn check_reports_an_unmigrated_database_an_unreachable_mongo_and_a_missing_audit_salt() {
    let env = TestEnv::empty().await;
    let out = env
        .command(&["check"])
        .env(
            "AIDT__MONGO__URI",
            "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1000",
        )
        .env("AIDT__JOBS__PRIVACY__AUDIT_SALT", "")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let privacy = text
        .lines()
        .find(|l| l.starts_with("privacy"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        privacy.contains("FAIL")
            && privacy.contains("jobs.privacy.audit_salt")
            && privacy.contains("AIDT__JOBS__PRIVACY__AUDIT_SALT"),
        "{privacy}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("postgresql")
            && l.contains("FAIL")
            && l.contains("aidt-batch migrate")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("mongodb") && l.contains("FAIL")),
        "{text}"
    );
}

#[test]
fn scripts_test_prints_the_database_url_with_its_password_masked() {
    // A stand-in `cargo` first on PATH: the script's own cargo calls only
    // print their arguments (a real one would wait for this test run's lock).
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("cargo");
    std::fs::write(&fake, "#!/bin/sh\necho \"cargo $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test"))
        .arg("--help")
        .env("PATH", path)
        .env(
            "DATABASE_URL",
            "postgres://aidt:pa55-w0rd@127.0.0.1:5432/aidt?sslmode=disable",
        )
        .env("MONGODB_URI", "mongodb://batch:m0ngo-pw@127.0.0.1:27017/")
        // A package already built: no release build through the stand-in.
        .env("AIDT_DEB", "/nonexistent/aidt-batch.deb")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("DATABASE_URL=postgres://aidt:***@127.0.0.1:5432/aidt"),
        "{err}"
    );
    assert!(
        err.contains("MONGODB_URI=mongodb://batch:***@127.0.0.1"),
        "{err}"
    );
    assert!(
        !err.contains("pa55-w0rd") && !err.contains("m0ngo-pw"),
        "{err}"
    );
}

#[test]
fn every_job_appears_once_and_unscheduled_ones_are_commented_out() {
    use aidt_batch::runtime::crontab::{render, Form};
    // A scheduled line's user and command (the system form has a user field).
    for (form, user, bin) in [
        (Form::User, "", "/opt/aidt-batch/bin/aidt-batch"),
        (
            Form::System,
            "aidt [ -x /usr/bin/aidt-batch ] && ",
            "/usr/bin/aidt-batch",
        ),
    ] {
        let command = format!("{user}{bin}");
        let text = render(
            &aidt_batch::jobs::REGISTRY,
            aidt_batch::config::Profile::Prod,
            form,
        );
        for job in aidt_batch::jobs::REGISTRY.iter() {
            // One line per scheduled start (LCMS-01-001: daily, and weekly
            // --full), a commented one for an unscheduled job.
            let needle = format!("{bin} {} --profile prod", job.cli_name());
            let starts = job.scheduled_runs().len().max(1);
            assert_eq!(text.matches(&needle).count(), starts, "{form:?} {}", job.id);
        }
        assert!(
            text.contains(&format!(
                "\n30 2 * * 0 {command} lcms-01-001 --profile prod --full >> /var/log/aidt-batch/lcms-01-001.log 2>&1\n"
            )),
            "{form:?}: LCMS-01-001's weekly full read"
        );
        for line in text.lines().filter(|l| l.contains("lms-01-009")) {
            assert!(line.starts_with('#'), "{line}");
        }
        // No line sources the env file: the binary reads it (AIDT_ENV_FILE).
        let env_line = text.lines().find(|l| l.starts_with("AIDT_ENV_FILE="));
        assert!(env_line.is_some(), "{form:?}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains(". /") && !line.contains("source "), "{line}");
        }
        assert!(text.contains("\nCRON_TZ=Asia/Seoul\n") && text.contains("\nSHELL=/bin/bash\n"));
        // DC-01-004 is unscheduled in the seed; aidt-batch runs it at dawn after LMS-01-008.
        assert!(
            text.contains(&format!("\n50 4 * * * {command} dc-01-004 ")),
            "DC-01-004 at 04:50"
        );
    }
    let text = render(
        &aidt_batch::jobs::REGISTRY,
        aidt_batch::config::Profile::Prod,
        Form::User,
    );
    let schedules = text
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter(|l| l.contains("aidt-batch "));
    for line in schedules {
        assert!(
            !line.starts_with("_/"),
            "the seed's mangled */N must be fixed: {line}"
        );
    }
    assert!(
        text.contains("\n*/10 * * * * "),
        "BO-01-002 every 10 minutes"
    );
}
