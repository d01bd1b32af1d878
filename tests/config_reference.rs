//! `docs/configuration.md` is held to the settings types: every key it
//! documents loads through the real loader (the types deny unknown fields),
//! its documented defaults are the ones a configuration without the key
//! gets, its secrets are redacted, and every key of every settings type —
//! the shared sections of `src/config.rs` and each job's own section, as
//! `JobDef::settings` declares it — is documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aidt_batch::config::{self, JobsSettings, Profile, Settings};
use aidt_batch::jobs::{self, REGISTRY};
use aidt_batch::runtime::settings_keys::{keys_with, Kind, MAP_ENTRY};

const PAGE: &str = "docs/configuration.md";

/// One documented key: its row in a section's table.
#[derive(Debug, Clone)]
struct Row {
    /// `database.url`, `keris.partners.<name>.partner_id`.
    path: String,
    kind: String,
    /// The documented default as a TOML value, if the key has one.
    default: Option<String>,
    /// A value to load when the key has no default (`e.g. …`).
    sample: Option<String>,
    secret: bool,
    env: String,
    line: usize,
}

/// One job of the page's table of every job's own section.
#[derive(Debug, Clone)]
struct JobRow {
    id: String,
    section: String,
    lock_wait_secs: String,
    /// Where the job's own keys are: `below`, or the shared sections it reads.
    other_keys: String,
}

struct Page {
    rows: Vec<Row>,
    jobs: Vec<JobRow>,
}

fn page_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(PAGE);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split(" | ").map(|c| c.trim().to_string()).collect()
}

/// The text between the first pair of backticks.
fn code(cell: &str) -> Option<String> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(cell[start..start + len].to_string())
}

/// `## \`[jobs.bo_05_006.smtp]\`` → `jobs.bo_05_006.smtp`.
fn heading_section(line: &str) -> Option<String> {
    let text = code(line)?;
    text.strip_prefix('[')?
        .strip_suffix(']')
        .map(str::to_string)
}

const KEY_HEADER: [&str; 6] = [
    "Key",
    "Type",
    "Default",
    "Secret",
    "Environment variable",
    "Meaning",
];

fn parse_page(text: &str) -> Page {
    let mut page = Page {
        rows: Vec::new(),
        jobs: Vec::new(),
    };
    let mut section: Option<String> = None;
    let mut table: Option<Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            section = heading_section(line);
            table = None;
        } else if !line.starts_with('|') {
            table = None;
        } else if table.is_none() {
            table = Some(cells(line));
        } else if !line.starts_with("|--") && !line.starts_with("|:") {
            let header = table.as_deref().unwrap();
            parse_row(&mut page, section.as_deref(), header, &cells(line), i + 1);
        }
    }
    page
}

fn parse_row(
    page: &mut Page,
    section: Option<&str>,
    header: &[String],
    row: &[String],
    line: usize,
) {
    if header.first().map(String::as_str) == Some("Job") {
        page.jobs.push(JobRow {
            id: row[0].clone(),
            section: heading_section(&row[1]).unwrap_or_else(|| panic!("{PAGE}:{line}: section")),
            lock_wait_secs: code(&row[2]).unwrap_or_else(|| panic!("{PAGE}:{line}: lock wait")),
            other_keys: row.get(3).cloned().unwrap_or_default(),
        });
        return;
    }
    if header != KEY_HEADER {
        return;
    }
    let section = section.unwrap_or_else(|| {
        panic!("{PAGE}:{line}: a key table under a heading without `[section]`")
    });
    assert_eq!(
        row.len(),
        KEY_HEADER.len(),
        "{PAGE}:{line}: {} cells",
        row.len()
    );
    let key = code(&row[0]).unwrap_or_else(|| panic!("{PAGE}:{line}: key in backticks"));
    let (default, sample) = if row[2].starts_with('`') {
        (code(&row[2]), None)
    } else {
        let sample = row[2].split_once("e.g. ").and_then(|(_, rest)| code(rest));
        (None, sample)
    };
    page.rows.push(Row {
        path: format!("{section}.{key}"),
        kind: row[1].clone(),
        default,
        sample,
        secret: match row[3].as_str() {
            "yes" => true,
            "no" => false,
            other => panic!("{PAGE}:{line}: Secret is `yes` or `no`, not {other:?}"),
        },
        env: code(&row[4]).unwrap_or_default(),
        line,
    });
}

/// The shared sections of `[jobs]`: the field names of [`JobsSettings`]
/// as its `Debug` prints them. Serde does not tell them — the type has a
/// flattened field, so it deserializes as a map — and the name that is not
/// a section (the flattened map of the jobs' own sections) is dropped
/// afterwards, when the type takes it as one of its own sections' names.
fn jobs_fields() -> Vec<String> {
    let debug = format!("{:#?}", JobsSettings::default());
    debug
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.to_string()))
        .collect()
}

/// Every key of every settings type, dotted from the root, with its kind;
/// nested tables (and the flattened map of the jobs' own sections) left out.
fn type_keys() -> BTreeMap<String, Kind> {
    let names = jobs_fields();
    let mut keys = keys_with::<Settings>(&|path| (path == "jobs").then(|| names.clone()));
    // A name JobsSettings does not take as a field lands in its flattened map.
    keys.retain(|path, kind| {
        !(path.starts_with("jobs.") && *kind == Kind::Any && path.matches('.').count() == 1)
    });
    for def in REGISTRY.iter() {
        let Some(decl) = def.settings else { continue };
        for (key, kind) in (decl.keys)() {
            keys.insert(format!("jobs.{}.{key}", def.config_name()), kind);
        }
    }
    keys.retain(|_, kind| *kind != Kind::Table);
    keys
}

/// The environment variable of a key: `AIDT__` and the dotted path in upper
/// case with `__` for each dot.
fn env_of(path: &str) -> String {
    format!("AIDT__{}", path.replace('.', "__").to_uppercase())
}

/// Whether the Type column describes `kind`.
fn type_matches(documented: &str, kind: &Kind) -> bool {
    match kind {
        Kind::Bool => documented.starts_with("boolean"),
        Kind::Integer => documented.starts_with("integer"),
        Kind::Number => documented.starts_with("number"),
        Kind::Text => documented.starts_with("string"),
        Kind::List => documented.starts_with("list"),
        Kind::Choice(names) => {
            let listed: Vec<&str> = documented.split('`').skip(1).step_by(2).collect();
            listed == *names
        }
        Kind::Table | Kind::Any => true,
    }
}

/// A row of `[jobs.<job>]` the runtime reads in every job's section
/// (`config::RUNTIME_KEYS`): its defaults are each job's (`lock_wait_secs`
/// is checked against each `DEF` through the table of jobs), not a
/// settings type's.
fn is_runtime_key(row: &Row) -> bool {
    config::RUNTIME_KEYS
        .iter()
        .any(|key| row.path == format!("jobs.<job>.{key}"))
}

#[test]
fn the_reference_documents_every_key_of_every_settings_type_and_no_other() {
    let page = parse_page(&page_text());
    let types = type_keys();
    let mut problems = Vec::new();
    let mut documented = BTreeSet::new();
    for row in page.rows.iter().filter(|r| !is_runtime_key(r)) {
        if !documented.insert(row.path.clone()) {
            problems.push(format!(
                "{PAGE}:{}: `{}` is documented twice",
                row.line, row.path
            ));
        }
        match types.get(&row.path) {
            None => problems.push(format!(
                "{PAGE}:{}: `{}` is no key of any settings type",
                row.line, row.path
            )),
            Some(kind) if !type_matches(&row.kind, kind) => problems.push(format!(
                "{PAGE}:{}: `{}` is documented as {:?}, the type reads {kind}",
                row.line, row.path, row.kind
            )),
            Some(_) => {}
        }
    }
    for path in types.keys().filter(|p| !documented.contains(*p)) {
        problems.push(format!("`{path}` is not documented in {PAGE}"));
    }
    for key in config::RUNTIME_KEYS {
        let path = format!("jobs.<job>.{key}");
        if !page.rows.iter().any(|r| r.path == path) {
            problems.push(format!("`{path}` is not documented in {PAGE}"));
        }
    }
    for row in &page.rows {
        if row.env != env_of(&row.path) {
            problems.push(format!(
                "{PAGE}:{}: `{}` is set by `{}`, not {:?}",
                row.line,
                row.path,
                env_of(&row.path),
                row.env
            ));
        }
        if row.default.is_none() && row.sample.is_none() && !is_runtime_key(row) {
            problems.push(format!(
                "{PAGE}:{}: `{}` has neither a default nor an `e.g.` sample",
                row.line, row.path
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_reference_lists_every_job_with_its_section_and_lock_wait() {
    let page = parse_page(&page_text());
    assert!(
        page.rows
            .iter()
            .any(|r| r.path == format!("jobs.<job>.{}", config::LOCK_WAIT_KEY)),
        "{PAGE}: no `lock_wait_secs` row under `[jobs.<job>]`"
    );
    let listed: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
    let registered: Vec<&str> = REGISTRY.iter().map(|d| d.id).collect();
    assert_eq!(
        listed, registered,
        "{PAGE}: the table of jobs, in the registry's order"
    );
    for (job, def) in page.jobs.iter().zip(REGISTRY.iter()) {
        assert_eq!(
            job.section,
            format!("jobs.{}", def.config_name()),
            "{}",
            def.id
        );
        assert_eq!(
            job.lock_wait_secs,
            def.lock_wait_secs.to_string(),
            "{}: lock_wait_secs",
            def.id
        );
        assert_eq!(
            job.other_keys.contains("below"),
            def.settings.is_some(),
            "{}: `below` links the job's own keys exactly when it has a settings type",
            def.id
        );
    }
}

/// TOML of `values` (section → key → TOML literal); `<name>` placeholders
/// become a partner (or entry) name.
fn toml_of(values: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut text = String::new();
    for (section, keys) in values {
        text.push_str(&format!("[{}]\n", section.replace(MAP_ENTRY, "doc_sample")));
        for (key, value) in keys {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

fn set(values: &mut BTreeMap<String, BTreeMap<String, String>>, path: &str, value: &str) {
    let (section, key) = path.rsplit_once('.').unwrap();
    values
        .entry(section.to_string())
        .or_default()
        .insert(key.to_string(), value.to_string());
}

/// A configuration directory of the repository's `base.toml` and an empty
/// profile file: the documented defaults are those of `base.toml` and the
/// types, whatever `local.toml` sets for development.
fn base_only_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/base.toml");
    std::fs::copy(base, dir.path().join("base.toml")).unwrap();
    std::fs::write(dir.path().join("local.toml"), "").unwrap();
    dir
}

/// Loads `values` as a `--config` file through the real loader (every job's
/// own section checked too).
fn load(
    dir: &Path,
    values: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Settings, String> {
    let file = dir.join("extra.toml");
    std::fs::write(&file, toml_of(values)).unwrap();
    let loaded = config::load_from(dir, Profile::Local, Some(&file)).map_err(|e| e.to_string())?;
    jobs::check_settings(&loaded.settings).map_err(|e| e.to_string())?;
    Ok(loaded.settings)
}

/// What the loaded settings hold, secrets redacted: the shared settings and
/// every job's own section as its type reads it.
fn fingerprint(settings: &Settings) -> String {
    let mut shared = settings.clone();
    shared.jobs.own.clear();
    let mut text = format!("{shared:#?}\n");
    for def in REGISTRY.iter() {
        if let Some(decl) = def.settings {
            let own = (decl.show)(settings.jobs.own_section(&def.config_name())).unwrap();
            text.push_str(&format!("{}: {own}\n", def.id));
        }
    }
    text
}

#[test]
fn every_documented_key_loads_with_its_documented_default_and_secrets_stay_redacted() {
    let page = parse_page(&page_text());
    let dir = base_only_dir();
    // The keys without a default, at their samples: a loadable configuration.
    let mut samples = BTreeMap::new();
    for row in &page.rows {
        if let (None, Some(sample)) = (&row.default, &row.sample) {
            set(&mut samples, &row.path, sample);
        }
    }
    let reference =
        load(dir.path(), &samples).unwrap_or_else(|e| panic!("the samples of {PAGE}: {e}"));
    let reference = fingerprint(&reference);

    let mut everything = samples.clone();
    for row in page.rows.iter().filter(|r| !is_runtime_key(r)) {
        let Some(default) = &row.default else {
            continue;
        };
        let mut one = samples.clone();
        set(&mut one, &row.path, default);
        let loaded = load(dir.path(), &one)
            .unwrap_or_else(|e| panic!("{PAGE}:{}: `{} = {default}`: {e}", row.line, row.path));
        assert!(
            fingerprint(&loaded) == reference,
            "{PAGE}:{}: `{}`: the documented default {default} is not what a configuration without the key gets",
            row.line,
            row.path
        );
        set(&mut everything, &row.path, default);
    }
    for job in &page.jobs {
        set(
            &mut everything,
            &format!("{}.{}", job.section, config::LOCK_WAIT_KEY),
            &job.lock_wait_secs,
        );
    }

    // Every documented key at once, the lock waits included.
    let all = load(dir.path(), &everything).unwrap_or_else(|e| panic!("every key of {PAGE}: {e}"));
    for job in &page.jobs {
        let name = job.section.trim_start_matches("jobs.");
        let wait = all.jobs.lock_wait_secs(name).unwrap();
        assert_eq!(
            wait.map(|w| w.to_string()),
            Some(job.lock_wait_secs.clone()),
            "{}",
            job.id
        );
    }
    let shown = fingerprint(&all);
    for row in page.rows.iter().filter(|r| r.secret) {
        let value = row.default.as_ref().or(row.sample.as_ref()).unwrap();
        let bare = value.trim_matches('"');
        assert!(
            !shown.contains(bare),
            "{PAGE}:{}: `{}` is documented as a secret but its value shows in the settings' Debug",
            row.line,
            row.path
        );
    }
}
