//! Reading the layered configuration: the files, then the environment;
//! then the checks of [`super::validate`] and [`super::secrets`].

use std::path::{Path, PathBuf};

use super::{ConfigError, Profile, Settings, CONFIG_DIR_ENV, ENV_PREFIX};

/// Where the configuration came from, for `check` and error messages.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub settings: Settings,
    pub profile: Profile,
    pub files: Vec<PathBuf>,
}

/// Finds the configuration directory: `$AIDT_CONFIG_DIR`, `./config`, the
/// `config/` beside the executable (or its parent, for `target/debug`), then
/// `/etc/aidt-batch`.
pub fn find_config_dir() -> Result<PathBuf, ConfigError> {
    if let Ok(dir) = std::env::var(CONFIG_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates = vec![PathBuf::from("config")];
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1).take(4) {
            candidates.push(ancestor.join("config"));
        }
    }
    candidates.push(PathBuf::from("/etc/aidt-batch"));
    for dir in &candidates {
        if dir.join("base.toml").is_file() {
            return Ok(dir.clone());
        }
    }
    let looked = candidates
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ConfigError::NoConfigDir { looked })
}

/// Loads and validates the configuration of `profile`.
pub fn load(profile: Profile, extra_file: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    let dir = find_config_dir()?;
    load_from(&dir, profile, extra_file)
}

pub fn load_from(
    dir: &Path,
    profile: Profile,
    extra_file: Option<&Path>,
) -> Result<LoadedConfig, ConfigError> {
    load_with_env(dir, profile, extra_file, None)
}

/// [`load_from`] with `env` in place of the process environment (`None`:
/// the process environment), so a test can give variables without
/// changing the process's.
pub fn load_with_env(
    dir: &Path,
    profile: Profile,
    extra_file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<LoadedConfig, ConfigError> {
    use config::{Environment, File, FileFormat};

    let mut files = vec![dir.join("base.toml"), dir.join(format!("{profile}.toml"))];
    if let Some(extra) = extra_file {
        files.push(extra.to_path_buf());
    }
    let mut builder = config::Config::builder();
    for path in &files {
        if !path.is_file() {
            return Err(ConfigError::MissingFile { path: path.clone() });
        }
        builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
    }
    // No `try_parsing`: it would turn a password `0123` into the number 123
    // and `1e3` into 1000; each key's type parses its text instead.
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(env),
    );
    let raw = builder
        .build()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let settings: Settings = raw
        .clone()
        .try_deserialize()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    settings.validate()?;
    if profile != Profile::Local {
        super::secrets::refuse_public_secrets(&raw)?;
    }
    if profile == Profile::Prod {
        settings.refuse_insecure_transport()?;
    }
    Ok(LoadedConfig {
        settings,
        profile,
        files,
    })
}
