//! LMS-01-001 against real PostgreSQL.

use sqlx::PgPool;

use crate::helpers::*;

async fn exec(pg: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pg).await.unwrap();
}

async fn count(pg: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pg)
        .await
        .unwrap()
}

/// Rows on both sides of each table's retention, relative to business date
/// 2026-06-30 (Asia/Seoul): access/API logs keep 90 days (cutoff 2026-04-01
/// 00:00 KST), login history 365 days (cutoff 2025-06-30 00:00 KST).
async fn seed(pg: &PgPool) {
    exec(
        pg,
        "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at)
           SELECT gen_random_uuid(), '/old', '10.0.0.1', timestamptz '2026-03-31 23:59:59+09' - make_interval(secs => g) FROM generate_series(0, 249) g;
         INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at)
           SELECT gen_random_uuid(), '/kept', '10.0.0.1', timestamptz '2026-04-01 00:00:00+09' + make_interval(secs => g) FROM generate_series(0, 99) g;
         INSERT INTO tb_lms_api_log (endpoint, status, elapsed_ms, logged_at)
           SELECT '/api/old', 200, 5, timestamptz '2026-01-01 00:00:00+09' FROM generate_series(1, 120);
         INSERT INTO tb_lms_api_log (endpoint, status, elapsed_ms, logged_at)
           SELECT '/api/kept', 200, 5, timestamptz '2026-06-29 00:00:00+09' FROM generate_series(1, 30);
         INSERT INTO tb_lms_login_hist (user_id, user_type, login_at)
           SELECT gen_random_uuid(), 'S', timestamptz '2025-06-29 23:59:59+09' FROM generate_series(1, 40);
         INSERT INTO tb_lms_login_hist (user_id, user_type, login_at)
           SELECT gen_random_uuid(), 'S', timestamptz '2025-06-30 00:00:00+09' FROM generate_series(1, 60);",
    )
    .await;
}

#[tokio::test]
async fn log_cleanup_deletes_only_rows_past_each_tables_retention_in_batches() {
    let mut env = TestEnv::new().await;
    env.configure_job("lms_01_001", "batch_size", 50);
    seed(env.pg()).await;
    let business_date = Some(date("2026-06-30"));

    let dry = env.run_ok("LMS-01-001", business_date, true).await;
    assert_eq!(
        count(env.pg(), "tb_lms_access_log").await,
        350,
        "dry run deletes nothing"
    );
    let details = env.details(dry).await;
    assert_eq!(
        details["would_delete"],
        serde_json::json!({"tb_lms_access_log": 250, "tb_lms_api_log": 120, "tb_lms_login_hist": 40})
    );

    let run = env.run_ok("LMS-01-001", business_date, false).await;
    assert_eq!(count(env.pg(), "tb_lms_access_log").await, 100);
    let kept_urls: Vec<String> = sqlx::query_scalar("SELECT DISTINCT url FROM tb_lms_access_log")
        .fetch_all(env.pg())
        .await
        .unwrap();
    assert_eq!(kept_urls, ["/kept"]);
    assert_eq!(count(env.pg(), "tb_lms_api_log").await, 30);
    assert_eq!(count(env.pg(), "tb_lms_login_hist").await, 60);
    let (written, details): (i64, serde_json::Value) =
        sqlx::query_as("SELECT write_cnt, details FROM batch_job_run WHERE run_id = $1")
            .bind(run)
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!(written, 410);
    assert_eq!(
        details["deleted"],
        serde_json::json!({"tb_lms_access_log": 250, "tb_lms_api_log": 120, "tb_lms_login_hist": 40})
    );

    let rerun = env.run_ok("LMS-01-001", business_date, false).await;
    let written: i64 = sqlx::query_scalar("SELECT write_cnt FROM batch_job_run WHERE run_id = $1")
        .bind(rerun)
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(written, 0);
    assert_eq!(count(env.pg(), "tb_lms_access_log").await, 100);
}

#[tokio::test]
async fn log_cleanup_retention_is_configuration() {
    let mut env = TestEnv::new().await;
    seed(env.pg()).await;
    env.configure_job("lms_01_001", "login_hist_retention_days", 364);
    env.run_ok("LMS-01-001", Some(date("2026-06-30")), false)
        .await;
    // 364 days before 2026-06-30 is 2025-07-01: every login row is now old.
    assert_eq!(count(env.pg(), "tb_lms_login_hist").await, 0);
}

#[tokio::test]
async fn log_cleanup_never_deletes_in_one_statement_more_than_the_batch_size() {
    let env = TestEnv::new().await;
    seed(env.pg()).await;
    let table = aidt_batch::jobs::lms::log_cleanup::log_tables(&Default::default())[0];
    let cutoff = table.cutoff(date("2026-06-30"));
    let n = aidt_batch::jobs::lms::log_cleanup::delete_batch(env.pg(), &table, cutoff, 70)
        .await
        .unwrap();
    assert_eq!(n, 70);
    assert_eq!(count(env.pg(), "tb_lms_access_log").await, 280);
}
