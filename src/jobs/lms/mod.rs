//! LMS jobs.

pub mod assignment_due_messages;
pub mod delete_unconsented_students;
pub mod keris_dashboard;
pub mod log_cleanup;
pub mod praise_messages;
pub mod templates;
