//! Message templates of the notification jobs (LMS-01-004, LMS-01-005):
//! `{name}` placeholders that the job's SQL replaces, checked when the
//! configuration loads so that a typo fails every command, naming the key,
//! instead of reaching students as a literal `{titel}`.

use serde::{Deserialize, Deserializer};

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
