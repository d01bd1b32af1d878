//! Raw student ids never reach the run history or the logs: they must not
//! outlive a privacy deletion. A synthetic day is seeded, every KERIS and
//! privacy job runs as a real process against the simulator (with rejected
//! students and transient failures, so the error paths log too), and no
//! student id — hyphenated or simple — is found in `batch_job_run`,
//! `batch_checkpoint` or what the processes printed.

use keris_simulator::{self as simulator, Faults, SimulatorConfig};
use uuid::Uuid;

use crate::helpers::*;

const DATE: &str = "2026-03-05";

#[tokio::test]
async fn no_raw_student_id_in_history_checkpoints_or_logs_of_the_keris_and_privacy_jobs() {
    let env = TestEnv::new().await;
    let out = env.run_dev(&[
        "seed",
        "--students",
        "40",
        "--statements",
        "600",
        "--date",
        DATE,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let students: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM tb_lms_user WHERE user_type = 'S' ORDER BY user_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert!(students.len() >= 40);

    // Two students KERIS does not know, and some 5xx answers to retry.
    let sim = simulator::start(SimulatorConfig {
        faults: Faults {
            seed: 7,
            server_error_share: 0.1,
            stored_before_error_share: 0.5,
            reject_user_ids: students[..2].iter().map(Uuid::to_string).collect(),
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();

    let mut logs = String::new();
    for args in [
        vec!["lms-01-008"],
        vec!["dc-01-004"],
        vec!["lrs-01-001", "--date", DATE],
        vec!["dc-01-001", "--date", DATE],
        vec!["lrs-01-002", "--date", DATE],
        vec!["dc-01-002", "--date", DATE],
        vec!["dc-01-003"],
        vec!["lms-01-007"],
    ] {
        let mut cmd = env.command(&args);
        cmd.env("AIDT__KERIS__API_DOMAIN", sim.base_url())
            .env("AIDT__KERIS__BASE_BACKOFF_MS", "5")
            .env("AIDT__KERIS__MAX_BACKOFF_MS", "20")
            .env(
                "RUST_LOG",
                "debug,sqlx=warn,mongodb=warn,hyper=warn,reqwest=warn",
            );
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(4)),
            "{args:?} exit {code:?}: {}",
            stderr(&out)
        );
        logs.push_str(&stdout(&out));
        logs.push_str(&stderr(&out));
    }

    let history: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(r::text, E'\\n'), '') FROM batch_job_run r")
            .fetch_one(env.pg())
            .await
            .unwrap();
    let checkpoints: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(c::text, E'\\n'), '') FROM batch_checkpoint c",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_job_run")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(runs, 8, "every job ran once: {history}");
    assert!(
        sim.stats().statements_accepted() > 0 && logs.contains("retrying"),
        "the runs did real work and hit retries"
    );
    for student in &students {
        for form in [student.to_string(), student.simple().to_string()] {
            assert!(
                !history.contains(&form),
                "{form} in batch_job_run:\n{history}"
            );
            assert!(!checkpoints.contains(&form), "{form} in batch_checkpoint");
            assert!(!logs.contains(&form), "{form} in the logs:\n{logs}");
        }
    }
}
