//! The quantized model: the fused fp32 graph it came from (without the weights of its
//! int8 layers), the int8 layers (weights, their qparams, float bias), the activation
//! qparams of every tensor the static pipeline observed, and the recipe that made it.
//! It is plain data: [`crate::runtime::QExecutor`] packs it for the kernels, and
//! [`crate::save`] writes it to safetensors.

use std::collections::BTreeMap;

use qbench_models::ir::Graph;

use crate::qconfig::{Backend, QConfigMap};
use crate::qparams::QParams;

/// How a model's numbers are computed: the fp32 baseline, or one of the quantization
/// methods users know from PyTorch. One type for the quantizers, the sweep's cells and the
/// results schema; declared in report order, which `Ord` follows. The quantizers build
/// and run the [`Method::QUANTIZED`] ones only and refuse `Fp32`, which is what a model
/// is before any of them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The unquantized model: the baseline every method is measured against.
    Fp32,
    /// Weights stored as f16, computed in f32.
    Fp16,
    /// Weights int8, activations quantized on each call, f32 between layers.
    Dynamic,
    /// Weights and activations int8 with calibrated activation ranges.
    Static,
    /// Static, with ranges and weights learned by quantization-aware training.
    Qat,
}

impl Method {
    /// Every method, the baseline first, in report order.
    pub const ALL: [Method; 5] = [
        Method::Fp32,
        Method::Fp16,
        Method::Dynamic,
        Method::Static,
        Method::Qat,
    ];
    /// The methods that make a quantized model.
    pub const QUANTIZED: [Method; 4] = [Method::Fp16, Method::Dynamic, Method::Static, Method::Qat];

    pub fn name(self) -> &'static str {
        match self {
            Method::Fp32 => "fp32",
            Method::Fp16 => "fp16",
            Method::Dynamic => "dynamic",
            Method::Static => "static",
            Method::Qat => "qat",
        }
    }

    /// The method spelt `name` (any of [`Method::ALL`]).
    pub fn from_name(name: &str) -> Option<Method> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Dynamic quantization's activation scales: one per tensor (PyTorch, ONNX Runtime) or
/// one per row (per token), which keeps outlier tokens from flattening the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActScales {
    PerTensor,
    PerRow,
}

/// How the model was made: enough to reproduce it and to label a report row.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Recipe {
    /// The model it came from: a zoo name, or the absolute path of an ONNX file (set by
    /// the caller).
    #[serde(default)]
    pub source: String,
    /// sha256 of the source file (lowercase hex), so that commands which go back to the
    /// source (eval's data, crosscheck's inputs) read only the very file it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    pub method: Method,
    pub backend: Backend,
    pub act_scales: ActScales,
    pub qconfig: QConfigMap,
    pub calibration_samples: usize,
    /// `(conv, batch_norm)` pairs folded before quantization.
    pub fused: Vec<(String, String)>,
    pub qbench_version: String,
}

/// What kind of weighted layer runs in int8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Conv,
    /// Gemm or MatMul with a constant weight, stored `[n, k]` (alpha folded in).
    Linear,
}

/// One int8 layer (a Conv, Gemm or MatMul node, with a following Relu fused when the
/// static pipeline could).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct QLayer {
    pub node: String,
    pub kind: LayerKind,
    /// The fused Relu node, whose output is this layer's output.
    pub relu: Option<String>,
    pub input: String,
    pub output: String,
    /// The weight initializer's name in the original graph.
    pub weight_name: String,
    /// Conv: `[c_out, c_in/groups, kh, kw]`; Linear: `[n, k]`.
    pub weight_shape: Vec<usize>,
    #[serde(skip)]
    pub weight: Vec<i8>,
    pub weight_q: QParams,
    #[serde(skip)]
    pub bias: Option<Vec<f32>>,
}

/// A quantized model (module docs).
#[derive(Clone, Debug)]
pub struct QuantizedModel {
    /// The fused fp32 graph; the weights of int8 layers are not among its initializers.
    pub graph: Graph,
    pub recipe: Recipe,
    pub layers: Vec<QLayer>,
    /// Static: the qparams of every observed tensor (u8 activations).
    pub activations: BTreeMap<String, QParams>,
    /// The shape of every tensor at calibration (or probe) time; batch is free.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// fp16: the initializers stored as f16 (their values in `graph` are f16-rounded).
    pub fp16_weights: Vec<String>,
}

impl QuantizedModel {
    pub fn layer(&self, node: &str) -> Option<&QLayer> {
        self.layers.iter().find(|l| l.node == node)
    }

    /// Node names that run in int8, and those that run in fp32 (with the reason), in
    /// graph order. Filled in by the executor's plan; see [`crate::runtime::QExecutor::report`].
    pub fn int8_layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.node.as_str()).collect()
    }
}
