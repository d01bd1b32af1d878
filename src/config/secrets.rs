//! Outside `local`, the secrets must be the site's own: never empty, never
//! a value one of the repository's configuration files ships.

use super::{env_var, ConfigError};

/// The repository's own configuration files: whatever they give a secret
/// key is public, so no site may use it.
const REPOSITORY_FILES: [(&str, &str); 4] = [
    ("config/base.toml", include_str!("../../config/base.toml")),
    ("config/local.toml", include_str!("../../config/local.toml")),
    ("config/dev.toml", include_str!("../../config/dev.toml")),
    ("config/prod.toml", include_str!("../../config/prod.toml")),
];

/// The secret keys whose value is a site's own outside `local`: never
/// empty, never one the repository ships. (The Partner-IDs,
/// `keris.partners.<name>.partner_id`, too.)
pub const SITE_SECRETS: [&str; 6] = [
    "database.url",
    "jobs.privacy.audit_salt",
    "jobs.lms_01_009.pseudonym_key",
    "jobs.lms_01_009.s3.access_key_id",
    "jobs.lms_01_009.s3.secret_access_key",
    "jobs.bo_05_006.smtp.password",
];

/// The secret values of `config`: (key, value) for [`SITE_SECRETS`] that
/// are set and for every partner's Partner-ID.
fn secret_values(config: &config::Config) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = SITE_SECRETS
        .iter()
        .filter_map(|key| Some((key.to_string(), config.get_string(key).ok()?)))
        .collect();
    for name in config
        .get_table("keris.partners")
        .unwrap_or_default()
        .keys()
    {
        let key = format!("keris.partners.{name}.partner_id");
        if let Ok(id) = config.get_string(&key) {
            values.push((key, id));
        }
    }
    values
}

/// Outside `local`: a secret set to nothing, or to a value one of the
/// repository's files ships (local.toml's audit salt, pseudonym key,
/// Partner-ID, database password), is refused, naming the key (never the
/// value).
pub(super) fn refuse_public_secrets(raw: &config::Config) -> Result<(), ConfigError> {
    let public: Vec<(&str, String)> = REPOSITORY_FILES
        .iter()
        .filter_map(|(name, text)| {
            let file = config::File::from_str(text, config::FileFormat::Toml);
            Some((
                *name,
                config::Config::builder().add_source(file).build().ok()?,
            ))
        })
        .flat_map(|(name, config)| {
            secret_values(&config)
                .into_iter()
                .map(move |(_, value)| (name, value))
        })
        .collect();
    for (key, value) in secret_values(raw) {
        let env = env_var(&key);
        if value.is_empty() {
            return Err(ConfigError::BadValue {
                key,
                reason: format!("empty; set the site's own secret ({env})"),
            });
        }
        if let Some((file, _)) = public.iter().find(|(_, v)| *v == value) {
            return Err(ConfigError::BadValue {
                key,
                reason: format!(
                    "the value shipped in the repository's {file} is public; \
                     set the site's own secret ({env})"
                ),
            });
        }
    }
    Ok(())
}
