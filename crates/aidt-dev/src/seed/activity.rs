//! Learning activity: the business date's results, sessions and progress,
//! the teacher-dashboard rows, assignments with submissions, notification
//! messages, and the daily statistics of the week before the business date
//! (the business date's own statistics are what the daily jobs compute).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use sqlx::PgConnection;
use uuid::Uuid;

use super::gen::{self, chance, Day};
use super::world::{Level, World, SUBJECTS};
use super::{col, insert};

/// Days of daily statistics before the business date.
const STATS_DAYS: i64 = 7;

pub(super) async fn write(
    conn: &mut PgConnection,
    world: &World,
    seed: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let learning = Learning::generate(world, &mut gen::stream(seed, "learning"));
    let homework = Homework::generate(world, &mut gen::stream(seed, "assignments"));
    let praise = praise_messages(world, &mut gen::stream(seed, "praise"));
    let stats = DailyStats::generate(world, &mut gen::stream(seed, "daily-stats"));
    let view: Vec<&ProgressRow> = learning
        .progress
        .iter()
        .filter(|p| p.on_dashboard)
        .collect();
    let messages: Vec<&MessageRow> = homework.due_messages.iter().chain(&praise).collect();
    Ok(vec![
        results(conn, world, &learning.results).await?,
        sessions(conn, world, &learning.sessions).await?,
        progress(conn, world, &learning.progress).await?,
        dashboard(conn, world, &view).await?,
        assignments(conn, world, &homework.assignments).await?,
        submissions(conn, &homework.submissions).await?,
        notification_messages(conn, &messages).await?,
        competency_index(conn, &stats.competency).await?,
        learning_stats(conn, world, &stats.learning).await?,
    ])
}

struct ResultRow {
    user: Uuid,
    lecture: usize,
    item: usize,
    std_sys: usize,
    correct: bool,
    score: u8,
    duration_sec: i32,
    solved_at: DateTime<Utc>,
}

struct SessionRow {
    user: Uuid,
    lecture: usize,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    init_sent_at: Option<DateTime<Utc>>,
    term_sent_at: Option<DateTime<Utc>>,
}

struct ProgressRow {
    user: Uuid,
    level: Level,
    std_sys: usize,
    lecture: usize,
    rate: f64,
    completed_at: Option<DateTime<Utc>>,
    upd_dt: DateTime<Utc>,
    keris_sent_at: Option<DateTime<Utc>>,
    /// The teacher dashboard shows only part of the progress.
    on_dashboard: bool,
    score: Option<f64>,
    /// The dashboard has no level yet for some rows (not yet assessed).
    level_missing: bool,
}

#[derive(Default)]
struct Learning {
    results: Vec<ResultRow>,
    sessions: Vec<SessionRow>,
    progress: Vec<ProgressRow>,
}

impl Learning {
    fn generate(world: &World, rng: &mut StdRng) -> Self {
        let mut out = Learning::default();
        for (s, student) in world.students.iter().enumerate() {
            let user = world.user_of(s);
            // (std_sys) -> (lecture, scores, last time)
            let mut touched: BTreeMap<usize, (usize, Vec<u8>, DateTime<Utc>)> = BTreeMap::new();
            for &lecture in &student.today {
                let course = world.lectures[lecture].course;
                for _ in 0..if chance(rng, 0.2) { 2 } else { 1 } {
                    let session = session(rng, &world.day, user.id, lecture);
                    let until = session
                        .ended_at
                        .unwrap_or(session.started_at + Duration::minutes(40));
                    let until = world.day.clamp(until);
                    for _ in 0..rng.gen_range(2..=10) {
                        let content = world.pick_content(rng, student, course);
                        let item = world.pick_item(rng, content);
                        let mut solved_at = world.day.between(rng, session.started_at, until);
                        // Some pupils try the same item again a little later.
                        for attempt in 0..if chance(rng, 0.1) { 2 } else { 1 } {
                            if attempt > 0 {
                                solved_at = world
                                    .day
                                    .clamp(solved_at + Duration::seconds(rng.gen_range(30..600)));
                            }
                            let (correct, score) = world.items[item].answer(rng, student.ability);
                            let std_sys = *gen::pick(rng, &world.items[item].std_sys);
                            let entry =
                                touched
                                    .entry(std_sys)
                                    .or_insert((lecture, Vec::new(), solved_at));
                            entry.1.push(score);
                            entry.2 = entry.2.max(solved_at);
                            out.results.push(ResultRow {
                                user: user.id,
                                lecture,
                                item,
                                std_sys,
                                correct,
                                score,
                                duration_sec: rng.gen_range(10..=300),
                                solved_at,
                            });
                        }
                    }
                    out.sessions.push(session);
                }
            }
            let level = world.level_of(user);
            let mut seen: BTreeSet<usize> = touched.keys().copied().collect();
            for (std_sys, (lecture, scores, last)) in touched {
                let avg = scores.iter().map(|&x| f64::from(x)).sum::<f64>() / scores.len() as f64;
                out.progress.push(progress_row(
                    rng,
                    user.id,
                    level,
                    std_sys,
                    lecture,
                    last,
                    Some(avg),
                    true,
                ));
            }
            // Earlier progress in other standards, already sent to KERIS.
            for _ in 0..rng.gen_range(1..=3) {
                let lecture = *gen::pick(rng, &student.lectures);
                let course = &world.courses[world.lectures[lecture].course];
                let area = gen::pick(rng, &course.areas);
                let std_sys = *gen::pick(rng, area);
                if seen.insert(std_sys) {
                    let since = user.reg_dt.max(world.day.start - Duration::days(30));
                    let upd_dt = world.day.between(rng, since, world.day.start);
                    out.progress.push(progress_row(
                        rng, user.id, level, std_sys, lecture, upd_dt, None, false,
                    ));
                }
            }
        }
        out
    }
}

fn session(rng: &mut StdRng, day: &Day, user: Uuid, lecture: usize) -> SessionRow {
    let started_at = day.learning_time(rng);
    // A few sessions are still open: the pupil closed the tab without logging out.
    let ended_at = (!chance(rng, 0.07))
        .then(|| day.clamp(started_at + Duration::seconds(rng.gen_range(300..3000))));
    // The hourly dashboard job has sent most start/end events already.
    let init_sent_at =
        chance(rng, 0.7).then(|| started_at + Duration::seconds(rng.gen_range(5..3600)));
    let term_sent_at = match (ended_at, init_sent_at) {
        (Some(end), Some(_)) if chance(rng, 0.8) => {
            Some(end + Duration::seconds(rng.gen_range(5..3600)))
        }
        _ => None,
    };
    SessionRow {
        user,
        lecture,
        started_at,
        ended_at,
        init_sent_at,
        term_sent_at,
    }
}

#[allow(clippy::too_many_arguments)]
fn progress_row(
    rng: &mut StdRng,
    user: Uuid,
    level: Level,
    std_sys: usize,
    lecture: usize,
    upd_dt: DateTime<Utc>,
    score: Option<f64>,
    today: bool,
) -> ProgressRow {
    let rate = if chance(rng, 0.25) {
        100.0
    } else {
        f64::from(rng.gen_range(5..100))
    };
    // Today's changes are partly still unsent; earlier ones were all sent.
    let keris_sent_at =
        (!today || chance(rng, 0.5)).then(|| upd_dt + Duration::seconds(rng.gen_range(60..3600)));
    let level_missing = chance(rng, 0.12);
    let score = match score {
        Some(s) => Some((s * 100.0).round() / 100.0),
        None if level_missing && chance(rng, 0.5) => None,
        None => Some(f64::from(rng.gen_range(30..=100))),
    };
    ProgressRow {
        user,
        level,
        std_sys,
        lecture,
        rate,
        completed_at: (rate >= 100.0).then_some(upd_dt),
        upd_dt,
        keris_sent_at,
        on_dashboard: chance(rng, 0.7),
        score,
        level_missing,
    }
}

async fn results(
    conn: &mut PgConnection,
    world: &World,
    rows: &[ResultRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_lrn_result",
        rows,
        "INSERT INTO tb_lms_lrn_result (user_id, lecture_code, item_id, content_id, std_sys_id, correct_yn, score, duration_sec, solved_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[],
                              $8::int4[], $9::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.user))
                .bind(col(rows, |r| world.lectures[r.lecture].code.clone()))
                .bind(col(rows, |r| world.items[r.item].id.clone()))
                .bind(col(rows, |r| world.contents[world.items[r.item].content].id.clone()))
                .bind(col(rows, |r| world.std_sys[r.std_sys].id.clone()))
                .bind(col(rows, |r| if r.correct { "Y" } else { "N" }))
                .bind(col(rows, |r| i32::from(r.score)))
                .bind(col(rows, |r| r.duration_sec))
                .bind(col(rows, |r| r.solved_at))
        },
    )
    .await
}

async fn sessions(
    conn: &mut PgConnection,
    world: &World,
    rows: &[SessionRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_lrn_session",
        rows,
        "INSERT INTO tb_lms_lrn_session (user_id, lecture_code, started_at, ended_at, keris_init_sent_at, keris_term_sent_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.user))
                .bind(col(rows, |r| world.lectures[r.lecture].code.clone()))
                .bind(col(rows, |r| r.started_at))
                .bind(col(rows, |r| r.ended_at))
                .bind(col(rows, |r| r.init_sent_at))
                .bind(col(rows, |r| r.term_sent_at))
        },
    )
    .await
}

async fn progress(
    conn: &mut PgConnection,
    world: &World,
    rows: &[ProgressRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_lrn_progress",
        rows,
        "INSERT INTO tb_lms_lrn_progress (user_id, std_sys_id, progress_rate, completed_at, upd_dt, keris_sent_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::float8[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.user))
                .bind(col(rows, |r| world.std_sys[r.std_sys].id.clone()))
                .bind(col(rows, |r| r.rate))
                .bind(col(rows, |r| r.completed_at))
                .bind(col(rows, |r| r.upd_dt))
                .bind(col(rows, |r| r.keris_sent_at))
        },
    )
    .await
}

/// The teacher dashboard's view of part of the progress, with score and
/// achievement level (missing for some rows).
async fn dashboard(
    conn: &mut PgConnection,
    world: &World,
    rows: &[&ProgressRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys",
        rows,
        "INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys
                (user_id, std_sys_id, lecture_code, teacher_id, score, achievement_level, progress_rate, completed_yn, upd_dt, keris_sent_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::float8[], $6::text[], $7::float8[], $8::text[],
                              $9::timestamptz[], $10::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.user))
                .bind(col(rows, |r| world.std_sys[r.std_sys].id.clone()))
                .bind(col(rows, |r| world.lectures[r.lecture].code.clone()))
                .bind(col(rows, |r| world.users[world.lectures[r.lecture].teacher].id))
                .bind(col(rows, |r| r.score))
                .bind(col(rows, |r| match (r.level_missing, r.score) {
                    (false, Some(score)) => Some(gen::achievement_level(r.level == Level::E, score as u8)),
                    _ => None,
                }))
                .bind(col(rows, |r| r.rate))
                .bind(col(rows, |r| if r.completed_at.is_some() { "Y" } else { "N" }))
                .bind(col(rows, |r| r.upd_dt))
                .bind(col(rows, |r| r.keris_sent_at))
        },
    )
    .await
}

// Assignments and notifications --------------------------------------------------

struct AssignmentRow {
    lecture: usize,
    title: String,
    due_dt: DateTime<Utc>,
    closed: bool,
}

struct SubmitRow {
    asgn_id: i64,
    user: Uuid,
    submit_dt: Option<DateTime<Utc>>,
}

struct MessageRow {
    user: Uuid,
    msg_type: &'static str,
    ref_key: String,
    title: String,
    body: String,
    created_at: DateTime<Utc>,
    read: bool,
}

#[derive(Default)]
struct Homework {
    /// `asgn_id` is the position plus one: ids are given explicitly so
    /// submissions and messages can refer to them.
    assignments: Vec<AssignmentRow>,
    submissions: Vec<SubmitRow>,
    due_messages: Vec<MessageRow>,
}

impl Homework {
    /// Assignments due from two weeks before to a week after the business
    /// date: past ones mostly closed and submitted, future ones open and
    /// partly submitted. Reminders exist for part of the unsubmitted
    /// assignments due around the business date, so the reminder job finds
    /// both done and pending work.
    fn generate(world: &World, rng: &mut StdRng) -> Self {
        let day = &world.day;
        let mut out = Homework::default();
        for (l, lecture) in world.lectures.iter().enumerate() {
            let course = &world.courses[lecture.course];
            for k in 0..gen::weighted(rng, &[25, 40, 25, 10]) {
                let due_dt = day.at(rng.gen_range(-14..=7), 23, 59);
                let created = due_dt - Duration::days(7);
                let past = due_dt < day.end;
                let title = match course.contents.is_empty() {
                    true => format!("{} 과제 {}", SUBJECTS[course.subject].ko, k + 1),
                    false => format!(
                        "[{}] {}",
                        SUBJECTS[course.subject].ko,
                        world.contents[*gen::pick(rng, &course.contents)].title
                    ),
                };
                out.assignments.push(AssignmentRow {
                    lecture: l,
                    title,
                    due_dt,
                    closed: past && chance(rng, 0.85),
                });
                let asgn_id = out.assignments.len() as i64;
                for &m in &lecture.members {
                    let user = world.user_of(m).id;
                    let submit_dt = chance(rng, if past { 0.85 } else { 0.35 }).then(|| {
                        day.between(
                            rng,
                            created,
                            due_dt.min(day.end - Duration::milliseconds(1)),
                        )
                    });
                    let reminded = submit_dt.is_none()
                        && due_dt >= day.at(-3, 0, 0)
                        && due_dt - Duration::days(1) < day.end
                        && chance(rng, 0.7);
                    if reminded {
                        let due_local = due_dt.with_timezone(&aidt_batch::time::seoul());
                        out.due_messages.push(MessageRow {
                            user,
                            msg_type: "ASGN_DUE",
                            ref_key: asgn_id.to_string(),
                            title: "과제 마감 안내".into(),
                            body: format!(
                                "'{}' 과제 마감이 {}입니다. 잊지 말고 제출하세요.",
                                out.assignments[asgn_id as usize - 1].title,
                                due_local.format("%m월 %d일 %H:%M")
                            ),
                            created_at: due_dt - Duration::days(1),
                            read: chance(rng, 0.5),
                        });
                    }
                    out.submissions.push(SubmitRow {
                        asgn_id,
                        user,
                        submit_dt,
                    });
                }
            }
        }
        out
    }
}

/// Praise for pupils who learned steadily, on some of the days before the
/// business date; one message per pupil and day (`ref_key` is the date).
fn praise_messages(world: &World, rng: &mut StdRng) -> Vec<MessageRow> {
    let mut out = Vec::new();
    for s in 0..world.students.len() {
        if !chance(rng, 0.15) {
            continue;
        }
        let user = world.user_of(s);
        let mut days: Vec<i64> = (0..rng.gen_range(1..=2))
            .map(|_| rng.gen_range(1..=6))
            .collect();
        days.dedup();
        for back in days {
            let date = world.day.date - Duration::days(back);
            let created_at = world.day.at(-back, 21, rng.gen_range(0..60));
            if created_at < user.reg_dt {
                continue;
            }
            out.push(MessageRow {
                user: user.id,
                msg_type: "PRAISE",
                ref_key: date.to_string(),
                title: "칭찬 메시지".into(),
                body: "오늘도 꾸준히 학습했어요. 정말 잘했어요!".into(),
                created_at,
                read: chance(rng, 0.6),
            });
        }
    }
    out
}

async fn assignments(
    conn: &mut PgConnection,
    world: &World,
    rows: &[AssignmentRow],
) -> anyhow::Result<(String, u64)> {
    let with_ids: Vec<(i64, &AssignmentRow)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i as i64 + 1, r))
        .collect();
    let line = insert(
        conn,
        "tb_lms_assignment",
        &with_ids,
        "INSERT INTO tb_lms_assignment (asgn_id, lecture_code, teacher_id, title, due_dt, status)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], $6::text[])",
        |q, rows| {
            q.bind(col(rows, |r| r.0))
                .bind(col(rows, |r| world.lectures[r.1.lecture].code.clone()))
                .bind(col(rows, |r| world.users[world.lectures[r.1.lecture].teacher].id))
                .bind(col(rows, |r| r.1.title.clone()))
                .bind(col(rows, |r| r.1.due_dt))
                .bind(col(rows, |r| if r.1.closed { "CLOSED" } else { "OPEN" }))
        },
    )
    .await?;
    // The ids were given explicitly: move the sequence past them so the
    // LMS's own inserts do not collide.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('tb_lms_assignment', 'asgn_id'), (SELECT max(asgn_id) FROM tb_lms_assignment))
          WHERE EXISTS (SELECT 1 FROM tb_lms_assignment)",
    )
    .execute(&mut *conn)
    .await
    .context("Failed to advance the id sequence of tb_lms_assignment")?;
    Ok(line)
}

async fn submissions(conn: &mut PgConnection, rows: &[SubmitRow]) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_assignment_submit",
        rows,
        "INSERT INTO tb_lms_assignment_submit (asgn_id, user_id, submit_dt)
         SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::timestamptz[])",
        |q, rows| {
            q.bind(col(rows, |r| r.asgn_id))
                .bind(col(rows, |r| r.user))
                .bind(col(rows, |r| r.submit_dt))
        },
    )
    .await
}

async fn notification_messages(
    conn: &mut PgConnection,
    rows: &[&MessageRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_ntcn_msg",
        rows,
        "INSERT INTO tb_lms_ntcn_msg (user_id, msg_type, ref_key, title, body, created_at, read_yn)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])",
        |q, rows| {
            q.bind(col(rows, |r| r.user))
                .bind(col(rows, |r| r.msg_type))
                .bind(col(rows, |r| r.ref_key.clone()))
                .bind(col(rows, |r| r.title.clone()))
                .bind(col(rows, |r| r.body.clone()))
                .bind(col(rows, |r| r.created_at))
                .bind(col(rows, |r| if r.read { "Y" } else { "N" }))
        },
    )
    .await
}

// Daily statistics of the previous week -------------------------------------------

struct CompetencyRow {
    base_dt: chrono::NaiveDate,
    user: Uuid,
    lrn_time_sec: i32,
    solved_cnt: i32,
    correct_rate: Option<f64>,
    asgn_submit_rate: Option<f64>,
    attend: bool,
}

struct LearningStatsRow {
    base_dt: chrono::NaiveDate,
    user: Uuid,
    lecture: usize,
    std_sys_cnt: i32,
    item_cnt: i32,
    correct_cnt: i32,
    avg_score: Option<f64>,
    lrn_time_sec: i32,
}

#[derive(Default)]
struct DailyStats {
    competency: Vec<CompetencyRow>,
    learning: Vec<LearningStatsRow>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl DailyStats {
    fn generate(world: &World, rng: &mut StdRng) -> Self {
        let mut out = DailyStats::default();
        for back in 1..=STATS_DAYS {
            let base_dt = world.day.date - Duration::days(back);
            let day_end = world.day.end - Duration::days(back);
            for (s, student) in world.students.iter().enumerate() {
                let user = world.user_of(s);
                if user.reg_dt >= day_end {
                    continue;
                }
                if !chance(rng, 0.75) {
                    out.competency.push(CompetencyRow {
                        base_dt,
                        user: user.id,
                        lrn_time_sec: 0,
                        solved_cnt: 0,
                        correct_rate: None,
                        asgn_submit_rate: None,
                        attend: false,
                    });
                    continue;
                }
                let solved_cnt = rng.gen_range(0..=60);
                let correct_rate = (solved_cnt > 0).then(|| {
                    round2((student.ability * 100.0 + rng.gen_range(-15.0..15.0)).clamp(0.0, 100.0))
                });
                let lrn_time_sec = rng.gen_range(300..=5400);
                out.competency.push(CompetencyRow {
                    base_dt,
                    user: user.id,
                    lrn_time_sec,
                    solved_cnt,
                    correct_rate,
                    asgn_submit_rate: chance(rng, 0.8)
                        .then(|| f64::from(rng.gen_range(0..=4)) * 25.0),
                    attend: true,
                });
                let n = rng.gen_range(1..=student.lectures.len().min(2));
                for &lecture in student.lectures.iter().take(n) {
                    let item_cnt = rng.gen_range(1..=30);
                    let correct_cnt = (f64::from(item_cnt) * student.ability).round() as i32;
                    out.learning.push(LearningStatsRow {
                        base_dt,
                        user: user.id,
                        lecture,
                        std_sys_cnt: rng.gen_range(1..=5.min(item_cnt)),
                        item_cnt,
                        correct_cnt,
                        avg_score: Some(round2(
                            (student.ability * 100.0 + rng.gen_range(-10.0..10.0))
                                .clamp(0.0, 100.0),
                        )),
                        lrn_time_sec: lrn_time_sec / n as i32,
                    });
                }
            }
        }
        out
    }
}

async fn competency_index(
    conn: &mut PgConnection,
    rows: &[CompetencyRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_stdnt_cmpt_idx_daily",
        rows,
        "INSERT INTO tb_lms_stdnt_cmpt_idx_daily (base_dt, user_id, lrn_time_sec, solved_cnt, correct_rate, asgn_submit_rate, attend_yn)
         SELECT * FROM UNNEST($1::date[], $2::uuid[], $3::int4[], $4::int4[], $5::float8[], $6::float8[], $7::text[])",
        |q, rows| {
            q.bind(col(rows, |r| r.base_dt))
                .bind(col(rows, |r| r.user))
                .bind(col(rows, |r| r.lrn_time_sec))
                .bind(col(rows, |r| r.solved_cnt))
                .bind(col(rows, |r| r.correct_rate))
                .bind(col(rows, |r| r.asgn_submit_rate))
                .bind(col(rows, |r| if r.attend { "Y" } else { "N" }))
        },
    )
    .await
}

async fn learning_stats(
    conn: &mut PgConnection,
    world: &World,
    rows: &[LearningStatsRow],
) -> anyhow::Result<(String, u64)> {
    insert(
        conn,
        "tb_lms_stdnt_lrn_stats_daily",
        rows,
        "INSERT INTO tb_lms_stdnt_lrn_stats_daily (base_dt, user_id, lecture_code, std_sys_cnt, item_cnt, correct_cnt, avg_score, lrn_time_sec)
         SELECT * FROM UNNEST($1::date[], $2::uuid[], $3::text[], $4::int4[], $5::int4[], $6::int4[], $7::float8[], $8::int4[])",
        |q, rows| {
            q.bind(col(rows, |r| r.base_dt))
                .bind(col(rows, |r| r.user))
                .bind(col(rows, |r| world.lectures[r.lecture].code.clone()))
                .bind(col(rows, |r| r.std_sys_cnt))
                .bind(col(rows, |r| r.item_cnt))
                .bind(col(rows, |r| r.correct_cnt))
                .bind(col(rows, |r| r.avg_score))
                .bind(col(rows, |r| r.lrn_time_sec))
        },
    )
    .await
}
