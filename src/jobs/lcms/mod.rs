//! LCMS jobs.

pub mod content_copy;
