//! Every call into the `qbench` (harness) library, in one place.
//!
//! The harness's modules may move (e.g. `qbench::results` to `qbench::ci::results` in a
//! restructure under way in parallel): when they do, this file is the only one to fix.
//! What is called is what `gate`, `compare` and `report` run on the files they read.
//!
//! `inspect`'s dry run lives in the binary (harness/src/inspect.rs), not the library, so
//! it is mirrored here: [`inspect_dry_run`] and [`batch1_zeros`] are copies of its
//! `dry_run` and `batch1_shape`. When issue 18's fixes change those (a checked input
//! size, the memory budget at plan time), mirror the change here, or better, move
//! `dry_run` into the library and call it from both.

use std::collections::HashSet;
use std::path::Path;

use qbench_models::error::ModelError;
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Dim, Graph, ValueInfo};
use qbench_models::tensor::Tensor;

pub use qbench::results::Results;
pub use qbench::thresholds::Thresholds;

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
    let report = qbench::gate::evaluate(results, thresholds);
    let _ = qbench::gate::render_text(&report);
    let _ = qbench::gate::render_markdown(&report, RESULTS_FILE);
    let _ = qbench::gate::render_junit(&report);
    let _ = report.exit_code();
}

/// What `qbench compare` and `qbench report` do with a parsed results file: compare it
/// with a baseline both ways, and render it in every report format but HTML (which only
/// escapes; it is the slowest and adds no arithmetic).
pub fn compare_and_report(results: &Results, baseline: &Results) {
    let rules = qbench::compare::Rules::default();
    for (a, b) in [(baseline, results), (results, baseline)] {
        let cmp = qbench::compare::compare(a, b, &rules);
        let _ = qbench::compare::render(&cmp, &rules);
    }
    let _ = qbench::report::markdown(results);
    let _ = qbench::report::csv(results);
    let _ = qbench::report::render(results, qbench::report::Format::Table);
}

/// A graph input's shape at batch 1 (a free first dim is the batch); `None` when another
/// dim is free. The same rule as `qbench inspect`'s dry run.
pub fn batch1_shape(vi: &ValueInfo) -> Option<Vec<usize>> {
    vi.dims
        .iter()
        .enumerate()
        .map(|(k, d)| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) if k == 0 => Some(1),
            Dim::Symbolic(_) => None,
        })
        .collect()
}

/// Zeros for every graph input, as the dry run feeds them.
pub fn batch1_zeros(inputs: &[ValueInfo]) -> Option<Vec<Tensor>> {
    inputs
        .iter()
        .map(|vi| batch1_shape(vi).map(Tensor::zeros))
        .collect()
}

/// `qbench inspect`'s dry run: every node output a graph output, batch 1, zeros.
pub fn inspect_dry_run(graph: &Graph) -> Result<Vec<Tensor>, ModelError> {
    let mut g = graph.clone();
    let already: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    for n in &graph.nodes {
        for o in n
            .outputs
            .iter()
            .filter(|o| !o.is_empty() && !already.contains(*o))
        {
            g.outputs.push(ValueInfo {
                name: o.clone(),
                dims: Vec::new(),
            });
        }
    }
    let inputs = batch1_zeros(&graph.inputs)
        .ok_or_else(|| ModelError::Tensor("an input has a free non-batch dim".into()))?;
    Executor::new(&g, Options { threads: 1 })?.run(&inputs)
}
