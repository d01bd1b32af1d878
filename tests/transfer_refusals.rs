//! Requests KERIS (or a proxy or firewall in front of it) refuses as a
//! whole, against the simulator over HTTP, real PostgreSQL and the
//! MongoDB-wire server: a refusal caused by one statement is split down to
//! that statement, and a refusal of everything (a firewall's 403, a proxy's
//! 404, a refused Partner-ID) stops DC-01-001 and DC-01-002 with what KERIS
//! answered, leaving the night for the next run instead of failing it.

use std::collections::HashSet;

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::runtime::history::RunStatus;
use aidt_batch::runtime::Exit;
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use mongodb::bson::{doc, Document};
use uuid::Uuid;

use crate::helpers::{date, keris_env, run_status, TestEnv};
use crate::transfer::{assert_all_sent, counts, docs, error_rows, id_of, seed_day};

const DAY: &str = "2026-03-05";
const DAY_BEFORE: &str = "2026-03-04";
const SEND: &str = "DC-01-001";
const RESEND: &str = "DC-01-002";

/// The Partner-ID of `config/local.toml`'s partner `demo`.
const DEMO_PARTNER: &str = "0b6a4a8e-3f4c-4d0e-9a51-2d1f6f1c0001";

/// The API-007 requests the simulator answered, by answer (`00000`,
/// `http-413`, …).
fn api_007_answers(sim: &SimulatorHandle) -> std::collections::BTreeMap<String, u64> {
    sim.stats()
        .partner(DEMO_PARTNER)
        .calls
        .get("API-007")
        .map(|c| c.answers.clone())
        .unwrap_or_default()
}

/// The documents in the order DC-01-001 sends them: (user_hash, _id).
fn in_send_order(mut ready: Vec<Document>) -> Vec<Document> {
    ready.sort_by_key(|d| (d.get_i64("user_hash").unwrap(), id_of(d)));
    ready
}

#[tokio::test]
async fn a_request_a_proxy_refuses_for_one_statement_is_split_until_only_that_statement_fails() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| s.keris.max_statements_per_request = 500).await;
    let ready = in_send_order(seed_day(&env, 150, 6_000).await);
    let n = ready.len();
    assert!((3_000..4_000).contains(&n), "a night of ~3,400: {n}");
    // Two in the first request of 500, one in each half; one much later.
    let bad: Vec<String> = [10, 400, n - 700]
        .iter()
        .map(|&i| id_of(&ready[i]))
        .collect();
    sim.set_faults(Faults {
        proxy_status: 413,
        proxy_statement_ids: bad.iter().map(|id| Uuid::parse_str(id).unwrap()).collect(),
        ..Faults::default()
    });

    let outcome = env.run_job(SEND, Some(date(DAY)), false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let run = outcome.run_id.unwrap();
    assert_eq!(counts(&env, run).await, (n as i64, n as i64 - 3, 0, 3));
    // Exactly the three: an error row each, with the proxy's code and a
    // message that says what it answered (no Partner-ID in it).
    let rows = error_rows(&env).await;
    let failed: HashSet<String> = rows.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(failed, bad.iter().cloned().collect());
    for (_, status, code, index, message) in &rows {
        assert_eq!((status.as_str(), code.as_str()), ("PENDING", "HTTP 413"));
        assert_eq!(*index, None, "KERIS stored it at no index");
        let message = message.as_deref().unwrap();
        assert!(message.contains("413 Payload Too Large"), "{message}");
        assert!(!message.contains(DEMO_PARTNER), "{message}");
    }
    let errors: HashSet<String> = docs(&env, doc! { "status": "ERROR" })
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(errors, failed);
    // Everything else accepted once, each where KERIS stored it: the split
    // halves went out on the transfer at the right indexes (a wrong index
    // would have been refused with 40001 for leaving a gap).
    let expected: HashSet<String> = ready
        .iter()
        .map(id_of)
        .filter(|id| !failed.contains(id))
        .collect();
    assert_all_sent(&sim, &docs(&env, doc! {}).await, &expected);
    assert_eq!(sim.stats().statements_accepted(), (n - 3) as u64);
    let answers = api_007_answers(&sim);
    assert_eq!(
        answers.keys().cloned().collect::<Vec<_>>(),
        ["00000", "http-413"],
        "{answers:?}"
    );
    // Splitting costs a few requests per bad statement (halving 500 takes 9
    // steps, each a refused and an accepted half), not one per statement.
    let requests: u64 = answers.values().sum();
    let bound = n.div_ceil(500) as u64 + 3 * 2 * 9 + 3;
    assert!(requests <= bound, "{requests} requests, at most {bound}");
    let d = env.details(run).await;
    assert_eq!(
        d["partners"]["demo"]["errors_by_code"]["HTTP 413"], 3,
        "{d}"
    );
    assert_eq!(d["days"][DAY]["sent"], n - 3, "{d}");
    assert_eq!(d["days"][DAY]["failed"], 3, "{d}");

    // DC-01-002 fails the three for a person (no resend fixes them); the
    // rest is not touched.
    sim.set_faults(Faults::default());
    let resend = env.run_job(RESEND, Some(date(DAY)), false).await;
    assert_eq!(resend.exit, Exit::CompletedWithErrors);
    let d = env.details(resend.run_id.unwrap()).await;
    assert_eq!(d["failed_for_good"], 3, "{d}");
    let rows = error_rows(&env).await;
    assert!(
        rows.iter().all(|r| r.1 == "FAILED") && rows.len() == 3,
        "{rows:?}"
    );
    assert_eq!(sim.stats().statements_accepted(), (n - 3) as u64);
}

/// What stands between the batch and KERIS in the systemic tests.
#[derive(Debug, Clone, Copy)]
enum Wall {
    /// A web application firewall answers API-007 with an HTML 403.
    Firewall403,
    /// A proxy routes API-007 nowhere: an HTML 404.
    Proxy404,
    /// KERIS does not know the Partner-ID: `40101` on API-006.
    PartnerRefused,
}

impl Wall {
    /// A simulator behind this wall.
    async fn simulator(self) -> SimulatorHandle {
        let partners = match self {
            Wall::PartnerRefused => vec![Uuid::new_v4().to_string()],
            _ => Vec::new(),
        };
        let sim = simulator::start(SimulatorConfig {
            partners,
            ..SimulatorConfig::default()
        })
        .await
        .unwrap();
        self.raise(&sim);
        sim
    }

    /// Puts `sim` behind the wall; for a refused Partner-ID, returns a
    /// simulator that refuses it and points `env` at it.
    async fn raise_before(
        self,
        sim: &SimulatorHandle,
        env: &mut TestEnv,
    ) -> Option<SimulatorHandle> {
        match self {
            Wall::PartnerRefused => {
                let walled = self.simulator().await;
                let url = walled.base_url();
                env.configure(|s| s.keris.api_domain = Some(url));
                Some(walled)
            }
            _ => {
                self.raise(sim);
                None
            }
        }
    }

    fn raise(self, sim: &SimulatorHandle) {
        let status = match self {
            Wall::Firewall403 => 403,
            Wall::Proxy404 => 404,
            Wall::PartnerRefused => return,
        };
        sim.set_faults(Faults {
            proxy_status: status,
            only_apis: vec!["API-007".into()],
            ..Faults::default()
        });
    }

    /// What the run's error must quote of the answer.
    fn quoted(self) -> [&'static str; 2] {
        match self {
            Wall::Firewall403 => ["HTTP 403", "403 Forbidden"],
            Wall::Proxy404 => ["HTTP 404", "404 Not Found"],
            Wall::PartnerRefused => ["code 40101", "unknown Partner-ID"],
        }
    }
}

/// The run ended FAILED (exit 1) with an error quoting what KERIS answered,
/// without the Partner-ID, having sent at most a handful of requests
/// (`api_007`: the API-007 requests it made).
async fn assert_stopped(
    env: &TestEnv,
    sim: &SimulatorHandle,
    outcome: &aidt_batch::runtime::runner::RunOutcome,
    wall: Wall,
    api_007: u64,
) {
    assert_eq!(outcome.exit, Exit::Failure, "{wall:?}");
    let run = outcome.run_id.unwrap();
    assert_eq!(run_status(env.pg(), run).await, RunStatus::Failed);
    let error: String = sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE run_id = $1")
        .bind(run)
        .fetch_one(env.pg())
        .await
        .unwrap();
    for quoted in wall.quoted() {
        assert!(error.contains(quoted), "{wall:?}: {error}");
    }
    assert!(
        error.contains("partner `demo`") && !error.contains(DEMO_PARTNER),
        "{error}"
    );
    let d = env.details(run).await;
    assert!(d["partners"]["demo"]["stopped"]["code"].is_string(), "{d}");
    match wall {
        Wall::PartnerRefused => assert_eq!(
            (sim.stats().requests("API-006"), api_007),
            (3, 0),
            "three refused opens, then the stop"
        ),
        // A refused request of 100 halved down to three single statements
        // refused in a row: 11 requests (4 when a statement KERIS holds
        // can be sent to probe with); never one per statement.
        _ => assert!(api_007 <= 11, "{wall:?}: {api_007} requests"),
    }
}

async fn journal_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap()
}

/// DC-01-001 behind `wall`: the night stays READY, nothing is recorded as
/// failed, and once the wall is gone the next run sends it all. With
/// `sent_before`, an earlier night was sent (KERIS holds a statement the
/// sender can probe with); without, it is the partner's first night.
async fn night_behind(wall: Wall, sent_before: bool) {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut env = keris_env(&sim, |_| {}).await;
    let mut ready = seed_day(&env, 20, 600).await;
    let coll = env.app.mongo.collection::<Document>(KERIS_BATCH_DATA);
    if sent_before {
        // 30 of the statements belong to the night before, already sent.
        let earlier: Vec<String> = ready.drain(..30).map(|d| id_of(&d)).collect();
        coll.update_many(
            doc! { "_id": { "$in": &earlier } },
            doc! { "$set": { "base_dt": DAY_BEFORE } },
        )
        .await
        .unwrap();
        env.run_ok(SEND, Some(date(DAY_BEFORE)), false).await;
    }
    let walled = wall.raise_before(&sim, &mut env).await;
    let behind = walled.as_ref().unwrap_or(&sim);
    let api_007_before = behind.stats().requests("API-007");

    let outcome = env.run_job(SEND, Some(date(DAY)), false).await;
    let api_007 = behind.stats().requests("API-007") - api_007_before;
    assert_stopped(&env, behind, &outcome, wall, api_007).await;
    if sent_before && !matches!(wall, Wall::PartnerRefused) {
        assert_eq!(
            api_007, 4,
            "three refusals, then a statement KERIS holds refused too"
        );
    }
    let still_ready = docs(&env, doc! { "status": "READY", "base_dt": DAY }).await;
    assert_eq!(
        still_ready.len(),
        ready.len(),
        "{wall:?}: the night stays READY"
    );
    assert!(
        error_rows(&env).await.is_empty(),
        "{wall:?}: no statement recorded as failed"
    );
    assert_eq!(journal_rows(&env).await, 0);

    // The wall is gone: the next run sends the night, each statement once.
    sim.set_faults(Faults::default());
    env.configure(|s| s.keris.api_domain = Some(sim.base_url()));
    env.run_ok(SEND, Some(date(DAY)), false).await;
    let expected: HashSet<String> = ready.iter().map(id_of).collect();
    let night = docs(&env, doc! { "base_dt": DAY }).await;
    assert_all_sent(&sim, &night, &expected);
    let before = if sent_before { 30 } else { 0 };
    assert_eq!(
        sim.stats().statements_accepted(),
        (ready.len() + before) as u64
    );
}

#[tokio::test]
async fn dc_01_001_behind_a_firewalls_403_stops_and_leaves_the_night_ready() {
    night_behind(Wall::Firewall403, true).await;
}

#[tokio::test]
async fn dc_01_001_behind_a_proxys_404_on_its_first_night_stops_and_leaves_the_night_ready() {
    night_behind(Wall::Proxy404, false).await;
}

#[tokio::test]
async fn dc_01_001_with_a_refused_partner_id_stops_after_three_opens_and_leaves_the_night_ready() {
    night_behind(Wall::PartnerRefused, false).await;
}

/// DC-01-002 behind `wall`: the open rows stay as they were (no retry
/// counted, no FAILED), the run stops with what KERIS answered, and once the
/// wall is gone the next run resends them.
async fn resend_behind(wall: Wall) {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut env = keris_env(&sim, |s| s.keris.max_attempts = 1).await;
    let ready = seed_day(&env, 20, 600).await;
    // The first two requests fail (nothing stored): 200 open rows.
    sim.set_faults(Faults {
        server_error_next: 2,
        stored_before_error_share: 0.0,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    assert_eq!(
        env.run_job(SEND, Some(date(DAY)), false).await.exit,
        Exit::CompletedWithErrors
    );
    let open = error_rows(&env).await;
    assert_eq!(open.len(), 200);

    let walled = wall.raise_before(&sim, &mut env).await;
    let behind = walled.as_ref().unwrap_or(&sim);
    let api_007_before = behind.stats().requests("API-007");
    let outcome = env.run_job(RESEND, Some(date(DAY)), false).await;
    let api_007 = behind.stats().requests("API-007") - api_007_before;
    assert_stopped(&env, behind, &outcome, wall, api_007).await;
    let retries: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT status, err_code, retry_cnt FROM tb_dc_error_data_info ORDER BY err_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert!(
        retries
            .iter()
            .all(|r| r == &("PENDING".to_string(), "KERIS_UNAVAILABLE".to_string(), 0)),
        "{wall:?}: rows as they were: {retries:?}"
    );

    sim.set_faults(Faults::default());
    env.configure(|s| s.keris.api_domain = Some(sim.base_url()));
    env.run_ok(RESEND, Some(date(DAY)), false).await;
    assert!(error_rows(&env).await.iter().all(|r| r.1 == "RESENT"));
    let expected: HashSet<String> = ready.iter().map(id_of).collect();
    assert_all_sent(&sim, &docs(&env, doc! {}).await, &expected);
    assert_eq!(sim.stats().statements_accepted(), ready.len() as u64);
}

#[tokio::test]
async fn dc_01_002_behind_a_firewalls_403_stops_and_leaves_its_rows_open() {
    resend_behind(Wall::Firewall403).await;
}

#[tokio::test]
async fn dc_01_002_behind_a_proxys_404_stops_and_leaves_its_rows_open() {
    resend_behind(Wall::Proxy404).await;
}

#[tokio::test]
async fn dc_01_002_with_a_refused_partner_id_stops_and_leaves_its_rows_open() {
    resend_behind(Wall::PartnerRefused).await;
}
