//! LMS jobs.

pub mod assignment_due_messages;
pub mod competency_indicators;
pub mod course_std_sys;
pub mod delete_unconsented_students;
pub mod kc_std_map;
pub mod keris_dashboard;
pub mod learning_day;
pub mod learning_stats;
pub mod llm_dataset;
pub mod log_cleanup;
pub mod praise_messages;
pub mod std_map;
pub mod templates;
