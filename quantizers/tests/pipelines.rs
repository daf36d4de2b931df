//! The dynamic, static and fp16 pipelines against independent computations: a small
//! conv net whose int8 output is recomputed here from the model's qparams with the
//! kernels' naive reference, bit for bit; dynamic Gemm against float arithmetic within a
//! bound derived from the scales; save/load round trips; digit-cnn's accuracy on a slice
//! of MNIST.

use std::collections::BTreeMap;
use std::path::Path;

use qbench_kernels::reference;
use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use qbench_quantizers::model::LayerKind;
use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::qparams::quantize;
use qbench_quantizers::{
    prepare, quantize_dynamic, save, ActScales, Backend, DynamicOptions, QConfig, QConfigMap,
    QExecutor, QuantError,
};

/// Test data in [-scale, scale) from the workspace's seeded generator.
fn uniform_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    rng.uniforms_f32(n, -scale, scale)
}

fn vi(name: &str, dims: Vec<Dim>) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dims,
    }
}

fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// x[N,2,6,6] → Conv 3x3 pad 1 (4 out) → Relu → MaxPool 2 → Flatten → Gemm (36 → 5).
fn small_cnn() -> Graph {
    let mut rng = Rng::new(0x9e3779b97f4a7c15);
    let mut init = BTreeMap::new();
    init.insert(
        "w1".into(),
        Tensor::new(vec![4, 2, 3, 3], uniform_vec(&mut rng, 72, 0.5)).unwrap(),
    );
    init.insert(
        "b1".into(),
        Tensor::new(vec![4], uniform_vec(&mut rng, 4, 0.1)).unwrap(),
    );
    init.insert(
        "w2".into(),
        Tensor::new(vec![5, 36], uniform_vec(&mut rng, 180, 0.3)).unwrap(),
    );
    init.insert(
        "b2".into(),
        Tensor::new(vec![5], uniform_vec(&mut rng, 5, 0.1)).unwrap(),
    );
    let conv = Op::Conv {
        spatial: Spatial {
            pads: [1, 1, 1, 1],
            ..Spatial::default()
        },
        group: 1,
    };
    let pool = Op::MaxPool {
        spatial: Spatial {
            kernel: Some([2, 2]),
            strides: [2, 2],
            ..Spatial::default()
        },
    };
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    Graph {
        name: "small_cnn".into(),
        inputs: vec![vi(
            "x",
            vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(2),
                Dim::Fixed(6),
                Dim::Fixed(6),
            ],
        )],
        outputs: vec![vi("y", vec![])],
        initializers: init,
        nodes: vec![
            node("conv", conv, &["x", "w1", "b1"], &["c"]),
            node("relu", Op::Relu, &["c"], &["r"]),
            node("pool", pool, &["r"], &["p"]),
            node("flat", Op::Flatten { axis: 1 }, &["p"], &["f"]),
            node("fc", gemm, &["f", "w2", "b2"], &["y"]),
        ],
    }
}

fn batches(n: usize, batch: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| Tensor::new(vec![batch, 2, 6, 6], uniform_vec(&mut rng, batch * 72, 1.0)).unwrap())
        .collect()
}

fn minmax_config(backend: Backend) -> QConfigMap {
    QConfigMap::global(QConfig::preset(backend).with_activation_observer(ObserverKind::MinMax))
}

/// Recomputes the static model's output with the naive reference: quantize the input,
/// reference conv + requant (fused ReLU clamp), max pool on u8, flatten in NCHW order,
/// reference GEMM + requant, dequantize.
fn independent_static(model: &qbench_quantizers::QuantizedModel, x: &Tensor) -> Vec<f32> {
    let conv = model.layer("conv").unwrap();
    let fc = model.layer("fc").unwrap();
    assert_eq!(conv.relu.as_deref(), Some("relu"));
    let (qx, qr, qy) = (
        &model.activations["x"],
        &model.activations["r"],
        &model.activations["y"],
    );
    let n = x.shape()[0];
    let xs = x.f32s().unwrap();
    // NCHW f32 → NHWC u8.
    let mut xq = vec![0u8; xs.len()];
    for b in 0..n {
        for c in 0..2 {
            for i in 0..36 {
                let v = xs[(b * 2 + c) * 36 + i];
                xq[(b * 36 + i) * 2 + c] = quantize(
                    v,
                    qx.scales[0],
                    qx.zero_points[0],
                    qx.spec.qmin,
                    qx.spec.qmax,
                ) as u8;
            }
        }
    }
    let sa = qx.scales[0];
    // Per-tensor weights (qnnpack) have one scale for every channel.
    let sw = |c: usize| conv.weight_q.scales[c.min(conv.weight_q.scales.len() - 1)] as f64;
    let conv_bias = conv.bias.as_ref().unwrap();
    let bias: Vec<i32> = (0..4)
        .map(|c| (conv_bias[c] as f64 / (sa as f64 * sw(c))).round_ties_even() as i32)
        .collect();
    let mult: Vec<f32> = (0..4)
        .map(|c| (sa as f64 * sw(c) / qr.scales[0] as f64) as f32)
        .collect();
    // Conv output [n, 6, 6, 4] u8 by the definition: Σ (x − za)·w over the padded window.
    let mut r = vec![0u8; n * 36 * 4];
    for b in 0..n {
        for oy in 0..6i32 {
            for ox in 0..6i32 {
                for co in 0..4 {
                    let mut acc: i32 = 0;
                    for ci in 0..2 {
                        for ky in 0..3i32 {
                            for kx in 0..3i32 {
                                let (iy, ix) = (oy + ky - 1, ox + kx - 1);
                                if !(0..6).contains(&iy) || !(0..6).contains(&ix) {
                                    continue;
                                }
                                let a = xq[((b * 6 + iy as usize) * 6 + ix as usize) * 2 + ci]
                                    as i32
                                    - qx.zero_points[0];
                                let w = conv.weight
                                    [((co * 2 + ci) * 3 + ky as usize) * 3 + kx as usize]
                                    as i32;
                                acc += a * w;
                            }
                        }
                    }
                    let t = ((acc + bias[co]) as f32 * mult[co]).round_ties_even() as i32
                        + qr.zero_points[0];
                    let lo = qr.zero_points[0].max(qr.spec.qmin);
                    r[((b * 6 + oy as usize) * 6 + ox as usize) * 4 + co] =
                        t.clamp(lo, qr.spec.qmax) as u8;
                }
            }
        }
    }
    // Max pool 2x2 stride 2 → [n, 3, 3, 4]; flatten in NCHW order → [n, 36].
    let mut f = vec![0u8; n * 36];
    for b in 0..n {
        for c in 0..4 {
            for py in 0..3 {
                for px in 0..3 {
                    let m = (0..4)
                        .map(|t| r[((b * 6 + py * 2 + t / 2) * 6 + px * 2 + t % 2) * 4 + c])
                        .max()
                        .unwrap();
                    f[b * 36 + c * 9 + py * 3 + px] = m;
                }
            }
        }
    }
    // fc through the kernels' reference GEMM (the oracle the SIMD kernels match).
    let sf = qr.scales[0];
    let fc_bias: Vec<i32> = fc
        .bias
        .as_ref()
        .unwrap()
        .iter()
        .zip(fc.weight_q.scales.iter().cycle())
        .map(|(b, sw)| (*b as f64 / (sf as f64 * *sw as f64)).round_ties_even() as i32)
        .collect();
    let fc_mult: Vec<f32> = fc
        .weight_q
        .scales
        .iter()
        .map(|sw| (sf as f64 * *sw as f64 / qy.scales[0] as f64) as f32)
        .collect();
    let a = qbench_kernels::MatA::new(&f, n, 36, qr.zero_points[0]);
    let b = qbench_kernels::MatB {
        data: &fc.weight,
        rows: 36,
        cols: 5,
        zero_points: &[0],
        transposed: true,
    };
    let mut y = vec![0u8; n * 5];
    reference::gemm_requant(
        &a,
        &b,
        &qbench_kernels::Requant {
            bias: Some(&fc_bias),
            multiplier: &fc_mult,
            out_zero_point: qy.zero_points[0],
            qmin: qy.spec.qmin as u8,
            qmax: qy.spec.qmax as u8,
        },
        &mut y,
        5,
    )
    .unwrap();
    y.iter()
        .map(|&v| (v as i32 - qy.zero_points[0]) as f32 * qy.scales[0])
        .collect()
}

#[test]
fn static_small_cnn_matches_an_independent_integer_computation() {
    let g = small_cnn();
    for backend in Backend::ALL {
        let mut prepared = prepare(&g, backend, minmax_config(backend)).unwrap();
        let calib = batches(4, 8, 7);
        let mut seen = Vec::new();
        prepared
            .calibrate(calib.iter(), |done, total| seen.push((done, total)))
            .unwrap();
        assert_eq!(seen.last(), Some(&(4, 4)));
        let model = prepared.convert().unwrap();
        assert_eq!(model.layers.len(), 2);
        let exec = QExecutor::new(&model).unwrap();
        assert!(
            exec.placements().iter().all(|p| p.int8),
            "{:?}",
            exec.placements()
        );
        let x = &batches(1, 5, 99)[0];
        let got = exec.run(std::slice::from_ref(x)).unwrap()[0]
            .f32s()
            .unwrap()
            .to_vec();
        assert_eq!(
            got,
            independent_static(&model, x),
            "backend {}",
            backend.name()
        );
        // And it is a quantization of the fp32 model: close, within a few output steps.
        let fp32 = Executor::new(&g, Options::default())
            .unwrap()
            .run(std::slice::from_ref(x))
            .unwrap();
        let step = model.activations["y"].scales[0];
        for (a, b) in got.iter().zip(fp32[0].f32s().unwrap()) {
            assert!((a - b).abs() < 12.0 * step, "{a} vs {b} (step {step})");
        }
    }
}

#[test]
fn save_and_load_are_bit_identical() {
    let g = small_cnn();
    let mut prepared = prepare(&g, Backend::Fbgemm, minmax_config(Backend::Fbgemm)).unwrap();
    prepared
        .calibrate(batches(2, 4, 3).iter(), |_, _| {})
        .unwrap();
    let model = prepared.convert().unwrap();
    let dir = std::env::temp_dir().join(format!("qbench-save-{}", std::process::id()));
    let path = dir.join("m.safetensors");
    save::save(&model, &path).unwrap();
    let loaded = save::load(&path).unwrap();
    let x = &batches(1, 3, 5)[0];
    let a = QExecutor::new(&model)
        .unwrap()
        .run(std::slice::from_ref(x))
        .unwrap();
    let b = QExecutor::new(&loaded)
        .unwrap()
        .run(std::slice::from_ref(x))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(model.activations, loaded.activations);
    for (l, m) in model.layers.iter().zip(&loaded.layers) {
        assert_eq!(
            (l.weight.clone(), &l.weight_q, &l.bias),
            (m.weight.clone(), &m.weight_q, &m.bias)
        );
    }
    // Corrupt files are errors naming the file, never panics.
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        let err = save::from_bytes(&bytes[..cut], &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.safetensors"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dynamic_gemm_is_within_the_quantization_bound_per_tensor_and_per_row() {
    let g = small_cnn();
    let x = &batches(1, 6, 11)[0];
    let fp32 = Executor::new(&g, Options::default())
        .unwrap()
        .run(std::slice::from_ref(x))
        .unwrap();
    let mut errors = Vec::new();
    for scales in [ActScales::PerTensor, ActScales::PerRow] {
        let mut opts = DynamicOptions::new(Backend::Vnni);
        opts.act_scales = scales;
        let model = quantize_dynamic(&g, &opts).unwrap();
        assert_eq!(model.layers.len(), 1);
        assert_eq!(model.layers[0].kind, LayerKind::Linear);
        let exec = QExecutor::new(&model).unwrap();
        let got = exec.run(std::slice::from_ref(x)).unwrap();
        let err: f32 = got[0]
            .f32s()
            .unwrap()
            .iter()
            .zip(fp32[0].f32s().unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // |Δy| ≤ Σk (|Δa|·|w| + |a|·|Δw|) ≤ k·(sa/2·max|w| + max|a|·sw/2), sa ≤ range/255.
        let w = model.layers[0].weight_q.scales[0];
        let bound = 36.0 * (4.0 / 255.0 / 2.0 * 0.3 + 2.0 * w / 2.0);
        assert!(err < bound, "{scales:?}: error {err} above {bound}");
        errors.push(err);
    }
    // Conv too when asked for, as `{nn.Linear, nn.Conv2d}`.
    let mut opts = DynamicOptions::new(Backend::Fbgemm);
    opts.op_types.push("Conv".into());
    let model = quantize_dynamic(&g, &opts).unwrap();
    assert_eq!(model.layers.len(), 2);
    let got = QExecutor::new(&model)
        .unwrap()
        .run(std::slice::from_ref(x))
        .unwrap();
    assert_eq!(got[0].shape(), fp32[0].shape());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let g = small_cnn();
    let prepared = prepare(&g, Backend::Fbgemm, minmax_config(Backend::Fbgemm)).unwrap();
    let err = prepared.convert().unwrap_err().to_string();
    assert!(err.contains("calibration set is empty"), "{err}");
    // NaN or Inf in the calibration data: named at the first layer that reads it ("conv"),
    // although it propagates to every later observed tensor (and "f", read by "fc", sorts
    // before "x" by name).
    for (bad_value, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let mut prepared = prepare(&g, Backend::Fbgemm, minmax_config(Backend::Fbgemm)).unwrap();
        let mut bad = batches(2, 2, 1);
        bad[1].f32s_mut().unwrap()[3] = bad_value;
        let err = prepared.calibrate(bad.iter(), |_, _| {}).unwrap_err();
        assert!(
            matches!(&err, QuantError::NonFinite { layer, index: 3, .. } if layer == "conv"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("layer \"conv\"") && msg.contains(shown),
            "{msg}"
        );
    }
    // NaN or Inf in a weight: named at its layer, as weights, by `prepare` (before any
    // calibration) and by the dynamic pipeline.
    for (w, layer) in [("w1", "conv"), ("w2", "fc")] {
        for (bad_value, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
            let mut g2 = g.clone();
            g2.initializers.get_mut(w).unwrap().f32s_mut().unwrap()[1] = bad_value;
            let err = prepare(&g2, Backend::Fbgemm, minmax_config(Backend::Fbgemm))
                .err()
                .unwrap();
            assert!(
                matches!(&err, QuantError::NonFinite { layer: l, what: "weights", index: 1, .. } if l == layer),
                "static, {w} = {bad_value}: {err:?}"
            );
            assert!(err.to_string().contains(shown), "{err}");
            if w == "w2" {
                let opts = DynamicOptions::new(Backend::Fbgemm);
                let err = quantize_dynamic(&g2, &opts).unwrap_err().to_string();
                assert!(err.contains("\"fc\"") && err.contains(shown), "{err}");
            }
        }
    }
    let map = minmax_config(Backend::Fbgemm).set_layer("nope", None);
    let err = prepare(&g, Backend::Fbgemm, map).err().unwrap().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn skipped_layers_stay_fp32_and_are_listed() {
    let g = small_cnn();
    let map = minmax_config(Backend::Qnnpack).set_layer("fc", None);
    let mut prepared = prepare(&g, Backend::Qnnpack, map).unwrap();
    prepared
        .calibrate(batches(2, 4, 3).iter(), |_, _| {})
        .unwrap();
    let model = prepared.convert().unwrap();
    assert_eq!(model.int8_layer_names(), vec!["conv"]);
    let exec = QExecutor::new(&model).unwrap();
    let fc = exec.placements().iter().find(|p| p.node == "fc").unwrap();
    assert!(!fc.int8);
    let x = &batches(1, 2, 8)[0];
    assert_eq!(
        exec.run(std::slice::from_ref(x)).unwrap()[0].shape(),
        &[2, 5]
    );
}

fn digit_cnn() -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/digit-cnn/model.onnx");
    qbench_models::onnx::load(path).unwrap()
}

fn top1(outputs: &Tensor, labels: &[u8]) -> usize {
    outputs
        .argmax_rows()
        .unwrap()
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count()
}

#[test]
fn digit_cnn_static_and_dynamic_keep_accuracy_on_a_slice() {
    let g = digit_cnn();
    let test = Dataset::load(DatasetKind::Mnist, Split::Test)
        .unwrap()
        .take(500);
    let train = Dataset::load(DatasetKind::Mnist, Split::Train)
        .unwrap()
        .take(256);
    let x = Tensor::new(vec![500, 1, 28, 28], test.images().to_vec()).unwrap();
    let fp32 = Executor::new(&g, Options::default())
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();
    let fp32_correct = top1(&fp32[0], test.labels());
    let calib: Vec<Tensor> = train
        .images()
        .chunks(64 * 784)
        .map(|c| Tensor::new(vec![c.len() / 784, 1, 28, 28], c.to_vec()).unwrap())
        .collect();
    for backend in Backend::ALL {
        let mut prepared =
            prepare(&g, backend, QConfigMap::global(QConfig::preset(backend))).unwrap();
        prepared.calibrate(calib.iter(), |_, _| {}).unwrap();
        let model = prepared.convert().unwrap();
        let exec = QExecutor::new(&model).unwrap();
        let out = exec.run(std::slice::from_ref(&x)).unwrap();
        let q_correct = top1(&out[0], test.labels());
        assert!(
            q_correct + 3 >= fp32_correct,
            "{}: static {q_correct} vs fp32 {fp32_correct} of 500",
            backend.name()
        );
        let int8: Vec<&str> = exec
            .placements()
            .iter()
            .filter(|p| p.int8)
            .map(|p| p.op.as_str())
            .collect();
        assert!(
            int8.contains(&"Conv") && int8.contains(&"MaxPool") && int8.contains(&"Gemm"),
            "{int8:?}"
        );
    }
    let dynamic = quantize_dynamic(&g, &DynamicOptions::new(Backend::Fbgemm)).unwrap();
    let out = QExecutor::new(&dynamic)
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();
    assert!(top1(&out[0], test.labels()) + 2 >= fp32_correct);
}

#[test]
fn constant_built_weights_and_sum_residuals_run_in_int8() {
    // onnx's light_resnet50: every weight comes out of a ConstantOfShape node and the
    // residuals are two-input Sums; constant folding and Sum-as-Add must put all of it
    // on the int8 path (only the final Softmax stays fp32).
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/light/light_resnet50.onnx");
    let g = qbench_models::onnx::load(path).unwrap();
    let convs_and_gemms = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Gemm { .. }))
        .count();
    let mut rng = Rng::new(42);
    let x = Tensor::new(
        vec![1, 3, 224, 224],
        uniform_vec(&mut rng, 3 * 224 * 224, 1.0),
    )
    .unwrap();
    let mut prepared = prepare(&g, Backend::Vnni, minmax_config(Backend::Vnni)).unwrap();
    prepared
        .calibrate(std::slice::from_ref(&x).iter(), |_, _| {})
        .unwrap();
    let model = prepared.convert().unwrap();
    assert_eq!(model.layers.len(), convs_and_gemms);
    let exec = QExecutor::new(&model).unwrap();
    let fp32: Vec<&str> = exec
        .placements()
        .iter()
        .filter(|p| !p.int8)
        .map(|p| p.op.as_str())
        .collect();
    assert_eq!(fp32, vec!["Softmax"]);
    let y = exec.run(std::slice::from_ref(&x)).unwrap();
    assert_eq!(y[0].shape(), &[1, 1000]);
}
