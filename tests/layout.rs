//! The layout rules of docs/contributing.md ("Layout"), checked on the
//! source tree: a plain file in a system's or a family's folder is one job,
//! no job reaches into another family's folder, no file in `src/` is long.

use std::path::{Path, PathBuf};

const SYSTEMS: [&str; 5] = ["lms", "dc", "lrs", "lcms", "bo"];

/// The longest a file in `src/` may be.
const MAX_LINES: usize = 600;

/// Files still over [`MAX_LINES`] while they are being split (each with its
/// owner's work): new files are never added here.
const LONG_FILES_BEING_SPLIT: &[&str] = &[
    // The KERIS senders and the LRS aggregation, split with the sender's
    // data access moved out.
    "src/jobs/dc/send_statements.rs",
    "src/jobs/dc/resend_errors.rs",
    // The runner's `run_locked` and the KERIS client, split into named steps.
    "src/runtime/runner.rs",
    "src/keris/client.rs",
];

/// Folders of a system that hold what the system's jobs share, too long
/// for its `mod.rs` (named for what it is, not a family of jobs): their
/// plain files are parts, and the system's jobs import them.
const SHARED_CODE_FOLDERS: &[&str] = &["src/jobs/lrs/aggregation"];

fn in_shared_code_folder(file: &Path) -> bool {
    let path = rel(file);
    SHARED_CODE_FOLDERS
        .iter()
        .any(|folder| path.starts_with(&format!("{folder}/")))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `jobs::<system>::…` of a file under `src/jobs/`: its module path.
fn module_path(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(root().join("src")).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::jobs::…` and `super::…` path in `text`, made absolute from
/// `module` (`use super::{a, b}` gives both), as module segments.
fn referenced_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::jobs::") {
        let rest = &text[at + "crate::".len()..];
        found.extend(expand(Vec::new(), rest));
    }
    for (at, _) in text.match_indices("super::") {
        if text[..at].ends_with("super::") || text[..at].ends_with("::") {
            continue;
        }
        let mut base = module.to_vec();
        let mut rest = &text[at..];
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
        found.extend(expand(base, rest));
    }
    found
}

/// `a::b::{c, d::e}` after `base`: the paths it names, to their first
/// non-module segment.
fn expand(base: Vec<String>, rest: &str) -> Vec<Vec<String>> {
    let mut path = base;
    let mut rest = rest;
    loop {
        if let Some(inner) = rest.strip_prefix('{') {
            let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
            return inner
                .split(',')
                .flat_map(|item| expand(path.clone(), item.trim()))
                .collect();
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            return vec![path];
        }
        path.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![path],
        }
    }
}

#[test]
fn a_plain_file_in_a_system_or_family_folder_is_one_job() {
    let jobs = root().join("src/jobs");
    let mut offenders = Vec::new();
    for system in SYSTEMS {
        for file in rust_files(&jobs.join(system)) {
            let depth = file.strip_prefix(jobs.join(system)).unwrap().iter().count();
            let name = file.file_name().unwrap();
            if depth > 2 || name == "mod.rs" || in_shared_code_folder(&file) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.contains("pub static DEF: JobDef") {
                offenders.push(rel(&file));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "plain files that define no `pub static DEF: JobDef` (what jobs share goes in the \
         family's mod.rs or a sub-folder of it, or in jobs/shared/): {offenders:?}"
    );
}

#[test]
fn no_job_imports_another_familys_module() {
    let jobs = root().join("src/jobs");
    let mut offenders = Vec::new();
    for system in SYSTEMS {
        for file in rust_files(&jobs.join(system)) {
            let module = module_path(&file);
            let own = &module[..module.len().min(3)];
            let text = std::fs::read_to_string(&file).unwrap();
            for path in referenced_paths(&module, &text) {
                let [jobs_seg, sys, target, ..] = path.as_slice() else {
                    continue;
                };
                let is_module = jobs.join(sys).join(target).is_dir()
                    || jobs.join(sys).join(format!("{target}.rs")).is_file();
                let systems_shared_code = sys == &module[1]
                    && in_shared_code_folder(&jobs.join(sys).join(target).join("x"));
                if jobs_seg == "jobs"
                    && SYSTEMS.contains(&sys.as_str())
                    && is_module
                    && !systems_shared_code
                    && own != &path[..3]
                {
                    offenders.push(format!("{}: {}", rel(&file), path.join("::")));
                }
            }
        }
    }
    offenders.sort();
    offenders.dedup();
    assert!(
        offenders.is_empty(),
        "jobs importing another family or job (share through jobs/shared/): {offenders:#?}"
    );
}

#[test]
fn the_rules_see_what_they_check() {
    // The scanner resolves the forms the jobs use.
    let module: Vec<String> = ["jobs", "bo", "login_stats", "usage_mail"]
        .map(String::from)
        .to_vec();
    let paths = referenced_paths(
        &module,
        "use super::{connected_users, usage_report::Week};\n\
         use crate::jobs::lms::learning_day::Day;\n\
         use crate::jobs::shared::sessions;",
    );
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "jobs::lms::learning_day::Day",
            "jobs::shared::sessions",
            "jobs::bo::login_stats::connected_users",
            "jobs::bo::login_stats::usage_report::Week",
        ]
    );
}

#[test]
fn no_file_in_src_is_longer_than_600_lines() {
    let mut long = Vec::new();
    for file in rust_files(&root().join("src")) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let path = rel(&file);
        if lines > MAX_LINES && !LONG_FILES_BEING_SPLIT.contains(&path.as_str()) {
            long.push(format!("{path}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them into named parts): {long:?}"
    );
}

/// The lines of `diff` under `+++ b/<path>` up to the next file header,
/// without their `+`/` ` mark: (added, context).
fn hunk_of(diff: &str, path: &str) -> (Vec<String>, Vec<String>) {
    let start = diff
        .find(&format!("+++ b/{path}\n"))
        .unwrap_or_else(|| panic!("docs/contributing.md: no diff of {path}"));
    let body = diff[start..].lines().skip(1);
    let (mut added, mut context) = (Vec::new(), Vec::new());
    for line in body.take_while(|l| !l.starts_with("--- ")) {
        if let Some(rest) = line.strip_prefix('+') {
            added.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix(' ') {
            context.push(rest.to_string());
        }
    }
    (added, context)
}

#[test]
fn the_adding_a_job_diff_is_the_example_the_tests_compile() {
    let doc = std::fs::read_to_string(root().join("docs/contributing.md")).unwrap();
    let start = doc
        .find("## Adding a job")
        .expect("an \"Adding a job\" section");
    let section = &doc[start..];
    let diff = &section[section.find("```diff\n").expect("a diff")..];
    let diff = &diff[..diff["```diff\n".len()..].find("```").unwrap() + "```diff\n".len()];

    let (new_file, _) = hunk_of(diff, "src/jobs/bo/session_expiry.rs");
    let compiled = std::fs::read_to_string(root().join("src/jobs/example.rs")).unwrap();
    assert_eq!(
        new_file.join("\n"),
        compiled.trim_end(),
        "the new file of docs/contributing.md's diff is src/jobs/example.rs, which `cargo \
         test --lib` compiles: change both"
    );

    let (added, context) = hunk_of(diff, "src/jobs/bo/mod.rs");
    assert_eq!(
        added,
        ["pub mod session_expiry;", "    &session_expiry::DEF,"]
    );
    let bo_mod = std::fs::read_to_string(root().join("src/jobs/bo/mod.rs")).unwrap();
    let lines: Vec<&str> = bo_mod.lines().collect();
    for line in &context {
        assert!(
            lines.contains(&line.as_str()),
            "docs/contributing.md's diff of src/jobs/bo/mod.rs no longer applies: {line:?}"
        );
    }
}
