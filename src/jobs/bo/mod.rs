//! Back-office (BO) jobs.

use crate::runtime::registry::JobDef;

pub mod admin_dormancy;
pub mod login_stats;
pub mod notice_expiry;
pub mod pm_schedule;

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[
    &admin_dormancy::DEF,
    &pm_schedule::DEF,
    &login_stats::connected_users::DEF,
    &login_stats::login_counts::DEF,
    &notice_expiry::DEF,
    &login_stats::usage_mail::DEF,
    &login_stats::login_users::DEF,
];
