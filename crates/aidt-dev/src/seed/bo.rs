//! Back office (admins, maintenance windows, service status, notices, the
//! BO statistics, mail) and the DC error table. Times are placed around the
//! reference time of a job run for the business date — 00:00 of the next
//! day in Seoul — so each BO job finds work to do and rows to leave alone:
//! admins on both sides of the 15-day dormancy limit, maintenance windows
//! past, current and future, notices expired, current and not yet shown.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use sqlx::PgConnection;
use uuid::Uuid;

use super::gen::{self, chance};
use super::world::World;
use super::{col, insert};

pub(super) async fn write(
    conn: &mut PgConnection,
    world: &World,
    seed: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut rng = gen::stream(seed, "bo");
    let r = world.day.end;
    let mut lines = vec![
        admins(conn, &mut rng, r).await?,
        pm_schedule(conn, world).await?,
        service_status(conn, world).await?,
        notices(conn, r).await?,
    ];
    lines.extend(statistics(conn, world).await?);
    lines.extend([
        mail_recipients(conn).await?,
        mail_history(conn, world).await?,
        dc_errors(conn, world, &mut gen::stream(seed, "dc-errors")).await?,
    ]);
    Ok(lines)
}

fn days(d: f64) -> Duration {
    Duration::seconds((d * 86_400.0) as i64)
}

async fn admins(
    conn: &mut PgConnection,
    rng: &mut StdRng,
    r: DateTime<Utc>,
) -> anyhow::Result<(String, u64)> {
    // (status, approved days ago, last login days ago, status changed days ago)
    type Admin = (&'static str, Option<f64>, Option<f64>, Option<f64>);
    const ADMINS: [Admin; 16] = [
        ("ACTIVE", Some(200.0), Some(0.3), None),
        ("ACTIVE", Some(100.0), Some(3.0), None),
        ("ACTIVE", Some(320.0), Some(8.0), None),
        ("ACTIVE", Some(300.0), Some(14.0), None), // a day short of dormancy
        ("ACTIVE", Some(300.0), Some(16.0), None), // just past it
        ("ACTIVE", Some(400.0), Some(60.0), None), // long inactive
        ("ACTIVE", Some(20.0), None, None), // approved, never logged in: counts from approval
        ("ACTIVE", Some(5.0), None, None),  // approved recently, never logged in
        ("ACTIVE", None, None, None),       // waiting for approval: never dormant
        ("ACTIVE", Some(90.0), Some(1.0), None),
        ("ACTIVE", Some(45.0), Some(2.0), None),
        ("DORMANT", Some(500.0), Some(90.0), Some(75.0)),
        ("DORMANT", Some(200.0), None, Some(185.0)),
        ("LOCKED", Some(150.0), Some(2.0), Some(1.0)), // locked after failed logins
        ("LOCKED", Some(365.0), Some(40.0), Some(20.0)),
        ("ACTIVE", Some(30.0), Some(0.8), None),
    ];
    let rows: Vec<_> = ADMINS
        .iter()
        .enumerate()
        .map(|(i, &(status, approved, login, changed))| {
            // Jitter of a few hours keeps the boundary cases on their side.
            let jitter = Duration::minutes(rng.gen_range(0..240));
            (
                format!("admin{:02}", i + 1),
                gen::person_name(rng),
                approved.map(|d| r - days(d) - jitter),
                login.map(|d| r - days(d) + jitter / 2),
                status,
                changed.map(|d| r - days(d)),
            )
        })
        .collect();
    insert(
        conn,
        "tb_bo_admin_user",
        &rows,
        "INSERT INTO tb_bo_admin_user (login_id, admin_nm, approved_at, last_login_at, status, status_chg_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0.clone()))
                .bind(col(rows, |r| r.1.clone()))
                .bind(col(rows, |r| r.2))
                .bind(col(rows, |r| r.3))
                .bind(col(rows, |r| r.4))
                .bind(col(rows, |r| r.5))
        },
    )
    .await
}

/// (system, start as (days, hours) from the business date's 00:00, length
/// in hours, status). The LCMS window in progress is the one that put LCMS
/// into maintenance in `service_status`.
const PM_WINDOWS: [(&str, i64, i64, i64, &str); 8] = [
    ("LMS", -20, 1, 3, "DONE"),
    ("BO", -5, 2, 2, "DONE"),
    ("LCMS", -2, 1, 2, "SCHEDULED"), // ended, never activated: the PM job closes it
    ("LMS", 0, 22, 32, "SCHEDULED"), // started, not yet activated
    ("LCMS", 0, 18, 26, "ACTIVE"),
    ("LMS", 4, 1, 4, "SCHEDULED"),
    ("BO", -10, 1, 2, "CANCELLED"),
    ("LMS", 0, 23, 6, "CANCELLED"), // would be current, but cancelled
];

fn pm_notice(start: DateTime<Utc>, end: DateTime<Utc>, system: &str) -> String {
    let seoul = aidt_batch::time::seoul();
    format!(
        "{}~{} {system} 시스템 정기 점검이 있습니다. 점검 중에는 서비스 이용이 제한됩니다.",
        start.with_timezone(&seoul).format("%m월 %d일 %H:%M"),
        end.with_timezone(&seoul).format("%m월 %d일 %H:%M"),
    )
}

async fn pm_schedule(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    let rows: Vec<_> = PM_WINDOWS
        .iter()
        .map(|&(system, d, h, len, status)| {
            let start = world.day.at(d, h, 0);
            let end = start + Duration::hours(len);
            (system, start, end, pm_notice(start, end, system), status)
        })
        .collect();
    insert(
        conn,
        "tb_bo_pm_schedule",
        &rows,
        "INSERT INTO tb_bo_pm_schedule (target_sys, start_dt, end_dt, notice_msg, status)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0))
                .bind(col(rows, |r| r.1))
                .bind(col(rows, |r| r.2))
                .bind(col(rows, |r| r.3.clone()))
                .bind(col(rows, |r| r.4))
        },
    )
    .await
}

async fn service_status(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    let (_, d, h, len, _) = PM_WINDOWS[4];
    let lcms_start = world.day.at(d, h, 0);
    let rows = [
        ("BO", "N", None, world.day.at(-5, 4, 0)),
        (
            "LCMS",
            "Y",
            Some(pm_notice(
                lcms_start,
                lcms_start + Duration::hours(len),
                "LCMS",
            )),
            lcms_start,
        ),
        ("LMS", "N", None, world.day.at(-20, 4, 0)),
    ];
    insert(
        conn,
        "tb_bo_service_status",
        &rows,
        "INSERT INTO tb_bo_service_status (target_sys, maint_yn, maint_msg, upd_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0))
                .bind(col(rows, |r| r.1))
                .bind(col(rows, |r| r.2.clone()))
                .bind(col(rows, |r| r.3))
        },
    )
    .await
}

async fn notices(conn: &mut PgConnection, r: DateTime<Utc>) -> anyhow::Result<(String, u64)> {
    // (title, displayed, start days from r, end days from r)
    const NOTICES: [(&str, &str, Option<f64>, Option<f64>); 10] = [
        ("AI 디지털교과서 이용 안내", "Y", Some(-60.0), None),
        ("개인정보 처리방침 개정 안내", "Y", Some(-40.0), Some(-3.0)), // expired, still shown
        ("설 연휴 고객센터 운영 안내", "Y", Some(-20.0), Some(-0.5)), // expired during the business date
        ("신학기 학급 등록 방법", "N", Some(-90.0), Some(-30.0)),     // expired and hidden
        ("시스템 정기 점검 안내", "Y", Some(-2.0), Some(5.0)),
        ("교사용 대시보드 기능 개선", "Y", Some(-10.0), Some(10.0)),
        ("학부모 서비스 오픈 안내", "Y", Some(-1.0), Some(30.0)),
        ("2학기 교과서 업데이트 안내", "Y", Some(2.0), Some(30.0)), // not yet shown
        ("보안 업데이트 안내", "N", Some(-5.0), Some(20.0)),        // draft
        ("문의 게시판 운영 시간 변경", "Y", Some(7.0), None),
    ];
    let rows: Vec<_> = NOTICES
        .iter()
        .map(|&(t, yn, s, e)| (t, yn, s.map(|d| r + days(d)), e.map(|d| r + days(d))))
        .collect();
    insert(
        conn,
        "tb_bo_notice",
        &rows,
        "INSERT INTO tb_bo_notice (title, disp_yn, disp_start_dt, disp_end_dt)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0))
                .bind(col(rows, |r| r.1))
                .bind(col(rows, |r| r.2))
                .bind(col(rows, |r| r.3))
        },
    )
    .await
}

/// The BO statistics of the week before the business date (D-7..D-1), as
/// the daily jobs BO-01-003, BO-01-004 and BO-01-007 would have written
/// them from the seeded logins — with their own code, so the figures are
/// true of the data. The business date itself is left for the jobs, and so
/// are the older days of the week BO-05-006 mails (it computes them first).
async fn statistics(conn: &mut PgConnection, world: &World) -> anyhow::Result<Vec<(String, u64)>> {
    use aidt_batch::jobs::bo::login_stats::{connected_users, login_counts, login_users};
    let sessions = aidt_batch::jobs::shared::sessions::LearningDaySettings::default();
    let days: Vec<NaiveDate> = (1..=7)
        .rev()
        .map(|back| world.day.date - Duration::days(back))
        .collect();
    for &day in &days {
        connected_users::compute_day(conn, day, &sessions).await?;
        login_counts::compute_day(conn, day).await?;
        login_users::compute(conn, &login_users::periods_of(day, day + Duration::days(1))).await?;
    }
    let mut lines = Vec::new();
    for table in [
        "tb_bo_lms_conn_stats_daily",
        "tb_bo_lms_login_stats_daily",
        "tb_bo_lms_login_user_stats",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *conn)
            .await?;
        lines.push((table.to_string(), n as u64));
    }
    Ok(lines)
}

const RECIPIENTS: [(&str, &str, &str); 5] = [
    ("ops@aidt.example.kr", "운영팀", "Y"),
    ("data@aidt.example.kr", "데이터팀", "Y"),
    ("pm@aidt.example.kr", "서비스기획팀", "Y"),
    ("cs@aidt.example.kr", "고객지원팀", "N"),
    ("cto@aidt.example.kr", "기술총괄", "Y"),
];

async fn mail_recipients(conn: &mut PgConnection) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_bo_mail_recipient",
        &RECIPIENTS,
        "INSERT INTO tb_bo_mail_recipient (email, rcpt_nm, active_yn) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
        |q, rows| q.bind(col(rows, |r| r.0)).bind(col(rows, |r| r.1)).bind(col(rows, |r| r.2)),
    )
    .await
}

/// The weekly report mail of the three weeks before the one BO-05-006
/// reports for the business date (that one is left to the job): sent on the
/// Monday after each week, one delivery failed.
async fn mail_history(conn: &mut PgConnection, world: &World) -> anyhow::Result<(String, u64)> {
    let reported =
        aidt_batch::jobs::bo::login_stats::usage_report::Week::last_complete(world.day.date).start;
    let mut rows = Vec::new();
    for w in (1..=3).rev() {
        let week_start = reported - Duration::weeks(w);
        let sent = aidt_batch::time::start_of_day_seoul(week_start + Duration::weeks(1))
            + Duration::hours(9);
        for (i, (email, _, active)) in RECIPIENTS.iter().enumerate() {
            if *active == "N" {
                continue;
            }
            let failed = w == 2 && i == 2;
            rows.push((
                week_start,
                *email,
                (!failed).then_some(sent),
                if failed { "FAILED" } else { "SENT" },
                failed.then_some("550 5.1.1 mailbox unavailable"),
            ));
        }
    }
    insert(
        conn,
        "tb_bo_mail_send_hist",
        &rows,
        "INSERT INTO tb_bo_mail_send_hist (week_start, email, sent_at, status, err_msg)
         SELECT * FROM UNNEST($1::date[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0))
                .bind(col(rows, |r| r.1))
                .bind(col(rows, |r| r.2))
                .bind(col(rows, |r| r.3))
                .bind(col(rows, |r| r.4))
        },
    )
    .await
}

/// A few statements KERIS rejected in the days before the business date,
/// already handled (`RESENT` or `FAILED`): their statement ids are made up,
/// so an open row would only send DC-01-002 and LRS-01-002 looking for
/// statements that do not exist.
async fn dc_errors(
    conn: &mut PgConnection,
    world: &World,
    rng: &mut StdRng,
) -> anyhow::Result<(String, u64)> {
    const ERRORS: [(&str, &str); 3] = [
        ("XAPI_VAL_ERR", "verb is not in the AIDT profile"),
        ("XAPI_USER_ERR", "unknown user"),
        (
            "XAPI_DUP_ERR",
            "statement id already received with different content",
        ),
    ];
    const STATES: [(&str, i32); 2] = [("RESENT", 2), ("FAILED", 3)];
    let mut rows = Vec::new();
    for i in 0..12 {
        let student = world.user_of(rng.gen_range(0..world.students.len()));
        // One row whose actor could not be read: no user.
        let user = (i != 0).then_some(student.id);
        let base_dt = world.day.date - Duration::days(rng.gen_range(1..=3));
        let created_at = aidt_batch::time::start_of_day_seoul(base_dt + Duration::days(1))
            + Duration::minutes(rng.gen_range(120..240));
        let (err_code, err_msg) = *gen::pick(rng, &ERRORS);
        let (status, retry_cnt) = STATES[i % STATES.len()];
        rows.push(ErrorRow {
            job_id: if chance(rng, 0.7) {
                "DC-01-001"
            } else {
                "DC-01-002"
            },
            base_dt,
            partner: world.partner_of(student),
            user,
            transfer_id: gen::uuid(rng).to_string(),
            stmt_index: rng.gen_range(1..=5_000),
            statement_id: gen::uuid(rng),
            err_code,
            err_msg,
            status,
            retry_cnt,
            created_at,
            upd_dt: created_at + Duration::hours(i64::from(retry_cnt) * 6),
        });
    }
    insert(
        conn,
        "tb_dc_error_data_info",
        &rows,
        "INSERT INTO tb_dc_error_data_info (job_id, base_dt, partner_id, user_id, transfer_id, stmt_index, statement_id,
                                            err_code, err_msg, status, retry_cnt, created_at, upd_dt)
         SELECT * FROM UNNEST($1::text[], $2::date[], $3::uuid[], $4::uuid[], $5::text[], $6::int8[], $7::uuid[],
                              $8::text[], $9::text[], $10::text[], $11::int4[], $12::timestamptz[], $13::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.job_id))
                .bind(col(rows, |r| r.base_dt))
                .bind(col(rows, |r| r.partner))
                .bind(col(rows, |r| r.user))
                .bind(col(rows, |r| r.transfer_id.clone()))
                .bind(col(rows, |r| r.stmt_index))
                .bind(col(rows, |r| r.statement_id))
                .bind(col(rows, |r| r.err_code))
                .bind(col(rows, |r| r.err_msg))
                .bind(col(rows, |r| r.status))
                .bind(col(rows, |r| r.retry_cnt))
                .bind(col(rows, |r| r.created_at))
                .bind(col(rows, |r| r.upd_dt))
        },
    )
    .await
}

struct ErrorRow {
    job_id: &'static str,
    base_dt: NaiveDate,
    partner: Uuid,
    user: Option<Uuid>,
    transfer_id: String,
    stmt_index: i64,
    statement_id: Uuid,
    err_code: &'static str,
    err_msg: &'static str,
    status: &'static str,
    retry_cnt: i32,
    created_at: DateTime<Utc>,
    upd_dt: DateTime<Utc>,
}
