//! Fetched zoo models: the zoo entries with a `[fetch]` table, and where their fetched
//! files are, for the commands that use them (`qbench fetch` installs them).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use qbench_models::fetch;
use qbench_models::zoo::{self, ZooEntry};

/// The zoo entry `name`, which must have a `[fetch]` table.
pub fn fetchable_entry(name: &str) -> Result<ZooEntry> {
    let dir = zoo::zoo_dir();
    let entries =
        zoo::list(&dir).with_context(|| format!("reading the model zoo in {}", dir.display()))?;
    let fetchable: Vec<&str> = entries
        .iter()
        .filter(|e| e.manifest.fetch.is_some())
        .map(|e| e.manifest.name.as_str())
        .collect();
    match entries.iter().find(|e| e.manifest.name == name) {
        Some(e) if e.manifest.fetch.is_some() => Ok(e.clone()),
        Some(e) => bail!(
            "{name} has no [fetch] section in {}: its files are in the repository already",
            e.manifest_path().display()
        ),
        None => bail!(
            "unknown model {name:?}: models to fetch are {} (in {})",
            if fetchable.is_empty() {
                "none".to_string()
            } else {
                fetchable.join(", ")
            },
            dir.display()
        ),
    }
}

/// The directory of a fetched model's files, or an error saying how to fetch them.
pub fn fetched_dir(entry: &ZooEntry) -> Result<PathBuf> {
    let spec = entry
        .manifest
        .fetch
        .as_ref()
        .context("the manifest has no [fetch] section")?;
    Ok(fetch::ensure_fetched(&entry.manifest.name, spec)?)
}
