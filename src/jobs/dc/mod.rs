//! DC (data controller) jobs: what goes to KERIS, and deleting what may not.

use crate::runtime::registry::JobDef;

pub mod achievement_levels;
pub mod delete_unconsented_data;
pub mod resend_errors;
pub mod send_statements;

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[
    &send_statements::DEF,
    &resend_errors::DEF,
    &delete_unconsented_data::DEF,
    &achievement_levels::DEF,
];
