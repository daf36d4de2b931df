//! Per-layer SQNR (`qbench_quantizers::sqnr::per_layer_sqnr`) against an independent
//! computation: the fp32 activations of every int8 layer from the models crate's plain
//! executor (the original graph with those tensors made outputs), the quantized ones
//! dequantized from the executor's trace (checked against its ordinary output where the
//! layer's output is the model's), and `10·log10(Σx² / Σ(x − x̂)²)` in f64 here. Every
//! int8 layer of the quantized model must appear, on zoo models with fused ReLUs, folded
//! BatchNorms and residual Adds.

mod support;

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Graph, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_quantizers::sqnr::per_layer_sqnr;
use qbench_quantizers::{quantize_dynamic, Backend, DynamicOptions, QExecutor, QuantizedModel};
use std::slice::from_ref;
use support::{static_model, zoo};

fn images(kind: DatasetKind, split: Split, n: usize) -> Tensor {
    let d = Dataset::load(kind, split).unwrap();
    Tensor::new(vec![n, 1, 28, 28], d.images()[..n * 28 * 28].to_vec()).unwrap()
}

/// The fp32 values of `names` on `x`, from the original graph with them as outputs.
fn fp32_tensors(g: &Graph, names: &[String], x: &Tensor) -> Vec<Tensor> {
    let mut g = g.clone();
    g.outputs = names
        .iter()
        .map(|n| ValueInfo {
            name: n.clone(),
            dims: Vec::new(),
        })
        .collect();
    Executor::new(&g, Options::default())
        .unwrap()
        .run(std::slice::from_ref(x))
        .unwrap()
}

fn reference_db(x: &[f32], xq: &[f32]) -> f64 {
    assert_eq!(x.len(), xq.len());
    let signal: f64 = x.iter().map(|&a| f64::from(a).powi(2)).sum();
    let noise: f64 = x
        .iter()
        .zip(xq)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

/// Checks `per_layer_sqnr` on one model and returns its figures by layer.
fn check(what: &str, g: &Graph, model: &QuantizedModel, x: &Tensor) -> Vec<(String, f64)> {
    let exec = QExecutor::new(model).unwrap();
    let got = per_layer_sqnr(g, model, &exec, x).unwrap();
    let layers: Vec<&str> = model.layers.iter().map(|l| l.node.as_str()).collect();
    assert!(!layers.is_empty(), "{what}: no int8 layer");
    let reported: Vec<&str> = got.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(reported, layers, "{what}: every int8 layer, in order");

    let outputs: Vec<String> = model.layers.iter().map(|l| l.output.clone()).collect();
    let fp32 = fp32_tensors(g, &outputs, x);
    let traced = exec.run_traced(std::slice::from_ref(x)).unwrap();
    let final_out = exec.run(std::slice::from_ref(x)).unwrap();
    let mut figures = Vec::new();
    for ((l, r), x32) in model.layers.iter().zip(&got).zip(&fp32) {
        assert_eq!(r.tensor, l.output, "{what}");
        let xq = &traced[&l.output];
        if l.output == g.outputs[0].name {
            // The trace is what the model computes: its output equals the plain run's.
            assert_eq!(xq.f32s().unwrap(), final_out[0].f32s().unwrap(), "{what}");
        }
        let want = reference_db(x32.f32s().unwrap(), xq.f32s().unwrap());
        assert!(want.is_finite(), "{what} {}: {want}", l.node);
        // Equal up to fp32 rounding of the reference: the plain executor here folds a
        // BatchNorm into its conv when the conv's own output is not asked for, the API's
        // probe asks for every tensor (resnet-fashion's activations differ by ~1e-6, the
        // SQNR by ~2e-5 dB; the other models agree to 1e-9 relative).
        assert!(
            (r.sqnr_db - want).abs() <= 1e-3,
            "{what} {}: {} dB, independently {want} dB",
            l.node,
            r.sqnr_db
        );
        // An int8 layer is neither exact nor noise (8 bits ≈ 6 dB per bit at best).
        assert!(
            (5.0..60.0).contains(&want),
            "{what} {}: {want} dB is not an int8 figure",
            l.node
        );
        eprintln!("{what} {}: {want:.2} dB", l.node);
        figures.push((l.node.clone(), want));
    }
    figures
}

#[test]
fn per_layer_sqnr_matches_an_independent_computation_on_zoo_models() {
    let mnist_calib = images(DatasetKind::Mnist, Split::Train, 64);
    let mnist_x = images(DatasetKind::Mnist, Split::Test, 32);
    let mlp = qbench_models::onnx::load(zoo("mlp-mnist/model.onnx")).unwrap();
    check(
        "mlp-mnist static/fbgemm",
        &mlp,
        &static_model(&mlp, Backend::Fbgemm, from_ref(&mnist_calib)),
        &mnist_x,
    );
    check(
        "mlp-mnist dynamic/vnni",
        &mlp,
        &quantize_dynamic(&mlp, &DynamicOptions::new(Backend::Vnni)).unwrap(),
        &mnist_x,
    );
    let dc = qbench_models::onnx::load(zoo("digit-cnn/model.onnx")).unwrap();
    check(
        "digit-cnn static/qnnpack",
        &dc,
        &static_model(&dc, Backend::Qnnpack, from_ref(&mnist_calib)),
        &mnist_x,
    );
    // Folded BatchNorms, fused ReLUs and residual Adds: the layers' output names must
    // still be found in the original graph.
    let rf = qbench_models::onnx::load(zoo("resnet-fashion/model.onnx")).unwrap();
    check(
        "resnet-fashion static/vnni",
        &rf,
        &static_model(
            &rf,
            Backend::Vnni,
            from_ref(&images(DatasetKind::FashionMnist, Split::Train, 64)),
        ),
        &images(DatasetKind::FashionMnist, Split::Test, 16),
    );
}

/// A coarser grid on one layer's output lowers that layer's SQNR: the figure follows the
/// quantization error rather than merely being a number.
#[test]
fn a_coarser_output_grid_lowers_that_layers_sqnr() {
    let g = qbench_models::onnx::load(zoo("mlp-mnist/model.onnx")).unwrap();
    let x = images(DatasetKind::Mnist, Split::Test, 32);
    let model = static_model(
        &g,
        Backend::Vnni,
        from_ref(&images(DatasetKind::Mnist, Split::Train, 64)),
    );
    let before = check("mlp-mnist static/vnni", &g, &model, &x);
    let mut coarse = model.clone();
    let first = coarse.layers[0].output.clone();
    let qp = coarse.activations.get_mut(&first).unwrap();
    qp.scales[0] *= 8.0;
    let exec = QExecutor::new(&coarse).unwrap();
    let after = per_layer_sqnr(&g, &coarse, &exec, &x).unwrap();
    assert!(
        after[0].sqnr_db < before[0].1 - 6.0,
        "{}: {} dB with a scale 8x coarser, {} dB before",
        after[0].layer,
        after[0].sqnr_db,
        before[0].1
    );
}
