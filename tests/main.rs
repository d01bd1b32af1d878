//! One test binary: every test module shares the helpers.

mod helpers;

mod bo_stats;
mod cli;
mod config;
mod dashboard;
mod dev_seed;
mod jobs_bo;
mod jobs_lms;
mod keris;
mod locks;
mod lrs;
mod operator;
mod privacy;
mod raw_ids;
mod runtime;
mod transfer;
