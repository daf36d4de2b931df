//! The fixed-seed CI run: 3,000 cases per format on seed 1, every case in a child of the
//! driver under the counting allocator. Part of `cargo test --workspace`, so CI runs it on
//! the binary the tests already built; it fails on any finding not listed in
//! `fuzz/regressions/known-failing.txt`. `ci/fuzz.sh N` runs longer, on a new seed.

use std::process::Command;

#[test]
fn seed_1_finds_nothing_unlisted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("qbench-fuzz-ci-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_qbench-fuzz"))
        .args(["--seed", "1", "--cases", "3000", "--format", "all"])
        .arg("--out")
        .arg(&out)
        .arg("--known")
        .arg(root.join("regressions/known-failing.txt"))
        .output()
        .expect("the driver runs");
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.status.success(),
        "findings (saved under {}):\n{text}",
        out.display()
    );
    let _ = std::fs::remove_dir_all(&out);
}
