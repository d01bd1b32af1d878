//! LMS-01-008 (KERIS dashboard, API-001..005) and DC-01-004 (achievement
//! levels) against the in-process KERIS simulator over real HTTP: request
//! shapes, partial failures and resends, 429, reruns, skipped students,
//! achievement-level cut-offs in SQL, secrets kept out of a real process's
//! logs, and LMS-01-008 in partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aidt_batch::config::PartnerSettings;
use aidt_batch::jobs::lms::keris_dashboard::refresh_view;
use aidt_batch::jobs::shared::dashboard::{achievement_level, level_letter, SchoolLevel};
use aidt_batch::jobs::REGISTRY;
use aidt_batch::runtime::partition::Partition;
use aidt_batch::runtime::runner::{self, RunRequest};
use aidt_batch::runtime::Exit;
use chrono::{DateTime, Utc};
use keris_simulator::{self as simulator, Faults, SimulatorConfig, SimulatorHandle};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{details, expected_partition, salted_hash, stderr, TestEnv};

const PARTNER_ID: &str = "9a4e2f61-7c3b-4d8a-b1e5-2f6c8d0a4b17";
const OTHER_PARTNER_ID: &str = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const JOB: &str = "LMS-01-008";

fn token_of(user: Uuid) -> String {
    format!("student-token-{}", user.simple())
}

async fn sim() -> SimulatorHandle {
    simulator::start(SimulatorConfig::default())
        .await
        .expect("start the simulator")
}

/// A test database whose KERIS points at `sim`, one partner `brand-a`,
/// fast retries and no client-side rate limit.
async fn env_for(sim: &SimulatorHandle) -> TestEnv {
    let mut env = TestEnv::new().await;
    let base = sim.base_url();
    env.configure(|s| {
        s.keris.api_domain = Some(base);
        s.keris.partners = BTreeMap::from([(
            "brand-a".to_string(),
            PartnerSettings {
                partner_id: Some(SecretString::from(PARTNER_ID.to_string())),
            },
        )]);
        s.keris.base_backoff_ms = 5;
        s.keris.max_backoff_ms = 20;
        s.keris.requests_per_second = 0.0;
        s.keris.request_timeout_secs = 5;
        s.jobs.keris_dashboard.page_size = 3;
    });
    seed_reference(env.pg()).await;
    env
}

async fn seed_reference(pg: &PgPool) {
    sqlx::raw_sql(
        "INSERT INTO tb_lms_school (school_id, school_nm, school_level) VALUES
            ('SCH-E', 'Elementary', 'E'), ('SCH-M', 'Middle', 'M'), ('SCH-H', 'High', 'H');
         INSERT INTO tb_lms_course (course_id, textbook_id, subject_cd, school_level, course_nm) VALUES
            ('C-E', 'TB-E', 'MAT', 'E', 'Math E'), ('C-M', 'TB-M', 'MAT', 'M', 'Math M'), ('C-H', 'TB-H', 'MAT', 'H', 'Math H');
         INSERT INTO tb_lms_lecture (lecture_code, course_id, school_id, teacher_id, lecture_nm) VALUES
            ('L-E', 'C-E', 'SCH-E', 'aaaaaaaa-0000-4000-8000-000000000001', 'Lecture E'),
            ('L-M', 'C-M', 'SCH-M', 'aaaaaaaa-0000-4000-8000-000000000002', 'Lecture M'),
            ('L-H', 'C-H', 'SCH-H', 'aaaaaaaa-0000-4000-8000-000000000003', 'Lecture H');",
    )
    .execute(pg)
    .await
    .unwrap();
}

/// A student of `school` (`SCH-E`/`SCH-M`/`SCH-H`) of partner `partner`,
/// member of the school's lecture, with a KERIS token if `token`.
async fn student(pg: &PgPool, school: &str, partner: &str, token: bool) -> Uuid {
    let user = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, user_nm) VALUES ($1, $2::uuid, 'S', $3, 'Kim Student')",
    )
    .bind(user)
    .bind(partner)
    .bind(school)
    .execute(pg)
    .await
    .unwrap();
    let lecture = format!("L-{}", &school[4..]);
    sqlx::query("INSERT INTO tb_lms_lecture_member (lecture_code, user_id) VALUES ($1, $2)")
        .bind(lecture)
        .bind(user)
        .execute(pg)
        .await
        .unwrap();
    if token {
        sqlx::query(
            "INSERT INTO tb_lms_keris_token (user_id, token, access_id) VALUES ($1, $2, $3)",
        )
        .bind(user)
        .bind(token_of(user))
        .bind(format!("access-{}", user.simple()))
        .execute(pg)
        .await
        .unwrap();
    }
    user
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn session(
    pg: &PgPool,
    user: Uuid,
    lecture: &str,
    started: &str,
    ended: Option<&str>,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at) VALUES ($1, $2, $3, $4) RETURNING session_id",
    )
    .bind(user)
    .bind(lecture)
    .bind(at(started))
    .bind(ended.map(at))
    .fetch_one(pg)
    .await
    .unwrap()
}

async fn result(pg: &PgPool, user: Uuid, lecture: &str, std_sys_id: &str, score: f64) {
    sqlx::query(
        "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at)
         VALUES ($1, $2, 'I-1', 'CT-1', $3, 'Y', $4::float8::numeric, now())",
    )
    .bind(user)
    .bind(lecture)
    .bind(std_sys_id)
    .bind(score)
    .execute(pg)
    .await
    .unwrap();
}

async fn progress(pg: &PgPool, user: Uuid, std_sys_id: &str, rate: f64, completed: Option<&str>) {
    sqlx::query(
        "INSERT INTO tb_lms_lrn_progress (user_id, std_sys_id, progress_rate, completed_at, upd_dt)
         VALUES ($1, $2, $3::float8::numeric, $4, now())",
    )
    .bind(user)
    .bind(std_sys_id)
    .bind(rate)
    .bind(completed.map(at))
    .execute(pg)
    .await
    .unwrap();
}

/// One student with every kind of event: an ended session, a completed
/// progress row and a result (score 85, elementary: level A).
async fn one_of_each(pg: &PgPool) -> Uuid {
    let user = student(pg, "SCH-E", PARTNER_ID, true).await;
    session(
        pg,
        user,
        "L-E",
        "2026-03-05T09:10:00+09:00",
        Some("2026-03-05T09:40:00+09:00"),
    )
    .await;
    progress(
        pg,
        user,
        "E4MATA01B01C01",
        62.5,
        Some("2026-03-05T09:35:00+09:00"),
    )
    .await;
    result(pg, user, "L-E", "E4MATA01B01C01", 85.0).await;
    user
}

async fn scalar_i64(pg: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pg).await.unwrap()
}

/// Events not yet marked sent, over all five APIs.
async fn unsent(pg: &PgPool) -> i64 {
    scalar_i64(
        pg,
        "SELECT (SELECT count(*) FROM tb_lms_lrn_session WHERE keris_init_sent_at IS NULL)
              + (SELECT count(*) FROM tb_lms_lrn_session WHERE ended_at IS NOT NULL AND keris_term_sent_at IS NULL)
              + (SELECT count(*) FROM tb_lms_lrn_progress WHERE keris_sent_at IS NULL OR upd_dt > keris_sent_at)
              + (SELECT count(*) FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys
                  WHERE score IS NOT NULL AND (keris_sent_at IS NULL OR upd_dt > keris_sent_at))",
    )
    .await
}

fn body_of(sim: &SimulatorHandle, api: &str) -> Vec<Value> {
    sim.requests()
        .into_iter()
        .filter(|r| r.api.as_deref() == Some(api) && r.code.as_deref() == Some("00000"))
        .filter_map(|r| r.body)
        .collect()
}

fn assert_keris_timestamp(ts: &Value, want: &str) {
    let ts = ts.as_str().expect("timestamp is a string");
    assert_eq!(ts, want);
    // RFC 3339, milliseconds, +09:00.
    assert_eq!(ts.len(), "2026-03-05T09:10:00.000+09:00".len(), "{ts}");
    assert_eq!(&ts[19..20], ".", "{ts}");
    assert!(ts.ends_with("+09:00"), "{ts}");
}

#[tokio::test]
async fn each_api_reaches_keris_with_the_spec_headers_and_body() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let user = one_of_each(env.pg()).await;

    env.run_ok(JOB, None, false).await;

    for record in sim.requests() {
        assert_eq!(
            record.header("Partner-ID"),
            Some(PARTNER_ID),
            "{:?}",
            record.api
        );
        assert_eq!(record.header("API-version"), Some("2.4"));
        assert_eq!(record.method, "POST");
    }
    let token = serde_json::json!({"token": token_of(user), "access_id": format!("access-{}", user.simple())});
    let check_common = |b: &Value| {
        assert_eq!(b["user_id"], user.to_string());
        assert_eq!(b["access_token"], token);
    };

    let init = body_of(&sim, "API-001");
    assert_eq!(init.len(), 1);
    check_common(&init[0]);
    assert_eq!(init[0]["lecture_code"], "L-E");
    assert_keris_timestamp(&init[0]["timestamp"], "2026-03-05T09:10:00.000+09:00");

    let term = body_of(&sim, "API-002");
    assert_eq!(term.len(), 1);
    check_common(&term[0]);
    assert_eq!(term[0]["lecture_code"], "L-E");
    assert_eq!(term[0]["duration"], 1800);
    assert_keris_timestamp(&term[0]["timestamp"], "2026-03-05T09:40:00.000+09:00");

    let prog = body_of(&sim, "API-003");
    assert_eq!(prog.len(), 1);
    check_common(&prog[0]);
    assert_eq!(prog[0]["curriculum"], "E4MATA01B01C01");
    assert_eq!(prog[0]["percent"], 62.5);

    let done = body_of(&sim, "API-004");
    assert_eq!(done.len(), 1);
    check_common(&done[0]);
    assert_eq!(done[0]["curriculum"], "E4MATA01B01C01");
    assert_keris_timestamp(&done[0]["timestamp"], "2026-03-05T09:35:00.000+09:00");

    let score = body_of(&sim, "API-005");
    assert_eq!(score.len(), 1);
    check_common(&score[0]);
    assert_eq!(score[0]["curriculum"], "E4MATA01B01C01");
    assert_eq!(score[0]["score"], 85.0);
    assert_eq!(score[0]["achievement_level"], "A");

    assert_eq!(unsent(env.pg()).await, 0, "every event marked sent");
    let view: (String, Option<Uuid>, String) = sqlx::query_as(
        "SELECT lecture_code, teacher_id, completed_yn FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(
        view,
        (
            "L-E".into(),
            Some(Uuid::parse_str("aaaaaaaa-0000-4000-8000-000000000001").unwrap()),
            "Y".into()
        )
    );
}

#[tokio::test]
async fn a_rerun_sends_nothing_twice_and_a_changed_score_is_sent_again() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    for _ in 0..4 {
        one_of_each(env.pg()).await;
    }
    env.run_ok(JOB, None, false).await;
    let after_first = sim.stats();
    assert_eq!(after_first.requests("API-005"), 4);
    assert_eq!(sim.dashboard_events().len(), 20);

    env.run_ok(JOB, None, false).await;
    assert_eq!(sim.stats(), after_first, "the rerun sent nothing");

    // A new result changes one student's average: only that score goes again.
    let user: Uuid = sqlx::query_scalar("SELECT user_id FROM tb_lms_user ORDER BY user_id LIMIT 1")
        .fetch_one(env.pg())
        .await
        .unwrap();
    result(env.pg(), user, "L-E", "E4MATA01B01C01", 25.0).await;
    env.run_ok(JOB, None, false).await;
    let scores = body_of(&sim, "API-005");
    assert_eq!(scores.len(), 5);
    let last = scores
        .iter()
        .find(|b| b["user_id"] == user.to_string() && b["score"] == 55.0)
        .expect("new score sent");
    assert_eq!(last["achievement_level"], "C");
    assert_eq!(sim.stats().requests("API-001"), 4);
}

#[tokio::test]
async fn students_without_token_or_configured_partner_are_skipped_and_reported_by_id() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let ok = one_of_each(env.pg()).await;
    let no_token = student(env.pg(), "SCH-M", PARTNER_ID, false).await;
    session(env.pg(), no_token, "L-M", "2026-03-05T09:10:00+09:00", None).await;
    result(env.pg(), no_token, "L-M", "M1MATA01", 90.0).await;
    let other = student(env.pg(), "SCH-H", OTHER_PARTNER_ID, true).await;
    session(env.pg(), other, "L-H", "2026-03-05T09:10:00+09:00", None).await;

    let outcome = env.run_job(JOB, None, false).await;
    assert_eq!(outcome.exit, Exit::Success, "skips are not failures");

    let d = details(env.pg(), outcome.run_id.unwrap()).await;
    assert_eq!(
        d["skipped_no_token"],
        serde_json::json!([salted_hash(no_token)])
    );
    assert_eq!(d["skipped_no_token_events"], 2, "API-001 and API-005");
    assert_eq!(
        d["skipped_unknown_partner"],
        serde_json::json!([salted_hash(other)])
    );
    let text = d.to_string();
    assert!(
        !text.contains("Kim Student")
            && !text.contains(OTHER_PARTNER_ID)
            && !text.contains(PARTNER_ID),
        "{text}"
    );
    let skipped: i64 = sqlx::query_scalar("SELECT skip_cnt FROM batch_job_run WHERE run_id = $1")
        .bind(outcome.run_id.unwrap())
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(skipped, 3);

    assert!(sim.dashboard_events().iter().all(|e| e.user_id == ok));
    // The skipped events stay pending for when the token arrives.
    let pending: i64 = scalar_i64(
        env.pg(),
        "SELECT count(*) FROM tb_lms_lrn_session WHERE keris_init_sent_at IS NULL",
    )
    .await;
    assert_eq!(pending, 2);
}

#[tokio::test]
async fn achievement_levels_from_the_refresh_sql_match_the_rust_cutoffs_at_every_boundary() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let scores = [
        100.0, 90.0, 89.99, 80.0, 79.99, 70.0, 69.99, 60.0, 59.99, 0.0,
    ];
    let mut expected = Vec::new();
    for (school, level) in [
        ("SCH-E", SchoolLevel::Elementary),
        ("SCH-M", SchoolLevel::Middle),
        ("SCH-H", SchoolLevel::High),
    ] {
        for score in scores {
            let user = student(env.pg(), school, PARTNER_ID, true).await;
            let prefix = &school[4..];
            result(
                env.pg(),
                user,
                &format!("L-{prefix}"),
                &format!("{prefix}1MATA01"),
                score,
            )
            .await;
            expected.push((
                user,
                score,
                level_letter(achievement_level(level, score)).to_string(),
            ));
        }
    }
    // Averages are rounded to the stored precision before the cut-off.
    let avg_user = student(env.pg(), "SCH-M", PARTNER_ID, true).await;
    result(env.pg(), avg_user, "L-M", "M1MATA02", 89.99).await;
    result(env.pg(), avg_user, "L-M", "M1MATA02", 90.0).await;
    expected.push((avg_user, 90.0, "A".into()));

    let mut conn = env.pg().acquire().await.unwrap();
    let n = refresh_view(&mut conn, Utc::now()).await.unwrap();
    assert_eq!(n as usize, expected.len());
    for (user, score, want) in &expected {
        let (got_score, got_level): (f64, String) = sqlx::query_as(
            "SELECT score::float8, achievement_level FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(got_score, *score);
        assert_eq!(&got_level, want, "score {score}");
    }
    // Unchanged results: the refresh touches nothing.
    assert_eq!(refresh_view(&mut conn, Utc::now()).await.unwrap(), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_and_what_stays_unsent_goes_with_the_next_run() {
    let sim = sim().await;
    let mut env = env_for(&sim).await;
    // With a fifth of requests failing, 5 attempts leave a 0.2^5 chance per
    // event (about 1% per run of 30 events) that retries run out; 12 attempts
    // make that negligible, and short backoffs keep the test quick.
    env.configure(|s| {
        s.keris.max_attempts = 12;
        s.keris.base_backoff_ms = 5;
        s.keris.max_backoff_ms = 50;
    });
    for _ in 0..6 {
        one_of_each(env.pg()).await;
    }
    // A share of 5xx and connection resets: the client's retries absorb them.
    sim.set_faults(Faults {
        seed: 7,
        server_error_share: 0.15,
        reset_share: 0.05,
        stored_before_error_share: 0.0,
        ..Faults::default()
    });
    env.run_ok(JOB, None, false).await;
    let stats = sim.stats().partner(PARTNER_ID);
    let answered_500: u64 = stats
        .calls
        .values()
        .map(|c| c.answers.get("50001").copied().unwrap_or(0))
        .sum();
    assert!(answered_500 > 0, "faults were injected: {stats:?}");
    assert_eq!(sim.dashboard_events().len(), 30);
    assert_eq!(unsent(env.pg()).await, 0);

    // KERIS down for good: retries run out, the events stay unsent, exit 4.
    let more = one_of_each(env.pg()).await;
    sim.set_faults(Faults {
        server_error_share: 1.0,
        stored_before_error_share: 0.0,
        ..Faults::default()
    });
    let outcome = env.run_job(JOB, None, false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    // Session start, session end, the progress row (API-003 + API-004), the score.
    assert_eq!(unsent(env.pg()).await, 4);
    let d = details(env.pg(), outcome.run_id.unwrap()).await;
    assert_eq!(d["apis"]["API-001"]["failed"], 1, "{d}");

    // KERIS back: the next run sends exactly what was left.
    sim.set_faults(Faults::default());
    env.run_ok(JOB, None, false).await;
    assert_eq!(unsent(env.pg()).await, 0);
    let events = sim.dashboard_events();
    assert_eq!(events.len(), 35);
    assert_eq!(events.iter().filter(|e| e.user_id == more).count(), 5);
}

#[tokio::test]
async fn when_keris_is_down_the_sender_gives_up_after_a_few_failures_and_the_next_run_sends_all() {
    let sim = sim().await;
    let mut env = env_for(&sim).await;
    env.configure(|s| {
        s.keris.max_concurrency = 1;
        s.jobs.keris_dashboard.give_up_after_transient_failures = 2;
    });
    for _ in 0..5 {
        one_of_each(env.pg()).await;
    }
    sim.set_faults(Faults {
        server_error_share: 1.0,
        stored_before_error_share: 0.0,
        ..Faults::default()
    });

    let outcome = env.run_job(JOB, None, false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let attempts = u64::from(env.app.settings.keris.max_attempts);
    assert_eq!(
        sim.stats().requests("API-001"),
        2 * attempts,
        "two events tried, the rest deferred"
    );
    assert_eq!(
        sim.stats().requests("API-003") + sim.stats().requests("API-005"),
        0
    );
    let d = details(env.pg(), outcome.run_id.unwrap()).await;
    assert_eq!(d["gave_up_partners"], serde_json::json!(["brand-a"]), "{d}");
    assert_eq!(d["apis"]["API-001"]["failed_by_code"]["deferred"], 3, "{d}");

    sim.set_faults(Faults::default());
    env.run_ok(JOB, None, false).await;
    assert_eq!(unsent(env.pg()).await, 0);
    assert_eq!(sim.dashboard_events().len(), 25);
}

#[tokio::test]
async fn a_permanent_rejection_is_recorded_with_its_code_and_the_run_goes_on() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let good = one_of_each(env.pg()).await;
    let bad = student(env.pg(), "SCH-E", PARTNER_ID, true).await;
    progress(env.pg(), bad, "NOT-A-CURRICULUM", 10.0, None).await;

    let outcome = env.run_job(JOB, None, false).await;
    assert_eq!(outcome.exit, Exit::CompletedWithErrors);
    let d = details(env.pg(), outcome.run_id.unwrap()).await;
    assert_eq!(d["rejected"][0]["code"], "40001", "{d}");
    assert_eq!(d["rejected"][0]["api"], "API-003");
    assert_eq!(d["rejected"][0]["student"], salted_hash(bad));
    assert!(!d.to_string().contains(&bad.to_string()), "no raw id: {d}");
    assert_eq!(
        sim.dashboard_events()
            .iter()
            .filter(|e| e.user_id == good)
            .count(),
        5
    );
    let bad_sent: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT keris_sent_at FROM tb_lms_lrn_progress WHERE user_id = $1")
            .bind(bad)
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert!(bad_sent.is_none());
}

#[tokio::test]
async fn http_429_with_retry_after_slows_the_sender_down() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    one_of_each(env.pg()).await;
    sim.set_faults(Faults {
        too_many_requests_next: 1,
        retry_after_secs: 1,
        ..Faults::default()
    });

    let start = Instant::now();
    env.run_ok(JOB, None, false).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured: {:?}",
        start.elapsed()
    );
    assert_eq!(sim.dashboard_events().len(), 5);
    assert_eq!(sim.stats().requests("API-001"), 2, "the 429 and its retry");
}

#[tokio::test]
async fn dry_run_reports_counts_per_api_and_sends_and_writes_nothing() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    one_of_each(env.pg()).await;
    one_of_each(env.pg()).await;

    let run_id = env.run_ok(JOB, None, true).await;
    let d = details(env.pg(), run_id).await;
    assert_eq!(
        d["would_send"],
        serde_json::json!({"API-001": 2, "API-002": 2, "API-003": 2, "API-004": 2, "API-005": 2})
    );
    assert_eq!(d["would_refresh_view_rows"], 2);
    assert!(sim.requests().is_empty());
    assert_eq!(
        scalar_i64(
            env.pg(),
            "SELECT count(*) FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn dc_01_004_creates_missing_rows_fills_null_levels_and_sends_their_scores_once() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let pg = env.pg();
    sqlx::query("INSERT INTO tb_lms_course_std_sys (course_id, std_sys_id) VALUES ('C-M', 'M1MATA01'), ('C-M', 'M1MATA02')")
        .execute(pg)
        .await
        .unwrap();
    // Missing row: results on a course id, no view row.
    let missing = student(pg, "SCH-M", PARTNER_ID, true).await;
    result(pg, missing, "L-M", "M1MATA01", 72.0).await;
    // Existing row with a score and no level.
    let null_level = student(pg, "SCH-M", PARTNER_ID, true).await;
    sqlx::query(
        "INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys (user_id, std_sys_id, lecture_code, score, keris_sent_at, upd_dt)
         VALUES ($1, 'M1MATA02', 'L-M', 95, NULL, now() - interval '1 day')",
    )
    .bind(null_level)
    .execute(pg)
    .await
    .unwrap();
    // Complete, already sent row: left alone.
    let done = student(pg, "SCH-M", PARTNER_ID, true).await;
    sqlx::query(
        "INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys (user_id, std_sys_id, lecture_code, score, achievement_level, keris_sent_at, upd_dt)
         VALUES ($1, 'M1MATA01', 'L-M', 50, 'E', now(), now() - interval '1 day')",
    )
    .bind(done)
    .execute(pg)
    .await
    .unwrap();

    let run_id = env.run_ok("DC-01-004", None, false).await;
    let d = details(pg, run_id).await;
    assert_eq!(d["created_rows"], 1, "{d}");
    assert_eq!(d["filled_levels"], 1, "{d}");
    let level = |user: Uuid| async move {
        sqlx::query_scalar::<_, Option<String>>("SELECT achievement_level FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys WHERE user_id = $1")
            .bind(user)
            .fetch_one(pg)
            .await
            .unwrap()
    };
    assert_eq!(level(missing).await.as_deref(), Some("C"));
    assert_eq!(level(null_level).await.as_deref(), Some("A"));

    let scores = body_of(&sim, "API-005");
    let mut sent: Vec<(String, String, f64)> = scores
        .iter()
        .map(|b| {
            (
                b["user_id"].as_str().unwrap().to_string(),
                b["achievement_level"].as_str().unwrap().to_string(),
                b["score"].as_f64().unwrap(),
            )
        })
        .collect();
    sent.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut want = vec![
        (missing.to_string(), "C".to_string(), 72.0),
        (null_level.to_string(), "A".to_string(), 95.0),
    ];
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(sent, want);
    assert_eq!(
        sim.stats().requests("API-001"),
        0,
        "DC-01-004 sends scores only"
    );

    env.run_ok("DC-01-004", None, false).await;
    assert_eq!(sim.stats().requests("API-005"), 2, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_id_and_student_tokens_never_appear_in_a_real_process_log() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let user = one_of_each(env.pg()).await;
    // A rejected event and a retried one, so error paths log too.
    let bad = student(env.pg(), "SCH-E", PARTNER_ID, true).await;
    progress(env.pg(), bad, "NOT-A-CURRICULUM", 10.0, None).await;
    sim.set_faults(Faults {
        server_error_next: 1,
        stored_before_error_share: 0.0,
        ..Faults::default()
    });

    let mut cmd = env.command(&["lms-01-008"]);
    cmd.env("AIDT__KERIS__API_DOMAIN", sim.base_url())
        .env("AIDT__KERIS__PARTNERS__DEMO__PARTNER_ID", PARTNER_ID)
        .env("AIDT__KERIS__BASE_BACKOFF_MS", "5")
        .env("RUST_LOG", "debug");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("spawn aidt-batch"))
        .await
        .unwrap();
    let log = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert_eq!(
        sim.dashboard_events()
            .iter()
            .filter(|e| e.user_id == user)
            .count(),
        5,
        "{log}"
    );
    assert!(
        log.contains("brand") || log.contains("demo"),
        "the partner is named by its config name: {log}"
    );
    for secret in [PARTNER_ID.to_string(), token_of(user), token_of(bad)] {
        assert!(!log.contains(&secret), "secret {secret} in the log:\n{log}");
    }
}

#[tokio::test]
async fn dc_01_004_dry_run_counts_rows_and_levels_and_changes_and_sends_nothing() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let pg = env.pg();
    sqlx::query(
        "INSERT INTO tb_lms_course_std_sys (course_id, std_sys_id) VALUES ('C-E', 'E4MATA01')",
    )
    .execute(pg)
    .await
    .unwrap();
    let user = student(pg, "SCH-E", PARTNER_ID, true).await;
    result(pg, user, "L-E", "E4MATA01", 61.0).await;

    let run_id = env.run_ok("DC-01-004", None, true).await;
    let d = details(pg, run_id).await;
    assert_eq!(d["would_create_rows"], 1, "{d}");
    assert_eq!(d["would_fill_levels"], 0, "{d}");
    assert_eq!(
        scalar_i64(
            pg,
            "SELECT count(*) FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys"
        )
        .await,
        0
    );
    assert!(sim.requests().is_empty());
}

/// Fixed students of a deterministic seed (two databases seeded alike
/// compare equal): `i` in `0..12`, schools E/M/H in turn.
fn fixed_student(i: u128) -> Uuid {
    Uuid::from_u128(0xd00d_0000_0000_4000_8000_0000_0000_0000 + i)
}

fn prefix_of(i: u128) -> &'static str {
    ["E", "M", "H"][(i % 3) as usize]
}

/// Per student: two results on each of two standard-system ids, a progress
/// row (every other one completed) and an ended session, at fixed times.
async fn seed_fixed(pg: &PgPool) {
    let mut sql = String::new();
    for i in 0..12u128 {
        let u = fixed_student(i);
        let p = prefix_of(i);
        sql += &format!(
            "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id) VALUES ('{u}', '{PARTNER_ID}', 'S', 'SCH-{p}');
             INSERT INTO tb_lms_lecture_member VALUES ('L-{p}', '{u}');
             INSERT INTO tb_lms_keris_token (user_id, token, access_id) VALUES ('{u}', 'student-token-{s}', 'access-{s}');
             INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at)
               VALUES ('{u}', 'L-{p}', '2026-03-05T09:00:00+09', '2026-03-05T09:30:00+09');
             INSERT INTO tb_lms_lrn_progress (user_id, std_sys_id, progress_rate, completed_at, upd_dt)
               VALUES ('{u}', '{p}1MATA01', {rate}, {done}, '2026-03-05T09:30:00+09');\n",
            s = u.simple(),
            rate = (i * 8) % 100,
            done = if i % 2 == 0 { "'2026-03-05T09:30:00+09'" } else { "NULL" },
        );
        for (k, id) in ["01", "02"].iter().enumerate() {
            for attempt in 0..2u128 {
                let score = (i * 7 + k as u128 * 13 + attempt * 29) % 101;
                sql += &format!(
                    "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at)
                       VALUES ('{u}', 'L-{p}', 'I-{attempt}', 'CT-1', '{p}1MATA{id}', 'Y', {score}, '2026-03-05T09:1{attempt}:00+09');\n"
                );
            }
        }
    }
    sqlx::raw_sql(&sql).execute(pg).await.unwrap();
}

/// The whole view, as comparable text: every value column, whether the
/// last run (started at `last_run`) changed the row, and whether it is sent.
/// One view row as `view_state` reads it.
type ViewRow = (
    Uuid,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    bool,
    bool,
);

async fn view_state(pg: &PgPool, last_run: i64) -> Vec<Vec<Option<String>>> {
    let rows: Vec<ViewRow> =
        sqlx::query_as(
            "SELECT v.user_id, v.std_sys_id, v.lecture_code, v.teacher_id::text, v.score::text, v.achievement_level,
                    v.progress_rate::text, v.completed_yn,
                    v.upd_dt >= r.started_at AS changed_by_last_run,
                    v.keris_sent_at IS NOT NULL AND v.keris_sent_at >= v.upd_dt AS sent
               FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys v, batch_job_run r
              WHERE r.run_id = $1
              ORDER BY v.user_id, v.std_sys_id",
        )
        .bind(last_run)
        .fetch_all(pg)
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| {
            vec![
                Some(r.0.to_string()),
                Some(r.1),
                r.2,
                r.3,
                r.4,
                r.5,
                r.6,
                Some(r.7),
                Some(r.8.to_string()),
                Some(r.9.to_string()),
            ]
        })
        .collect()
}

async fn add_result(pg: &PgPool, i: u128, std: &str, score: i32, solved_at: &str) {
    let p = prefix_of(i);
    sqlx::query(&format!(
        "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at)
         VALUES ($1, 'L-{p}', 'I-9', 'CT-1', '{p}1MATA{std}', 'N', $2, {solved_at})"
    ))
    .bind(fixed_student(i))
    .bind(score)
    .execute(pg)
    .await
    .unwrap();
}

/// The changes between the runs, the same on every database.
async fn change_students(pg: &PgPool) {
    // 0: a new result, solved now.
    add_result(pg, 0, "01", 3, "now()").await;
    // 1: a result uploaded late (offline), solved two days ago.
    add_result(pg, 1, "02", 100, "now() - interval '2 days'").await;
    // 2: progress moved; 3: progress completed.
    sqlx::query(
        "UPDATE tb_lms_lrn_progress SET progress_rate = 99.5, upd_dt = now() WHERE user_id = $1",
    )
    .bind(fixed_student(2))
    .execute(pg)
    .await
    .unwrap();
    sqlx::query("UPDATE tb_lms_lrn_progress SET progress_rate = 100, completed_at = now(), upd_dt = now() WHERE user_id = $1")
        .bind(fixed_student(3))
        .execute(pg)
        .await
        .unwrap();
    // 4: a new session (no view column depends on it; API-001/002 do).
    sqlx::query(
        "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at) VALUES ($1, 'L-M', now() - interval '5 minutes', now())",
    )
    .bind(fixed_student(4))
    .execute(pg)
    .await
    .unwrap();
}

/// Seeds, runs, changes students (one of them in a transaction that
/// commits only after the next run: an older `solved_at` committed late),
/// runs twice more; `full` makes the later runs `--full`. Returns the view
/// after the second and after the third run.
async fn incremental_scenario(env: &TestEnv, full: bool) -> [Vec<Vec<Option<String>>>; 2] {
    let pg = env.pg();
    seed_fixed(pg).await;
    let first = env.run_ok(JOB, None, false).await;
    assert_eq!(details(pg, first).await["view_refresh"]["mode"], "full");

    // 5: its result's id is taken now, before the others', and solved_at is
    // now, but it commits only after the next run has read past it.
    let mut late = pg.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at)
         VALUES ($1, 'L-H', 'I-9', 'CT-1', 'H1MATA01', 'N', 1, now())",
    )
    .bind(fixed_student(5))
    .execute(&mut *late)
    .await
    .unwrap();
    change_students(pg).await;

    let second = run_mode(env, full).await;
    let after_second = view_state(pg, second).await;
    late.commit().await.unwrap();
    let third = run_mode(env, full).await;
    let after_third = view_state(pg, third).await;

    let (d2, d3) = (details(pg, second).await, details(pg, third).await);
    if full {
        assert_eq!(d2["view_refresh"]["mode"], "full");
        assert_eq!(d2["view_refresh"]["reason"], "--full");
    } else {
        assert_eq!(d2["view_refresh"]["mode"], "incremental", "{d2}");
        // Students 0–3 changed what the view reads; 4 only a session; 5 is
        // not committed yet.
        assert_eq!(d2["view_refresh"]["students"], 4, "{d2}");
        // The overlap re-reads 0, 2 and 3 (1's solved_at is old and its id
        // below the watermark now) and finds 5, whose result_id is below the
        // watermark but whose solved_at is within the overlap.
        assert_eq!(d3["view_refresh"]["mode"], "incremental", "{d3}");
        assert_eq!(d3["view_refresh"]["students"], 4, "{d3}");
    }
    [after_second, after_third]
}

async fn run_mode(env: &TestEnv, full: bool) -> i64 {
    let outcome = if full {
        env.run_full(JOB).await
    } else {
        env.run_job(JOB, None, false).await
    };
    assert_eq!(outcome.exit, Exit::Success);
    outcome.run_id.unwrap()
}

#[tokio::test]
async fn an_incremental_refresh_ends_in_the_state_of_a_full_refresh_of_a_copy() {
    let sim = sim().await;
    let incremental = env_for(&sim).await;
    let full = env_for(&sim).await;

    let inc = incremental_scenario(&incremental, false).await;
    let fresh = incremental_scenario(&full, true).await;

    assert_eq!(inc[0].len(), 24, "12 students × 2 ids");
    assert_eq!(inc[0], fresh[0], "after the first incremental run");
    assert_eq!(inc[1], fresh[1], "after the late commit was picked up");

    // Expected values computed here, not by the job: student 5's average on
    // H1MATA01 with the late result 1 (seeded 35, 64; then 1) is 33.33, level E.
    let (score, level): (f64, String) = sqlx::query_as(
        "SELECT score::float8, achievement_level FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys
          WHERE user_id = $1 AND std_sys_id = 'H1MATA01'",
    )
    .bind(fixed_student(5))
    .fetch_one(incremental.pg())
    .await
    .unwrap();
    assert_eq!((score, level.as_str()), (33.33, "E"));
    // Student 1's late upload (solved two days ago) counts: (20 + 49 + 100) / 3.
    let score: f64 = sqlx::query_scalar(
        "SELECT score::float8 FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys WHERE user_id = $1 AND std_sys_id = 'M1MATA02'",
    )
    .bind(fixed_student(1))
    .fetch_one(incremental.pg())
    .await
    .unwrap();
    assert_eq!(score, 56.33);
    // And a full run after the incremental ones finds nothing to change.
    let outcome = incremental.run_full(JOB).await;
    assert_eq!(outcome.exit, Exit::Success);
    let d = details(incremental.pg(), outcome.run_id.unwrap()).await;
    assert_eq!(d["view_refresh"]["rows_changed"], 0, "{d}");
}

#[tokio::test]
async fn an_incremental_refresh_looks_only_at_changed_students_and_a_due_full_one_at_all() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    let pg = env.pg();
    seed_fixed(pg).await;
    env.run_ok(JOB, None, false).await;

    // Student 7's row is made wrong behind the job's back (no source row
    // changes): an incremental run does not look at student 7.
    let tamper =
        "UPDATE tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys SET score = 1, achievement_level = 'E'
                   WHERE user_id = $1 AND std_sys_id = 'M1MATA01'";
    sqlx::query(tamper)
        .bind(fixed_student(7))
        .execute(pg)
        .await
        .unwrap();
    add_result(pg, 0, "01", 3, "now()").await;
    let run = env.run_ok(JOB, None, false).await;
    let d = details(pg, run).await;
    assert_eq!(d["view_refresh"]["mode"], "incremental");
    assert_eq!(d["view_refresh"]["students"], 1);
    let score_of_7 = || async {
        sqlx::query_scalar::<_, f64>(
            "SELECT score::float8 FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys WHERE user_id = $1 AND std_sys_id = 'M1MATA01'",
        )
        .bind(fixed_student(7))
        .fetch_one(pg)
        .await
        .unwrap()
    };
    assert_eq!(score_of_7().await, 1.0, "not recomputed");

    // The last full refresh is 25 hours old: the next run recomputes all.
    sqlx::query("UPDATE batch_view_watermark SET full_refresh_at = now() - interval '25 hours'")
        .execute(pg)
        .await
        .unwrap();
    let run = env.run_ok(JOB, None, false).await;
    let d = details(pg, run).await;
    assert_eq!(d["view_refresh"]["mode"], "full", "{d}");
    // 7 · 7 = 49 and 49 + 29 = 78 (the seed's formula): 63.5.
    assert_eq!(score_of_7().await, 63.5, "repaired by the full refresh");
    assert_eq!(d["view_rows_refreshed"], 1);
}

#[tokio::test]
async fn a_dry_run_does_not_move_the_watermark() {
    let sim = sim().await;
    let env = env_for(&sim).await;
    seed_fixed(env.pg()).await;
    env.run_ok(JOB, None, true).await;
    assert_eq!(
        scalar_i64(env.pg(), "SELECT count(*) FROM batch_view_watermark").await,
        0
    );
    env.run_ok(JOB, None, false).await;
    let before: (DateTime<Utc>, i64) =
        sqlx::query_as("SELECT refreshed_at, max_result_id FROM batch_view_watermark")
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(before.1, 48, "12 students × 4 results");
    add_result(env.pg(), 0, "01", 3, "now()").await;
    let dry = env.run_ok(JOB, None, true).await;
    assert_eq!(details(env.pg(), dry).await["view_refresh"]["students"], 1);
    let after: (DateTime<Utc>, i64) =
        sqlx::query_as("SELECT refreshed_at, max_result_id FROM batch_view_watermark")
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(after, before);
}

/// LMS-01-008 as 4 partitions at once (in this process, each with its own
/// locks and history row); the run ids in partition order.
async fn four_partitions(env: &TestEnv) -> Vec<i64> {
    let def = REGISTRY.find(JOB).unwrap();
    let runs = (0..4).map(|i| {
        let request = RunRequest {
            partition: Partition::new(i, 4),
            params: serde_json::json!({"test": true}),
            ..RunRequest::new(&REGISTRY, def)
        };
        runner::run(env.app.clone(), request)
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|outcome| {
            let outcome = outcome.unwrap();
            assert_eq!(outcome.exit, Exit::Success);
            outcome.run_id.unwrap()
        })
        .collect()
}

/// Everything LMS-01-008 leaves that does not depend on when it ran: the
/// view's values and sent flags, each session's and progress row's sent
/// flags, and the events KERIS accepted (without their timestamps).
async fn dashboard_state(env: &TestEnv, sim: &SimulatorHandle) -> Vec<String> {
    let last_run = scalar_i64(env.pg(), "SELECT max(run_id) FROM batch_job_run").await;
    let view = view_state(env.pg(), last_run)
        .await
        .into_iter()
        .map(|mut row| {
            row.remove(8); // changed by the last run: not comparable
            format!("view {row:?}")
        });
    let flags: Vec<(Uuid, String, bool, bool)> = sqlx::query_as(
        "SELECT user_id, 'session ' || lecture_code, keris_init_sent_at IS NOT NULL, keris_term_sent_at IS NOT NULL
           FROM tb_lms_lrn_session
         UNION ALL
         SELECT user_id, 'progress ' || std_sys_id, keris_sent_at >= upd_dt, false FROM tb_lms_lrn_progress",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    let events = sim
        .requests()
        .into_iter()
        .filter(|r| r.code.as_deref() == Some("00000"))
        .map(|r| {
            let mut body = r.body.unwrap();
            body.as_object_mut().unwrap().remove("timestamp");
            format!("{:?} {body}", r.api)
        });
    let mut state: Vec<String> = view
        .chain(flags.into_iter().map(|f| format!("{f:?}")))
        .chain(events)
        .collect();
    state.sort();
    state
}

#[tokio::test]
async fn four_partitions_of_lms_01_008_end_where_one_run_ends_each_from_its_own_watermark() {
    let (sim_whole, sim_parts) = (sim().await, sim().await);
    let whole = env_for(&sim_whole).await;
    let parts = env_for(&sim_parts).await;
    seed_fixed(whole.pg()).await;
    seed_fixed(parts.pg()).await;
    let partition_of = |i: u128| expected_partition(&fixed_student(i).to_string(), 4);
    let used: BTreeSet<u32> = (0..12).map(partition_of).collect();
    assert!(used.len() >= 3, "the 12 students spread: {used:?}");

    whole.run_ok(JOB, None, false).await;
    let first = four_partitions(&parts).await;
    for (i, run) in first.iter().enumerate() {
        let d = details(parts.pg(), *run).await;
        assert_eq!(d["view_refresh"]["mode"], "full", "{i}: {d}");
        let mine = (0..12).filter(|s| partition_of(*s) == i as u32).count();
        assert_eq!(d["view_rows_refreshed"], 2 * mine, "{i}: {d}");
    }
    let state = dashboard_state(&whole, &sim_whole).await;
    // 24 view rows, 12 sessions, 12 progress rows; events: 12 starts, 12
    // ends, 12 progress, 6 completions, 24 scores.
    assert_eq!(state.len(), 24 + 12 + 12 + 12 + 12 + 12 + 6 + 24);
    assert_eq!(dashboard_state(&parts, &sim_parts).await, state);
    let marks: Vec<String> =
        sqlx::query_scalar("SELECT part FROM batch_view_watermark ORDER BY part")
            .fetch_all(parts.pg())
            .await
            .unwrap();
    assert_eq!(marks, ["0/4", "1/4", "2/4", "3/4"]);

    // Students 0-3 change what the view reads: each partition recomputes
    // only its own changed students, from its own watermark.
    change_students(whole.pg()).await;
    change_students(parts.pg()).await;
    whole.run_ok(JOB, None, false).await;
    let second = four_partitions(&parts).await;
    for (i, run) in second.iter().enumerate() {
        let d = details(parts.pg(), *run).await;
        assert_eq!(d["view_refresh"]["mode"], "incremental", "{i}: {d}");
        let changed = (0..4).filter(|s| partition_of(*s) == i as u32).count();
        assert_eq!(d["view_refresh"]["students"], changed, "{i}: {d}");
    }
    assert_eq!(
        dashboard_state(&parts, &sim_parts).await,
        dashboard_state(&whole, &sim_whole).await
    );
    assert_eq!(unsent(parts.pg()).await, 0);
}
