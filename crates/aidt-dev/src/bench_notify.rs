//! Benchmark data of LMS-01-004 (`scripts/bench-notify`), generated in
//! PostgreSQL with `generate_series`, set-based: students in lectures of 30
//! (each in three lectures), one `OPEN` assignment per lecture due within
//! the 24 hours after the end of the business date (so a run `--date D`,
//! which judges as of that instant, finds every one in a window; about 1 in
//! 24 within the hour), as many `CLOSED` ones already past due, submissions
//! for ~30% of the members (another ~10% with a row but no `submit_dt`), and
//! 1% of the students deleted.

use anyhow::Context as _;
use chrono::NaiveDate;

use aidt_batch::context::AppContext;

/// `aidt-dev bench-notify-data`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchNotifyArgs {
    /// Students (lectures of 30, three lectures each)
    #[arg(long, default_value_t = 100_000)]
    pub students: i64,
    /// OPEN assignments, spread over the lectures (and as many CLOSED ones)
    #[arg(long, default_value_t = 10_000)]
    pub assignments: i64,
    /// Business date whose end (00:00 KST the next day) the due times follow
    #[arg(long)]
    pub date: NaiveDate,
}

pub async fn bench_notify_data(app: &AppContext, args: &BenchNotifyArgs) -> anyhow::Result<()> {
    if args.students < 30 || args.assignments < 1 {
        anyhow::bail!("--students must be at least 30 and --assignments at least 1");
    }
    let next = args.date.succ_opt().context("date out of range")?;
    let now = aidt_batch::time::start_of_day_seoul(next);
    let mut tx = app.pg.begin().await?;
    // Lectures per third of the students; lecture codes BL<n>.
    let steps = [
        "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, del_yn)
         SELECT md5('bench-notify-' || s)::uuid, '00000000-0000-0000-0000-0000000000b1', 'S', 'BS' || (s / 600),
                CASE WHEN s % 100 = 99 THEN 'Y' ELSE 'N' END
           FROM generate_series(0, $1 - 1) s",
        "INSERT INTO tb_lms_lecture_member (lecture_code, user_id)
         SELECT 'BL' || (s / 30 + k * (($1 + 29) / 30)), md5('bench-notify-' || s)::uuid
           FROM generate_series(0, $1 - 1) s, generate_series(0, 2) k",
        "INSERT INTO tb_lms_assignment (asgn_id, lecture_code, title, due_dt, status)
         SELECT a, 'BL' || (a % (3 * (($1 + 29) / 30))), '벤치마크 과제 ' || a,
                $3 + make_interval(mins => (a % 1440)::int + 1), 'OPEN'
           FROM generate_series(1, $2) a
         UNION ALL
         SELECT $2 + a, 'BL' || (a % (3 * (($1 + 29) / 30))), '지난 과제 ' || a,
                $3 - make_interval(hours => (a % 48)::int + 1), 'CLOSED'
           FROM generate_series(1, $2) a",
        "INSERT INTO tb_lms_assignment_submit (asgn_id, user_id, submit_dt)
         SELECT a.asgn_id, m.user_id, CASE WHEN x.h < 30 THEN $1::timestamptz - interval '1 hour' END
           FROM tb_lms_assignment a
           JOIN tb_lms_lecture_member m USING (lecture_code)
          CROSS JOIN LATERAL (SELECT abs(hashtext(a.asgn_id || ':' || m.user_id)) % 100 AS h) x
          WHERE x.h < 40",
    ];
    sqlx::query(
        "TRUNCATE tb_lms_user, tb_lms_lecture_member, tb_lms_assignment, tb_lms_assignment_submit, tb_lms_ntcn_msg",
    )
    .execute(&mut *tx)
    .await
    .context("Failed to empty the tables of the LMS-01-004 benchmark")?;
    // Each statement takes, in order, the parameters it names: the
    // submissions only "now" (as $1), the others the sizes (and "now" as $3).
    for sql in steps {
        let query = sqlx::query(sql);
        let query = if sql.contains("tb_lms_assignment_submit (") {
            query.bind(now)
        } else if sql.contains("$3") {
            query.bind(args.students).bind(args.assignments).bind(now)
        } else {
            query.bind(args.students)
        };
        query
            .execute(&mut *tx)
            .await
            .with_context(|| format!("Failed to generate the LMS-01-004 benchmark data: {sql}"))?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE")
        .execute(&app.pg)
        .await
        .context("Failed to ANALYZE")?;
    println!(
        "bench-notify-data: {} students, {} OPEN assignments due after {now}",
        args.students, args.assignments
    );
    Ok(())
}
