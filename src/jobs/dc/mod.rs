//! DC (data controller) jobs.

pub mod delete_unconsented_data;
