//! Back-office (BO) jobs.

pub mod admin_dormancy;
pub mod notice_expiry;
pub mod pm_schedule;
