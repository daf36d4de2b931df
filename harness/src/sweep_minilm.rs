//! The sweep's handling of zoo models built from fetched weights rather than loaded from
//! an ONNX file (manifest `architecture = "bert-sentence"`: MiniLM).
//!
//! Such a model has no image eval set and no ONNX file, so the generic path of
//! `sweep.rs` (`eval::resolve`, top-1 on MNIST) does not apply to it. This module decides
//! at plan time what its cells are (absent weights: every cell skipped with the fetch
//! message, never a failed plan) and runs its groups.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use qbench::results::{Cell, CellKey, Method, State};
use qbench_models::zoo::{self, ZooEntry};

/// The zoo entry of `name` when it is a model built from weights, else `None` (a file
/// path, an ONNX zoo model, or an unknown name: the generic path reports those).
pub fn weights_model(name: &str) -> Result<Option<ZooEntry>> {
    let dir = zoo::zoo_dir();
    let entries =
        zoo::list(&dir).with_context(|| format!("reading the model zoo in {}", dir.display()))?;
    Ok(entries
        .into_iter()
        .find(|e| e.manifest.name == name && e.manifest.architecture.is_some()))
}

/// Why every cell of `entry` is skipped on this machine, if one is: its weights are not
/// fetched (the message says how to fetch them).
pub fn absent_reason(entry: &ZooEntry) -> Option<String> {
    crate::fetch::fetched_dir(entry)
        .err()
        .map(|e| format!("{e:#}"))
}

/// Why `method` does not apply to a model built from weights, if it does not.
pub fn method_skip(method: Method) -> Option<&'static str> {
    match method {
        Method::Static => Some(
            "static quantization of the transformer is not built: per-tensor activation scales \
             calibrated offline cannot hold MiniLM's outlier tokens (dynamic per-token scales are \
             the method for it)",
        ),
        Method::Qat => Some(
            "qat is not built for MiniLM (it needs a training objective and data for the encoder)",
        ),
        _ => None,
    }
}

/// The cells of one (model, backend) group of a weights model: cells skipped at plan time
/// keep their reason; until the runner exists, the others are skipped saying so.
pub fn run_group(skips: &BTreeMap<CellKey, String>, keys: &[CellKey]) -> Vec<Cell> {
    keys.iter()
        .map(|k| {
            let mut c = Cell::new(&k.model, k.method, k.backend, k.batch, k.threads);
            c.state = State::Skipped;
            c.reason = Some(skips.get(k).cloned().unwrap_or_else(|| NOT_BUILT.into()));
            c
        })
        .collect()
}

/// The reason given to the cells the runner does not measure yet.
pub const NOT_BUILT: &str =
    "the sweep does not measure MiniLM yet; `qbench bench-minilm` times its fp32";
