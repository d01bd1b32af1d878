//! LMS-01-003 (KC → standard map), LMS-01-010 (standard-system ids per
//! course) and LCMS-01-001 (the LMS copy of the LCMS content) against real
//! PostgreSQL. Expected maps and copies are written out by hand or computed
//! in SQL here, never by the jobs' code.

use std::collections::BTreeMap;

use aidt_batch::runtime::Exit;
use sqlx::PgPool;

use crate::helpers::*;

async fn exec(pg: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pg).await.unwrap();
}

async fn run_row(pg: &PgPool, run_id: i64) -> (i64, i64, i64, serde_json::Value) {
    sqlx::query_as(
        "SELECT read_cnt, write_cnt, skip_cnt, details FROM batch_job_run WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pg)
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// LMS-01-003 and LMS-01-010

/// Three known standard-system ids; contents of two courses (one content
/// unused); items covering: several KCs and codes, an unused item, an item of
/// an unused content, empty `kc_ids`, NULL elements and an unknown code, a
/// code and a KC repeated in one item, 24 unknown codes in one item, no code.
async fn seed_items(pg: &PgPool) {
    exec(
        pg,
        "INSERT INTO tb_lms_std_sys VALUES
           ('S1', '[4수01-01]', 'MAT', 'E', 's1'), ('S2', '[4수01-02]', 'MAT', 'E', 's2'),
           ('S3', '[4수01-03]', 'MAT', 'E', 's3');
         INSERT INTO tb_lms_content (content_id, course_id, content_type, title, use_yn, mod_dt) VALUES
           ('C1', 'CRS-1', 'LESSON', 'c1', 'Y', now()), ('C2', 'CRS-1', 'LESSON', 'c2', 'Y', now()),
           ('C3', 'CRS-2', 'LESSON', 'c3', 'Y', now()), ('C4', 'CRS-2', 'LESSON', 'c4', 'N', now());
         INSERT INTO tb_lms_item (item_id, content_id, item_type, difficulty, kc_ids, std_sys_ids, use_yn, mod_dt) VALUES
           ('i01', 'C1', 'M', 1, '{K1,K2}', '{S1}', 'Y', now()),
           ('i02', 'C1', 'M', 1, '{K1}', '{S1,S2}', 'Y', now()),
           ('i03', 'C1', 'M', 1, '{K1}', '{S1}', 'N', now()),
           ('i04', 'C4', 'M', 1, '{K3}', '{S3}', 'Y', now()),
           ('i05', 'C2', 'M', 1, '{}', '{S1}', 'Y', now()),
           ('i06', 'C3', 'M', 1, '{K2,NULL}', '{S2,NULL,XX1}', 'Y', now()),
           ('i07', 'C3', 'M', 1, '{K1,K1}', '{S1,S1}', 'Y', now()),
           ('i08', 'C3', 'M', 1, '{K4}',
              (SELECT array_agg('U' || lpad(g::text, 2, '0') ORDER BY g) FROM generate_series(1, 24) g), 'Y', now()),
           ('i09', 'C2', 'M', 1, '{K5,\" \"}', '{}', 'Y', now());
         INSERT INTO tb_lms_kc_std_map VALUES
           ('K1', 'S1', 3, '2026-01-01 00:00+09'), ('K2', 'S1', 5, '2026-01-01 00:00+09'),
           ('K9', 'S3', 2, '2026-01-01 00:00+09');
         INSERT INTO tb_lms_course_std_sys VALUES
           ('CRS-1', 'S1', 3, '2026-01-01 00:00+09'), ('CRS-2', 'S3', 4, '2026-01-01 00:00+09');",
    )
    .await;
}

type MapRows = BTreeMap<(String, String), (i32, chrono::DateTime<chrono::Utc>)>;

async fn map_rows(pg: &PgPool, table: &str, key: &str) -> MapRows {
    let rows: Vec<(String, String, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(&format!(
        "SELECT {key}, std_sys_id, item_cnt, upd_dt FROM {table}"
    ))
    .fetch_all(pg)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(k, s, n, at)| ((k, s), (n, at)))
        .collect()
}

fn counts_of(rows: &MapRows) -> Vec<(&str, &str, i32)> {
    rows.iter()
        .map(|((k, s), (n, _))| (k.as_str(), s.as_str(), *n))
        .collect()
}

fn old_stamp() -> chrono::DateTime<chrono::Utc> {
    "2025-12-31T15:00:00Z".parse().unwrap()
}

/// The 25 unknown (item, code) pairs, ordered: i06's XX1, then i08's U01..U24.
fn first_unknown_pairs() -> serde_json::Value {
    let mut pairs = vec![serde_json::json!({"item_id": "i06", "std_sys_id": "XX1"})];
    for n in 1..=19 {
        pairs.push(serde_json::json!({"item_id": "i08", "std_sys_id": format!("U{n:02}")}));
    }
    serde_json::Value::Array(pairs)
}

#[tokio::test]
async fn kc_std_map_is_rebuilt_from_active_items_keeping_unchanged_pairs_and_reporting_unknown_codes(
) {
    let env = TestEnv::new().await;
    seed_items(env.pg()).await;
    let before = map_rows(env.pg(), "tb_lms_kc_std_map", "kc_id").await;

    let dry = env.run_ok("LMS-01-003", None, true).await;
    assert_eq!(
        map_rows(env.pg(), "tb_lms_kc_std_map", "kc_id").await,
        before,
        "a dry run changes nothing"
    );
    let (_, written, _, details) = run_row(env.pg(), dry).await;
    assert_eq!(written, 0);
    assert_eq!(
        details["would_change"],
        serde_json::json!({"pairs": 4, "inserted": 2, "updated": 1, "deleted": 1, "unchanged": 1})
    );

    let run = env.run_ok("LMS-01-003", None, false).await;
    let after = map_rows(env.pg(), "tb_lms_kc_std_map", "kc_id").await;
    // i01 {K1,K2}×{S1}, i02 {K1}×{S1,S2}, i06 {K2}×{S2} (NULLs and XX1 ignored),
    // i07 K1×S1 once; i03 and i04 inactive, i05 no KC, i08 only unknown codes, i09 no code.
    assert_eq!(
        counts_of(&after),
        [
            ("K1", "S1", 3),
            ("K1", "S2", 1),
            ("K2", "S1", 1),
            ("K2", "S2", 1)
        ]
    );
    assert_eq!(
        after[&("K1".into(), "S1".into())].1,
        old_stamp(),
        "unchanged pair keeps upd_dt"
    );
    assert!(
        after[&("K2".into(), "S1".into())].1 > old_stamp(),
        "changed count moves upd_dt"
    );

    let (read, written, skipped, details) = run_row(env.pg(), run).await;
    assert_eq!((read, written, skipped), (7, 4, 25));
    assert_eq!(
        details["changed"],
        serde_json::json!({"pairs": 4, "inserted": 2, "updated": 1, "deleted": 1, "unchanged": 1})
    );
    let issues = &details["data_issues"];
    assert_eq!(issues["unknown_std_sys_ids"]["count"], 25);
    assert_eq!(
        issues["unknown_std_sys_ids"]["first"],
        first_unknown_pairs()
    );
    assert_eq!(
        issues["items_with_null_std_sys_ids"],
        serde_json::json!({"count": 1, "first": ["i06"]})
    );
    assert_eq!(
        issues["items_without_std_sys_ids"],
        serde_json::json!({"count": 1, "first": ["i09"]})
    );
    assert_eq!(
        issues["items_without_kc_ids"],
        serde_json::json!({"count": 1, "first": ["i05"]})
    );
    assert_eq!(
        issues["items_with_null_kc_ids"],
        serde_json::json!({"count": 2, "first": ["i06", "i09"]})
    );

    let rerun = env.run_ok("LMS-01-003", None, false).await;
    assert_eq!(
        map_rows(env.pg(), "tb_lms_kc_std_map", "kc_id").await,
        after,
        "a rerun changes nothing"
    );
    let (_, written, skipped, _) = run_row(env.pg(), rerun).await;
    assert_eq!((written, skipped), (0, 25));
}

#[tokio::test]
async fn course_std_sys_is_rebuilt_from_each_courses_active_content_and_items() {
    let env = TestEnv::new().await;
    seed_items(env.pg()).await;
    let before = map_rows(env.pg(), "tb_lms_course_std_sys", "course_id").await;

    env.run_ok("LMS-01-010", None, true).await;
    assert_eq!(
        map_rows(env.pg(), "tb_lms_course_std_sys", "course_id").await,
        before
    );

    let run = env.run_ok("LMS-01-010", None, false).await;
    let after = map_rows(env.pg(), "tb_lms_course_std_sys", "course_id").await;
    // CRS-1: i01, i02, i05 on S1, i02 on S2; CRS-2: i06 on S2, i07 on S1
    // (C4 is unused, so i04's S3 goes; i08's codes are all unknown).
    assert_eq!(
        counts_of(&after),
        [
            ("CRS-1", "S1", 3),
            ("CRS-1", "S2", 1),
            ("CRS-2", "S1", 1),
            ("CRS-2", "S2", 1)
        ]
    );
    assert_eq!(after[&("CRS-1".into(), "S1".into())].1, old_stamp());
    let (read, written, skipped, details) = run_row(env.pg(), run).await;
    assert_eq!((read, written, skipped), (7, 4, 25));
    assert_eq!(
        details["changed"],
        serde_json::json!({"pairs": 4, "inserted": 3, "updated": 0, "deleted": 1, "unchanged": 1})
    );
    assert_eq!(
        details["data_issues"]["unknown_std_sys_ids"]["first"],
        first_unknown_pairs()
    );
    assert!(details["data_issues"].get("items_without_kc_ids").is_none());

    // An item moved to another course's content: counts follow.
    exec(
        env.pg(),
        "UPDATE tb_lms_item SET content_id = 'C3' WHERE item_id = 'i05'",
    )
    .await;
    env.run_ok("LMS-01-010", None, false).await;
    let moved = map_rows(env.pg(), "tb_lms_course_std_sys", "course_id").await;
    assert_eq!(
        counts_of(&moved),
        [
            ("CRS-1", "S1", 2),
            ("CRS-1", "S2", 1),
            ("CRS-2", "S1", 2),
            ("CRS-2", "S2", 1)
        ]
    );
    assert_eq!(
        moved[&("CRS-1".into(), "S2".into())].1,
        after[&("CRS-1".into(), "S2".into())].1,
        "unchanged pair keeps upd_dt"
    );
}

#[tokio::test]
async fn std_maps_empty_when_no_item_is_active() {
    let env = TestEnv::new().await;
    seed_items(env.pg()).await;
    exec(env.pg(), "UPDATE tb_lms_content SET use_yn = 'N'").await;
    env.run_ok("LMS-01-003", None, false).await;
    env.run_ok("LMS-01-010", None, false).await;
    assert!(map_rows(env.pg(), "tb_lms_kc_std_map", "kc_id")
        .await
        .is_empty());
    assert!(map_rows(env.pg(), "tb_lms_course_std_sys", "course_id")
        .await
        .is_empty());
    let outcome = env.run_job("LMS-01-003", None, false).await;
    assert_eq!(outcome.exit, Exit::Success);
}
