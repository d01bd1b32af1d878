//! LMS jobs.

pub mod delete_unconsented_students;
pub mod log_cleanup;
