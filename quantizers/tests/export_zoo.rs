//! Every zoo model under every scheme, exported as ONNX and run in tract-onnx, against
//! our executor on the same inputs: static (both forms, QOperator and QDQ) and dynamic
//! (quantization in plain ops + MatMulInteger) under fbgemm, vnni and
//! qnnpack, and fp16 (FLOAT16 weights). The tolerance is the policy of
//! `qbench_quantizers::export::tract_check` (`TractCheck::passes`); each test prints the
//! measured figures (`-- --nocapture`) that docs/quantization.md quotes.
//!
//! Inputs are a slice of each model's test set (resnet50, speed-only with constant
//! weights, gets seeded random inputs), calibration 64 training images, so the file runs
//! in seconds.

mod support;

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::export::{self, tract_check, Form};
use qbench_quantizers::fp16::quantize_fp16;
use qbench_quantizers::{
    quantize_dynamic, ActScales, Backend, DynamicOptions, Method, QuantizedModel,
};
use support::{ops, seeded, static_model, zoo};

fn images(kind: DatasetKind, split: Split, skip: usize, n: usize) -> Tensor {
    let d = Dataset::load(kind, split).unwrap();
    let all = d.images();
    let len = 28 * 28;
    Tensor::new(
        vec![n, 1, 28, 28],
        all[skip * len..(skip + n) * len].to_vec(),
    )
    .unwrap()
}

/// Runs the check of `form` and asserts the policy; returns the figures for further
/// assertions.
fn agree_in(form: Form, what: &str, model: &QuantizedModel, x: &Tensor) -> tract_check::TractCheck {
    let r = tract_check::check(model, form, std::slice::from_ref(x))
        .unwrap_or_else(|e| panic!("{what} ({form:?}): {e}"));
    eprintln!(
        "{what} ({form:?}): max {:.3} LSB, {:.2} % of elements differ, argmax {:.1} % of {} rows",
        r.max_lsb,
        100.0 * r.diff_fraction,
        100.0 * r.argmax_agreement,
        r.rows
    );
    assert!(r.passes(), "{what} ({form:?}): {r:?}");
    r
}

/// The QOperator check (the only form dynamic and fp16 models have).
fn agree(what: &str, model: &QuantizedModel, x: &Tensor) -> tract_check::TractCheck {
    agree_in(Form::QOperator, what, model, x)
}

/// Every scheme of one model: static and dynamic under the three backends, and fp16.
fn every_scheme(name: &str, g: &Graph, calib: &[Tensor], x: &Tensor) {
    for backend in Backend::ALL {
        let m = static_model(g, backend, calib);
        let o = ops(&m);
        assert!(
            o.iter()
                .any(|op| op == "QLinearConv" || op == "MatMulInteger"),
            "{name} static: no int8 op in {o:?}"
        );
        agree(&format!("{name} static/{}", backend.name()), &m, x);
        // The QDQ form of the same model, held to the QDQ bound of the policy.
        let r = agree_in(
            Form::Qdq,
            &format!("{name} static/{}", backend.name()),
            &m,
            x,
        );
        assert_eq!(r.form, Form::Qdq);

        let d = quantize_dynamic(g, &DynamicOptions::new(backend)).unwrap();
        let o = ops(&d);
        assert!(o.iter().any(|op| op == "MatMulInteger"), "{o:?}");
        // Quantized in plain ops (export::dynamic's docs say why not DynamicQuantizeLinear).
        assert!(
            !o.iter().any(|op| op == "DynamicQuantizeLinear"),
            "{name} {}: {o:?}",
            backend.name()
        );
        let r = agree(&format!("{name} dynamic/{}", backend.name()), &d, x);
        assert_eq!(r.method, Method::Dynamic);
    }
    let f = quantize_fp16(g).unwrap();
    assert!(ops(&f).iter().any(|op| op == "Cast"));
    agree(&format!("{name} fp16"), &f, x);
}

#[test]
fn digit_cnn_agrees_with_tract_under_every_scheme() {
    let g = qbench_models::onnx::load(zoo("digit-cnn/model.onnx")).unwrap();
    let calib = [images(DatasetKind::Mnist, Split::Train, 0, 64)];
    let x = images(DatasetKind::Mnist, Split::Test, 0, 200);
    every_scheme("digit-cnn", &g, &calib, &x);
}

#[test]
fn mlp_mnist_agrees_with_tract_under_every_scheme() {
    let g = qbench_models::onnx::load(zoo("mlp-mnist/model.onnx")).unwrap();
    let calib = [images(DatasetKind::Mnist, Split::Train, 0, 64)];
    let x = images(DatasetKind::Mnist, Split::Test, 0, 200);
    every_scheme("mlp-mnist", &g, &calib, &x);
}

#[test]
fn resnet_fashion_agrees_with_tract_under_every_scheme() {
    let g = qbench_models::onnx::load(zoo("resnet-fashion/model.onnx")).unwrap();
    let calib = [images(DatasetKind::FashionMnist, Split::Train, 0, 64)];
    let x = images(DatasetKind::FashionMnist, Split::Test, 0, 200);
    every_scheme("resnet-fashion", &g, &calib, &x);
}

#[test]
fn resnet50_agrees_with_tract_under_every_scheme() {
    let g = qbench_models::onnx::load(zoo("light/light_resnet50.onnx")).unwrap();
    let calib = [seeded(&[1, 3, 224, 224], 1), seeded(&[1, 3, 224, 224], 2)];
    let x = seeded(&[1, 3, 224, 224], 3);
    every_scheme("resnet50", &g, &calib, &x);
}

/// Per-row (per-token) dynamic scales are spelled with ReduceMin/ReduceMax over the last
/// axis, and agree as well.
#[test]
fn per_row_dynamic_agrees_with_tract() {
    let g = qbench_models::onnx::load(zoo("mlp-mnist/model.onnx")).unwrap();
    let x = images(DatasetKind::Mnist, Split::Test, 0, 100);
    for backend in [Backend::Fbgemm, Backend::Qnnpack] {
        let mut opts = DynamicOptions::new(backend);
        opts.act_scales = ActScales::PerRow;
        let d = quantize_dynamic(&g, &opts).unwrap();
        assert!(!ops(&d).iter().any(|op| op == "DynamicQuantizeLinear"));
        agree(
            &format!("mlp-mnist dynamic per-row/{}", backend.name()),
            &d,
            &x,
        );
    }
}

/// Dynamic Conv (PyTorch's `{nn.Linear, nn.Conv2d}`) exports as ConvInteger.
#[test]
fn dynamic_conv_exports_as_conv_integer_and_agrees() {
    let g = qbench_models::onnx::load(zoo("digit-cnn/model.onnx")).unwrap();
    let x = images(DatasetKind::Mnist, Split::Test, 0, 100);
    for backend in [Backend::Fbgemm, Backend::Vnni] {
        let mut opts = DynamicOptions::new(backend);
        opts.op_types.push("Conv".into());
        let d = quantize_dynamic(&g, &opts).unwrap();
        assert!(ops(&d).iter().any(|op| op == "ConvInteger"));
        agree(
            &format!("digit-cnn dynamic+conv/{}", backend.name()),
            &d,
            &x,
        );
    }
}

/// Dynamic and fp16 models have no QDQ form; asking says so instead of writing nonsense.
#[test]
fn dynamic_and_fp16_models_refuse_the_qdq_form() {
    let g = qbench_models::onnx::load(zoo("mlp-mnist/model.onnx")).unwrap();
    let d = quantize_dynamic(&g, &DynamicOptions::new(Backend::Vnni)).unwrap();
    let e = export::to_model_proto(&d, Form::Qdq)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dynamic") && e.contains("qoperator"), "{e}");
    let f = quantize_fp16(&g).unwrap();
    let e = export::to_model_proto(&f, Form::Qdq)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fp16"), "{e}");
}
