//! The configured KERIS partners: their Partner-IDs (secrets, never logged),
//! their names, and one KERIS client each for the jobs that send
//! (DC-01-001, DC-01-002, LMS-01-008 and DC-01-004).

use std::collections::HashMap;

use anyhow::Context as _;
use uuid::Uuid;

use crate::config::KerisSettings;
use crate::keris::{ClientOptions, KerisClient};

/// Partner-ID (lower-case UUID text, as stored) → configured partner name.
pub fn partners_by_id(settings: &KerisSettings) -> anyhow::Result<HashMap<String, String>> {
    Ok(settings
        .partner_ids()?
        .into_iter()
        .map(|(name, id)| (id.to_string(), name.to_string()))
        .collect())
}

/// One configured partner and its client.
pub struct PartnerClient {
    /// The Partner-ID (a secret: never logged).
    pub id: Uuid,
    /// The partner's name in the configuration (what logs and details show).
    pub name: String,
    pub client: KerisClient,
}

impl PartnerClient {
    /// The Partner-ID as `keris_batch_data` and the tables store it
    /// (lower-case UUID text).
    pub fn stored_id(&self) -> String {
        self.id.to_string()
    }
}

/// One KERIS client per configured partner, in name order, each with its
/// own rate limit and concurrency (the options of `keris`).
pub struct PartnerClients(Vec<PartnerClient>);

impl PartnerClients {
    /// The partners of `settings`, each with a client built from its options.
    pub fn from_settings(settings: &KerisSettings) -> anyhow::Result<Self> {
        let options = ClientOptions::from_settings(settings);
        let partners = settings
            .partner_ids()?
            .into_iter()
            .map(|(name, id)| {
                let client = KerisClient::from_settings(settings, name, options.clone())
                    .context("Failed to build the KERIS clients")?;
                Ok(PartnerClient {
                    id,
                    name: name.to_string(),
                    client,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(partners))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PartnerClient> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The partner at `index` (as [`Self::position`] returns it).
    pub fn get(&self, index: usize) -> &PartnerClient {
        &self.0[index]
    }

    /// Where the partner with Partner-ID `id` is, if it is configured.
    pub fn position(&self, id: &Uuid) -> Option<usize> {
        self.0.iter().position(|p| p.id == *id)
    }
}

impl<'a> IntoIterator for &'a PartnerClients {
    type Item = &'a PartnerClient;
    type IntoIter = std::slice::Iter<'a, PartnerClient>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
