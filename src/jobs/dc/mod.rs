//! DC (data controller) jobs: what goes to KERIS, and deleting what may not.

pub mod achievement_levels;
pub mod delete_unconsented_data;
pub mod resend_errors;
pub mod send_statements;
