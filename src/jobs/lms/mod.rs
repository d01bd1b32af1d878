//! LMS jobs.

pub mod delete_unconsented_students;
pub mod keris_dashboard;
pub mod log_cleanup;
