//! Development tools: the data-contract schema and the synthetic-data
//! generator. The `dev` commands refuse the `prod` profile.

pub mod bench;
pub mod schema;
pub mod seed;
