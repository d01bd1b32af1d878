//! Back-office (BO) jobs.

pub mod admin_dormancy;
pub mod connected_users;
pub mod login_counts;
pub mod login_stats;
pub mod login_users;
pub mod notice_expiry;
pub mod pm_schedule;
pub mod usage_mail;
pub mod usage_report;
