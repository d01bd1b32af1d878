//! DC-01-001's read and its re-send bound, against the KERIS simulator over
//! HTTP, real PostgreSQL and the MongoDB-wire server: the `_id`-sorted cursor
//! neither skips nor repeats documents while the same run marks them `SENT`,
//! and a process SIGKILLed again and again under faults re-sends at most the
//! requests it had in doubt (≤ `max_concurrency × max_statements_per_request`
//! per partner and kill), then finishes with every statement accepted once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::runtime::Exit;
use aidt_dev::bench::{bench_data, BenchDataArgs};
use futures::TryStreamExt;
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use mongodb::bson::{doc, Document};
use uuid::Uuid;

use crate::helpers::{date, keris_docs, keris_env, signal, TestEnv};

const DAY: &str = "2026-03-05";
const SEND: &str = "DC-01-001";
const RESEND: &str = "DC-01-002";

/// Writes `n` READY statements of [`DAY`] for the configured partner with the
/// benchmark generator; returns their ids.
async fn ready_day(env: &TestEnv, n: u64) -> HashSet<String> {
    bench_data(
        &env.app,
        &BenchDataArgs {
            statements: n,
            date: Some(date(DAY)),
            reset: true,
        },
    )
    .await
    .unwrap();
    let ids: HashSet<String> = keris_docs(env)
        .await
        .iter()
        .filter(|d| d.get_str("status") == Ok("READY"))
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len() as u64, n);
    ids
}

async fn journal_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap()
}

/// Every id of `expected` is `SENT` with the transfer and index the
/// simulator stored it at.
fn assert_sent_where_stored(sim: &SimulatorHandle, docs: &[Document], expected: &HashSet<String>) {
    let mut sent = HashSet::new();
    for d in docs.iter().filter(|d| d.get_str("status") == Ok("SENT")) {
        let id = d.get_str("_id").unwrap();
        let held = sim
            .statement(Uuid::parse_str(id).unwrap())
            .unwrap_or_else(|| panic!("{id} is SENT but KERIS does not hold it"));
        assert_eq!(
            (
                d.get_str("transfer_id").unwrap(),
                d.get_i64("stmt_index").unwrap()
            ),
            (held.transfer_id.as_str(), held.index as i64),
            "{id}"
        );
        sent.insert(id.to_string());
    }
    assert_eq!(&sent, expected, "exactly the READY statements are SENT");
}

#[tokio::test]
async fn the_sorted_cursor_neither_skips_nor_repeats_documents_while_the_run_marks_them_sent() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| {
        s.keris.max_statements_per_request = 40;
        // 30 cursor batches, each read while the requests before it are
        // being marked SENT (index keys leave the READY range being scanned).
        s.jobs.keris_transfer.read_batch_size = 100;
        s.jobs.keris_transfer.sent_marks_per_command = 15;
    })
    .await;
    let n = 3_000;
    let expected = ready_day(&env, n).await;
    // The index that serves the read and its sort: created by `migrate`,
    // which also drops the `_id`-ordered one earlier versions read by (each
    // index costs every SENT mark a write).
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    let old_index = doc! { "base_dt": 1, "partner_id": 1, "status": 1, "_id": 1 };
    coll.create_index(
        mongodb::IndexModel::builder()
            .keys(old_index.clone())
            .build(),
    )
    .await
    .unwrap();
    aidt_batch::commands::migrate::apply(&env.app)
        .await
        .unwrap();
    let keys: Vec<Document> = coll
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|i| i.keys)
        .try_collect()
        .await
        .unwrap();
    assert!(
        keys.contains(
            &doc! { "base_dt": 1, "partner_id": 1, "status": 1, "user_hash": 1, "_id": 1 }
        ),
        "{keys:?}"
    );
    assert!(!keys.contains(&old_index), "{keys:?}");

    let run = env.run_ok(SEND, Some(date(DAY)), false).await;
    let (read, written): (i64, i64) =
        sqlx::query_as("SELECT read_cnt, write_cnt FROM batch_job_run WHERE run_id = $1")
            .bind(run)
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!((read, written), (n as i64, n as i64), "each read once");
    let stats = sim.stats();
    assert_eq!(stats.statements_accepted(), n, "each accepted");
    let received: u64 = stats.partners.values().map(|p| p.statements_received).sum();
    let duplicates: u64 = stats
        .partners
        .values()
        .map(|p| p.statements_duplicate)
        .sum();
    assert_eq!((received, duplicates), (n, 0), "none sent twice");
    let docs = keris_docs(&env).await;
    assert_sent_where_stored(&sim, &docs, &expected);
    // Sent in (user_hash, _id) order: along the transfer(s), index order is
    // that order.
    let mut by_position: Vec<(String, i64, (i64, String))> = docs
        .iter()
        .map(|d| {
            (
                d.get_str("transfer_id").unwrap().to_string(),
                d.get_i64("stmt_index").unwrap(),
                (
                    d.get_i64("user_hash").unwrap(),
                    d.get_str("_id").unwrap().to_string(),
                ),
            )
        })
        .collect();
    by_position.sort();
    let keys: Vec<&(i64, String)> = by_position.iter().map(|p| &p.2).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "statements went out in (user_hash, _id) order"
    );
}

/// Simulator duplicates of one partner: statements it already held, sent again.
fn duplicates(sim: &SimulatorHandle, partner_id: &str) -> u64 {
    sim.stats().partner(partner_id).statements_duplicate
}

fn accepted(sim: &SimulatorHandle, partner_id: &str) -> u64 {
    sim.stats().partner(partner_id).statements_accepted
}

#[tokio::test]
async fn sigkilled_again_and_again_under_faults_the_rerun_resends_at_most_the_requests_in_doubt() {
    const PER_REQUEST: u64 = 50;
    const CONCURRENCY: u64 = 4;
    const BOUND: u64 = CONCURRENCY * PER_REQUEST;
    const KILLS: usize = 4;
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    // Faults that store nothing (5xx, resets, 503 after a delay): a retry
    // never re-sends a statement KERIS holds, so every duplicate the
    // simulator counts is a statement a killed run left unrecorded.
    sim.set_faults(Faults {
        seed: 11,
        server_error_share: 0.1,
        reset_share: 0.05,
        hang_share: 0.1,
        hang_secs: 0.05,
        stored_before_error_share: 0.0,
        ..Faults::default()
    });
    let (per_request, concurrency) = (PER_REQUEST as usize, CONCURRENCY as usize);
    let env = keris_env(&sim, |s| {
        s.keris.max_statements_per_request = per_request;
        s.keris.max_concurrency = concurrency;
        s.keris.max_attempts = 4;
        s.jobs.keris_transfer.give_up_after_transient_failures = 0;
        s.jobs.keris_transfer.read_batch_size = 200;
    })
    .await;
    let n = 4_000;
    let expected = ready_day(&env, n).await;
    let partner_id = aidt_batch::jobs::shared::partners::partners_by_id(&env.app.settings.keris)
        .unwrap()
        .into_keys()
        .next()
        .unwrap();

    // Kill points: after a random number of newly accepted statements (the
    // seed is printed, so a failure can be replayed).
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Uuid::new_v4().as_u128() as u64);
    eprintln!("kill points from KILL_SEED={seed}");
    let mut rng = seed;
    let mut next_random = move |below: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };
    let mut per_kill = Vec::new();
    let mut left_in_doubt = 0;
    let mut dup_before = duplicates(&sim, &partner_id);
    for kill in 0..KILLS {
        let target = accepted(&sim, &partner_id) + 100 + next_random(500);
        let mut child = env
            .command(&[SEND, "--date", DAY])
            .env("AIDT__KERIS__API_DOMAIN", sim.base_url())
            .env(
                "AIDT__KERIS__MAX_STATEMENTS_PER_REQUEST",
                PER_REQUEST.to_string(),
            )
            .env("AIDT__KERIS__MAX_CONCURRENCY", CONCURRENCY.to_string())
            .env("AIDT__KERIS__BASE_BACKOFF_MS", "5")
            .env("AIDT__KERIS__MAX_BACKOFF_MS", "20")
            .env("AIDT__KERIS__MAX_ATTEMPTS", "4")
            .env(
                "AIDT__JOBS__KERIS_TRANSFER__GIVE_UP_AFTER_TRANSIENT_FAILURES",
                "0",
            )
            .env("AIDT__JOBS__KERIS_TRANSFER__READ_BATCH_SIZE", "200")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if accepted(&sim, &partner_id) >= target {
                break false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "run {kill} did not get going"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if !finished {
            signal(child.id(), "KILL");
        }
        child.wait().unwrap();
        let dup_now = duplicates(&sim, &partner_id);
        per_kill.push(dup_now - dup_before);
        dup_before = dup_now;
        let in_doubt = journal_rows(&env).await;
        eprintln!(
            "run {kill}: {} at {} accepted, {in_doubt} requests in doubt, {} re-sent by it",
            if finished { "ended" } else { "killed" },
            accepted(&sim, &partner_id),
            per_kill.last().unwrap()
        );
        assert!(
            in_doubt <= CONCURRENCY as i64,
            "at most max_concurrency requests in doubt: {in_doubt}"
        );
        left_in_doubt += in_doubt;
        if finished {
            break;
        }
    }
    assert!(left_in_doubt > 0, "the kills left requests in doubt");
    assert!(
        accepted(&sim, &partner_id) < n,
        "the kills came before the end"
    );

    // Reruns to completion, faults still on; then DC-01-002 for requests
    // that failed after all their attempts.
    let mut ended = false;
    for _ in 0..5 {
        let outcome = env.run_job(SEND, Some(date(DAY)), false).await;
        assert!(
            matches!(
                outcome.exit,
                Exit::Success | Exit::CompletedWithErrors | Exit::Failure
            ),
            "{:?}",
            outcome.exit
        );
        let ready = keris_docs(&env)
            .await
            .iter()
            .filter(|d| d.get_str("status") == Ok("READY"))
            .count();
        if ready == 0 && journal_rows(&env).await == 0 {
            ended = true;
            break;
        }
    }
    assert!(ended, "the reruns sent everything");
    per_kill.push(duplicates(&sim, &partner_id) - dup_before);
    sim.set_faults(Faults::default());
    env.run_job(RESEND, Some(date(DAY)), false).await;

    // Each run re-sent at most what the run killed before it had in doubt.
    for (run, resent) in per_kill.iter().enumerate() {
        assert!(
            *resent <= BOUND,
            "run {run} re-sent {resent} statements KERIS held, more than max_concurrency × max_statements_per_request = {BOUND} ({per_kill:?})"
        );
    }
    // Everything accepted once in the end, and recorded where KERIS holds it.
    assert_eq!(accepted(&sim, &partner_id), n, "{per_kill:?}");
    assert_sent_where_stored(&sim, &keris_docs(&env).await, &expected);
    let open: HashMap<String, i64> = sqlx::query_as(
        "SELECT status, count(*) FROM tb_dc_error_data_info WHERE status <> 'RESENT' GROUP BY status",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(open.is_empty(), "no error row left open: {open:?}");
}
