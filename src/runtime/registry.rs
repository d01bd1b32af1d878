//! The job registry: the single source of truth for job ids, systems, names
//! and schedules. The CLI, `list`, `crontab` and the runner all read it.
//!
//! Adding a job is one new file under `src/jobs/<system>/` and setting its
//! `job:` field here.

use super::job::Job;
use crate::jobs::{bo, dc, lms, lrs};

/// The system whose Java batch JAR a job replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Lms,
    Dc,
    Lrs,
    Lcms,
    Bo,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Lms => "LMS",
            System::Dc => "DC",
            System::Lrs => "LRS",
            System::Lcms => "LCMS",
            System::Bo => "BO",
        }
    }
}

/// When cron starts a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// A five-field cron expression, in Asia/Seoul (the host's time zone).
    Cron(&'static str),
    /// Not scheduled; the reason is printed in the crontab.
    Unscheduled(&'static str),
}

/// Which business date a run works on when `--date` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultDate {
    /// Yesterday in Asia/Seoul: daily aggregations of a finished day.
    Yesterday,
    /// Today in Asia/Seoul: state changes that look at "now".
    Today,
}

/// One registered job.
pub struct JobDef {
    /// The seed's id, upper-case (`LMS-01-001`). The CLI accepts any case.
    pub id: &'static str,
    pub system: System,
    pub name_ko: &'static str,
    pub name_en: &'static str,
    pub schedule: Schedule,
    /// Why the schedule differs from the seed's crontab, if it does.
    pub schedule_note: Option<&'static str>,
    pub default_date: DefaultDate,
    /// `None` while the job is registered but not yet implemented.
    pub job: Option<&'static dyn Job>,
}

impl JobDef {
    /// The id as typed on the command line and in the crontab.
    pub fn cli_name(&self) -> String {
        self.id.to_ascii_lowercase()
    }

    pub fn is_implemented(&self) -> bool {
        self.job.is_some()
    }
}

impl std::fmt::Debug for JobDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDef")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

use DefaultDate::{Today, Yesterday};
use Schedule::{Cron, Unscheduled};
use System::{Bo, Dc, Lcms, Lms, Lrs};

/// Every job of the seed's table, in its order.
pub static JOBS: &[JobDef] = &[
    JobDef { id: lms::log_cleanup::ID, system: Lms, name_ko: "오래된 로그성 데이터 삭제 일배치", name_en: "Delete old log-type data (daily)", schedule: Cron("0 4 * * *"), schedule_note: None, default_date: Today, job: Some(&lms::log_cleanup::LogCleanup) },
    JobDef { id: "LMS-01-002", system: Lms, name_ko: "학생역량지표 일일 데이터 저장 일배치", name_en: "Save daily student competency indicators", schedule: Cron("10 4 * * *"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: "LMS-01-003", system: Lms, name_ko: "KC-성취기준코드 정보 매핑 저장 배치", name_en: "Save KC to achievement-standard mapping", schedule: Cron("0 4 * * *"), schedule_note: None, default_date: Today, job: None },
    JobDef { id: "LMS-01-004", system: Lms, name_ko: "학습 관리 시스템 과제 마감 알림메세지 생성 일배치", name_en: "Create assignment-deadline notifications", schedule: Cron("*/30 * * * *"), schedule_note: Some("the seed prints `_/30_ * * *` (Markdown mangling of */30)"), default_date: Today, job: None },
    JobDef { id: "LMS-01-005", system: Lms, name_ko: "학습 관리 시스템 칭찬 알림메세지 생성 일배치", name_en: "Create praise notifications (daily)", schedule: Cron("0 1 * * *"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: "LMS-01-006", system: Lms, name_ko: "학생 학습 통계 일배치", name_en: "Student learning statistics (daily)", schedule: Cron("0 6 * * *"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: lms::delete_unconsented_students::ID, system: Lms, name_ko: "개인정보 제공 미동의 학생정보 삭제 일배치", name_en: "Delete data of students without consent (daily)", schedule: Cron("30 3 * * *"), schedule_note: None, default_date: Today, job: Some(&lms::delete_unconsented_students::DeleteUnconsentedStudents) },
    JobDef { id: lms::keris_dashboard::ID, system: Lms, name_ko: "Keris 대시보드 데이터 5종 배치", name_en: "KERIS dashboard data, 5 kinds", schedule: Cron("0 * * * *"), schedule_note: Some("the seed's text says every hour, its crontab `0 19 * * *`: hourly, as the text says"), default_date: Today, job: Some(&lms::keris_dashboard::KerisDashboard) },
    JobDef { id: "LMS-01-009", system: Lms, name_ko: "LLM DATASET 생성 및 업로드", name_en: "Create and upload the LLM dataset", schedule: Unscheduled("the seed leaves it undecided (미정)"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: "LMS-01-010", system: Lms, name_ko: "코스ID별 표준체계코드 저장", name_en: "Save standard-system codes per course", schedule: Cron("30 4 * * *"), schedule_note: None, default_date: Today, job: None },
    JobDef { id: dc::send_statements::ID, system: Dc, name_ko: "KERIS 학습 이력 데이터 일괄 전송", name_en: "Bulk send of learning history to KERIS", schedule: Cron("10 1 * * *"), schedule_note: None, default_date: Yesterday, job: Some(&dc::send_statements::SendStatements) },
    JobDef { id: dc::resend_errors::ID, system: Dc, name_ko: "KERIS 학습 이력 데이터 재전송", name_en: "Resend of learning history to KERIS", schedule: Cron("0 5 * * *"), schedule_note: None, default_date: Yesterday, job: Some(&dc::resend_errors::ResendErrors) },
    JobDef { id: dc::delete_unconsented_data::ID, system: Dc, name_ko: "개인정보 미동의 데이터 일괄 삭제", name_en: "Bulk delete of data without consent", schedule: Cron("0 3 * * *"), schedule_note: None, default_date: Today, job: Some(&dc::delete_unconsented_data::DeleteUnconsentedData) },
    JobDef { id: dc::achievement_levels::ID, system: Dc, name_ko: "KERIS 성취 수준 업데이트", name_en: "KERIS achievement-level update", schedule: Cron("50 4 * * *"), schedule_note: Some("the seed leaves it undecided (미정, temporary job); daily at dawn after LMS-01-008's 04:00 run refreshed the view, so it only creates the rows and fills the levels that refresh left missing, then sends their scores (API-005)"), default_date: Today, job: Some(&dc::achievement_levels::AchievementLevels) },
    JobDef { id: lrs::aggregate_statements::ID, system: Lrs, name_ko: "공공 배치데이터 집계(xAPI) 일배치", name_en: "Aggregate public batch data (xAPI), daily", schedule: Cron("10 0 * * *"), schedule_note: None, default_date: Yesterday, job: Some(&lrs::aggregate_statements::AggregateStatements) },
    JobDef { id: lrs::regenerate_statements::ID, system: Lrs, name_ko: "공공 배치데이터 오류 재전송용 집계(xAPI) 일배치", name_en: "Aggregate batch data for error resend (xAPI)", schedule: Cron("30 23 * * *"), schedule_note: None, default_date: Today, job: Some(&lrs::regenerate_statements::RegenerateStatements) },
    JobDef { id: "LCMS-01-001", system: Lcms, name_ko: "콘텐츠, 문항 데이터 select 일배치", name_en: "Copy LCMS content and items (daily)", schedule: Cron("0 1 * * *"), schedule_note: Some("the seed's line passes no job id; this one does"), default_date: Today, job: None },
    JobDef { id: "BO-01-001", system: Bo, name_ko: "통합관리시스템 승인 기준 15일 미접속자 일배치", name_en: "Mark admins inactive 15 days since approval dormant", schedule: Cron("35 0 * * *"), schedule_note: None, default_date: Today, job: Some(&bo::admin_dormancy::AdminDormancy) },
    JobDef { id: "BO-01-002", system: Bo, name_ko: "통합관리시스템 PM일정 일배치", name_en: "Apply planned-maintenance schedule", schedule: Cron("*/10 * * * *"), schedule_note: Some("the seed prints `_/10_ * * *` (Markdown mangling of */10)"), default_date: Today, job: Some(&bo::pm_schedule::PmSchedule) },
    JobDef { id: "BO-01-003", system: Bo, name_ko: "통합관리시스템 LMS 접속자 집계 일배치", name_en: "LMS connected-user aggregation (daily)", schedule: Cron("5 2 * * *"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: "BO-01-004", system: Bo, name_ko: "통합관리시스템 LMS 로그인 집계 일배치", name_en: "LMS login aggregation (daily)", schedule: Cron("5 3 * * *"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: "BO-01-005", system: Bo, name_ko: "통합관리시스템 공지사항 기간 비노출 일배치", name_en: "Hide notices whose display period is over", schedule: Cron("5 0 * * *"), schedule_note: None, default_date: Today, job: Some(&bo::notice_expiry::NoticeExpiry) },
    JobDef { id: "BO-05-006", system: Bo, name_ko: "통합관리시스템 LMS 이용 주간 통계 메일 전송", name_en: "Send weekly LMS usage statistics mail", schedule: Cron("5 9 * * 6"), schedule_note: None, default_date: Yesterday, job: None },
    JobDef { id: "BO-01-007", system: Bo, name_ko: "통합관리시스템 LMS 로그인 유저기준 집계 일/주/월 통계 일배치", name_en: "Login-user statistics, daily/weekly/monthly", schedule: Cron("5 4 * * *"), schedule_note: None, default_date: Yesterday, job: None },
];

/// Finds a job by id, ignoring case (`lms-01-001` and `LMS-01-001` alike).
pub fn find(id: &str) -> Option<&'static JobDef> {
    JOBS.iter().find(|job| job.id.eq_ignore_ascii_case(id))
}

/// The registered id closest to a mistyped one, if any is close enough to be
/// a plausible typo.
pub fn closest(id: &str) -> Option<&'static JobDef> {
    let wanted = id.to_ascii_uppercase();
    JOBS.iter()
        .map(|job| (strsim::levenshtein(job.id, &wanted), job))
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, job)| job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_the_seeds_24() {
        let mut ids: Vec<_> = JOBS.iter().map(|j| j.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 24);
    }

    #[test]
    fn find_ignores_case_and_closest_suggests_a_typo_fix() {
        assert_eq!(find("bo-01-005").unwrap().id, "BO-01-005");
        assert_eq!(find("Lms-01-001").unwrap().id, "LMS-01-001");
        assert!(find("lms-01-011").is_none());
        assert_eq!(closest("lms-01-01").unwrap().id, "LMS-01-001");
        assert!(closest("frobnicate").is_none());
    }

    #[test]
    fn cron_expressions_have_five_fields() {
        for job in JOBS {
            if let Schedule::Cron(expr) = job.schedule {
                assert_eq!(expr.split_whitespace().count(), 5, "{}", job.id);
            }
        }
    }
}
