//! Where in qbench a failure happened: the first backtrace frames in qbench's own crates.
//!
//! A panic raised inside std (`capacity overflow`, an overflowing `product()`) and an
//! allocation the budget refuses are located in std or in the allocator; the qbench
//! frames that led there are what a reader of the finding needs.

use std::backtrace::Backtrace;

/// Source roots of the workspace's crates, as they appear in backtrace paths (the fuzz
/// crate's own too, because its targets stand in for the harness's commands).
const CRATES: [&str; 5] = [
    "models/src/",
    "quantizers/src/",
    "kernels/src/",
    "harness/src/",
    "fuzz/src/",
];

/// The driver's own frames, which say nothing about the input.
const DRIVER: [&str; 3] = [
    "fuzz/src/child.rs",
    "fuzz/src/alloc.rs",
    "fuzz/src/frames.rs",
];

/// The first two qbench frames of `backtrace` (its `Display`), innermost first, as
/// `file.rs:line:col < caller.rs:line:col`: the function that failed and who called it
/// (`Tensor::zeros` alone says little).
pub fn qbench_frame(backtrace: &str) -> Option<String> {
    let frames: Vec<String> = backtrace
        .lines()
        .filter_map(|line| {
            let path = line.trim().strip_prefix("at ")?;
            CRATES
                .iter()
                .find_map(|c| path.find(c).map(|at| path[at..].to_string()))
        })
        .filter(|f| !DRIVER.iter().any(|d| f.starts_with(d)))
        .take(2)
        .collect();
    (!frames.is_empty()).then(|| frames.join(" < "))
}

/// The first qbench frames of the current stack.
pub fn here() -> Option<String> {
    qbench_frame(&Backtrace::force_capture().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frames_in_qbench_crates_are_found() {
        let bt = "   0: alloc::raw_vec::capacity_overflow\n             at /rustc/abc/library/alloc/src/raw_vec/mod.rs:28:5\n   1: qbench_models::tensor::Tensor::zeros\n             at ./models/src/tensor.rs:61:9\n";
        assert_eq!(
            qbench_frame(bt).as_deref(),
            Some("models/src/tensor.rs:61:9")
        );
        let two = format!(
            "{bt}   2: qbench_fuzz::targets::zeros_for\n             at ./fuzz/src/targets.rs:120:5\n   3: x\n             at ./fuzz/src/child.rs:1:1\n   4: y\n             at ./models/src/a.rs:1:1\n"
        );
        assert_eq!(
            qbench_frame(&two).as_deref(),
            Some("models/src/tensor.rs:61:9 < fuzz/src/targets.rs:120:5")
        );
        assert_eq!(qbench_frame("nothing"), None);
    }
}
