//! LCMS jobs.

use crate::runtime::registry::JobDef;

pub mod content_copy;

/// The system's jobs, in the seed's order.
pub static JOBS: &[&JobDef] = &[&content_copy::copy::DEF];
