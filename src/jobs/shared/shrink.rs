//! The guard of the jobs that copy or rebuild a whole table from a source
//! they cannot verify (LCMS-01-001's copy of the LCMS content, LMS-01-003 /
//! LMS-01-010's maps built from that copy): an empty or truncated source
//! looks exactly like a source whose rows were all removed, and believing it
//! would wipe the copy and, after it, the maps.
//!
//! A run that would take more than a configured share of the rows in use out
//! of use — or all of them — is refused unless the operator says it is
//! real (`--allow-shrink`). The job computes inside its transaction and,
//! refused, rolls it back: nothing is written. The error names the figures
//! and the key to change.

use serde::Serialize;

use crate::format::thousands;

/// The command-line flag that lets a run shrink a table past the share.
pub const ALLOW_SHRINK: &str = "allow-shrink";

/// The share of the rows in use a run may take out of use without
/// `--allow-shrink`: well above what a day of curriculum edits retires,
/// well below what an empty or half-copied source would.
pub const DEFAULT_MAX_SHARE: f64 = 0.10;

/// Adds `--allow-shrink` to a job's options.
pub fn allow_shrink_arg(cmd: clap::Command) -> clap::Command {
    cmd.arg(
        clap::Arg::new(ALLOW_SHRINK)
            .long(ALLOW_SHRINK)
            .action(clap::ArgAction::SetTrue)
            .help("Apply the run even if it takes more than the configured share of the rows in use out of use, or all of them (the source really shrank)"),
    )
}

/// Checks a share setting: a fraction from 0 to 1.
pub fn check_share(key: &str, share: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err(format!(
            "{key}: must be a fraction between 0 and 1 (0.1 = 10%), not {share}"
        ))
    }
}

/// How much of one table a run takes out of use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shrink {
    /// The table.
    pub table: &'static str,
    /// What its rows are, plural ("items in use", "pairs").
    pub rows: &'static str,
    /// Rows in use before the run.
    pub before: u64,
    /// Of those, taken out of use (deleted, or marked unused) by the run.
    pub removed: u64,
    /// Rows in use after the run.
    pub after: u64,
}

impl Shrink {
    /// The share of `before` the run removes.
    pub fn share(&self) -> f64 {
        if self.before == 0 {
            0.0
        } else {
            self.removed as f64 / self.before as f64
        }
    }

    /// Whether the run leaves nothing in use where something was.
    pub fn empties(&self) -> bool {
        self.before > 0 && self.after == 0
    }

    /// Whether the run must be refused at `max_share`.
    pub fn exceeds(&self, max_share: f64) -> bool {
        self.empties() || self.share() > max_share
    }

    fn describe(&self) -> String {
        let share = format!("{:.1}%", self.share() * 100.0);
        if self.empties() {
            format!(
                "{}: would leave no {} (all {} removed, {share})",
                self.table,
                self.rows,
                count(self.removed)
            )
        } else {
            format!(
                "{}: would remove {} of {} {} ({share})",
                self.table,
                count(self.removed),
                count(self.before),
                self.rows
            )
        }
    }
}

/// A run refused by [`check`].
#[derive(Debug, thiserror::Error)]
#[error("{job} refused to shrink: {figures}, more than {key} ({max}) allows; nothing was written. An empty or truncated source looks like this. If the rows are really gone, rerun with --{ALLOW_SHRINK} (or raise {key})", max = percent(*max_share), figures = describe_all(shrinks, *max_share))]
pub struct ShrinkRefused {
    pub job: &'static str,
    pub key: String,
    pub max_share: f64,
    pub shrinks: Vec<Shrink>,
}

fn count(n: u64) -> String {
    thousands(i64::try_from(n).unwrap_or(i64::MAX))
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn describe_all(shrinks: &[Shrink], max_share: f64) -> String {
    shrinks
        .iter()
        .filter(|s| s.exceeds(max_share))
        .map(Shrink::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Refuses the run when any table of `shrinks` shrinks past `max_share` (or
/// is emptied), unless `allowed` (`--allow-shrink`). `key` is the setting
/// of `max_share`, named in the error.
pub fn check(
    job: &'static str,
    key: &str,
    max_share: f64,
    shrinks: &[Shrink],
    allowed: bool,
) -> Result<(), ShrinkRefused> {
    if allowed || !shrinks.iter().any(|s| s.exceeds(max_share)) {
        return Ok(());
    }
    Err(ShrinkRefused {
        job,
        key: key.to_string(),
        max_share,
        shrinks: shrinks.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(before: u64, removed: u64, after: u64) -> Shrink {
        Shrink {
            table: "tb_lms_item",
            rows: "items in use",
            before,
            removed,
            after,
        }
    }

    #[test]
    fn a_share_above_the_limit_or_an_emptied_table_is_refused_unless_allowed() {
        let key = "jobs.lcms_copy.max_retire_share";
        assert!(check("LCMS-01-001", key, 0.1, &[items(1000, 100, 900)], false).is_ok());
        let refused = check("LCMS-01-001", key, 0.1, &[items(1936, 968, 968)], false)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("would remove 968 of 1,936 items in use (50.0%)")
                && refused.contains(key)
                && refused.contains("--allow-shrink"),
            "{refused}"
        );
        let emptied = check("LCMS-01-001", key, 1.0, &[items(1936, 1936, 0)], false)
            .unwrap_err()
            .to_string();
        assert!(emptied.contains("would leave no items in use"), "{emptied}");
        assert!(check("LCMS-01-001", key, 0.1, &[items(1936, 1936, 0)], true).is_ok());
        // Nothing in use before: nothing to protect.
        assert!(check("LCMS-01-001", key, 0.1, &[items(0, 0, 0)], false).is_ok());
    }

    #[test]
    fn shares_outside_zero_to_one_are_rejected() {
        assert!(check_share("k", 0.1).is_ok());
        assert!(check_share("k", 1.5).is_err());
        assert!(check_share("k", -0.1).is_err());
    }
}
