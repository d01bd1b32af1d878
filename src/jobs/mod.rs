//! The jobs, one file each, grouped by the system whose batch JAR they replace.

pub mod bo;
pub mod dc;
pub mod lms;
pub mod lrs;
pub mod privacy;
