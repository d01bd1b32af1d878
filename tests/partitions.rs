//! Partitions (`--partition I/N`): the hash agrees between Rust and SQL and
//! splits students evenly; 4 partitions of the KERIS flow, as 4 processes at
//! once, end exactly where one unpartitioned run ends; a killed partition's
//! rerun alone completes the night; partitions lock each other out only
//! where they should; bad values exit 2 and say which.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aidt_batch::contract::KERIS_BATCH_DATA;
use aidt_batch::jobs::REGISTRY;
use aidt_batch::runtime::partition::{user_hash, Partition};
use aidt_batch::runtime::runner::{self, RunOutcome, RunRequest};
use aidt_batch::runtime::Exit;
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use mongodb::bson::{doc, Document};
use sqlx::Connection;
use uuid::Uuid;

use crate::helpers::{
    date, expected_partition, keris_docs, keris_env, seed_keris_day, signal, stderr, TestEnv,
};

const DAY: &str = "2026-03-05";
const SEND: &str = "DC-01-001";
const AGGREGATE: &str = "LRS-01-001";
const REGENERATE: &str = "LRS-01-002";
const RESEND: &str = "DC-01-002";

async fn in_process(env: &TestEnv, id: &str, partition: Option<Partition>) -> RunOutcome {
    let def = REGISTRY.find(id).unwrap();
    let request = RunRequest {
        date: Some(date(DAY)),
        partition,
        params: serde_json::json!({"test": true}),
        ..RunRequest::new(&REGISTRY, def)
    };
    runner::run(env.app.clone(), request).await.unwrap()
}

/// id → (status, err_code, statement) of every keris_batch_data document.
async fn batch_state(env: &TestEnv) -> BTreeMap<String, (String, String, Document)> {
    keris_docs(env)
        .await
        .into_iter()
        .map(|d| {
            (
                d.get_str("_id").unwrap().to_string(),
                (
                    d.get_str("status").unwrap().to_string(),
                    d.get_str("err_code").unwrap_or_default().to_string(),
                    d.get_document("statement").unwrap().clone(),
                ),
            )
        })
        .collect()
}

/// (statement_id, user_id, err_code, status, retry_cnt) of every error row.
async fn error_table(env: &TestEnv) -> BTreeSet<(Uuid, Option<Uuid>, String, String, i32)> {
    sqlx::query_as(
        "SELECT statement_id, user_id, err_code, status, retry_cnt FROM tb_dc_error_data_info",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// id → statement of everything the simulator accepted.
fn accepted(sim: &SimulatorHandle) -> BTreeMap<Uuid, serde_json::Value> {
    sim.statements(usize::MAX)
        .into_iter()
        .map(|s| (s.id.unwrap(), s.statement))
        .collect()
}

/// Forgets what DC-01-001 did: every statement READY again, no error rows,
/// an empty simulator.
async fn reset_sending(env: &TestEnv, sim: &SimulatorHandle) {
    env.app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .update_many(
            doc! { "status": { "$in": ["SENT", "ERROR"] } },
            doc! { "$set": { "status": "READY" }, "$unset": { "transfer_id": "", "stmt_index": "", "sent_at": "", "err_code": "", "err_msg": "" } },
        )
        .await
        .unwrap();
    sqlx::query("DELETE FROM tb_dc_error_data_info")
        .execute(env.pg())
        .await
        .unwrap();
    sim.reset();
}

/// `job --date DAY --partition i/4` for i in 0..4, as 4 processes at once
/// against `sim`; their outputs in partition order.
async fn four_processes(
    env: &TestEnv,
    sim: &SimulatorHandle,
    job: &str,
) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.command(&[job, "--date", DAY, "--partition", &format!("{i}/4")])
                .env("AIDT__KERIS__API_DOMAIN", sim.base_url())
                .env("AIDT__KERIS__MAX_STATEMENTS_PER_REQUEST", "50")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs = Vec::new();
    for child in children {
        // Waited for off the runtime: the simulator answers on it meanwhile.
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        outputs.push(out);
    }
    outputs
}

async fn seed_day(env: &TestEnv, students: u32, statements: u32) {
    seed_keris_day(env, DAY, students, statements, 11).await;
}

#[tokio::test]
async fn the_partition_hash_is_the_same_in_rust_and_sql_and_splits_students_evenly() {
    let env = TestEnv::new().await;
    let mut ids: Vec<String> = (0..20_000).map(|_| Uuid::new_v4().to_string()).collect();
    ids.extend(["", "학생-0001", "ÄÖÜ", "a"].map(String::from));
    let from_sql: Vec<i64> = sqlx::query_scalar(
        "SELECT aidt_user_hash(u) FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n",
    )
    .bind(&ids)
    .fetch_all(env.pg())
    .await
    .unwrap();
    for (id, sql) in ids.iter().zip(&from_sql) {
        assert_eq!(user_hash(id), *sql, "{id:?}");
        for n in [1, 2, 3, 4, 16] {
            let p = Partition::new(expected_partition(id, n), n).unwrap();
            assert!(p.contains(id), "{id:?} in {p}");
            let (lo, hi) = p.range();
            assert!(*sql >= lo && hi.is_none_or(|hi| *sql < hi));
        }
    }
    // Uniform: each of 4 partitions holds 25% ± 2.5% of 20,000 ids (> 7 sigma).
    let mut per = [0u32; 4];
    for id in &ids[..20_000] {
        per[expected_partition(id, 4) as usize] += 1;
    }
    assert!(per.iter().all(|&k| (4_500..=5_500).contains(&k)), "{per:?}");
}

#[tokio::test]
async fn four_partitions_as_four_processes_end_exactly_where_one_run_ends() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| s.keris.max_statements_per_request = 50).await;
    let started = Instant::now();
    seed_day(&env, 60, 3_000).await;
    eprintln!("seeded at {:?}", started.elapsed());

    // LRS-01-001 in 4 partitions writes what one run writes.
    for i in 0..4 {
        let out = in_process(&env, AGGREGATE, Partition::new(i, 4)).await;
        assert_eq!(out.exit, Exit::Success);
    }
    eprintln!("aggregated in partitions at {:?}", started.elapsed());
    let by_partitions = batch_state(&env).await;
    env.app
        .mongo
        .collection::<Document>(KERIS_BATCH_DATA)
        .delete_many(doc! {})
        .await
        .unwrap();
    assert_eq!(in_process(&env, AGGREGATE, None).await.exit, Exit::Success);
    let whole = batch_state(&env).await;
    assert_eq!(by_partitions, whole);
    let all = keris_docs(&env).await;
    let ready: BTreeSet<String> = all
        .iter()
        .filter(|d| d.get_str("status") == Ok("READY"))
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    assert!(ready.len() > 200, "{}", ready.len());
    // Every document carries its student's hash.
    for d in &all {
        let user = d.get_str("user_id").unwrap();
        assert_eq!(d.get_i64("user_hash").unwrap(), user_hash(user));
    }

    // KERIS does not know three students: their statements end in the error table.
    let mut users: Vec<String> = all
        .iter()
        .map(|d| d.get_str("user_id").unwrap().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    users.truncate(3);
    sim.set_faults(Faults {
        reject_user_ids: users.clone(),
        ..Faults::default()
    });
    let rejected: BTreeSet<String> = all
        .iter()
        .filter(|d| {
            d.get_str("status") == Ok("READY")
                && users.contains(&d.get_str("user_id").unwrap().to_string())
        })
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    assert!(!rejected.is_empty());

    // 4 processes at once.
    let outputs = four_processes(&env, &sim, SEND).await;
    // A partition holding a student KERIS refuses ends with errors (exit 4).
    let with_errors: BTreeSet<u32> = users.iter().map(|u| expected_partition(u, 4)).collect();
    for (i, out) in outputs.into_iter().enumerate() {
        let expected = if with_errors.contains(&(i as u32)) {
            4
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(expected), "{i}: {}", stderr(&out));
    }
    let partitioned = (
        batch_state(&env).await,
        error_table(&env).await,
        accepted(&sim),
    );
    let opened = sim.stats().requests("API-006");
    let sim_partitioned = sim.statements(usize::MAX);
    eprintln!("partitioned sending done at {:?}", started.elapsed());
    let runs: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT params->>'partition', status FROM batch_job_run WHERE job_id = $1 ORDER BY 1",
    )
    .bind(SEND)
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(
        runs,
        (0..4)
            .map(|i| {
                let status = if with_errors.contains(&i) {
                    "COMPLETED_WITH_ERRORS"
                } else {
                    "COMPLETED"
                };
                (Some(format!("{i}/4")), status.to_string())
            })
            .collect::<Vec<_>>()
    );

    reset_sending(&env, &sim).await;
    assert_eq!(
        in_process(&env, SEND, None).await.exit,
        Exit::CompletedWithErrors
    );
    let unpartitioned = (
        batch_state(&env).await,
        error_table(&env).await,
        accepted(&sim),
    );
    let differing: Vec<_> = partitioned
        .0
        .iter()
        .filter(|(id, v)| unpartitioned.0.get(*id) != Some(*v))
        .map(|(id, v)| {
            (
                id,
                &v.0,
                &v.1,
                unpartitioned.0.get(id).map(|w| (&w.0, &w.1)),
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "same documents, same statuses: {differing:?}"
    );
    assert_eq!(partitioned.0.len(), unpartitioned.0.len());
    assert_eq!(partitioned.1, unpartitioned.1, "same error table");
    assert_eq!(partitioned.2, unpartitioned.2, "same statements at KERIS");

    // And what they are, computed from the seed here.
    let expected: BTreeSet<Uuid> = ready
        .difference(&rejected)
        .map(|id| Uuid::parse_str(id).unwrap())
        .collect();
    assert_eq!(
        partitioned.2.keys().copied().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(
        partitioned
            .1
            .iter()
            .map(|r| (r.0.to_string(), r.2.as_str()))
            .collect::<BTreeSet<_>>(),
        rejected
            .iter()
            .map(|id| (id.clone(), "XAPI_USER_ERR"))
            .collect()
    );
    assert!(opened >= 4, "{opened}");
    assert_transfers_of_their_own(sim_partitioned);
}

/// No transfer carries students of two partitions (of 4), and all 4 sent.
fn assert_transfers_of_their_own(held: Vec<simulator::RecordedStatement>) {
    let mut partition_of_transfer: BTreeMap<String, u32> = BTreeMap::new();
    for held in held {
        let user = held.statement["actor"]["account"]["name"].as_str().unwrap();
        let p = expected_partition(user, 4);
        assert_eq!(
            *partition_of_transfer.entry(held.transfer_id).or_insert(p),
            p
        );
    }
    assert_eq!(
        partition_of_transfer
            .values()
            .collect::<BTreeSet<_>>()
            .len(),
        4
    );
}

#[tokio::test]
async fn a_killed_partition_rerun_alone_completes_the_night() {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let env = keris_env(&sim, |s| s.keris.max_statements_per_request = 50).await;
    seed_day(&env, 40, 2_000).await;
    assert_eq!(in_process(&env, AGGREGATE, None).await.exit, Exit::Success);
    let ready: BTreeSet<String> = keris_docs(&env)
        .await
        .iter()
        .filter(|d| d.get_str("status") == Ok("READY"))
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    let of_1: usize = keris_docs(&env)
        .await
        .iter()
        .filter(|d| {
            d.get_str("status") == Ok("READY")
                && expected_partition(d.get_str("user_id").unwrap(), 4) == 1
        })
        .count();
    assert!(of_1 > 100, "{of_1}");

    // Partition 1 is slow and gets killed mid-transfer.
    sim.set_faults(Faults {
        hang_share: 1.0,
        hang_secs: 0.04,
        stored_before_error_share: 1.0,
        only_apis: vec!["API-007".into()],
        ..Faults::default()
    });
    let mut child = env
        .command(&[SEND, "--date", DAY, "--partition", "1/4"])
        .env("AIDT__KERIS__API_DOMAIN", sim.base_url())
        .env("AIDT__KERIS__MAX_STATEMENTS_PER_REQUEST", "10")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let journal: i64 =
            sqlx::query_scalar("SELECT count(*) FROM batch_keris_request WHERE part = '1/4'")
                .fetch_one(env.pg())
                .await
                .unwrap();
        if sim.stats().statements_accepted() >= 40 && journal > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "partition 1 did not get going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(child.id(), "KILL");
    child.wait().unwrap();
    sim.set_faults(Faults::default());

    // The other partitions complete; the night is not done without partition 1.
    for i in [0, 2, 3] {
        assert_eq!(
            in_process(&env, SEND, Partition::new(i, 4)).await.exit,
            Exit::Success
        );
    }
    let done = aidt_batch::runtime::chain::completed_run(env.pg(), SEND, date(DAY))
        .await
        .unwrap();
    assert_eq!(done, None, "3 of 4 partitions are not the night");
    let journal: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert!(
        journal > 0,
        "partition 1's requests in doubt are left to partition 1"
    );

    // Partition 1 alone, rerun: resumes its own requests in doubt.
    let rerun = in_process(&env, SEND, Partition::new(1, 4)).await;
    assert_eq!(rerun.exit, Exit::Success);
    let details = env.details(rerun.run_id.unwrap()).await;
    assert!(
        details["partners"]["demo"]["resumed_requests"]
            .as_u64()
            .unwrap()
            >= 1,
        "{details}"
    );
    let sent: BTreeSet<String> = keris_docs(&env)
        .await
        .iter()
        .filter(|d| d.get_str("status") == Ok("SENT"))
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    assert_eq!(sent, ready);
    assert_eq!(
        sim.stats().statements_accepted(),
        ready.len() as u64,
        "stored once each"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_keris_request")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT params->>'partition', status FROM batch_job_run WHERE job_id = $1 ORDER BY run_id",
    )
    .bind(SEND)
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(
        statuses[0],
        ("1/4".into(), "FAILED".into()),
        "the killed run, found dead"
    );
    assert_eq!(
        aidt_batch::runtime::chain::completed_run(env.pg(), SEND, date(DAY))
            .await
            .unwrap(),
        rerun.run_id,
        "all 4 partitions COMPLETED: the chain counts the night done"
    );
}

#[tokio::test]
async fn a_partition_is_kept_out_by_an_unpartitioned_run_by_itself_and_by_another_count_but_not_by_another_partition(
) {
    let sim = simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut env = keris_env(&sim, |s| s.keris.max_statements_per_request = 50).await;
    env.configure_job("dc_01_001", "lock_wait_secs", 0);
    let metrics = tempfile::tempdir().unwrap();
    let dir = metrics.path().to_path_buf();
    env.configure(|s| s.metrics.textfile_dir = Some(dir));
    let mut holder = sqlx::PgConnection::connect(&crate::helpers::url_for(&env.pg_name))
        .await
        .unwrap();
    let lock = |sql: &'static str, key: &'static str| sqlx::query(sql).bind(key);

    // Partition 0/4 is running (its locks, as a live process holds them).
    lock(
        "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))",
        "aidt-batch/group/keris-xapi",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    lock(
        "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))",
        "aidt-batch/group/keris-xapi/partitions/4",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    lock(
        "SELECT pg_advisory_lock(hashtextextended($1, 0))",
        "aidt-batch/group/keris-xapi/partition/0/4",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    assert_eq!(
        in_process(&env, SEND, None).await.exit,
        Exit::AlreadyRunning
    );
    assert_eq!(
        in_process(&env, SEND, Partition::new(0, 4)).await.exit,
        Exit::AlreadyRunning
    );
    // A partition of another count would split the students differently.
    for other in [Partition::new(1, 2), Partition::new(0, 8)] {
        assert_eq!(
            in_process(&env, SEND, other).await.exit,
            Exit::AlreadyRunning,
            "{other:?}"
        );
    }
    // Another partition of the same count runs beside 0 of 4.
    assert_eq!(
        in_process(&env, SEND, Partition::new(1, 4)).await.exit,
        Exit::Success
    );
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();

    // An unpartitioned run of the group (LRS-01-001) keeps every partition out.
    lock(
        "SELECT pg_advisory_lock(hashtextextended($1, 0))",
        "aidt-batch/group/keris-xapi",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    assert_eq!(
        in_process(&env, SEND, Partition::new(2, 4)).await.exit,
        Exit::AlreadyRunning
    );

    // Each partition's metrics are a file of its own, labelled.
    let p1 =
        std::fs::read_to_string(metrics.path().join("aidt_batch_dc_01_001_p1of4.prom")).unwrap();
    assert!(p1.contains(r#"partition="1-of-4""#), "{p1}");
    let p2 =
        std::fs::read_to_string(metrics.path().join("aidt_batch_dc_01_001_p2of4.prom")).unwrap();
    assert!(p2.contains("aidt_batch_last_run_exit_code"), "{p2}");
    let whole = std::fs::read_to_string(metrics.path().join("aidt_batch_dc_01_001.prom")).unwrap();
    assert!(!whole.contains("partition="), "{whole}");
}

#[tokio::test]
async fn bad_partition_values_exit_2_and_name_the_option_or_variable() {
    let env = TestEnv::new().await;
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&[SEND, "--partition", "4/4"], &[], "--partition"),
        (&[SEND, "--partition", "x"], &[], "--partition"),
        (&[SEND], &[("JOB_COMPLETION_INDEX", "1")], "AIDT_PARTITIONS"),
        (&[SEND], &[("AIDT_PARTITIONS", "4")], "JOB_COMPLETION_INDEX"),
        (
            &[SEND],
            &[("JOB_COMPLETION_INDEX", "4"), ("AIDT_PARTITIONS", "4")],
            "JOB_COMPLETION_INDEX",
        ),
        (
            &[SEND],
            &[("JOB_COMPLETION_INDEX", "0"), ("AIDT_PARTITIONS", "0")],
            "AIDT_PARTITIONS",
        ),
    ];
    for (args, vars, named) in cases {
        let out = env
            .command(args)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {vars:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(named),
            "{args:?} {vars:?}: {}",
            stderr(&out)
        );
    }
    // Only the jobs whose work splits by student take the option.
    let out = env
        .command(&["LMS-01-001", "--partition", "0/2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--partition"), "{}", stderr(&out));
}

/// The night DC-01-001 would have left, made the same way in any database
/// from the READY statements sorted by id: every 10th failed transiently
/// (`KERIS_UNAVAILABLE`), the one after it was rejected for its content
/// (`XAPI_USER_ERR`, for LRS-01-002), the next holds a code no resend fixes
/// (`XAPI_DUP_ERR`); every 3rd transient row has lost its user id.
struct NightErrors {
    transient: BTreeSet<String>,
    content: BTreeSet<String>,
    unfixable: BTreeSet<String>,
    without_user: BTreeSet<String>,
    /// The partitions (of 4) holding unfixable rows.
    unfixable_partitions: BTreeSet<u32>,
}

async fn seed_errors(env: &TestEnv) -> NightErrors {
    let mut ready: Vec<Document> = keris_docs(env)
        .await
        .into_iter()
        .filter(|d| d.get_str("status") == Ok("READY"))
        .collect();
    ready.sort_by(|a, b| a.get_str("_id").unwrap().cmp(b.get_str("_id").unwrap()));
    let mut night = NightErrors {
        transient: BTreeSet::new(),
        content: BTreeSet::new(),
        unfixable: BTreeSet::new(),
        without_user: BTreeSet::new(),
        unfixable_partitions: BTreeSet::new(),
    };
    for (k, d) in ready.iter().enumerate() {
        let id = d.get_str("_id").unwrap().to_string();
        let (code, set) = match k % 10 {
            0 => ("KERIS_UNAVAILABLE", &mut night.transient),
            1 => ("XAPI_USER_ERR", &mut night.content),
            2 => ("XAPI_DUP_ERR", &mut night.unfixable),
            _ => continue,
        };
        set.insert(id.clone());
        if code == "XAPI_DUP_ERR" {
            let p = expected_partition(d.get_str("user_id").unwrap(), 4);
            night.unfixable_partitions.insert(p);
        }
        let user = if code == "KERIS_UNAVAILABLE" && k % 30 == 0 {
            night.without_user.insert(id.clone());
            None
        } else {
            Some(Uuid::parse_str(d.get_str("user_id").unwrap()).unwrap())
        };
        sqlx::query(
            "INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, transfer_id, stmt_index, statement_id, err_code, err_msg)
             VALUES ('DC-01-001', $1, $2::uuid, $3, 'T-night', $4, $5::uuid, $6, 'seeded')",
        )
        .bind(date(DAY))
        .bind(d.get_str("partner_id").unwrap())
        .bind(user)
        .bind(k as i64)
        .bind(&id)
        .bind(code)
        .execute(env.pg())
        .await
        .unwrap();
        env.app
            .mongo
            .collection::<Document>(KERIS_BATCH_DATA)
            .update_one(
                doc! { "_id": &id },
                doc! { "$set": { "status": "ERROR", "err_code": code } },
            )
            .await
            .unwrap();
    }
    night
}

/// A seeded night up to its error table, in a database of its own.
async fn night_with_errors(sim: &SimulatorHandle) -> (TestEnv, NightErrors) {
    let env = keris_env(sim, |s| s.keris.max_statements_per_request = 50).await;
    seed_day(&env, 40, 2_000).await;
    assert_eq!(in_process(&env, AGGREGATE, None).await.exit, Exit::Success);
    let night = seed_errors(&env).await;
    (env, night)
}

/// Open (PENDING or REGENERATED) rows, by statement id.
async fn open_rows(env: &TestEnv) -> BTreeSet<String> {
    sqlx::query_scalar::<_, Uuid>(
        "SELECT statement_id FROM tb_dc_error_data_info WHERE status IN ('PENDING', 'REGENERATED')",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect()
}

#[tokio::test]
async fn four_partitions_of_the_resend_jobs_end_where_one_run_ends_and_leave_rows_without_a_student_to_it(
) {
    let (sim_whole, sim_parts) = (
        simulator::start(SimulatorConfig::default()).await.unwrap(),
        simulator::start(SimulatorConfig::default()).await.unwrap(),
    );
    let (whole, night) = night_with_errors(&sim_whole).await;
    let (parts, night_again) = night_with_errors(&sim_parts).await;
    assert_eq!(
        night.transient, night_again.transient,
        "the same night twice"
    );
    assert!(night.content.len() > 20 && night.without_user.len() > 3);

    // One unpartitioned night: LRS-01-002, then DC-01-002.
    assert_eq!(
        in_process(&whole, REGENERATE, None).await.exit,
        Exit::Success
    );
    assert_eq!(
        in_process(&whole, RESEND, None).await.exit,
        Exit::CompletedWithErrors,
        "the unfixable rows FAILED"
    );

    // 4 processes of each at once.
    for out in four_processes(&parts, &sim_parts, REGENERATE).await {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let regenerated: BTreeSet<String> = sqlx::query_scalar::<_, Uuid>(
        "SELECT statement_id FROM tb_dc_error_data_info WHERE status = 'REGENERATED'",
    )
    .fetch_all(parts.pg())
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect();
    assert_eq!(regenerated, night.content, "each partition its students");
    for (i, out) in four_processes(&parts, &sim_parts, RESEND)
        .await
        .into_iter()
        .enumerate()
    {
        // A partition holding unfixable rows FAILED them (exit 4); the rows
        // without a user id are nobody's.
        let expected = if night.unfixable_partitions.contains(&(i as u32)) {
            4
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(expected), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("without user_id belong to no partition"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        open_rows(&parts).await,
        night.without_user,
        "only the rows without a student are left"
    );
    let details: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT details FROM batch_job_run WHERE job_id = $1 ORDER BY params->>'partition'",
    )
    .bind(RESEND)
    .fetch_all(parts.pg())
    .await
    .unwrap();
    assert_eq!(details.len(), 4);
    let resent: u64 = details.iter().map(|d| d["resent"].as_u64().unwrap()).sum();
    assert_eq!(
        resent as usize,
        night.transient.len() - night.without_user.len() + night.content.len()
    );
    for d in &details {
        assert_eq!(
            d["skipped_without_user_id"].as_u64(),
            Some(night.without_user.len() as u64),
            "{d}"
        );
    }
    // Transfers of their own: none carries students of two partitions.
    assert_transfers_of_their_own(sim_parts.statements(usize::MAX));

    // An unpartitioned run takes what is left; then both nights agree.
    assert_eq!(in_process(&parts, RESEND, None).await.exit, Exit::Success);
    assert!(open_rows(&parts).await.is_empty());
    assert_eq!(batch_state(&parts).await, batch_state(&whole).await);
    assert_eq!(error_table(&parts).await, error_table(&whole).await);
    let at_keris = accepted(&sim_parts);
    assert_eq!(at_keris, accepted(&sim_whole));
    // And what that is, from the seeded night: every transient and content
    // row resent once, the unfixable ones FAILED.
    let expected: BTreeSet<Uuid> = night
        .transient
        .union(&night.content)
        .map(|id| Uuid::parse_str(id).unwrap())
        .collect();
    assert_eq!(at_keris.keys().copied().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        sim_parts.stats().statements_accepted(),
        expected.len() as u64
    );
    let statuses: BTreeMap<String, String> = sqlx::query_as::<_, (Uuid, String)>(
        "SELECT statement_id, status FROM tb_dc_error_data_info",
    )
    .fetch_all(parts.pg())
    .await
    .unwrap()
    .into_iter()
    .map(|(id, status)| (id.to_string(), status))
    .collect();
    for id in &night.unfixable {
        assert_eq!(statuses[id], "FAILED");
    }
    for id in night.transient.union(&night.content) {
        assert_eq!(statuses[id], "RESENT");
    }
}
