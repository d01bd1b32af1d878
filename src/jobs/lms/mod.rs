//! LMS jobs.

pub mod log_cleanup;
