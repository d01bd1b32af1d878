//! LMS logs: access log, API log and login history, spread over the last
//! ~400 days so the log-cleanup job (90/90/365 days by default) finds both
//! rows to delete and rows to keep. A user's rows never predate their
//! registration, so the oldest rows belong to teachers and anonymous visits.

use chrono::{DateTime, Datelike, Duration, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use sqlx::PgConnection;
use uuid::Uuid;

use super::gen::{self, chance};
use super::world::{User, UserType, World};
use super::{col, insert};

/// How far back logs go.
const LOG_DAYS: i64 = 400;

pub(super) async fn write(
    conn: &mut PgConnection,
    world: &World,
    seed: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let access = access_log(world, &mut gen::stream(seed, "access-log"));
    let api = api_log(world, &mut gen::stream(seed, "api-log"));
    let mut logins = login_history(world, &mut gen::stream(seed, "login-hist"));
    logins.extend(recent_logins(world, &mut gen::stream(seed, "login-weeks")));
    Ok(vec![
        insert(
            conn,
            "tb_lms_access_log",
            &access,
            "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])",
            |q, rows| {
                q.bind(col(rows, |r| r.user))
                    .bind(col(rows, |r| r.url.clone()))
                    .bind(col(rows, |r| r.ip.clone()))
                    .bind(col(rows, |r| r.at))
            },
        )
        .await?,
        insert(
            conn,
            "tb_lms_api_log",
            &api,
            "INSERT INTO tb_lms_api_log (endpoint, status, elapsed_ms, logged_at)
             SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int4[], $4::timestamptz[])",
            |q, rows| {
                q.bind(col(rows, |r| r.endpoint))
                    .bind(col(rows, |r| r.status))
                    .bind(col(rows, |r| r.elapsed_ms))
                    .bind(col(rows, |r| r.at))
            },
        )
        .await?,
        insert(
            conn,
            "tb_lms_login_hist",
            &logins,
            "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, logout_at, ip)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])",
            |q, rows| {
                q.bind(col(rows, |r| r.user))
                    .bind(col(rows, |r| r.user_type))
                    .bind(col(rows, |r| r.login_at))
                    .bind(col(rows, |r| r.logout_at))
                    .bind(col(rows, |r| r.ip.clone()))
            },
        )
        .await?,
    ])
}

struct AccessRow {
    user: Option<Uuid>,
    url: String,
    ip: String,
    at: DateTime<Utc>,
}

struct ApiRow {
    endpoint: &'static str,
    status: i32,
    elapsed_ms: i32,
    at: DateTime<Utc>,
}

struct LoginRow {
    user: Uuid,
    user_type: &'static str,
    login_at: DateTime<Utc>,
    logout_at: Option<DateTime<Utc>>,
    ip: String,
}

/// Days before the business date with daily logins: the last complete
/// Monday–Sunday week before it and the week before that, whatever the
/// weekday (what BO-05-006 mails and compares), plus D-1..D-7 for the daily
/// statistics jobs.
const RECENT_LOGIN_DAYS: i64 = 20;

/// Everyday logins of the last `RECENT_LOGIN_DAYS` days: pupils on school
/// days (a few at weekends), teachers most days, parents now and then; at
/// the hours pupils learn, 5 minutes to 2 hours long, some left open (no
/// logout) and some late ones crossing midnight.
fn recent_logins(world: &World, rng: &mut StdRng) -> Vec<LoginRow> {
    let mut rows = Vec::new();
    for back in 1..=RECENT_LOGIN_DAYS {
        let weekend = (world.day.date - Duration::days(back))
            .weekday()
            .num_days_from_monday()
            >= 5;
        for user in &world.users {
            let p = match (user.kind, weekend) {
                (UserType::Student, false) => 0.7,
                (UserType::Student, true) => 0.15,
                (UserType::Teacher, false) => 0.8,
                (UserType::Teacher, true) => 0.1,
                (UserType::Parent, _) => 0.12,
            };
            if !chance(rng, p) {
                continue;
            }
            let login_at = world.day.learning_time(rng) - Duration::days(back);
            if login_at < user.reg_dt {
                continue;
            }
            rows.push(login_row(rng, user, login_at, 0.1, 120));
        }
    }
    rows
}

/// A login of `user` at `login_at`, left open (no logout) with chance
/// `open`, else 5 to `max_minutes` minutes long.
fn login_row(
    rng: &mut StdRng,
    user: &User,
    login_at: DateTime<Utc>,
    open: f64,
    max_minutes: i64,
) -> LoginRow {
    let logout_at =
        (!chance(rng, open)).then(|| login_at + Duration::minutes(rng.gen_range(5..=max_minutes)));
    LoginRow {
        user: user.id,
        user_type: user.kind.code(),
        login_at,
        logout_at,
        ip: gen::ip(rng),
    }
}

/// How many history rows a user gets: teachers use the platform daily for
/// years, pupils for this term, parents rarely.
fn history_rows(rng: &mut StdRng, user: &User) -> usize {
    match user.kind {
        UserType::Teacher => rng.gen_range(20..=60),
        UserType::Student => rng.gen_range(2..=6),
        UserType::Parent => rng.gen_range(1..=3),
    }
}

/// A time between the user's registration (at most `LOG_DAYS` ago) and the
/// end of the business date.
fn since_registration(world: &World, rng: &mut StdRng, user: &User) -> DateTime<Utc> {
    let from = user.reg_dt.max(world.day.end - Duration::days(LOG_DAYS));
    world.day.between(rng, from, world.day.end)
}

/// Half of the anonymous rows are recent, half spread over the older part
/// of the window, so retention boundaries split them.
fn anytime(world: &World, rng: &mut StdRng) -> DateTime<Utc> {
    if chance(rng, 0.5) {
        world.day.days_back(rng, 0.0, 90.0)
    } else {
        world.day.days_back(rng, 90.0, LOG_DAYS as f64)
    }
}

fn url(world: &World, rng: &mut StdRng) -> String {
    match gen::weighted(rng, &[20, 25, 25, 10, 10, 10]) {
        0 => "/lms/main".into(),
        1 => format!("/lms/lecture/{}", gen::pick(rng, &world.lectures).code),
        2 => format!("/lms/content/{}", gen::pick(rng, &world.contents).id),
        3 => "/lms/assignment".into(),
        4 => "/lms/dashboard".into(),
        _ => "/lms/report".into(),
    }
}

fn access_log(world: &World, rng: &mut StdRng) -> Vec<AccessRow> {
    let mut rows = Vec::new();
    for user in &world.users {
        for _ in 0..history_rows(rng, user) {
            let at = since_registration(world, rng, user);
            rows.push(AccessRow {
                user: Some(user.id),
                url: url(world, rng),
                ip: gen::ip(rng),
                at,
            });
        }
    }
    for s in world.active_students() {
        let user = world.user_of(s);
        for _ in 0..rng.gen_range(2..=6) {
            let at = world.day.learning_time(rng);
            rows.push(AccessRow {
                user: Some(user.id),
                url: url(world, rng),
                ip: gen::ip(rng),
                at,
            });
        }
    }
    // Visits before login (landing page, login form).
    for _ in 0..world.students.len() {
        let at = anytime(world, rng);
        let url = if chance(rng, 0.5) { "/login" } else { "/" };
        rows.push(AccessRow {
            user: None,
            url: url.into(),
            ip: gen::ip(rng),
            at,
        });
    }
    rows
}

fn api_log(world: &World, rng: &mut StdRng) -> Vec<ApiRow> {
    const ENDPOINTS: [&str; 8] = [
        "/api/v1/auth/launch",
        "/api/v1/lectures",
        "/api/v1/contents",
        "/api/v1/items/answer",
        "/api/v1/progress",
        "/api/v1/dashboard/teacher",
        "/api/v1/assignments",
        "/api/v1/notifications",
    ];
    const STATUSES: [i32; 7] = [200, 201, 400, 401, 404, 500, 503];
    const STATUS_WEIGHTS: [u32; 7] = [88, 4, 3, 2, 1, 1, 1];
    (0..world.students.len() * 4)
        .map(|_| {
            // Mostly fast, with a long tail of slow calls.
            let elapsed_ms = if chance(rng, 0.95) {
                rng.gen_range(5..=200)
            } else {
                rng.gen_range(200..=8000)
            };
            ApiRow {
                endpoint: ENDPOINTS[rng.gen_range(0..ENDPOINTS.len())],
                status: STATUSES[gen::weighted(rng, &STATUS_WEIGHTS)],
                elapsed_ms,
                at: anytime(world, rng),
            }
        })
        .collect()
}

fn login_history(world: &World, rng: &mut StdRng) -> Vec<LoginRow> {
    let mut rows = Vec::new();
    // Closing the browser leaves no logout.
    let mut login = |rng: &mut StdRng, user: &User, login_at: DateTime<Utc>| {
        rows.push(login_row(rng, user, login_at, 0.15, 180));
    };
    for user in &world.users {
        for _ in 0..history_rows(rng, user) {
            let at = since_registration(world, rng, user);
            login(rng, user, at);
        }
    }
    // Every pupil learning on the business date logged in that day.
    for s in world.active_students() {
        let at = world.day.learning_time(rng);
        login(rng, world.user_of(s), at);
    }
    rows
}
