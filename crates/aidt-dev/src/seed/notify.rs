//! What the notification jobs need beyond the business date's own activity:
//!
//! - LMS-01-005 (praise): learning streaks. Part of the pupils active on D
//!   also learned on the 5, 6, 12, 13 or 20 days before it (evening
//!   sessions, already sent to KERIS so the dashboard job has nothing new to
//!   send), giving streaks of 6, 7, 13, 14 and 21 days on D: praise on 7, 14
//!   and 21, none on 6 and 13. The day's own results and the assignments due
//!   on D (activity.rs) give the other two reasons.
//! - LMS-01-004 (deadline reminders): a short quiz in about one lecture in
//!   eight, `OPEN`, due 00:10–00:55 KST right after D, so that a run
//!   `--date D` (judging as of D's end) sends the 1-hour reminder, beside
//!   the 24-hour ones of the assignments due at 23:59 the next day; part of
//!   the members have already submitted, some have a row without
//!   `submit_dt`. One more `OPEN` assignment, in the first lecture, has no
//!   `due_dt` (the LMS's column allows NULL): the job skips and names it.
//!
//! Deterministic like the rest: a stream of its own, times from the date.

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use sqlx::PgConnection;
use uuid::Uuid;

use super::gen::{self, chance};
use super::world::{World, SUBJECTS};
use super::{col, insert};

/// Days learned before D by a pupil with a streak: streaks of one more.
const DAYS_BEFORE: [i64; 7] = [5, 6, 6, 12, 13, 13, 20];

struct Session {
    user: Uuid,
    lecture: usize,
    started_at: DateTime<Utc>,
}

struct Quiz {
    asgn_id: i64,
    lecture: usize,
    title: String,
    /// `None`: a NULL `due_dt`.
    due_dt: Option<DateTime<Utc>>,
}

pub(super) async fn write(
    conn: &mut PgConnection,
    world: &World,
    seed: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let rng = &mut gen::stream(seed, "notify");
    let day = &world.day;

    let mut sessions = Vec::new();
    for s in world.active_students() {
        if !chance(rng, 0.15) {
            continue;
        }
        let student = &world.students[s];
        let user = world.user_of(s);
        let lecture = *gen::pick(rng, &student.lectures);
        for back in 1..=*gen::pick(rng, &DAYS_BEFORE) {
            let started_at = day.at(-back, 19, 0) + Duration::seconds(rng.gen_range(0..7200));
            // Nobody learned before registering: the streak is shorter.
            if started_at < user.reg_dt {
                break;
            }
            sessions.push(Session {
                user: user.id,
                lecture,
                started_at,
            });
        }
    }

    let first_id: i64 =
        sqlx::query_scalar("SELECT coalesce(max(asgn_id), 0) + 1 FROM tb_lms_assignment")
            .fetch_one(&mut *conn)
            .await
            .context("Failed to read the last assignment id")?;
    let mut quizzes = Vec::new();
    let mut submits: Vec<(i64, Uuid, Option<DateTime<Utc>>)> = Vec::new();
    for (l, lecture) in world.lectures.iter().enumerate() {
        if !chance(rng, 0.125) {
            continue;
        }
        let asgn_id = first_id + quizzes.len() as i64;
        let subject = SUBJECTS[world.courses[lecture.course].subject].ko;
        quizzes.push(Quiz {
            asgn_id,
            lecture: l,
            title: format!("[{subject}] 마감 임박 확인 퀴즈"),
            due_dt: Some(day.at(1, 0, rng.gen_range(10..=55))),
        });
        for &m in &lecture.members {
            let user = world.user_of(m).id;
            match gen::weighted(rng, &[40, 20, 40]) {
                0 => submits.push((
                    asgn_id,
                    user,
                    Some(day.between(rng, day.at(0, 12, 0), day.end)),
                )),
                1 => submits.push((asgn_id, user, None)),
                _ => {}
            }
        }
    }

    // After the draws, so the rest of the world does not depend on it.
    if !world.lectures.is_empty() {
        let subject = SUBJECTS[world.courses[world.lectures[0].course].subject].ko;
        quizzes.push(Quiz {
            asgn_id: first_id + quizzes.len() as i64,
            lecture: 0,
            title: format!("[{subject}] 마감일 미정 과제"),
            due_dt: None,
        });
    }

    let mut lines = vec![
        insert(
            conn,
            "tb_lms_lrn_session",
            &sessions,
            "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at, keris_init_sent_at, keris_term_sent_at)
             SELECT u, l, s, s + interval '25 minutes', s + interval '1 minute', s + interval '26 minutes'
               FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS t(u, l, s)",
            |q, rows| {
                q.bind(col(rows, |r| r.user))
                    .bind(col(rows, |r| world.lectures[r.lecture].code.clone()))
                    .bind(col(rows, |r| r.started_at))
            },
        )
        .await?,
        insert(
            conn,
            "tb_lms_assignment",
            &quizzes,
            "INSERT INTO tb_lms_assignment (asgn_id, lecture_code, teacher_id, title, due_dt, status)
             SELECT i, l, t, n, d, 'OPEN' FROM UNNEST($1::int8[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[]) AS x(i, l, t, n, d)",
            |q, rows| {
                q.bind(col(rows, |r| r.asgn_id))
                    .bind(col(rows, |r| world.lectures[r.lecture].code.clone()))
                    .bind(col(rows, |r| world.users[world.lectures[r.lecture].teacher].id))
                    .bind(col(rows, |r| r.title.clone()))
                    .bind(col(rows, |r| r.due_dt))
            },
        )
        .await?,
    ];
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('tb_lms_assignment', 'asgn_id'), (SELECT max(asgn_id) FROM tb_lms_assignment))
          WHERE EXISTS (SELECT 1 FROM tb_lms_assignment)",
    )
    .execute(&mut *conn)
    .await
    .context("Failed to advance the id sequence of tb_lms_assignment")?;
    lines.push(
        insert(
            conn,
            "tb_lms_assignment_submit",
            &submits,
            "INSERT INTO tb_lms_assignment_submit (asgn_id, user_id, submit_dt)
             SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::timestamptz[])",
            |q, rows| {
                q.bind(col(rows, |r| r.0))
                    .bind(col(rows, |r| r.1))
                    .bind(col(rows, |r| r.2))
            },
        )
        .await?,
    );
    Ok(lines)
}
