//! Every relative link in `README.md`, `ARCHITECTURE.md` and `docs/*.md`
//! points at a file that exists and, when it names an anchor, at a heading
//! of that file (anchors as GitHub renders them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped
/// (letters, digits, `-` and `_` kept), spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a page; a repeated heading gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for (_, line) in prose(text) {
        if !line.starts_with('#') {
            continue;
        }
        let base = slug(line);
        let mut anchor = base.clone();
        let mut n = 0;
        while !anchors.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    anchors
}

/// The targets of the Markdown links of a line: `[text](target)`.
fn targets(line: &str) -> Vec<String> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            rest.find(')').map(|end| rest[..end].to_string())
        })
        .collect()
}

fn check_link(page: &Path, target: &str) -> Result<(), String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return Ok(());
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (target, None),
    };
    let path = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(file)
    };
    if !path.exists() {
        return Err(format!("{target}: {} does not exist", path.display()));
    }
    let Some(anchor) = anchor else { return Ok(()) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{target}: {e}"))?;
    if anchors(&text).contains(anchor) {
        Ok(())
    } else {
        Err(format!("{target}: no heading with the anchor #{anchor}"))
    }
}

#[test]
fn every_relative_link_of_the_readme_and_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        for (line, content) in prose(&text) {
            for target in targets(content) {
                checked += 1;
                if let Err(e) = check_link(&page, &target) {
                    broken.push(format!("{name}:{line}: {e}"));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the link parser broken?"
    );
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(slug("## 05:00 procedures"), "0500-procedures");
    assert_eq!(
        slug("## LMS-01-003 — KC → achievement-standard mapping"),
        "lms-01-003--kc--achievement-standard-mapping"
    );
    assert_eq!(slug("### `[jobs.bo_05_006.smtp]`"), "jobsbo_05_006smtp");
    let twice = anchors("# A\n## Partitions\n```\n# not a heading\n```\n### Partitions\n");
    assert!(
        twice.contains("partitions") && twice.contains("partitions-1"),
        "{twice:?}"
    );
    assert!(!twice.contains("not-a-heading"));
}
