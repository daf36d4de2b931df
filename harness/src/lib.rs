//! The `qbench` library behind the binary: the modules that tests and other commands use
//! by type, not through the CLI. `results` is the results-file contract; `gate`,
//! `compare`, `merge` and `baseline` read it. `machine` and `output` live here so the
//! results header can record the fingerprint and files are written atomically; the
//! binary (`main.rs`) imports them from here.

pub mod baseline;
pub mod compare;
pub mod gate;
pub mod machine;
pub mod merge;
pub mod output;
pub mod report;
pub mod results;
pub mod thresholds;
