//! The int8 runtime on several threads gives the same bits as on one: every zoo model,
//! static (int8 convs, Linears, pools and adds) and dynamic with convs (per tensor and per
//! row), run by `QExecutor::with_threads(model, t)` for t = 2 and 3 against
//! `QExecutor::new` (one thread, itself checked against independent computations in
//! `pipelines.rs`). Splits are forced on every call (`split_every_call`) so the small
//! test batches take the multi-threaded paths, and the runs happen inside a pool of
//! exactly `t` workers, as the sweep times them.

mod support;

use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::{
    quantize_dynamic, ActScales, Backend, DynamicOptions, QExecutor, QuantizedModel,
};
use support::{seeded, static_model, zoo};

fn dynamic_models(g: &Graph) -> Vec<(String, QuantizedModel)> {
    [ActScales::PerTensor, ActScales::PerRow]
        .into_iter()
        .map(|scales| {
            let mut opts = DynamicOptions::new(Backend::Fbgemm);
            opts.op_types.push("Conv".into());
            opts.act_scales = scales;
            let name = format!("dynamic {scales:?}");
            (name, quantize_dynamic(g, &opts).unwrap())
        })
        .collect()
}

fn bits(outputs: &[Tensor]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .map(|t| t.f32s().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Every model of `models` gives the same bits on 2 and 3 threads as on one.
fn same_bits_on_every_thread_count(what: &str, models: &[(String, QuantizedModel)], x: &Tensor) {
    qbench_kernels::gemm::split_every_call();
    for (name, model) in models {
        let want = bits(
            &QExecutor::new(model)
                .unwrap()
                .run(std::slice::from_ref(x))
                .unwrap(),
        );
        for threads in [2, 3] {
            let exec = QExecutor::with_threads(model, threads).unwrap();
            assert_eq!(exec.threads(), threads);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| bits(&exec.run(std::slice::from_ref(x)).unwrap()));
            assert!(
                got == want,
                "{what} {name}: outputs on {threads} threads differ from one thread"
            );
        }
    }
}

fn check_zoo_model(what: &str, rel: &str, input: &[usize]) {
    let g = qbench_models::onnx::load(zoo(rel)).unwrap();
    let calib: Vec<Tensor> = (0..2).map(|i| seeded(input, 10 + i)).collect();
    let mut models = dynamic_models(&g);
    for backend in [Backend::Fbgemm, Backend::Qnnpack] {
        models.push((
            format!("static {}", backend.name()),
            static_model(&g, backend, &calib),
        ));
    }
    same_bits_on_every_thread_count(what, &models, &seeded(input, 1));
}

#[test]
fn digit_cnn() {
    check_zoo_model("digit-cnn", "digit-cnn/model.onnx", &[5, 1, 28, 28]);
}

#[test]
fn mlp_mnist() {
    check_zoo_model("mlp-mnist", "mlp-mnist/model.onnx", &[7, 1, 28, 28]);
}

#[test]
fn resnet_fashion() {
    check_zoo_model(
        "resnet-fashion",
        "resnet-fashion/model.onnx",
        &[3, 1, 28, 28],
    );
}

#[test]
fn resnet50() {
    // Its file fixes batch 1.
    check_zoo_model("resnet50", "light/light_resnet50.onnx", &[1, 3, 224, 224]);
}
