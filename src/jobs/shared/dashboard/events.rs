//! The paged readers of each API's pending events (sessions, progress,
//! scores), each page sent through the [`DashboardSender`] and marked sent.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::sender::DashboardSender;
use super::{
    parse_level, DashboardRequestBuilder, StudentRef, PENDING_INIT, PENDING_PROGRESS,
    PENDING_SCORE, PENDING_TERM,
};

const STUDENT_JOINS: &str = "LEFT JOIN tb_lms_user u ON u.user_id = x.user_id
     LEFT JOIN tb_lms_keris_token t ON t.user_id = x.user_id";

#[derive(Debug, sqlx::FromRow)]
struct SessionRow {
    session_id: i64,
    #[sqlx(flatten)]
    student: StudentRef,
    lecture_code: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

async fn session_page(
    pg: &PgPool,
    pending: &str,
    ours: &str,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<SessionRow>> {
    let sql = format!(
        "SELECT x.session_id, x.user_id, u.partner_id, t.token, t.access_id, x.lecture_code, x.started_at, x.ended_at
           FROM tb_lms_lrn_session x {STUDENT_JOINS}
          WHERE {pending} AND {ours} AND x.session_id > $1
          ORDER BY x.session_id LIMIT $2"
    );
    sqlx::query_as(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(pg)
        .await
        .context("Failed to read tb_lms_lrn_session")
}

/// API-001 for sessions whose start is not sent yet.
#[tracing::instrument(skip_all, err)]
pub async fn send_sessions_started(
    sender: &DashboardSender<'_>,
    pg: &PgPool,
) -> anyhow::Result<()> {
    send_sessions(sender, pg, true).await
}

/// API-002 for ended sessions whose start was sent and whose end was not.
#[tracing::instrument(skip_all, err)]
pub async fn send_sessions_ended(sender: &DashboardSender<'_>, pg: &PgPool) -> anyhow::Result<()> {
    send_sessions(sender, pg, false).await
}

async fn send_sessions(
    sender: &DashboardSender<'_>,
    pg: &PgPool,
    start: bool,
) -> anyhow::Result<()> {
    let (pending, column) = if start {
        (PENDING_INIT, "keris_init_sent_at")
    } else {
        (PENDING_TERM, "keris_term_sent_at")
    };
    let mut after = 0i64;
    loop {
        sender.ctx.stop_point()?;
        let rows = session_page(pg, pending, &sender.ours, after, sender.page_size).await?;
        let Some(last) = rows.last() else { break };
        after = last.session_id;
        let full = rows.len() as i64 == sender.page_size;
        let events = rows
            .into_iter()
            .map(|r| {
                let builder = if start {
                    DashboardRequestBuilder::Initialized {
                        at: r.started_at,
                        lecture_code: r.lecture_code,
                    }
                } else {
                    let ended = r.ended_at.expect("pending API-002 rows have ended_at");
                    let duration = (ended - r.started_at).num_seconds().max(0) as u64;
                    DashboardRequestBuilder::Terminated {
                        at: ended,
                        lecture_code: r.lecture_code,
                        duration,
                    }
                };
                (r.session_id, r.student, vec![builder])
            })
            .collect();
        let sent = sender.dispatch(events).await;
        if !sent.is_empty() {
            sqlx::query(&format!(
                "UPDATE tb_lms_lrn_session x SET {column} = now() FROM UNNEST($1::bigint[]) AS k(id) WHERE x.session_id = k.id"
            ))
            .bind(&sent)
            .execute(pg)
            .await
            .with_context(|| format!("Failed to set tb_lms_lrn_session.{column}"))?;
        }
        if !full {
            break;
        }
    }
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct ProgressRow {
    #[sqlx(flatten)]
    student: StudentRef,
    std_sys_id: String,
    progress_rate: f64,
    completed_at: Option<DateTime<Utc>>,
    upd_dt: DateTime<Utc>,
}

/// API-003, and API-004 for completed rows, for progress rows changed since
/// they were last sent. A row is marked sent only if every call for it was
/// accepted and it did not change meanwhile (same `upd_dt`).
#[tracing::instrument(skip_all, err)]
pub async fn send_progress(sender: &DashboardSender<'_>, pg: &PgPool) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT x.user_id, u.partner_id, t.token, t.access_id, x.std_sys_id, x.progress_rate::float8 AS progress_rate,
                x.completed_at, x.upd_dt
           FROM tb_lms_lrn_progress x {STUDENT_JOINS}
          WHERE {} AND {} AND (x.user_id, x.std_sys_id) > ($1, $2)
          ORDER BY x.user_id, x.std_sys_id LIMIT $3",
        PENDING_PROGRESS, sender.ours
    );
    let (mut after_user, mut after_id) = (Uuid::nil(), String::new());
    loop {
        sender.ctx.stop_point()?;
        let rows: Vec<ProgressRow> = sqlx::query_as(&sql)
            .bind(after_user)
            .bind(&after_id)
            .bind(sender.page_size)
            .fetch_all(pg)
            .await
            .context("Failed to read tb_lms_lrn_progress")?;
        let Some(last) = rows.last() else { break };
        (after_user, after_id) = (last.student.user_id, last.std_sys_id.clone());
        let full = rows.len() as i64 == sender.page_size;
        let events = rows
            .into_iter()
            .map(|r| {
                let mut builders = vec![DashboardRequestBuilder::Progress {
                    at: r.upd_dt,
                    curriculum: r.std_sys_id.clone(),
                    percent: r.progress_rate,
                }];
                if let Some(at) = r.completed_at {
                    builders.push(DashboardRequestBuilder::Complete {
                        at,
                        curriculum: r.std_sys_id.clone(),
                    });
                }
                (
                    (r.student.user_id, r.std_sys_id, r.upd_dt),
                    r.student,
                    builders,
                )
            })
            .collect();
        let sent = sender.dispatch(events).await;
        mark_sent(pg, "tb_lms_lrn_progress", &sent).await?;
        if !full {
            break;
        }
    }
    Ok(())
}

/// Sets `keris_sent_at` of the `(user_id, std_sys_id)` rows still at the
/// `upd_dt` that was sent; a row changed meanwhile stays pending.
async fn mark_sent(
    pg: &PgPool,
    table: &str,
    sent: &[(Uuid, String, DateTime<Utc>)],
) -> anyhow::Result<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = sent.iter().map(|k| k.0).collect();
    let ids: Vec<&str> = sent.iter().map(|k| k.1.as_str()).collect();
    let versions: Vec<DateTime<Utc>> = sent.iter().map(|k| k.2).collect();
    // `table` is one of this module's constants, never input.
    sqlx::query(&format!(
        "UPDATE {table} x SET keris_sent_at = now()
           FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS k(user_id, std_sys_id, upd_dt)
          WHERE x.user_id = k.user_id AND x.std_sys_id = k.std_sys_id AND x.upd_dt = k.upd_dt"
    ))
    .bind(&users)
    .bind(&ids)
    .bind(&versions)
    .execute(pg)
    .await
    .with_context(|| format!("Failed to set {table}.keris_sent_at"))?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct ScoreRow {
    #[sqlx(flatten)]
    student: StudentRef,
    std_sys_id: String,
    score: f64,
    achievement_level: String,
    upd_dt: DateTime<Utc>,
}

/// API-005 for view rows whose score changed since they were last sent;
/// with `changed_since`, only rows changed at or after that instant (DC-01-004
/// sends what it created or filled).
#[tracing::instrument(skip_all, err)]
pub async fn send_scores(
    sender: &DashboardSender<'_>,
    pg: &PgPool,
    changed_since: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT x.user_id, u.partner_id, t.token, t.access_id, x.std_sys_id, x.score::float8 AS score,
                x.achievement_level, x.upd_dt
           FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys x {STUDENT_JOINS}
          WHERE {} AND {} AND ($4::timestamptz IS NULL OR x.upd_dt >= $4) AND (x.user_id, x.std_sys_id) > ($1, $2)
          ORDER BY x.user_id, x.std_sys_id LIMIT $3",
        PENDING_SCORE, sender.ours
    );
    let (mut after_user, mut after_id) = (Uuid::nil(), String::new());
    loop {
        sender.ctx.stop_point()?;
        let rows: Vec<ScoreRow> = sqlx::query_as(&sql)
            .bind(after_user)
            .bind(&after_id)
            .bind(sender.page_size)
            .bind(changed_since)
            .fetch_all(pg)
            .await
            .context("Failed to read tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys")?;
        let Some(last) = rows.last() else { break };
        (after_user, after_id) = (last.student.user_id, last.std_sys_id.clone());
        let full = rows.len() as i64 == sender.page_size;
        let events = rows
            .into_iter()
            .filter_map(|r| {
                let level = parse_level(&r.achievement_level)?;
                let builder = DashboardRequestBuilder::Score {
                    at: r.upd_dt,
                    curriculum: r.std_sys_id.clone(),
                    score: r.score,
                    level,
                };
                Some((
                    (r.student.user_id, r.std_sys_id, r.upd_dt),
                    r.student,
                    vec![builder],
                ))
            })
            .collect();
        let sent = sender.dispatch(events).await;
        mark_sent(pg, "tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys", &sent).await?;
        if !full {
            break;
        }
    }
    Ok(())
}
