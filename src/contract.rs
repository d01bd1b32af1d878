//! The names the jobs share with the LMS, BO, LCMS and the LRS
//! (`shared/spec/data-contract.md`): collections, stored-key conventions and
//! status values. Jobs, migrations and the dev tools all read them here, so
//! a name is written once and a status is a type, not a string literal.

use std::fmt;

/// The LRS's collection of received xAPI statements (written by the LRS).
pub const STATEMENTS: &str = "statements";

/// KERIS statements: written by LRS-01-001/002, read and updated by
/// DC-01-001/002/003. Its indexes are the batch's own (`migrate`).
pub const KERIS_BATCH_DATA: &str = "keris_batch_data";

/// The error table of the KERIS transfers (a contract table).
pub const ERROR_TABLE: &str = "tb_dc_error_data_info";

/// The legacy stored form of a `.` in an xAPI extension key (Learning
/// Locker's convention, for servers that refused dots in keys). Readers
/// accept it as well as the plain dot.
pub const STORED_DOT: &str = "&46;";

/// `keris_batch_data.status`. `Invalid` is the batch's own addition: a
/// statement LRS-01-001 could not build, never sent, kept with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    Ready,
    Sent,
    Error,
    Invalid,
}

impl BatchStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Ready => "READY",
            BatchStatus::Sent => "SENT",
            BatchStatus::Error => "ERROR",
            BatchStatus::Invalid => "INVALID",
        }
    }
}

/// `tb_dc_error_data_info.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Waiting for a resend (transient failure) or a regeneration.
    Pending,
    /// Rebuilt by LRS-01-002; DC-01-002 resends it.
    Regenerated,
    /// Accepted by KERIS on a resend.
    Resent,
    /// Given up: a person looks at it.
    Failed,
}

impl ErrorStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorStatus::Pending => "PENDING",
            ErrorStatus::Regenerated => "REGENERATED",
            ErrorStatus::Resent => "RESENT",
            ErrorStatus::Failed => "FAILED",
        }
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_spelled_as_the_contract_stores_them() {
        let batch: Vec<_> = [
            BatchStatus::Ready,
            BatchStatus::Sent,
            BatchStatus::Error,
            BatchStatus::Invalid,
        ]
        .map(BatchStatus::as_str)
        .into();
        assert_eq!(batch, ["READY", "SENT", "ERROR", "INVALID"]);
        let errors: Vec<_> = [
            ErrorStatus::Pending,
            ErrorStatus::Regenerated,
            ErrorStatus::Resent,
            ErrorStatus::Failed,
        ]
        .map(ErrorStatus::as_str)
        .into();
        assert_eq!(errors, ["PENDING", "REGENERATED", "RESENT", "FAILED"]);
    }
}
