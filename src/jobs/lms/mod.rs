//! LMS jobs.

use crate::runtime::registry::JobDef;

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

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[
    &log_cleanup::DEF,
    &competency_indicators::DEF,
    &kc_std_map::DEF,
    &assignment_due_messages::DEF,
    &praise_messages::DEF,
    &learning_stats::DEF,
    &delete_unconsented_students::DEF,
    &keris_dashboard::DEF,
    &llm_dataset::DEF,
    &course_std_sys::DEF,
];
