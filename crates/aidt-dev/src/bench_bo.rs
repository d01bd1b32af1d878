//! `aidt-dev bench-bo`: a month of LMS logins for the BO statistics
//! benchmark (`scripts/bench-bo`: BO-01-003, BO-01-004, BO-01-007),
//! generated set-based in SQL: `--users` users (90% pupils, 7% teachers
//! with a school, 3% parents without one) in schools of the three levels,
//! and `--logins` sessions spread evenly over the days of `--month`, at
//! school-day hours, 5 minutes to 3 hours long, one in ten left open, some
//! crossing midnight.

use std::time::Instant;

use anyhow::Context as _;
use chrono::{Datelike, Months, NaiveDate};

use aidt_batch::context::AppContext;

/// `aidt-dev bench-bo`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchBoArgs {
    /// Users (tb_lms_user), replacing the table's rows
    #[arg(long, default_value_t = 160_000)]
    pub users: i64,
    /// Login rows (tb_lms_login_hist), replacing the table's rows
    #[arg(long, default_value_t = 5_000_000)]
    pub logins: i64,
    /// The month the logins fall in, as its first day
    #[arg(long, value_name = "YYYY-MM-01", default_value = "2026-03-01")]
    pub month: NaiveDate,
}

pub async fn bench_bo(app: &AppContext, args: &BenchBoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.users >= 100, "--users must be at least 100");
    anyhow::ensure!(
        args.month.day() == 1,
        "--month must be the first day of a month"
    );
    let started = Instant::now();
    let end = args.month + Months::new(1);
    let days = (end - args.month).num_days();
    let mut tx = app.pg.begin().await?;
    sqlx::query("TRUNCATE tb_lms_login_hist, tb_lms_user, tb_lms_school")
        .execute(&mut *tx)
        .await
        .context("Failed to empty the LMS tables (run `aidt-dev schema` first)")?;
    // One school per 160 users, levels E, M, H in turn.
    sqlx::query(
        "INSERT INTO tb_lms_school (school_id, school_nm, school_level)
         SELECT 'BS' || g, '벤치학교' || g, (ARRAY['E', 'M', 'H'])[1 + g % 3]
           FROM generate_series(0, $1::bigint / 160) g",
    )
    .bind(args.users)
    .execute(&mut *tx)
    .await
    .context("Failed to write tb_lms_school")?;
    sqlx::query(
        "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, reg_dt)
         SELECT md5('bench-user-' || g)::uuid, '00000000-0000-0000-0000-000000000001',
                t.user_type, CASE WHEN t.user_type = 'P' THEN NULL ELSE 'BS' || (g / 160) END,
                timestamptz '2025-03-01 00:00+09'
           FROM generate_series(0, $1::bigint - 1) g
          CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 90 THEN 'S' WHEN g % 100 < 97 THEN 'T' ELSE 'P' END
                              AS user_type) t",
    )
    .bind(args.users)
    .execute(&mut *tx)
    .await
    .context("Failed to write tb_lms_user")?;
    // Hours by a 100-bucket table of school-day weights; user, day and
    // minute from multiplicative hashes of the row number.
    sqlx::query(
        "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, logout_at, ip)
         SELECT md5('bench-user-' || u)::uuid,
                CASE WHEN u % 100 < 90 THEN 'S' WHEN u % 100 < 97 THEN 'T' ELSE 'P' END,
                s.at,
                CASE WHEN g % 10 = 0 THEN NULL ELSE s.at + make_interval(mins => (5 + (g * 7919) % 175)::int) END,
                '10.0.' || (g % 250) || '.' || (g % 199)
           FROM generate_series(0, $1::bigint - 1) g
          CROSS JOIN LATERAL (SELECT (g * 2654435761) % $2::bigint AS u) x
          CROSS JOIN LATERAL (
                SELECT $3::timestamptz
                       + make_interval(days => (g % $4)::int)
                       + make_interval(hours => (ARRAY[0,6,7,7,8,8,8,8,9,9,9,9,9,9,9,9,10,10,10,10,10,10,10,10,10,
                                                      11,11,11,11,11,11,11,11,11,12,12,12,12,12,13,13,13,13,13,13,13,
                                                      13,14,14,14,14,14,14,14,14,14,15,15,15,15,15,15,15,16,16,16,16,
                                                      16,17,17,17,17,18,18,18,19,19,19,19,19,20,20,20,20,20,20,21,21,
                                                      21,21,21,22,22,22,22,23,23,23,23,23])[1 + (g * 40503) % 100])
                       + make_interval(secs => (g * 104729) % 3600) AS at) s",
    )
    .bind(args.logins)
    .bind(args.users)
    .bind(aidt_batch::time::start_of_day_seoul(args.month))
    .bind(days)
    .execute(&mut *tx)
    .await
    .context("Failed to write tb_lms_login_hist")?;
    tx.commit().await?;
    sqlx::query("VACUUM ANALYZE tb_lms_login_hist, tb_lms_user, tb_lms_school")
        .execute(&app.pg)
        .await?;
    println!(
        "wrote {} users and {} logins over {} to {} in {:.1} s",
        args.users,
        args.logins,
        args.month,
        end,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
