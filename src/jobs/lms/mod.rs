//! LMS jobs.

pub mod competency_indicators;
pub mod delete_unconsented_students;
pub mod keris_dashboard;
pub mod learning_day;
pub mod learning_stats;
pub mod llm_dataset;
pub mod log_cleanup;
