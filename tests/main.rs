//! One test binary: every test module shares the helpers.

mod helpers;

mod cli;
mod config;
mod dashboard;
mod jobs_bo;
mod jobs_lms;
mod keris;
mod operator;
mod runtime;
