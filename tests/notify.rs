//! LMS-01-004 (assignment-deadline messages) and LMS-01-005 (praise
//! messages) against real PostgreSQL.
//!
//! LMS-01-004 runs with `--date 2026-03-05`, a past day, so its "now" (the
//! runtime's reference time) is the end of that day, 2026-03-06 00:00 KST:
//! the fixtures' due times are offsets from that instant. The expected
//! messages are derived here from the fixtures with the rules written out,
//! not with the job's code.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

async fn exec(pg: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pg).await.unwrap();
}

fn kst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap()
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | n)
}

async fn add_user(pg: &PgPool, id: Uuid, user_type: &str, del_yn: &str) {
    sqlx::query(
        "INSERT INTO tb_lms_user (user_id, partner_id, user_type, school_id, del_yn)
         VALUES ($1, '00000000-0000-0000-0000-0000000000aa', $2, 'SCH1', $3)",
    )
    .bind(id)
    .bind(user_type)
    .bind(del_yn)
    .execute(pg)
    .await
    .unwrap();
}

async fn add_member(pg: &PgPool, lecture: &str, id: Uuid) {
    sqlx::query("INSERT INTO tb_lms_lecture_member (lecture_code, user_id) VALUES ($1, $2)")
        .bind(lecture)
        .bind(id)
        .execute(pg)
        .await
        .unwrap();
}

/// (user, msg_type, ref_key) of every message.
async fn message_keys(pg: &PgPool) -> BTreeSet<(Uuid, String, String)> {
    sqlx::query_as("SELECT user_id, msg_type, ref_key FROM tb_lms_ntcn_msg")
        .fetch_all(pg)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn message_count(pg: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tb_lms_ntcn_msg")
        .fetch_one(pg)
        .await
        .unwrap()
}

/// (status, read, written, skipped, details) of a run.
async fn run_row(pg: &PgPool, run_id: i64) -> (String, i64, i64, i64, Value) {
    sqlx::query_as(
        "SELECT status, read_cnt, write_cnt, skip_cnt, details FROM batch_job_run WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pg)
    .await
    .unwrap()
}

// LMS-01-004 ---------------------------------------------------------------------

const DUE_DATE: &str = "2026-03-05";

/// The job's "now" for `--date 2026-03-05`: 2026-03-06 00:00 KST.
fn due_now() -> DateTime<Utc> {
    kst()
        .with_ymd_and_hms(2026, 3, 6, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

struct Assignment {
    id: i64,
    title: &'static str,
    /// Minutes from "now" to `due_dt`; `None`: NULL `due_dt`.
    due_in_minutes: Option<i64>,
    status: &'static str,
}

const ASSIGNMENTS: [Assignment; 8] = [
    Assignment {
        id: 1,
        title: "수학 59분",
        due_in_minutes: Some(59),
        status: "OPEN",
    },
    Assignment {
        id: 2,
        title: "수학 61분",
        due_in_minutes: Some(61),
        status: "OPEN",
    },
    Assignment {
        id: 3,
        title: "영어 23시간 59분",
        due_in_minutes: Some(23 * 60 + 59),
        status: "OPEN",
    },
    Assignment {
        id: 4,
        title: "영어 24시간 1분",
        due_in_minutes: Some(24 * 60 + 1),
        status: "OPEN",
    },
    Assignment {
        id: 5,
        title: "마감된 과제",
        due_in_minutes: Some(30),
        status: "CLOSED",
    },
    Assignment {
        id: 6,
        title: "지난 과제",
        due_in_minutes: Some(-1),
        status: "OPEN",
    },
    Assignment {
        id: 7,
        title: "마감일 없는 과제",
        due_in_minutes: None,
        status: "OPEN",
    },
    // A title that spells a placeholder stays as written.
    Assignment {
        id: 8,
        title: "{due} 제목",
        due_in_minutes: Some(10),
        status: "OPEN",
    },
];

/// Students of lecture L1 and who submitted what.
struct Students {
    plain: Uuid,
    /// Submitted assignments 1 and 3.
    submitted: Uuid,
    /// Has a submit row for assignment 1 with a NULL submit_dt: not submitted.
    started: Uuid,
    /// Was in L1 (still has a submit row), left it.
    left: Uuid,
    deleted: Uuid,
    teacher: Uuid,
    /// In L2 only, which has no assignment.
    other_lecture: Uuid,
}

async fn seed_assignments(pg: &PgPool) -> Students {
    let s = Students {
        plain: uid(1),
        submitted: uid(2),
        started: uid(3),
        left: uid(4),
        deleted: uid(5),
        teacher: uid(6),
        other_lecture: uid(7),
    };
    for (id, t, del) in [
        (s.plain, "S", "N"),
        (s.submitted, "S", "N"),
        (s.started, "S", "N"),
        (s.left, "S", "N"),
        (s.deleted, "S", "Y"),
        (s.teacher, "T", "N"),
        (s.other_lecture, "S", "N"),
    ] {
        add_user(pg, id, t, del).await;
    }
    for id in [s.plain, s.submitted, s.started, s.deleted, s.teacher] {
        add_member(pg, "L1", id).await;
    }
    add_member(pg, "L2", s.other_lecture).await;
    for a in &ASSIGNMENTS {
        sqlx::query(
            "INSERT INTO tb_lms_assignment (asgn_id, lecture_code, teacher_id, title, due_dt, status)
             VALUES ($1, 'L1', $2, $3, $4, $5)",
        )
        .bind(a.id)
        .bind(s.teacher)
        .bind(a.title)
        .bind(a.due_in_minutes.map(|m| due_now() + Duration::minutes(m)))
        .bind(a.status)
        .execute(pg)
        .await
        .unwrap();
    }
    let submitted_at = due_now() - Duration::hours(2);
    for (asgn, user, at) in [
        (1, s.submitted, Some(submitted_at)),
        (3, s.submitted, Some(submitted_at)),
        (1, s.started, None),
        (1, s.left, None),
    ] {
        sqlx::query(
            "INSERT INTO tb_lms_assignment_submit (asgn_id, user_id, submit_dt) VALUES ($1, $2, $3)",
        )
        .bind(asgn)
        .bind(user)
        .bind(at)
        .execute(pg)
        .await
        .unwrap();
    }
    s
}

/// The expected messages, from the rules: OPEN, due after now, within a
/// threshold (the nearest one only), to active students of L1 without a
/// submission. Thresholds 1440 and 60 minutes.
fn expected_due_messages(s: &Students) -> BTreeSet<(Uuid, String, String)> {
    let mut out = BTreeSet::new();
    for a in &ASSIGNMENTS {
        let Some(minutes) = a.due_in_minutes else {
            continue;
        };
        if a.status != "OPEN" || minutes <= 0 {
            continue;
        }
        let threshold = if minutes <= 60 {
            60
        } else if minutes <= 1440 {
            1440
        } else {
            continue;
        };
        for user in [s.plain, s.submitted, s.started] {
            let submitted = user == s.submitted && (a.id == 1 || a.id == 3);
            if !submitted {
                out.insert((
                    user,
                    "ASGN_DUE".into(),
                    format!("asgn:{}:{threshold}m", a.id),
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn due_messages_go_to_students_who_have_not_submitted_at_the_nearest_threshold_only() {
    let env = TestEnv::new().await;
    let students = seed_assignments(env.pg()).await;
    let expected = expected_due_messages(&students);
    // 1, 8 (1 h), 2, 3 (24 h) to three students, less the two submissions.
    assert_eq!(expected.len(), 10);
    let date = Some(date(DUE_DATE));

    // --dry-run: counts, writes nothing.
    let dry = env.run_ok("LMS-01-004", date, true).await;
    assert_eq!(message_count(env.pg()).await, 0, "a dry run writes nothing");
    let (_, read, written, skipped, details) = run_row(env.pg(), dry).await;
    assert_eq!((read, written, skipped), (expected.len() as i64, 0, 1));
    assert_eq!(details["would_write"], expected.len());

    let run = env.run_ok("LMS-01-004", date, false).await;
    assert_eq!(message_keys(env.pg()).await, expected);
    let (_, read, written, skipped, details) = run_row(env.pg(), run).await;
    assert_eq!(
        (read, written, skipped),
        (expected.len() as i64, expected.len() as i64, 1)
    );
    for threshold in ["60m", "1440m"] {
        let n = expected
            .iter()
            .filter(|(_, _, k)| k.ends_with(&format!(":{threshold}")))
            .count();
        assert_eq!(
            details["by_threshold"][threshold]["written"], n,
            "{threshold}"
        );
    }
    // The NULL due_dt is named, not lost.
    assert_eq!(details["null_due_dt_count"], 1);
    assert_eq!(details["null_due_dt"][0]["asgn_id"], 7);
    assert_eq!(details["null_due_dt"][0]["title"], "마감일 없는 과제");

    // The text: title and due time in KST, from the default templates.
    let (title, body): (String, String) = sqlx::query_as(
        "SELECT title, body FROM tb_lms_ntcn_msg WHERE user_id = $1 AND ref_key = 'asgn:1:60m'",
    )
    .bind(students.plain)
    .fetch_one(env.pg())
    .await
    .unwrap();
    let due_kst = (due_now() + Duration::minutes(59))
        .with_timezone(&kst())
        .format("%Y-%m-%d %H:%M")
        .to_string();
    assert_eq!(due_kst, "2026-03-06 00:59");
    assert_eq!(title, "[과제 마감 1시간 전] 수학 59분");
    assert!(
        body.contains("'수학 59분'") && body.contains(&format!("{due_kst}(KST)")),
        "{body}"
    );
    let (title8, body8): (String, String) = sqlx::query_as(
        "SELECT title, body FROM tb_lms_ntcn_msg WHERE user_id = $1 AND ref_key = 'asgn:8:60m'",
    )
    .bind(students.plain)
    .fetch_one(env.pg())
    .await
    .unwrap();
    assert_eq!(title8, "[과제 마감 1시간 전] {due} 제목");
    assert!(
        body8.starts_with("'{due} 제목' 과제가 2026-03-06 00:10(KST)"),
        "{body8}"
    );

    // A rerun writes nothing twice.
    let rerun = env.run_ok("LMS-01-004", date, false).await;
    assert_eq!(message_keys(env.pg()).await, expected);
    let (_, read, written, _, details) = run_row(env.pg(), rerun).await;
    assert_eq!((read, written), (expected.len() as i64, 0));
    assert_eq!(details["already_sent"], expected.len());

    // Half an hour later assignment 2 (61 min at first sight, so it got the
    // 24-hour message) is due within the hour: now the 1-hour one, once.
    exec(
        env.pg(),
        "UPDATE tb_lms_assignment SET due_dt = due_dt - interval '30 minutes' WHERE asgn_id = 2",
    )
    .await;
    env.run_ok("LMS-01-004", date, false).await;
    let mut later = expected.clone();
    for user in [students.plain, students.submitted, students.started] {
        later.insert((user, "ASGN_DUE".into(), "asgn:2:60m".into()));
    }
    assert_eq!(message_keys(env.pg()).await, later);
}

#[tokio::test]
async fn overlapping_due_message_runs_write_each_message_once() {
    let env = TestEnv::new().await;
    let students = seed_assignments(env.pg()).await;
    let expected = expected_due_messages(&students);

    // Two runs at once: the second waits for the job's lock, then finds
    // everything written.
    let date = Some(date(DUE_DATE));
    let (a, b) = tokio::join!(
        env.run_job("LMS-01-004", date, false),
        env.run_job("LMS-01-004", date, false)
    );
    assert_eq!(a.exit, aidt_batch::runtime::Exit::Success);
    assert_eq!(b.exit, aidt_batch::runtime::Exit::Success);
    assert_eq!(message_keys(env.pg()).await, expected);

    // Without the lock (two writers straight at the table), the unique key
    // alone keeps each message single.
    exec(env.pg(), "DELETE FROM tb_lms_ntcn_msg").await;
    use aidt_batch::jobs::lms::notify::assignment_due_messages::{
        write_messages, AssignmentDueSettings,
    };
    let settings = AssignmentDueSettings::default();
    let (x, y) = tokio::join!(
        write_messages(env.pg(), due_now(), &settings, false),
        write_messages(env.pg(), due_now(), &settings, false)
    );
    let written: u64 = x
        .unwrap()
        .values()
        .chain(y.unwrap().values())
        .map(|c| c.written)
        .sum();
    assert_eq!(written, expected.len() as u64);
    assert_eq!(message_keys(env.pg()).await, expected);
}

#[tokio::test]
async fn due_message_thresholds_and_templates_come_from_configuration() {
    let mut env = TestEnv::new().await;
    let students = seed_assignments(env.pg()).await;
    env.configure_job("lms_01_004", "thresholds_minutes", "30");
    env.configure_job("lms_01_004", "title_template", "{threshold} 남음: {title}");
    env.run_ok("LMS-01-004", Some(date(DUE_DATE)), false).await;
    // Only assignment 8 (10 minutes) is within 30 minutes; 5 is CLOSED.
    let expected: BTreeSet<_> = [students.plain, students.submitted, students.started]
        .into_iter()
        .map(|u| (u, "ASGN_DUE".to_string(), "asgn:8:30m".to_string()))
        .collect();
    assert_eq!(message_keys(env.pg()).await, expected);
    let title: String = sqlx::query_scalar("SELECT DISTINCT title FROM tb_lms_ntcn_msg")
        .fetch_one(env.pg())
        .await
        .unwrap();
    assert_eq!(title, "30분 남음: {due} 제목");
}

#[tokio::test]
async fn bad_due_message_settings_fail_naming_the_key() {
    let env = TestEnv::new().await;
    for (key, value, expect) in [
        ("THRESHOLDS_MINUTES", "0", "thresholds_minutes"),
        ("THRESHOLDS_MINUTES", "60,abc", "thresholds_minutes"),
        ("BODY_TEMPLATE", "{titel} 마감", "body_template"),
    ] {
        let out = env
            .command(&["lms-01-004", "--dry-run"])
            .env(format!("AIDT__JOBS__LMS_01_004__{key}"), value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let err = stderr(&out);
        assert!(
            err.contains("jobs.lms_01_004") && err.contains(expect),
            "{key}={value}: {err}"
        );
    }
    // Both forms of the list are accepted.
    let out = env
        .command(&["lms-01-004", "--dry-run"])
        .env("AIDT__JOBS__LMS_01_004__THRESHOLDS_MINUTES", "1440, 180,60")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// LMS-01-005 ---------------------------------------------------------------------

const PRAISE_DATE: &str = "2026-03-10";

/// An instant on a KST day `back` days before D (2026-03-10) at h:m:s.ms.
fn at(back: i64, h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
    let d = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap() - Duration::days(back);
    kst()
        .from_local_datetime(&d.and_hms_milli_opt(h, m, s, ms).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// A student's activity: results (when, item, score) and session starts.
#[derive(Default)]
struct Pupil {
    id: Uuid,
    deleted: bool,
    results: Vec<(DateTime<Utc>, String, f64)>,
    sessions: Vec<DateTime<Utc>>,
}

impl Pupil {
    fn new(n: u128) -> Self {
        Pupil {
            id: uid(100 + n),
            ..Default::default()
        }
    }

    /// One activity at 10:00 KST on each day `back` before D: a result of
    /// a low score (one item a day never makes an average) on even days, a
    /// session on odd ones, so streaks mix both.
    fn days(mut self, backs: impl IntoIterator<Item = i64>) -> Self {
        for back in backs {
            if back % 2 == 0 {
                self.results
                    .push((at(back, 10, 0, 0, 0), format!("S{back}"), 40.0));
            } else {
                self.sessions.push(at(back, 10, 0, 0, 0));
            }
        }
        self
    }

    fn result(mut self, when: DateTime<Utc>, item: &str, score: f64) -> Self {
        self.results.push((when, item.to_string(), score));
        self
    }

    fn scores_on_d(self, scores: &[f64]) -> Self {
        scores.iter().enumerate().fold(self, |p, (i, &s)| {
            p.result(at(0, 12, i as u32, 0, 0), &format!("I{i}"), s)
        })
    }
}

/// Assignments of the praise fixtures: (id, lecture, due, status).
fn praise_assignments() -> Vec<(i64, &'static str, DateTime<Utc>, &'static str)> {
    vec![
        (10, "P1", at(1, 23, 59, 59, 999), "CLOSED"), // D-1: not D's
        (11, "P1", at(0, 18, 0, 0, 0), "CLOSED"),
        (12, "P1", at(0, 23, 59, 59, 999), "OPEN"),
        (13, "P1", at(-1, 0, 0, 0, 0), "OPEN"), // D+1 00:00: not D's
        (20, "P2", at(-1, 0, 0, 0, 0), "OPEN"),
        (30, "P3", at(0, 12, 0, 0, 0), "CLOSED"),
    ]
}

struct PraiseWorld {
    pupils: Vec<Pupil>,
    /// (lecture, user) memberships.
    members: Vec<(&'static str, Uuid)>,
    /// (asgn_id, user, submit_dt).
    submits: Vec<(i64, Uuid, Option<DateTime<Utc>>)>,
}

fn praise_world() -> PraiseWorld {
    let pupils = vec![
        Pupil::new(1).days(0..6),  // streak 6
        Pupil::new(2).days(0..7),  // 7
        Pupil::new(3).days(0..13), // 13
        Pupil::new(4).days(0..14), // 14
        Pupil::new(5).days([0, 1, 2, 4, 5, 6]),
        // The KST day boundary: the 7th day's only activity at
        // 23:59:59.999 (on D) or at 00:00 KST the next day (not on D), or
        // at 00:00 of D (on D).
        Pupil::new(6)
            .days(1..7)
            .result(at(0, 23, 59, 59, 999), "late", 40.0),
        Pupil::new(7)
            .days(1..7)
            .result(at(-1, 0, 0, 0, 0), "next", 40.0),
        Pupil::new(8)
            .days(1..7)
            .result(at(0, 0, 0, 0, 0), "first", 40.0),
        // Averages: 90 over 5, 89.9 over 5, 100 over 4 (and 90 over 4 below).
        Pupil::new(9).scores_on_d(&[90.0, 90.0, 90.0, 90.0, 90.0]),
        Pupil::new(10).scores_on_d(&[90.0, 90.0, 90.0, 90.0, 89.5]),
        Pupil::new(11).scores_on_d(&[100.0, 100.0, 100.0, 100.0]),
        // 90 over 4: the average is enough, the items are not.
        Pupil::new(15).scores_on_d(&[90.0, 90.0, 90.0, 90.0]),
        // 4 items on D and a 5th at 23:59:59.999 the day before.
        Pupil::new(12)
            .scores_on_d(&[100.0, 100.0, 100.0, 100.0])
            .result(at(1, 23, 59, 59, 999), "I9", 100.0),
        // The 5th at 23:59:59.999 of D.
        Pupil::new(13)
            .scores_on_d(&[95.0, 95.0, 95.0, 95.0])
            .result(at(0, 23, 59, 59, 999), "I9", 90.0),
        // Deleted: earns all, gets nothing.
        Pupil {
            deleted: true,
            ..Pupil::new(14).days(0..7).scores_on_d(&[100.0; 5])
        },
        // Assignment pupils (no learning activity).
        Pupil::new(20), // on time for 11 and 12 (12 at its due instant)
        Pupil::new(21), // 12 late
        Pupil::new(22), // 12 never submitted
        Pupil::new(23), // P2 only: nothing due on D
        Pupil::new(24), // P3: its one assignment, CLOSED, on time
    ];
    let p = |n: u128| uid(100 + n);
    let mut members = Vec::new();
    for n in [20, 21, 22, 14] {
        members.push(("P1", p(n)));
    }
    members.push(("P2", p(23)));
    members.push(("P3", p(24)));
    let early = Some(at(0, 9, 0, 0, 0));
    let submits = vec![
        (11, p(20), early),
        (12, p(20), Some(at(0, 23, 59, 59, 999))),
        (11, p(21), early),
        (12, p(21), Some(at(-1, 0, 0, 0, 0))),
        (11, p(22), early),
        (20, p(23), early),
        (30, p(24), early),
        (11, p(14), early),
        (12, p(14), early),
    ];
    PraiseWorld {
        pupils,
        members,
        submits,
    }
}

async fn seed_praise(pg: &PgPool, w: &PraiseWorld) {
    for pupil in &w.pupils {
        add_user(pg, pupil.id, "S", if pupil.deleted { "Y" } else { "N" }).await;
        for (when, item, score) in &pupil.results {
            sqlx::query(
                "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, solved_at)
                 VALUES ($1, 'P1', $2, 'C1', 'E4MATA01B01C01', 'Y', $3::float8::numeric, $4)",
            )
            .bind(pupil.id)
            .bind(item)
            .bind(score)
            .bind(when)
            .execute(pg)
            .await
            .unwrap();
        }
        for when in &pupil.sessions {
            sqlx::query(
                "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at)
                 VALUES ($1, 'P1', $2, $2 + interval '20 minutes')",
            )
            .bind(pupil.id)
            .bind(when)
            .execute(pg)
            .await
            .unwrap();
        }
    }
    let teacher = uid(99);
    add_user(pg, teacher, "T", "N").await;
    add_member(pg, "P1", teacher).await;
    for (lecture, user) in &w.members {
        add_member(pg, lecture, *user).await;
    }
    for (id, lecture, due, status) in praise_assignments() {
        sqlx::query(
            "INSERT INTO tb_lms_assignment (asgn_id, lecture_code, teacher_id, title, due_dt, status)
             VALUES ($1, $2, $3, 'hw', $4, $5)",
        )
        .bind(id)
        .bind(lecture)
        .bind(teacher)
        .bind(due)
        .bind(status)
        .execute(pg)
        .await
        .unwrap();
    }
    for (asgn, user, when) in &w.submits {
        sqlx::query("INSERT INTO tb_lms_assignment_submit (asgn_id, user_id, submit_dt) VALUES ($1, $2, $3)")
            .bind(asgn)
            .bind(user)
            .bind(when)
            .execute(pg)
            .await
            .unwrap();
    }
}

/// The praise of D from the fixtures, by the rules written out here:
/// (user, ref_key) → the figure the body must show.
fn expected_praise(w: &PraiseWorld) -> std::collections::BTreeMap<(Uuid, String), String> {
    let d = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    let kst_day = |t: &DateTime<Utc>| t.with_timezone(&kst()).date_naive();
    let mut out = std::collections::BTreeMap::new();
    for pupil in w.pupils.iter().filter(|p| !p.deleted) {
        // Streak: consecutive learning days ending on D.
        let days: BTreeSet<chrono::NaiveDate> = pupil
            .results
            .iter()
            .map(|r| kst_day(&r.0))
            .chain(pupil.sessions.iter().map(kst_day))
            .collect();
        let mut streak = 0;
        while days.contains(&(d - Duration::days(streak))) {
            streak += 1;
        }
        if streak > 0 && streak % 7 == 0 {
            out.insert(
                (pupil.id, "2026-03-10:streak".into()),
                format!("{streak}일"),
            );
        }
        // Average over the distinct items solved on D.
        let on_d: Vec<&(DateTime<Utc>, String, f64)> = pupil
            .results
            .iter()
            .filter(|r| kst_day(&r.0) == d)
            .collect();
        let items: BTreeSet<&str> = on_d.iter().map(|r| r.1.as_str()).collect();
        if !on_d.is_empty() {
            let avg = on_d.iter().map(|r| r.2).sum::<f64>() / on_d.len() as f64;
            if items.len() >= 5 && avg >= 90.0 {
                out.insert(
                    (pupil.id, "2026-03-10:avg_score".into()),
                    format!("문항 {}개의 평균 점수가 {}점", items.len(), avg),
                );
            }
        }
        // Assignments due on D in the pupil's lectures, all on time.
        let lectures: Vec<&str> = w
            .members
            .iter()
            .filter(|m| m.1 == pupil.id)
            .map(|m| m.0)
            .collect();
        let due: Vec<(i64, DateTime<Utc>)> = praise_assignments()
            .into_iter()
            .filter(|a| lectures.contains(&a.1) && kst_day(&a.2) == d)
            .map(|a| (a.0, a.2))
            .collect();
        let on_time = due.iter().all(|(id, due_dt)| {
            w.submits
                .iter()
                .any(|s| s.0 == *id && s.1 == pupil.id && s.2.is_some_and(|t| t <= *due_dt))
        });
        if !due.is_empty() && on_time {
            out.insert(
                (pupil.id, "2026-03-10:assignments".into()),
                format!("과제 {}개", due.len()),
            );
        }
    }
    out
}

#[tokio::test]
async fn praise_goes_to_streaks_of_seven_high_averages_and_on_time_assignments_once() {
    let env = TestEnv::new().await;
    let world = praise_world();
    seed_praise(env.pg(), &world).await;
    let expected = expected_praise(&world);
    let p = |n: u128| uid(100 + n);
    // The rules' boundaries, spelled out.
    let has =
        |n: u128, reason: &str| expected.contains_key(&(p(n), format!("2026-03-10:{reason}")));
    assert!(!has(1, "streak") && has(2, "streak") && !has(3, "streak") && has(4, "streak"));
    assert!(!has(5, "streak") && has(6, "streak") && !has(7, "streak") && has(8, "streak"));
    assert!(has(9, "avg_score") && !has(10, "avg_score") && !has(11, "avg_score"));
    assert!(!has(15, "avg_score"));
    assert!(!has(12, "avg_score") && has(13, "avg_score"));
    assert!(has(20, "assignments") && !has(21, "assignments") && !has(22, "assignments"));
    assert!(!has(23, "assignments") && has(24, "assignments"));
    let date = Some(date(PRAISE_DATE));

    let dry = env.run_ok("LMS-01-005", date, true).await;
    assert_eq!(message_count(env.pg()).await, 0, "a dry run writes nothing");
    let (_, read, written, _, details) = run_row(env.pg(), dry).await;
    assert_eq!((read, written), (expected.len() as i64, 0));
    assert_eq!(details["would_write"], expected.len());

    let run = env.run_ok("LMS-01-005", date, false).await;
    let rows: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT user_id, ref_key, title, body FROM tb_lms_ntcn_msg WHERE msg_type = 'PRAISE'",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    let got: BTreeSet<(Uuid, String)> = rows.iter().map(|r| (r.0, r.1.clone())).collect();
    assert_eq!(got, expected.keys().cloned().collect::<BTreeSet<_>>());
    for (user, key, title, body) in &rows {
        let figure = &expected[&(*user, key.clone())];
        assert!(
            body.contains(figure.as_str()),
            "{key}: {body} lacks {figure}"
        );
        assert!(body.contains("3월 10일"), "{body}");
        assert!(
            !title.contains('{') && !body.contains('{'),
            "{title} / {body}"
        );
    }
    let (_, read, written, skipped, details) = run_row(env.pg(), run).await;
    assert_eq!(
        (read, written, skipped),
        (expected.len() as i64, expected.len() as i64, 0)
    );
    for reason in ["assignments", "avg_score", "streak"] {
        let n = expected.keys().filter(|k| k.1.ends_with(reason)).count();
        assert_eq!(details["by_reason"][reason]["written"], n, "{reason}");
    }

    // A rerun writes nothing twice.
    env.run_ok("LMS-01-005", date, false).await;
    assert_eq!(message_count(env.pg()).await, expected.len() as i64);

    // The next day: no streak goes on (only pupil 7 learned, at 00:00 KST:
    // one day, one item), and the one assignment due then that was
    // submitted in time (20, at 2026-03-11 00:00 KST, pupil 23) is praised.
    env.run_ok(
        "LMS-01-005",
        Some(super::helpers::date("2026-03-11")),
        false,
    )
    .await;
    let next: BTreeSet<(Uuid, String)> = message_keys(env.pg())
        .await
        .into_iter()
        .filter(|k| k.2.starts_with("2026-03-11"))
        .map(|k| (k.0, k.2))
        .collect();
    assert_eq!(
        next,
        [(p(23), "2026-03-11:assignments".to_string())]
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn a_streak_as_long_as_the_look_back_window_is_skipped_and_reported() {
    let mut env = TestEnv::new().await;
    let world = PraiseWorld {
        pupils: vec![Pupil::new(1).days(0..21), Pupil::new(2).days(0..14)],
        members: vec![],
        submits: vec![],
    };
    seed_praise(env.pg(), &world).await;
    // A 21-day window: pupil 1's streak fills it (length unknown), pupil 2's
    // 14 fits.
    env.configure_job("lms_01_005", "streak_lookback_days", 21);
    let run = env
        .run_ok("LMS-01-005", Some(date(PRAISE_DATE)), false)
        .await;
    let expected: BTreeSet<_> = [(
        uid(102),
        "PRAISE".to_string(),
        "2026-03-10:streak".to_string(),
    )]
    .into_iter()
    .collect();
    assert_eq!(message_keys(env.pg()).await, expected);
    let (_, _, _, skipped, details) = run_row(env.pg(), run).await;
    assert_eq!(skipped, 1);
    assert_eq!(details["streaks_beyond_lookback"], 1);
}

#[tokio::test]
async fn the_seeded_day_gives_both_jobs_every_kind_of_message() {
    let env = TestEnv::new().await;
    aidt_dev::seed::seed(
        &env.app,
        &aidt_dev::seed::SeedArgs::new(400, 200, Some(date("2026-03-05")), 11),
    )
    .await
    .expect("seed succeeds");
    let date = Some(date("2026-03-05"));
    let praise = env.run_ok("LMS-01-005", date, false).await;
    let due = env.run_ok("LMS-01-004", date, false).await;
    let (_, _, _, _, p) = run_row(env.pg(), praise).await;
    for reason in ["assignments", "avg_score", "streak"] {
        assert!(
            p["by_reason"][reason]["written"].as_u64().unwrap() > 0,
            "{reason}: {p}"
        );
    }
    let (_, _, _, skipped, d) = run_row(env.pg(), due).await;
    for threshold in ["60m", "1440m"] {
        assert!(
            d["by_threshold"][threshold]["written"].as_u64().unwrap() > 0,
            "{threshold}: {d}"
        );
    }
    // The seed's OPEN assignment without a due_dt: skipped and named.
    let undated: Vec<i64> = sqlx::query_scalar(
        "SELECT asgn_id FROM tb_lms_assignment WHERE status = 'OPEN' AND due_dt IS NULL",
    )
    .fetch_all(env.pg())
    .await
    .unwrap();
    assert_eq!(undated.len(), 1);
    assert_eq!(skipped, 1);
    assert_eq!(d["null_due_dt_count"], 1);
    assert_eq!(d["null_due_dt"][0]["asgn_id"], undated[0]);
}
