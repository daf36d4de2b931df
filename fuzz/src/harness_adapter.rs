//! Every call into the `qbench` (harness) library, in one place.
//!
//! The harness's modules may move (e.g. `qbench::results` to `qbench::ci::results` in a
//! restructure under way in parallel): when they do, this file is the only one to fix.
//! What is called is what `gate`, `compare` and `report` run on the files they read.

use std::path::Path;

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
