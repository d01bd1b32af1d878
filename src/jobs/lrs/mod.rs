//! Jobs of the LRS batch: aggregation of xAPI statements for KERIS.

pub mod aggregate_statements;
pub mod late_statements;
pub mod regenerate_statements;
pub mod source;
