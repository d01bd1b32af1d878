//! `aidt-batch chain`: the nightly KERIS flow run in order for one date, a
//! step broken by KERIS refusing transfers, and the chain run again to
//! finish the night, with each completed step run exactly once.

use std::collections::HashSet;

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::jobs::{KERIS_NIGHTLY, REGISTRY};
use aidt_batch::runtime::chain::{self, StepOutcome};
use aidt_batch::runtime::Exit;
use aidt_dev::seed::{self, SeedArgs};
use futures::TryStreamExt;
use keris_simulator::{self as simulator, Faults, SimulatorConfig};
use mongodb::bson::{doc, Document};
use sqlx::Connection;

use crate::helpers::{date, keris_env, seed_keris_day, stdout, TestEnv};

const DAY: &str = "2026-03-05";

/// Runs per job for the day, in the chain's order.
async fn runs_per_step(env: &TestEnv) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for step in KERIS_NIGHTLY.steps {
        let (all, completed): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'COMPLETED')
               FROM batch_job_run WHERE job_id = $1 AND business_date = $2",
        )
        .bind(step.id)
        .bind(date(DAY))
        .fetch_one(env.pg())
        .await
        .unwrap();
        out.push((step.id.to_string(), all, completed));
    }
    out
}

fn ran(exit: Exit) -> impl Fn(&StepOutcome) -> bool {
    move |o| matches!(o, StepOutcome::Ran { exit: e, run_id: Some(_) } if *e == exit)
}

#[tokio::test]
async fn a_broken_night_is_finished_by_running_the_chain_again() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| {
        s.keris.max_attempts = 1;
        s.jobs.keris_transfer.give_up_after_transient_failures = 1;
    })
    .await;
    // Without the seed's error rows (older days' history) every error row
    // below is this night's.
    seed_keris_day(&env, DAY, 30, 800, 11).await;

    // KERIS answers everything but the xAPI transfers (API-006/007).
    sim.set_faults(Faults {
        server_error_share: 1.0,
        stored_before_error_share: 0.0,
        only_apis: vec!["API-006".into(), "API-007".into()],
        ..Faults::default()
    });
    let mut lines = Vec::new();
    let first = chain::run(
        &env.app,
        &REGISTRY,
        &KERIS_NIGHTLY,
        date(DAY),
        serde_json::json!({"test": true}),
        |step, outcome| lines.push((step.id, outcome.clone())),
    )
    .await
    .unwrap();
    let outcomes: Vec<&StepOutcome> = first.steps.iter().map(|(_, o)| o).collect();
    assert_eq!(lines.len(), 5, "every step reported as decided");
    for (i, o) in outcomes.iter().take(3).enumerate() {
        assert!(ran(Exit::Success)(o), "step {i}: {o:?}");
    }
    assert!(
        !matches!(
            outcomes[3],
            StepOutcome::Ran {
                exit: Exit::Success,
                ..
            }
        ),
        "DC-01-001 cannot deliver: {:?}",
        outcomes[3]
    );
    assert_ne!(first.exit, Exit::Success);
    let ready_after_first: u64 = env
        .app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .count_documents(doc! { "status": "READY" })
        .await
        .unwrap();
    assert!(ready_after_first > 0, "nothing could be sent");
    assert_eq!(sim.stats().statements_accepted(), 0);

    // KERIS is back: the same command finishes the night.
    sim.set_faults(Faults::default());
    let second = chain::run(
        &env.app,
        &REGISTRY,
        &KERIS_NIGHTLY,
        date(DAY),
        serde_json::json!({"test": true}),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(second.exit, Exit::Success, "{:?}", second.steps);
    for (step, o) in second.steps.iter().take(3) {
        assert!(
            matches!(o, StepOutcome::AlreadyCompleted { .. }),
            "{}: {o:?}",
            step.id
        );
    }
    assert!(
        ran(Exit::Success)(&second.steps[3].1),
        "{:?}",
        second.steps[3]
    );
    assert!(
        ran(Exit::Success)(&second.steps[4].1),
        "{:?}",
        second.steps[4]
    );

    // Every statement of the day was accepted by KERIS, and once.
    let all: Vec<Document> = env
        .app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let statuses: HashSet<&str> = all.iter().map(|d| d.get_str("status").unwrap()).collect();
    let sent: HashSet<String> = all
        .iter()
        .filter(|d| d.get_str("status").unwrap() == "SENT")
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    let stats = sim.stats();
    assert_eq!(
        stats.statements_accepted(),
        sent.len() as u64,
        "{statuses:?} {stats:?}"
    );
    assert!(!statuses.contains("READY"), "{statuses:?}");

    // Each completed step completed once; only the broken steps ran twice.
    let runs = runs_per_step(&env).await;
    let completed: Vec<i64> = runs.iter().map(|r| r.2).collect();
    assert_eq!(completed, vec![1, 1, 1, 1, 1], "{runs:?}");
    let all_runs: Vec<i64> = runs.iter().map(|r| r.1).collect();
    assert_eq!(all_runs[..3], [1, 1, 1], "{runs:?}");
    assert_eq!(all_runs[3], 2, "DC-01-001 ran again: {runs:?}");
    let chained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM batch_job_run WHERE params->>'chain' = 'keris-nightly'",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(
        chained,
        all_runs.iter().sum::<i64>(),
        "every run names its chain"
    );

    // A third run has nothing left to do.
    let third = chain::run(
        &env.app,
        &REGISTRY,
        &KERIS_NIGHTLY,
        date(DAY),
        serde_json::json!({}),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(third.exit, Exit::Success);
    assert!(third
        .steps
        .iter()
        .all(|(_, o)| matches!(o, StepOutcome::AlreadyCompleted { .. })));
}

#[tokio::test]
async fn chain_list_plan_and_an_unknown_chain_on_the_command_line() {
    let mut env = TestEnv::new().await;
    let list = env.run_cli(&["chain", "--list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    let ids: Vec<&str> = KERIS_NIGHTLY.steps.iter().map(|s| s.id).collect();
    assert!(text.contains("keris-nightly"), "{text}");
    let positions: Vec<usize> = ids.iter().map(|id| text.find(id).unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order: {text}"
    );

    // LMS-01-008 and LRS-01-001 completed, DC-01-004 not: the chain would
    // resume at DC-01-004 and run everything after it, LRS-01-001 included.
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let base = sim.base_url();
    env.configure(|s| s.keris.api_domain = Some(base));
    env.run_ok("LMS-01-008", Some(date(DAY)), false).await;
    env.run_ok("LRS-01-001", Some(date(DAY)), false).await;
    let plan = env.run_cli(&["chain", "keris-nightly", "--date", DAY, "--plan"]);
    assert!(plan.status.success(), "{}", crate::helpers::stderr(&plan));
    let text = stdout(&plan);
    let line = |id: &str| text.lines().find(|l| l.contains(id)).unwrap().to_string();
    assert!(line("LMS-01-008").contains("already COMPLETED"), "{text}");
    for id in ["DC-01-004", "LRS-01-001", "DC-01-001", "DC-01-002"] {
        assert!(line(id).contains("would run"), "{id}: {text}");
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_job_run")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(runs, 2, "--plan runs nothing");

    let unknown = env.run_cli(&["chain", "keris-nightlly"]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = crate::helpers::stderr(&unknown);
    assert!(
        err.contains("unknown chain `keris-nightlly`") && err.contains("keris-nightly"),
        "{err}"
    );
}

#[tokio::test]
async fn a_step_that_cannot_take_its_lock_stops_the_chain_with_exit_3_and_the_rerun_resumes_there()
{
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut env = keris_env(&sim, |_| {}).await;
    env.configure_job("lrs_01_001", "lock_wait_secs", 0_i64);
    seed::seed(&env.app, &SeedArgs::new(10, 200, Some(date(DAY)), 3))
        .await
        .unwrap();
    // Someone else holds the xAPI jobs' lock (LRS-01-001's group).
    let mut holder = env.pg().acquire().await.unwrap().detach();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('aidt-batch/group/keris-xapi', 0))")
        .execute(&mut holder)
        .await
        .unwrap();
    let run = |env: &TestEnv| {
        let app = env.app.clone();
        async move {
            chain::run(
                &app,
                &REGISTRY,
                &KERIS_NIGHTLY,
                date(DAY),
                serde_json::json!({}),
                |_, _| {},
            )
            .await
            .unwrap()
        }
    };

    let first = run(&env).await;
    assert_eq!(first.exit, Exit::AlreadyRunning, "{:?}", first.steps);
    let outcomes: Vec<&StepOutcome> = first.steps.iter().map(|(_, o)| o).collect();
    assert!(ran(Exit::Success)(outcomes[0]), "{outcomes:?}");
    assert!(ran(Exit::Success)(outcomes[1]), "{outcomes:?}");
    assert!(ran(Exit::AlreadyRunning)(outcomes[2]), "{outcomes:?}");
    assert_eq!(outcomes[3], &StepOutcome::NotReached);
    assert_eq!(outcomes[4], &StepOutcome::NotReached);

    // Unlocked explicitly: a closed connection's backend frees its locks
    // only once it has exited, which may be after the next step tried.
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('aidt-batch/group/keris-xapi', 0))")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    let second = run(&env).await;
    assert_eq!(second.exit, Exit::Success, "{:?}", second.steps);
    let status: Vec<(String, String)> =
        sqlx::query_as("SELECT job_id, status FROM batch_job_run ORDER BY run_id")
            .fetch_all(env.pg())
            .await
            .unwrap();
    let expected: Vec<(String, String)> = [
        ("LMS-01-008", "COMPLETED"),
        ("DC-01-004", "COMPLETED"),
        ("LRS-01-001", "SKIPPED"),
        ("LRS-01-001", "COMPLETED"),
        ("DC-01-001", "COMPLETED"),
        ("DC-01-002", "COMPLETED"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(status, expected);
    assert!(sim.stats().statements_accepted() > 0);
}
