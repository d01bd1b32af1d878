//! One test binary: every test module shares the helpers.

mod helpers;

mod bo_mail;
mod bo_stats;
mod chain;
mod cli;
mod config;
mod content;
mod dashboard;
mod deploy;
mod dev_seed;
mod history_purge;
mod jobs_bo;
mod jobs_lms;
mod keris;
mod learning_stats;
mod llm_dataset;
mod locks;
mod lrs;
mod metrics;
mod notify;
mod operator;
mod package;
mod partitions;
mod privacy;
mod raw_ids;
mod report;
mod runtime;
mod transfer;
mod transfer_bounds;
