//! The settings of this code ([jobs.keris_transfer]), read by [`crate::config`].

use serde::Deserialize;

use crate::config::{between, ConfigError};

/// DC-01-001, DC-01-002 and LRS-01-002: learning-history transfer (API-006/007).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KerisTransferSettings {
    /// Documents per cursor batch when reading `keris_batch_data`.
    pub read_batch_size: u32,
    /// After this many API-007 requests in a row failed for one partner
    /// (each after the client's retries), KERIS is taken to be down: the
    /// partner's remaining statements stay `READY` for a rerun instead of
    /// each request waiting out its retries. 0 never gives up.
    pub give_up_after_transient_failures: u32,
    /// DC-01-002: an error row that failed this many resends (or
    /// regenerations) becomes `FAILED`, for a person to look at.
    pub max_retries: u32,
    /// At most this many statement ids per list in a run's details.
    pub max_reported_ids: usize,
    /// Statements marked `SENT` per `update` command (1 to 100,000, MongoDB's
    /// largest write batch).
    pub sent_marks_per_command: usize,
    /// After this many requests in a row KERIS refused alike (same call,
    /// same code) with no verdict per statement, and a statement KERIS
    /// already holds refused too, the refusal is taken to be about
    /// everything, not the statements (a firewall, a wrong path, a refused
    /// Partner-ID): the run stops (exit 1) and its statements wait for the
    /// next run. 0 never stops.
    pub stop_after_refusals: u32,
    /// DC-01-001 and DC-01-002 also take the work of the business date's
    /// preceding days, this many of them (READY statements, open error
    /// rows), oldest day first; older work is counted and reported, not
    /// sent. 0: the business date only.
    pub look_back_days: u32,
}

impl Default for KerisTransferSettings {
    fn default() -> Self {
        Self {
            read_batch_size: 1000,
            give_up_after_transient_failures: 20,
            max_retries: 5,
            max_reported_ids: 100,
            sent_marks_per_command: 100,
            stop_after_refusals: 3,
            look_back_days: 7,
        }
    }
}

impl KerisTransferSettings {
    /// The days DC-01-001 and DC-01-002 work on for business date `date`,
    /// oldest first: `look_back_days` before it, then `date`.
    pub fn days_up_to(&self, date: chrono::NaiveDate) -> Vec<chrono::NaiveDate> {
        (0..=i64::from(self.look_back_days))
            .rev()
            .map(|back| date - chrono::Duration::days(back))
            .collect()
    }
}

impl KerisTransferSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        between(
            "jobs.keris_transfer.look_back_days",
            self.look_back_days,
            0,
            366,
        )?;
        between(
            "jobs.keris_transfer.sent_marks_per_command",
            self.sent_marks_per_command,
            1,
            100_000,
        )
    }
}
