//! One test binary: every test module shares the helpers.

mod helpers;

mod bo_mail;
mod bo_stats;
mod chain;
mod cli;
mod config;
mod config_reference;
mod content;
mod dashboard;
mod deploy;
mod dev_seed;
mod docs_links;
mod history_purge;
mod jobs_bo;
mod jobs_lms;
mod keris;
mod late_statements;
mod learning_stats;
mod llm_dataset;
mod locks;
mod lrs;
mod messy_night;
mod metrics;
mod notify;
mod operator;
mod partitions;
mod privacy;
mod raw_ids;
mod report;
mod runtime;
mod timeouts;
mod transfer;
mod transfer_bounds;
mod transfer_nights;
mod transfer_refusals;
