//! LMS-01-002 (competency indicators) and LMS-01-006 (learning statistics)
//! against real PostgreSQL, and the indexes `migrate` adds for them.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::helpers::*;

async fn exec(pg: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pg).await.unwrap();
}

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";
const C: &str = "00000000-0000-4000-8000-00000000000c";
const E: &str = "00000000-0000-4000-8000-00000000000e";
const F: &str = "00000000-0000-4000-8000-00000000000f";
const TEACHER: &str = "00000000-0000-4000-8000-000000000071";
const DELETED: &str = "00000000-0000-4000-8000-000000000072";
const STALE: &str = "00000000-0000-4000-8000-000000000073";

/// Business date D = 2026-06-30 (KST). Times are written in KST (`+09`).
async fn seed(pg: &PgPool) {
    exec(
        pg,
        &format!(
            "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, user_nm, del_yn) VALUES
               ('{A}', gen_random_uuid(), 'S', 'SC1', 'a', 'N'),
               ('{B}', gen_random_uuid(), 'S', 'SC1', 'b', 'N'),
               ('{C}', gen_random_uuid(), 'S', 'SC1', 'c', 'N'),
               ('{E}', gen_random_uuid(), 'S', 'SC1', 'e', 'N'),
               ('{F}', gen_random_uuid(), 'S', 'SC1', 'f', 'N'),
               ('{TEACHER}', gen_random_uuid(), 'T', 'SC1', 't', 'N'),
               ('{DELETED}', gen_random_uuid(), 'S', 'SC1', NULL, 'Y');
             INSERT INTO tb_lms_lecture_member (lecture_code, user_id) VALUES
               ('L1', '{A}'), ('L2', '{A}'), ('L1', '{B}'), ('L2', '{C}'), ('L3', '{E}'), ('L3', '{F}'),
               ('L1', '{TEACHER}'), ('L1', '{DELETED}');

             INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at) VALUES
               -- A: crosses the start of D (45 min on D)
               ('{A}', 'L1', '2026-06-29 23:30+09', '2026-06-30 00:45+09'),
               -- A: 10:00-11:00 in L1, 10:15-10:45 inside it in L1, 10:30-11:30 in L2
               ('{A}', 'L1', '2026-06-30 10:00+09', '2026-06-30 11:00+09'),
               ('{A}', 'L1', '2026-06-30 10:15+09', '2026-06-30 10:45+09'),
               ('{A}', 'L2', '2026-06-30 10:30+09', '2026-06-30 11:30+09'),
               -- A: crosses the end of D (30 min on D)
               ('{A}', 'L1', '2026-06-30 23:30+09', '2026-07-01 01:00+09'),
               -- B: open since 20:00 on D, last page at 22:40 (2 h 40 min)
               ('{B}', 'L1', '2026-06-30 20:00+09', NULL),
               -- B: open since 18:00 the day before, last page at 02:30 on D (2 h 30 min)
               ('{B}', 'L1', '2026-06-29 18:00+09', NULL),
               -- B: open since 08:00 the day before: over before B's next session, nothing on D
               ('{B}', 'L1', '2026-06-29 08:00+09', NULL),
               -- E: covers the whole of D
               ('{E}', 'L3', '2026-06-29 22:00+09', '2026-07-01 02:00+09'),
               -- F: ends exactly when D starts
               ('{F}', 'L3', '2026-06-29 23:00+09', '2026-06-30 00:00+09'),
               -- the deleted student and the teacher: never counted
               ('{DELETED}', 'L1', '2026-06-30 09:00+09', '2026-06-30 10:00+09'),
               ('{TEACHER}', 'L1', '2026-06-30 09:00+09', '2026-06-30 10:00+09');

             INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at) VALUES
               ('{A}', 'L1', 'I1', 'C1', 'S1', 'Y', 80, '2026-06-30 00:00+09'),
               ('{A}', 'L1', 'I2', 'C1', 'S1', 'N', 40, '2026-06-30 10:10+09'),
               ('{A}', 'L1', 'I1', 'C1', 'S2', 'Y', 90, '2026-06-30 23:59:59+09'),
               ('{A}', 'L2', 'I3', 'C2', 'S3', 'N', 55, '2026-06-30 10:40+09'),
               -- outside D
               ('{A}', 'L1', 'I9', 'C1', 'S9', 'Y', 100, '2026-06-29 23:59:59+09'),
               ('{A}', 'L1', 'I9', 'C1', 'S9', 'Y', 100, '2026-07-01 00:00+09'),
               ('{DELETED}', 'L1', 'I1', 'C1', 'S1', 'Y', 100, '2026-06-30 09:10+09');

             -- B's pages (no results): what ends B's open sessions
             INSERT INTO tb_lms_access_log (user_id, url, accessed_at) VALUES
               ('{B}', '/lms/l1', '2026-06-29 23:00+09'),
               ('{B}', '/lms/l1', '2026-06-30 02:30+09'),
               ('{B}', '/lms/l1', '2026-06-30 22:40+09');

             INSERT INTO tb_lms_assignment (asgn_id, lecture_code, title, due_dt) VALUES
               (1, 'L1', 'due 18:00', '2026-06-30 18:00+09'),
               (2, 'L1', 'due 20:00', '2026-06-30 20:00+09'),
               (3, 'L1', 'due tomorrow', '2026-07-01 09:00+09'),
               (4, 'L2', 'due 12:00', '2026-06-30 12:00+09');
             INSERT INTO tb_lms_assignment_submit (asgn_id, user_id, submit_dt) VALUES
               (1, '{A}', '2026-06-30 17:00+09'),
               (2, '{A}', '2026-06-30 21:00+09'),
               (3, '{A}', '2026-06-30 21:00+09'),
               (1, '{B}', '2026-06-30 18:00+09'),
               (2, '{B}', NULL);

             -- rows of an earlier run: one for a student who is gone, and another day
             INSERT INTO tb_lms_stdnt_cmpt_idx_daily (base_dt, user_id, lrn_time_sec, solved_cnt, attend_yn) VALUES
               ('2026-06-30', '{STALE}', 1, 1, 'Y'), ('2026-06-29', '{A}', 7, 7, 'Y');
             INSERT INTO tb_lms_stdnt_lrn_stats_daily (base_dt, user_id, lecture_code, lrn_time_sec) VALUES
               ('2026-06-30', '{STALE}', 'L1', 1), ('2026-06-29', '{A}', 'L1', 7);"
        ),
    )
    .await;
}

type IndicatorRow = (String, i32, i32, Option<String>, Option<String>, String);

async fn indicators(pg: &PgPool, day: &str) -> Vec<IndicatorRow> {
    sqlx::query_as(
        "SELECT user_id::text, lrn_time_sec, solved_cnt, correct_rate::text, asgn_submit_rate::text, attend_yn
           FROM tb_lms_stdnt_cmpt_idx_daily WHERE base_dt = $1::date ORDER BY user_id",
    )
    .bind(day)
    .fetch_all(pg)
    .await
    .unwrap()
}

type StatsRow = (String, String, i32, i32, i32, Option<String>, i32);

async fn stats(pg: &PgPool, day: &str) -> Vec<StatsRow> {
    sqlx::query_as(
        "SELECT user_id::text, lecture_code, std_sys_cnt, item_cnt, correct_cnt, avg_score::text, lrn_time_sec
           FROM tb_lms_stdnt_lrn_stats_daily WHERE base_dt = $1::date ORDER BY user_id, lecture_code",
    )
    .bind(day)
    .fetch_all(pg)
    .await
    .unwrap()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

const MIN: i32 = 60;
const HOUR: i32 = 3600;

/// A's time per student: 00:00-00:45, 10:00-11:30 (three overlapping
/// sessions of two lectures merged), 23:30-24:00.
const A_TOTAL: i32 = 45 * MIN + 90 * MIN + 30 * MIN;
/// B: 00:00-02:30 (open since 18:00 the day before, last page at 02:30)
/// and 20:00-22:40 (open on D, last page at 22:40).
const B_TOTAL: i32 = 2 * HOUR + 30 * MIN + 2 * HOUR + 40 * MIN;

fn expected_indicators() -> Vec<IndicatorRow> {
    vec![
        // 4 solved on D, 2 correct; due on D in L1/L2: assignments 1, 2, 4,
        // submitted in time only 1 → 1/3.
        (A.into(), A_TOTAL, 4, s("50.00"), s("33.33"), "Y".into()),
        // nothing solved; due 1 and 2, 1 submitted exactly at due_dt → 1/2.
        (B.into(), B_TOTAL, 0, None, s("50.00"), "Y".into()),
        // no activity; assignment 4 due in L2, not submitted → 0.
        (C.into(), 0, 0, None, s("0.00"), "N".into()),
        // the whole day; nothing due in L3.
        (E.into(), 24 * HOUR, 0, None, None, "Y".into()),
        // a session that ended at 00:00 is not on D.
        (F.into(), 0, 0, None, None, "N".into()),
    ]
}

fn expected_stats() -> Vec<StatsRow> {
    vec![
        // L1: S1, S2; I1, I2; 2 correct; (80+40+90)/3; 00:00-00:45, 10:00-11:00, 23:30-24:00.
        (
            A.into(),
            "L1".into(),
            2,
            2,
            2,
            s("70.00"),
            45 * MIN + HOUR + 30 * MIN,
        ),
        // L2: one result, 10:30-11:30.
        (A.into(), "L2".into(), 1, 1, 0, s("55.00"), HOUR),
        (B.into(), "L1".into(), 0, 0, 0, None, B_TOTAL),
        (E.into(), "L3".into(), 0, 0, 0, None, 24 * HOUR),
    ]
}

#[tokio::test]
async fn competency_indicators_and_learning_stats_clip_merge_and_replace_the_day() {
    let env = TestEnv::new().await;
    seed(env.pg()).await;
    let d = Some(date("2026-06-30"));

    // --dry-run writes nothing.
    env.run_ok("LMS-01-002", d, true).await;
    env.run_ok("LMS-01-006", d, true).await;
    assert_eq!(indicators(env.pg(), "2026-06-30").await.len(), 1);
    assert_eq!(stats(env.pg(), "2026-06-30").await.len(), 1);

    env.run_ok("LMS-01-002", d, false).await;
    env.run_ok("LMS-01-006", d, false).await;
    assert_eq!(
        indicators(env.pg(), "2026-06-30").await,
        expected_indicators()
    );
    assert_eq!(stats(env.pg(), "2026-06-30").await, expected_stats());
    // Another day's rows are not touched.
    assert_eq!(indicators(env.pg(), "2026-06-29").await.len(), 1);
    assert_eq!(stats(env.pg(), "2026-06-29").await.len(), 1);

    // B is deleted; the rerun replaces the day exactly.
    exec(
        env.pg(),
        &format!("UPDATE tb_lms_user SET del_yn = 'Y' WHERE user_id = '{B}'"),
    )
    .await;
    env.run_ok("LMS-01-002", d, false).await;
    let run = env.run_ok("LMS-01-006", d, false).await;
    let mut without_b = expected_indicators();
    without_b.retain(|r| r.0 != B);
    assert_eq!(indicators(env.pg(), "2026-06-30").await, without_b);
    let mut without_b = expected_stats();
    without_b.retain(|r| r.0 != B);
    assert_eq!(stats(env.pg(), "2026-06-30").await, without_b);
    let (written, replaced): (i64, i64) = sqlx::query_as(
        "SELECT write_cnt, (details->'written'->>'replaced')::bigint FROM batch_job_run WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!((written, replaced), (3, 4));
}

#[tokio::test]
async fn the_open_session_limits_come_from_each_jobs_own_section() {
    let mut env = TestEnv::new().await;
    seed(env.pg()).await;
    env.configure_job("lms_01_002", "open_session_max_hours", 3);
    env.configure_job("lms_01_006", "open_session_max_hours", 3);
    env.configure_job("lms_01_006", "open_session_idle_minutes", 170);
    let d = Some(date("2026-06-30"));
    env.run_ok("LMS-01-002", d, false).await;
    env.run_ok("LMS-01-006", d, false).await;
    // B: the session opened at 18:00 the day before looks no further than
    // 21:00 then; the one of 20:00 is active until 22:40 (LMS-01-002), at
    // least 170 minutes: 22:50 (LMS-01-006).
    let b: i32 = sqlx::query_scalar(&format!(
        "SELECT lrn_time_sec FROM tb_lms_stdnt_cmpt_idx_daily WHERE base_dt = '2026-06-30' AND user_id = '{B}'"
    ))
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(b, 2 * HOUR + 40 * MIN);
    let b: i32 = sqlx::query_scalar(&format!(
        "SELECT lrn_time_sec FROM tb_lms_stdnt_lrn_stats_daily WHERE base_dt = '2026-06-30' AND user_id = '{B}'"
    ))
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(b, 2 * HOUR + 50 * MIN);
}

async fn index_state(pg: &PgPool, name: &str) -> Option<(bool, bool)> {
    sqlx::query_as(
        "SELECT i.indisvalid, i.indisunique FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
    )
    .bind(name)
    .fetch_optional(pg)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_adds_the_session_activity_and_due_date_indexes_concurrently_and_rebuilds_an_invalid_one(
) {
    let env = TestEnv::new().await;
    // A concurrent build that fails (here: a unique index over duplicate
    // start times) leaves an INVALID index behind under the name.
    exec(
        env.pg(),
        &format!(
            "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at) VALUES
               ('{A}', 'L1', '2026-06-30 10:00+09'), ('{B}', 'L1', '2026-06-30 10:00+09')"
        ),
    )
    .await;
    let failed = sqlx::raw_sql(
        "CREATE UNIQUE INDEX CONCURRENTLY tb_lms_lrn_session_started_idx ON tb_lms_lrn_session (started_at)",
    )
    .execute(env.pg())
    .await;
    assert!(failed.is_err());
    assert_eq!(
        index_state(env.pg(), "tb_lms_lrn_session_started_idx").await,
        Some((false, true))
    );

    for _ in 0..2 {
        let out = env.run_cli(&["migrate"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    for name in [
        "tb_lms_lrn_session_started_idx",
        "tb_lms_lrn_session_ended_idx",
        "tb_lms_assignment_due_idx",
        "tb_lms_lrn_result_user_solved_idx",
        "tb_lms_access_log_user_accessed_idx",
    ] {
        assert_eq!(
            index_state(env.pg(), name).await,
            Some((true, false)),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// Open sessions: ended by the student's last activity

/// A session of the open-session fixture: student, lecture, start, end
/// (None: open), all KST on or around D = 2026-06-30.
type Session = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);
/// Activity: student, lecture (Some: a result in it; None: a page in the
/// access log), time.
type Activity = (&'static str, Option<&'static str>, &'static str);

const G: &str = "00000000-0000-4000-8000-000000000101";
const H: &str = "00000000-0000-4000-8000-000000000102";
const I: &str = "00000000-0000-4000-8000-000000000103";
const J: &str = "00000000-0000-4000-8000-000000000104";
const K: &str = "00000000-0000-4000-8000-000000000105";

fn open_sessions() -> (Vec<Session>, Vec<Activity>) {
    let sessions = vec![
        // G: open at 15:00, results until 15:40, then a new session 16:00-16:30
        // during which a page is opened: 40 + 30 minutes.
        (G, "L1", "2026-06-30 15:00", None),
        (G, "L1", "2026-06-30 16:00", Some("2026-06-30 16:30")),
        // H: open at 09:00, one page at 09:05: at least the idle minutes.
        (H, "L1", "2026-06-30 09:00", None),
        // I: open at 23:30, a result at 00:20 the next day: until midnight on D.
        (I, "L1", "2026-06-30 23:30", None),
        // J: open at 06:00, pages at 11:00 and 20:00 (past the 12 hours).
        (J, "L1", "2026-06-30 06:00", None),
        // K: two tabs, L1 at 08:00 and L2 at 08:30, both open; L2's result at
        // 09:00 and a page at 09:30 come after L2 opened.
        (K, "L1", "2026-06-30 08:00", None),
        (K, "L2", "2026-06-30 08:30", None),
        // K: open the evening before with no activity at all: nothing on D.
        (K, "L1", "2026-06-29 23:40", None),
    ];
    let activity = vec![
        (G, Some("L1"), "2026-06-30 15:20"),
        (G, Some("L1"), "2026-06-30 15:40"),
        (G, None, "2026-06-30 16:10"),
        (H, None, "2026-06-30 09:05"),
        (I, Some("L1"), "2026-07-01 00:20"),
        (J, None, "2026-06-30 11:00"),
        (J, None, "2026-06-30 20:00"),
        (K, Some("L2"), "2026-06-30 09:00"),
        (K, None, "2026-06-30 09:30"),
    ];
    (sessions, activity)
}

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_str(&format!("{s} +0900"), "%Y-%m-%d %H:%M %z")
        .unwrap()
        .into()
}

/// Seconds of the union of `spans`, each cut to `[from, to)`.
fn union_secs(mut spans: Vec<(i64, i64)>, from: i64, to: i64) -> i64 {
    spans.retain_mut(|(s, e)| {
        (*s, *e) = ((*s).max(from), (*e).min(to));
        e > s
    });
    spans.sort();
    let (mut total, mut reach) = (0, i64::MIN);
    for (s, e) in spans {
        if e > reach {
            total += e - s.max(reach);
            reach = e;
        }
    }
    total
}

/// Learning time on D per key (`by_lecture`: student and lecture, else
/// student), computed from the fixture: an open session ends at the
/// student's last activity before the earlier of their next session and 12
/// hours, at least 10 minutes after it opened.
fn expected_time(by_lecture: bool) -> BTreeMap<(String, String), i32> {
    let (sessions, activity) = open_sessions();
    let (from, to) = (
        at("2026-06-30 00:00").timestamp(),
        at("2026-07-01 00:00").timestamp(),
    );
    let mut spans: BTreeMap<(String, String), Vec<(i64, i64)>> = BTreeMap::new();
    for &(user, lecture, start, end) in &sessions {
        let start = at(start).timestamp();
        let end = end.map(|e| at(e).timestamp()).unwrap_or_else(|| {
            let next = sessions
                .iter()
                .filter(|s| s.0 == user && at(s.2).timestamp() > start)
                .map(|s| at(s.2).timestamp())
                .min();
            let limit = (start + 12 * 3600).min(next.unwrap_or(i64::MAX));
            let last = activity
                .iter()
                .filter(|a| a.0 == user)
                .map(|a| at(a.2).timestamp())
                .filter(|&t| t >= start && t < limit)
                .max();
            last.unwrap_or(start).max(start + 600).min(limit)
        });
        let key = (
            user.to_string(),
            if by_lecture { lecture } else { "" }.to_string(),
        );
        spans.entry(key).or_default().push((start, end));
    }
    spans
        .into_iter()
        .map(|(k, v)| (k, union_secs(v, from, to) as i32))
        .filter(|(_, secs)| *secs > 0)
        .collect()
}

async fn seed_open_sessions(pg: &PgPool) {
    let (sessions, activity) = open_sessions();
    for user in [G, H, I, J, K] {
        exec(
            pg,
            &format!(
                "INSERT INTO tb_lms_user (user_id, partner_id, user_type, user_nm) VALUES ('{user}', gen_random_uuid(), 'S', 's');
                 INSERT INTO tb_lms_lecture_member (lecture_code, user_id) VALUES ('L1', '{user}')"
            ),
        )
        .await;
    }
    for (user, lecture, start, end) in sessions {
        sqlx::query("INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at) VALUES ($1::uuid, $2, $3, $4)")
            .bind(user)
            .bind(lecture)
            .bind(at(start))
            .bind(end.map(at))
            .execute(pg)
            .await
            .unwrap();
    }
    for (user, lecture, time) in activity {
        let sql = match lecture {
            Some(_) => "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at)
                        VALUES ($1::uuid, $2, 'I1', 'C1', 'S1', 'Y', 100, $3)",
            None => "INSERT INTO tb_lms_access_log (user_id, url, accessed_at) VALUES ($1::uuid, coalesce($2, '/lms'), $3)",
        };
        sqlx::query(sql)
            .bind(user)
            .bind(lecture)
            .bind(at(time))
            .execute(pg)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn open_sessions_end_at_the_students_last_activity_before_the_next_session_or_after_the_idle_minutes(
) {
    let env = TestEnv::new().await;
    seed_open_sessions(env.pg()).await;
    let d = Some(date("2026-06-30"));
    env.run_ok("LMS-01-002", d, false).await;
    env.run_ok("LMS-01-006", d, false).await;

    let per_student = expected_time(false);
    // Spot checks of the independent computation.
    assert_eq!(per_student[&(G.into(), "".into())], 70 * MIN);
    assert_eq!(per_student[&(H.into(), "".into())], 10 * MIN);
    assert_eq!(per_student[&(I.into(), "".into())], 30 * MIN);
    assert_eq!(per_student[&(J.into(), "".into())], 5 * HOUR);
    assert_eq!(per_student[&(K.into(), "".into())], 70 * MIN);
    let indicators: BTreeMap<(String, String), i32> = sqlx::query_as(
        "SELECT user_id::text, '', lrn_time_sec FROM tb_lms_stdnt_cmpt_idx_daily
          WHERE base_dt = '2026-06-30' AND lrn_time_sec > 0",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .map(|(u, l, t): (String, String, i32)| ((u, l), t))
    .collect();
    assert_eq!(indicators, per_student);

    let per_lecture = expected_time(true);
    assert_eq!(per_lecture[&(K.into(), "L2".into())], HOUR);
    let stats: BTreeMap<(String, String), i32> = sqlx::query_as(
        "SELECT user_id::text, lecture_code, lrn_time_sec FROM tb_lms_stdnt_lrn_stats_daily
          WHERE base_dt = '2026-06-30' AND lrn_time_sec > 0",
    )
    .fetch_all(env.pg())
    .await
    .unwrap()
    .into_iter()
    .map(|(u, l, t): (String, String, i32)| ((u, l), t))
    .collect();
    assert_eq!(stats, per_lecture);
}

#[test]
fn the_replaced_open_session_key_is_refused_naming_the_keys_that_replace_it() {
    for var in [
        "AIDT__JOBS__LMS_01_002__MAX_OPEN_SESSION_HOURS",
        "AIDT__JOBS__BO_01_003__MAX_OPEN_SESSION_HOURS",
    ] {
        let out = bin()
            .args(["bo-01-005", "--dry-run"])
            .env("AIDT_CONFIG_DIR", config_dir())
            .env(var, "12")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = stderr(&out);
        assert!(
            err.contains("max_open_session_hours")
                && err.contains("open_session_max_hours")
                && err.contains("open_session_idle_minutes"),
            "{var}: {err}"
        );
    }
}
