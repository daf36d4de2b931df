//! Every call into the `qbench` (harness) library, in one place.
//!
//! When the harness's modules move, this file is the only one to fix. What is called is
//! what `gate`, `compare`, `report` and `inspect` run on the files they read.

use std::path::Path;

use qbench_models::error::ModelError;
use qbench_models::ir::{Graph, ValueInfo};
use qbench_models::tensor::Tensor;

pub use qbench::ci::thresholds::Thresholds;
pub use qbench::results::Results;

/// The name files are given in error messages.
const RESULTS_FILE: &str = "fuzz-results.json";
const THRESHOLDS_FILE: &str = "fuzz-thresholds.toml";

/// `Results::parse`, as `gate`, `compare`, `merge` and `report` read a results file.
pub fn parse_results(text: &str) -> Option<Results> {
    Results::parse(text, Path::new(RESULTS_FILE)).ok()
}

/// `Thresholds::parse`, as `gate` reads its rules.
pub fn parse_thresholds(text: &str) -> Option<Thresholds> {
    Thresholds::parse(text, Path::new(THRESHOLDS_FILE)).ok()
}

/// What `qbench gate` does with a parsed pair: evaluate, and render every output format.
pub fn gate(results: &Results, thresholds: &Thresholds) {
    let report = qbench::ci::gate::evaluate(results, thresholds);
    let _ = qbench::ci::gate::render_text(&report);
    let _ = qbench::ci::gate::render_markdown(&report, RESULTS_FILE);
    let _ = qbench::ci::gate::render_junit(&report);
    let _ = report.exit_code();
}

/// What `qbench compare` and `qbench report` do with a parsed results file: compare it
/// with a baseline both ways, and render it in every report format but HTML (which only
/// escapes; it is the slowest and adds no arithmetic).
pub fn compare_and_report(results: &Results, baseline: &Results) {
    let rules = qbench::ci::compare::Rules::default();
    for (a, b) in [(baseline, results), (results, baseline)] {
        let cmp = qbench::ci::compare::compare(a, b, &rules);
        let _ = qbench::ci::compare::render(&cmp, &rules);
    }
    let _ = qbench::report::markdown(results);
    let _ = qbench::report::csv(results);
    let _ = qbench::report::render(results, qbench::report::Format::Table);
}

/// A graph input's shape at batch 1 (a free first dim is the batch); `None` when another
/// dim is free: `qbench inspect`'s rule.
pub fn batch1_shape(vi: &ValueInfo) -> Option<Vec<usize>> {
    qbench::commands::inspect::batch1_shape(vi)
}

/// Zeros for every graph input, as the dry run feeds them (checked against the memory
/// budget; `None` when a shape is free or over it).
pub fn batch1_zeros(inputs: &[ValueInfo]) -> Option<Vec<Tensor>> {
    inputs
        .iter()
        .map(|vi| batch1_shape(vi).and_then(|s| Tensor::try_zeros(s).ok()))
        .collect()
}

/// `qbench inspect`'s dry run itself.
pub fn inspect_dry_run(graph: &Graph) -> Result<(), ModelError> {
    qbench::commands::inspect::dry_run(graph).map(|_| ())
}
