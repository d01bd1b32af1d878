//! LMS jobs.

use crate::runtime::registry::JobDef;

pub mod delete_unconsented_students;
pub mod keris_dashboard;
pub mod learning_day;
pub mod llm_dataset;
pub mod log_cleanup;
pub mod notify;
pub mod std_map;

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[
    &log_cleanup::DEF,
    &learning_day::competency_indicators::DEF,
    &std_map::kc_std_map::DEF,
    &notify::assignment_due_messages::DEF,
    &notify::praise_messages::DEF,
    &learning_day::learning_stats::DEF,
    &delete_unconsented_students::DEF,
    &keris_dashboard::DEF,
    &llm_dataset::upload::DEF,
    &std_map::course_std_sys::DEF,
];
