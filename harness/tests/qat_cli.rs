//! `qbench quantize --method qat` end to end (fine-tune on a slice, convert, save, export,
//! `qbench eval` of the file), its flags validated before any work, and QAT cells in a
//! quick sweep.

mod common;

use common::{qbench, stderr, stdout, temp_dir};
use qbench::results::{Method, Results, State};

/// The top-1 percentage `qbench eval` prints.
fn top1(out: &str) -> f64 {
    out.split("top-1 ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no top-1 in {out}"))
}

#[test]
fn qat_on_a_slice_writes_a_model_that_eval_and_the_onnx_export_take() {
    let dir = temp_dir("qat-cli");
    let file = dir.join("rf.safetensors");
    let onnx = dir.join("rf.onnx");
    let o = qbench(&[
        "quantize",
        "resnet-fashion",
        "--method",
        "qat",
        "--backend",
        "qnnpack",
        "--train-samples",
        "512",
        "--seed",
        "2",
        "--freeze-observers-after",
        "1",
        "--export-onnx",
        "qdq",
        onnx.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
    ]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("qat / qnnpack") && out.contains("12 int8 layers"),
        "{out}"
    );
    assert!(
        err.contains("1 epoch over 512 training images") && err.contains("qat epoch 1/1: loss"),
        "{err}"
    );
    assert!(onnx.is_file() && file.is_file());
    let o = qbench(&["eval", file.to_str().unwrap(), "--limit", "1000"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("(qat / qnnpack)"), "{out}");
    // The quantized file ran on the quantized executor, and the output says so.
    assert!(
        out.contains("qbench quantized executor (qat), batch"),
        "{out}"
    );
    assert!(!out.contains("fp32 executor"), "{out}");
    assert!(top1(&out) > 85.0, "{out}");
}

#[test]
fn qat_flags_are_checked_before_any_work() {
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--method", "static", "--epochs", "2", "--quick"],
            &["--epochs, --quick", "--method qat only"],
        ),
        (
            &["--method", "qat", "--freeze-observers-after", "0"],
            &["--freeze-observers-after", "before they saw any data"],
        ),
        (&["--method", "qat", "--lr", "0"], &["--lr", "positive"]),
        (
            &["--method", "qat", "--quick", "--train-samples", "10"],
            &["--quick and --train-samples"],
        ),
        (
            &["--method", "qat", "--train-samples", "0"],
            &["--train-samples 0"],
        ),
    ];
    for (flags, expect) in cases {
        let mut args = vec!["quantize", "digit-cnn"];
        args.extend_from_slice(flags);
        args.extend(["-o", "/nonexistent/never-written.safetensors"]);
        let start = std::time::Instant::now();
        let o = qbench(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{flags:?} succeeded");
        for e in expect {
            assert!(err.contains(e), "{flags:?}: {err}");
        }
        // Refused before reading a dataset or training.
        assert!(
            start.elapsed().as_secs() < 20,
            "{flags:?} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_quick_sweep_runs_qat_cells_and_records_the_fine_tuning_time() {
    let dir = temp_dir("qat-sweep");
    let out = dir.join("run");
    let o = qbench(&[
        "sweep",
        "--quick",
        "--models",
        "resnet-fashion",
        "--methods",
        "fp32,qat",
        "--backends",
        "fbgemm",
        "--batch",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = Results::read(&out.join("results.json")).expect("results.json validates");
    let qat = r.cells.iter().find(|c| c.method == Method::Qat).unwrap();
    assert_eq!(qat.state, State::Measured, "{:?}", qat.reason);
    assert!(qat.quantize_s.unwrap() > 0.0);
    let acc = qat.accuracy.as_ref().unwrap();
    assert!(acc.drop_pp.abs() < 3.0, "qat drops {} pp", acc.drop_pp);
    assert!(qat.agreement.unwrap() > 0.95);
    assert!(qat.size_ratio.unwrap() < 0.35);
    assert_eq!(r.seeds.get("qat_shuffle"), Some(&3));
}
