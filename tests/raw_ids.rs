//! Raw student ids never reach the run history or the logs: they must not
//! outlive a privacy deletion. A synthetic day is seeded, every KERIS and
//! privacy job runs as a real process against the simulator (with rejected
//! students and transient failures, so the error paths log too), then the
//! privacy jobs again after data was written for the deleted students (ids
//! upper case and as BSON UUIDs, for the sweep), and no student id —
//! hyphenated or simple, either case — is found in `batch_job_run`,
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
        logs.push_str(&run_logged(&env, &sim, &args).await);
    }
    // Data written for the deleted students afterwards, their ids in other
    // forms, then the next night's privacy runs sweep it.
    let deleted: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM tb_lms_user WHERE user_type = 'S' AND del_yn = 'Y' ORDER BY user_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert!(!deleted.is_empty(), "the seed has students without consent");
    write_after_deletion(&env, &deleted).await;
    for args in [vec!["dc-01-003"], vec!["lms-01-007"]] {
        logs.push_str(&run_logged(&env, &sim, &args).await);
    }
    let swept: i64 = sqlx::query_scalar(
        "SELECT sum(v::bigint)::bigint FROM batch_privacy_audit, jsonb_each_text(swept_counts) AS x(k, v)",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(swept, 4 * deleted.len() as i64, "the sweeps found it all");

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
    assert_eq!(
        runs, 10,
        "every job ran once, the privacy jobs twice: {history}"
    );
    assert!(
        sim.stats().statements_accepted() > 0 && logs.contains("retrying"),
        "the runs did real work and hit retries"
    );
    for student in &students {
        let forms = [student.to_string(), student.simple().to_string()];
        for form in forms.iter().flat_map(|f| [f.clone(), f.to_uppercase()]) {
            assert!(
                !history.contains(&form),
                "{form} in batch_job_run:\n{history}"
            );
            assert!(!checkpoints.contains(&form), "{form} in batch_checkpoint");
            assert!(!logs.contains(&form), "{form} in the logs:\n{logs}");
        }
    }
}

/// Runs `aidt-batch args…` as a process against `sim` at debug level;
/// returns what it printed.
async fn run_logged(env: &TestEnv, sim: &simulator::SimulatorHandle, args: &[&str]) -> String {
    let mut cmd = env.command(args);
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
    stdout(&out) + &stderr(&out)
}

/// For each of `students`: an access-log row, an error row, a statement
/// with the id upper case and a KERIS document with it as a BSON UUID.
async fn write_after_deletion(env: &TestEnv, students: &[Uuid]) {
    use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
    for (i, student) in students.iter().enumerate() {
        sqlx::query(
            "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) VALUES ($1, '/late', '10.0.0.1', now())",
        )
        .bind(student)
        .execute(env.pg())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, statement_id, err_code, created_at, upd_dt)
             VALUES ('DC-01-001', $2, '00000000-0000-4000-8000-0000000000aa', $1, gen_random_uuid(), 'E1', now(), now())",
        )
        .bind(student)
        .bind(date(DATE))
        .execute(env.pg())
        .await
        .unwrap();
        let db = &env.app.mongo;
        db.collection::<Document>("statements")
            .insert_one(
                doc! { "_id": format!("late-{i}"), "user_id": student.to_string().to_uppercase() },
            )
            .await
            .unwrap();
        let binary = Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: student.as_bytes().to_vec(),
        });
        db.collection::<Document>("keris_batch_data")
            .insert_one(doc! { "_id": format!("late-{i}"), "user_id": binary })
            .await
            .unwrap();
    }
}
