//! BO-01-005, BO-01-001 and BO-01-002 against real PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::helpers::*;

async fn exec(pg: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pg).await.unwrap();
}

async fn notices(pg: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT title, disp_yn FROM tb_bo_notice ORDER BY notice_id")
        .fetch_all(pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn notice_expiry_hides_ended_notices_only_and_a_rerun_changes_nothing() {
    let env = TestEnv::new().await;
    exec(
        env.pg(),
        "INSERT INTO tb_bo_notice (title, disp_yn, disp_start_dt, disp_end_dt) VALUES
           ('ended',         'Y', now() - interval '10 days', now() - interval '1 minute'),
           ('current',       'Y', now() - interval '1 day',   now() + interval '1 day'),
           ('future',        'Y', now() + interval '1 day',   now() + interval '5 days'),
           ('no end',        'Y', now() - interval '1 day',   NULL),
           ('already off',   'N', now() - interval '9 days',  now() - interval '2 days')",
    )
    .await;
    let before = notices(env.pg()).await;

    // Dry run: reports one, changes nothing.
    let run = env.run_ok("BO-01-005", None, true).await;
    assert_eq!(notices(env.pg()).await, before);
    let (read, written, details): (i64, i64, serde_json::Value) =
        sqlx::query_as("SELECT read_cnt, write_cnt, details FROM batch_job_run WHERE run_id = $1")
            .bind(run)
            .fetch_one(env.pg())
            .await
            .unwrap();
    assert_eq!((read, written), (1, 0));
    assert_eq!(details["would_hide"].as_array().unwrap().len(), 1);

    env.run_ok("BO-01-005", None, false).await;
    let after = notices(env.pg()).await;
    let expect = [
        ("ended", "N"),
        ("current", "Y"),
        ("future", "Y"),
        ("no end", "Y"),
        ("already off", "N"),
    ];
    assert_eq!(after, expect.map(|(t, y)| (t.to_string(), y.to_string())));

    let rerun = env.run_ok("BO-01-005", None, false).await;
    assert_eq!(notices(env.pg()).await, after);
    let written: i64 = sqlx::query_scalar("SELECT write_cnt FROM batch_job_run WHERE run_id = $1")
        .bind(rerun)
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(written, 0);
}

#[tokio::test]
async fn notice_expiry_with_a_past_date_judges_as_of_the_end_of_that_day() {
    let env = TestEnv::new().await;
    exec(
        env.pg(),
        "INSERT INTO tb_bo_notice (title, disp_yn, disp_end_dt) VALUES
           ('ended 2026-03-04', 'Y', '2026-03-04 12:00:00+09'),
           ('ended 2026-03-06', 'Y', '2026-03-06 12:00:00+09')",
    )
    .await;
    env.run_ok("BO-01-005", Some(date("2026-03-05")), false)
        .await;
    let after = notices(env.pg()).await;
    assert_eq!(after[0].1, "N");
    assert_eq!(after[1].1, "Y");
}

async fn admins(pg: &PgPool) -> Vec<(String, String, Option<DateTime<Utc>>)> {
    sqlx::query_as("SELECT login_id, status, status_chg_dt FROM tb_bo_admin_user ORDER BY admin_id")
        .fetch_all(pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_dormancy_marks_only_admins_inactive_past_the_limit() {
    let mut env = TestEnv::new().await;
    exec(
        env.pg(),
        "INSERT INTO tb_bo_admin_user (login_id, admin_nm, approved_at, last_login_at, status) VALUES
           ('idle-login',    'a', now() - interval '60 days', now() - interval '16 days', 'ACTIVE'),
           ('recent-login',  'b', now() - interval '60 days', now() - interval '14 days', 'ACTIVE'),
           ('never-old',     'c', now() - interval '16 days', NULL,                       'ACTIVE'),
           ('never-new',     'd', now() - interval '14 days', NULL,                       'ACTIVE'),
           ('locked',        'e', now() - interval '90 days', now() - interval '80 days', 'LOCKED'),
           ('unapproved',    'f', NULL,                       NULL,                       'ACTIVE'),
           ('reapproved',    'g', now() - interval '3 days',  now() - interval '40 days', 'ACTIVE')",
    )
    .await;

    env.run_ok("BO-01-001", None, true).await;
    assert!(
        admins(env.pg())
            .await
            .iter()
            .all(|(_, s, _)| s != "DORMANT"),
        "dry run changes nothing"
    );

    env.run_ok("BO-01-001", None, false).await;
    let after = admins(env.pg()).await;
    let statuses: Vec<(&str, &str)> = after
        .iter()
        .map(|(l, s, _)| (l.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("idle-login", "DORMANT"),
            ("recent-login", "ACTIVE"),
            ("never-old", "DORMANT"),
            ("never-new", "ACTIVE"),
            ("locked", "LOCKED"),
            ("unapproved", "ACTIVE"),
            ("reapproved", "ACTIVE"),
        ]
    );
    assert!(after[0].2.is_some() && after[1].2.is_none());

    // A rerun leaves the dormant ones (and their change date) alone.
    env.run_ok("BO-01-001", None, false).await;
    assert_eq!(admins(env.pg()).await, after);

    // The limit is configuration.
    env.configure_job("bo_01_001", "inactive_days", 10);
    env.run_ok("BO-01-001", None, false).await;
    let relaxed = admins(env.pg()).await;
    assert_eq!(relaxed[1].1, "DORMANT");
    assert_eq!(relaxed[3].1, "DORMANT");
    assert_eq!(relaxed[6].1, "ACTIVE");
}

async fn windows(pg: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT notice_msg, status FROM tb_bo_pm_schedule ORDER BY pm_id")
        .fetch_all(pg)
        .await
        .unwrap()
}

async fn services(pg: &PgPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT target_sys, maint_yn, maint_msg FROM tb_bo_service_status ORDER BY target_sys",
    )
    .fetch_all(pg)
    .await
    .unwrap()
}

#[tokio::test]
async fn pm_schedule_activates_started_windows_and_finishes_ended_ones() {
    let env = TestEnv::new().await;
    exec(
        env.pg(),
        "INSERT INTO tb_bo_service_status (target_sys, maint_yn) VALUES ('LMS', 'N'), ('BO', 'Y'), ('LCMS', 'N');
         INSERT INTO tb_bo_pm_schedule (target_sys, start_dt, end_dt, notice_msg, status) VALUES
           ('LMS',  now() - interval '5 minutes', now() + interval '1 hour',  'lms pm',       'SCHEDULED'),
           ('BO',   now() - interval '2 hours',   now() - interval '1 minute','bo pm done',   'ACTIVE'),
           ('LCMS', now() - interval '5 minutes', now() + interval '1 hour',  'cancelled',    'CANCELLED'),
           ('LMS',  now() + interval '1 day',     now() + interval '2 days',  'lms later',    'SCHEDULED'),
           ('LCMS', now() - interval '3 hours',   now() - interval '2 hours', 'missed',       'SCHEDULED')",
    )
    .await;
    let before = (windows(env.pg()).await, services(env.pg()).await);

    env.run_ok("BO-01-002", None, true).await;
    assert_eq!(
        (windows(env.pg()).await, services(env.pg()).await),
        before,
        "dry run changes nothing"
    );

    env.run_ok("BO-01-002", None, false).await;
    let w = windows(env.pg()).await;
    let statuses: Vec<&str> = w.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        statuses,
        ["ACTIVE", "DONE", "CANCELLED", "SCHEDULED", "DONE"]
    );
    let s = services(env.pg()).await;
    assert_eq!(
        s,
        [
            ("BO".to_string(), "N".to_string(), None),
            ("LCMS".to_string(), "N".to_string(), None),
            (
                "LMS".to_string(),
                "Y".to_string(),
                Some("lms pm".to_string())
            ),
        ]
    );

    // Every 10 minutes again: nothing changes the second time.
    let upd_before: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT upd_dt FROM tb_bo_service_status ORDER BY target_sys")
            .fetch_all(env.pg())
            .await
            .unwrap();
    let rerun = env.run_ok("BO-01-002", None, false).await;
    assert_eq!(windows(env.pg()).await, w);
    assert_eq!(services(env.pg()).await, s);
    let upd_after: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT upd_dt FROM tb_bo_service_status ORDER BY target_sys")
            .fetch_all(env.pg())
            .await
            .unwrap();
    assert_eq!(upd_before, upd_after);
    let written: i64 = sqlx::query_scalar("SELECT write_cnt FROM batch_job_run WHERE run_id = $1")
        .bind(rerun)
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(written, 0);
}

#[tokio::test]
async fn pm_schedule_keeps_maintenance_on_while_another_window_of_the_system_is_active() {
    let env = TestEnv::new().await;
    exec(
        env.pg(),
        "INSERT INTO tb_bo_service_status (target_sys, maint_yn, maint_msg) VALUES ('LMS', 'Y', 'long pm');
         INSERT INTO tb_bo_pm_schedule (target_sys, start_dt, end_dt, notice_msg, status) VALUES
           ('LMS', now() - interval '2 hours', now() + interval '2 hours', 'long pm',  'ACTIVE'),
           ('LMS', now() - interval '1 hour',  now() - interval '1 minute', 'short pm', 'ACTIVE')",
    )
    .await;
    env.run_ok("BO-01-002", None, false).await;
    assert_eq!(
        windows(env.pg())
            .await
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["ACTIVE", "DONE"]
    );
    assert_eq!(
        services(env.pg()).await,
        [("LMS".into(), "Y".into(), Some("long pm".into()))]
    );
}

#[tokio::test]
async fn pm_schedule_ends_maintenance_whose_window_was_cancelled_deleted_or_postponed_while_active()
{
    let env = TestEnv::new().await;
    // LMS: a window the job activates; BO: one set ACTIVE in the back office
    // (the job did not activate it); DC: one that will be postponed; LCMS:
    // maintenance switched on by hand, with no window at all.
    exec(
        env.pg(),
        "INSERT INTO tb_bo_service_status (target_sys, maint_yn, maint_msg) VALUES
           ('LMS', 'N', NULL), ('BO', 'Y', 'bo pm'), ('LCMS', 'Y', 'by hand');
         INSERT INTO tb_bo_pm_schedule (pm_id, target_sys, start_dt, end_dt, notice_msg, status) VALUES
           (1, 'LMS', now() - interval '5 minutes', now() + interval '1 hour', 'lms pm', 'SCHEDULED'),
           (2, 'BO',  now() - interval '1 hour',    now() + interval '1 hour', 'bo pm',  'ACTIVE'),
           (3, 'DC',  now() - interval '5 minutes', now() + interval '1 hour', 'dc pm',  'SCHEDULED')",
    )
    .await;
    env.run_ok("BO-01-002", None, false).await;
    assert_eq!(
        services(env.pg()).await,
        [
            ("BO".into(), "Y".into(), Some("bo pm".into())),
            ("DC".into(), "Y".into(), Some("dc pm".into())),
            ("LCMS".into(), "Y".into(), Some("by hand".into())),
            ("LMS".into(), "Y".into(), Some("lms pm".into())),
        ]
    );

    // The back office cancels LMS's window, deletes BO's and moves DC's to
    // tomorrow, all while they are ACTIVE.
    exec(
        env.pg(),
        "UPDATE tb_bo_pm_schedule SET status = 'CANCELLED' WHERE pm_id = 1;
         DELETE FROM tb_bo_pm_schedule WHERE pm_id = 2;
         UPDATE tb_bo_pm_schedule SET start_dt = now() + interval '1 day',
                                      end_dt = now() + interval '1 day 1 hour' WHERE pm_id = 3",
    )
    .await;
    let dry = env.run_ok("BO-01-002", None, true).await;
    assert_eq!(
        services(env.pg()).await[3],
        ("LMS".into(), "Y".into(), Some("lms pm".into())),
        "a dry run changes nothing"
    );
    assert_eq!(
        env.details(dry).await["would_change"]["withdrawn"],
        serde_json::json!([1, 2])
    );

    let run = env.run_ok("BO-01-002", None, false).await;
    assert_eq!(
        services(env.pg()).await,
        [
            ("BO".into(), "N".into(), None),
            ("DC".into(), "N".into(), None),
            ("LCMS".into(), "Y".into(), Some("by hand".into())),
            ("LMS".into(), "N".into(), None),
        ],
        "only the systems the windows held come back; a flag set by hand stays"
    );
    assert_eq!(
        windows(env.pg()).await,
        [
            ("lms pm".into(), "CANCELLED".into()),
            ("dc pm".into(), "SCHEDULED".into())
        ]
    );
    let changed = &env.details(run).await["changed"];
    assert_eq!(changed["withdrawn"], serde_json::json!([1, 2]));
    assert_eq!(changed["postponed"], serde_json::json!([3]));
    assert_eq!(
        changed["maintenance_off"],
        serde_json::json!(["BO", "DC", "LMS"])
    );

    // The next runs change nothing until DC's window starts again.
    let rerun = env.run_ok("BO-01-002", None, false).await;
    let written: i64 = sqlx::query_scalar("SELECT write_cnt FROM batch_job_run WHERE run_id = $1")
        .bind(rerun)
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(written, 0);
}
