//! The deployment profile: which `config/<profile>.toml` is layered on the
//! base.

use std::fmt;

use super::{ConfigError, PROFILE_ENV};

/// Deployment profile: which `config/<profile>.toml` is layered on the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Local,
    Dev,
    Prod,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Dev => "dev",
            Profile::Prod => "prod",
        }
    }
}

impl Profile {
    /// `--profile` when given, else `$AIDT_PROFILE`, else `default`.
    pub fn resolve(flag: Option<Profile>, default: Profile) -> Result<Profile, ConfigError> {
        if let Some(profile) = flag {
            return Ok(profile);
        }
        match std::env::var(PROFILE_ENV) {
            Ok(value) if !value.is_empty() => <Profile as clap::ValueEnum>::from_str(&value, true)
                .map_err(|_| ConfigError::BadValue {
                    key: PROFILE_ENV.into(),
                    reason: format!("`{value}` is not a profile: local, dev or prod"),
                }),
            _ => Ok(default),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
