//! Jobs of the LRS batch: aggregation of xAPI statements for KERIS.

use crate::runtime::registry::JobDef;

pub mod aggregate_statements;
pub mod aggregation;
pub mod regenerate_statements;

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[&aggregate_statements::DEF, &regenerate_statements::DEF];
