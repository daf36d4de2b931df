//! What several quantizer tests share: zoo paths, seeded inputs, a calibrated static
//! model and the op types of an export. Each test file uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use qbench_models::ir::Graph;
use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use qbench_quantizers::export::{self, Form};
use qbench_quantizers::{prepare, Backend, QConfig, QConfigMap, QuantizedModel};

/// A file of the model zoo, by its path under `models/zoo`.
pub fn zoo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/zoo")
        .join(rel)
}

/// Deterministic inputs in [-1, 1) of `shape` (the workspace's seeded generator).
pub fn seeded(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::new(shape.to_vec(), Rng::new(seed).uniforms_f32(n, -1.0, 1.0)).unwrap()
}

/// `g` statically quantized under `backend`'s preset, calibrated on `calib`.
pub fn static_model(g: &Graph, backend: Backend, calib: &[Tensor]) -> QuantizedModel {
    let mut p = prepare(g, backend, QConfigMap::global(QConfig::preset(backend))).unwrap();
    p.calibrate(calib.iter(), |_, _| {}).unwrap();
    p.convert().unwrap()
}

/// The op types of `model`'s QOperator export, in node order.
pub fn ops(model: &QuantizedModel) -> Vec<String> {
    export::to_model_proto(model, Form::QOperator)
        .unwrap()
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect()
}
