//! The jobs of the seed that still run on the Java batch JARs: registered
//! (so `list`, `--help` and the crontab show them, commented out) but not
//! implemented here. Implementing one replaces its entry in
//! [`super::JOBS`] with the new file's `DEF` and deletes it here.

use crate::runtime::registry::{no_args, DefaultDate, JobDef, Lock, Schedule, System};

/// A job still run by its Java JAR.
const fn java(
    id: &'static str,
    system: System,
    names: (&'static str, &'static str),
    schedule: Schedule,
    schedule_note: Option<&'static str>,
    default_date: DefaultDate,
) -> JobDef {
    JobDef {
        id,
        system,
        name_ko: names.0,
        name_en: names.1,
        about: "Still run by the Java batch JAR: not implemented in aidt-batch yet.",
        schedule,
        schedule_note,
        default_date,
        lock: match default_date {
            DefaultDate::Yesterday => Lock::JobAndDate,
            DefaultDate::Today => Lock::Job,
        },
        lock_wait_secs: 0,
        settings: None,
        args: no_args,
        job: None,
    }
}

pub static LMS_01_002: JobDef = java(
    "LMS-01-002",
    System::Lms,
    (
        "학생역량지표 일일 데이터 저장 일배치",
        "Save daily student competency indicators",
    ),
    Schedule::Cron("10 4 * * *"),
    None,
    DefaultDate::Yesterday,
);

pub static LMS_01_003: JobDef = java(
    "LMS-01-003",
    System::Lms,
    (
        "KC-성취기준코드 정보 매핑 저장 배치",
        "Save KC to achievement-standard mapping",
    ),
    Schedule::Cron("0 4 * * *"),
    None,
    DefaultDate::Today,
);

pub static LMS_01_004: JobDef = java(
    "LMS-01-004",
    System::Lms,
    (
        "학습 관리 시스템 과제 마감 알림메세지 생성 일배치",
        "Create assignment-deadline notifications",
    ),
    Schedule::Cron("*/30 * * * *"),
    Some("the seed prints `_/30_ * * *` (Markdown mangling of */30)"),
    DefaultDate::Today,
);

pub static LMS_01_005: JobDef = java(
    "LMS-01-005",
    System::Lms,
    (
        "학습 관리 시스템 칭찬 알림메세지 생성 일배치",
        "Create praise notifications (daily)",
    ),
    Schedule::Cron("0 1 * * *"),
    None,
    DefaultDate::Yesterday,
);

pub static LMS_01_006: JobDef = java(
    "LMS-01-006",
    System::Lms,
    (
        "학생 학습 통계 일배치",
        "Student learning statistics (daily)",
    ),
    Schedule::Cron("0 6 * * *"),
    None,
    DefaultDate::Yesterday,
);

pub static LMS_01_009: JobDef = java(
    "LMS-01-009",
    System::Lms,
    (
        "LLM DATASET 생성 및 업로드",
        "Create and upload the LLM dataset",
    ),
    Schedule::Unscheduled("the seed leaves it undecided (미정)"),
    None,
    DefaultDate::Yesterday,
);

pub static LMS_01_010: JobDef = java(
    "LMS-01-010",
    System::Lms,
    (
        "코스ID별 표준체계코드 저장",
        "Save standard-system codes per course",
    ),
    Schedule::Cron("30 4 * * *"),
    None,
    DefaultDate::Today,
);

pub static LCMS_01_001: JobDef = java(
    "LCMS-01-001",
    System::Lcms,
    (
        "콘텐츠, 문항 데이터 select 일배치",
        "Copy LCMS content and items (daily)",
    ),
    Schedule::Cron("0 1 * * *"),
    Some("the seed's line passes no job id; this one does"),
    DefaultDate::Today,
);

pub static BO_01_003: JobDef = java(
    "BO-01-003",
    System::Bo,
    (
        "통합관리시스템 LMS 접속자 집계 일배치",
        "LMS connected-user aggregation (daily)",
    ),
    Schedule::Cron("5 2 * * *"),
    None,
    DefaultDate::Yesterday,
);

pub static BO_05_006: JobDef = java(
    "BO-05-006",
    System::Bo,
    (
        "통합관리시스템 LMS 이용 주간 통계 메일 전송",
        "Send weekly LMS usage statistics mail",
    ),
    Schedule::Cron("5 9 * * 6"),
    None,
    DefaultDate::Yesterday,
);
