//! Back-office (BO) jobs.

pub mod admin_dormancy;
pub mod login_counts;
pub mod login_stats;
pub mod login_users;
pub mod notice_expiry;
pub mod pm_schedule;
