//! The settings of this code ([jobs.lrs_aggregate]), read by [`crate::config`].

use serde::Deserialize;

use crate::config::{at_least, between, ConfigError};

/// LRS-01-001: aggregation of the day's xAPI statements into KERIS statements.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrsAggregateSettings {
    /// `actor.account.homePage` of the KERIS statements: the vendor's URL.
    pub home_page: String,
    /// `context.platform` of the KERIS statements.
    pub platform: String,
    /// Namespace of the UUID v5 statement ids. Changing it changes every id:
    /// KERIS would receive the same data again under new ids.
    pub id_namespace: uuid::Uuid,
    /// Source statements per cursor batch, and KERIS statements per write batch.
    pub batch_size: u32,
    /// Write batches in flight at once, each on its own connection and
    /// worker thread, while the cursor is read and aggregated.
    pub writes_in_flight: u32,
    /// Result extension IRI carrying how many source statements (attempts) a
    /// KERIS statement combines; empty: not sent. KERIS's profile defines no
    /// such extension, so it is the vendor's own IRI, in the vendor's domain
    /// (xAPI: mint IRIs only in a domain you control, never in aidtbook.kr).
    /// Part of the statement's content: fixed once statements were sent.
    pub attempts_extension: String,
    /// Late statements (stored after their day's night) of the last this
    /// many days before the business date are aggregated by the first run
    /// after they are stored; older ones are counted and reported, not sent.
    pub late_lookback_days: u32,
    /// A run covers what the LRS stored up to the end of the business date,
    /// and never later than this many seconds before the run starts: the
    /// LRS's inserts still in flight, and its clock, get that much slack.
    pub stored_settle_secs: u64,
    /// Undecodable documents and statements voided after they were sent
    /// listed by id in the run's details (the rest are counted).
    pub max_reported_ids: usize,
}

/// The default [`LrsAggregateSettings::id_namespace`].
pub const DEFAULT_LRS_ID_NAMESPACE: uuid::Uuid =
    uuid::uuid!("2f9d6b8e-4c1a-4e57-9b3a-6a0d5c7e1f20");

impl Default for LrsAggregateSettings {
    fn default() -> Self {
        Self {
            home_page: "https://aidt.example.kr".into(),
            platform: "aidt-demo".into(),
            id_namespace: DEFAULT_LRS_ID_NAMESPACE,
            batch_size: 1000,
            writes_in_flight: 2,
            attempts_extension: "https://aidt.example.kr/xapi/extensions/attempts".into(),
            late_lookback_days: 7,
            stored_settle_secs: 300,
            max_reported_ids: 100,
        }
    }
}

impl LrsAggregateSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("jobs.lrs_aggregate.batch_size", self.batch_size, 1)?;
        between(
            "jobs.lrs_aggregate.writes_in_flight",
            self.writes_in_flight,
            1,
            16,
        )?;
        let attempts = &self.attempts_extension;
        let is_iri = attempts.starts_with("http://") || attempts.starts_with("https://");
        if !attempts.is_empty() && !is_iri {
            return Err(ConfigError::BadValue {
                key: "jobs.lrs_aggregate.attempts_extension".into(),
                reason: "must be an http:// or https:// IRI, or empty".into(),
            });
        }
        Ok(())
    }
}
