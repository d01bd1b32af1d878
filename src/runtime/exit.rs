//! The documented exit codes of `aidt-batch`. Cron wrappers and operators
//! branch on these; keep the table in docs/operating.md (Exit codes) in step.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the job completed (or the command succeeded).
    Success,
    /// 1: the job failed; see the history row's error.
    Failure,
    /// 2: usage or configuration error; nothing ran.
    Usage,
    /// 3: another run of the same job and business date holds the lock.
    AlreadyRunning,
    /// 4: completed, but some items failed and were recorded.
    CompletedWithErrors,
    /// 130: stopped by SIGINT.
    Interrupted,
    /// 143: stopped by SIGTERM.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::AlreadyRunning => 3,
            Exit::CompletedWithErrors => 4,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The exit of a command that ended in `e`: 2 for what the operator fixes in
/// configuration or set-up (a config key, tables not migrated), else 1.
pub fn exit_for_error(e: &anyhow::Error) -> Exit {
    let usage = e
        .chain()
        .any(|c| c.is::<crate::config::ConfigError>() || c.is::<super::SetupError>());
    if usage {
        Exit::Usage
    } else {
        Exit::Failure
    }
}
