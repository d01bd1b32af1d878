//! Development tools of aidt-batch, never shipped with it: the data-contract
//! schema that other systems own in production, the synthetic-data generator
//! and the benchmark data. The `aidt-dev` binary runs them and refuses the
//! `prod` profile.

pub mod bench;
pub mod bench_bo;
pub mod bench_lcms;
pub mod bench_notify;
pub mod bench_privacy;
pub mod mess;
pub mod schema;
pub mod seed;
