//! DC-01-001 and DC-01-002 over more than one night, against the simulator
//! over HTTP, real PostgreSQL and the MongoDB-wire server: a night that was
//! skipped is sent by the next one, oldest day first; work older than the
//! look-back is reported, not sent; and the statements of a student whose
//! consent does not allow it never reach KERIS, whatever LRS-01-001 left
//! `READY` before the grace period ended.

use std::collections::{BTreeMap, HashMap, HashSet};

use aidt_batch::jobs::REGISTRY;
use aidt_batch::runtime::history::RunStatus;
use aidt_batch::runtime::Exit;
use aidt_dev::bench::{bench_data, BenchDataArgs};
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use mongodb::bson::{doc, Document};
use sqlx::Connection as _;
use uuid::Uuid;

use crate::helpers::{date, keris_docs, keris_env, run_status, url_for, TestEnv};
use crate::transfer::{assert_all_sent, counts, docs, error_rows, id_of, seed_day};

const DAY: &str = "2026-03-05";
const SEND: &str = "DC-01-001";
const RESEND: &str = "DC-01-002";

/// Writes `n` READY statements of `day` (benchmark generator: students no
/// LMS knows, so none is withheld) into `keris_batch_data` indexed as
/// `migrate` indexes it; returns their ids.
async fn ready_day(env: &TestEnv, day: &str, n: u64) -> HashSet<String> {
    aidt_batch::commands::migrate::apply(&env.app)
        .await
        .unwrap();
    bench_data(
        &env.app,
        &BenchDataArgs {
            statements: n,
            date: Some(date(day)),
            reset: false,
        },
    )
    .await
    .unwrap();
    let ids: HashSet<String> = docs(env, doc! { "base_dt": day })
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids.len() as u64, n);
    ids
}

/// (transfer id, index) → base_dt of every statement the simulator holds,
/// in transfer order.
fn stored_days(sim: &SimulatorHandle, env_docs: &[Document]) -> Vec<(String, u64, String)> {
    let day_of: HashMap<String, String> = env_docs
        .iter()
        .map(|d| (id_of(d), d.get_str("base_dt").unwrap().to_string()))
        .collect();
    let mut stored: Vec<(String, u64, String)> = sim
        .statements(usize::MAX)
        .into_iter()
        .map(|s| {
            let day = day_of[&s.id.unwrap().to_string()].clone();
            (s.transfer_id, s.index, day)
        })
        .collect();
    stored.sort();
    stored
}

/// Along each transfer, no statement of an earlier day comes after one of
/// a later day.
fn assert_oldest_day_first(stored: &[(String, u64, String)]) {
    for pair in stored.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                pair[0].2 <= pair[1].2,
                "{} (index {}) went out after {} (index {})",
                pair[1].2,
                pair[1].1,
                pair[0].2,
                pair[0].1
            );
        }
    }
}

#[tokio::test]
async fn a_night_skipped_for_a_busy_lock_is_sent_by_the_next_night_oldest_day_first() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut env = keris_env(&sim, |_| {}).await;
    env.configure_job("dc_01_001", "lock_wait_secs", 0_i64);
    let first_night = ready_day(&env, "2026-03-04", 450).await;
    let second_night = ready_day(&env, DAY, 380).await;

    // The night of 03-04: another job of the group holds the lock.
    let mut holder = sqlx::PgConnection::connect(&url_for(&env.pg_name))
        .await
        .unwrap();
    let key = REGISTRY.find(SEND).unwrap().lock_key(date("2026-03-04"));
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut holder)
        .await
        .unwrap();
    let skipped = env.run_job(SEND, Some(date("2026-03-04")), false).await;
    assert_eq!(skipped.exit, Exit::AlreadyRunning);
    assert_eq!(
        run_status(env.pg(), skipped.run_id.unwrap()).await,
        RunStatus::Skipped
    );
    holder.close().await.unwrap();
    assert_eq!(sim.stats().requests("API-007"), 0);

    // The night of 03-05 sends both days, 03-04 first.
    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    assert_eq!(counts(&env, run).await, (830, 830, 0, 0));
    let all = keris_docs(&env).await;
    let expected: HashSet<String> = first_night.union(&second_night).cloned().collect();
    assert_all_sent(&sim, &all, &expected);
    assert_eq!(sim.stats().statements_accepted(), 830);
    let stored = stored_days(&sim, &all);
    assert_oldest_day_first(&stored);
    assert_eq!(stored.first().map(|s| s.2.as_str()), Some("2026-03-04"));
    let d = env.details(run).await;
    assert_eq!(d["days"]["2026-03-04"]["ready"], 450, "{d}");
    assert_eq!(d["days"]["2026-03-04"]["sent"], 450, "{d}");
    assert_eq!(d["days"][DAY]["sent"], 380, "{d}");
    assert!(d.get("older_than_look_back").is_none(), "{d}");
}

#[tokio::test]
async fn a_ready_statement_older_than_the_look_back_is_reported_not_sent_until_its_own_date() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |_| {}).await;
    // Look-back 7 from 03-05: 02-26 is its oldest day, 02-25 is out.
    let too_old = ready_day(&env, "2026-02-25", 5).await;
    let oldest_in = ready_day(&env, "2026-02-26", 4).await;
    let today = ready_day(&env, DAY, 50).await;

    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    assert_eq!(counts(&env, run).await, (54, 54, 5, 0));
    let d = env.details(run).await;
    assert_eq!(
        d["older_than_look_back"],
        serde_json::json!({ "2026-02-25": 5 }),
        "{d}"
    );
    for id in &too_old {
        assert!(sim.statement(Uuid::parse_str(id).unwrap()).is_none());
    }
    let left: HashSet<String> = docs(&env, doc! { "status": "READY" })
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(left, too_old, "left READY, not lost");
    let sent: HashSet<String> = oldest_in.union(&today).cloned().collect();
    assert_all_sent(&sim, &keris_docs(&env).await, &sent);

    // Its own date's run (the operator's --date) sends it.
    let run = env.run_ok(SEND, Some(date("2026-02-25")), false).await;
    assert_eq!(counts(&env, run).await.1, 5);
    assert!(docs(&env, doc! { "status": "READY" }).await.is_empty());
    assert_eq!(sim.stats().statements_accepted(), 59);
}

#[tokio::test]
async fn dc_01_002_resends_the_look_backs_open_rows_oldest_day_first_and_reports_older_ones() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| {
        s.keris.max_attempts = 1;
        s.jobs.keris_transfer.give_up_after_transient_failures = 0;
    })
    .await;
    let old = ready_day(&env, "2026-02-24", 3).await;
    let recent = ready_day(&env, "2026-03-02", 120).await;
    let today = ready_day(&env, DAY, 150).await;
    // Every send fails (nothing stored): each statement gets an open row.
    sim.set_faults(Faults {
        server_error_share: 1.0,
        stored_before_error_share: 0.0,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    for night in ["2026-02-24", DAY] {
        let outcome = env.run_job(SEND, Some(date(night)), false).await;
        assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    }
    assert_eq!(error_rows(&env).await.len(), 273);

    sim.set_faults(Faults::default());
    let run = env.run_ok(RESEND, Some(date(DAY)), false).await;
    let d = env.details(run).await;
    assert_eq!(d["resent"], 270, "{d}");
    assert_eq!(d["days"]["2026-03-02"]["resent"], 120, "{d}");
    assert_eq!(d["days"][DAY]["resent"], 150, "{d}");
    assert_eq!(
        d["older_than_look_back"],
        serde_json::json!({ "2026-02-24": 3 }),
        "{d}"
    );
    let open: BTreeMap<String, String> = sqlx::query_as(
        "SELECT statement_id::text, status FROM tb_dc_error_data_info WHERE status <> 'RESENT'",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(open.keys().cloned().collect::<HashSet<_>>(), old);
    assert!(open.values().all(|s| s == "PENDING"));
    let all = keris_docs(&env).await;
    assert_all_sent(&sim, &all, &recent.union(&today).cloned().collect());
    assert_oldest_day_first(&stored_days(&sim, &all));
}

/// Takes away `PRVC_PROVIDE` consent of `students`, registered `days_ago`.
async fn without_consent(env: &TestEnv, students: &[Uuid], days_ago: i32) {
    sqlx::query("DELETE FROM tb_lms_user_consent WHERE user_id = ANY($1)")
        .bind(students)
        .execute(env.pg())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tb_lms_user SET reg_dt = now() - make_interval(days => $2) WHERE user_id = ANY($1)",
    )
    .bind(students)
    .bind(days_ago)
    .execute(env.pg())
    .await
    .unwrap();
}

/// Students with READY statements, by number of statements (most first),
/// with their statement ids.
fn students_of(ready: &[Document]) -> Vec<(Uuid, HashSet<String>)> {
    let mut by_user: HashMap<Uuid, HashSet<String>> = HashMap::new();
    for d in ready {
        let user = Uuid::parse_str(d.get_str("user_id").unwrap()).unwrap();
        by_user.entry(user).or_default().insert(id_of(d));
    }
    let mut users: Vec<(Uuid, HashSet<String>)> = by_user.into_iter().collect();
    users.sort_by_key(|(u, ids)| (std::cmp::Reverse(ids.len()), *u));
    users
}

#[tokio::test]
async fn statements_of_students_past_their_grace_without_consent_never_reach_keris() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |_| {}).await;
    // LRS-01-001 aggregated the day while every student consented.
    let ready = seed_day(&env, 200, 4_000).await;
    let students = students_of(&ready);
    assert!(students.len() > 120, "{}", students.len());
    // Then ten of them turn out to have no consent, registered 40 days
    // ago (grace 30 days: withheld); one more registered 10 days ago (in
    // grace: still sent).
    let withheld: Vec<Uuid> = students[..10].iter().map(|s| s.0).collect();
    without_consent(&env, &withheld, 40).await;
    without_consent(&env, &[students[10].0], 10).await;
    let theirs: HashSet<String> = students[..10]
        .iter()
        .flat_map(|s| s.1.iter().cloned())
        .collect();

    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    for id in &theirs {
        assert!(
            sim.statement(Uuid::parse_str(id).unwrap()).is_none(),
            "{id} reached KERIS"
        );
    }
    let still_ready: HashSet<String> = docs(&env, doc! { "status": "READY" })
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(still_ready, theirs, "left READY for DC-01-003");
    let others: HashSet<String> = ready
        .iter()
        .map(id_of)
        .filter(|id| !theirs.contains(id))
        .collect();
    assert_all_sent(&sim, &keris_docs(&env).await, &others);
    assert_eq!(sim.stats().statements_accepted(), others.len() as u64);
    let d = env.details(run).await;
    assert_eq!(d["partners"]["demo"]["withheld"], theirs.len(), "{d}");
    assert_eq!(d["days"][DAY]["withheld"], theirs.len(), "{d}");
    let (read, written, skipped, failed) = counts(&env, run).await;
    assert_eq!(
        (read, written, skipped, failed),
        (
            ready.len() as i64,
            others.len() as i64,
            theirs.len() as i64,
            0
        )
    );
    // The run's details name no student.
    let text = d.to_string();
    assert!(withheld.iter().all(|u| !text.contains(&u.to_string())));
}

#[tokio::test]
async fn dc_01_002_leaves_the_rows_of_students_withheld_since_open_and_unsent() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| s.keris.max_attempts = 1).await;
    let ready = seed_day(&env, 40, 1_500).await;
    // The first request fails (nothing stored): 100 open rows.
    sim.set_faults(Faults {
        server_error_next: 1,
        stored_before_error_share: 0.0,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    assert_eq!(
        env.run_job(SEND, Some(date(DAY)), false).await.exit,
        Exit::CompletedWithErrors
    );
    sim.set_faults(Faults::default());
    let rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT statement_id, user_id FROM tb_dc_error_data_info")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(rows.len(), 100);
    // Two of those students' grace has passed since, without consent.
    let mut users: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    users.sort();
    users.dedup();
    let withheld = [users[0], users[users.len() - 1]];
    without_consent(&env, &withheld, 40).await;
    let theirs: HashSet<Uuid> = rows
        .iter()
        .filter(|r| withheld.contains(&r.1))
        .map(|r| r.0)
        .collect();

    let run = env.run_ok(RESEND, Some(date(DAY)), false).await;
    let d = env.details(run).await;
    assert_eq!(d["withheld"], theirs.len(), "{d}");
    assert_eq!(d["resent"], 100 - theirs.len(), "{d}");
    let open: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT statement_id, status, retry_cnt FROM tb_dc_error_data_info WHERE status <> 'RESENT'",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(
        open.iter().map(|r| r.0).collect::<HashSet<_>>(),
        theirs,
        "their rows stay open"
    );
    assert!(open.iter().all(|r| r.1 == "PENDING" && r.2 == 0));
    for id in &theirs {
        assert!(sim.statement(*id).is_none(), "{id} reached KERIS");
    }
    let sent = docs(&env, doc! { "status": "SENT" }).await.len();
    assert_eq!(sent, ready.len() - theirs.len());
}
