//! LMS jobs.

pub mod keris_dashboard;
pub mod log_cleanup;
