//! LMS-01-007 and DC-01-003 (deletion of the personal data of students
//! without consent) against real PostgreSQL and MongoDB.
//!
//! Business date 2026-06-15: the reference time is 2026-06-16 00:00 KST, so
//! with 30 days' grace the cutoff is 2026-05-17 00:00 KST. "Past" anchors are
//! 31 days before the reference time, "short" ones 29 days.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use aidt_batch::jobs::shared::privacy::{self, ConsentRule};
use futures::TryStreamExt as _;
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

const BUSINESS_DATE: &str = "2026-06-15";
const PAST: &str = "2026-05-16 00:00:00+09";
const SHORT: &str = "2026-05-18 00:00:00+09";
const EXACT: &str = "2026-05-17 00:00:00+09";
const LONG_AGO: &str = "2025-03-01 00:00:00+09";
const SALT: &str = "local-privacy-audit-salt";

/// The student's tables the LMS job empties.
const LMS_TABLES: [&str; 11] = aidt_batch::jobs::lms::delete_unconsented_students::TABLES;
/// Every table the seed writes, with whether it has a `user_id` column.
const ALL_TABLES: [(&str, bool); 16] = [
    ("tb_lms_lrn_result", true),
    ("tb_lms_lrn_session", true),
    ("tb_lms_lrn_progress", true),
    ("tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys", true),
    ("tb_lms_keris_token", true),
    ("tb_lms_assignment_submit", true),
    ("tb_lms_ntcn_msg", true),
    ("tb_lms_stdnt_cmpt_idx_daily", true),
    ("tb_lms_stdnt_lrn_stats_daily", true),
    ("tb_lms_access_log", true),
    ("tb_lms_login_hist", true),
    ("tb_dc_error_data_info", true),
    ("tb_lms_user", true),
    ("tb_lms_user_consent", true),
    ("tb_lms_lecture_member", true),
    ("tb_lms_school", false),
];
const COLLECTIONS: [&str; 2] = ["statements", "keris_batch_data"];

/// One seeded user: who, and whether the consent rule selects them.
struct Person {
    id: Uuid,
    user_type: &'static str,
    reg_dt: &'static str,
    /// (agree_yn, agree_dt, withdraw_dt) of the PRVC_PROVIDE row, if any.
    consent: Option<(&'static str, Option<&'static str>, Option<&'static str>)>,
    selected: bool,
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x5d0c_7d6c_0000_4000_8000_0000_0000_0000 + n)
}

fn people() -> Vec<Person> {
    let p = |n, user_type, reg_dt, consent, selected| Person {
        id: id(n),
        user_type,
        reg_dt,
        consent,
        selected,
    };
    vec![
        // No PRVC_PROVIDE row: grace from reg_dt.
        p(1, "S", PAST, None, true),
        p(2, "S", SHORT, None, false),
        p(3, "S", EXACT, None, false),
        // Withdrawn: grace from withdraw_dt, however old reg_dt is.
        p(
            4,
            "S",
            LONG_AGO,
            Some(("N", Some(LONG_AGO), Some(PAST))),
            true,
        ),
        p(
            5,
            "S",
            LONG_AGO,
            Some(("N", Some(LONG_AGO), Some(SHORT))),
            false,
        ),
        // Declined (N, never agreed, no withdraw_dt): grace from reg_dt.
        p(6, "S", PAST, Some(("N", None, None)), true),
        p(7, "S", SHORT, Some(("N", None, None)), false),
        // N without withdraw_dt but a later agree_dt: grace from agree_dt.
        p(8, "S", LONG_AGO, Some(("N", Some(SHORT), None)), false),
        p(9, "S", LONG_AGO, Some(("N", Some(PAST), None)), true),
        // Consent given; withdrawn long ago and given again.
        p(10, "S", LONG_AGO, Some(("Y", Some(LONG_AGO), None)), false),
        p(
            11,
            "S",
            LONG_AGO,
            Some(("Y", Some(SHORT), Some(LONG_AGO))),
            false,
        ),
        // Teachers and parents, never.
        p(12, "T", LONG_AGO, None, false),
        p(
            13,
            "P",
            LONG_AGO,
            Some(("N", Some(LONG_AGO), Some(LONG_AGO))),
            false,
        ),
        p(14, "T", LONG_AGO, Some(("N", None, None)), false),
        // Only another consent type: no PRVC_PROVIDE row.
        p(15, "S", LONG_AGO, None, true),
    ]
}

fn selected() -> Vec<Uuid> {
    people()
        .into_iter()
        .filter(|p| p.selected)
        .map(|p| p.id)
        .collect()
}

fn q(s: Option<&str>) -> String {
    s.map_or("NULL".into(), |v| format!("'{v}'"))
}

/// Every user with rows in every table, documents in both collections and
/// error rows; plus rows without a user id. Deterministic (fixed ids and
/// times), so two databases seeded alike compare equal.
async fn seed(env: &TestEnv) {
    let mut sql = String::from(
        "INSERT INTO tb_lms_school VALUES ('SCH1', 'Test school', 'M');
         INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) VALUES (NULL, '/anon', '10.0.0.9', '2026-06-01 00:00:00+09');
         INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, statement_id, err_code, created_at, upd_dt)
           VALUES ('DC-01-001', '2026-06-01', '00000000-0000-4000-8000-0000000000aa', NULL, '00000000-0000-4000-8000-0000000000bb', 'E1', '2026-06-01 00:00:00+09', '2026-06-01 00:00:00+09');\n",
    );
    for (i, p) in people().iter().enumerate() {
        let u = p.id;
        let t = p.user_type;
        sql += &format!(
            "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, grade, class_no, user_nm, email, reg_dt)
               VALUES ('{u}', '00000000-0000-4000-8000-0000000000aa', '{t}', 'SCH1', 2, 3, 'Name {i}', 'user{i}@example.com', '{reg}');
             INSERT INTO tb_lms_user_consent VALUES ('{u}', 'MARKETING', 'Y', '{LONG_AGO}', NULL);
             INSERT INTO tb_lms_lecture_member VALUES ('LEC1', '{u}');
             INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, duration_sec, solved_at)
               VALUES ('{u}', 'LEC1', 'I1', 'C1', 'SS1', 'Y', 90, 30, '2026-06-01 10:00:00+09'),
                      ('{u}', 'LEC1', 'I2', 'C1', 'SS2', 'N', 10, 40, '2026-06-02 10:00:00+09');
             INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at) VALUES ('{u}', 'LEC1', '2026-06-01 09:00:00+09');
             INSERT INTO tb_lms_lrn_progress (user_id, std_sys_id, progress_rate, upd_dt) VALUES ('{u}', 'SS1', 50, '2026-06-01 00:00:00+09');
             INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys (user_id, std_sys_id, lecture_code, score, upd_dt)
               VALUES ('{u}', 'SS1', 'LEC1', 80, '2026-06-01 00:00:00+09');
             INSERT INTO tb_lms_keris_token VALUES ('{u}', 'token{i}', 'access{i}', '2026-06-01 00:00:00+09');
             INSERT INTO tb_lms_assignment_submit VALUES (1, '{u}', '2026-06-01 00:00:00+09'), (2, '{u}', NULL);
             INSERT INTO tb_lms_ntcn_msg (user_id, msg_type, ref_key, title, body, created_at)
               VALUES ('{u}', 'PRAISE', 'k{i}', 'Well done', 'Name {i}', '2026-06-01 00:00:00+09');
             INSERT INTO tb_lms_stdnt_cmpt_idx_daily (base_dt, user_id, solved_cnt) VALUES ('2026-06-01', '{u}', 2), ('2026-06-02', '{u}', 1);
             INSERT INTO tb_lms_stdnt_lrn_stats_daily (base_dt, user_id, lecture_code, item_cnt) VALUES ('2026-06-01', '{u}', 'LEC1', 2);
             INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at)
               VALUES ('{u}', '/a', '10.0.0.1', '2026-06-01 00:00:00+09'), ('{u}', '/b', '10.0.0.1', '2026-06-02 00:00:00+09');
             INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, ip) VALUES ('{u}', '{t}', '2026-06-01 00:00:00+09', '10.0.0.1');
             INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, statement_id, err_code, created_at, upd_dt)
               VALUES ('DC-01-001', '2026-06-01', '00000000-0000-4000-8000-0000000000aa', '{u}', '{stmt}', 'E1', '2026-06-01 00:00:00+09', '2026-06-01 00:00:00+09');\n",
            reg = p.reg_dt,
            stmt = Uuid::from_u128(0xe000 + i as u128),
        );
        if let Some((agree, agree_dt, withdraw_dt)) = p.consent {
            sql += &format!(
                "INSERT INTO tb_lms_user_consent VALUES ('{u}', 'PRVC_PROVIDE', '{agree}', {}, {});\n",
                q(agree_dt),
                q(withdraw_dt)
            );
        }
    }
    sqlx::raw_sql(&sql).execute(env.pg()).await.unwrap();

    let db = &env.app.mongo;
    let mut statements =
        vec![doc! { "_id": "s-anon", "user_id": mongodb::bson::Bson::Null, "partner_id": "p" }];
    let mut batch_data = vec![
        doc! { "_id": "b-other", "user_id": Uuid::from_u128(99).to_string(), "base_dt": "2026-06-01" },
    ];
    for (i, p) in people().iter().enumerate() {
        for k in 0..2 {
            statements.push(doc! { "_id": format!("s-{i}-{k}"), "user_id": p.id.to_string(), "partner_id": "p", "statement": { "verb": "answered" } });
            batch_data.push(doc! { "_id": format!("b-{i}-{k}"), "user_id": p.id.to_string(), "base_dt": "2026-06-01", "status": "SENT" });
        }
    }
    db.collection::<Document>("statements")
        .insert_many(statements)
        .await
        .unwrap();
    db.collection::<Document>("keris_batch_data")
        .insert_many(batch_data)
        .await
        .unwrap();
}

/// (row count, md5 of the rows) of `table`, leaving out the rows of `except`.
async fn fingerprint(
    pg: &PgPool,
    table: &str,
    has_user: bool,
    except: &[Uuid],
) -> (i64, Option<String>) {
    let filter = if has_user {
        "t.user_id IS NULL OR t.user_id <> ALL($1)"
    } else {
        "$1::uuid[] IS NOT NULL"
    };
    sqlx::query_as(&format!(
        "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t WHERE {filter}"
    ))
    .bind(except)
    .fetch_one(pg)
    .await
    .unwrap()
}

/// Fingerprints of every table, leaving out the rows of `except`.
async fn pg_state(pg: &PgPool, except: &[Uuid]) -> BTreeMap<&'static str, (i64, Option<String>)> {
    let mut state = BTreeMap::new();
    for (table, has_user) in ALL_TABLES {
        state.insert(table, fingerprint(pg, table, has_user, except).await);
    }
    // The selected students' user rows, minus the columns the job clears.
    let kept_cols: (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), md5(string_agg(x::text, ',' ORDER BY x::text))
           FROM (SELECT user_id, partner_id, user_type, school_id, grade, class_no, reg_dt FROM tb_lms_user) x",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    state.insert("tb_lms_user (uncleared columns)", kept_cols);
    state
}

/// Every document of each collection but those of `except`, in `_id` order.
async fn mongo_state(env: &TestEnv, except: &[Uuid]) -> BTreeMap<&'static str, Vec<Document>> {
    let except: Vec<String> = except.iter().map(Uuid::to_string).collect();
    let mut state = BTreeMap::new();
    for name in COLLECTIONS {
        let docs: Vec<Document> = env
            .app
            .mongo
            .collection::<Document>(name)
            .find(doc! { "user_id": { "$nin": except.clone() } })
            .sort(doc! { "_id": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        state.insert(name, docs);
    }
    state
}

async fn rows_of(pg: &PgPool, table: &str, users: &[Uuid]) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE user_id = ANY($1)"
    ))
    .bind(users)
    .fetch_one(pg)
    .await
    .unwrap()
}

async fn docs_of(env: &TestEnv, collection: &str, users: &[Uuid]) -> u64 {
    let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
    env.app
        .mongo
        .collection::<Document>(collection)
        .count_documents(doc! { "user_id": { "$in": ids } })
        .await
        .unwrap()
}

/// (counts, student_hashes) of a run's audit row.
async fn audit(pg: &PgPool, run_id: i64) -> (serde_json::Value, Vec<String>) {
    sqlx::query_as("SELECT counts, student_hashes FROM batch_privacy_audit WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pg)
        .await
        .unwrap()
}

/// Sorted hashes `job` recorded as complete in `batch_privacy_completed`.
async fn completed(pg: &PgPool, job: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT student_hash FROM batch_privacy_completed WHERE job_id = $1 ORDER BY student_hash",
    )
    .bind(job)
    .fetch_all(pg)
    .await
    .unwrap()
}

/// The details of `job`'s latest run.
async fn last_details(pg: &PgPool, job: &str) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT details FROM batch_job_run WHERE job_id = $1 ORDER BY run_id DESC LIMIT 1",
    )
    .bind(job)
    .fetch_one(pg)
    .await
    .unwrap()
}

fn expected_hashes(users: &[Uuid]) -> Vec<String> {
    let mut h: Vec<String> = users
        .iter()
        .map(|u| privacy::student_hash(SALT, *u))
        .collect();
    h.sort();
    h
}

/// Rows per table each selected student had in the seed.
fn lms_counts(students: u64) -> serde_json::Value {
    let per_student = [
        ("tb_lms_lrn_result", 2),
        ("tb_lms_lrn_session", 1),
        ("tb_lms_lrn_progress", 1),
        ("tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys", 1),
        ("tb_lms_keris_token", 1),
        ("tb_lms_assignment_submit", 2),
        ("tb_lms_ntcn_msg", 1),
        ("tb_lms_stdnt_cmpt_idx_daily", 2),
        ("tb_lms_stdnt_lrn_stats_daily", 1),
        ("tb_lms_access_log", 2),
        ("tb_lms_login_hist", 1),
        ("tb_lms_user", 1),
    ];
    per_student
        .iter()
        .map(|(t, n)| (t.to_string(), serde_json::json!(n * students)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn dc_counts(students: u64) -> serde_json::Value {
    serde_json::json!({ "statements": 2 * students, "keris_batch_data": 2 * students, "tb_dc_error_data_info": students })
}

#[tokio::test]
async fn privacy_set_holds_exactly_the_students_without_consent_past_their_grace_period() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let rule = ConsentRule {
        reference_time: aidt_batch::time::start_of_day_seoul(
            date(BUSINESS_DATE).succ_opt().unwrap(),
        ),
        grace_days: 30,
    };
    let mut conn = env.pg().acquire().await.unwrap();
    let all = privacy::next_students(&mut conn, &rule, None, 100)
        .await
        .unwrap();
    let mut expected = selected();
    expected.sort();
    assert_eq!(all, expected);

    // Pages of two add up to the same set, in order.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = privacy::next_students(&mut conn, &rule, after, 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, expected);

    // The grace period is configuration: with 500 days nobody is in (the
    // oldest anchor is ~470 days old); with 28 days the SHORT ones are.
    let longer = ConsentRule {
        grace_days: 500,
        ..rule
    };
    assert!(privacy::next_students(&mut conn, &longer, None, 100)
        .await
        .unwrap()
        .is_empty());
    let shorter = ConsentRule {
        grace_days: 28,
        ..rule
    };
    let with_short = privacy::next_students(&mut conn, &shorter, None, 100)
        .await
        .unwrap();
    for n in [2, 3, 5, 7, 8] {
        assert!(
            with_short.contains(&id(n)),
            "student {n} is in with 28 days' grace"
        );
    }
    for n in [10, 11, 12, 13, 14] {
        assert!(!with_short.contains(&id(n)), "user {n} never is");
    }
}

#[tokio::test]
async fn lms_01_007_clears_exactly_the_unconsented_students_and_touches_nothing_else() {
    let mut env = TestEnv::new().await;
    env.configure(|s| s.jobs.privacy.batch_size = 2);
    seed(&env).await;
    let gone = selected();
    let before = pg_state(env.pg(), &gone).await;
    for table in LMS_TABLES {
        assert!(
            rows_of(env.pg(), table, &gone).await >= gone.len() as i64,
            "seeded {table}"
        );
    }

    let run = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;

    for table in LMS_TABLES {
        assert_eq!(
            rows_of(env.pg(), table, &gone).await,
            0,
            "{table}: the students' rows are gone"
        );
    }
    let users: Vec<(Option<String>, Option<String>, String)> =
        sqlx::query_as("SELECT user_nm, email, del_yn FROM tb_lms_user WHERE user_id = ANY($1)")
            .bind(&gone)
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(users.len(), gone.len());
    assert!(
        users.iter().all(|u| *u == (None, None, "Y".to_string())),
        "{users:?}"
    );
    // Lecture membership and DC data stay for LMS-01-007.
    assert_eq!(
        rows_of(env.pg(), "tb_lms_lecture_member", &gone).await,
        gone.len() as i64
    );
    assert_eq!(
        rows_of(env.pg(), "tb_dc_error_data_info", &gone).await,
        gone.len() as i64
    );
    // Every other row, unchanged.
    assert_eq!(pg_state(env.pg(), &gone).await, before);

    let d = details(env.pg(), run).await;
    assert_eq!(d["changed"], lms_counts(gone.len() as u64));
    assert_eq!(d["students_changed"], gone.len());
    let (counts, hashes) = audit(env.pg(), run).await;
    assert_eq!(counts, lms_counts(gone.len() as u64));
    assert_eq!(hashes, expected_hashes(&gone));
}

#[tokio::test]
async fn dc_01_003_deletes_exactly_their_documents_and_error_rows() {
    let mut env = TestEnv::new().await;
    env.configure(|s| s.jobs.privacy.batch_size = 2);
    seed(&env).await;
    let gone = selected();
    let before = pg_state(env.pg(), &gone).await;
    let mongo_before = mongo_state(&env, &gone).await;
    let lms_before = pg_state(env.pg(), &[]).await;

    let run = env
        .run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;

    for name in COLLECTIONS {
        assert_eq!(
            docs_of(&env, name, &gone).await,
            0,
            "{name}: the students' documents are gone"
        );
    }
    assert_eq!(rows_of(env.pg(), "tb_dc_error_data_info", &gone).await, 0);
    assert_eq!(
        mongo_state(&env, &gone).await,
        mongo_before,
        "other documents unchanged"
    );
    assert_eq!(
        pg_state(env.pg(), &gone).await,
        before,
        "other rows unchanged"
    );
    // The LMS side of the students is LMS-01-007's: untouched here.
    let after_all = pg_state(env.pg(), &[]).await;
    for (table, state) in &lms_before {
        if *table != "tb_dc_error_data_info" {
            assert_eq!(after_all[table], *state, "{table}");
        }
    }

    let d = details(env.pg(), run).await;
    assert_eq!(d["deleted"], dc_counts(gone.len() as u64));
    let (counts, hashes) = audit(env.pg(), run).await;
    assert_eq!(counts, dc_counts(gone.len() as u64));
    assert_eq!(hashes, expected_hashes(&gone));
}

#[tokio::test]
async fn privacy_dry_runs_change_nothing_and_report_counts() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let gone = selected();
    let pg_before = pg_state(env.pg(), &[]).await;
    let mongo_before = mongo_state(&env, &[]).await;

    let lms = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), true)
        .await;
    let dc = env
        .run_ok("DC-01-003", Some(date(BUSINESS_DATE)), true)
        .await;

    assert_eq!(pg_state(env.pg(), &[]).await, pg_before);
    assert_eq!(mongo_state(&env, &[]).await, mongo_before);
    assert_eq!(
        details(env.pg(), lms).await["would_change"],
        lms_counts(gone.len() as u64)
    );
    assert_eq!(
        details(env.pg(), dc).await["would_delete"],
        dc_counts(gone.len() as u64)
    );
    let audits: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_privacy_audit")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(audits, 0, "a dry run writes no audit");
}

#[tokio::test]
async fn privacy_rerun_is_a_no_op() {
    let env = TestEnv::new().await;
    seed(&env).await;
    env.run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;
    env.run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;
    let pg_after = pg_state(env.pg(), &[]).await;
    let mongo_after = mongo_state(&env, &[]).await;

    let dc = env
        .run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;
    let lms = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;

    assert_eq!(pg_state(env.pg(), &[]).await, pg_after);
    assert_eq!(mongo_state(&env, &[]).await, mongo_after);
    for run in [dc, lms] {
        let written: i64 =
            sqlx::query_scalar("SELECT write_cnt FROM batch_job_run WHERE run_id = $1")
                .bind(run)
                .fetch_one(env.pg())
                .await
                .unwrap();
        assert_eq!(written, 0);
        let (counts, hashes) = audit(env.pg(), run).await;
        assert!(
            counts.as_object().unwrap().values().all(|n| n == 0),
            "{counts}"
        );
        assert!(hashes.is_empty(), "nobody changed, nobody listed");
    }
}

#[tokio::test]
async fn privacy_audit_and_logs_hold_hashes_never_raw_ids_names_or_emails() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let gone = selected();

    let mut stderr_all = String::new();
    for job in ["dc-01-003", "lms-01-007"] {
        let out = env.run_cli(&[job, "--date", BUSINESS_DATE]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stderr_all += &stderr(&out);
        stderr_all += &stdout(&out);
    }

    let rows: Vec<(String, Vec<String>, String)> = sqlx::query_as(
        "SELECT job_id, student_hashes, a::text FROM batch_privacy_audit a ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let runs: Vec<String> = sqlx::query_scalar("SELECT details::text FROM batch_job_run")
        .fetch_all(env.pg())
        .await
        .unwrap();
    let checkpoints: Vec<String> = sqlx::query_scalar("SELECT data::text FROM batch_checkpoint")
        .fetch_all(env.pg())
        .await
        .unwrap();
    let completions: Vec<String> =
        sqlx::query_scalar("SELECT c::text FROM batch_privacy_completed c")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(completions.len(), 2 * gone.len());
    for (job, hashes, _) in &rows {
        assert_eq!(*hashes, expected_hashes(&gone), "{job}");
    }
    let texts: Vec<&str> = rows
        .iter()
        .map(|r| r.2.as_str())
        .chain(runs.iter().map(String::as_str))
        .chain(checkpoints.iter().map(String::as_str))
        .chain(completions.iter().map(String::as_str))
        .chain([stderr_all.as_str()])
        .collect();
    for (i, p) in people().iter().enumerate() {
        for text in &texts {
            let lower = text.to_ascii_lowercase();
            assert!(
                !lower.contains(&p.id.to_string()),
                "raw id of user {i} leaked: {text}"
            );
            assert!(
                !lower.contains(&p.id.simple().to_string()),
                "raw id of user {i} leaked: {text}"
            );
            assert!(
                !text.contains(&format!("Name {i}")) && !text.contains(&format!("user{i}@")),
                "name/e-mail leaked: {text}"
            );
        }
    }
}

/// The end state of every table and collection (for comparing databases).
async fn whole_state(
    env: &TestEnv,
) -> (
    BTreeMap<&'static str, (i64, Option<String>)>,
    BTreeMap<&'static str, Vec<Document>>,
) {
    (pg_state(env.pg(), &[]).await, mongo_state(env, &[]).await)
}

#[tokio::test]
async fn privacy_kill_mid_deletion_then_rerun_ends_like_a_clean_run() {
    // The reference: a clean run of both jobs on the same seed.
    let clean = TestEnv::new().await;
    seed(&clean).await;
    clean
        .run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;
    clean
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;
    let expected = whole_state(&clean).await;
    drop(clean);

    let env = TestEnv::new().await;
    seed(&env).await;
    let gone = selected();
    for job in ["dc-01-003", "lms-01-007"] {
        let mut child = env
            .command(&[job, "--date", BUSINESS_DATE])
            .env("AIDT__JOBS__PRIVACY__BATCH_SIZE", "1")
            .env("AIDT__JOBS__PRIVACY__PAUSE_MS", "2000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        env.wait_until(
            &format!("SELECT EXISTS (SELECT 1 FROM batch_job_run WHERE job_id = '{}' AND status = 'STARTED' AND write_cnt > 0)", job.to_uppercase()),
            Duration::from_secs(30),
        )
        .await;
        signal(child.id(), "KILL");
        child.wait().unwrap();

        let job_id = job.to_uppercase();
        let recorded = completed(env.pg(), &job_id).await;
        if job == "lms-01-007" {
            // Killed between batches: each student is done entirely or not at
            // all, and recorded complete exactly when done.
            let mut done = 0;
            for user in &gone {
                let cleared: bool =
                    sqlx::query_scalar("SELECT del_yn = 'Y' FROM tb_lms_user WHERE user_id = $1")
                        .bind(user)
                        .fetch_one(env.pg())
                        .await
                        .unwrap();
                let left: i64 = {
                    let mut n = 0;
                    for table in LMS_TABLES {
                        n += rows_of(env.pg(), table, &[*user]).await;
                    }
                    n
                };
                assert!(cleared == (left == 0), "a batch is all or nothing");
                let is_recorded = recorded.contains(&privacy::student_hash(SALT, *user));
                assert_eq!(is_recorded, cleared, "recorded complete exactly when done");
                done += cleared as usize;
            }
            assert!(
                done >= 1 && done < gone.len(),
                "killed mid-way: {done} of {} done",
                gone.len()
            );
        } else {
            let left = docs_of(&env, "statements", &gone).await;
            assert!(
                left > 0 && left < 2 * gone.len() as u64,
                "killed mid-way: {left} left"
            );
            // A recorded student has nothing left anywhere DC-01-003 deletes.
            for user in &gone {
                if recorded.contains(&privacy::student_hash(SALT, *user)) {
                    for name in COLLECTIONS {
                        assert_eq!(docs_of(&env, name, &[*user]).await, 0, "{name}");
                    }
                    assert_eq!(
                        rows_of(env.pg(), "tb_dc_error_data_info", &[*user]).await,
                        0
                    );
                }
            }
        }
        assert!(
            recorded.len() < gone.len(),
            "{job}: the unfinished students are not recorded"
        );

        let out = env.run_cli(&[job, "--date", BUSINESS_DATE]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        // The rerun probed exactly the students the killed run had not recorded.
        let d = last_details(env.pg(), &job_id).await;
        assert_eq!(d["students_already_complete"], recorded.len(), "{job}");
        assert_eq!(d["students_in_set"], gone.len() - recorded.len(), "{job}");
        assert_eq!(
            d["students_recorded_complete"],
            gone.len() - recorded.len(),
            "{job}"
        );
        assert_eq!(
            completed(env.pg(), &job_id).await,
            expected_hashes(&gone),
            "{job}"
        );
    }

    assert_eq!(whole_state(&env).await, expected);
    // The killed runs' audits plus the reruns' cover every student.
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT h FROM batch_privacy_audit, unnest(student_hashes) h WHERE job_id = 'LMS-01-007' ORDER BY h",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(hashes, expected_hashes(&gone));
}

#[tokio::test]
async fn privacy_jobs_refuse_to_run_without_an_audit_salt_and_change_nothing() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let pg_before = pg_state(env.pg(), &[]).await;
    let mongo_before = mongo_state(&env, &[]).await;

    for job in ["dc-01-003", "lms-01-007"] {
        let out = env
            .command(&[job, "--date", BUSINESS_DATE])
            .env("AIDT__JOBS__PRIVACY__AUDIT_SALT", "")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("jobs.privacy.audit_salt"),
            "{}",
            stderr(&out)
        );
    }

    assert_eq!(pg_state(env.pg(), &[]).await, pg_before);
    assert_eq!(mongo_state(&env, &[]).await, mongo_before);
}

#[tokio::test]
async fn privacy_completed_students_are_recorded_by_hash_and_not_probed_again() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let gone = selected();
    let n = gone.len();
    for job in ["DC-01-003", "LMS-01-007"] {
        let first = env.run_ok(job, Some(date(BUSINESS_DATE)), false).await;
        let d = details(env.pg(), first).await;
        assert_eq!(d["students_in_set"], n, "{job}");
        assert_eq!(d["students_already_complete"], 0, "{job}");
        assert_eq!(d["students_recorded_complete"], n, "{job}");
        // The audit's salted hash, computed here independently of the job.
        assert_eq!(
            completed(env.pg(), job).await,
            expected_hashes(&gone),
            "{job}"
        );
    }

    // The LMS writes again for a recorded student: a completed student is
    // not probed (nothing is read per student); the sweep deletes the row.
    sqlx::query("INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) VALUES ($1, '/late', '10.0.0.1', now())")
        .bind(id(1))
        .execute(env.pg())
        .await
        .unwrap();
    for job in ["DC-01-003", "LMS-01-007"] {
        let again = env.run_ok(job, Some(date(BUSINESS_DATE)), false).await;
        let d = details(env.pg(), again).await;
        assert_eq!(d["students_in_set"], 0, "{job}: nobody probed");
        assert_eq!(d["students_already_complete"], n, "{job}");
        let read: i64 = sqlx::query_scalar("SELECT read_cnt FROM batch_job_run WHERE run_id = $1")
            .bind(again)
            .fetch_one(env.pg())
            .await
            .unwrap();
        assert_eq!(read, 0, "{job}");
    }
    assert_eq!(rows_of(env.pg(), "tb_lms_access_log", &[id(1)]).await, 0);

    // Student 4 consents again and withdraws again (a new withdraw_dt, past
    // its grace period): a new grace anchor, so in the set again.
    sqlx::query(
        "UPDATE tb_lms_user_consent SET withdraw_dt = '2026-05-10 00:00:00+09'
          WHERE user_id = $1 AND consent_type = 'PRVC_PROVIDE'",
    )
    .bind(id(4))
    .execute(env.pg())
    .await
    .unwrap();
    sqlx::query("INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) VALUES ($1, '/again', '10.0.0.1', now())")
        .bind(id(4))
        .execute(env.pg())
        .await
        .unwrap();
    let rerun = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;
    let d = details(env.pg(), rerun).await;
    assert_eq!(d["students_in_set"], 1);
    assert_eq!(d["students_already_complete"], n - 1);
    assert_eq!(d["students_recorded_complete"], 1);
    assert_eq!(rows_of(env.pg(), "tb_lms_access_log", &[id(4)]).await, 0);
    let anchor: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT grace_anchor FROM batch_privacy_completed WHERE job_id = 'LMS-01-007' AND student_hash = $1",
    )
    .bind(privacy::student_hash(SALT, id(4)))
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(anchor.to_rfc3339(), "2026-05-09T15:00:00+00:00");
}

#[tokio::test]
async fn privacy_dry_run_leaves_out_completed_students_and_records_nothing() {
    let env = TestEnv::new().await;
    seed(&env).await;
    let gone = selected();
    let dry = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), true)
        .await;
    assert_eq!(details(env.pg(), dry).await["students_in_set"], gone.len());
    assert!(completed(env.pg(), "LMS-01-007").await.is_empty());

    env.run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;
    let dry = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), true)
        .await;
    let d = details(env.pg(), dry).await;
    assert_eq!(d["students_in_set"], 0);
    assert_eq!(d["students_already_complete"], gone.len());
}

/// `sql` with `$1` the student, once per (table, rows) in `rows`.
async fn write_rows(pg: &PgPool, student: Uuid, rows: &[(&str, &str, usize)]) {
    for (_, sql, n) in rows {
        for k in 0..*n {
            sqlx::query(&sql.replace("{k}", &k.to_string()))
                .bind(student)
                .execute(pg)
                .await
                .unwrap();
        }
    }
}

/// Rows an LMS writes for a student after the deletion: (table, insert, how many).
const LATE_LMS_ROWS: [(&str, &str, usize); 5] = [
    ("tb_lms_access_log", "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) VALUES ($1, '/late{k}', '10.0.0.1', '2026-06-01 00:00:00+09')", 2),
    ("tb_lms_login_hist", "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, ip) VALUES ($1, 'S', now(), '10.0.0.1')", 1),
    ("tb_lms_lrn_result", "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, duration_sec, solved_at) VALUES ($1, 'LEC1', 'I{k}', 'C1', 'SS1', 'Y', 90, 30, '2026-05-01 10:00:00+09')", 3),
    ("tb_lms_ntcn_msg", "INSERT INTO tb_lms_ntcn_msg (user_id, msg_type, ref_key, title, body, created_at) VALUES ($1, 'ASGN_DUE', 'late{k}', 'Due', 'Due', now())", 1),
    ("tb_lms_keris_token", "INSERT INTO tb_lms_keris_token VALUES ($1, 'late-token', 'late-access', now())", 1),
];

/// `agree_yn = 'Y'` again for `student`.
async fn consent_again(pg: &PgPool, student: Uuid) {
    sqlx::query(
        "INSERT INTO tb_lms_user_consent VALUES ($1, 'PRVC_PROVIDE', 'Y', now(), NULL)
         ON CONFLICT (user_id, consent_type) DO UPDATE SET agree_yn = 'Y', agree_dt = now()",
    )
    .bind(student)
    .execute(pg)
    .await
    .unwrap();
}

/// `{table: n}` for every table of the job, 0 where `nonzero` says nothing.
fn all_tables(tables: &[&str], nonzero: &[(&str, u64)]) -> serde_json::Value {
    tables
        .iter()
        .map(|t| {
            let n = nonzero.iter().find(|(k, _)| k == t).map_or(0, |(_, n)| *n);
            (t.to_string(), serde_json::json!(n))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// (counts, swept_counts) of a run's audit row.
async fn audit_swept(pg: &PgPool, run_id: i64) -> serde_json::Value {
    sqlx::query_scalar("SELECT swept_counts FROM batch_privacy_audit WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn lms_01_007_deletes_rows_written_after_a_deletion_but_not_for_a_student_who_consented_again(
) {
    let mut env = TestEnv::new().await;
    env.configure(|s| s.jobs.privacy.batch_size = 2);
    seed(&env).await;
    env.run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;
    // After the deletion: an offline sync for student 1 (and its user row
    // written again, name and all), a stale session for student 6; student
    // 9 consents again and learns; a teacher goes on as before.
    write_rows(env.pg(), id(1), &LATE_LMS_ROWS).await;
    sqlx::query("UPDATE tb_lms_user SET user_nm = 'Name again', del_yn = 'N' WHERE user_id = $1")
        .bind(id(1))
        .execute(env.pg())
        .await
        .unwrap();
    write_rows(env.pg(), id(6), &LATE_LMS_ROWS[..1]).await;
    consent_again(env.pg(), id(9)).await;
    write_rows(env.pg(), id(9), &LATE_LMS_ROWS).await;
    write_rows(env.pg(), id(12), &LATE_LMS_ROWS[..1]).await;
    let kept_before = pg_state(env.pg(), &[id(1), id(6)]).await;

    let run = env
        .run_ok("LMS-01-007", Some(date(BUSINESS_DATE)), false)
        .await;

    for (table, _, _) in LATE_LMS_ROWS {
        assert_eq!(
            rows_of(env.pg(), table, &[id(1), id(6)]).await,
            0,
            "{table}"
        );
    }
    let user: (Option<String>, String) =
        sqlx::query_as("SELECT user_nm, del_yn FROM tb_lms_user WHERE user_id = $1")
            .bind(id(1))
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(user, (None, "Y".to_string()));
    // Student 9 (consented again) and the teacher keep what was written.
    assert_eq!(pg_state(env.pg(), &[id(1), id(6)]).await, kept_before);
    assert_eq!(rows_of(env.pg(), "tb_lms_lrn_result", &[id(9)]).await, 3);

    let mut tables = LMS_TABLES.to_vec();
    tables.push("tb_lms_user");
    let swept = all_tables(
        &tables,
        &[
            ("tb_lms_access_log", 2 + 2),
            ("tb_lms_login_hist", 1),
            ("tb_lms_lrn_result", 3),
            ("tb_lms_ntcn_msg", 1),
            ("tb_lms_keris_token", 1),
            ("tb_lms_user", 1),
        ],
    );
    let d = details(env.pg(), run).await;
    assert_eq!(d["students_in_set"], 0, "nobody probed per student");
    assert_eq!(d["students_swept"], selected().len() - 1, "all but 9");
    assert_eq!(d["swept"], swept);
    assert_eq!(d["changed"], swept);
    assert_eq!(d["students_swept_changed"], 2);
    let (counts, hashes) = audit(env.pg(), run).await;
    assert_eq!(counts, swept);
    assert_eq!(audit_swept(env.pg(), run).await, swept);
    assert_eq!(hashes, expected_hashes(&[id(1), id(6)]));
}

/// A statement or KERIS document of `student` stored after the deletion.
fn late_doc(key: &str, user_id: Bson) -> Document {
    doc! { "_id": key, "user_id": user_id, "partner_id": "p", "base_dt": "2026-06-15", "status": "READY" }
}

/// `student`'s id as a BSON UUID (binary subtype 4).
fn bson_uuid(student: Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: student.as_bytes().to_vec(),
    })
}

async fn insert_docs(env: &TestEnv, collection: &str, docs: Vec<Document>) {
    env.app
        .mongo
        .collection::<Document>(collection)
        .insert_many(docs)
        .await
        .unwrap();
}

/// How many of `collection`'s documents have an `_id` starting with `prefix`.
async fn docs_with_prefix(env: &TestEnv, collection: &str, prefix: &str) -> u64 {
    env.app
        .mongo
        .collection::<Document>(collection)
        .count_documents(doc! { "_id": { "$regex": format!("^{prefix}") } })
        .await
        .unwrap()
}

#[tokio::test]
async fn dc_01_003_deletes_documents_and_error_rows_written_after_a_deletion() {
    let mut env = TestEnv::new().await;
    env.configure(|s| s.jobs.privacy.batch_size = 2);
    seed(&env).await;
    env.run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;
    // Late statements of deleted students 1 (three, one a BSON UUID) and 15,
    // a KERIS document regenerated for 4 and two error rows for 1; the same
    // for student 9, who consented again, and for 10, who never left.
    let late = |who: Uuid, tag: &str| {
        vec![
            late_doc(&format!("late-{tag}-a"), Bson::String(who.to_string())),
            late_doc(&format!("late-{tag}-b"), bson_uuid(who)),
            late_doc(
                &format!("late-{tag}-c"),
                Bson::String(who.to_string().to_uppercase()),
            ),
        ]
    };
    consent_again(env.pg(), id(9)).await;
    let mut statements = late(id(1), "gone1");
    statements.extend(late(id(15), "gone15").into_iter().take(1));
    statements.extend(late(id(9), "kept9"));
    statements.extend(late(id(10), "kept10"));
    insert_docs(&env, "statements", statements).await;
    insert_docs(
        &env,
        "keris_batch_data",
        vec![
            late_doc("late-gone4-k", Bson::String(id(4).to_string())),
            late_doc("late-kept9-k", Bson::String(id(9).to_string())),
        ],
    )
    .await;
    let error_row = "INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, statement_id, err_code, created_at, upd_dt)
        VALUES ('DC-01-001', '2026-06-15', '00000000-0000-4000-8000-0000000000aa', $1, gen_random_uuid(), 'E2', now(), now())";
    write_rows(env.pg(), id(1), &[("tb_dc_error_data_info", error_row, 2)]).await;
    write_rows(env.pg(), id(9), &[("tb_dc_error_data_info", error_row, 1)]).await;

    let run = env
        .run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;

    for prefix in ["late-gone"] {
        for name in COLLECTIONS {
            assert_eq!(docs_with_prefix(&env, name, prefix).await, 0, "{name}");
        }
    }
    assert_eq!(docs_with_prefix(&env, "statements", "late-kept").await, 6);
    assert_eq!(
        docs_with_prefix(&env, "keris_batch_data", "late-kept").await,
        1
    );
    assert_eq!(
        rows_of(env.pg(), "tb_dc_error_data_info", &[id(1)]).await,
        0
    );
    // Student 9's seeded row was deleted by the first run; the new one stays.
    assert_eq!(
        rows_of(env.pg(), "tb_dc_error_data_info", &[id(9)]).await,
        1
    );

    let swept =
        serde_json::json!({ "statements": 4, "keris_batch_data": 1, "tb_dc_error_data_info": 2 });
    let d = details(env.pg(), run).await;
    assert_eq!(d["students_in_set"], 0, "nobody probed per student");
    assert_eq!(d["students_swept"], selected().len() - 1, "all but 9");
    assert_eq!(d["swept"], swept);
    assert_eq!(d["deleted"], swept);
    assert_eq!(audit_swept(env.pg(), run).await, swept);
    let (counts, hashes) = audit(env.pg(), run).await;
    assert_eq!(counts, swept);
    assert_eq!(hashes, expected_hashes(&[id(1), id(4), id(15)]));
}

/// Every form of `student`'s id the contract's "uuid as string" and the
/// MongoDB drivers' UUID representations produce, written out here
/// independently of the job: (name, value).
fn stored_forms(student: Uuid) -> Vec<(&'static str, Bson)> {
    let s = student.to_string();
    let simple = student.simple().to_string();
    let bin = |subtype, bytes: Vec<u8>| Bson::Binary(Binary { subtype, bytes });
    let mut java = student.as_bytes().to_vec();
    java[..8].reverse();
    java[8..].reverse();
    vec![
        ("lower", Bson::String(s.clone())),
        ("upper", Bson::String(s.to_uppercase())),
        ("simple", Bson::String(simple.clone())),
        ("simple-upper", Bson::String(simple.to_uppercase())),
        ("braced", Bson::String(format!("{{{s}}}"))),
        (
            "braced-upper",
            Bson::String(format!("{{{}}}", s.to_uppercase())),
        ),
        ("urn", Bson::String(format!("urn:uuid:{s}"))),
        (
            "urn-upper",
            Bson::String(format!("urn:uuid:{}", s.to_uppercase())),
        ),
        (
            "bin4",
            bin(BinarySubtype::Uuid, student.as_bytes().to_vec()),
        ),
        (
            "bin3-python",
            bin(BinarySubtype::UuidOld, student.as_bytes().to_vec()),
        ),
        ("bin3-java", bin(BinarySubtype::UuidOld, java)),
        (
            "bin3-csharp",
            bin(BinarySubtype::UuidOld, student.to_bytes_le().to_vec()),
        ),
    ]
}

#[tokio::test]
async fn dc_01_003_deletes_a_students_documents_in_every_stored_form_of_the_id() {
    let env = TestEnv::new().await;
    seed(&env).await;
    // Student 1 (selected) and 10 (consented) in every form, both collections.
    for name in COLLECTIONS {
        let mut docs = Vec::new();
        for (who, tag) in [(id(1), "gone"), (id(10), "kept")] {
            for (form, value) in stored_forms(who) {
                docs.push(late_doc(&format!("{tag}-{form}"), value));
            }
        }
        insert_docs(&env, name, docs).await;
    }
    let forms = stored_forms(id(1)).len() as u64;

    let run = env
        .run_ok("DC-01-003", Some(date(BUSINESS_DATE)), false)
        .await;

    for name in COLLECTIONS {
        assert_eq!(docs_with_prefix(&env, name, "gone-").await, 0, "{name}");
        assert_eq!(docs_with_prefix(&env, name, "kept-").await, forms, "{name}");
    }
    let n = selected().len() as u64;
    let expected = serde_json::json!({
        "statements": 2 * n + forms,
        "keris_batch_data": 2 * n + forms,
        "tb_dc_error_data_info": n,
    });
    assert_eq!(details(env.pg(), run).await["deleted"], expected);
    let (counts, hashes) = audit(env.pg(), run).await;
    assert_eq!(counts, expected);
    assert_eq!(hashes, expected_hashes(&selected()));
}
