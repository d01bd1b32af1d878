//! `aidt-batch k8s [--out DIR] [--image IMAGE]`: the Kubernetes manifests
//! of every scheduled job, from the registry.

use std::path::Path;

use crate::jobs::REGISTRY;
use crate::runtime::{k8s, Exit};

pub fn run(out: Option<&Path>, image: Option<String>) -> anyhow::Result<Exit> {
    let mut options = k8s::Options::default();
    if let Some(image) = image {
        options.image = image;
    }
    match out {
        None => print!("{}", k8s::render_stream(&REGISTRY, &options)),
        Some(dir) => write_manifests(dir, &k8s::render(&REGISTRY, &options))?,
    }
    Ok(Exit::Success)
}

/// Writes `manifests` into `dir` (created if missing) and removes the
/// `cronjob-*.yaml` there that are no longer generated (a job that became
/// unscheduled); other files are left alone.
fn write_manifests(dir: &Path, manifests: &[k8s::Manifest]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("Failed to read {}", dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let generated = manifests.iter().any(|m| m.file == name);
        if name.starts_with("cronjob-") && name.ends_with(".yaml") && !generated {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("Failed to remove {}", entry.path().display()))?;
            eprintln!("removed {}", entry.path().display());
        }
    }
    for manifest in manifests {
        let path = dir.join(&manifest.file);
        std::fs::write(&path, &manifest.text)
            .with_context(|| format!("Failed to write {}", path.display()))?;
    }
    eprintln!("wrote {} manifests to {}", manifests.len(), dir.display());
    Ok(())
}
