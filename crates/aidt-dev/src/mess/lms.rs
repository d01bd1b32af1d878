//! The mess of the PostgreSQL side: who is deleted or consenting, rows
//! written for deleted students, open sessions, the LCMS source losing
//! half its rows, and a maintenance window cancelled while active.

use anyhow::Context as _;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use sqlx::PgPool;
use uuid::Uuid;

use super::{execute, sample, Student};
use aidt_batch::context::AppContext;
use aidt_batch::jobs::shared::privacy::{self, ConsentRule};
use aidt_batch::time;

/// Students whose data arrives after (or, before any deletion, just
/// before) the batch deletes it.
const DELETED_STUDENTS: usize = 3;
/// Students with a session and a login left open on D.
const OPEN_SESSIONS: usize = 3;
/// The system of the maintenance window, and how its notice starts (how
/// this command finds its own windows again).
const MAINTENANCE_SYSTEM: &str = "LMS";
const MAINTENANCE_NOTICE: &str = "[aidt-dev mess] planned maintenance";

/// Up to 3 students the batch deleted (`del_yn = 'Y'`, withheld by the
/// consent rule as of the end of D); before any deletion, withheld ones.
pub(super) async fn deleted_students(
    app: &AppContext,
    date: NaiveDate,
) -> anyhow::Result<Vec<Student>> {
    let rule = ConsentRule {
        reference_time: end_of(date),
        grace_days: app.settings.jobs.privacy.grace_days,
    };
    let withheld: Vec<Uuid> = privacy::withheld_students(&app.pg, &rule)
        .await?
        .into_iter()
        .collect();
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT user_id, partner_id FROM tb_lms_user WHERE user_id = ANY($1)
          ORDER BY del_yn = 'Y' DESC, user_id LIMIT $2",
    )
    .bind(&withheld)
    .bind(DELETED_STUDENTS as i64)
    .fetch_all(&app.pg)
    .await
    .context("Failed to read the withheld students")?;
    Ok(students(rows))
}

/// Students who consent to `PRVC_PROVIDE` and are not deleted.
pub(super) async fn consenting_students(pg: &PgPool) -> anyhow::Result<Vec<Student>> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT u.user_id, u.partner_id FROM tb_lms_user u
           JOIN tb_lms_user_consent c ON c.user_id = u.user_id AND c.consent_type = 'PRVC_PROVIDE'
          WHERE u.user_type = 'S' AND u.del_yn = 'N' AND c.agree_yn = 'Y'
          ORDER BY u.user_id",
    )
    .fetch_all(pg)
    .await
    .context("Failed to read the consenting students")?;
    Ok(students(rows))
}

fn students(rows: Vec<(Uuid, Uuid)>) -> Vec<Student> {
    rows.into_iter()
        .map(|(user_id, partner_id)| Student {
            user_id,
            partner_id,
        })
        .collect()
}

/// A result, an open session, a login and an access-log row of D for each
/// of `students`, written as an offline sync would after their deletion.
pub(super) async fn deleted_students_rows(
    pg: &PgPool,
    date: NaiveDate,
    students: &[Student],
) -> anyhow::Result<u64> {
    let ids: Vec<Uuid> = students.iter().map(|s| s.user_id).collect();
    let at = time::start_of_day_seoul(date) + Duration::hours(16);
    let mut n = insert_results(pg, &ids, at).await?;
    n += insert_sessions(pg, &ids, at).await?;
    n += execute(
        sqlx::query(
            "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at)
             SELECT id, '/learning/sync', '10.0.0.1', $2 FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(&ids)
        .bind(at),
        pg,
        "insert access-log rows of deleted students",
    )
    .await?;
    Ok(n)
}

/// A result at `at` per student, on the item and lecture of the first
/// result in the table.
async fn insert_results(pg: &PgPool, ids: &[Uuid], at: DateTime<Utc>) -> anyhow::Result<u64> {
    execute(
        sqlx::query(
            "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id,
                                            correct_yn, score, duration_sec, solved_at)
             SELECT id, r.lecture_code, r.item_id, r.content_id, r.std_sys_id, 'Y', 80, 60, $2
               FROM UNNEST($1::uuid[]) AS id
              CROSS JOIN (SELECT * FROM tb_lms_lrn_result ORDER BY result_id LIMIT 1) r",
        )
        .bind(ids)
        .bind(at),
        pg,
        "insert results",
    )
    .await
}

/// A learning session and a login per student from `at`, neither ended,
/// each on the student's first lecture (any lecture if none).
async fn insert_sessions(pg: &PgPool, ids: &[Uuid], at: DateTime<Utc>) -> anyhow::Result<u64> {
    let sessions = execute(
        sqlx::query(
            "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at)
             SELECT id, COALESCE(
                      (SELECT m.lecture_code FROM tb_lms_lecture_member m WHERE m.user_id = id
                        ORDER BY m.lecture_code LIMIT 1),
                      (SELECT lecture_code FROM tb_lms_lecture ORDER BY lecture_code LIMIT 1)), $2
               FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(ids)
        .bind(at),
        pg,
        "insert open sessions",
    )
    .await?;
    let logins = execute(
        sqlx::query(
            "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, ip)
             SELECT id, 'S', $2, '10.0.0.1' FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(ids)
        .bind(at),
        pg,
        "insert open logins",
    )
    .await?;
    Ok(sessions + logins)
}

/// Sessions and logins of D 19:00 that never end, for the first
/// consenting students, with a result 20 minutes in (their last activity).
pub(super) async fn open_sessions(
    pg: &PgPool,
    date: NaiveDate,
    consenting: &[Student],
) -> anyhow::Result<u64> {
    let ids: Vec<Uuid> = consenting
        .iter()
        .take(OPEN_SESSIONS)
        .map(|s| s.user_id)
        .collect();
    let at = time::start_of_day_seoul(date) + Duration::hours(19);
    let n = insert_sessions(pg, &ids, at).await?;
    insert_results(pg, &ids, at + Duration::minutes(20)).await?;
    Ok(n)
}

/// Deletes half of the rows of `tb_lcms_content` and of `tb_lcms_item`.
pub(super) async fn lose_lcms_half(pg: &PgPool, rng: &mut StdRng) -> anyhow::Result<u64> {
    let mut n = 0;
    for (table, key) in [
        ("tb_lcms_item", "item_id"),
        ("tb_lcms_content", "content_id"),
    ] {
        let keys: Vec<String> =
            sqlx::query_scalar(&format!("SELECT {key} FROM {table} ORDER BY {key}"))
                .fetch_all(pg)
                .await
                .with_context(|| format!("Failed to read {table}"))?;
        let lost = sample(rng, &keys, keys.len() / 2);
        let sql = format!("DELETE FROM {table} WHERE {key} = ANY($1)");
        n += execute(
            sqlx::query(&sql).bind(&lost),
            pg,
            &format!("delete from {table}"),
        )
        .await?;
    }
    Ok(n)
}

/// Cancels this command's active windows; schedules one from D 22:00 to
/// D+3 22:00 when none was active. Returns (cancelled, scheduled).
pub(super) async fn maintenance(pg: &PgPool, date: NaiveDate) -> anyhow::Result<(u64, u64)> {
    let like = format!("{MAINTENANCE_NOTICE}%");
    let cancelled = execute(
        sqlx::query(
            "UPDATE tb_bo_pm_schedule SET status = 'CANCELLED'
              WHERE status = 'ACTIVE' AND notice_msg LIKE $1",
        )
        .bind(&like),
        pg,
        "cancel the active maintenance windows",
    )
    .await?;
    if cancelled > 0 {
        return Ok((cancelled, 0));
    }
    let start = time::start_of_day_seoul(date) + Duration::hours(22);
    let scheduled = execute(
        sqlx::query(
            "INSERT INTO tb_bo_pm_schedule (target_sys, start_dt, end_dt, notice_msg, status)
             VALUES ($1, $2, $3, $4, 'SCHEDULED')",
        )
        .bind(MAINTENANCE_SYSTEM)
        .bind(start)
        .bind(start + Duration::days(3))
        .bind(format!("{MAINTENANCE_NOTICE} from {date} 22:00 KST")),
        pg,
        "schedule a maintenance window",
    )
    .await?;
    Ok((0, scheduled))
}

fn end_of(date: NaiveDate) -> DateTime<Utc> {
    time::start_of_day_seoul(date + Duration::days(1))
}
