//! `quantize_dynamic`: int8 weights for the op types the user names (Gemm and MatMul
//! with a constant weight by default; Conv too on request, as PyTorch users pass
//! `{nn.Linear, nn.Conv2d}`), activations quantized on every call, per tensor as PyTorch
//! and ONNX Runtime do, or per row (per token), and f32 between layers.

use std::collections::BTreeMap;

use qbench_models::ir::Graph;

use crate::error::{QuantError, Result};
use crate::layers::{float_layer, quantize_layer, strip_int8_weights};
use crate::model::{ActScales, Method, QuantizedModel, Recipe};
use crate::probe::Probe;
use crate::qconfig::{Backend, QConfig, QConfigMap};
use crate::shapes::probe_shapes;

/// What `quantize_dynamic` quantizes and how.
#[derive(Clone, Debug)]
pub struct DynamicOptions {
    pub backend: Backend,
    /// ONNX op types to quantize (`Gemm`, `MatMul`, `Conv`).
    pub op_types: Vec<String>,
    pub act_scales: ActScales,
    /// Per-channel weights (PyTorch's `per_channel_dynamic_qconfig`); default per tensor
    /// as PyTorch's `default_dynamic_qconfig`.
    pub per_channel: bool,
    /// Node names kept in fp32.
    pub skip: Vec<String>,
}

impl DynamicOptions {
    pub fn new(backend: Backend) -> DynamicOptions {
        DynamicOptions {
            backend,
            op_types: vec!["Gemm".into(), "MatMul".into()],
            act_scales: ActScales::PerTensor,
            per_channel: false,
            skip: Vec::new(),
        }
    }
}

/// Quantizes `graph` dynamically (module docs).
pub fn quantize_dynamic(graph: &Graph, opts: &DynamicOptions) -> Result<QuantizedModel> {
    let folded = crate::fuse::fold_constants(graph)?;
    let graph = &folded;
    for t in &opts.op_types {
        if !["Gemm", "MatMul", "Conv"].contains(&t.as_str()) {
            return Err(QuantError::Config {
                key: "op_types".into(),
                msg: format!("{t:?} cannot be quantized dynamically; valid: Gemm, MatMul, Conv"),
            });
        }
    }
    let config = QConfig::dynamic(opts.backend, opts.per_channel);
    let mut map = QConfigMap::default();
    for t in &opts.op_types {
        map = map.set_op_type(t, Some(config));
    }
    for s in &opts.skip {
        if !graph.nodes.iter().any(|n| &n.name == s) {
            return Err(QuantError::Config {
                key: "skip".into(),
                msg: format!("no node named {s:?} in the model"),
            });
        }
        map = map.set_layer(s, None);
    }
    let mut layers = Vec::new();
    for node in &graph.nodes {
        let Some(cfg) = map.config_for(&node.name, node.op.onnx_name()) else {
            continue;
        };
        if let Some(fl) = float_layer(graph, node) {
            layers.push(quantize_layer(&fl, cfg, None)?);
        }
    }
    let shapes = probe_shapes(&Probe::new(graph)?, graph)?;
    let mut g = graph.clone();
    strip_int8_weights(&mut g, &layers);
    Ok(QuantizedModel {
        graph: g,
        recipe: Recipe {
            source: String::new(),
            source_sha256: None,
            method: Method::Dynamic,
            backend: opts.backend,
            act_scales: opts.act_scales,
            qconfig: map,
            calibration_samples: 0,
            fused: Vec::new(),
            qbench_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        layers,
        activations: BTreeMap::new(),
        shapes,
        fp16_weights: Vec::new(),
    })
}
