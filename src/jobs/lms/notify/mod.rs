//! What the notification jobs (LMS-01-004, LMS-01-005) share: message
//! templates with `{name}` placeholders that the job's SQL replaces, checked
//! when the configuration loads so that a typo fails every command, naming
//! the key, instead of reaching students as a literal `{titel}`; the
//! settings prologue; the statement's tail that writes the messages (or
//! counts them for `--dry-run`); and the run's counts.

pub mod assignment_due_messages;
pub mod praise_messages;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::runtime::JobContext;

/// A message job's own section (`deny_unknown_fields`), checked beyond its
/// types: templates, thresholds.
pub trait MessageSettings: DeserializeOwned {
    /// The settings' problems, each naming its key.
    fn check(&self) -> Result<(), String>;
}

/// For `JobDef::settings`: a bad section fails every command, naming the key.
pub fn validate<T: MessageSettings>(section: config::Value) -> Result<(), String> {
    section
        .try_deserialize::<T>()
        .map_err(|e| e.to_string())?
        .check()
}

/// The run's settings: the job's own section, checked.
pub fn settings<T: MessageSettings>(ctx: &JobContext) -> anyhow::Result<T> {
    let settings: T = ctx.own_settings()?;
    settings
        .check()
        .map_err(|e| anyhow::anyhow!("invalid [jobs.{}] {e}", ctx.def.config_name()))?;
    Ok(settings)
}

/// The end of a message job's statement, after a CTE `candidates`
/// (`user_id`, `ref_key`, `title`, `body` and the column `group`): writes
/// them as `msg_type` messages with `ON CONFLICT DO NOTHING` — the unique
/// key (`user_id`, `msg_type`, `ref_key`) makes a rerun or an overlapping run
/// write nothing twice — and selects per `group` the candidates and the
/// messages written; with `dry_run` it writes nothing and counts those not
/// in `tb_lms_ntcn_msg` yet. Both names are the jobs' constants, never input.
pub fn write_or_count(msg_type: &str, group: &str, dry_run: bool) -> String {
    if dry_run {
        format!(
            "SELECT c.{group}, count(*),
                    count(*) FILTER (WHERE NOT EXISTS (
                        SELECT 1 FROM tb_lms_ntcn_msg n
                         WHERE n.user_id = c.user_id AND n.msg_type = '{msg_type}' AND n.ref_key = c.ref_key))
               FROM candidates c GROUP BY c.{group}"
        )
    } else {
        format!(
            ", written AS (
                INSERT INTO tb_lms_ntcn_msg (user_id, msg_type, ref_key, title, body)
                SELECT user_id, '{msg_type}', ref_key, title, body FROM candidates
                ON CONFLICT (user_id, msg_type, ref_key) DO NOTHING
                RETURNING user_id, ref_key)
             SELECT c.{group}, count(*), count(w.ref_key)
               FROM candidates c
               LEFT JOIN written w ON w.user_id = c.user_id AND w.ref_key = c.ref_key
              GROUP BY c.{group}"
        )
    }
}

/// The run's counts and details: `candidates` messages due, `written` of
/// them new (for a dry run: would be written).
pub fn report(ctx: &JobContext, candidates: u64, written: u64) {
    ctx.counts.add_read(candidates);
    if ctx.dry_run {
        ctx.set_detail("would_write", written);
    } else {
        ctx.counts.add_written(written);
        ctx.set_detail("written", written);
    }
    ctx.set_detail("already_sent", candidates - written);
}

/// Checks that `template` (the value of config key `key`) is not blank and
/// uses only the placeholders in `known`.
pub fn check(key: &str, template: &str, known: &[&str]) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err(format!("{key}: must not be empty"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("{key}: a '{{' without its '}}' in {template:?}"));
        };
        let name = &after[..close];
        if !known.contains(&name) {
            return Err(format!(
                "{key}: unknown placeholder {{{name}}}; known: {}",
                known
                    .iter()
                    .map(|k| format!("{{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Deserializes a list of whole numbers from a TOML array (`[1440, 60]`)
/// or from text (`"1440,60"`, or one number): environment variables
/// (`AIDT__JOBS__…`) can only give text.
pub fn number_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<u32>),
        One(u32),
        Text(String),
    }
    match Form::deserialize(deserializer)? {
        Form::List(list) => Ok(list),
        Form::One(n) => Ok(vec![n]),
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u32>().map_err(|_| {
                    serde::de::Error::custom(format!("{s:?} is not a whole number of minutes"))
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_with_known_placeholders_passes_and_a_typo_is_named() {
        assert!(check("t", "{title} due {due}", &["title", "due"]).is_ok());
        let err = check("body_template", "{titel}", &["title"]).unwrap_err();
        assert!(
            err.contains("body_template") && err.contains("{titel}"),
            "{err}"
        );
        assert!(check("t", "  ", &["title"]).is_err());
        assert!(check("t", "{title", &["title"]).is_err());
    }
}
