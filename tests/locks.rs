//! Locks with real processes: jobs that write the same data never run at
//! once, whatever their business dates; a busy lock is waited for up to the
//! job's `lock_wait_secs`, then the run is recorded `SKIPPED` with exit 3.
//!
//! The run holding the lock is made slow by the KERIS simulator answering
//! its first call only after a few seconds (well within the client's
//! timeout), so the second process starts while the first one still runs.

use std::process::Child;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use uuid::Uuid;

use crate::helpers::*;

/// The Partner-ID of `config/local.toml`'s made-up partner `demo`.
pub const DEMO_PARTNER: &str = "0b6a4a8e-3f4c-4d0e-9a51-2d1f6f1c0001";
const DATE: &str = "2026-03-05";

/// A simulator whose first call is answered only after `secs`.
async fn slow_simulator(secs: f64) -> SimulatorHandle {
    simulator::start(SimulatorConfig {
        faults: Faults {
            hang_next: 1,
            hang_secs: secs,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await
    .expect("start the simulator")
}

/// `aidt-batch args…` against `sim`, with the job's own lock wait.
fn job(env: &TestEnv, sim: &SimulatorHandle, args: &[&str], wait: u64) -> std::process::Command {
    let section = args[0].replace('-', "_").to_ascii_uppercase();
    let mut cmd = env.command(args);
    cmd.env("AIDT__KERIS__API_DOMAIN", sim.base_url()).env(
        format!("AIDT__JOBS__{section}__LOCK_WAIT_SECS"),
        wait.to_string(),
    );
    cmd
}

/// Starts `args` and waits until its run holds the lock (its row is STARTED).
async fn start_holder(env: &TestEnv, sim: &SimulatorHandle, args: &[&str], job_id: &str) -> Child {
    let child = job(env, sim, args, 0).spawn().unwrap();
    env.wait_until(
        &format!("SELECT EXISTS (SELECT 1 FROM batch_job_run WHERE job_id = '{job_id}' AND status = 'STARTED')"),
        Duration::from_secs(30),
    )
    .await;
    child
}

async fn wait_for(child: Child) -> Option<i32> {
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap().code()
    })
    .await
    .unwrap()
}

/// (job_id, business_date, status, exit_code, error_msg) of every run, in order.
async fn runs(env: &TestEnv) -> Vec<(String, String, String, Option<i32>, Option<String>)> {
    sqlx::query_as(
        "SELECT job_id, business_date::text, status, exit_code, error_msg FROM batch_job_run ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
}

/// Asserts that `args` found the lock busy: exit 3 and a SKIPPED row naming the holder.
async fn assert_skipped(env: &TestEnv, sim: &SimulatorHandle, args: &[&str], holder: &str) {
    let mut cmd = job(env, sim, args, 0);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
    let (job_id, _, status, exit_code, reason) = runs(env).await.pop().unwrap();
    assert_eq!(job_id, args[0].to_ascii_uppercase());
    assert_eq!((status.as_str(), exit_code), ("SKIPPED", Some(3)));
    let reason = reason.unwrap();
    assert!(
        reason.contains(holder) && reason.contains("already running"),
        "{args:?}: {reason}"
    );
}

/// One student of the demo partner with a KERIS token and an open session:
/// LMS-01-008 has one API-001 event to send.
pub async fn seed_dashboard_student(env: &TestEnv) {
    let user = Uuid::new_v4();
    sqlx::raw_sql(&format!(
        "INSERT INTO tb_lms_school (school_id, school_nm, school_level) VALUES ('SCH-E', 'Elementary', 'E');
         INSERT INTO tb_lms_course (course_id, textbook_id, subject_cd, school_level, course_nm)
              VALUES ('C-E', 'TB-E', 'MAT', 'E', 'Math E');
         INSERT INTO tb_lms_lecture (lecture_code, course_id, school_id, teacher_id, lecture_nm)
              VALUES ('L-E', 'C-E', 'SCH-E', 'aaaaaaaa-0000-4000-8000-000000000001', 'Lecture E');
         INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, user_nm)
              VALUES ('{user}', '{DEMO_PARTNER}', 'S', 'SCH-E', 'Kim Student');
         INSERT INTO tb_lms_lecture_member (lecture_code, user_id) VALUES ('L-E', '{user}');
         INSERT INTO tb_lms_keris_token (user_id, token, access_id) VALUES ('{user}', 'token-{user}', 'access-{user}');
         INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at) VALUES ('{user}', 'L-E', now() - interval '5 minutes');"
    ))
    .execute(env.pg())
    .await
    .unwrap();
}

#[tokio::test]
async fn the_dashboard_jobs_never_run_together_whatever_their_dates() {
    let env = TestEnv::new().await;
    seed_dashboard_student(&env).await;
    let sim = slow_simulator(6.0).await;

    let holder = start_holder(&env, &sim, &["lms-01-008", "--date", DATE], "LMS-01-008").await;
    // The hourly run still going at midnight: the next one has another date.
    assert_skipped(
        &env,
        &sim,
        &["lms-01-008", "--date", "2026-03-06"],
        "LMS-01-008 run 1",
    )
    .await;
    // DC-01-004 writes the same teacher view and sends API-005 too.
    assert_skipped(
        &env,
        &sim,
        &["dc-01-004", "--date", DATE],
        "LMS-01-008 run 1",
    )
    .await;
    assert_eq!(wait_for(holder).await, Some(0));
    assert_eq!(runs(&env).await[0].2, "COMPLETED");
    assert_eq!(sim.dashboard_events().len(), 1, "one API-001, sent once");
}

#[tokio::test]
async fn the_jobs_writing_keris_batch_data_never_run_together() {
    let env = TestEnv::new().await;
    let out = env.run_dev(&["bench-data", "--statements", "20", "--date", DATE]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sim = slow_simulator(6.0).await;

    let holder = start_holder(&env, &sim, &["dc-01-001", "--date", DATE], "DC-01-001").await;
    for other in ["dc-01-002", "lrs-01-001", "lrs-01-002", "dc-01-003"] {
        assert_skipped(&env, &sim, &[other, "--date", DATE], "DC-01-001 run 1").await;
    }
    assert_eq!(wait_for(holder).await, Some(0));
    assert_eq!(runs(&env).await[0].2, "COMPLETED");
    assert_eq!(sim.stats().statements_accepted(), 20, "all sent, once");
}

#[tokio::test]
async fn a_busy_lock_is_waited_for_up_to_lock_wait_secs_and_then_the_run_goes_ahead() {
    let env = TestEnv::new().await;
    let out = env.run_dev(&["bench-data", "--statements", "20", "--date", DATE]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sim = slow_simulator(3.0).await;

    let holder = start_holder(&env, &sim, &["dc-01-001", "--date", DATE], "DC-01-001").await;
    // Off the test's thread: the simulator answering the holder runs on it.
    let mut cmd = job(&env, &sim, &["dc-01-002", "--date", DATE], 120);
    let waiter = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(waiter.status.code(), Some(0), "{}", stderr(&waiter));
    assert_eq!(wait_for(holder).await, Some(0));

    type Row = (String, String, DateTime<Utc>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT job_id, status, started_at, ended_at FROM batch_job_run ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("DC-01-001", "COMPLETED")
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str()),
        ("DC-01-002", "COMPLETED")
    );
    assert!(
        rows[1].2 >= rows[0].3.unwrap(),
        "DC-01-002 started only once DC-01-001 had ended: {rows:?}"
    );
    assert!(
        stderr(&waiter).contains("lock busy; waiting for it"),
        "{}",
        stderr(&waiter)
    );
}

#[tokio::test]
async fn a_run_waiting_for_a_lock_stops_on_sigterm_as_skipped() {
    let env = TestEnv::new().await;
    let out = env.run_dev(&["bench-data", "--statements", "20", "--date", DATE]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sim = slow_simulator(6.0).await;

    let holder = start_holder(&env, &sim, &["dc-01-001", "--date", DATE], "DC-01-001").await;
    let mut waiter = job(&env, &sim, &["lrs-01-001", "--date", DATE], 600)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The waiter writes no history row until it gives up: its log line says
    // when it is waiting (and its signal handlers are installed).
    let log = waiter.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        // Read to the end, so the waiter never writes into a closed pipe.
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains("lock busy; waiting for it") {
                let _ = tx.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the waiter logs that it waits");
    signal(waiter.id(), "TERM");
    assert_eq!(wait_for(waiter).await, Some(143));
    assert_eq!(wait_for(holder).await, Some(0));
    let (job_id, _, status, exit_code, reason) = runs(&env).await.pop().unwrap();
    assert_eq!(
        (job_id.as_str(), status.as_str(), exit_code),
        ("LRS-01-001", "SKIPPED", Some(143))
    );
    assert!(reason
        .unwrap()
        .contains("stopped by a signal while waiting"));
}

/// Waits until `child`'s stderr says it waits for its lock; reads the rest
/// to the end, so the child never writes into a closed pipe.
async fn until_waiting(child: &mut Child) {
    let log = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains("lock busy; waiting for it") {
                let _ = tx.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the run logs that it waits for its lock");
}

#[tokio::test]
async fn a_due_message_run_that_waited_for_its_lock_judges_due_times_as_of_getting_it() {
    use sqlx::Connection as _;
    let env = TestEnv::new().await;
    let student = Uuid::new_v4();
    // Assignment 1 is due while the run waits for its lock; 2 in half an hour.
    let soon = Utc::now() + chrono::Duration::seconds(3);
    let later = Utc::now() + chrono::Duration::minutes(30);
    sqlx::raw_sql(&format!(
        "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, del_yn)
              VALUES ('{student}', '00000000-0000-0000-0000-0000000000aa', 'S', 'SCH1', 'N');
         INSERT INTO tb_lms_lecture_member (lecture_code, user_id) VALUES ('L1', '{student}');"
    ))
    .execute(env.pg())
    .await
    .unwrap();
    for (id, due) in [(1, soon), (2, later)] {
        sqlx::query(
            "INSERT INTO tb_lms_assignment (asgn_id, lecture_code, teacher_id, title, due_dt, status)
             VALUES ($1, 'L1', gen_random_uuid(), 'assignment', $2, 'OPEN')",
        )
        .bind(id)
        .bind(due)
        .execute(env.pg())
        .await
        .unwrap();
    }
    // Another run holds LMS-01-004's lock.
    let mut holder = sqlx::PgConnection::connect(&url_for(&env.pg_name))
        .await
        .unwrap();
    let key = "aidt-batch/job/LMS-01-004";
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut holder)
        .await
        .unwrap();

    let mut waiter = env
        .command(&["lms-01-004"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until_waiting(&mut waiter).await;
    // The holder ends once assignment 1 is past due.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Utc::now() <= soon {
        assert!(std::time::Instant::now() < deadline, "the clock moves");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(wait_for(waiter).await, Some(0));

    let refs: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT user_id, ref_key FROM tb_lms_ntcn_msg ORDER BY ref_key")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(refs, [(student, "asgn:2:60m".to_string())]);
}
