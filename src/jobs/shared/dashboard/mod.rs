//! Sending the KERIS dashboard events (API-001..005), shared by LMS-01-008
//! (which refreshes the teacher view, then sends everything pending) and
//! DC-01-004 (which fills missing achievement levels, then sends their
//! scores): the achievement-level scales, the per-partner sender with its
//! figures and give-up policy, and the paged readers of each API's pending
//! events. `[jobs.keris_dashboard]` configures it.
//!
//! Each event is sent with the student's KERIS launch token through the
//! client of the student's partner; a student without a token or of a
//! partner that is not configured is skipped, counted and listed by the
//! privacy audit's salted hash in the run's details. A `*_sent_at` is set,
//! once per page, only for events KERIS answered `00000`.
//!
//! A partitioned run (LMS-01-008 `--partition I/N`) reads and sends the
//! events of its students only: every reader adds the run's
//! [`JobContext::owns_user_sql`] condition.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::keris::{
    AchievementLevel, Api, ApiResponse, CompleteRequest, InitializedRequest, KerisClient,
    KerisError, ProgressRequest, ScoreRequest, StudentAccessToken, TerminatedRequest,
};
use crate::runtime::partition::{sql_condition, Partition};
use crate::time;

mod events;
mod sender;
pub mod settings;

pub use events::{send_progress, send_scores, send_sessions_ended, send_sessions_started};
pub use sender::DashboardSender;

/// School level of a student, which decides the achievement-level scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchoolLevel {
    Elementary,
    Middle,
    High,
}

impl SchoolLevel {
    /// From `tb_lms_school.school_level` (`E`, `M`, `H`).
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "E" => Some(SchoolLevel::Elementary),
            "M" => Some(SchoolLevel::Middle),
            "H" => Some(SchoolLevel::High),
            _ => None,
        }
    }
}

/// Elementary school: three levels, `≥ 80` A, `≥ 60` B, else C (spec,
/// "Achievement levels"). Lowest score of each level, highest level first.
pub const ELEMENTARY_CUTOFFS: &[(f64, AchievementLevel)] =
    &[(80.0, AchievementLevel::A), (60.0, AchievementLevel::B)];
/// Below every elementary cut-off.
pub const ELEMENTARY_LOWEST: AchievementLevel = AchievementLevel::C;
/// Middle and high school: five levels, `≥ 90` A, `≥ 80` B, `≥ 70` C,
/// `≥ 60` D, else E.
pub const SECONDARY_CUTOFFS: &[(f64, AchievementLevel)] = &[
    (90.0, AchievementLevel::A),
    (80.0, AchievementLevel::B),
    (70.0, AchievementLevel::C),
    (60.0, AchievementLevel::D),
];
/// Below every middle/high-school cut-off.
pub const SECONDARY_LOWEST: AchievementLevel = AchievementLevel::E;

fn scale(level: SchoolLevel) -> (&'static [(f64, AchievementLevel)], AchievementLevel) {
    match level {
        SchoolLevel::Elementary => (ELEMENTARY_CUTOFFS, ELEMENTARY_LOWEST),
        SchoolLevel::Middle | SchoolLevel::High => (SECONDARY_CUTOFFS, SECONDARY_LOWEST),
    }
}

/// The achievement level of `score` (0–100) at `school_level`.
pub fn achievement_level(school_level: SchoolLevel, score: f64) -> AchievementLevel {
    let (cutoffs, lowest) = scale(school_level);
    cutoffs
        .iter()
        .find(|(min, _)| score >= *min)
        .map(|(_, level)| *level)
        .unwrap_or(lowest)
}

/// `A`..`E`.
pub fn level_letter(level: AchievementLevel) -> &'static str {
    match level {
        AchievementLevel::A => "A",
        AchievementLevel::B => "B",
        AchievementLevel::C => "C",
        AchievementLevel::D => "D",
        AchievementLevel::E => "E",
    }
}

fn parse_level(letter: &str) -> Option<AchievementLevel> {
    match letter {
        "A" => Some(AchievementLevel::A),
        "B" => Some(AchievementLevel::B),
        "C" => Some(AchievementLevel::C),
        "D" => Some(AchievementLevel::D),
        "E" => Some(AchievementLevel::E),
        _ => None,
    }
}

/// The same cut-offs as [`achievement_level`], as a SQL expression over the
/// SQL expressions `school_level` (`'E'`/`'M'`/`'H'`) and `score`; NULL when
/// either is NULL or unknown. Generated from the same tables, so the two
/// cannot drift apart.
pub fn level_sql(school_level: &str, score: &str) -> String {
    let case = |level: SchoolLevel| {
        let (cutoffs, lowest) = scale(level);
        let whens: String = cutoffs
            .iter()
            .map(|(min, l)| format!(" WHEN {score} >= {min:.2} THEN '{}'", level_letter(*l)))
            .collect();
        format!("CASE{whens} ELSE '{}' END", level_letter(lowest))
    };
    format!(
        "(CASE WHEN {score} IS NULL THEN NULL WHEN {school_level} = 'E' THEN {} WHEN {school_level} IN ('M', 'H') THEN {} END)",
        case(SchoolLevel::Elementary),
        case(SchoolLevel::Middle)
    )
}

/// School level of the row's student (`tb_lms_user.school_id` →
/// `tb_lms_school`), or, for a student without a known school, the level
/// the standard-system id itself names (its first letter, `E`/`M`/`H`).
pub fn school_level_sql(user_id: &str, std_sys_id: &str) -> String {
    format!(
        "COALESCE((SELECT s.school_level FROM tb_lms_user u JOIN tb_lms_school s ON s.school_id = u.school_id
                     WHERE u.user_id = {user_id}), left({std_sys_id}, 1))"
    )
}

/// The `WHERE` of each API's pending events (without pagination).
/// The table is aliased `x` everywhere.
const PENDING_INIT: &str = "x.keris_init_sent_at IS NULL";
const PENDING_TERM: &str =
    "x.keris_term_sent_at IS NULL AND x.ended_at IS NOT NULL AND x.keris_init_sent_at IS NOT NULL";
const PENDING_PROGRESS: &str = "(x.keris_sent_at IS NULL OR x.upd_dt > x.keris_sent_at)";
const PENDING_SCORE: &str = "x.score IS NOT NULL AND x.achievement_level IS NOT NULL
     AND (x.keris_sent_at IS NULL OR x.upd_dt > x.keris_sent_at)";

/// Events each API would send now (for `--dry-run`), of `partition`'s
/// students or all. API-002 counts ended sessions whose start is not sent
/// yet too: this run would send both.
pub async fn count_pending(
    conn: &mut PgConnection,
    partition: Option<Partition>,
) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let ours = sql_condition(partition, "x.user_id::text");
    let queries = [
        (Api::Initialized, format!("SELECT count(*) FROM tb_lms_lrn_session x WHERE {PENDING_INIT}")),
        (
            Api::Terminated,
            "SELECT count(*) FROM tb_lms_lrn_session x WHERE x.keris_term_sent_at IS NULL AND x.ended_at IS NOT NULL"
                .to_string(),
        ),
        (Api::CurriculumProgress, format!("SELECT count(*) FROM tb_lms_lrn_progress x WHERE {PENDING_PROGRESS}")),
        (
            Api::CurriculumComplete,
            format!("SELECT count(*) FROM tb_lms_lrn_progress x WHERE {PENDING_PROGRESS} AND x.completed_at IS NOT NULL"),
        ),
        (
            Api::CurriculumScore,
            format!("SELECT count(*) FROM tb_view_mvout_tchr_lrn_trgt_stdnt_std_sys x WHERE {PENDING_SCORE}"),
        ),
    ];
    let mut out = BTreeMap::new();
    for (api, sql) in queries {
        let n: i64 = sqlx::query_scalar(&format!("{sql} AND {ours}"))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("Failed to count {api} events"))?;
        out.insert(api.id(), n as u64);
    }
    Ok(out)
}

/// A student as the pages read them: partner and KERIS token (NULL when
/// the user row or token row is missing).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StudentRef {
    pub user_id: Uuid,
    pub partner_id: Option<Uuid>,
    pub token: Option<String>,
    pub access_id: Option<String>,
}

/// One dashboard call, ready to go.
#[derive(Debug, Clone)]
pub enum DashboardRequest {
    Initialized(InitializedRequest),
    Terminated(TerminatedRequest),
    Progress(ProgressRequest),
    Complete(CompleteRequest),
    Score(ScoreRequest),
}

impl DashboardRequest {
    pub fn api(&self) -> Api {
        match self {
            DashboardRequest::Initialized(_) => Api::Initialized,
            DashboardRequest::Terminated(_) => Api::Terminated,
            DashboardRequest::Progress(_) => Api::CurriculumProgress,
            DashboardRequest::Complete(_) => Api::CurriculumComplete,
            DashboardRequest::Score(_) => Api::CurriculumScore,
        }
    }

    async fn send(&self, client: &KerisClient) -> Result<ApiResponse, KerisError> {
        match self {
            DashboardRequest::Initialized(r) => client.initialized(r).await,
            DashboardRequest::Terminated(r) => client.terminated(r).await,
            DashboardRequest::Progress(r) => client.curriculum_progress(r).await,
            DashboardRequest::Complete(r) => client.curriculum_complete(r).await,
            DashboardRequest::Score(r) => client.curriculum_score(r).await,
        }
    }
}

/// A request without its token: the page builds these, the sender adds the
/// student's token once it has resolved it.
#[derive(Debug, Clone)]
pub enum DashboardRequestBuilder {
    Initialized {
        at: DateTime<Utc>,
        lecture_code: String,
    },
    Terminated {
        at: DateTime<Utc>,
        lecture_code: String,
        duration: u64,
    },
    Progress {
        at: DateTime<Utc>,
        curriculum: String,
        percent: f64,
    },
    Complete {
        at: DateTime<Utc>,
        curriculum: String,
    },
    Score {
        at: DateTime<Utc>,
        curriculum: String,
        score: f64,
        level: AchievementLevel,
    },
}

impl DashboardRequestBuilder {
    fn api(&self) -> Api {
        match self {
            DashboardRequestBuilder::Initialized { .. } => Api::Initialized,
            DashboardRequestBuilder::Terminated { .. } => Api::Terminated,
            DashboardRequestBuilder::Progress { .. } => Api::CurriculumProgress,
            DashboardRequestBuilder::Complete { .. } => Api::CurriculumComplete,
            DashboardRequestBuilder::Score { .. } => Api::CurriculumScore,
        }
    }

    fn build(self, user_id: Uuid, access_token: StudentAccessToken) -> DashboardRequest {
        let ts = |at: DateTime<Utc>| at.with_timezone(&time::seoul());
        match self {
            DashboardRequestBuilder::Initialized { at, lecture_code } => {
                DashboardRequest::Initialized(InitializedRequest {
                    access_token,
                    user_id,
                    timestamp: ts(at),
                    lecture_code,
                })
            }
            DashboardRequestBuilder::Terminated {
                at,
                lecture_code,
                duration,
            } => DashboardRequest::Terminated(TerminatedRequest {
                access_token,
                user_id,
                timestamp: ts(at),
                lecture_code,
                duration,
            }),
            DashboardRequestBuilder::Progress {
                at,
                curriculum,
                percent,
            } => DashboardRequest::Progress(ProgressRequest {
                access_token,
                user_id,
                timestamp: ts(at),
                curriculum,
                percent,
            }),
            DashboardRequestBuilder::Complete { at, curriculum } => {
                DashboardRequest::Complete(CompleteRequest {
                    access_token,
                    user_id,
                    timestamp: ts(at),
                    curriculum,
                })
            }
            DashboardRequestBuilder::Score {
                at,
                curriculum,
                score,
                level,
            } => DashboardRequest::Score(ScoreRequest {
                access_token,
                user_id,
                timestamp: ts(at),
                curriculum,
                score,
                achievement_level: level,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AchievementLevel::*;

    #[test]
    fn middle_and_high_school_use_five_levels_at_90_80_70_60() {
        for school in [SchoolLevel::Middle, SchoolLevel::High] {
            let cases = [
                (100.0, A),
                (90.0, A),
                (89.99, B),
                (80.0, B),
                (79.99, C),
                (70.0, C),
                (69.99, D),
                (60.0, D),
                (59.99, E),
                (0.0, E),
            ];
            for (score, want) in cases {
                assert_eq!(achievement_level(school, score), want, "{school:?} {score}");
            }
        }
    }

    #[test]
    fn elementary_school_uses_three_levels_at_80_60() {
        let cases = [
            (100.0, A),
            (90.0, A),
            (80.0, A),
            (79.99, B),
            (60.0, B),
            (59.99, C),
            (0.0, C),
        ];
        for (score, want) in cases {
            assert_eq!(
                achievement_level(SchoolLevel::Elementary, score),
                want,
                "{score}"
            );
        }
    }

    #[test]
    fn level_sql_is_generated_from_the_same_cutoffs() {
        let sql = level_sql("sl", "sc");
        assert!(sql.contains("WHEN sc >= 90.00 THEN 'A' WHEN sc >= 80.00 THEN 'B' WHEN sc >= 70.00 THEN 'C' WHEN sc >= 60.00 THEN 'D' ELSE 'E'"), "{sql}");
        assert!(
            sql.contains("WHEN sc >= 80.00 THEN 'A' WHEN sc >= 60.00 THEN 'B' ELSE 'C'"),
            "{sql}"
        );
    }
}
