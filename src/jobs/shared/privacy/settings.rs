//! The settings of this code ([jobs.privacy]), read by [`crate::config`].

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{at_least, ConfigError};

/// LMS-01-007 and DC-01-003: deletion of students' data without consent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Days after `reg_dt` (never consented) or `withdraw_dt` (withdrawn)
    /// before a student's personal data is deleted.
    pub grace_days: u32,
    /// Students per batch; each batch is one PostgreSQL transaction (LMS).
    pub batch_size: u32,
    pub pause_ms: u64,
    /// Salt of the SHA-256 student hashes in the audit: a secret, so a hash
    /// cannot be reversed by hashing every known user id.
    pub audit_salt: Option<SecretString>,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            grace_days: 30,
            batch_size: 500,
            pause_ms: 0,
            audit_salt: None,
        }
    }
}

impl PrivacySettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("jobs.privacy.batch_size", self.batch_size, 1)
    }
}
