//! The shared runtime with real processes: locks, stale runs, signals,
//! checkpoints, history.

use std::time::Duration;

use aidt_batch::runtime::history::RunStatus;
use aidt_batch::runtime::Exit;

use crate::helpers::*;

/// Old access-log rows for LMS-01-001 to delete slowly: with the settings of
/// `slow_env` a run takes `rows / 100 * 100 ms`.
pub(crate) async fn seed_old_access_logs(env: &TestEnv, rows: i64) {
    sqlx::query(
        "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at)
         SELECT gen_random_uuid(), '/lrn/' || g, '10.0.0.1', now() - interval '200 days'
           FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(env.pg())
    .await
    .unwrap();
}

pub(crate) fn slow(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("AIDT__JOBS__LMS_01_001__BATCH_SIZE", "100")
        .env("AIDT__JOBS__LMS_01_001__PAUSE_MS", "100")
}

pub(crate) async fn access_log_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tb_lms_access_log")
        .fetch_one(env.pg())
        .await
        .unwrap()
}

pub(crate) const STARTED: &str =
    "SELECT EXISTS (SELECT 1 FROM batch_job_run WHERE status = 'STARTED' AND write_cnt > 0)";

#[tokio::test]
async fn two_concurrent_runs_of_one_job_exactly_one_runs_the_other_exits_3() {
    let env = TestEnv::new().await;
    seed_old_access_logs(&env, 3000).await;

    let mut first = slow(&mut env.command(&["lms-01-001"])).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;
    let second = slow(&mut env.command(&["lms-01-001"])).output().unwrap();
    assert_eq!(second.status.code(), Some(3), "{}", stderr(&second));

    let first = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(first.code(), Some(0));

    let rows: Vec<(String, Option<i32>, Option<String>)> =
        sqlx::query_as("SELECT status, exit_code, error_msg FROM batch_job_run ORDER BY run_id")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "COMPLETED");
    assert_eq!(rows[1].0, "SKIPPED");
    assert_eq!(rows[1].1, Some(3));
    let reason = rows[1].2.as_deref().unwrap();
    assert!(
        reason.contains("already running") && reason.contains("run 1"),
        "{reason}"
    );
    assert_eq!(access_log_count(&env).await, 0);
}

#[tokio::test]
async fn a_killed_run_is_found_on_the_next_start_and_marked_failed() {
    let env = TestEnv::new().await;
    seed_old_access_logs(&env, 3000).await;

    let mut child = slow(&mut env.command(&["lms-01-001"])).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;
    signal(child.id(), "KILL");
    child.wait().unwrap();
    let left = access_log_count(&env).await;
    assert!(left > 0 && left < 3000, "killed mid-way: {left} left");

    // The next start finds the dead run, then finishes the work.
    let out = env.run_cli(&["lms-01-001"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<(i64, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT run_id, status, error_msg, write_cnt FROM batch_job_run ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1, "FAILED");
    let reason = rows[0].2.as_deref().unwrap();
    assert!(
        reason.contains("process ended without recording an outcome") && reason.contains("pid"),
        "{reason}"
    );
    assert!(rows[0].3 > 0, "the dead run's checkpointed counts survive");
    assert_eq!(rows[1].1, "COMPLETED");
    assert_eq!(rows[1].3, left, "the rerun deleted exactly what was left");
    assert_eq!(access_log_count(&env).await, 0);
}

#[tokio::test]
async fn sigterm_stops_the_run_after_the_current_batch_with_stopped_and_exit_143() {
    let env = TestEnv::new().await;
    seed_old_access_logs(&env, 3000).await;

    let mut child = slow(&mut env.command(&["lms-01-001"])).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;
    signal(child.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(143));

    let (status, exit_code, written, error): (String, Option<i32>, i64, Option<String>) =
        sqlx::query_as("SELECT status, exit_code, write_cnt, error_msg FROM batch_job_run")
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(status, "STOPPED");
    assert_eq!(exit_code, Some(143));
    // It reached its next stop point (not abandoned after the grace time).
    assert_eq!(
        error.as_deref(),
        Some("stopped on request before finishing")
    );
    let left = access_log_count(&env).await;
    assert_eq!(
        written,
        3000 - left,
        "the history counts match what was deleted"
    );
    // Stopped between batches: a whole number of batches was deleted.
    assert_eq!(left % 100, 0);
    let checkpoint: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM batch_checkpoint WHERE job_id = 'LMS-01-001'")
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(
        checkpoint["deleted"]["tb_lms_access_log"],
        serde_json::json!(3000 - left)
    );

    // A rerun finishes the job and clears the checkpoint.
    let out = env.run_cli(&["lms-01-001"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(access_log_count(&env).await, 0);
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_checkpoint")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(checkpoints, 0);
}

#[tokio::test]
async fn sigint_stops_with_exit_130() {
    let env = TestEnv::new().await;
    seed_old_access_logs(&env, 3000).await;
    let mut child = slow(&mut env.command(&["lms-01-001"])).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;
    signal(child.id(), "INT");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(run_status(env.pg(), 1).await, RunStatus::Stopped);
}

#[tokio::test]
async fn a_run_records_history_with_params_host_pid_and_version() {
    let env = TestEnv::new().await;
    let out = env.run_cli(&["bo-01-005", "--date", "2026-03-05"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (date, params, host, pid, version, ended): (
        chrono::NaiveDate,
        serde_json::Value,
        String,
        i32,
        String,
        bool,
    ) = sqlx::query_as(
        "SELECT business_date, params, host, pid, version, ended_at IS NOT NULL FROM batch_job_run",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(date, date_of("2026-03-05"));
    assert_eq!(params["date"], "2026-03-05");
    assert_eq!(params["profile"], "local");
    assert!(!host.is_empty() && pid > 0 && ended);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // Every log line of the run carries the job id and run id.
    let err = stderr(&out);
    let run_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("run started") || l.contains("run finished"))
        .collect();
    assert_eq!(run_lines.len(), 2, "{err}");
    for line in run_lines {
        assert!(
            line.contains("job_id=\"BO-01-005\"") || line.contains("job_id=BO-01-005"),
            "{line}"
        );
        assert!(line.contains("run_id=1"), "{line}");
    }
}

fn date_of(s: &str) -> chrono::NaiveDate {
    date(s)
}

/// Every non-empty stderr line of a prod-profile run is JSON with the run's
/// `job_id` and `run_id` on the top level; returns the lines' messages. The
/// warnings of the clear-text transport the test allows come before the run
/// row exists: they carry the job id only.
fn assert_every_line_carries_the_run(err: &str, job_id: &str, run_id: i64) -> Vec<String> {
    let mut messages = Vec::new();
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("clear-text transport allowed") {
            assert_eq!(v["job_id"], job_id, "{line}");
            assert!(messages.is_empty(), "before the run: {line}");
            continue;
        }
        assert_eq!(v["job_id"], job_id, "{line}");
        assert_eq!(v["run_id"], run_id, "{line}");
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    messages
}

#[tokio::test]
async fn every_prod_log_line_of_a_run_carries_job_and_run_id_retry_warnings_included() {
    let env = TestEnv::new().await;
    crate::locks::seed_dashboard_student(&env).await;
    // prod refuses the repository's demo Partner-ID: the student is a site's.
    let partner = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    sqlx::query("UPDATE tb_lms_user SET partner_id = $1::uuid")
        .bind(partner)
        .execute(env.pg())
        .await
        .unwrap();
    // The first KERIS call fails with a 500: the client logs a retry warning
    // from its own span, nested in the run's.
    let sim = keris_simulator::start(keris_simulator::SimulatorConfig {
        faults: keris_simulator::Faults {
            server_error_next: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cmd = env.command(&["lms-01-008", "--profile", "prod"]);
    // prod.toml has no API domain or partners: the environment supplies them
    // (the simulator and the test database take no TLS: allowed here).
    cmd.env("AIDT__KERIS__API_DOMAIN", sim.base_url())
        .env("AIDT__KERIS__ALLOW_INSECURE", "true")
        .env("AIDT__DATABASE__ALLOW_INSECURE", "true")
        .env("AIDT__KERIS__PARTNERS__DEMO__PARTNER_ID", partner)
        .env("AIDT__KERIS__BASE_BACKOFF_MS", "10");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let messages = assert_every_line_carries_the_run(&err, "LMS-01-008", 1);
    assert!(
        messages.iter().any(|m| m.contains("retrying")),
        "a retry warning was logged: {err}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("run finished")),
        "{err}"
    );
    assert!(!err.contains(partner), "no Partner-ID: {err}");
}

#[tokio::test]
async fn the_signal_listeners_prod_log_lines_carry_job_and_run_id() {
    let env = TestEnv::new().await;
    seed_old_access_logs(&env, 3000).await;
    let mut cmd = env.command(&["lms-01-001", "--profile", "prod"]);
    cmd.env("AIDT__KERIS__API_DOMAIN", "https://127.0.0.1:9")
        .env("AIDT__DATABASE__ALLOW_INSECURE", "true")
        .env(
            "AIDT__KERIS__PARTNERS__BRAND_A__PARTNER_ID",
            "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        )
        .stderr(std::process::Stdio::piped());
    let child = slow(&mut cmd).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;
    signal(child.id(), "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(143));
    let err = stderr(&out);
    let messages = assert_every_line_carries_the_run(&err, "LMS-01-001", 1);
    assert!(
        messages.iter().any(|m| m.starts_with("stop requested")),
        "{err}"
    );
    assert!(!err.contains("3f2504e0-4f89-41d3-9a0c-0305e82c3301"));
}

#[tokio::test]
async fn an_unmigrated_database_is_reported_with_the_fix() {
    let env = TestEnv::empty().await;
    let out = env.run_cli(&["bo-01-005"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("run `aidt-batch migrate`"),
        "{}",
        stderr(&out)
    );
}

/// Ends the PostgreSQL session holding the run's advisory lock, as
/// `idle_session_timeout`, a failover or a proxy would.
async fn end_lock_session(env: &TestEnv) {
    let ended: bool = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
          WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert!(ended, "the lock's session was ended");
}

async fn wait_child(child: std::process::Child) -> Option<i32> {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().status.code())
        .await
        .unwrap()
}

/// (status, exit_code, error_msg) of every run, in order.
async fn outcomes(env: &TestEnv) -> Vec<(String, Option<i32>, Option<String>)> {
    sqlx::query_as("SELECT status, exit_code, error_msg FROM batch_job_run ORDER BY run_id")
        .fetch_all(env.pg())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_run_whose_lock_session_ends_stops_at_its_next_stop_point_as_failed() {
    let env = TestEnv::new().await;
    // 300 batches of 100 rows with 100 ms between them: half a minute of work.
    seed_old_access_logs(&env, 30_000).await;
    let mut cmd = env.command(&["lms-01-001"]);
    cmd.env("AIDT__RUNTIME__LOCK_PROBE_SECS", "1");
    let child = slow(&mut cmd).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;

    end_lock_session(&env).await;
    assert_eq!(wait_child(child).await, Some(1));

    let runs = outcomes(&env).await;
    assert_eq!(runs.len(), 1);
    let (status, exit_code, error) = &runs[0];
    assert_eq!((status.as_str(), *exit_code), ("FAILED", Some(1)));
    let error = error.as_deref().unwrap();
    assert!(
        error.contains("lost its lock aidt-batch/job/LMS-01-001")
            && error.contains("stopped at its next stop point"),
        "{error}"
    );
    let left = access_log_count(&env).await;
    assert!(left > 0, "stopped before its work was done");

    // The lock is free again: a rerun finishes what is left.
    let out = env.run_cli(&["lms-01-001"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(access_log_count(&env).await, 0);
}

#[tokio::test]
async fn a_run_that_lost_its_lock_to_a_later_start_stays_failed_and_exits_1() {
    let env = TestEnv::new().await;
    seed_old_access_logs(&env, 30_000).await;
    // It checks its lock only when its work is done.
    let mut cmd = env.command(&["lms-01-001"]);
    cmd.env("AIDT__RUNTIME__LOCK_PROBE_SECS", "3600");
    let child = slow(&mut cmd).spawn().unwrap();
    env.wait_until(STARTED, Duration::from_secs(20)).await;

    end_lock_session(&env).await;
    // The next start gets the lock, finds the first run's lock free, marks it
    // FAILED and deletes the rest while the first one is still going.
    let second = env.run_job("LMS-01-001", None, false).await;
    assert_eq!(second.exit, Exit::Success);
    assert_eq!(wait_child(child).await, Some(1));

    let runs = outcomes(&env).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].0, "FAILED", "{runs:?}");
    let reason = runs[0].2.as_deref().unwrap();
    assert!(reason.contains("found by a later start"), "{reason}");
    assert_eq!(
        (runs[1].0.as_str(), runs[1].1),
        ("COMPLETED", Some(0)),
        "{runs:?}"
    );
    assert_eq!(access_log_count(&env).await, 0);
}

#[tokio::test]
async fn finish_leaves_a_run_another_process_marked_failed_as_it_is() {
    use aidt_batch::runtime::history::{self, Finish, NewRun, Recorded, RunStatus, Runner};
    let env = TestEnv::new().await;
    let runner = Runner::current();
    let new_run = NewRun {
        job_id: "LMS-01-001",
        business_date: date("2026-03-05"),
        params: serde_json::json!({}),
        dry_run: false,
        runner: &runner,
    };
    let completed = Finish {
        status: RunStatus::Completed,
        counts: Default::default(),
        exit_code: 0,
        error: None,
        details: serde_json::json!({}),
    };
    let failed = history::insert_started(env.pg(), &new_run).await.unwrap();
    history::mark_abandoned(env.pg(), failed, "found by a later start")
        .await
        .unwrap();
    let live = history::insert_started(env.pg(), &new_run).await.unwrap();

    assert_eq!(
        history::finish(env.pg(), failed, &completed).await.unwrap(),
        Recorded::AlreadyEnded {
            status: "FAILED".into(),
            error: Some("found by a later start".into())
        }
    );
    assert_eq!(
        history::finish(env.pg(), live, &completed).await.unwrap(),
        Recorded::Yes
    );
    let runs = outcomes(&env).await;
    assert_eq!(
        runs,
        [
            ("FAILED".into(), None, Some("found by a later start".into())),
            ("COMPLETED".into(), Some(0), None),
        ]
    );
}
