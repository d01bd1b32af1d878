//! BO-01-003, BO-01-004, BO-01-007 (login statistics) and the login_at index
//! migration, against real PostgreSQL. Expected figures are computed here
//! from the fixture's own list of logins, not with the jobs' SQL.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

pub(crate) const TYPES: [&str; 3] = ["S", "T", "P"];
/// The level the jobs document for users without a school.
pub(crate) const NO_SCHOOL: &str = "X";
pub(crate) const LEVELS: [&str; 4] = ["E", "M", "H", NO_SCHOOL];
/// How an open session counts: at least `idle_minutes` after its login, up
/// to the user's last activity before their next login, looked for up to
/// `max_hours` after the login.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenRule {
    pub idle_minutes: i64,
    pub max_hours: i64,
}

/// BO-01-003's defaults.
pub(crate) const OPEN_SESSIONS: OpenRule = OpenRule {
    idle_minutes: 10,
    max_hours: 12,
};

/// A user of the fixture: type, school (None: no school) and whether
/// `tb_lms_user` has them at all.
pub(crate) struct FixtureUser {
    pub id: Uuid,
    pub kind: &'static str,
    pub school: Option<&'static str>,
    pub registered: bool,
}

/// One login: user index, login and logout (None: still open).
pub(crate) type Login = (usize, DateTime<Utc>, Option<DateTime<Utc>>);

pub(crate) struct World {
    pub users: Vec<FixtureUser>,
    pub logins: Vec<Login>,
    /// Pages the users opened (`tb_lms_access_log`): user index, time.
    pub activity: Vec<(usize, DateTime<Utc>)>,
}

/// A KST wall-clock time.
pub(crate) fn kst(s: &str) -> DateTime<Utc> {
    DateTime::<FixedOffset>::parse_from_rfc3339(&format!("{s}+09:00"))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

pub(crate) fn kst_midnight(d: NaiveDate) -> DateTime<Utc> {
    kst(&format!("{d}T00:00:00"))
}

/// Schools of each level and users of every type and level: a pupil per
/// level, teachers, a parent (no school), a pupil whose school id the LMS
/// does not know, and a user id absent from `tb_lms_user`.
pub(crate) fn users() -> Vec<FixtureUser> {
    let u = |kind, school, registered| FixtureUser {
        id: Uuid::new_v4(),
        kind,
        school,
        registered,
    };
    vec![
        u("S", Some("SCH-E"), true),    // 0
        u("S", Some("SCH-M"), true),    // 1
        u("S", Some("SCH-H"), true),    // 2
        u("T", Some("SCH-E"), true),    // 3
        u("T", Some("SCH-H"), true),    // 4
        u("P", None, true),             // 5 parent without a school
        u("S", Some("SCH-GONE"), true), // 6 a school the LMS does not know
        u("T", None, false),            // 7 not in tb_lms_user
        u("S", Some("SCH-M"), true),    // 8
    ]
}

impl World {
    pub(crate) fn level(&self, user: usize) -> &'static str {
        match self.users[user].school {
            Some("SCH-E") if self.users[user].registered => "E",
            Some("SCH-M") if self.users[user].registered => "M",
            Some("SCH-H") if self.users[user].registered => "H",
            _ => NO_SCHOOL,
        }
    }

    pub(crate) async fn insert(&self, pg: &PgPool) {
        sqlx::raw_sql(
            "INSERT INTO tb_lms_school (school_id, school_nm, school_level) VALUES
               ('SCH-E', '초등', 'E'), ('SCH-M', '중등', 'M'), ('SCH-H', '고등', 'H')",
        )
        .execute(pg)
        .await
        .unwrap();
        for u in self.users.iter().filter(|u| u.registered) {
            sqlx::query(
                "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(u.id)
            .bind(Uuid::nil())
            .bind(u.kind)
            .bind(u.school)
            .execute(pg)
            .await
            .unwrap();
        }
        for &(user, login, logout) in &self.logins {
            sqlx::query(
                "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, logout_at, ip) VALUES ($1, $2, $3, $4, '10.0.0.1')",
            )
            .bind(self.users[user].id)
            .bind(self.users[user].kind)
            .bind(login)
            .bind(logout)
            .execute(pg)
            .await
            .unwrap();
        }
        for &(user, at) in &self.activity {
            sqlx::query(
                "INSERT INTO tb_lms_access_log (user_id, url, ip, accessed_at) VALUES ($1, '/lms/home', '10.0.0.1', $2)",
            )
            .bind(self.users[user].id)
            .bind(at)
            .execute(pg)
            .await
            .unwrap();
        }
    }

    /// Where `user`'s open session of `login` ends under `rule`.
    fn open_end(&self, user: usize, login: DateTime<Utc>, rule: OpenRule) -> DateTime<Utc> {
        let next = self
            .logins
            .iter()
            .filter(|l| l.0 == user && l.1 > login)
            .map(|l| l.1)
            .min();
        let mut limit = login + Duration::hours(rule.max_hours);
        if let Some(next) = next {
            limit = limit.min(next);
        }
        let last = self
            .activity
            .iter()
            .filter(|a| a.0 == user && a.1 >= login && a.1 < limit)
            .map(|a| a.1)
            .max();
        let at_least = login + Duration::minutes(rule.idle_minutes);
        last.map_or(at_least, |l| l.max(at_least)).min(limit)
    }

    /// (type, level) → (logins, distinct users) of the logins in [from, to),
    /// every type and level present.
    pub(crate) fn logins_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<(String, String), (i64, i64)> {
        let mut users: BTreeMap<(String, String), BTreeSet<usize>> = BTreeMap::new();
        let mut logins: BTreeMap<(String, String), i64> = BTreeMap::new();
        for t in TYPES {
            for l in LEVELS {
                users.insert((t.into(), l.into()), BTreeSet::new());
                logins.insert((t.into(), l.into()), 0);
            }
        }
        for &(user, at, _) in &self.logins {
            if at >= from && at < to {
                let key = (
                    self.users[user].kind.to_string(),
                    self.level(user).to_string(),
                );
                *logins.get_mut(&key).unwrap() += 1;
                users.get_mut(&key).unwrap().insert(user);
            }
        }
        logins
            .into_iter()
            .map(|(k, n)| {
                let distinct = users[&k].len() as i64;
                (k, (n, distinct))
            })
            .collect()
    }

    /// Distinct users connected in each hour of `day` (KST) per school
    /// level, every hour and level present: a session covers `[login,
    /// logout)`, an open one `[login, open_end)`, both cut at the day's end;
    /// a session of no length covers the instant of its login.
    pub(crate) fn connected(&self, day: NaiveDate, open: OpenRule) -> BTreeMap<(i16, String), i64> {
        let start = kst_midnight(day);
        let mut users: BTreeMap<(i16, String), BTreeSet<usize>> = BTreeMap::new();
        for hour in 0..24 {
            for level in LEVELS {
                users.insert((hour, level.to_string()), BTreeSet::new());
            }
        }
        for &(user, login, logout) in &self.logins {
            let end = logout.unwrap_or_else(|| self.open_end(user, login, open));
            for hour in 0..24i16 {
                let from = start + Duration::hours(i64::from(hour));
                let to = from + Duration::hours(1);
                let overlaps = if end <= login {
                    login >= from && login < to
                } else {
                    login < to && end > from
                };
                if overlaps {
                    users
                        .get_mut(&(hour, self.level(user).to_string()))
                        .unwrap()
                        .insert(user);
                }
            }
        }
        users
            .into_iter()
            .map(|(k, v)| (k, v.len() as i64))
            .collect()
    }
}

pub(crate) async fn connected_stats(pg: &PgPool, day: NaiveDate) -> BTreeMap<(i16, String), i64> {
    let rows: Vec<(i16, String, i32)> = sqlx::query_as(
        "SELECT hour, school_level, conn_user_cnt FROM tb_bo_lms_conn_stats_daily WHERE base_dt = $1",
    )
    .bind(day)
    .fetch_all(pg)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(h, l, n)| ((h, l), i64::from(n)))
        .collect()
}

async fn login_stats(pg: &PgPool, day: NaiveDate) -> BTreeMap<(String, String), (i64, i64)> {
    let rows: Vec<(String, String, i32, i32)> = sqlx::query_as(
        "SELECT user_type, school_level, login_cnt, login_user_cnt FROM tb_bo_lms_login_stats_daily WHERE base_dt = $1",
    )
    .bind(day)
    .fetch_all(pg)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, l, n, u)| ((t, l), (i64::from(n), i64::from(u))))
        .collect()
}

async fn login_users(pg: &PgPool, kind: &str, start: NaiveDate) -> BTreeMap<(String, String), i64> {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT user_type, school_level, login_user_cnt FROM tb_bo_lms_login_user_stats
          WHERE period_type = $1 AND period_start = $2",
    )
    .bind(kind)
    .bind(start)
    .fetch_all(pg)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, l, n)| ((t, l), i64::from(n)))
        .collect()
}

fn distinct_only(m: BTreeMap<(String, String), (i64, i64)>) -> BTreeMap<(String, String), i64> {
    m.into_iter().map(|(k, (_, u))| (k, u)).collect()
}

fn day_range(d: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    (kst_midnight(d), kst_midnight(d + Duration::days(1)))
}

#[tokio::test]
async fn login_counts_count_the_kst_day_per_type_and_level_with_zeros_and_users_without_school() {
    let env = TestEnv::new().await;
    let d = date("2026-03-04");
    let world = World {
        users: users(),
        activity: Vec::new(),
        logins: vec![
            (
                0,
                kst("2026-03-04T00:00:00"),
                Some(kst("2026-03-04T00:30:00")),
            ), // first instant of D
            (0, kst("2026-03-04T13:00:00"), None), // same pupil again
            (
                1,
                kst("2026-03-03T23:59:59"),
                Some(kst("2026-03-04T00:20:00")),
            ), // logged in the day before
            (1, kst("2026-03-04T23:59:59"), None), // last second of D
            (2, kst("2026-03-05T00:00:00"), None), // the next day
            (
                3,
                kst("2026-03-04T08:00:00"),
                Some(kst("2026-03-04T09:00:00")),
            ),
            (
                3,
                kst("2026-03-04T10:00:00"),
                Some(kst("2026-03-04T11:00:00")),
            ),
            (
                3,
                kst("2026-03-04T12:00:00"),
                Some(kst("2026-03-04T15:00:00")),
            ),
            (
                4,
                kst("2026-03-04T09:30:00"),
                Some(kst("2026-03-04T09:40:00")),
            ),
            (
                5,
                kst("2026-03-04T19:00:00"),
                Some(kst("2026-03-04T19:05:00")),
            ),
            (5, kst("2026-03-04T21:00:00"), None),
            (
                6,
                kst("2026-03-04T11:00:00"),
                Some(kst("2026-03-04T11:30:00")),
            ),
            (
                7,
                kst("2026-03-04T16:00:00"),
                Some(kst("2026-03-04T17:00:00")),
            ),
            (
                8,
                kst("2026-03-04T14:00:00"),
                Some(kst("2026-03-04T14:10:00")),
            ),
        ],
    };
    world.insert(env.pg()).await;
    let (from, to) = day_range(d);
    let expected = world.logins_between(from, to);
    assert_eq!(expected.len(), 12);
    assert_eq!(
        expected[&("S".into(), "X".into())],
        (1, 1),
        "the unknown school"
    );
    assert_eq!(expected[&("P".into(), "X".into())], (2, 1), "the parent");

    // Dry run: figures reported, nothing written.
    let run = env.run_ok("BO-01-004", Some(d), true).await;
    assert!(login_stats(env.pg(), d).await.is_empty());
    let details = env.details(run).await;
    let total: i64 = expected.values().map(|v| v.0).sum();
    assert_eq!(details["logins"], total);

    env.run_ok("BO-01-004", Some(d), false).await;
    assert_eq!(login_stats(env.pg(), d).await, expected);

    // A late login of D arrives; the rerun replaces the day's rows exactly.
    sqlx::query(
        "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at) VALUES ($1, 'S', $2)",
    )
    .bind(world.users[2].id)
    .bind(kst("2026-03-04T22:00:00"))
    .execute(env.pg())
    .await
    .unwrap();
    let mut world = world;
    world.logins.push((2, kst("2026-03-04T22:00:00"), None));
    env.run_ok("BO-01-004", Some(d), false).await;
    assert_eq!(
        login_stats(env.pg(), d).await,
        world.logins_between(from, to)
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_bo_lms_login_stats_daily")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(rows, 12, "one day, 3 types × 4 levels");
}

/// Logins around the ISO week and month boundaries of April 2026, which
/// starts on a Wednesday (its week starts on Monday 30 March).
fn boundary_world() -> World {
    World {
        users: users(),
        activity: Vec::new(),
        logins: vec![
            (
                0,
                kst("2026-03-29T23:59:00"),
                Some(kst("2026-03-30T00:10:00")),
            ), // Sunday 23:59: week of 23 March
            (
                1,
                kst("2026-03-30T00:00:00"),
                Some(kst("2026-03-30T00:05:00")),
            ), // Monday 00:00: week of 30 March
            (3, kst("2026-03-31T12:00:00"), None), // March, same week
            (
                2,
                kst("2026-04-01T08:00:00"),
                Some(kst("2026-04-01T09:00:00")),
            ),
            (
                1,
                kst("2026-04-01T10:00:00"),
                Some(kst("2026-04-01T10:30:00")),
            ), // the Monday user again
            (5, kst("2026-04-01T20:00:00"), None),
            (7, kst("2026-04-01T21:00:00"), None),
            (4, kst("2026-04-02T09:00:00"), None), // after 1 April
            (6, kst("2026-04-05T23:59:59"), None), // Sunday, last second of the week
            (8, kst("2026-04-06T00:00:00"), None), // Monday of the next week
            (0, kst("2026-04-03T07:00:00"), None),
        ],
    }
}

type UserStatRows = Vec<(String, NaiveDate, String, String, i32)>;

async fn all_login_user_rows(pg: &PgPool) -> UserStatRows {
    sqlx::query_as("SELECT * FROM tb_bo_lms_login_user_stats ORDER BY 1, 2, 3, 4")
        .fetch_all(pg)
        .await
        .unwrap()
}

/// What `tb_bo_lms_login_user_stats` must hold for the periods written so
/// far: each period counted over `[start, end)`, `end` given per period.
fn expected_user_rows(world: &World, periods: &[(&str, NaiveDate, NaiveDate)]) -> UserStatRows {
    let mut rows = Vec::new();
    for &(kind, start, end) in periods {
        let counts = distinct_only(world.logins_between(kst_midnight(start), kst_midnight(end)));
        for ((t, l), n) in counts {
            rows.push((kind.to_string(), start, t, l, n as i32));
        }
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn login_users_count_closed_weeks_and_months_whole_whatever_day_runs_and_in_any_order() {
    let env = TestEnv::new().await;
    let world = boundary_world();
    world.insert(env.pg()).await;
    assert!(
        aidt_batch::time::today_seoul() > date("2026-05-01"),
        "the fixture's weeks and months are over"
    );

    // April's last day first, then earlier days of April and March (which
    // begins on a Sunday-ending week: 29 March closes the week of 23 March,
    // and April's first week starts on Monday 30 March).
    let d = |s: &str| date(s);
    let mut written = Vec::new();
    for day in [
        "2026-04-30",
        "2026-04-01",
        "2026-03-29",
        "2026-04-05",
        "2026-03-31",
    ] {
        env.run_ok("BO-01-007", Some(d(day)), false).await;
        let day = d(day);
        let week = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
        let month = day.with_day(1).unwrap();
        let next_month = if month.month() == 12 {
            NaiveDate::from_ymd_opt(month.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(month.year(), month.month() + 1, 1)
        }
        .unwrap();
        for period in [
            ("D", day, day + Duration::days(1)),
            ("W", week, week + Duration::days(7)),
            ("M", month, next_month),
        ] {
            if !written.contains(&period) {
                written.push(period);
            }
        }
        assert_eq!(
            all_login_user_rows(env.pg()).await,
            expected_user_rows(&world, &written),
            "after the run for {day}"
        );
    }
    // Spot checks of the fixture: the Monday-00:00 pupil logged in twice in
    // the week of 30 March, counted once (the other middle-school pupil's
    // Monday 00:00 is the next week's); the Sunday-23:59 pupil belongs to the
    // week before but comes back on 3 April; April counts the 2 April
    // teacher although 1 April ran last.
    let week = login_users(env.pg(), "W", d("2026-03-30")).await;
    assert_eq!(week[&("S".into(), "M".into())], 1, "pupil 1, twice");
    assert_eq!(week[&("S".into(), "E".into())], 1, "pupil 0 on 3 April");
    let april = login_users(env.pg(), "M", d("2026-04-01")).await;
    assert_eq!(april[&("T".into(), "H".into())], 1, "the 2 April login");
    assert_eq!(april[&("T".into(), "E".into())], 0, "31 March is not April");
    assert_eq!(
        april[&("T".into(), "X".into())],
        1,
        "a user absent from tb_lms_user"
    );

    // A rerun leaves the same rows. Periods: D ×5; W 23/3, 30/3, 27/4; M 3, 4.
    let before = all_login_user_rows(env.pg()).await;
    env.run_ok("BO-01-007", Some(d("2026-04-01")), false).await;
    assert_eq!(all_login_user_rows(env.pg()).await, before);
    assert_eq!(before.len(), 10 * 12);
}

#[tokio::test]
async fn login_users_count_a_running_week_and_month_up_to_yesterday_when_an_earlier_day_runs() {
    let env = TestEnv::new().await;
    let today = aidt_batch::time::today_seoul();
    let (y, y2) = (today - Duration::days(1), today - Duration::days(2));
    let at = |d: NaiveDate, hms: &str| kst(&format!("{d}T{hms}"));
    let world = World {
        users: users(),
        activity: Vec::new(),
        logins: vec![
            (0, at(y2, "10:00:00"), None),
            (1, at(y, "10:00:00"), None),
            (2, at(today, "00:00:00"), None), // today: not a complete day yet
        ],
    };
    world.insert(env.pg()).await;

    env.run_ok("BO-01-007", Some(y2), false).await;
    let week = y2 - Duration::days(i64::from(y2.weekday().num_days_from_monday()));
    let month = y2.with_day(1).unwrap();
    // Each period up to the end of yesterday, or its own end if earlier.
    let week_end = today.min(week + Duration::days(7));
    let month_end = if month.month() == today.month() {
        today
    } else {
        today.with_day(1).unwrap()
    };
    assert_eq!(
        all_login_user_rows(env.pg()).await,
        expected_user_rows(
            &world,
            &[("D", y2, y), ("W", week, week_end), ("M", month, month_end)]
        )
    );
}

#[tokio::test]
async fn migrate_adds_the_login_at_index_concurrently_where_it_is_missing() {
    assert!(
        aidt_batch::commands::migrate::LMS_INDEX_MIGRATOR
            .iter()
            .all(|m| m.no_tx),
        "CREATE INDEX CONCURRENTLY must run outside a transaction"
    );
    let env = TestEnv::empty().await;
    aidt_dev::schema::apply_postgres(env.pg()).await.unwrap();
    sqlx::raw_sql("DROP INDEX tb_lms_login_hist_login_idx")
        .execute(env.pg())
        .await
        .unwrap();
    for _ in 0..2 {
        let out = env.run_cli(&["migrate"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let valid: Vec<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = 'tb_lms_login_hist'::regclass AND a.attname = 'login_at'",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(valid, [true]);
}

/// Sessions around D = 2026-03-04 for BO-01-003: crossing both midnights,
/// on and across hour boundaries, open ones ended by the user's last
/// activity, by their next login or after the idle minutes, one spanning
/// the whole day, zero-length, repeated and overlapping.
fn hourly_world() -> World {
    let t = kst;
    World {
        users: users(),
        logins: vec![
            (0, t("2026-03-03T23:30:00"), Some(t("2026-03-04T00:20:00"))), // into D: hour 0
            (0, t("2026-03-04T00:10:00"), Some(t("2026-03-04T00:50:00"))), // same pupil, same hour: once
            (1, t("2026-03-04T23:50:00"), Some(t("2026-03-05T00:30:00"))), // out of D: hour 23
            (2, t("2026-03-03T20:00:00"), None), // open since the evening before, active until 07:30: hours 0-7
            (3, t("2026-03-03T10:00:00"), None), // open, nothing within 12 h: nothing on D
            (4, t("2026-03-04T21:00:00"), None), // open on D, no activity: 21:00-21:10
            (3, t("2026-03-04T10:00:00"), Some(t("2026-03-04T11:00:00"))), // exactly hour 10
            (8, t("2026-03-04T10:59:59"), Some(t("2026-03-04T11:00:01"))), // hours 10 and 11
            (5, t("2026-03-04T14:30:00"), Some(t("2026-03-04T14:30:00"))), // zero length: hour 14
            (6, t("2026-03-02T10:00:00"), Some(t("2026-03-05T05:00:00"))), // spans all of D
            (7, t("2026-03-03T23:00:00"), Some(t("2026-03-04T00:00:00"))), // ends at D's first instant: nothing
            (7, t("2026-03-05T00:00:00"), Some(t("2026-03-05T01:00:00"))), // starts at D's end: nothing
            (8, t("2026-03-04T09:15:00"), Some(t("2026-03-04T10:20:00"))), // overlaps their 10:59 one
            (1, t("2026-03-04T13:00:00"), Some(t("2026-03-04T15:59:59"))), // hours 13-15
            (1, t("2026-03-04T17:00:00"), None), // open, active until 19:30, then logs in again: hours 17-19
            (1, t("2026-03-04T20:00:00"), Some(t("2026-03-04T20:05:00"))), // hour 20
            (5, t("2026-03-04T23:00:00"), None), // open, active after midnight: hour 23, then D+1 hour 0
        ],
        activity: vec![
            (2, t("2026-03-04T03:00:00")),
            (2, t("2026-03-04T07:30:00")),
            (3, t("2026-03-04T09:00:00")), // 23 h after the open login: not its activity
            (1, t("2026-03-04T17:00:00")), // the login's own page
            (1, t("2026-03-04T19:30:00")),
            (1, t("2026-03-04T21:30:00")), // after the next login: not the 17:00 session's
            (5, t("2026-03-05T00:40:00")),
        ],
    }
}

#[tokio::test]
async fn connected_users_count_every_hour_and_level_with_sessions_crossing_midnight_and_open_ones_ended_by_activity(
) {
    let mut env = TestEnv::new().await;
    let d = date("2026-03-04");
    let world = hourly_world();
    world.insert(env.pg()).await;

    let expected = world.connected(d, OPEN_SESSIONS);
    assert_eq!(expected.len(), 24 * 4);
    // Spot checks of the independent computation itself.
    assert_eq!(
        expected[&(0, "E".into())],
        1,
        "two sessions of one pupil in hour 0"
    );
    assert_eq!(
        expected[&(7, "H".into())],
        1,
        "open since 20:00 the day before, last active at 07:30"
    );
    assert_eq!(
        expected[&(8, "H".into())],
        0,
        "nothing after the last activity"
    );
    assert_eq!(
        expected[&(10, "M".into())],
        1,
        "10:59:59-11:00:01 and 09:15-10:20: one pupil"
    );
    assert_eq!(expected[&(11, "M".into())], 1);
    assert_eq!(
        expected[&(11, "E".into())],
        0,
        "a session ending at 11:00:00 is not in hour 11"
    );
    assert_eq!(
        expected[&(14, "X".into())],
        2,
        "the parent's zero-length visit and the whole-day session"
    );
    assert_eq!(
        (expected[&(19, "M".into())], expected[&(21, "M".into())]),
        (1, 0),
        "open at 17:00, active at 19:30; the 21:30 page follows the 20:00 login"
    );
    assert_eq!(
        (expected[&(21, "H".into())], expected[&(22, "H".into())]),
        (1, 0),
        "open at 21:00 without activity: ten minutes"
    );
    assert_eq!(
        expected[&(23, "X".into())],
        2,
        "the whole-day session and the parent's 23:00, active past midnight"
    );
    assert_eq!(
        expected[&(0, "X".into())],
        1,
        "only the whole-day session, not the one ending at 00:00"
    );

    let run = env.run_ok("BO-01-003", Some(d), true).await;
    assert!(
        connected_stats(env.pg(), d).await.is_empty(),
        "dry run writes nothing"
    );
    let details = env.details(run).await;
    assert_eq!(details["would_write_rows"], 96);

    env.run_ok("BO-01-003", Some(d), false).await;
    assert_eq!(connected_stats(env.pg(), d).await, expected);
    // The day after sees the sessions crossing into it.
    let next = date("2026-03-05");
    env.run_ok("BO-01-003", Some(next), false).await;
    let after = world.connected(next, OPEN_SESSIONS);
    assert_eq!(connected_stats(env.pg(), next).await, after);
    assert_eq!(
        (after[&(0, "M".into())], after[&(0, "X".into())]),
        (1, 3),
        "the 23:50 session crossing midnight; the parent active at 00:40, the whole-day session, the unknown user's 00:00"
    );

    // A late session and other limits: the rerun replaces D's rows exactly.
    let mut world = world;
    let late = (
        4,
        kst("2026-03-04T05:30:00"),
        Some(kst("2026-03-04T06:10:00")),
    );
    sqlx::query(
        "INSERT INTO tb_lms_login_hist (user_id, user_type, login_at, logout_at) VALUES ($1, 'T', $2, $3)",
    )
    .bind(world.users[4].id)
    .bind(late.1)
    .bind(late.2)
    .execute(env.pg())
    .await
    .unwrap();
    world.logins.push(late);
    env.configure_job("bo_01_003", "open_session_max_hours", 3i64);
    env.configure_job("bo_01_003", "open_session_idle_minutes", 90i64);
    env.run_ok("BO-01-003", Some(d), false).await;
    let rule = OpenRule {
        idle_minutes: 90,
        max_hours: 3,
    };
    let capped = world.connected(d, rule);
    assert_eq!(connected_stats(env.pg(), d).await, capped);
    assert_eq!(capped[&(0, "H".into())], 0, "07:30 is past 20:00 + 3 h");
    assert_eq!(capped[&(6, "H".into())], 1, "the late teacher's session");
    assert_eq!(capped[&(22, "H".into())], 1, "21:00 + 90 minutes");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_bo_lms_conn_stats_daily")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(rows, 2 * 96, "two days, 24 hours × 4 levels each");
}
