//! `qbench quantize` and `qbench bench-model` end to end on mlp-mnist: bench-model's JSON
//! fields, the weight-granularity override, calibration of a bare ONNX file (on
//! `--calib-data`, or on noise with a note saying so), and the flags' clean refusals.

mod common;

use std::path::{Path, PathBuf};

use common::{qbench, stderr, stdout, temp_dir};
use qbench_quantizers::{save, QuantizedModel};

fn mlp_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/mlp-mnist/model.onnx")
}

/// Runs `qbench quantize ARGS -o DIR/NAME` and loads the file it wrote.
fn quantize(dir: &Path, name: &str, args: &[&str]) -> (QuantizedModel, String) {
    let out = dir.join(name);
    let mut all = vec!["quantize"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let o = qbench(&all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    (save::load(&out).unwrap(), stderr(&o))
}

/// Runs `qbench quantize ARGS -o DIR/x.safetensors` and asserts it is refused with an
/// error containing every one of `needles`, writing no file.
fn assert_refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = dir.join("x.safetensors");
    let mut all = vec!["quantize"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let o = qbench(&all);
    let e = stderr(&o);
    assert!(!o.status.success(), "{args:?} was accepted");
    assert!(needles.iter().all(|n| e.contains(n)), "{args:?}: {e}");
    assert!(!out.exists(), "{args:?} wrote a file");
}

/// Whether every int8 layer's weights have one scale per output channel (`true`) or one
/// per tensor (`false`); panics on a mix.
fn per_channel(m: &QuantizedModel) -> bool {
    let pc: Vec<bool> = m
        .layers
        .iter()
        .map(|l| l.weight_q.is_per_channel())
        .collect();
    assert!(!pc.is_empty() && pc.iter().all(|&p| p == pc[0]), "{pc:?}");
    if pc[0] {
        for l in &m.layers {
            assert_eq!(l.weight_q.scales.len(), l.weight_shape[0], "{}", l.node);
        }
    }
    pc[0]
}

#[test]
fn bench_model_json_has_its_fields_and_speedup_is_the_ratio() {
    let o = qbench(&[
        "bench-model",
        "mlp-mnist",
        "--method",
        "dynamic",
        "--backend",
        "vnni",
        "--batch",
        "4",
        "--quick",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["model"], "mlp-mnist");
    assert_eq!(v["method"], "dynamic");
    assert_eq!(v["backend"], "vnni");
    assert_eq!(v["batch"], 4);
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (fp32, quant, speedup) = (num("fp32_ms"), num("quant_ms"), num("speedup"));
    assert!(fp32 > 0.0 && quant > 0.0, "{v}");
    assert!(
        (speedup - fp32 / quant).abs() <= 1e-9 * speedup,
        "speedup {speedup} is not fp32_ms / quant_ms = {}",
        fp32 / quant
    );
    // The spreads ride along.
    assert!(num("fp32_spread") >= 0.0 && num("quant_spread") >= 0.0);
}

#[test]
fn weight_granularity_follows_the_backend_unless_overridden() {
    let dir = temp_dir("quantize-granularity");
    let dynamic = ["mlp-mnist", "--method", "dynamic", "--backend"];
    // Dynamic: per channel under vnni, per tensor under fbgemm and qnnpack.
    for (backend, want) in [("vnni", true), ("fbgemm", false), ("qnnpack", false)] {
        let args: Vec<&str> = dynamic.iter().copied().chain([backend]).collect();
        let (m, _) = quantize(&dir, &format!("d-{backend}.safetensors"), &args);
        assert_eq!(per_channel(&m), want, "dynamic/{backend}");
    }
    let args: Vec<&str> = dynamic
        .iter()
        .copied()
        .chain(["fbgemm", "--per-channel"])
        .collect();
    let (m, _) = quantize(&dir, "d-fbgemm-pc.safetensors", &args);
    assert!(per_channel(&m), "dynamic/fbgemm --per-channel");
    let args: Vec<&str> = dynamic
        .iter()
        .copied()
        .chain(["vnni", "--per-tensor"])
        .collect();
    let (m, _) = quantize(&dir, "d-vnni-pt.safetensors", &args);
    assert!(!per_channel(&m), "dynamic/vnni --per-tensor");

    // Static: the preset (per channel under fbgemm and vnni, per tensor under qnnpack),
    // and the override; the activation grid stays the backend's.
    let stat = |backend: &'static str, extra: Option<&'static str>| {
        let mut a = vec![
            "mlp-mnist",
            "--method",
            "static",
            "--calib-samples",
            "64",
            "--backend",
            backend,
        ];
        a.extend(extra);
        a
    };
    let (q, _) = quantize(&dir, "s-qnnpack.safetensors", &stat("qnnpack", None));
    assert!(!per_channel(&q));
    let (qpc, _) = quantize(
        &dir,
        "s-qnnpack-pc.safetensors",
        &stat("qnnpack", Some("--per-channel")),
    );
    assert!(per_channel(&qpc));
    assert_eq!(qpc.activations, q.activations, "only the weights change");
    let (f, _) = quantize(
        &dir,
        "s-fbgemm-pt.safetensors",
        &stat("fbgemm", Some("--per-tensor")),
    );
    assert!(!per_channel(&f));
    assert!(f.activations.values().all(|a| a.spec.qmax == 127));

    // Refusals name the flags.
    assert_refused(
        &dir,
        &["mlp-mnist", "--method", "fp16", "--per-tensor"],
        &["--per-tensor"],
    );
    assert_refused(
        &dir,
        &["mlp-mnist", "--per-channel", "--per-tensor"],
        &["--per-tensor"],
    );
}

#[test]
fn a_bare_onnx_file_calibrates_on_calib_data_or_says_it_used_noise() {
    let dir = temp_dir("quantize-calib-data");
    let file = mlp_file();
    let file = file.to_str().unwrap();
    fn args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![model];
        a.extend_from_slice(&[
            "--method",
            "static",
            "--backend",
            "vnni",
            "--calib-samples",
            "64",
        ]);
        a.extend_from_slice(extra);
        a
    }

    // Without --calib-data: noise, and a line on stderr that says so and what to do.
    let (noise, err) = quantize(&dir, "noise.safetensors", &args(file, &[]));
    assert!(
        err.contains("synthetic noise") && err.contains("--calib-data mnist|fashion-mnist"),
        "{err}"
    );
    // With it: the same calibration as the zoo model on the same training images.
    let (real, err) = quantize(
        &dir,
        "real.safetensors",
        &args(file, &["--calib-data", "mnist"]),
    );
    assert!(!err.contains("synthetic"), "{err}");
    let (zoo, _) = quantize(&dir, "zoo.safetensors", &args("mlp-mnist", &[]));
    assert_eq!(real.activations, zoo.activations);
    assert_ne!(noise.activations, zoo.activations);
    // Noise is uniform in [0, 1); MNIST normalised reaches below zero.
    let input = &zoo.layers[0].input;
    let lowest = |m: &QuantizedModel| {
        let a = &m.activations[input];
        a.dequantize_one(a.spec.qmin, 0)
    };
    assert!(lowest(&real) < -0.3 && lowest(&noise) >= 0.0);

    // Refusals: another method, or a zoo model that has its own data.
    assert_refused(
        &dir,
        &[file, "--method", "dynamic", "--calib-data", "mnist"],
        &["--calib-data applies to --method static"],
    );
    assert_refused(
        &dir,
        &["mlp-mnist", "--calib-data", "fashion-mnist"],
        &["--calib-data fashion-mnist", "mlp-mnist"],
    );
}

#[test]
fn export_onnx_help_names_every_method_that_exports() {
    let o = qbench(&["quantize", "--help"]);
    let help = stdout(&o);
    assert!(help.contains("--export-onnx"), "{help}");
    assert!(!help.contains("Static/QAT: also export"), "{help}");
    assert!(help.contains("`qoperator` (every method)"), "{help}");
}
