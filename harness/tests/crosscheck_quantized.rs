//! `qbench crosscheck FILE.safetensors`: a quantized model's ONNX export in tract against
//! our executor, under the quantizers crate's tolerance policy.

mod common;

use common::{qbench, stderr, stdout, temp_dir};

#[test]
fn quantized_files_crosscheck_against_tract() {
    let dir = temp_dir("crosscheck-quantized");
    let dynamic = dir.join("mlp.safetensors");
    let o = qbench(&[
        "quantize",
        "mlp-mnist",
        "--method",
        "dynamic",
        "--backend",
        "fbgemm",
        "-o",
        dynamic.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = qbench(&["crosscheck", dynamic.to_str().unwrap(), "--samples", "200"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    // Dynamic Linear layers are exact in tract: same quantization, integer accumulation
    // and dequantization.
    assert!(out.contains("QOperator  max 0.000 LSB"), "{out}");
    assert!(
        out.contains("of 200 rows: PASS") && out.trim_end().ends_with("PASS"),
        "{out}"
    );

    let stat = dir.join("dc.safetensors");
    let o = qbench(&[
        "quantize",
        "digit-cnn",
        "--method",
        "static",
        "--backend",
        "qnnpack",
        "--calib-samples",
        "64",
        "-o",
        stat.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = qbench(&["crosscheck", stat.to_str().unwrap(), "--samples", "100"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("QOperator ") && out.contains("Qdq "), "{out}");

    let missing = dir.join("nope.safetensors");
    let o = qbench(&["crosscheck", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.safetensors"), "{}", stderr(&o));
}
