//! The fetched all-MiniLM-L6-v2 directory for tests, or `None` after printing why the
//! test skips (`SKIPPED <test>: <how to fetch>`). Shared by the models and quantizers
//! test suites (`#[path]`-included); ci/test.sh fetches the model first so CI runs them.

use std::path::PathBuf;

use qbench_models::zoo;

pub fn model_dir(test: &str) -> Option<PathBuf> {
    let entry =
        zoo::load_entry(&zoo::zoo_dir().join("minilm")).expect("the minilm manifest is valid");
    let spec = entry
        .manifest
        .fetch
        .as_ref()
        .expect("minilm has a [fetch] section");
    match qbench_models::fetch::ensure_fetched("minilm", spec) {
        Ok(dir) => Some(dir),
        Err(e) => {
            println!("SKIPPED {test}: {e}");
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}
