//! Nothing waits forever: a job's PostgreSQL sessions carry its
//! `statement_timeout` and `lock_timeout`, its MongoDB reads its `maxTimeMS`
//! (`[jobs.<id>]` overriding the job's defaults), and a run that hits one
//! fails naming what it waited for and the key to raise, its lock freed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aidt_batch::runtime::Exit;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use sqlx::{Postgres, Transaction};

use crate::helpers::*;
use crate::runtime::{access_log_count, seed_old_access_logs};

/// Another session — the LMS — holds the oldest access-log row, which
/// LMS-01-001's first DELETE wants, in a transaction it keeps open.
async fn hold_an_old_row(env: &TestEnv) -> Transaction<'static, Postgres> {
    let mut lms = env.pg().begin().await.unwrap();
    sqlx::query("SELECT log_id FROM tb_lms_access_log ORDER BY log_id LIMIT 1 FOR UPDATE")
        .fetch_one(&mut *lms)
        .await
        .unwrap();
    lms
}

async fn advisory_locks(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(env.pg())
    .await
    .unwrap()
}

/// Runs LMS-01-001 while the LMS holds a row it deletes; returns the
/// recorded status and error, once the row is free again and a rerun has
/// finished the work.
async fn blocked_cleanup(env: &TestEnv) -> (String, String) {
    seed_old_access_logs(env, 300).await;
    let lms = hold_an_old_row(env).await;

    let outcome = env.run_job("LMS-01-001", None, false).await;
    assert_eq!(outcome.exit, Exit::Failure);
    let run_id = outcome.run_id.unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_msg FROM batch_job_run WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(advisory_locks(env).await, 0, "the run freed its lock");

    lms.rollback().await.unwrap();
    env.run_ok("LMS-01-001", None, false).await;
    assert_eq!(access_log_count(env).await, 0, "a rerun deletes the rest");
    (status, error.unwrap_or_default())
}

#[tokio::test]
async fn a_job_behind_a_row_lock_fails_after_its_lock_timeout_naming_the_table_and_the_key() {
    let mut env = TestEnv::new().await;
    env.configure_job("lms_01_001", "lock_timeout_secs", 1_u64);

    let (status, error) = blocked_cleanup(&env).await;

    assert_eq!(status, "FAILED");
    for part in [
        "lock_timeout (1 s) exceeded while deleting tuple",
        "in relation \"tb_lms_access_log\"",
        "in job LMS-01-001",
        "set jobs.lms_01_001.lock_timeout_secs",
    ] {
        assert!(error.contains(part), "{part:?} in: {error}");
    }
}

#[tokio::test]
async fn a_statement_longer_than_its_statement_timeout_fails_naming_the_key() {
    let mut env = TestEnv::new().await;
    // No lock_timeout: the blocked DELETE runs until statement_timeout ends it.
    env.configure_job("lms_01_001", "lock_timeout_secs", 0_u64);
    env.configure_job("lms_01_001", "statement_timeout_secs", 1_u64);

    let (status, error) = blocked_cleanup(&env).await;

    assert_eq!(status, "FAILED");
    for part in [
        "statement_timeout (1 s) exceeded",
        "in job LMS-01-001",
        "set jobs.lms_01_001.statement_timeout_secs",
    ] {
        assert!(error.contains(part), "{part:?} in: {error}");
    }
}

#[tokio::test]
async fn timeout_keys_are_checked_and_allowed_in_every_jobs_section() {
    let env = TestEnv::new().await;
    for (key, value) in [
        ("LOCK_TIMEOUT_SECS", "soon"),
        ("STATEMENT_TIMEOUT_SECS", "-1"),
        ("MONGO_MAX_TIME_SECS", "3000000"),
    ] {
        let out = env
            .command(&["lms-01-001", "--dry-run"])
            .env(format!("AIDT__JOBS__LMS_01_001__{key}"), value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let wanted = format!("jobs.lms_01_001.{}", key.to_ascii_lowercase());
        assert!(stderr(&out).contains(&wanted), "{wanted}: {}", stderr(&out));
    }
    // BO-01-005 has no settings of its own: the runtime's keys are still allowed.
    let out = env
        .command(&["bo-01-005"])
        .env("AIDT__JOBS__BO_01_005__STATEMENT_TIMEOUT_SECS", "20")
        .env("AIDT__JOBS__BO_01_005__LOCK_TIMEOUT_SECS", "5")
        .env("AIDT__JOBS__BO_01_005__MONGO_MAX_TIME_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test]
async fn the_job_pool_starts_every_session_with_the_jobs_timeouts() {
    let mut env = TestEnv::new().await;
    env.configure_job("lms_01_001", "statement_timeout_secs", 42_u64);
    env.configure_job("lms_01_001", "lock_timeout_secs", 7_u64);
    // The pool a run of LMS-01-001 gets, from its limits as configured.
    let def = aidt_batch::jobs::REGISTRY.find("LMS-01-001").unwrap();
    let limits =
        aidt_batch::runtime::timeouts::Timeouts::resolve(def, &env.app.settings.jobs).unwrap();
    let app = env
        .app
        .with_pg_limits(limits.statement(), limits.lock())
        .unwrap();
    let (statement, lock): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')",
    )
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!((statement.as_str(), lock.as_str()), ("42s", "7s"));
    // Unset keys keep the job's defaults (LMS-01-001: a deletion's).
    let mongo = limits.mongo_secs;
    assert_eq!(mongo, def.timeouts.mongo_secs);
    app.pg.close().await;
}

#[tokio::test]
async fn a_separate_lcms_source_gets_the_runs_timeouts_too() {
    let mut env = TestEnv::new().await;
    let source = crate::content::with_separate_source(&mut env).await;
    crate::content::seed_lcms(source.pg(), env.pg()).await;
    env.configure_job("lcms_01_001", "lock_timeout_secs", 1_u64);
    // The LCMS itself holds its content table (a migration, a bulk load).
    let mut lcms = source.pg().begin().await.unwrap();
    sqlx::query("LOCK TABLE tb_lcms_content IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lcms)
        .await
        .unwrap();

    let outcome = env.run_job("LCMS-01-001", None, false).await;
    assert_eq!(outcome.exit, Exit::Failure);
    let error: String = sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE run_id = $1")
        .bind(outcome.run_id.unwrap())
        .fetch_one(env.pg())
        .await
        .unwrap();
    for part in [
        "lock_timeout (1 s) exceeded",
        "in job LCMS-01-001",
        "set jobs.lcms_01_001.lock_timeout_secs",
    ] {
        assert!(error.contains(part), "{part:?} in: {error}");
    }
    lcms.rollback().await.unwrap();
}

/// `(command, maxTimeMS)` of every read the client sent.
type Reads = Arc<Mutex<Vec<(String, Option<i64>)>>>;

/// A client on the test's MongoDB database that notes every read command.
async fn watched_mongo(env: &TestEnv) -> (mongodb::Database, Reads) {
    let reads: Reads = Arc::default();
    let seen = reads.clone();
    let mut options = mongodb::options::ClientOptions::parse(mongodb_uri())
        .await
        .unwrap();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            if ["find", "aggregate", "count", "distinct"].contains(&started.command_name.as_str()) {
                let max_time = started.command.get("maxTimeMS").and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_i32().map(i64::from))
                        .or_else(|| v.as_f64().map(|f| f as i64))
                });
                seen.lock()
                    .unwrap()
                    .push((started.command_name.clone(), max_time));
            }
        }
    }));
    let client = mongodb::Client::with_options(options).unwrap();
    (client.database(&env.mongo_name), reads)
}

/// Runs `id` for `day` (`None`: its default date) with `mongo_max_time_secs`
/// = `secs`, and returns the commands of its reads, each checked to carry
/// `maxTimeMS` = `secs` s.
async fn reads_of(
    env: &mut TestEnv,
    reads: &Reads,
    id: &str,
    day: Option<chrono::NaiveDate>,
    secs: u64,
) -> Vec<String> {
    let section = id.to_ascii_lowercase().replace('-', "_");
    env.configure_job(&section, "mongo_max_time_secs", secs);
    let outcome = env.run_job(id, day, false).await;
    assert_ne!(outcome.exit, Exit::Failure, "{id}");
    let read = std::mem::take(&mut *reads.lock().unwrap());
    let expected = Some(secs as i64 * 1000);
    assert!(
        read.iter().all(|(_, max)| *max == expected),
        "{id}: every read with maxTimeMS {expected:?}: {read:?}"
    );
    read.into_iter().map(|(command, _)| command).collect()
}

#[tokio::test]
async fn every_mongodb_read_of_the_jobs_carries_their_max_time() {
    let sim = keris_simulator::start(Default::default()).await.unwrap();
    let mut env = keris_env(&sim, |_| {}).await;
    let day = date("2026-03-05");
    aidt_dev::seed::seed(
        &env.app,
        &aidt_dev::seed::SeedArgs::new(40, 400, Some(day), 11),
    )
    .await
    .unwrap();
    let (mongo, reads) = watched_mongo(&env).await;
    env.app.mongo = mongo;
    let mut seen = BTreeSet::new();

    // LRS-01-001 twice: the second run reads back the statements it wrote.
    for secs in [7, 8] {
        let read = reads_of(&mut env, &reads, "LRS-01-001", Some(day), secs).await;
        assert!(!read.is_empty());
        seen.extend(read);
    }
    // KERIS fails the first request for good and refuses one statement for
    // its content: DC-01-002 and LRS-01-002 then have work.
    let refused: String = keris_docs(&env).await[0].get_str("_id").unwrap().into();
    reads.lock().unwrap().clear(); // the test's own read
    sim.set_faults(keris_simulator::Faults {
        only_apis: vec!["API-007".into()],
        server_error_next: 5,
        reject_statement_ids: vec![refused.parse().unwrap()],
        ..Default::default()
    });
    seen.extend(reads_of(&mut env, &reads, "DC-01-001", Some(day), 9).await);
    sim.set_faults(Default::default());
    for (id, secs) in [("LRS-01-002", 10), ("DC-01-002", 11)] {
        let read = reads_of(&mut env, &reads, id, Some(day), secs).await;
        assert!(!read.is_empty(), "{id} read MongoDB");
        seen.extend(read);
    }
    let read = reads_of(&mut env, &reads, "DC-01-003", None, 12).await;
    assert!(read.iter().any(|c| c == "distinct"), "{read:?}");
    seen.extend(read);
    assert_eq!(
        seen,
        ["aggregate", "distinct", "find"].map(String::from).into(),
        "counts are aggregates"
    );
}
