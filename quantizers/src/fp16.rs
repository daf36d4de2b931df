//! fp16 weights (PyTorch's `quantize_dynamic(..., dtype=torch.float16)`): the weights of
//! Conv, Gemm and MatMul are rounded to f16 for storage and computed in f32, halving the
//! file while keeping fp32 arithmetic.

use std::collections::BTreeMap;

use qbench_models::ir::{Graph, Op};
use qbench_models::tensor::Tensor;

use crate::error::{check_finite, Result};
use crate::model::{ActScales, Method, QuantizedModel, Recipe};
use crate::probe::Probe;
use crate::qconfig::{Backend, QConfigMap};
use crate::shapes::probe_shapes;

/// Rounds every constant weight of Conv/Gemm/MatMul through f16.
pub fn quantize_fp16(graph: &Graph) -> Result<QuantizedModel> {
    let folded = crate::fuse::fold_constants(graph)?;
    let graph = &folded;
    let mut g = graph.clone();
    let mut names: Vec<String> = Vec::new();
    for node in &graph.nodes {
        if !matches!(node.op, Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul) {
            continue;
        }
        let Some(w_name) = node.inputs.get(1) else {
            continue;
        };
        let Some(w) = graph.initializers.get(w_name) else {
            continue;
        };
        if names.contains(w_name) || w.rank() < 2 || !w.is_f32() {
            continue;
        }
        let data = w.f32s()?;
        check_finite(&node.name, "weights", data)?;
        let rounded = data
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        g.initializers
            .insert(w_name.clone(), Tensor::new(w.shape().to_vec(), rounded)?);
        names.push(w_name.clone());
    }
    let shapes = probe_shapes(&Probe::new(&g)?, &g)?;
    Ok(QuantizedModel {
        graph: g,
        recipe: Recipe {
            source: String::new(),
            source_sha256: None,
            method: Method::Fp16,
            backend: Backend::Fbgemm,
            act_scales: ActScales::PerTensor,
            qconfig: QConfigMap::default(),
            calibration_samples: 0,
            fused: Vec::new(),
            qbench_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        layers: Vec::new(),
        activations: BTreeMap::new(),
        shapes,
        fp16_weights: names,
    })
}
