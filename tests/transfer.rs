//! The learning-history chain against the KERIS simulator over HTTP, real
//! PostgreSQL and the MongoDB-wire server: LRS-01-001 → DC-01-001 (send) →
//! LRS-01-002 (regenerate) → DC-01-002 (resend), with rejections, transient
//! failures, token expiry, an outage, faults everywhere at once, and a
//! SIGKILLed sender.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::keris::{ClientOptions, KerisClient};
use aidt_batch::runtime::Exit;
use aidt_batch::xapi;
use futures::TryStreamExt;
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{date, keris_env, seed_keris_day, signal, TestEnv};

const DAY: &str = "2026-03-05";
const SEND: &str = "DC-01-001";
const RESEND: &str = "DC-01-002";
const AGGREGATE: &str = "LRS-01-001";
const REGENERATE: &str = "LRS-01-002";

async fn sim(config: SimulatorConfig) -> SimulatorHandle {
    simulator::start(config).await.expect("start the simulator")
}

/// Seeds a day of source statements and aggregates them (LRS-01-001);
/// returns the READY documents.
pub(crate) async fn seed_day(env: &TestEnv, students: u32, statements: u32) -> Vec<Document> {
    seed_keris_day(env, DAY, students, statements, 7).await;
    env.run_ok(AGGREGATE, Some(date(DAY)), false).await;
    let ready = docs(env, doc! { "status": "READY" }).await;
    assert!(
        ready.len() > 50,
        "the seed gives a real day: {}",
        ready.len()
    );
    ready
}

pub(crate) async fn docs(env: &TestEnv, filter: Document) -> Vec<Document> {
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    coll.find(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

pub(crate) fn id_of(d: &Document) -> String {
    d.get_str("_id").unwrap().to_string()
}

fn wire(d: &Document) -> Value {
    serde_json::from_slice(&xapi::keris_statement_bytes(
        d.get_document("statement").unwrap(),
    ))
    .unwrap()
}

pub(crate) async fn counts(env: &TestEnv, run_id: i64) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT read_cnt, write_cnt, skip_cnt, fail_cnt FROM batch_job_run WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(env.pg())
    .await
    .unwrap()
}

/// (statement_id, status, err_code, stmt_index, err_msg) of every error row.
pub(crate) async fn error_rows(
    env: &TestEnv,
) -> Vec<(Uuid, String, String, Option<i64>, Option<String>)> {
    sqlx::query_as("SELECT statement_id, status, err_code, stmt_index, err_msg FROM tb_dc_error_data_info ORDER BY err_id")
        .fetch_all(env.pg())
        .await
        .unwrap()
}

/// (statement_id, transfer_id, stmt_index) of the error rows with `status`.
async fn row_positions(env: &TestEnv, status: &str) -> Vec<(Uuid, Option<String>, Option<i64>)> {
    sqlx::query_as(
        "SELECT statement_id, transfer_id, stmt_index FROM tb_dc_error_data_info WHERE status = $1 ORDER BY err_id",
    )
    .bind(status)
    .fetch_all(env.pg())
    .await
    .unwrap()
}

/// Each row names the transfer and the exact index the simulator stored its
/// statement at (statements KERIS never held before the resend).
fn assert_positions_as_stored(sim: &SimulatorHandle, rows: &[(Uuid, Option<String>, Option<i64>)]) {
    assert!(!rows.is_empty());
    for (id, transfer_id, index) in rows {
        let held = sim
            .statement(*id)
            .expect("the simulator holds the statement");
        assert_eq!(
            (transfer_id.as_deref(), *index),
            (Some(held.transfer_id.as_str()), Some(held.index as i64)),
            "row of {id}"
        );
    }
    let indexes: HashSet<(Option<String>, Option<i64>)> =
        rows.iter().map(|r| (r.1.clone(), r.2)).collect();
    assert_eq!(indexes.len(), rows.len(), "each row its own index");
}

/// Every READY statement of `before` is now SENT, held by the simulator with
/// the same content, and the simulator accepted each exactly once.
pub(crate) fn assert_all_sent(
    sim: &SimulatorHandle,
    after: &[Document],
    expected: &HashSet<String>,
) {
    let sent: HashSet<String> = after
        .iter()
        .filter(|d| d.get_str("status") == Ok("SENT"))
        .map(id_of)
        .collect();
    assert_eq!(&sent, expected, "every statement SENT");
    for d in after.iter().filter(|d| expected.contains(&id_of(d))) {
        let held = sim
            .statement(Uuid::parse_str(&id_of(d)).unwrap())
            .expect("the simulator holds the statement");
        assert_eq!(held.statement, wire(d), "same content at KERIS");
        assert!(
            d.get_str("transfer_id").is_ok()
                && d.get_i64("stmt_index").is_ok()
                && d.get_datetime("sent_at").is_ok()
        );
    }
}

#[tokio::test]
async fn dc_01_001_sends_every_ready_statement_once_in_chunked_requests_and_a_rerun_sends_nothing()
{
    let sim = sim(SimulatorConfig::default()).await;
    // SENT marks split over several update commands per request (100 / 7).
    let env = keris_env(&sim, |s| s.jobs.keris_transfer.sent_marks_per_command = 7).await;
    let ready = seed_day(&env, 40, 1_500).await;
    let expected: HashSet<String> = ready.iter().map(id_of).collect();
    // A READY statement of a partner this vendor has no credentials for.
    let mut foreign = ready[0].clone();
    foreign.insert("_id", "0d6f8a5e-1b2c-5d3e-8f4a-9b0c1d2e3f40");
    foreign.insert("partner_id", "7c1e2d3f-4a5b-4c6d-8e7f-000000000000");
    env.app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .insert_one(foreign)
        .await
        .unwrap();

    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    let stats = sim.stats();
    assert_eq!(stats.statements_accepted(), expected.len() as u64);
    assert_eq!(
        counts(&env, run).await,
        (expected.len() as i64, expected.len() as i64, 1, 0),
        "the foreign one skipped"
    );
    assert_eq!(env.details(run).await["skipped_unknown_partner"], 1);
    let left = docs(&env, doc! { "_id": "0d6f8a5e-1b2c-5d3e-8f4a-9b0c1d2e3f40" }).await;
    assert_eq!(left[0].get_str("status").unwrap(), "READY", "left as it is");
    let all = docs(&env, doc! {}).await;
    assert_all_sent(&sim, &all, &expected);
    // Each document names the transfer and the exact index KERIS stored it at.
    for d in all.iter().filter(|d| expected.contains(&id_of(d))) {
        let held = sim.statement(Uuid::parse_str(&id_of(d)).unwrap()).unwrap();
        assert_eq!(
            (
                d.get_str("transfer_id").unwrap(),
                d.get_i64("stmt_index").unwrap()
            ),
            (held.transfer_id.as_str(), held.index as i64)
        );
    }

    // One statement per chunk, at most 100 per request, indexes consecutive.
    let requests: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.api.as_deref() == Some("API-007"))
        .collect();
    assert_eq!(requests.len(), expected.len().div_ceil(100));
    assert!(requests
        .iter()
        .all(|r| r.chunks.is_some_and(|c| (1..=100).contains(&c))));
    assert_eq!(
        requests.iter().map(|r| r.chunks.unwrap()).sum::<u64>(),
        expected.len() as u64
    );
    let journal: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(journal, 0, "no request left in doubt");

    let again = env.run_ok(SEND, Some(date(DAY)), false).await;
    assert_eq!(counts(&env, again).await, (0, 0, 1, 0));
    assert_eq!(
        sim.stats().requests("API-007"),
        requests.len() as u64,
        "nothing sent twice"
    );
}

#[tokio::test]
async fn rejected_statements_are_recorded_regenerated_and_resent_and_a_duplicate_fails_for_a_person(
) {
    let sim = sim(SimulatorConfig::default()).await;
    let env = keris_env(&sim, |_| {}).await;
    let ready = seed_day(&env, 30, 1_000).await;
    let invalid = id_of(&ready[3]);
    let user = ready[10].get_str("user_id").unwrap().to_string();
    let of_user: HashSet<String> = ready
        .iter()
        .filter(|d| d.get_str("user_id") == Ok(&user))
        .map(id_of)
        .collect();
    // KERIS already holds other content under one id (a duplicate).
    let dup = ready
        .iter()
        .find(|d| d.get_str("user_id") != Ok(&user) && id_of(d) != invalid)
        .unwrap();
    let settings = &env.app.settings.keris;
    let client =
        KerisClient::from_settings(settings, "demo", ClientOptions::from_settings(settings))
            .unwrap();
    let transfer = client.open_transfer().await.unwrap();
    let mut other = wire(dup);
    other["result"]["duration"] = Value::from(99_999);
    client
        .send_statements(&transfer, 1, &[serde_json::to_vec(&other).unwrap()])
        .await
        .unwrap();
    sim.set_faults(Faults {
        reject_statement_ids: vec![Uuid::parse_str(&invalid).unwrap()],
        reject_user_ids: vec![user.clone()],
        ..Faults::default()
    });

    let outcome = env.run_job(SEND, Some(date(DAY)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let rejected = 2 + of_user.len();
    let (_, written, _, failed) = counts(&env, outcome.run_id.unwrap()).await;
    assert_eq!(
        (written as usize, failed as usize),
        (ready.len() - rejected, rejected)
    );
    let rows = error_rows(&env).await;
    assert_eq!(rows.len(), rejected);
    let code_of = |id: &str| {
        rows.iter()
            .find(|r| r.0.to_string() == id)
            .map(|r| r.2.clone())
    };
    assert_eq!(code_of(&invalid).as_deref(), Some("XAPI_VAL_ERR"));
    assert_eq!(code_of(&id_of(dup)).as_deref(), Some("XAPI_DUP_ERR"));
    assert!(of_user
        .iter()
        .all(|id| code_of(id).as_deref() == Some("XAPI_USER_ERR")));
    assert!(rows
        .iter()
        .all(|r| r.1 == "PENDING" && r.3.is_some_and(|i| i >= 1)));
    let errors = docs(&env, doc! { "status": "ERROR" }).await;
    assert_eq!(errors.len(), rejected);
    // The recorded index is the one KERIS reported for that statement: the
    // sender's transfer holds the accepted statements, and the rejected ones
    // are exactly the indexes of it that the simulator did not store.
    let stored = sim.statements(100_000);
    let accepted = ready.iter().find(|d| code_of(&id_of(d)).is_none()).unwrap();
    let transfer_of_send = &sim
        .statement(Uuid::parse_str(&id_of(accepted)).unwrap())
        .expect("accepted")
        .transfer_id;
    let held: HashSet<u64> = stored
        .iter()
        .filter(|s| &s.transfer_id == transfer_of_send)
        .map(|s| s.index)
        .collect();
    let gaps: HashSet<(Option<String>, Option<i64>)> = (1..=ready.len() as u64)
        .filter(|i| !held.contains(i))
        .map(|i| (Some(transfer_of_send.clone()), Some(i as i64)))
        .collect();
    let pending: HashSet<(Option<String>, Option<i64>)> = row_positions(&env, "PENDING")
        .await
        .into_iter()
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(pending, gaps);

    // KERIS learns the student; LRS-01-002 rebuilds the content-rejected ones.
    sim.set_faults(Faults::default());
    let regen = env.run_ok(REGENERATE, Some(date(DAY)), false).await;
    assert_eq!(counts(&env, regen).await.1 as usize, 1 + of_user.len());
    let rows = error_rows(&env).await;
    assert_eq!(
        rows.iter().filter(|r| r.1 == "REGENERATED").count(),
        1 + of_user.len()
    );
    assert_eq!(code_of(&id_of(dup)).as_deref(), Some("XAPI_DUP_ERR"));
    assert_eq!(
        docs(&env, doc! { "status": "READY" }).await.len(),
        1 + of_user.len()
    );

    // DC-01-002 resends the regenerated ones; the duplicate is for a person.
    let resend = env.run_job(RESEND, Some(date(DAY)), false).await;
    assert_eq!(
        resend.exit,
        Exit::CompletedWithErrors,
        "a row became FAILED"
    );
    let run = resend.run_id.unwrap();
    assert_eq!(counts(&env, run).await.1 as usize, 1 + of_user.len());
    let d = env.details(run).await;
    assert_eq!(d["failed_for_good"], 1);
    assert_eq!(d["failed_rows"][0]["statement_id"], id_of(dup));
    assert!(d["failed_rows"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("different statement"));
    let rows = error_rows(&env).await;
    assert_eq!(
        rows.iter().filter(|r| r.1 == "RESENT").count(),
        1 + of_user.len()
    );
    // Each RESENT row names the index its statement was stored at, not the
    // first index of its request.
    assert_positions_as_stored(&sim, &row_positions(&env, "RESENT").await);
    let failed: Vec<_> = rows.iter().filter(|r| r.1 == "FAILED").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0.to_string(), id_of(dup));
    let all = docs(&env, doc! {}).await;
    let expected: HashSet<String> = ready
        .iter()
        .map(id_of)
        .filter(|id| *id != id_of(dup))
        .collect();
    assert_all_sent(&sim, &all, &expected);

    // Nothing open is left: reruns change nothing.
    let again = env.run_ok(RESEND, Some(date(DAY)), false).await;
    assert_eq!(counts(&env, again).await, (0, 0, 0, 0));
    let again = env.run_ok(REGENERATE, Some(date(DAY)), false).await;
    assert_eq!(counts(&env, again).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn exhausted_retries_become_pending_errors_that_dc_01_002_resends_and_keris_stores_once() {
    let sim = sim(SimulatorConfig::default()).await;
    let env = keris_env(&sim, |s| s.keris.max_attempts = 2).await;
    let ready = seed_day(&env, 20, 600).await;
    // The first two API-007 requests fail twice each (one of them after
    // KERIS stored it): both are recorded as KERIS_UNAVAILABLE.
    sim.set_faults(Faults {
        server_error_next: 4,
        stored_before_error_share: 0.5,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    let outcome = env.run_job(SEND, Some(date(DAY)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let rows = error_rows(&env).await;
    assert_eq!(rows.len(), 200, "two requests of 100");
    assert!(rows
        .iter()
        .all(|r| r.1 == "PENDING" && r.2 == "KERIS_UNAVAILABLE"));
    let (_, written1, _, failed) = counts(&env, outcome.run_id.unwrap()).await;
    assert_eq!((written1 as usize, failed), (ready.len() - 200, 200));

    let run = env.run_ok(RESEND, Some(date(DAY)), false).await;
    let (read, written2, _, _) = counts(&env, run).await;
    assert_eq!((read, written2), (200, 200));
    assert!(error_rows(&env).await.iter().all(|r| r.1 == "RESENT"));
    let expected: HashSet<String> = ready.iter().map(id_of).collect();
    assert_all_sent(&sim, &docs(&env, doc! {}).await, &expected);
    // Whatever KERIS stored before failing was not stored twice.
    assert_eq!(sim.stats().statements_accepted(), ready.len() as u64);
    assert_eq!((written1 + written2) as u64, ready.len() as u64);
}

#[tokio::test]
async fn an_expired_token_opens_a_new_transfer_and_nothing_is_lost() {
    let sim = sim(SimulatorConfig {
        token_ttl: Duration::from_millis(100),
        ..SimulatorConfig::default()
    })
    .await;
    let env = keris_env(&sim, |s| s.keris.max_statements_per_request = 10).await;
    let ready = seed_day(&env, 20, 600).await;
    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    let stats = sim.stats();
    assert!(
        stats
            .partners
            .values()
            .map(|p| p.transfers_opened)
            .sum::<u64>()
            >= 2,
        "{stats:?}"
    );
    let renewals = env.details(run).await["partners"]["demo"]["token_renewals"]
        .as_u64()
        .unwrap();
    assert!(renewals >= 1);
    assert_eq!(stats.statements_accepted(), ready.len() as u64);
    assert!(error_rows(&env).await.is_empty());
}

#[tokio::test]
async fn when_keris_stays_down_the_rest_waits_ready_for_a_rerun() {
    let sim = sim(SimulatorConfig::default()).await;
    let env = keris_env(&sim, |s| {
        s.keris.max_attempts = 1;
        s.jobs.keris_transfer.give_up_after_transient_failures = 2;
    })
    .await;
    let ready = seed_day(&env, 20, 600).await;
    sim.set_faults(Faults {
        server_error_share: 1.0,
        stored_before_error_share: 0.0,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    let outcome = env.run_job(SEND, Some(date(DAY)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let d = env.details(outcome.run_id.unwrap()).await;
    let deferred = d["partners"]["demo"]["deferred"].as_u64().unwrap() as usize;
    assert_eq!(
        deferred,
        ready.len() - 200,
        "two failed requests, then the rest waits: {d}"
    );
    assert_eq!(sim.stats().requests("API-007"), 2);
    assert_eq!(docs(&env, doc! { "status": "READY" }).await.len(), deferred);

    // KERIS is back: the rerun sends the rest, DC-01-002 the two requests.
    sim.set_faults(Faults::default());
    env.run_ok(SEND, Some(date(DAY)), false).await;
    env.run_ok(RESEND, Some(date(DAY)), false).await;
    let expected: HashSet<String> = ready.iter().map(id_of).collect();
    assert_all_sent(&sim, &docs(&env, doc! {}).await, &expected);
    assert_eq!(sim.stats().statements_accepted(), ready.len() as u64);
}

#[tokio::test]
async fn whole_chain_under_faults_every_statement_is_accepted_exactly_once_or_failed_with_a_reason()
{
    let sim = sim(SimulatorConfig::default()).await;
    let env = keris_env(&sim, |s| {
        s.keris.max_attempts = 2;
        s.keris.request_timeout_secs = 1;
        s.keris.max_statements_per_request = 50;
        s.jobs.keris_transfer.give_up_after_transient_failures = 0;
        s.jobs.keris_transfer.max_retries = 4;
    })
    .await;
    let ready = seed_day(&env, 60, 2_000).await;
    let rejected_ids: Vec<Uuid> = [5usize, 50, 500]
        .iter()
        .map(|&i| Uuid::parse_str(&id_of(&ready[i])).unwrap())
        .collect();
    let rejected_user = ready[20].get_str("user_id").unwrap().to_string();
    let mut doomed: HashSet<String> = rejected_ids.iter().map(Uuid::to_string).collect();
    doomed.extend(
        ready
            .iter()
            .filter(|d| d.get_str("user_id") == Ok(&rejected_user))
            .map(id_of),
    );
    sim.set_faults(Faults {
        seed: 42,
        server_error_share: 0.2,
        reset_share: 0.05,
        hang_share: 0.02,
        hang_secs: 1.5,
        stored_before_error_share: 0.5,
        reject_statement_ids: rejected_ids,
        reject_user_ids: vec![rejected_user],
        ..Faults::default()
    });

    let mut runs = vec![env.run_job(SEND, Some(date(DAY)), false).await];
    for _ in 0..6 {
        runs.push(env.run_job(REGENERATE, Some(date(DAY)), false).await);
        runs.push(env.run_job(RESEND, Some(date(DAY)), false).await);
    }
    for r in &runs {
        assert!(
            matches!(r.exit, Exit::Success | Exit::CompletedWithErrors),
            "{:?}",
            r.exit
        );
    }

    let all = docs(&env, doc! {}).await;
    let rows = error_rows(&env).await;
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *by_status.entry(r.1.as_str()).or_default() += 1;
    }
    assert!(
        !by_status.contains_key("PENDING") && !by_status.contains_key("REGENERATED"),
        "{by_status:?}"
    );
    let failed: HashSet<String> = rows
        .iter()
        .filter(|r| r.1 == "FAILED")
        .map(|r| r.0.to_string())
        .collect();
    assert_eq!(
        failed, doomed,
        "exactly the statements KERIS refuses end FAILED"
    );
    assert!(rows
        .iter()
        .filter(|r| r.1 == "FAILED")
        .all(|r| r.4.as_deref().is_some_and(|m| !m.is_empty())));
    let expected: HashSet<String> = ready
        .iter()
        .map(id_of)
        .filter(|id| !doomed.contains(id))
        .collect();
    assert_all_sent(&sim, &all, &expected);
    for id in &doomed {
        assert!(
            sim.statement(Uuid::parse_str(id).unwrap()).is_none(),
            "{id} never accepted"
        );
    }
    // Exactly once: the simulator stored each accepted statement once, and
    // the runs' written counts add up to it.
    let accepted = sim.stats().statements_accepted();
    assert_eq!(accepted, expected.len() as u64);
    let mut written = 0;
    for r in &runs {
        let id = r.run_id.unwrap();
        let job: String = sqlx::query_scalar("SELECT job_id FROM batch_job_run WHERE run_id = $1")
            .bind(id)
            .fetch_one(env.pg())
            .await
            .unwrap();
        if job != REGENERATE {
            written += counts(&env, id).await.1;
        }
    }
    assert_eq!(written as u64, accepted);
    let faults_seen = sim
        .stats()
        .partners
        .values()
        .flat_map(|p| p.calls.values())
        .flat_map(|c| c.answers.iter())
        .filter(|(answer, _)| answer.as_str() != "00000")
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(
        faults_seen > 10,
        "the faults really happened: {faults_seen}"
    );
}

#[tokio::test]
async fn a_sender_killed_mid_transfer_is_finished_by_the_rerun_without_loss_or_double_storage() {
    // Every request is answered after 40 ms, so the kill lands mid-transfer.
    let sim = sim(SimulatorConfig::default()).await;
    sim.set_faults(Faults {
        hang_share: 1.0,
        hang_secs: 0.04,
        stored_before_error_share: 1.0,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    let env = keris_env(&sim, |_| {}).await;
    let ready = seed_day(&env, 40, 1_500).await;
    let mut child = env
        .command(&[SEND, "--date", DAY])
        .env("AIDT__KERIS__API_DOMAIN", sim.base_url())
        .env("AIDT__KERIS__MAX_STATEMENTS_PER_REQUEST", "20")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let received = sim
            .stats()
            .partners
            .values()
            .map(|p| p.statements_received)
            .sum::<u64>();
        let journal: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
            .fetch_one(env.pg())
            .await
            .unwrap();
        if received >= 300 && journal > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the sender did not get going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(child.id(), "KILL");
    child.wait().unwrap();
    let in_doubt: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert!(in_doubt > 0, "the kill left a request in doubt");
    let sent_before = docs(&env, doc! { "status": "SENT" }).await.len();
    assert!(sent_before < ready.len(), "killed before the end");

    sim.set_faults(Faults::default());
    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    let d = env.details(run).await;
    assert!(
        d["partners"]["demo"]["resumed_requests"].as_u64().unwrap() >= 1,
        "{d}"
    );
    let expected: HashSet<String> = ready.iter().map(id_of).collect();
    assert_all_sent(&sim, &docs(&env, doc! {}).await, &expected);
    assert_eq!(
        sim.stats().statements_accepted(),
        ready.len() as u64,
        "stored once each"
    );
    assert!(error_rows(&env).await.is_empty());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(left, 0);
    // The killed run is marked FAILED by the rerun, not left STARTED.
    let started: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM batch_job_run WHERE job_id = $1 AND status = 'STARTED'",
    )
    .bind(SEND)
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(started, 0);
}

#[tokio::test]
async fn lrs_01_002_fails_a_row_whose_source_statements_are_gone_and_its_dry_run_changes_nothing() {
    let sim = sim(SimulatorConfig::default()).await;
    let env = keris_env(&sim, |_| {}).await;
    let ready = seed_day(&env, 20, 600).await;
    let target = &ready[7];
    let id = id_of(target);
    sim.set_faults(Faults {
        reject_statement_ids: vec![Uuid::parse_str(&id).unwrap()],
        ..Faults::default()
    });
    assert_eq!(
        env.run_job(SEND, Some(date(DAY)), false).await.exit,
        Exit::CompletedWithErrors
    );
    sim.set_faults(Faults::default());
    // The LRS voided the source statements behind the rejected statement.
    let w = wire(target);
    let voided = env
        .app
        .mongo
        .collection::<Document>("statements")
        .update_many(
            doc! {
                "user_id": target.get_str("user_id").unwrap(),
                "statement.verb.id": w["verb"]["id"].as_str().unwrap(),
                "statement.object.id": w["object"]["id"].as_str().unwrap(),
            },
            doc! { "$set": { "voided": true } },
        )
        .await
        .unwrap();
    assert!(voided.modified_count >= 1);

    let dry = env.run_job(REGENERATE, Some(date(DAY)), true).await;
    assert_eq!(
        dry.exit,
        Exit::CompletedWithErrors,
        "the dry run reports the row that would fail"
    );
    assert_eq!(counts(&env, dry.run_id.unwrap()).await.3, 1);
    assert!(
        error_rows(&env).await.iter().all(|r| r.1 == "PENDING"),
        "and changes nothing"
    );

    let outcome = env.run_job(REGENERATE, Some(date(DAY)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let rows = error_rows(&env).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.to_string(), rows[0].1.as_str()),
        (id.clone(), "FAILED")
    );
    assert!(
        rows[0]
            .4
            .as_deref()
            .unwrap()
            .contains("no source statement"),
        "{:?}",
        rows[0].4
    );
    let d = env.details(outcome.run_id.unwrap()).await;
    assert_eq!(d["failed"][0]["statement_id"], id);
    // Nothing is left for DC-01-002, and the statement stays ERROR, unsent.
    assert_eq!(
        counts(&env, env.run_ok(RESEND, Some(date(DAY)), false).await).await,
        (0, 0, 0, 0)
    );
    assert_eq!(
        docs(&env, doc! { "_id": &id }).await[0]
            .get_str("status")
            .unwrap(),
        "ERROR"
    );
    assert!(sim.statement(Uuid::parse_str(&id).unwrap()).is_none());
}

#[tokio::test]
async fn a_backlog_larger_than_a_page_is_regenerated_resent_and_failed_page_by_page() {
    let sim = sim(SimulatorConfig::default()).await;
    // Pages of 7 rows, at most 3 failed rows listed in the details.
    let env = keris_env(&sim, |s| {
        s.jobs.keris_transfer.read_batch_size = 7;
        s.jobs.keris_transfer.max_reported_ids = 3;
    })
    .await;
    let ready = seed_day(&env, 30, 1_000).await;
    // Students by number of statements, most first.
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    for d in &ready {
        *per_user
            .entry(d.get_str("user_id").unwrap().to_string())
            .or_default() += 1;
    }
    let mut users: Vec<String> = per_user.keys().cloned().collect();
    users.sort_by_key(|u| std::cmp::Reverse(per_user[u]));
    // KERIS does not know five students; one of them KERIS will refuse for
    // good (its rows get a code no resend fixes, with the student's id in
    // KERIS's message), the other four LRS-01-002 rebuilds.
    let rejected_users: Vec<String> = users[..5].to_vec();
    let doomed_user = &rejected_users[0];
    let of = |user: &str| -> HashSet<String> {
        ready
            .iter()
            .filter(|d| d.get_str("user_id") == Ok(user))
            .map(id_of)
            .collect()
    };
    let doomed = of(doomed_user);
    let rebuilt: HashSet<String> = rejected_users[1..].iter().flat_map(|u| of(u)).collect();
    assert!(
        doomed.len() > 7 && rebuilt.len() > 3 * 7,
        "more than a page each"
    );
    sim.set_faults(Faults {
        reject_user_ids: rejected_users.clone(),
        ..Faults::default()
    });
    assert_eq!(
        env.run_job(SEND, Some(date(DAY)), false).await.exit,
        Exit::CompletedWithErrors
    );
    sim.set_faults(Faults::default());
    let doomed_ids: Vec<Uuid> = doomed
        .iter()
        .map(|id| Uuid::parse_str(id).unwrap())
        .collect();
    sqlx::query(
        "UPDATE tb_dc_error_data_info SET err_code = '40001', err_msg = 'refused for user ' || user_id::text
          WHERE statement_id = ANY($1)",
    )
    .bind(&doomed_ids)
    .execute(env.pg())
    .await
    .unwrap();

    let regen = env.run_ok(REGENERATE, Some(date(DAY)), false).await;
    assert_eq!(
        counts(&env, regen).await,
        (rebuilt.len() as i64, rebuilt.len() as i64, 0, 0)
    );
    let d = env.details(regen).await;
    assert_eq!(
        d["unchanged"],
        rebuilt.len(),
        "same sources, same content: {d}"
    );
    let regenerated: HashSet<String> = row_positions(&env, "REGENERATED")
        .await
        .into_iter()
        .map(|r| r.0.to_string())
        .collect();
    assert_eq!(regenerated, rebuilt);
    let now_ready: HashSet<String> = docs(&env, doc! { "status": "READY" })
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(now_ready, rebuilt);
    for d in docs(&env, doc! { "status": "READY" }).await {
        let before = ready.iter().find(|r| id_of(r) == id_of(&d)).unwrap();
        assert_eq!(wire(&d), wire(before), "rebuilt as LRS-01-001 built it");
        assert!(d.get("err_code").is_none());
    }

    let resend = env.run_job(RESEND, Some(date(DAY)), false).await;
    assert_eq!(resend.exit, Exit::CompletedWithErrors);
    let run = resend.run_id.unwrap();
    assert_eq!(
        counts(&env, run).await,
        (
            rebuilt.len() as i64,
            rebuilt.len() as i64,
            0,
            doomed.len() as i64
        )
    );
    let d = env.details(run).await;
    assert_eq!(d["failed_for_good"], doomed.len(), "{d}");
    let listed = d["failed_rows"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "at most max_reported_ids rows listed: {d}");
    for row in listed {
        assert!(doomed.contains(row["statement_id"].as_str().unwrap()));
        assert_eq!(row["err_code"], "40001");
        assert!(row["reason"].as_str().unwrap().contains("refused for user"));
    }
    let text = d.to_string();
    for user in &users {
        assert!(
            !text.contains(user.as_str()),
            "no student id in the details: {d}"
        );
    }
    let failed: HashSet<String> = row_positions(&env, "FAILED")
        .await
        .into_iter()
        .map(|r| r.0.to_string())
        .collect();
    assert_eq!(failed, doomed);
    let resent = row_positions(&env, "RESENT").await;
    assert_eq!(
        resent
            .iter()
            .map(|r| r.0.to_string())
            .collect::<HashSet<_>>(),
        rebuilt
    );
    assert_positions_as_stored(&sim, &resent);
    let expected: HashSet<String> = ready
        .iter()
        .map(id_of)
        .filter(|id| !doomed.contains(id))
        .collect();
    assert_all_sent(&sim, &docs(&env, doc! {}).await, &expected);
}
