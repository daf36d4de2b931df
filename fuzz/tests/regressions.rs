//! The regression corpus: every input under `fuzz/regressions/<format>/` once failed.
//! Replayed each in its own child process; the test fails if an input fails that
//! `fuzz/regressions/known-failing.txt` does not list (a regression, or a new finding
//! added to the corpus without a line). A listed input that passes is printed as FIXED:
//! remove its line when its fix lands.

use std::process::Command;

#[test]
fn no_regression_input_fails_unless_listed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_qbench-fuzz"))
        .arg("--replay")
        .arg(root.join("regressions"))
        .arg("--known")
        .arg(root.join("regressions/known-failing.txt"))
        .output()
        .expect("the driver runs");
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(
        o.status.success(),
        "unlisted failures in the regression corpus:\n{text}"
    );
}
