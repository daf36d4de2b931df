//! The graph IR: named tensors (inputs, outputs, initializers) and named nodes in
//! topological order, each with a typed [`Op`] whose attributes are already validated.
//!
//! The IR is layout-free and follows ONNX semantics (NCHW activations, ONNX weight
//! layouts), so import and export are direct. It owns no execution: see `exec`. Ops whose
//! ONNX form changed across opsets are stored in one normalised form (e.g. Clip bounds
//! as optional inputs or attrs, Unsqueeze axes as attr or input) and exported in the
//! newest form.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{ModelError, Result};
use crate::tensor::Tensor;

/// A dimension of a graph input or output: fixed, or named and free at run time (batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

/// A graph input or output: name and (possibly partial) f32 shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Vec<Dim>,
}

/// `auto_pad` of Conv and the pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// Spatial attributes shared by Conv, MaxPool and AveragePool (2-D only).
#[derive(Clone, Debug, PartialEq)]
pub struct Spatial {
    /// `None` for Conv means: from the weight's shape.
    pub kernel: Option<[usize; 2]>,
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// `[top, left, bottom, right]`, the order of ONNX `pads` for 2-D.
    pub pads: [usize; 4],
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

impl Default for Spatial {
    fn default() -> Self {
        Spatial {
            kernel: None,
            strides: [1, 1],
            dilations: [1, 1],
            pads: [0; 4],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        }
    }
}

impl Spatial {
    /// Pads for an input of `h × w` with kernel `k`: explicit, or from `auto_pad`.
    pub fn resolve_pads(&self, k: [usize; 2], h: usize, w: usize) -> [usize; 4] {
        let same = |input: usize, s: usize, k: usize, d: usize| {
            // Saturating: `input` can be any dim of an empty tensor (a wrap here would
            // make a small pad out of an absurd one).
            let out = input.div_ceil(s.max(1));
            (out.saturating_sub(1) * s)
                .saturating_add(k.saturating_sub(1).saturating_mul(d))
                .saturating_add(1)
                .saturating_sub(input)
        };
        match self.auto_pad {
            AutoPad::NotSet => self.pads,
            AutoPad::Valid => [0; 4],
            AutoPad::SameUpper | AutoPad::SameLower => {
                let th = same(h, self.strides[0], k[0], self.dilations[0]);
                let tw = same(w, self.strides[1], k[1], self.dilations[1]);
                let (small_h, small_w) = (th / 2, tw / 2);
                if self.auto_pad == AutoPad::SameUpper {
                    [small_h, small_w, th - small_h, tw - small_w]
                } else {
                    [th - small_h, tw - small_w, small_h, small_w]
                }
            }
        }
    }
}

/// The operations of the IR, with their validated attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `Y = alpha·A'·B' + beta·C`, A' = Aᵀ if `trans_a`.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// numpy matmul (batched, broadcast).
    MatMul,
    /// 2-D convolution, inputs X, W, optional B.
    Conv {
        spatial: Spatial,
        group: usize,
    },
    /// Inference batch norm: inputs X, scale, bias, mean, var.
    BatchNorm {
        epsilon: f32,
    },
    Relu,
    /// Bounds from attributes (opset < 11); when `None` the optional inputs 1 and 2 give
    /// them (opset ≥ 11), else unbounded.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Add,
    Sub,
    Mul,
    Div,
    /// Variadic sum with broadcasting.
    Sum,
    MaxPool {
        spatial: Spatial,
    },
    AveragePool {
        spatial: Spatial,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    /// Local response normalisation across channels.
    Lrn {
        alpha: f32,
        beta: f32,
        bias: f32,
        size: usize,
    },
    Flatten {
        axis: i64,
    },
    /// Shape from input 1; 0 copies the input's dim, -1 is inferred.
    Reshape,
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    /// `legacy`: opset < 13 semantics (coerce to 2-D at `axis`, softmax over the rest).
    Softmax {
        axis: i64,
        legacy: bool,
    },
    /// Dropout and Identity: the first input, unchanged (inference).
    Identity,
    Constant {
        value: Tensor,
    },
    ConstantOfShape {
        value: Tensor,
    },
    Shape,
    Gather {
        axis: i64,
    },
    /// Axes from the attribute (opset < 13) or input 1 (opset ≥ 13).
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    /// Layer normalisation over the axes from `axis` on; inputs X, Scale, optional B
    /// (ONNX LayerNormalization, opset 17; only the first output).
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// GELU: the exact erf form (BERT's) or, with `tanh`, the tanh approximation (ONNX
    /// Gelu, opset 20).
    Gelu {
        tanh: bool,
    },
    Erf,
    /// Sum over axes: from this attribute (opset < 13), else input 1 (absent: all axes,
    /// unless `noop_with_empty_axes`).
    ReduceSum {
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// Mean over axes: from this attribute (opset < 18), else input 1, as ReduceSum.
    ReduceMean {
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// `x / ‖x‖_p` along `axis`, p = 1 or 2 (sentence embeddings' L2 normalisation).
    LpNormalization {
        axis: i64,
        p: u8,
    },
    /// Scalars start, limit, delta → `[start, start + delta, ...)` (position ids).
    Range,
    /// Element type conversion between f32 and i64 (token ids arrive as f32 graph inputs).
    Cast {
        to: CastTo,
    },
}

/// The element types a [`Op::Cast`] produces: what a [`Tensor`] can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastTo {
    F32,
    I64,
}

impl Op {
    /// The ONNX op type this op imports from and exports to.
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Conv { .. } => "Conv",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Relu => "Relu",
            Op::Clip { .. } => "Clip",
            Op::Sigmoid => "Sigmoid",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::HardSwish => "HardSwish",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::Sum => "Sum",
            Op::MaxPool { .. } => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Lrn { .. } => "LRN",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Softmax { .. } => "Softmax",
            Op::Identity => "Identity",
            Op::Constant { .. } => "Constant",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Shape => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Squeeze { .. } => "Squeeze",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::Gelu { .. } => "Gelu",
            Op::Erf => "Erf",
            Op::ReduceSum { .. } => "ReduceSum",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::LpNormalization { .. } => "LpNormalization",
            Op::Range => "Range",
            Op::Cast { .. } => "Cast",
        }
    }
}

/// One node: an op applied to named input tensors ("" = an omitted optional input),
/// producing named outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A model: nodes in topological order over named tensors.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    /// Runtime inputs (initializers are not listed here).
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Constant tensors by name, ordered so export is deterministic.
    pub initializers: BTreeMap<String, Tensor>,
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Checks that every node input is defined before use (by a graph input, an
    /// initializer or an earlier node), that every name is produced once and that every
    /// graph output is produced. `file` names the source in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let err = |msg: String| ModelError::Graph {
            file: file.to_string(),
            msg,
        };
        let mut defined: HashSet<&str> = HashSet::new();
        for i in &self.inputs {
            if !defined.insert(&i.name) {
                return Err(err(format!("input {:?} is defined twice", i.name)));
            }
        }
        for name in self.initializers.keys() {
            // An initializer may shadow a graph input (an overridable default, ONNX IR < 4).
            defined.insert(name);
        }
        for n in &self.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                if !defined.contains(i.as_str()) {
                    return Err(ModelError::Node {
                        file: file.to_string(),
                        node: n.name.clone(),
                        op: n.op.onnx_name().to_string(),
                        msg: format!(
                            "input {i:?} is not defined before this node (missing or a cycle)"
                        ),
                    });
                }
            }
            self.check_parameters(n).map_err(|msg| ModelError::Node {
                file: file.to_string(),
                node: n.name.clone(),
                op: n.op.onnx_name().to_string(),
                msg,
            })?;
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                if !defined.insert(o) {
                    return Err(ModelError::Node {
                        file: file.to_string(),
                        node: n.name.clone(),
                        op: n.op.onnx_name().to_string(),
                        msg: format!("output {o:?} is already defined"),
                    });
                }
            }
        }
        for o in &self.outputs {
            if !defined.contains(o.name.as_str()) {
                return Err(err(format!("graph output {:?} is never produced", o.name)));
            }
        }
        Ok(())
    }

    /// The shapes of a node's constant parameters, where every consumer (the executor,
    /// the quantizers' layer extraction and conversion, BatchNorm folding) indexes them:
    /// a Conv weight of rank 4 with no empty dim, its bias one value per output channel,
    /// a Gemm `B` of rank 2. Checked once here, at import and when an executor is built,
    /// so no consumer meets a rank-0 weight or a short bias. Parameters computed by nodes
    /// (folded later) are checked by the executor when it packs them.
    fn check_parameters(&self, n: &Node) -> std::result::Result<(), String> {
        let init = |k: usize| {
            n.inputs
                .get(k)
                .filter(|i| !i.is_empty())
                .and_then(|i| self.initializers.get(i))
        };
        match &n.op {
            Op::Conv { group, .. } => {
                if let Some(w) = init(1) {
                    let ws = w.shape();
                    if ws.len() != 4 || ws.contains(&0) {
                        return Err(format!(
                            "weight {:?} has shape {ws:?}; a 2-D conv needs [out, in/group, kh, kw], none empty",
                            n.inputs[1]
                        ));
                    }
                    if !ws[0].is_multiple_of(*group) {
                        return Err(format!(
                            "{} output channels do not split into {group} groups",
                            ws[0]
                        ));
                    }
                    if let Some(b) = init(2).filter(|b| b.shape() != [ws[0]]) {
                        return Err(format!(
                            "bias {:?} has shape {:?}, the weight has {} output channels",
                            n.inputs[2],
                            b.shape(),
                            ws[0]
                        ));
                    }
                }
            }
            Op::Gemm { .. } => {
                if let Some(b) = init(1).filter(|b| b.rank() != 2) {
                    return Err(format!(
                        "B {:?} has shape {:?}, not 2-D",
                        n.inputs[1],
                        b.shape()
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// How many times each tensor is read by nodes or graph outputs.
    pub fn use_counts(&self) -> HashMap<&str, usize> {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for n in &self.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i).or_default() += 1;
            }
        }
        for o in &self.outputs {
            *uses.entry(&o.name).or_default() += 1;
        }
        uses
    }
}
