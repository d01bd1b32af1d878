//! `history --status/--since/--date`, `purge --older-than DAYS`, and the
//! completions and man page generated from the command line.

use std::collections::BTreeSet;
use std::process::Command;

use crate::helpers::{bin, date, stderr, stdout, TestEnv};

/// Inserts a finished run, `age_days` old, and returns its id.
async fn past_run(
    env: &TestEnv,
    job: &str,
    business_date: &str,
    status: &str,
    age_days: i32,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO batch_job_run (job_id, business_date, status, started_at, ended_at, host, pid, version)
         VALUES ($1, $2, $3, now() - make_interval(days => $4), now() - make_interval(days => $4), 'h', 1, 't')
         RETURNING run_id",
    )
    .bind(job)
    .bind(date(business_date))
    .bind(status)
    .bind(age_days)
    .fetch_one(env.pg())
    .await
    .unwrap()
}

/// The run ids `history` printed (first column).
fn ids(out: &std::process::Output) -> Vec<i64> {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    stdout(out)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn history_filters_by_status_start_and_business_date() {
    let env = TestEnv::new().await;
    let old_failed = past_run(&env, "DC-01-001", "2026-03-01", "FAILED", 10).await;
    let old_ok = past_run(&env, "DC-01-001", "2026-03-01", "COMPLETED", 10).await;
    let stopped = past_run(&env, "LRS-01-001", "2026-03-04", "STOPPED", 2).await;
    let errors = past_run(&env, "DC-01-001", "2026-03-04", "COMPLETED_WITH_ERRORS", 1).await;
    let fresh = env
        .run_ok("BO-01-005", Some(date("2026-03-04")), false)
        .await;

    let all = ids(&env.run_cli(&["history"]));
    assert_eq!(all, [fresh, errors, stopped, old_ok, old_failed]);

    let bad = ids(&env.run_cli(&["history", "--status", "failed,stopped"]));
    assert_eq!(bad, [stopped, old_failed]);
    let cwe = ids(&env.run_cli(&["history", "--status", "COMPLETED_WITH_ERRORS"]));
    assert_eq!(cwe, [errors]);
    let recent = ids(&env.run_cli(&["history", "--since", "3d"]));
    assert_eq!(recent, [fresh, errors, stopped]);
    let day = ids(&env.run_cli(&["history", "--date", "2026-03-04"]));
    assert_eq!(day, [fresh, errors, stopped]);
    let combined = ids(&env.run_cli(&[
        "history",
        "dc-01-001",
        "--date",
        "2026-03-01",
        "--status",
        "completed",
    ]));
    assert_eq!(combined, [old_ok]);
    // A date-and-time --since in KST: the start of the run 2 days old, less a minute.
    let since: String = sqlx::query_scalar(
        "SELECT to_char((started_at - interval '1 minute') AT TIME ZONE 'Asia/Seoul', 'YYYY-MM-DD\"T\"HH24:MI')
           FROM batch_job_run WHERE run_id = $1",
    )
    .bind(stopped)
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(
        ids(&env.run_cli(&["history", "--since", &since])),
        [fresh, errors, stopped]
    );

    let none = env.run_cli(&["history", "--status", "skipped"]);
    assert!(stdout(&none).contains("(no runs recorded)"));
    let wrong = env.run_cli(&["history", "--status", "done"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("--status"), "{}", stderr(&wrong));
    let wrong = env.run_cli(&["history", "--since", "last week"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("--since"), "{}", stderr(&wrong));
}

#[tokio::test]
async fn purge_deletes_old_history_but_keeps_started_referenced_and_latest_runs() {
    let env = TestEnv::new().await;
    let pg = env.pg();
    // Old runs of a job with newer ones: these go.
    let gone_failed = past_run(&env, "BO-01-005", "2026-01-01", "FAILED", 100).await;
    let gone_ok = past_run(&env, "BO-01-005", "2026-01-02", "COMPLETED", 99).await;
    // Old, but still STARTED (a stale run the next start marks FAILED).
    let started = past_run(&env, "BO-01-001", "2026-01-01", "STARTED", 100).await;
    // Old runs another batch table names.
    let audited = past_run(&env, "LMS-01-007", "2026-01-01", "COMPLETED", 100).await;
    sqlx::query(
        "INSERT INTO batch_privacy_audit (run_id, job_id, business_date, dry_run, reference_time, grace_days)
         VALUES ($1, 'LMS-01-007', '2026-01-01', false, now(), 30)",
    )
    .bind(audited)
    .execute(pg)
    .await
    .unwrap();
    let completed_student = past_run(&env, "DC-01-003", "2026-01-01", "COMPLETED", 100).await;
    sqlx::query(
        "INSERT INTO batch_privacy_completed (job_id, student_hash, grace_anchor, run_id)
         VALUES ('DC-01-003', 'abc', now(), $1)",
    )
    .bind(completed_student)
    .execute(pg)
    .await
    .unwrap();
    let checkpointed = past_run(&env, "LRS-01-001", "2026-01-01", "STOPPED", 100).await;
    sqlx::query("INSERT INTO batch_checkpoint (job_id, business_date, run_id, data) VALUES ('LRS-01-001', '2026-01-01', $1, '{}')")
        .bind(checkpointed)
        .execute(pg)
        .await
        .unwrap();
    let journaled = past_run(&env, "DC-01-001", "2026-01-01", "FAILED", 100).await;
    sqlx::query(
        "INSERT INTO batch_keris_request (job_id, base_dt, partner_name, transfer_id, chunked_index, statement_ids, run_id)
         VALUES ('DC-01-001', '2026-01-01', 'demo', 't', 1, '{}', $1)",
    )
    .bind(journaled)
    .execute(pg)
    .await
    .unwrap();
    // The last run of a job, however old (what `list` shows), and the last
    // COMPLETED one before a newer failure.
    let latest_only = past_run(&env, "LMS-01-009", "2026-01-01", "COMPLETED", 100).await;
    let last_good = past_run(&env, "DC-01-002", "2026-01-01", "COMPLETED", 100).await;
    let older_good = past_run(&env, "DC-01-002", "2025-12-31", "COMPLETED", 101).await;
    let newer_bad = past_run(&env, "DC-01-002", "2026-01-02", "FAILED", 99).await;
    // Recent runs stay.
    let recent = past_run(&env, "BO-01-005", "2026-03-01", "COMPLETED", 3).await;
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_privacy_audit")
        .fetch_one(pg)
        .await
        .unwrap();

    let dry = env.run_cli(&["purge", "--older-than", "30", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("would delete 3 run(s)"),
        "{}",
        stdout(&dry)
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_job_run")
        .fetch_one(pg)
        .await
        .unwrap();
    assert_eq!(count, 12, "a dry run deletes nothing");

    let out = env.run_cli(&["purge", "--older-than", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("deleted 3 run(s)"), "{text}");
    assert!(
        text.contains("1 still STARTED")
            && text.contains("4 named by")
            && text.contains("batch_privacy_audit.run_id"),
        "{text}"
    );
    let left: BTreeSet<i64> = sqlx::query_scalar("SELECT run_id FROM batch_job_run")
        .fetch_all(pg)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: BTreeSet<i64> = [
        started,
        audited,
        completed_student,
        checkpointed,
        journaled,
        latest_only,
        last_good,
        newer_bad,
        recent,
    ]
    .into_iter()
    .collect();
    assert_eq!(left, expected);
    for gone in [gone_failed, gone_ok, older_good] {
        assert!(!left.contains(&gone));
    }
    let audit_after: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_privacy_audit")
        .fetch_one(pg)
        .await
        .unwrap();
    assert_eq!(audit_after, audit_rows, "the privacy audit is never purged");

    // Again: nothing more to delete.
    let again = env.run_cli(&["purge", "--older-than", "30"]);
    assert!(
        stdout(&again).contains("deleted 0 run(s)"),
        "{}",
        stdout(&again)
    );
    let zero = env.run_cli(&["purge", "--older-than", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
}

#[test]
fn bash_completion_offers_the_commands_job_ids_and_options() {
    let script = bin().args(["completions", "bash"]).output().unwrap();
    assert_eq!(script.status.code(), Some(0), "{}", stderr(&script));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aidt-batch.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    // What bash offers after `aidt-batch ` and after `aidt-batch history --`.
    let complete = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; f=$(complete -p aidt-batch | sed -E 's/.*-F ([^ ]+).*/\\1/'); \
                 COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
                 \"$f\" aidt-batch \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| l.trim().to_string())
            .collect::<BTreeSet<String>>()
    };
    let first = complete("aidt-batch ''", 1);
    for word in [
        "history",
        "purge",
        "report",
        "completions",
        "man",
        "lms-01-001",
        "dc-01-002",
        "bo-01-007",
    ] {
        assert!(first.contains(word), "{word} not offered: {first:?}");
    }
    let history = complete("aidt-batch history --", 2);
    for option in ["--status", "--since", "--date", "--limit"] {
        assert!(history.contains(option), "{option}: {history:?}");
    }
    let job = complete("aidt-batch dc-01-001 --", 2);
    assert!(
        job.contains("--dry-run") && job.contains("--date"),
        "{job:?}"
    );

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(stdout(&out).contains("lms-01-008"), "{shell}");
    }
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_renders_with_every_command_and_a_page_per_job() {
    let out = bin().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let roff = stdout(&out);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH aidt-batch"),
        "{}",
        &roff[..200.min(roff.len())]
    );
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("aidt-batch.1");
    std::fs::write(&page, &out.stdout).unwrap();
    // As `man` shows it: rendered by groff, plain text.
    let shown = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&page)
        .env("MANWIDTH", "120")
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    for word in [
        "aidt-batch",
        "history",
        "purge",
        "report",
        "completions",
        "lms-01-001",
        "bo-01-007",
        "--profile",
    ] {
        assert!(text.contains(word), "{word} missing from the man page");
    }

    let pages = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["man", "--out-dir", pages.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for def in aidt_batch::jobs::REGISTRY.iter() {
        let file = pages
            .path()
            .join(format!("aidt-batch-{}.1", def.cli_name()));
        let roff = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{}", file.display()));
        // Each job's page carries its own help text (roff escapes `-`).
        let first_words: String = def
            .about
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            roff.replace("\\-", "-").contains(&first_words),
            "{}: {first_words}",
            def.id
        );
    }
    assert!(pages.path().join("aidt-batch-history.1").is_file());
}
