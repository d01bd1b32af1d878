//! LMS-01-003 (KC → standard map), LMS-01-010 (standard-system ids per
//! course) and LCMS-01-001 (the LMS copy of the LCMS content) against real
//! PostgreSQL. Expected maps and copies are written out by hand or computed
//! in SQL here, never by the jobs' code.

use std::collections::BTreeMap;

use aidt_batch::runtime::history::RunStatus;
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
    let mut env = TestEnv::new().await;
    seed_items(env.pg()).await;
    // One pair of three goes: a third of a map this small.
    env.configure_job("lms_01_003", "max_delete_share", 0.5);
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
    let mut env = TestEnv::new().await;
    seed_items(env.pg()).await;
    // One pair of two goes: half of a map this small.
    env.configure_job("lms_01_010", "max_delete_share", 0.5);
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
    let rerun = env.run_ok("LMS-01-010", None, false).await;
    assert_eq!(
        map_rows(env.pg(), "tb_lms_course_std_sys", "course_id").await,
        after,
        "a rerun changes nothing"
    );
    assert_eq!(run_row(env.pg(), rerun).await.1, 0);
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

/// The maps after LMS-01-003 and LMS-01-010 have run over `seed_items`.
async fn built_maps(env: &TestEnv) -> (MapRows, MapRows) {
    (
        map_rows(env.pg(), "tb_lms_kc_std_map", "kc_id").await,
        map_rows(env.pg(), "tb_lms_course_std_sys", "course_id").await,
    )
}

#[tokio::test]
async fn std_maps_refuse_to_lose_more_than_the_share_or_empty_unless_allowed() {
    let mut env = TestEnv::new().await;
    seed_items(env.pg()).await;
    for job in ["LMS-01-003", "LMS-01-010"] {
        env.run_job_with(job, None, false, &["--allow-shrink"])
            .await;
    }
    let built = built_maps(&env).await;
    assert_eq!((built.0.len(), built.1.len()), (4, 4));

    // The copy is wiped by something else than LCMS-01-001: no active item.
    exec(env.pg(), "UPDATE tb_lms_content SET use_yn = 'N'").await;
    for (job, table, key) in [
        (
            "LMS-01-003",
            "tb_lms_kc_std_map",
            "jobs.lms_01_003.max_delete_share",
        ),
        (
            "LMS-01-010",
            "tb_lms_course_std_sys",
            "jobs.lms_01_010.max_delete_share",
        ),
    ] {
        let outcome = env.run_job(job, None, false).await;
        assert_eq!(outcome.exit, Exit::Failure, "{job}");
        let run_id = outcome.run_id.unwrap();
        assert_eq!(run_status(env.pg(), run_id).await, RunStatus::Failed);
        let error: String =
            sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(env.pg())
                .await
                .unwrap();
        let figures = format!("{table}: would leave no pairs with items (all 4 removed, 100.0%)");
        assert!(
            error.contains(&figures) && error.contains(key) && error.contains("--allow-shrink"),
            "{error}"
        );
        assert_eq!(
            env.details(run_id).await["would_change"]["deleted"],
            4,
            "{job}"
        );
    }
    assert_eq!(built_maps(&env).await, built, "nothing was written");

    // Even with every share allowed, emptying needs the flag.
    env.configure_job("lms_01_003", "max_delete_share", 1.0);
    assert_eq!(
        env.run_job("LMS-01-003", None, false).await.exit,
        Exit::Failure
    );

    // One pair of four gone (25%) passes a share of 0.3, not the default.
    exec(
        env.pg(),
        "UPDATE tb_lms_content SET use_yn = 'Y' WHERE content_id <> 'C4';
         UPDATE tb_lms_item SET use_yn = 'N' WHERE item_id = 'i06'",
    )
    .await;
    assert_eq!(
        env.run_job("LMS-01-010", None, false).await.exit,
        Exit::Failure
    );
    env.configure_job("lms_01_010", "max_delete_share", 0.3);
    env.run_ok("LMS-01-010", None, false).await;
    assert_eq!(
        map_rows(env.pg(), "tb_lms_course_std_sys", "course_id")
            .await
            .len(),
        3
    );

    // --allow-shrink applies the emptying.
    exec(env.pg(), "UPDATE tb_lms_content SET use_yn = 'N'").await;
    for job in ["LMS-01-003", "LMS-01-010"] {
        let outcome = env
            .run_job_with(job, None, false, &["--allow-shrink"])
            .await;
        assert_eq!(outcome.exit, Exit::Success, "{job}");
    }
    let emptied = built_maps(&env).await;
    assert!(emptied.0.is_empty() && emptied.1.is_empty());
    // An empty map stays empty without complaint.
    assert_eq!(
        env.run_job("LMS-01-003", None, false).await.exit,
        Exit::Success
    );
}

// ---------------------------------------------------------------------------
// LCMS-01-001

const ITEM_COLS: &str =
    "item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt";
const CONTENT_COLS: &str = "content_id, course_id, content_type, title, use_yn, mod_dt";

/// Every row of `table` (columns `cols`, ordered by the first) as text.
async fn rows_text(pg: &PgPool, table: &str, cols: &str) -> Vec<String> {
    let key = cols.split(',').next().unwrap();
    sqlx::query_scalar(&format!(
        "SELECT row({cols})::text FROM {table} ORDER BY {key}"
    ))
    .fetch_all(pg)
    .await
    .unwrap()
}

/// The copy as it should be: every source row as it is, plus the rows the
/// copy had that the source no longer has, with use_yn = 'N'.
async fn assert_copy_matches(source: &PgPool, lms: &PgPool, gone: &[&str]) {
    for (src, dst, cols) in [
        ("tb_lcms_content", "tb_lms_content", CONTENT_COLS),
        ("tb_lcms_item", "tb_lms_item", ITEM_COLS),
    ] {
        let key = cols.split(',').next().unwrap();
        let expected = rows_text(source, src, cols).await;
        let copied: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT row({cols})::text FROM {dst} WHERE NOT ({key} = ANY($1)) ORDER BY {key}"
        ))
        .bind(gone)
        .fetch_all(lms)
        .await
        .unwrap();
        assert_eq!(copied.len(), expected.len(), "{dst}");
        assert!(copied == expected, "{dst} differs from {src}");
    }
    let unused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT content_id AS id, use_yn FROM tb_lms_content
                               UNION ALL SELECT item_id, use_yn FROM tb_lms_item) x
          WHERE id = ANY($1) AND use_yn = 'N'",
    )
    .bind(gone)
    .fetch_one(lms)
    .await
    .unwrap();
    assert_eq!(
        unused,
        gone.len() as i64,
        "rows gone from the LCMS are kept with use_yn = 'N'"
    );
}

async fn watermarks(pg: &PgPool) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("SELECT source_table, max_mod_dt FROM batch_lcms_watermark ORDER BY 1")
        .fetch_all(pg)
        .await
        .unwrap()
}

fn kst(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&format!("2026-06-30T{s}+09:00"))
        .unwrap()
        .into()
}

/// LCMS rows (with text that COPY must escape: tabs, newlines, backslashes,
/// quotes, commas and NULLs inside arrays) and an LMS copy that is partly
/// stale, partly gone from the LCMS.
pub(crate) async fn seed_lcms(source: &PgPool, lms: &PgPool) {
    exec(
        source,
        r#"INSERT INTO tb_lcms_content (content_id, course_id, content_type, title, use_yn, mod_dt) VALUES
             ('CA', 'CRS-1', 'LESSON', E'tab\there\nnew line \\ back', 'Y', '2026-06-30 10:00+09'),
             ('CB', 'CRS-1', 'VIDEO', '따옴표 "q" ''s''', 'N', '2026-06-30 10:00+09');
           INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt) VALUES
             ('IA1', 'CA', 'M', 2, '{S1}', '{K1}', 'Y', '2026-06-30 09:00+09'),
             ('IA2', 'CA', 'S', 3, '{S1,NULL,"S,2"}', '{"q\"x","a b",NULL}', 'N', '2026-06-30 10:00+09'),
             ('IB1', 'CB', 'E', 5, '{}', '{}', 'Y', '2026-06-30 10:00+09');"#,
    )
    .await;
    exec(
        lms,
        "INSERT INTO tb_lms_content (content_id, course_id, content_type, title, use_yn, mod_dt, sync_dt) VALUES
           ('CA', 'CRS-1', 'LESSON', 'old title', 'Y', '2026-06-30 08:00+09', '2026-01-01 00:00+09'),
           ('CZ', 'CRS-9', 'LESSON', 'gone', 'Y', '2026-06-01 08:00+09', '2026-01-01 00:00+09');
         INSERT INTO tb_lms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt, sync_dt) VALUES
           ('IA1', 'CA', 'M', 2, '{S1}', '{K1}', 'Y', '2026-06-30 09:00+09', '2026-01-01 00:00+09'),
           ('IZ', 'CZ', 'M', 1, '{S1}', '{K1}', 'Y', '2026-06-01 08:00+09', '2026-01-01 00:00+09'),
           ('IY', 'CZ', 'M', 1, '{S1}', '{K1}', 'N', '2026-06-01 08:00+09', '2026-01-01 00:00+09');",
    )
    .await;
}

/// The fixtures of `seed_lcms` retire one row in use of two: half of a copy
/// this small. The guard against that has tests of its own.
fn allow_any_retired_share(env: &mut TestEnv) {
    env.configure(|s| s.jobs.lcms_copy.max_retire_share = 1.0);
}

async fn sync_dt(pg: &PgPool, item: &str) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT sync_dt FROM tb_lms_item WHERE item_id = $1")
        .bind(item)
        .fetch_one(pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn lcms_copy_upserts_changed_rows_marks_removed_ones_and_rereads_the_overlap() {
    let mut env = TestEnv::new().await;
    allow_any_retired_share(&mut env);
    seed_lcms(env.pg(), env.pg()).await;
    let before = rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await;

    let dry = env.run_ok("LCMS-01-001", None, true).await;
    assert_eq!(
        rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await,
        before,
        "dry run writes nothing"
    );
    assert!(watermarks(env.pg()).await.is_empty());
    let (_, written, _, details) = run_row(env.pg(), dry).await;
    assert_eq!(written, 0);
    assert_eq!(details["would_copy"]["tb_lms_item"]["inserted"], 2);

    // First run: no watermark, everything read.
    let first = env.run_ok("LCMS-01-001", None, false).await;
    assert_copy_matches(env.pg(), env.pg(), &["CZ", "IZ", "IY"]).await;
    assert_eq!(
        sync_dt(env.pg(), "IA1").await,
        "2025-12-31T15:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        "an unchanged row keeps its sync_dt"
    );
    assert_eq!(
        sync_dt(env.pg(), "IY").await,
        sync_dt(env.pg(), "IA1").await,
        "a row already unused is not touched"
    );
    let (read, written, skipped, details) = run_row(env.pg(), first).await;
    // Contents: CA updated, CB inserted, CZ marked; items: IA2, IB1 inserted, IZ marked, IA1 unchanged.
    assert_eq!((read, written, skipped), (5, 6, 1));
    assert_eq!(details["mode"], "full (no watermark yet)");
    assert_eq!(details["source"], "database.url (the LMS database)");
    assert_eq!(
        watermarks(env.pg()).await,
        [
            ("tb_lcms_content".to_string(), kst("10:00:00")),
            ("tb_lcms_item".to_string(), kst("10:00:00"))
        ]
    );

    // After the run: a row committed with the watermark's own timestamp, one
    // committed late with an older mod_dt inside the overlap (3600 s), one
    // older than the overlap, a change and a deletion.
    exec(
        env.pg(),
        "INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, use_yn, mod_dt) VALUES
           ('IC1', 'CA', 'M', 1, 'Y', '2026-06-30 10:00+09'),
           ('IC2', 'CA', 'M', 1, 'Y', '2026-06-30 09:00:00.000001+09'),
           ('IC3', 'CA', 'M', 1, 'Y', '2026-06-30 08:59:59.999999+09');
         UPDATE tb_lcms_item SET difficulty = 4, mod_dt = '2026-06-30 11:00+09' WHERE item_id = 'IA1';
         DELETE FROM tb_lcms_item WHERE item_id = 'IB1';",
    )
    .await;
    let ia2_synced = sync_dt(env.pg(), "IA2").await;
    let second = env.run_ok("LCMS-01-001", None, false).await;
    let (read, written, skipped, details) = run_row(env.pg(), second).await;
    // Read mod_dt >= 09:00: contents CA, CB (unchanged); items IA1 (updated),
    // IA2 (unchanged), IC1, IC2 (inserted); IB1 marked unused; IC3 not read.
    assert_eq!((read, written, skipped), (6, 4, 3));
    assert_eq!(details["mode"], "incremental");
    assert_eq!(
        details["copied"]["tb_lms_item"]["since"],
        "2026-06-30T00:00:00Z"
    );
    assert_eq!(sync_dt(env.pg(), "IA2").await, ia2_synced);
    let ic3: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_lms_item WHERE item_id = 'IC3'")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(ic3, 0, "older than the overlap: left for --full");
    assert_eq!(watermarks(env.pg()).await[1].1, kst("11:00:00"));

    let full = env
        .run_job_with("LCMS-01-001", None, false, &["--full"])
        .await;
    assert_eq!(full.exit, Exit::Success);
    assert_copy_matches(env.pg(), env.pg(), &["CZ", "IZ", "IY", "IB1"]).await;
    let (_, written, _, _) = run_row(env.pg(), full.run_id.unwrap()).await;
    assert_eq!(written, 1, "only IC3");

    let again = env.run_ok("LCMS-01-001", None, false).await;
    let (_, written, _, _) = run_row(env.pg(), again).await;
    assert_eq!(written, 0, "a rerun writes nothing");
}

/// An LCMS database of its own: a second fresh database, as the helpers make them.
pub(crate) async fn with_separate_source(env: &mut TestEnv) -> TestEnv {
    let source = TestEnv::new().await;
    let url = url_for(&source.pg_name);
    env.configure(|s| s.jobs.lcms_copy.source_url = Some(secrecy::SecretString::from(url)));
    source
}

#[tokio::test]
async fn lcms_copy_reads_a_separate_lcms_database_when_source_url_is_set() {
    let mut env = TestEnv::new().await;
    allow_any_retired_share(&mut env);
    let source = with_separate_source(&mut env).await;
    seed_lcms(source.pg(), env.pg()).await;
    // The LMS database's own LCMS tables hold something else: not read.
    exec(
        env.pg(),
        "INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, mod_dt) VALUES ('LOCAL', 'CA', 'M', 1, now())",
    )
    .await;

    let run = env.run_ok("LCMS-01-001", None, false).await;
    assert_copy_matches(source.pg(), env.pg(), &["CZ", "IZ", "IY"]).await;
    let (read, written, skipped, details) = run_row(env.pg(), run).await;
    assert_eq!((read, written, skipped), (5, 6, 1));
    assert_eq!(details["source"], "jobs.lcms_copy.source_url");

    exec(
        source.pg(),
        "UPDATE tb_lcms_content SET title = E'x\\ty', mod_dt = '2026-06-30 12:00+09' WHERE content_id = 'CB';
         DELETE FROM tb_lcms_item WHERE item_id = 'IA1';",
    )
    .await;
    let second = env.run_ok("LCMS-01-001", None, false).await;
    // CB updated, IA1 marked unused.
    assert_copy_matches(source.pg(), env.pg(), &["CZ", "IZ", "IY", "IA1"]).await;
    let (_, written, _, _) = run_row(env.pg(), second).await;
    assert_eq!(written, 2);
}

/// Runs LCMS-01-001 as a process from a separate source of 300,000 items,
/// SIGKILLs it once the LMS side is receiving rows (into the staging table,
/// or, with `empty_copy`, straight into the empty copy), then reruns it: the
/// killed run left nothing, and the rerun reaches the state one clean run
/// reaches.
async fn kill_mid_copy_then_rerun(empty_copy: bool) {
    let env = TestEnv::new().await;
    let source = TestEnv::new().await;
    let source_url = url_for(&source.pg_name);
    seed_lcms(source.pg(), env.pg()).await;
    let gone: &[&str] = if empty_copy {
        exec(
            env.pg(),
            "DELETE FROM tb_lms_item; DELETE FROM tb_lms_content",
        )
        .await;
        &[]
    } else {
        &["CZ", "IZ", "IY"]
    };
    exec(
        source.pg(),
        "INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt)
         SELECT 'BULK-' || lpad(g::text, 7, '0'), 'CA', 'M', 1 + g % 5, ARRAY['S' || g % 7], ARRAY['K' || g % 11, NULL],
                CASE WHEN g % 10 = 0 THEN 'N' ELSE 'Y' END, timestamptz '2026-06-30 10:00+09' - make_interval(secs => g % 5000)
           FROM generate_series(1, 300000) g;",
    )
    .await;
    let before_items = rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await;
    let before_contents = rows_text(env.pg(), "tb_lms_content", CONTENT_COLS).await;

    let mut child = env
        .command(&["lcms-01-001"])
        .env("AIDT__JOBS__LCMS_COPY__SOURCE_URL", &source_url)
        .env("AIDT__JOBS__LCMS_COPY__MAX_RETIRE_SHARE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Mid-copy: the LMS side has received items.
    env.wait_until(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_copy p JOIN pg_database d ON d.oid = p.datid
                             WHERE d.datname = '{}' AND p.command = 'COPY FROM' AND p.tuples_processed > 1000)",
            env.pg_name
        ),
        std::time::Duration::from_secs(60),
    )
    .await;
    signal(child.id(), "KILL");
    child.wait().unwrap();

    assert_eq!(
        rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await,
        before_items,
        "nothing of the killed run committed"
    );
    assert_eq!(
        rows_text(env.pg(), "tb_lms_content", CONTENT_COLS).await,
        before_contents
    );
    assert!(watermarks(env.pg()).await.is_empty());

    let out = env
        .command(&["lcms-01-001"])
        .env("AIDT__JOBS__LCMS_COPY__SOURCE_URL", &source_url)
        .env("AIDT__JOBS__LCMS_COPY__MAX_RETIRE_SHARE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_copy_matches(source.pg(), env.pg(), gone).await;
    let runs: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT status, details FROM batch_job_run WHERE job_id = 'LCMS-01-001' ORDER BY run_id",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    let statuses: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        statuses,
        ["FAILED", "COMPLETED"],
        "the killed run is found stale and marked FAILED"
    );
    assert_eq!(
        runs[1].1["copied"]["tb_lms_item"]["into_empty_copy"], empty_copy,
        "the rerun takes the same path"
    );
    assert_eq!(
        watermarks(env.pg()).await,
        [
            ("tb_lcms_content".to_string(), kst("10:00:00")),
            ("tb_lcms_item".to_string(), kst("10:00:00"))
        ]
    );
}

#[tokio::test]
async fn lcms_copy_killed_mid_copy_leaves_the_previous_copy_and_a_rerun_completes_it() {
    kill_mid_copy_then_rerun(false).await;
}

#[tokio::test]
async fn lcms_first_copy_killed_mid_copy_leaves_the_copy_empty_and_a_rerun_completes_it() {
    kill_mid_copy_then_rerun(true).await;
}

/// `contents` contents of 10 items each, all in use, in the LCMS tables of
/// `pg`; item `ITM-<c>-<i>` (`c`, `i` from 0) of content `CNT-<c>`.
async fn seed_lcms_items(pg: &PgPool, contents: i32) {
    exec(
        pg,
        &format!(
            "INSERT INTO tb_lcms_content (content_id, course_id, content_type, title, use_yn, mod_dt)
             SELECT 'CNT-' || c, 'CRS-1', 'LESSON', 'content ' || c, 'Y', timestamptz '2026-06-30 10:00+09'
               FROM generate_series(0, {contents} - 1) c;
             INSERT INTO tb_lcms_item (item_id, content_id, item_type, difficulty, std_sys_ids, kc_ids, use_yn, mod_dt)
             SELECT 'ITM-' || c || '-' || i, 'CNT-' || c, 'M', 1, '{{S1}}', '{{K1}}', 'Y', timestamptz '2026-06-30 10:00+09'
               FROM generate_series(0, {contents} - 1) c, generate_series(0, 9) i"
        ),
    )
    .await;
}

async fn in_use(pg: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE use_yn = 'Y'"))
        .fetch_one(pg)
        .await
        .unwrap()
}

async fn error_msg(pg: &PgPool, run_id: i64) -> String {
    sqlx::query_scalar("SELECT error_msg FROM batch_job_run WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn lcms_copy_refuses_a_source_that_lost_half_its_rows_unless_allow_shrink_and_applies_a_small_loss(
) {
    let mut env = TestEnv::new().await;
    let source = with_separate_source(&mut env).await;
    seed_lcms_items(source.pg(), 20).await;
    env.run_ok("LCMS-01-001", None, false).await;
    assert_eq!(in_use(env.pg(), "tb_lms_item").await, 200);

    // Half of the items vanish from the LCMS (a truncated table).
    exec(
        source.pg(),
        "DELETE FROM tb_lcms_item WHERE right(item_id, 1) < '5'",
    )
    .await;
    let copy = rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await;
    let marks = watermarks(env.pg()).await;
    let outcome = env.run_job("LCMS-01-001", None, false).await;
    assert_eq!(outcome.exit, Exit::Failure);
    let run_id = outcome.run_id.unwrap();
    assert_eq!(run_status(env.pg(), run_id).await, RunStatus::Failed);
    let error = error_msg(env.pg(), run_id).await;
    assert!(
        error.contains("tb_lms_item: would remove 100 of 200 items in use (50.0%)")
            && error
                .contains("(jobs.lcms_copy.max_retire_share allows 10%, and never all of them)")
            && error.contains("--allow-shrink")
            && !error.contains("tb_lms_content:"),
        "{error}"
    );
    assert_eq!(
        env.details(run_id).await["retired"],
        serde_json::json!([{"table": "tb_lms_item", "rows": "items in use",
                            "before": 200, "removed": 100, "after": 100}])
    );
    assert_eq!(
        rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await,
        copy,
        "copy intact"
    );
    assert_eq!(watermarks(env.pg()).await, marks);

    // The operator confirms: applied.
    let outcome = env
        .run_job_with("LCMS-01-001", None, false, &["--allow-shrink"])
        .await;
    assert_eq!(outcome.exit, Exit::Success);
    let gone: Vec<String> = (0..20)
        .flat_map(|c| (0..5).map(move |i| format!("ITM-{c}-{i}")))
        .collect();
    let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
    assert_copy_matches(source.pg(), env.pg(), &gone).await;
    assert_eq!(in_use(env.pg(), "tb_lms_item").await, 100);

    // 5 of the 100 left go, and 1 of the 20 contents is unused in the LCMS
    // now: 5% each, under the share, applied without the flag.
    exec(
        source.pg(),
        "DELETE FROM tb_lcms_item WHERE item_id IN ('ITM-0-5', 'ITM-0-6', 'ITM-0-7', 'ITM-0-8', 'ITM-0-9');
         UPDATE tb_lcms_content SET use_yn = 'N', mod_dt = '2026-06-30 11:00+09' WHERE content_id = 'CNT-1'",
    )
    .await;
    let run_id = env.run_ok("LCMS-01-001", None, false).await;
    assert_eq!(in_use(env.pg(), "tb_lms_item").await, 95);
    assert_eq!(in_use(env.pg(), "tb_lms_content").await, 19);
    assert_eq!(
        env.details(run_id).await["copied"]["tb_lms_content"]["retired"],
        1
    );
}

#[tokio::test]
async fn lcms_copy_refuses_an_emptied_source_whatever_the_share_and_writes_nothing() {
    let mut env = TestEnv::new().await;
    // 1,936 items in use, as where this was found.
    seed_lcms_items(env.pg(), 194).await;
    exec(
        env.pg(),
        "DELETE FROM tb_lcms_item WHERE item_id IN ('ITM-0-0', 'ITM-0-1', 'ITM-0-2', 'ITM-0-3')",
    )
    .await;
    env.run_ok("LCMS-01-001", None, false).await;
    assert_eq!(in_use(env.pg(), "tb_lms_item").await, 1936);

    exec(
        env.pg(),
        "DELETE FROM tb_lcms_item; DELETE FROM tb_lcms_content",
    )
    .await;
    env.configure(|s| s.jobs.lcms_copy.max_retire_share = 1.0);
    let items = rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await;
    let contents = rows_text(env.pg(), "tb_lms_content", CONTENT_COLS).await;
    for dry_run in [true, false] {
        let outcome = env.run_job("LCMS-01-001", None, dry_run).await;
        assert_eq!(outcome.exit, Exit::Failure);
        let error = error_msg(env.pg(), outcome.run_id.unwrap()).await;
        assert!(
            error.contains(
                "tb_lms_content: would leave no contents in use (all 194 removed, 100.0%)"
            ) && error
                .contains("tb_lms_item: would leave no items in use (all 1,936 removed, 100.0%)"),
            "{error}"
        );
    }
    assert_eq!(rows_text(env.pg(), "tb_lms_item", ITEM_COLS).await, items);
    assert_eq!(
        rows_text(env.pg(), "tb_lms_content", CONTENT_COLS).await,
        contents
    );

    // What the maps then read is intact too.
    exec(
        env.pg(),
        "INSERT INTO tb_lms_std_sys VALUES ('S1', '[4수01-01]', 'MAT', 'E', 's1')",
    )
    .await;
    env.run_job_with("LMS-01-003", None, false, &[]).await;
    let pairs: i32 = sqlx::query_scalar("SELECT item_cnt FROM tb_lms_kc_std_map")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(pairs, 1936);
}

/// The first copy into an empty LMS copy (rows straight in), an
/// incremental run after it, and a copy emptied later with its watermark
/// still there: read in full again.
async fn first_copy_into_an_empty_copy(env: &TestEnv, source: &PgPool) {
    seed_lcms(source, env.pg()).await;
    exec(
        env.pg(),
        "DELETE FROM tb_lms_item; DELETE FROM tb_lms_content",
    )
    .await;

    let dry = env.run_ok("LCMS-01-001", None, true).await;
    assert!(rows_text(env.pg(), "tb_lms_item", ITEM_COLS)
        .await
        .is_empty());
    assert!(watermarks(env.pg()).await.is_empty());
    let (_, written, _, details) = run_row(env.pg(), dry).await;
    assert_eq!(written, 0);
    assert_eq!(details["would_copy"]["tb_lms_item"]["inserted"], 3);

    let first = env.run_ok("LCMS-01-001", None, false).await;
    assert_copy_matches(source, env.pg(), &[]).await;
    let (read, written, skipped, details) = run_row(env.pg(), first).await;
    // 2 contents + 3 items, each written once.
    assert_eq!((read, written, skipped), (5, 5, 0));
    assert_eq!(details["mode"], "full (no watermark yet)");
    for table in ["tb_lms_content", "tb_lms_item"] {
        let report = &details["copied"][table];
        assert_eq!(report["into_empty_copy"], true, "{table}");
        assert_eq!(report["marked_unused"], 0, "{table}");
    }
    // sync_dt: the run's transaction time, one value for every row.
    let (stamps, min_sync): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT count(DISTINCT sync_dt), min(sync_dt) FROM
           (SELECT sync_dt FROM tb_lms_item UNION ALL SELECT sync_dt FROM tb_lms_content) x",
    )
    .fetch_one(env.pg())
    .await
    .unwrap();
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT started_at FROM batch_job_run WHERE run_id = $1")
            .bind(first)
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(stamps, 1);
    assert!(min_sync >= started, "{min_sync} vs run start {started}");
    assert_eq!(
        watermarks(env.pg()).await,
        [
            ("tb_lcms_content".to_string(), kst("10:00:00")),
            ("tb_lcms_item".to_string(), kst("10:00:00"))
        ]
    );

    let again = env.run_ok("LCMS-01-001", None, false).await;
    let (_, written, _, details) = run_row(env.pg(), again).await;
    assert_eq!(written, 0, "a rerun writes nothing");
    assert_eq!(details["mode"], "incremental");
    assert_eq!(details["copied"]["tb_lms_item"]["into_empty_copy"], false);

    // The items' copy emptied (the contents' kept): with a watermark, the
    // items are still read in full, else those before it would never return.
    exec(env.pg(), "DELETE FROM tb_lms_item").await;
    let refill = env.run_ok("LCMS-01-001", None, false).await;
    assert_copy_matches(source, env.pg(), &[]).await;
    let (_, written, _, details) = run_row(env.pg(), refill).await;
    assert_eq!(written, 3);
    assert_eq!(
        details["mode"],
        "incremental (contents), full (the copy is empty) (items)"
    );
    assert_eq!(
        details["copied"]["tb_lms_item"]["since"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn lcms_first_copy_from_the_lms_database_goes_straight_into_the_empty_copy() {
    let env = TestEnv::new().await;
    first_copy_into_an_empty_copy(&env, env.pg()).await;
}

#[tokio::test]
async fn lcms_first_copy_from_a_separate_database_goes_straight_into_the_empty_copy() {
    let mut env = TestEnv::new().await;
    let source = with_separate_source(&mut env).await;
    first_copy_into_an_empty_copy(&env, source.pg()).await;
}

#[tokio::test]
async fn lcms_copy_with_an_unreachable_source_exits_1_naming_the_key_never_the_url() {
    let env = TestEnv::new().await;
    let secret = "S3cr3t-lcms-pw";
    let url = format!("postgres://lcms_reader:{secret}@127.0.0.1:1/lcms?sslmode=disable");
    let out = env
        .command(&["lcms-01-001"])
        .env("AIDT__JOBS__LCMS_COPY__SOURCE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs.lcms_copy.source_url"), "{err}");
    assert!(
        !err.contains(secret) && !err.contains("lcms_reader"),
        "{err}"
    );
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, error_msg FROM batch_job_run WHERE job_id = 'LCMS-01-001'")
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(status, "FAILED");
    assert!(
        error.contains("jobs.lcms_copy.source_url") && !error.contains(secret),
        "{error}"
    );

    let bad = env
        .command(&["lcms-01-001"])
        .env(
            "AIDT__JOBS__LCMS_COPY__SOURCE_URL",
            format!("not a url {secret}"),
        )
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(!stderr(&bad).contains(secret), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("jobs.lcms_copy.source_url"));
}

/// The `lcms` line of `aidt-batch check`'s output.
fn lcms_line(out: &std::process::Output) -> String {
    stdout(out)
        .lines()
        .find(|l| l.starts_with("lcms"))
        .unwrap_or_else(|| panic!("no lcms line: {}", stdout(out)))
        .to_string()
}

#[tokio::test]
async fn check_probes_the_lcms_database_when_source_url_is_set_naming_the_key_never_the_url() {
    let env = TestEnv::new().await;
    // Not set: no line.
    let out = env.command(&["check"]).output().unwrap();
    assert!(
        !stdout(&out).lines().any(|l| l.starts_with("lcms")),
        "{}",
        stdout(&out)
    );

    // Reachable, with the LCMS tables.
    let source = TestEnv::new().await;
    let url = url_for(&source.pg_name);
    let out = env
        .command(&["check"])
        .env("AIDT__JOBS__LCMS_COPY__SOURCE_URL", &url)
        .output()
        .unwrap();
    let line = lcms_line(&out);
    assert!(
        line.contains(" OK ") && line.contains("jobs.lcms_copy.source_url"),
        "{line}"
    );
    assert!(line.contains("tb_lcms_item present"), "{line}");
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !printed.contains(&url) && !printed.contains("aidt:aidt@"),
        "{printed}"
    );

    // Reachable, but not an LCMS database.
    let bare = TestEnv::empty().await;
    let out = env
        .command(&["check"])
        .env("AIDT__JOBS__LCMS_COPY__SOURCE_URL", url_for(&bare.pg_name))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = lcms_line(&out);
    assert!(
        line.contains("FAIL") && line.contains("lacks tb_lcms_content"),
        "{line}"
    );

    // Unreachable, with a password in the URL: FAIL, exit 1, the key named,
    // neither the password nor the user printed.
    let secret = "S3cr3t-lcms-pw";
    let out = env
        .command(&["check"])
        .env(
            "AIDT__JOBS__LCMS_COPY__SOURCE_URL",
            format!("postgres://lcms_reader:{secret}@127.0.0.1:1/lcms?sslmode=disable"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = lcms_line(&out);
    assert!(
        line.contains("FAIL") && line.contains("jobs.lcms_copy.source_url"),
        "{line}"
    );
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !printed.contains(secret) && !printed.contains("lcms_reader"),
        "{printed}"
    );
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("postgresql") && l.contains(" OK ")),
        "the other verdicts stand: {}",
        stdout(&out)
    );
}

#[tokio::test]
async fn the_seeded_world_gives_the_maps_data_errors_to_skip_and_report() {
    let env = TestEnv::new().await;
    aidt_dev::seed::seed(
        &env.app,
        &aidt_dev::seed::SeedArgs::new(200, 100, Some(date("2026-03-05")), 7),
    )
    .await
    .expect("seed succeeds");
    // The planted items (seed/content.rs), found independently of the jobs.
    let planted: Vec<String> = sqlx::query_scalar(
        "SELECT item_id FROM tb_lcms_item WHERE item_id ~ '-ERR-0[1-4]$' ORDER BY 1",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(planted.len(), 4, "{planted:?}");
    let unknown: String = sqlx::query_scalar(
        "SELECT u.code FROM tb_lcms_item, unnest(std_sys_ids) u(code)
          WHERE item_id = $1 AND NOT EXISTS (SELECT 1 FROM tb_lms_std_sys s WHERE s.std_sys_id = u.code)",
    )
    .bind(&planted[0])
    .fetch_one(env.pg())
    .await
    .unwrap();

    env.run_ok("LCMS-01-001", None, false).await;
    for job in ["LMS-01-003", "LMS-01-010"] {
        let run = env.run_ok(job, None, false).await;
        let (_, _, skipped, details) = run_row(env.pg(), run).await;
        let issues = &details["data_issues"];
        assert_eq!(skipped, 1, "{job}: {issues}");
        assert_eq!(
            issues["unknown_std_sys_ids"],
            serde_json::json!({"count": 1, "first": [{"item_id": planted[0], "std_sys_id": unknown}]}),
            "{job}"
        );
        assert_eq!(
            issues["items_with_null_std_sys_ids"],
            serde_json::json!({"count": 1, "first": [planted[2]]}),
            "{job}"
        );
        assert_eq!(issues["items_without_std_sys_ids"]["count"], 0, "{job}");
        if job == "LMS-01-003" {
            assert_eq!(
                issues["items_without_kc_ids"],
                serde_json::json!({"count": 1, "first": [planted[1]]})
            );
            assert_eq!(
                issues["items_with_null_kc_ids"],
                serde_json::json!({"count": 1, "first": [planted[3]]})
            );
        }
    }
}

#[test]
fn a_shrink_share_outside_zero_to_one_is_refused_naming_the_key() {
    for (var, key) in [
        (
            "AIDT__JOBS__LCMS_COPY__MAX_RETIRE_SHARE",
            "jobs.lcms_copy.max_retire_share",
        ),
        (
            "AIDT__JOBS__LMS_01_010__MAX_DELETE_SHARE",
            "max_delete_share",
        ),
    ] {
        let out = bin()
            .args(["bo-01-005", "--dry-run"])
            .env("AIDT_CONFIG_DIR", config_dir())
            .env(var, "1.5")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = stderr(&out);
        assert!(
            err.contains(key) && err.contains("between 0 and 1"),
            "{var}: {err}"
        );
    }
}
