//! The shared runtime every job uses: what a job declares (`registry`),
//! history, locks, checkpoints, the runner and exit codes. It knows no job:
//! the list of jobs is `crate::jobs::REGISTRY`.

pub mod chain;
pub mod checkpoint;
pub mod crontab;
pub mod exit;
pub mod history;
pub mod job;
pub mod k8s;
pub mod lock;
pub mod metrics;
pub mod partition;
pub mod progress;
pub mod registry;
pub mod runner;
pub mod settings_keys;
pub mod timeouts;

pub use exit::Exit;
pub use job::{Job, JobContext, JobStopped};
pub use registry::{JobDef, Registry};

/// Problems the operator fixes by running a command; mapped to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the batch tables are missing: run `aidt-batch migrate` with this profile first")]
    NotMigrated,
    #[error("job {0} is registered but not implemented yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Partition(#[from] partition::PartitionError),
}
