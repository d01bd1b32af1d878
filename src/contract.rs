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

/// `tb_dc_error_data_info.status`. SQL statements spell these values in
/// their text (a bind per literal would make them harder to read); a test
/// below checks that every quoted status in the jobs' SQL is one of these.
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

    #[test]
    fn every_status_the_jobs_sql_spells_is_a_contract_status() {
        let known: Vec<&str> = [
            ErrorStatus::Pending,
            ErrorStatus::Regenerated,
            ErrorStatus::Resent,
            ErrorStatus::Failed,
        ]
        .map(ErrorStatus::as_str)
        .into();
        let sources = [
            include_str!("jobs/dc/resend_errors.rs"),
            include_str!("jobs/dc/send_statements.rs"),
            include_str!("jobs/shared/transfer/mod.rs"),
            include_str!("jobs/shared/transfer/sender.rs"),
            include_str!("jobs/shared/error_data.rs"),
            include_str!("jobs/lrs/regenerate_statements.rs"),
        ];
        let mut seen = 0;
        for source in sources {
            // `status = 'X'`, `status IN ('X', 'Y')`, `THEN 'X' ELSE 'Y'`.
            for (i, _) in source.match_indices("status") {
                let tail = &source[i..source.len().min(i + 60)];
                let clause = tail.split(['\n', ',', ')']).next().unwrap_or_default();
                for quoted in clause.split('\'').skip(1).step_by(2) {
                    if quoted.chars().all(|c| c.is_ascii_uppercase()) && !quoted.is_empty() {
                        assert!(
                            known.contains(&quoted),
                            "unknown status '{quoted}' in: {tail}"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 10, "the check found the statuses ({seen})");
    }
}
