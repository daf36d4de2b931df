//! What a CI job runs on results files: `gate` (limits from a thresholds file),
//! `compare` (per-cell deltas between two runs), the committed `baseline`, and `merge`
//! (joining a sharded sweep's files). Each reads the [`crate::results`] contract only.

pub mod baseline;
pub mod compare;
pub mod gate;
pub mod merge;
pub mod thresholds;

/// Values within this distance of a limit meet it: drops and ratios are computed in
/// floating point (0.9906 − 0.9886 is 0.0020000000000000018), and a gate must not flip
/// on the last bit.
pub const TOLERANCE: f64 = 1e-9;
