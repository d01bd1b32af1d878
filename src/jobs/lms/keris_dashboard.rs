//! LMS-01-008 — KERIS dashboard data, 5 kinds (API-001..005). Hourly.
//!
//! 1. API-001 (start) for every `tb_lms_lrn_session` whose
//!    `keris_init_sent_at` is NULL; then API-002 (end) for every ended
//!    session whose `keris_term_sent_at` is NULL and whose API-001 was sent
//!    (`duration` = `ended_at − started_at` in whole seconds).
//! 2. Refreshes `tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys` set-based (one
//!    `INSERT … SELECT … ON CONFLICT DO UPDATE`): one row per student and
//!    standard-system id with results; `score` is the student's average
//!    score on that id, `achievement_level` follows the spec's cut-offs
//!    ([`achievement_level`], [`level_sql`]), `upd_dt` moves only when a
//!    value changed, so an unchanged row is not sent again.
//!
//!    The refresh is incremental: it recomputes only the students with a
//!    `tb_lms_lrn_result` or `tb_lms_lrn_progress` row changed since the
//!    last committed refresh ([`RefreshScope::ChangedSince`]), which the
//!    watermark `batch_view_watermark` records in the refresh's own
//!    transaction. The contract gives results no change column:
//!    `solved_at` (indexed) stands in for one, and a `result_id` above the
//!    highest the last refresh could see catches a result that arrives
//!    late with an old `solved_at` (an offline upload). Progress has
//!    `upd_dt`. Both time comparisons re-read
//!    `jobs.keris_dashboard.incremental_overlap_secs` before the last
//!    refresh, so a row committed after it by a long transaction with an
//!    earlier timestamp is not missed. Sessions feed no column of the view
//!    (their API-001/002 events are found by their own `keris_*_sent_at`),
//!    so they do not widen the set. What has no change timestamp — a
//!    lecture's `teacher_id`, a student's school, a result or progress row
//!    deleted — is caught up by a full refresh: `--full`, the first run,
//!    and any run once the last full refresh is older than
//!    `jobs.keris_dashboard.full_refresh_after_hours` (24). An incremental
//!    refresh ends in the state a full one would (tested).
//! 3. API-003 (progress) and, for completed rows, API-004 (completion) for
//!    every `tb_lms_lrn_progress` row changed since it was last sent
//!    (`keris_sent_at` NULL or older than `upd_dt`).
//! 4. API-005 (score) for every view row whose score changed since it was
//!    last sent.
//!
//! Each event is sent with the student's KERIS launch token
//! (`tb_lms_keris_token`) through the client of the student's partner
//! (`tb_lms_user.partner_id` matched against the configured Partner-IDs;
//! logs name the partner by its configuration name). A student without a
//! token, or of a partner that is not configured, is skipped, counted and
//! listed by user id in the run's details.
//!
//! Work is read in pages (keyset pagination, `jobs.keris_dashboard.page_size`)
//! and each page is sent concurrently per partner, as many requests in flight
//! as the partner's client allows (`keris.max_concurrency`, rate limit).
//! A `*_sent_at` is set — once per page, set-based — only for events KERIS
//! answered `00000`. A failed event (transient after the client's retries,
//! or a permanent `4xxxx` code, recorded in the details with its code) is
//! counted as failed and left for the next run; the run goes on. After
//! `jobs.keris_dashboard.give_up_after_transient_failures` transient
//! failures in a row for one partner, KERIS is taken to be down for it and
//! its remaining events are counted as failed (`deferred`) without being
//! sent, so an outage does not make every event wait out its retries.
//!
//! Rerun: safe; what was sent is marked and not sent again, what failed is
//! sent by the next run. A stop request ends the run between pages.
//! `--dry-run` refreshes the view inside a transaction that is rolled back
//! (the watermark with it), reports per API how many events would be sent,
//! and sends nothing. `--full` recomputes every student's rows.
//!
//! Partitions (`--partition I/N`): a partition refreshes and sends for its
//! students only (`aidt_user_hash(user_id::text)` in its range, the split of
//! the xAPI jobs). Each partition keeps its own watermark (`part` = `I/N`
//! in `batch_view_watermark`; `''` for unpartitioned runs), which covers
//! its students only; a run of another shape starts from its own mark (a
//! first run of that shape is a full refresh of its students), so mixing
//! shapes costs work, never a missed change. The incremental refresh hashes
//! only the changed students; a partition's full refresh groups every
//! result and keeps its students' groups, so each of N partitions reads the
//! results once.

use crate::jobs::shared::dashboard::{
    count_pending, level_sql, school_level_sql, send_progress, send_scores, send_sessions_ended,
    send_sessions_started, DashboardSender,
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::config::KerisDashboardSettings;
use crate::runtime::partition::{sql_condition, Partition};
use crate::runtime::registry::{DefaultDate, JobDef, KerisFigures, Lock, Schedule, System};
use crate::runtime::{Job, JobContext};

pub const ID: &str = "LMS-01-008";

/// This job in the registry.
pub static DEF: JobDef = JobDef {
    id: ID,
    system: System::Lms,
    name_ko: "Keris 대시보드 데이터 5종 배치",
    name_en: "KERIS dashboard data, 5 kinds",
    about: "Refreshes the teacher view tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys from tb_lms_lrn_result and tb_lms_lrn_progress (incremental; --full recomputes it all), then sends to KERIS what is unsent: tb_lms_lrn_session starts and ends (API-001/002), progress and completion (API-003/004), the view's scores (API-005), and stamps each row's keris_*_sent_at once KERIS accepted it; a rerun sends only what is still unsent.",
    schedule: Schedule::Cron("0 * * * *"),
    schedule_note: Some("the seed's text says every hour, its crontab `0 19 * * *`: hourly, as the text says"),
    default_date: DefaultDate::Today,
    lock: Lock::Group(crate::jobs::KERIS_DASHBOARD_LOCK),
    lock_wait_secs: 300,
    partitioned: true,
    args: full_arg,
    job: Some(&KerisDashboard),
    keris_figures: Some(KerisFigures {
        unit: "calls",
        accepted: &["sent"],
    }),
    ..JobDef::DEFAULTS
};

pub struct KerisDashboard;

/// `--full`: recompute the whole teacher view.
const FULL: &str = "full";

fn full_arg(cmd: clap::Command) -> clap::Command {
    cmd.arg(
        clap::Arg::new(FULL)
            .long("full")
            .action(clap::ArgAction::SetTrue)
            .help("Recompute the whole teacher view, not only the students changed since the last refresh"),
    )
}

#[async_trait::async_trait]
impl Job for KerisDashboard {
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<()> {
        let stamp = Utc::now();
        let settings = &ctx.settings().jobs.keris_dashboard;
        if ctx.dry_run {
            let mut tx = ctx.pg().begin().await?;
            let refresh = refresh_and_advance(&mut tx, ctx, settings, stamp).await?;
            let pending = count_pending(&mut tx, ctx.partition).await?;
            tx.rollback().await?;
            ctx.counts.add_read(pending.values().sum());
            ctx.set_detail("would_refresh_view_rows", refresh.rows_changed);
            ctx.set_detail("view_refresh", &refresh);
            ctx.set_detail("would_send", pending);
            return Ok(());
        }

        let sender = DashboardSender::new(ctx)?;
        let outcome = async {
            send_sessions_started(&sender, ctx.pg()).await?;
            send_sessions_ended(&sender, ctx.pg()).await?;
            ctx.stop_point()?;
            let mut tx = ctx
                .pg()
                .begin()
                .await
                .context("Failed to begin the view refresh")?;
            let refresh = refresh_and_advance(&mut tx, ctx, settings, stamp).await?;
            tx.commit()
                .await
                .context("Failed to commit the view refresh")?;
            tracing::info!(
                rows = refresh.rows_changed,
                mode = refresh.mode,
                reason = refresh.reason,
                students = refresh.students,
                "teacher-dashboard view refreshed"
            );
            ctx.set_detail("view_rows_refreshed", refresh.rows_changed);
            ctx.set_detail("view_refresh", &refresh);
            ctx.progress
                .set_total_with(|| async {
                    let mut conn = ctx.pg().acquire().await?;
                    Ok(ctx.counts.snapshot().read
                        + count_pending(&mut conn, ctx.partition)
                            .await?
                            .values()
                            .sum::<u64>())
                })
                .await;
            send_progress(&sender, ctx.pg()).await?;
            send_scores(&sender, ctx.pg(), None).await
        }
        .await;
        // The figures so far, also when a stop request or an error ended the run.
        sender.finish();
        outcome
    }
}

/// Which students a view refresh recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshScope {
    /// Every student with results.
    All,
    /// Students with a result solved at or after `since` or with a
    /// `result_id` above `after_result_id`, or a progress row whose
    /// `upd_dt` is at or after `since`.
    ChangedSince {
        since: DateTime<Utc>,
        after_result_id: i64,
    },
}

/// The last committed refresh, as `batch_view_watermark` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Watermark {
    pub refreshed_at: DateTime<Utc>,
    pub max_result_id: i64,
    pub full_refresh_at: Option<DateTime<Utc>>,
}

/// The scope of this run's refresh and why: `--full`, no earlier refresh,
/// or a full refresh that is due, else the students changed since the
/// watermark minus the overlap. `now` is the database's clock.
pub fn plan_refresh(
    full: bool,
    watermark: Option<&Watermark>,
    now: DateTime<Utc>,
    settings: &KerisDashboardSettings,
) -> (RefreshScope, &'static str) {
    if full {
        return (RefreshScope::All, "--full");
    }
    let Some(mark) = watermark else {
        return (RefreshScope::All, "no earlier refresh");
    };
    // An out-of-range setting means "never" rather than a panic.
    let period = i64::try_from(settings.full_refresh_after_hours)
        .ok()
        .and_then(chrono::Duration::try_hours);
    let due = settings.full_refresh_after_hours > 0
        && period.is_some_and(|period| mark.full_refresh_at.is_none_or(|at| now - at >= period));
    if due {
        return (
            RefreshScope::All,
            "full refresh due (full_refresh_after_hours)",
        );
    }
    let overlap = i64::try_from(settings.incremental_overlap_secs)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .unwrap_or(chrono::Duration::MAX);
    let since = mark
        .refreshed_at
        .checked_sub_signed(overlap)
        .unwrap_or(DateTime::UNIX_EPOCH);
    (
        RefreshScope::ChangedSince {
            since,
            after_result_id: mark.max_result_id,
        },
        "changed since the last refresh",
    )
}

/// What a run's refresh did, for the run's details.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    /// `full` or `incremental`.
    pub mode: &'static str,
    pub reason: &'static str,
    /// Results solved / progress updated at or after this were re-read.
    pub since: Option<DateTime<Utc>>,
    /// Results with a higher id were re-read.
    pub after_result_id: Option<i64>,
    /// Students recomputed (incremental refreshes only).
    pub students: Option<u64>,
    /// View rows inserted or changed.
    pub rows_changed: u64,
    /// How long the refresh statement took.
    pub elapsed_ms: u64,
}

/// Plans the refresh from the watermark of the run's partition (`''` when
/// unpartitioned), refreshes the view for the run's students and moves the
/// watermark, on `conn`, which the caller runs in a transaction so the view
/// and the watermark commit together (and roll back together for a dry run).
#[tracing::instrument(skip_all, err)]
async fn refresh_and_advance(
    conn: &mut PgConnection,
    ctx: &JobContext,
    settings: &KerisDashboardSettings,
    stamp: DateTime<Utc>,
) -> anyhow::Result<RefreshReport> {
    let part = ctx.partition.map(|p| p.label()).unwrap_or_default();
    let watermark: Option<Watermark> = sqlx::query_as(
        "SELECT refreshed_at, max_result_id, full_refresh_at FROM batch_view_watermark WHERE job_id = $1 AND part = $2",
    )
    .bind(ID)
    .bind(&part)
    .fetch_optional(&mut *conn)
    .await
    .context("Failed to read batch_view_watermark")?;
    // Read before the refresh's statement, whose snapshot is therefore at
    // least as new: everything committed before this point is seen by it.
    let (now, max_result_id): (DateTime<Utc>, i64) =
        sqlx::query_as("SELECT now(), COALESCE(max(result_id), 0) FROM tb_lms_lrn_result")
            .fetch_one(&mut *conn)
            .await
            .context("Failed to read the highest tb_lms_lrn_result.result_id")?;
    let (scope, reason) = plan_refresh(ctx.flag(FULL), watermark.as_ref(), now, settings);
    let started = std::time::Instant::now();
    let counts = refresh_view_in(conn, stamp, scope, ctx.partition).await?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let full_refresh = scope == RefreshScope::All;
    // GREATEST: an overlapping run that refreshed from a newer snapshot
    // keeps its watermark.
    sqlx::query(
        "INSERT INTO batch_view_watermark (job_id, part, refreshed_at, max_result_id, full_refresh_at, run_id)
         VALUES ($1, $6, $2, $3, CASE WHEN $4 THEN $2 END, $5)
         ON CONFLICT (job_id, part) DO UPDATE
            SET refreshed_at = GREATEST(batch_view_watermark.refreshed_at, EXCLUDED.refreshed_at),
                max_result_id = GREATEST(batch_view_watermark.max_result_id, EXCLUDED.max_result_id),
                full_refresh_at = GREATEST(batch_view_watermark.full_refresh_at, EXCLUDED.full_refresh_at),
                run_id = EXCLUDED.run_id, updated_at = now()",
    )
    .bind(ID)
    .bind(now)
    .bind(max_result_id)
    .bind(full_refresh)
    .bind(ctx.run_id)
    .bind(&part)
    .execute(&mut *conn)
    .await
    .context("Failed to move batch_view_watermark")?;
    let (since, after_result_id) = match scope {
        RefreshScope::All => (None, None),
        RefreshScope::ChangedSince {
            since,
            after_result_id,
        } => (Some(since), Some(after_result_id)),
    };
    Ok(RefreshReport {
        mode: if full_refresh { "full" } else { "incremental" },
        reason,
        since,
        after_result_id,
        students: counts.students,
        rows_changed: counts.rows_changed,
        elapsed_ms,
    })
}

/// Rows a refresh changed and, for an incremental one, the students it
/// recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshCounts {
    pub rows_changed: u64,
    pub students: Option<u64>,
}

/// The full refresh: every student with results. Returns the rows inserted
/// or changed (their `upd_dt` is `stamp`).
pub async fn refresh_view(conn: &mut PgConnection, stamp: DateTime<Utc>) -> anyhow::Result<u64> {
    Ok(refresh_view_in(conn, stamp, RefreshScope::All, None)
        .await?
        .rows_changed)
}

/// Inserts or updates one view row per standard-system id with results of
/// each student in `scope` (of `partition`'s students, or all);
/// rows inserted or changed get `upd_dt = stamp`. A student's rows are
/// recomputed from all of the student's results, so the scope decides only
/// who is looked at, never what their rows hold.
#[tracing::instrument(skip_all, err)]
pub async fn refresh_view_in(
    conn: &mut PgConnection,
    stamp: DateTime<Utc>,
    scope: RefreshScope,
    partition: Option<Partition>,
) -> anyhow::Result<RefreshCounts> {
    let level = level_sql(
        &school_level_sql("src.user_id", "src.std_sys_id"),
        "src.score",
    );
    let (changed, only_changed, ours, students) = match scope {
        // A partition keeps its students' groups: the hash is computed per
        // group (student and standard), not per result.
        RefreshScope::All => (
            String::new(),
            "",
            format!(
                "HAVING {}",
                sql_condition(partition, "r.user_id::text")
            ),
            "NULL::bigint",
        ),
        // Both arms use an index (solved_at, the primary key; progress is
        // read whole: its key starts with user_id and upd_dt has no index).
        // A partition hashes each changed student once.
        RefreshScope::ChangedSince { .. } => (
            format!(
                "changed AS (
                     SELECT c.user_id FROM (
                         SELECT r.user_id FROM tb_lms_lrn_result r WHERE r.solved_at >= $2 OR r.result_id > $3
                         UNION
                         SELECT p.user_id FROM tb_lms_lrn_progress p WHERE p.upd_dt >= $2
                     ) c WHERE {}
                 ),",
                sql_condition(partition, "c.user_id::text")
            ),
            "WHERE r.user_id IN (SELECT c.user_id FROM changed c)",
            String::new(),
            "(SELECT count(*) FROM changed)",
        ),
    };
    let sql = format!(
        "WITH {changed} agg AS (
             SELECT r.user_id, r.std_sys_id, round(avg(r.score), 2) AS score,
                    -- the lecture of the latest result
                    (array_agg(r.lecture_code ORDER BY r.solved_at DESC, r.result_id DESC))[1] AS lecture_code
               FROM tb_lms_lrn_result r
              {only_changed}
              GROUP BY r.user_id, r.std_sys_id
              {ours}
         ), src AS (
             SELECT a.user_id, a.std_sys_id, a.lecture_code, l.teacher_id, a.score,
                    p.progress_rate, CASE WHEN p.completed_at IS NULL THEN 'N' ELSE 'Y' END AS completed_yn
               FROM agg a
               LEFT JOIN tb_lms_lecture l ON l.lecture_code = a.lecture_code
               LEFT JOIN tb_lms_lrn_progress p ON p.user_id = a.user_id AND p.std_sys_id = a.std_sys_id
         ), written AS (
             INSERT INTO tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys AS v
                    (user_id, std_sys_id, lecture_code, teacher_id, score, achievement_level, progress_rate, completed_yn, upd_dt)
             SELECT src.user_id, src.std_sys_id, src.lecture_code, src.teacher_id, src.score, {level},
                    src.progress_rate, src.completed_yn, $1
               FROM src
             ON CONFLICT (user_id, std_sys_id) DO UPDATE
                SET lecture_code = EXCLUDED.lecture_code, teacher_id = EXCLUDED.teacher_id, score = EXCLUDED.score,
                    achievement_level = EXCLUDED.achievement_level, progress_rate = EXCLUDED.progress_rate,
                    completed_yn = EXCLUDED.completed_yn, upd_dt = EXCLUDED.upd_dt
              WHERE (v.lecture_code, v.teacher_id, v.score, v.achievement_level, v.progress_rate, v.completed_yn)
                    IS DISTINCT FROM
                    (EXCLUDED.lecture_code, EXCLUDED.teacher_id, EXCLUDED.score, EXCLUDED.achievement_level,
                     EXCLUDED.progress_rate, EXCLUDED.completed_yn)
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM written), {students}"
    );
    let query = sqlx::query_as::<_, (i64, Option<i64>)>(&sql).bind(stamp);
    let query = match scope {
        RefreshScope::All => query,
        RefreshScope::ChangedSince {
            since,
            after_result_id,
        } => query.bind(since).bind(after_result_id),
    };
    let (rows, students) = query
        .fetch_one(conn)
        .await
        .context("Failed to refresh tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys")?;
    Ok(RefreshCounts {
        rows_changed: rows as u64,
        students: students.map(|n| n as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(overlap_secs: u64, full_after_hours: u64) -> KerisDashboardSettings {
        KerisDashboardSettings {
            incremental_overlap_secs: overlap_secs,
            full_refresh_after_hours: full_after_hours,
            ..KerisDashboardSettings::default()
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn refresh_is_incremental_from_the_watermark_minus_the_overlap() {
        let mark = Watermark {
            refreshed_at: t("2026-03-05T10:00:00Z"),
            max_result_id: 41,
            full_refresh_at: Some(t("2026-03-05T04:00:00Z")),
        };
        let (scope, _) = plan_refresh(
            false,
            Some(&mark),
            t("2026-03-05T11:00:00Z"),
            &settings(900, 24),
        );
        assert_eq!(
            scope,
            RefreshScope::ChangedSince {
                since: t("2026-03-05T09:45:00Z"),
                after_result_id: 41
            }
        );
    }

    #[test]
    fn refresh_is_full_with_the_flag_without_a_watermark_and_when_a_full_one_is_due() {
        let mark = Watermark {
            refreshed_at: t("2026-03-05T10:00:00Z"),
            max_result_id: 41,
            full_refresh_at: Some(t("2026-03-04T11:00:00Z")),
        };
        let now = t("2026-03-05T11:00:00Z");
        let s = settings(900, 24);
        assert_eq!(
            plan_refresh(true, Some(&mark), now, &s),
            (RefreshScope::All, "--full")
        );
        assert_eq!(plan_refresh(false, None, now, &s).0, RefreshScope::All);
        // Exactly 24 h since the last full refresh: due; one second earlier: not.
        assert_eq!(
            plan_refresh(false, Some(&mark), now, &s).0,
            RefreshScope::All
        );
        let earlier = now - chrono::Duration::seconds(1);
        assert_ne!(
            plan_refresh(false, Some(&mark), earlier, &s).0,
            RefreshScope::All
        );
        // 0: never periodic.
        assert_ne!(
            plan_refresh(false, Some(&mark), now, &settings(900, 0)).0,
            RefreshScope::All
        );
    }
}
