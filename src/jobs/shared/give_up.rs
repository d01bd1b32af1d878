//! When to stop calling a KERIS that keeps failing, shared by the dashboard
//! and the statement senders: after `after` transient failures in a row for
//! one partner (each after the client's own retries), the partner's
//! remaining work waits for the next run instead of each item waiting out
//! its retries against a KERIS that is down. A success resets the count.
//! `after = 0` never gives up.

use std::sync::atomic::{AtomicU32, Ordering};

/// One partner's count of transient failures in a row.
#[derive(Debug, Default)]
pub struct GiveUp {
    after: u32,
    in_a_row: AtomicU32,
}

impl GiveUp {
    pub fn new(after: u32) -> Self {
        Self {
            after,
            in_a_row: AtomicU32::new(0),
        }
    }

    /// Whether the partner's remaining work should wait for a later run.
    pub fn gave_up(&self) -> bool {
        self.after > 0 && self.in_a_row.load(Ordering::Relaxed) >= self.after
    }

    /// KERIS answered: the count starts again.
    pub fn success(&self) {
        self.in_a_row.store(0, Ordering::Relaxed);
    }

    /// A transient failure; `true` when it is the one that reaches the
    /// limit (log it once).
    pub fn transient_failure(&self) -> bool {
        self.after > 0 && self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == self.after
    }

    /// The limit, for log lines.
    pub fn limit(&self) -> u32 {
        self.after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_that_many_failures_in_a_row_and_a_success_resets() {
        let policy = GiveUp::new(3);
        assert!(!policy.transient_failure());
        assert!(!policy.transient_failure());
        policy.success();
        assert!(!policy.transient_failure() && !policy.transient_failure());
        assert!(!policy.gave_up());
        assert!(policy.transient_failure(), "the third in a row reaches it");
        assert!(policy.gave_up());
        assert!(!policy.transient_failure(), "reported once");
    }

    #[test]
    fn zero_never_gives_up() {
        let policy = GiveUp::new(0);
        for _ in 0..100 {
            assert!(!policy.transient_failure());
        }
        assert!(!policy.gave_up());
    }
}
