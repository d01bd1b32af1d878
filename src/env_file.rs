//! The env file: the `KEY=value` lines that hold a host's secrets
//! (`/etc/aidt-batch/env`), read by the binary itself the way
//! `kubectl create secret generic --from-env-file` reads them, so that one
//! file serves a host and the Kubernetes Secret alike.
//!
//! Literally, as kubectl does: leading white space is dropped, blank lines
//! and lines starting with `#` are skipped, a line is split at its first
//! `=`, and the value is everything after it — no quote removal, no `$` or
//! backtick expansion, trailing spaces kept. A line that is a name alone
//! takes the value from the environment (empty when unset). A variable
//! already in the environment wins over the file. No shell ever sources
//! the file (`set -a; . env` would expand `$` in a password).
//!
//! Errors name the file, the line number and at most the variable's name:
//! never a value, nor a line that might be one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::ConfigError;

/// Names the env file when `--env-file` is not given; set but empty: none.
pub const ENV_FILE_ENV: &str = "AIDT_ENV_FILE";
/// The package's env file, read when it exists and nothing else is named.
pub const DEFAULT_ENV_FILE: &str = "/etc/aidt-batch/env";

/// What an env file gave the process, for `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub path: PathBuf,
    /// Variables the file set.
    pub set: usize,
    /// Variables of the file that the environment already had (it wins).
    pub kept: usize,
}

static APPLIED: OnceLock<Applied> = OnceLock::new();

/// The env file this process read, if any.
pub fn applied() -> Option<&'static Applied> {
    APPLIED.get()
}

/// The env file to read: `flag` (`--env-file`), else `$AIDT_ENV_FILE`
/// (empty: none), else [`DEFAULT_ENV_FILE`] when it exists (hosts without
/// the package have none). A named file that is missing is an error.
pub fn choose(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    match std::env::var_os(ENV_FILE_ENV) {
        Some(value) if value.is_empty() => None,
        Some(value) => Some(PathBuf::from(value)),
        None => Some(PathBuf::from(DEFAULT_ENV_FILE)).filter(|p| p.exists()),
    }
}

/// Reads `path` and sets each of its variables that the environment does
/// not have yet. Call it before any thread starts (the process environment
/// is not safe to change once others may read it): `main` does, before the
/// async runtime exists.
pub fn apply(path: &Path) -> Result<&'static Applied, ConfigError> {
    let entries = read(path)?;
    let mut applied = Applied {
        path: path.to_path_buf(),
        set: 0,
        kept: 0,
    };
    for (key, value) in entries {
        if std::env::var_os(&key).is_some() {
            applied.kept += 1;
        } else {
            std::env::set_var(&key, value);
            applied.set += 1;
        }
    }
    Ok(APPLIED.get_or_init(|| applied))
}

/// The variables of `path`, in file order; see the module's rules.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::EnvFile {
        path: path.to_path_buf(),
        reason: read_failure(&e),
    })?;
    parse(&bytes, |key| std::env::var(key).ok()).map_err(|(line, reason)| ConfigError::EnvFile {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    })
}

fn read_failure(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot read it ({e}): it is readable by its owner only; run as that user \
             (e.g. `sudo -u aidt aidt-batch …`), or name another with --env-file or {ENV_FILE_ENV}"
        ),
        _ => format!("cannot read it ({e}); name another with --env-file or {ENV_FILE_ENV}"),
    }
}

/// Parses env-file bytes; `env` gives the value of a line that is a name
/// alone. An error is the line number (from 1) and why, without its text.
pub fn parse(
    bytes: &[u8],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut entries = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if index == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let line = std::str::from_utf8(raw)
            .map_err(|_| (number, "not valid UTF-8".to_string()))?
            .trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, value.to_string()),
            None => (line, String::new()),
        };
        if !is_env_var_name(key) {
            return Err((
                number,
                "expected KEY=value, KEY a name of letters, digits, `_`, `-` and `.` \
                 not starting with a digit"
                    .into(),
            ));
        }
        let value = if line.contains('=') {
            value
        } else {
            env(key).unwrap_or_default()
        };
        if let Some(first) = first_line.insert(key.to_string(), number) {
            return Err((
                number,
                format!("`{key}` is set again (first on line {first})"),
            ));
        }
        entries.push((key.to_string(), value));
    }
    Ok(entries)
}

/// Kubernetes' rule for the keys of `--from-env-file`
/// (`[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn is_env_var_name(key: &str) -> bool {
    let mut chars = key.chars();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    matches!(chars.next(), Some(c) if allowed(c) && !c.is_ascii_digit()) && chars.all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes(), |_| None).unwrap()
    }

    #[test]
    fn values_are_taken_literally_as_kubectl_takes_them() {
        let text = "\u{feff}# a comment\n\n   \nA=1\n  B= two \nC=\"quoted\"\nD='single'\n\
                    E=pa$HOME `id` x=y\r\nF=\nG==\n\t# indented comment\n";
        assert_eq!(
            parsed(text),
            [
                ("A", "1"),
                ("B", " two "),
                ("C", "\"quoted\""),
                ("D", "'single'"),
                ("E", "pa$HOME `id` x=y"),
                ("F", ""),
                ("G", "="),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_name_alone_takes_its_value_from_the_environment() {
        let env = |key: &str| (key == "SET").then(|| "from env".to_string());
        assert_eq!(
            parse(b"SET\nUNSET\n", env).unwrap(),
            [
                ("SET".to_string(), "from env".to_string()),
                ("UNSET".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn bad_lines_are_named_by_number_without_their_text() {
        for (text, line, reason) in [
            ("A=1\nmy s3cret password\n", 2, "expected KEY=value"),
            ("A=1\n1A=x\n", 2, "expected KEY=value"),
            ("A = 1\n", 1, "expected KEY=value"),
            ("A=1\nB=2\nA=3\n", 3, "`A` is set again (first on line 1)"),
        ] {
            let (number, why) = parse(text.as_bytes(), |_| None).unwrap_err();
            assert_eq!(number, line, "{text:?}");
            assert!(why.contains(reason), "{why}");
            assert!(!why.contains("s3cret"), "{why}");
        }
        let (number, why) = parse(b"A=1\nB=\xff\n", |_| None).unwrap_err();
        assert_eq!((number, why.as_str()), (2, "not valid UTF-8"));
    }
}
