//! [`Network`]: an IR graph compiled for training. Owns the parameters (the graph's
//! initializers, updated in place by the optimizer), runs the forward pass in train or
//! eval mode recording a [`Tape`], and runs the backward pass over it.
//!
//! Supported ops: Gemm (alpha = beta = 1, A not transposed), Conv, BatchNormalization,
//! Relu, MaxPool, AveragePool (floor mode), GlobalAveragePool, Flatten, Add of two
//! activations of one shape, Identity. Anything else is refused at compile time with the
//! node and op named. One graph input (the batch), one output (the logits).
//!
//! **Quantization-aware training.** [`Network::with_qat`] compiles the graph with a
//! [`QatPlan`]: fake quantization of chosen activations and of Conv/Gemm weights, and
//! Conv + BatchNormalization pairs folded the way PyTorch's QAT `ConvBn2d` folds them
//! (the weights are scaled by `γ/√(σ²_running+ε)` before fake quantization, the conv
//! output is divided by the same factor, then the BatchNorm runs as usual, so its batch
//! statistics still update). The fake quantizers themselves ([`FakeQuantizer`]) come from
//! the quantizers crate, which owns the qparam rules; here they are opaque steps with a
//! straight-through gradient. The switches [`Network::observers_enabled`],
//! [`Network::fake_quant_enabled`] and [`Network::bn_frozen`] are PyTorch's
//! `disable_observer`, `disable_fake_quant` and `freeze_bn_stats`.

mod backward;
mod compile;
mod forward;
mod shapes;

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::ir::{Dim, Graph, Node, Op, Spatial};
use crate::passes::BnFold;
use crate::tensor::Tensor;

use super::batchnorm::{self, BnCache};
use super::conv::{self, ConvShape, Geom};
use super::{add_into, linear, pool, simple, Buf};

use shapes::*;

/// Forward-pass mode: BatchNorm uses batch statistics (and updates its running ones) in
/// `Train`, the running statistics in `Eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// The role of a parameter, which decides whether it has a gradient and takes decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Gemm/Conv weight: trained, weight decay applies.
    Weight,
    /// Gemm/Conv bias: trained, no decay.
    Bias,
    /// BatchNorm scale (γ) and shift (β): trained, no decay (decaying γ only fights BN).
    BnScale,
    BnShift,
    /// BatchNorm running statistics: updated by train-mode forward passes, no gradient.
    RunningMean,
    RunningVar,
}

/// One parameter tensor (a graph initializer).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub kind: ParamKind,
}

impl Param {
    pub fn trainable(&self) -> bool {
        !matches!(self.kind, ParamKind::RunningMean | ParamKind::RunningVar)
    }

    pub fn decays(&self) -> bool {
        self.kind == ParamKind::Weight
    }
}

/// A fake quantizer (PyTorch's `FakeQuantize`): observes a tensor, then rounds it onto
/// its integer grid and back to f32. Implemented by the quantizers crate.
pub trait FakeQuantizer: Send + std::fmt::Debug {
    /// Fake-quantizes `x` of `shape`. With `observe`, the observer sees `x` first, so the
    /// qparams used already include this batch (PyTorch's order). Returns the values and
    /// the straight-through mask: `true` where the gradient passes, i.e. where the
    /// rounded, unclamped integer lies inside `[qmin, qmax]`.
    fn fake_quantize(
        &mut self,
        shape: &[usize],
        x: &[f32],
        observe: bool,
    ) -> std::result::Result<(Vec<f32>, Vec<bool>), String>;

    /// A weight quantizer's view of its layer's float bias as the int8 model stores it
    /// (on the accumulator's grid, after the weights of this pass were fake-quantized).
    /// Eval-mode passes use it, so they compute what the int8 model computes up to float
    /// rounding; train-mode passes keep the float bias, as PyTorch's QAT modules do.
    fn fake_quantize_bias(&mut self, bias: &[f32]) -> std::result::Result<Vec<f32>, String> {
        Ok(bias.to_vec())
    }
}

/// Where [`Network::with_qat`] puts fake quantization and BatchNorm folding. Names are
/// the graph's tensor and node names; a name the graph lacks is a compile error.
#[derive(Debug, Default)]
pub struct QatPlan {
    /// Activation fake quantizers, by the tensor they replace (every reader of the
    /// tensor, the graph output included, sees the fake-quantized value). Two tensors
    /// may share qparams through their quantizers (an int8 average pool rounds onto its
    /// input's grid); the network calls each with `observe` in train mode.
    pub activations: Vec<(String, Box<dyn FakeQuantizer>)>,
    /// Weight fake quantizers by Conv/Gemm node name; they see the weights (BN-folded
    /// for a folded conv) in the graph's layout on every forward pass.
    pub weights: Vec<(String, Box<dyn FakeQuantizer>)>,
    /// Conv nodes whose output's only reader, a BatchNormalization, is folded in.
    pub fold_bn: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Act(usize),
    Param(usize),
}

#[derive(Clone, Debug)]
enum Kind {
    /// `wq`: index of the weight fake quantizer.
    Gemm {
        trans_b: bool,
        wq: Option<usize>,
    },
    Conv {
        spatial: Spatial,
        group: usize,
        wq: Option<usize>,
    },
    /// QAT Conv + BatchNorm; inputs x, W, b, γ, β, running mean, running var.
    ConvBn {
        spatial: Spatial,
        group: usize,
        eps: f32,
        wq: Option<usize>,
    },
    /// Activation fake quantization with quantizer `q` (which observes in train mode
    /// when `observe` and the observers are enabled).
    FakeQuant {
        q: usize,
        observe: bool,
    },
    BatchNorm {
        eps: f32,
    },
    Relu,
    MaxPool {
        spatial: Spatial,
    },
    AvgPool {
        spatial: Spatial,
        include_pad: bool,
    },
    Gap,
    Flatten {
        axis: i64,
    },
    Add,
    Identity,
}

#[derive(Clone, Debug)]
struct Step {
    node: String,
    op: &'static str,
    kind: Kind,
    inputs: Vec<Option<Src>>,
    output: usize,
}

enum Cache {
    None,
    Conv(ConvShape),
    /// Conv or Gemm (`shape` None) on fake-quantized weights: the weights used and their
    /// straight-through mask.
    QWeight {
        shape: Option<ConvShape>,
        w: Vec<f32>,
        mask: Vec<bool>,
    },
    ConvBn(Box<ConvBnCache>),
    Mask(Vec<bool>),
    /// A pass that cannot be differentiated, and why.
    NoGrad(&'static str),
    Bn(BnCache),
    Max(Geom, Vec<u32>),
    Pool(Geom),
}

/// What the backward pass of a folded Conv + BatchNorm needs.
struct ConvBnCache {
    shape: ConvShape,
    /// The weights the conv ran with: `fq(W·s)`, or `W·s` without fake quantization.
    w: Vec<f32>,
    mask: Option<Vec<bool>>,
    /// Per output channel: `s = γ/√(σ²+ε)` and `1/√(σ²+ε)` of the running variance.
    scale: Vec<f32>,
    inv_std: Vec<f32>,
    /// The conv output before the division by `s`.
    u: Buf,
    bn: BnCache,
}

/// Everything a forward pass keeps for the backward pass.
pub struct Tape {
    acts: Vec<Option<Buf>>,
    caches: Vec<Cache>,
    output: usize,
}

impl Tape {
    /// The graph output (logits) of the pass.
    pub fn output(&self) -> &Buf {
        self.acts[self.output]
            .as_ref()
            .expect("a finished forward pass holds its output")
    }
}

/// Gradients of one backward pass: one per parameter (empty for those without one) and
/// the input's.
#[derive(Clone, Debug)]
pub struct Grads {
    pub params: Vec<Vec<f32>>,
    pub input: Buf,
}

/// A graph compiled for training; see the module docs.
#[derive(Debug)]
pub struct Network {
    template: Graph,
    params: Vec<Param>,
    steps: Vec<Step>,
    n_acts: usize,
    output: usize,
    input_dims: Vec<Dim>,
    act_fq: Vec<Box<dyn FakeQuantizer>>,
    weight_fq: Vec<Box<dyn FakeQuantizer>>,
    /// Running-statistics momentum, ONNX's convention: `run = m·run + (1 − m)·batch`.
    pub bn_momentum: f32,
    /// QAT: activation observers watch train-mode batches (PyTorch's `enable_observer`).
    /// Eval-mode passes never observe. Weight quantizers always follow the weights.
    pub observers_enabled: bool,
    /// QAT: fake quantization is applied (off: the fp32 network; observers still watch).
    pub fake_quant_enabled: bool,
    /// BatchNorm uses and keeps its running statistics in train mode too (PyTorch's
    /// `freeze_bn_stats`); γ and β still train.
    pub bn_frozen: bool,
}

fn node_err(file: &str, node: &str, op: &str, msg: impl Into<String>) -> ModelError {
    ModelError::Node {
        file: file.to_string(),
        node: node.to_string(),
        op: op.to_string(),
        msg: msg.into(),
    }
}

fn exec_err(step: &Step, msg: impl Into<String>) -> ModelError {
    ModelError::Exec {
        node: step.node.clone(),
        op: step.op.to_string(),
        msg: msg.into(),
    }
}

impl Network {
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [Param] {
        &mut self.params
    }

    /// The index of the parameter named `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// The graph with the current parameter values as its initializers (for export and
    /// for the executor).
    pub fn to_graph(&self) -> Graph {
        let mut g = self.template.clone();
        for p in &self.params {
            let t =
                Tensor::new(p.shape.clone(), p.value.clone()).expect("a parameter keeps its shape");
            g.initializers.insert(p.name.clone(), t);
        }
        g
    }
}
