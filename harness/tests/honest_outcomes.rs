//! Commands say what they did not do: a batch the data cannot fill, a batch over the memory
//! budget, more threads than cores, an export form the method lacks, and a bad memory
//! budget are errors (naming the flag, model or variable), never a number that misleads or
//! a file written before the refusal.

mod common;

use common::{qbench, stderr, temp_dir};
use std::process::Command;

fn assert_refused(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "accepted: {err}");
    assert_eq!(o.status.code(), Some(1), "not a clean error exit: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from: {err}");
    }
}

#[test]
fn a_batch_larger_than_the_eval_set_is_refused_not_recorded() {
    let o = qbench(&["bench-model", "digit-cnn", "--batch", "20000", "--quick"]);
    assert_refused(&o, &["batch 20000", "digit-cnn's eval set (10000 inputs)"]);
}

#[test]
fn a_batch_over_the_memory_budget_is_an_error_naming_the_bytes_not_an_abort() {
    let o = qbench(&[
        "bench-model",
        "resnet50",
        "--batch",
        "4000000000",
        "--quick",
    ]);
    assert_refused(
        &o,
        &["resnet50's input at batch 4000000000", "memory budget"],
    );
    let o = qbench(&["--max-memory", "1K", "inspect", "digit-cnn"]);
    assert_refused(&o, &["1024 bytes"]);
}

#[test]
fn a_bad_memory_budget_names_the_flag_or_variable() {
    let o = qbench(&["--max-memory", "12X", "machine"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--max-memory"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_qbench"))
        .arg("machine")
        .env("QBENCH_MAX_MEMORY", "lots")
        .output()
        .unwrap();
    assert_refused(&o, &["QBENCH_MAX_MEMORY=\"lots\""]);
}

#[test]
fn more_threads_than_cores_is_refused_by_every_timing_command() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let t = (cores + 1).to_string();
    for args in [
        vec![
            "bench-gemm",
            "--quick",
            "--shapes",
            "8x8x8",
            "--threads",
            &t,
        ],
        vec!["bench-conv", "--quick", "--threads", &t],
    ] {
        let o = qbench(&args);
        assert_refused(&o, &[&format!("threads {t}"), "cores"]);
    }
}

#[test]
fn quantize_refuses_an_export_form_before_writing_anything() {
    let dir = temp_dir("quantize-export-first");
    let out = dir.join("m.safetensors");
    let onnx = dir.join("m.onnx");
    std::fs::write(&out, b"the user's file").unwrap();
    let o = qbench(&[
        "quantize",
        "mlp-mnist",
        "--method",
        "dynamic",
        "-o",
        out.to_str().unwrap(),
        "--export-onnx",
        "qdq",
        onnx.to_str().unwrap(),
    ]);
    assert_refused(&o, &["no QDQ form"]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"the user's file",
        "-o was overwritten before the refusal"
    );
    assert!(!onnx.exists());
}

#[test]
fn gemm_shapes_that_wrap_or_exceed_the_budget_are_refused_before_measuring() {
    for shape in ["4294967296x4294967296x4294967296", "100000x100000x100000"] {
        let o = qbench(&["bench-gemm", "--quick", "--shapes", shape]);
        assert_refused(&o, &["--shapes", "matrix A"]);
    }
}
