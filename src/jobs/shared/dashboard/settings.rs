//! The settings of this code ([jobs.keris_dashboard]), read by [`crate::config`].

use serde::Deserialize;

use crate::config::{at_least, ConfigError};

/// LMS-01-008 and DC-01-004 (KERIS dashboard APIs 001–005).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KerisDashboardSettings {
    /// Rows read per page (keyset pagination); `*_sent_at` is updated once per page.
    pub page_size: u32,
    /// At most this many user ids are listed per skip reason in the run's details.
    pub max_reported_ids: usize,
    /// After this many transient failures in a row (retries used up) for one
    /// partner, KERIS is taken to be down: the rest of that partner's events
    /// are left for the next run instead of each waiting out its retries.
    /// 0 never gives up.
    pub give_up_after_transient_failures: u32,
    /// LMS-01-008 refreshes the teacher view incrementally (only students
    /// whose results or progress changed); it re-reads this many seconds
    /// before the last refresh, so a row committed late with an earlier
    /// `solved_at` / `upd_dt` (a long LMS transaction) is not missed.
    pub incremental_overlap_secs: u64,
    /// A run recomputes every student when the last full refresh is older
    /// than this: what has no change timestamp (a lecture's teacher, a
    /// student's school, a deleted result or progress row) is caught up at
    /// least this often. 0: only the first run and `--full`.
    pub full_refresh_after_hours: u64,
}

impl Default for KerisDashboardSettings {
    fn default() -> Self {
        Self {
            page_size: 1000,
            max_reported_ids: 1000,
            give_up_after_transient_failures: 20,
            incremental_overlap_secs: 900,
            full_refresh_after_hours: 24,
        }
    }
}

impl KerisDashboardSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("jobs.keris_dashboard.page_size", self.page_size, 1)
    }
}
