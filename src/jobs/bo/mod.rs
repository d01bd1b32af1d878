//! Back-office (BO) jobs.

use crate::runtime::registry::JobDef;

pub mod admin_dormancy;
pub mod connected_users;
pub mod login_counts;
pub mod login_stats;
pub mod login_users;
pub mod notice_expiry;
pub mod pm_schedule;
pub mod usage_mail;
pub mod usage_report;

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[
    &admin_dormancy::DEF,
    &pm_schedule::DEF,
    &connected_users::DEF,
    &login_counts::DEF,
    &notice_expiry::DEF,
    &usage_mail::DEF,
    &login_users::DEF,
];
