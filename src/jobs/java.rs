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
