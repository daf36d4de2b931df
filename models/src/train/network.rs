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

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::ir::{Dim, Graph, Node, Op, Spatial};
use crate::passes::BnFold;
use crate::tensor::Tensor;

use super::batchnorm::{self, BnCache};
use super::conv::{self, ConvShape, Geom};
use super::{add_into, linear, pool, simple, Buf};

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
    /// Compiles `graph`; every refusal names the graph, node and op.
    pub fn new(graph: &Graph) -> Result<Network> {
        Self::with_qat(graph, QatPlan::default())
    }

    /// Compiles `graph` for quantization-aware training per `plan` (module docs).
    pub fn with_qat(graph: &Graph, plan: QatPlan) -> Result<Network> {
        let file = graph.name.as_str();
        graph.validate(file)?;
        let graph_err = |msg: String| ModelError::Graph {
            file: file.to_string(),
            msg,
        };
        if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
            return Err(graph_err(format!(
                "training needs one input and one output, the graph has {} and {}",
                graph.inputs.len(),
                graph.outputs.len()
            )));
        }
        let QatPlan {
            activations,
            weights,
            fold_bn,
        } = plan;
        // Plan names are checked against the graph up front.
        let tensors: HashSet<&str> = graph
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(String::as_str))
            .chain([graph.inputs[0].name.as_str()])
            .collect();
        let node_names: HashSet<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
        let mut act_index: HashMap<String, usize> = HashMap::new();
        let mut act_fq = Vec::new();
        for (t, q) in activations {
            if !tensors.contains(t.as_str()) || act_index.contains_key(&t) {
                return Err(graph_err(format!(
                    "QAT plan: activation {t:?} is not a tensor of the graph, or is listed twice"
                )));
            }
            act_index.insert(t, act_fq.len());
            act_fq.push(q);
        }
        let mut weight_index: HashMap<String, usize> = HashMap::new();
        let mut weight_fq = Vec::new();
        for (n, q) in weights {
            if !node_names.contains(n.as_str()) {
                return Err(graph_err(format!(
                    "QAT plan: no node {n:?} for a weight quantizer"
                )));
            }
            weight_index.insert(n, weight_fq.len());
            weight_fq.push(q);
        }
        let mut folds: HashMap<&str, usize> = HashMap::new();
        for conv in &fold_bn {
            let node = graph
                .nodes
                .iter()
                .find(|n| &n.name == conv && matches!(n.op, Op::Conv { .. }))
                .ok_or_else(|| graph_err(format!("QAT plan: no Conv node {conv:?} to fold")))?;
            let out = &node.outputs[0];
            let readers: Vec<usize> = (0..graph.nodes.len())
                .filter(|&i| graph.nodes[i].inputs.contains(out))
                .collect();
            match readers.as_slice() {
                [bn] if matches!(graph.nodes[*bn].op, Op::BatchNorm { .. })
                    && graph.nodes[*bn].inputs.first() == Some(out)
                    && !graph.outputs.iter().any(|o| &o.name == out) =>
                {
                    folds.insert(conv.as_str(), *bn);
                }
                _ => {
                    return Err(node_err(
                        file,
                        conv,
                        "Conv",
                        "QAT folding needs a BatchNormalization as the only reader of the output",
                    ))
                }
            }
        }
        let folded_bns: HashSet<usize> = folds.values().copied().collect();

        let mut slots: HashMap<String, Src> = HashMap::new();
        let mut n_acts = 0;
        let mut params: Vec<Param> = Vec::new();
        let mut steps = Vec::new();
        let fq_of = |name: &str| act_index.get(name).map(|&q| (q, true));
        let input = graph.inputs[0].name.as_str();
        emit(&mut steps, &mut slots, &mut n_acts, fq_of(input), input);
        for (ni, node) in graph.nodes.iter().enumerate() {
            if folded_bns.contains(&ni) {
                continue;
            }
            let op = node.op.onnx_name();
            let err = |msg: &str| node_err(file, &node.name, op, msg);
            let wq = weight_index.get(&node.name).copied();
            let fold = folds.get(node.name.as_str()).map(|&bn| &graph.nodes[bn]);
            let kind = match &node.op {
                Op::Gemm {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                } => {
                    if *alpha != 1.0 || *beta != 1.0 || *trans_a {
                        return Err(err(
                            "the trainer supports Gemm with alpha = beta = 1 and transA = 0",
                        ));
                    }
                    Kind::Gemm {
                        trans_b: *trans_b,
                        wq,
                    }
                }
                Op::Conv { spatial, group } => match fold.map(|bn| &bn.op) {
                    Some(Op::BatchNorm { epsilon }) => Kind::ConvBn {
                        spatial: spatial.clone(),
                        group: *group,
                        eps: *epsilon,
                        wq,
                    },
                    _ => Kind::Conv {
                        spatial: spatial.clone(),
                        group: *group,
                        wq,
                    },
                },
                Op::BatchNorm { epsilon } => Kind::BatchNorm { eps: *epsilon },
                Op::Relu => Kind::Relu,
                Op::MaxPool { spatial } | Op::AveragePool { spatial, .. } if spatial.ceil_mode => {
                    return Err(err("the trainer supports pooling with ceil_mode = 0 only"));
                }
                Op::MaxPool { spatial } => Kind::MaxPool {
                    spatial: spatial.clone(),
                },
                Op::AveragePool {
                    spatial,
                    count_include_pad,
                } => Kind::AvgPool {
                    spatial: spatial.clone(),
                    include_pad: *count_include_pad,
                },
                Op::GlobalAveragePool => Kind::Gap,
                Op::Flatten { axis } => Kind::Flatten { axis: *axis },
                Op::Add => Kind::Add,
                Op::Identity => Kind::Identity,
                _ => return Err(err("not supported by the trainer")),
            };
            if wq.is_some()
                && !matches!(
                    kind,
                    Kind::Gemm { .. } | Kind::Conv { .. } | Kind::ConvBn { .. }
                )
            {
                return Err(err(
                    "QAT plan: a weight quantizer on a node without weights",
                ));
            }
            let mut inputs = Vec::new();
            let act = |i: usize| -> Result<Option<Src>> {
                let name = node
                    .inputs
                    .get(i)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| err(&format!("input {i} is missing")))?;
                match slots.get(name) {
                    Some(src @ Src::Act(_)) => Ok(Some(*src)),
                    _ => Err(err(&format!(
                        "input {name:?} must be an activation, not a constant"
                    ))),
                }
            };
            inputs.push(act(0)?);
            if matches!(kind, Kind::Add) {
                inputs.push(act(1)?);
            }
            // An initializer becomes a parameter of the role its first use gives it.
            let mut param = |n: &Node, i: usize, kind: ParamKind| -> Result<Option<Src>> {
                let err = |msg: &str| node_err(file, &n.name, n.op.onnx_name(), msg);
                let Some(name) = n.inputs.get(i).filter(|n| !n.is_empty()) else {
                    return Ok(None);
                };
                if let Some(&src) = slots.get(name) {
                    return match src {
                        Src::Param(_) => Ok(Some(src)),
                        Src::Act(_) => Err(err(&format!(
                            "input {name:?} must be an initializer (a trained parameter)"
                        ))),
                    };
                }
                let t = graph
                    .initializers
                    .get(name)
                    .ok_or_else(|| err(&format!("input {name:?} must be an initializer")))?;
                let value = t
                    .f32s()
                    .map_err(|e| err(&format!("initializer {name:?}: {e}")))?
                    .to_vec();
                params.push(Param {
                    name: name.clone(),
                    shape: t.shape().to_vec(),
                    value,
                    kind,
                });
                let src = Src::Param(params.len() - 1);
                slots.insert(name.clone(), src);
                Ok(Some(src))
            };
            match &kind {
                Kind::Gemm { .. } | Kind::Conv { .. } | Kind::ConvBn { .. } => {
                    inputs.push(param(node, 1, ParamKind::Weight)?);
                    inputs.push(param(node, 2, ParamKind::Bias)?);
                    if inputs[1].is_none() {
                        return Err(err("the weight input is missing"));
                    }
                    if let Some(bn) = fold {
                        bn_params(file, bn, &mut inputs, &mut param)?;
                    }
                }
                Kind::BatchNorm { .. } => bn_params(file, node, &mut inputs, &mut param)?,
                _ => {}
            }
            if node.outputs.len() != 1 && !matches!(kind, Kind::BatchNorm { .. }) {
                return Err(err("the trainer supports nodes with one output"));
            }
            let out = fold.map_or(&node.outputs[0], |bn| &bn.outputs[0]).clone();
            steps.push(Step {
                node: node.name.clone(),
                op,
                kind,
                inputs,
                output: n_acts,
            });
            emit(&mut steps, &mut slots, &mut n_acts, fq_of(&out), &out);
        }
        let output = match slots.get(&graph.outputs[0].name) {
            Some(Src::Act(i)) => *i,
            _ => {
                return Err(graph_err(format!(
                    "output {:?} is not computed from the input",
                    graph.outputs[0].name
                )))
            }
        };
        Ok(Network {
            template: graph.clone(),
            params,
            steps,
            n_acts,
            output,
            input_dims: graph.inputs[0].dims.clone(),
            act_fq,
            weight_fq,
            bn_momentum: 0.9,
            observers_enabled: true,
            fake_quant_enabled: true,
            bn_frozen: false,
        })
    }

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

    fn check_input(&self, x: &Buf) -> Result<()> {
        let bad = x.shape.len() != self.input_dims.len()
            || x.shape
                .iter()
                .zip(&self.input_dims)
                .skip(1)
                .any(|(&s, d)| match d {
                    Dim::Fixed(f) => *f != s,
                    Dim::Symbolic(_) => false,
                });
        if bad || x.shape.iter().product::<usize>() != x.data.len() {
            return Err(ModelError::Graph {
                file: self.template.name.clone(),
                msg: format!(
                    "input of shape {:?} ({} values) does not fit the graph input {:?}",
                    x.shape,
                    x.data.len(),
                    self.input_dims
                ),
            });
        }
        Ok(())
    }

    /// Runs the graph on the batch `x`; `Train` mode also updates BatchNorm running
    /// statistics.
    pub fn forward(&mut self, x: &Buf, mode: Mode) -> Result<Tape> {
        self.check_input(x)?;
        let mut acts: Vec<Option<Buf>> = vec![None; self.n_acts];
        acts[0] = Some(x.clone());
        let mut caches = Vec::with_capacity(self.steps.len());
        let momentum = self.bn_momentum;
        for step in &self.steps {
            let get = |i: usize| -> &Buf {
                match step.inputs[i] {
                    Some(Src::Act(a)) => acts[a].as_ref().expect("topological order"),
                    _ => unreachable!("compile checked activation inputs"),
                }
            };
            let par = |i: usize| -> Option<&[f32]> {
                match step.inputs[i] {
                    Some(Src::Param(p)) => Some(&self.params[p].value),
                    _ => None,
                }
            };
            let fq_on = self.fake_quant_enabled;
            let (y, cache, stats) = match &step.kind {
                Kind::Gemm { trans_b, wq } => {
                    let x = get(0);
                    let w = &self.params[pidx(step, 1)];
                    let (fout, _) = gemm_dims(step, w, *trans_b, x)?;
                    let b = bias(step, par(2), fout)?;
                    match wq.filter(|_| fq_on) {
                        Some(q) => {
                            let wfq = &mut self.weight_fq[q];
                            let (wv, mask) = wfq
                                .fake_quantize(&w.shape, &w.value, true)
                                .map_err(|e| exec_err(step, e))?;
                            let bq = match b.filter(|_| mode == Mode::Eval) {
                                Some(b) => {
                                    Some(wfq.fake_quantize_bias(b).map_err(|e| exec_err(step, e))?)
                                }
                                None => b.map(<[f32]>::to_vec),
                            };
                            let y = linear::forward(x, &wv, *trans_b, fout, bq.as_deref());
                            let cache = Cache::QWeight {
                                shape: None,
                                w: wv,
                                mask,
                            };
                            (y, cache, None)
                        }
                        None => (
                            linear::forward(x, &w.value, *trans_b, fout, b),
                            Cache::None,
                            None,
                        ),
                    }
                }
                Kind::Conv { spatial, group, wq } => {
                    let x = get(0);
                    let wp = &self.params[pidx(step, 1)];
                    let s = conv_shape(step, spatial, *group, wp, x)?;
                    let b = bias(step, par(2), s.cout)?;
                    match wq.filter(|_| fq_on) {
                        Some(q) => {
                            let wfq = &mut self.weight_fq[q];
                            let (wv, mask) = wfq
                                .fake_quantize(&wp.shape, &wp.value, true)
                                .map_err(|e| exec_err(step, e))?;
                            let bq = match b.filter(|_| mode == Mode::Eval) {
                                Some(b) => {
                                    Some(wfq.fake_quantize_bias(b).map_err(|e| exec_err(step, e))?)
                                }
                                None => b.map(<[f32]>::to_vec),
                            };
                            let y = conv::forward(&s, x, &wv, bq.as_deref());
                            let cache = Cache::QWeight {
                                shape: Some(s),
                                w: wv,
                                mask,
                            };
                            (y, cache, None)
                        }
                        None => (conv::forward(&s, x, &wp.value, b), Cache::Conv(s), None),
                    }
                }
                Kind::ConvBn {
                    spatial,
                    group,
                    eps,
                    wq,
                } => {
                    let x = get(0);
                    let wp = &self.params[pidx(step, 1)];
                    let s = conv_shape(step, spatial, *group, wp, x)?;
                    let b = bias(step, par(2), s.cout)?;
                    for i in 3..7 {
                        if par(i).map(<[f32]>::len) != Some(s.cout) {
                            return Err(exec_err(
                                step,
                                format!(
                                    "BatchNorm input {} must hold one value per channel ({})",
                                    i - 2,
                                    s.cout
                                ),
                            ));
                        }
                    }
                    let (gamma, beta) = (par(3).unwrap(), par(4).unwrap());
                    let (mean, var) = (par(5).unwrap(), par(6).unwrap());
                    // s = γ/√(σ²+ε) and the folded weights by the shared BatchNorm fold,
                    // so they (and their qparams) are the ones the static pipeline converts.
                    let fold = BnFold::factors(gamma, var, *eps);
                    let inv_std: Vec<f32> = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
                    let wf = fold.scale_weights(&wp.value);
                    let (w, mask) = match wq.filter(|_| fq_on) {
                        Some(q) => {
                            let (wv, mask) = self.weight_fq[q]
                                .fake_quantize(&wp.shape, &wf, true)
                                .map_err(|e| exec_err(step, e))?;
                            (wv, Some(mask))
                        }
                        None => (wf, None),
                    };
                    if let (Mode::Eval, Some(q)) = (mode, wq.filter(|_| fq_on)) {
                        // Inference as the int8 model runs it: the conv of the folded
                        // weights plus the folded bias `(b − μ)·s + β` on the int32 grid.
                        let folded = fold.bias(b, mean, beta);
                        let bq = self.weight_fq[q]
                            .fake_quantize_bias(&folded)
                            .map_err(|e| exec_err(step, e))?;
                        let y = conv::forward(&s, x, &w, Some(&bq));
                        let why = "an eval-mode pass through a fake-quantized Conv + BatchNorm (it runs the folded int8 form; backpropagate through train-mode passes)";
                        (y, Cache::NoGrad(why), None)
                    } else {
                        let u = conv::forward(&s, x, &w, None);
                        // z = u / s + b: the conv of the unfolded weights, up to quantization.
                        let hw = s.g.oh * s.g.ow;
                        let mut z = u.clone();
                        z.data
                            .par_chunks_mut(hw)
                            .enumerate()
                            .for_each(|(plane, zs)| {
                                let c = plane % s.cout;
                                let add = b.map_or(0.0, |b| b[c]);
                                zs.iter_mut().for_each(|v| *v = *v / fold.factors[c] + add);
                            });
                        let train = mode == Mode::Train && !self.bn_frozen;
                        let (y, bn, mu, var) =
                            batchnorm::forward(&z, gamma, beta, mean, var, *eps, train);
                        let stats = train.then(|| {
                            let m = z.data.len() / s.cout;
                            let unbias = if m > 1 {
                                m as f32 / (m - 1) as f32
                            } else {
                                1.0
                            };
                            (pidx(step, 5), pidx(step, 6), mu, var, unbias)
                        });
                        let cache = Cache::ConvBn(Box::new(ConvBnCache {
                            shape: s,
                            w,
                            mask,
                            scale: fold.factors,
                            inv_std,
                            u,
                            bn,
                        }));
                        (y, cache, stats)
                    }
                }
                Kind::FakeQuant { q, observe } => {
                    let x = get(0);
                    let observe = *observe && mode == Mode::Train && self.observers_enabled;
                    if !fq_on && !observe {
                        (x.clone(), Cache::None, None)
                    } else {
                        let (v, mask) = self.act_fq[*q]
                            .fake_quantize(&x.shape, &x.data, observe)
                            .map_err(|e| exec_err(step, e))?;
                        if fq_on {
                            (Buf::new(x.shape.clone(), v), Cache::Mask(mask), None)
                        } else {
                            (x.clone(), Cache::None, None)
                        }
                    }
                }
                Kind::BatchNorm { eps } => {
                    let x = get(0);
                    let c = *x.shape.get(1).unwrap_or(&0);
                    for i in 1..5 {
                        if par(i).map(<[f32]>::len) != Some(c) || x.shape.len() < 2 {
                            return Err(exec_err(
                                step,
                                format!("input {i} must hold one value per channel ({c})"),
                            ));
                        }
                    }
                    let train = mode == Mode::Train && !self.bn_frozen;
                    let (y, cache, mu, var) = batchnorm::forward(
                        x,
                        par(1).unwrap(),
                        par(2).unwrap(),
                        par(3).unwrap(),
                        par(4).unwrap(),
                        *eps,
                        train,
                    );
                    let m = x.data.len() / c;
                    let stats = train.then(|| {
                        // The running variance is the unbiased estimate (PyTorch's rule).
                        let unbias = if m > 1 {
                            m as f32 / (m - 1) as f32
                        } else {
                            1.0
                        };
                        (pidx(step, 3), pidx(step, 4), mu, var, unbias)
                    });
                    (y, Cache::Bn(cache), stats)
                }
                Kind::Relu => (simple::relu(get(0)), Cache::None, None),
                Kind::MaxPool { spatial } => {
                    let g = pool_geom(step, spatial, get(0))?;
                    let (y, arg) = pool::max_forward(&g, get(0));
                    (y, Cache::Max(g, arg), None)
                }
                Kind::AvgPool {
                    spatial,
                    include_pad,
                } => {
                    let g = pool_geom(step, spatial, get(0))?;
                    (
                        pool::avg_forward(&g, get(0), *include_pad),
                        Cache::Pool(g),
                        None,
                    )
                }
                Kind::Gap => {
                    if get(0).shape.len() < 3 {
                        return Err(exec_err(step, "needs an input of rank ≥ 3"));
                    }
                    (pool::gap_forward(get(0)), Cache::None, None)
                }
                Kind::Flatten { axis } => {
                    let x = get(0);
                    let r = x.shape.len() as i64;
                    let a = if *axis < 0 { axis + r } else { *axis };
                    if !(0..=r).contains(&a) {
                        return Err(exec_err(step, format!("axis {axis} for rank {r}")));
                    }
                    let shape = simple::flatten_shape(&x.shape, a as usize);
                    (Buf::new(shape, x.data.clone()), Cache::None, None)
                }
                Kind::Add => {
                    let (a, b) = (get(0), get(1));
                    if a.shape != b.shape {
                        return Err(exec_err(
                            step,
                            format!(
                                "the trainer adds tensors of one shape, got {:?} and {:?}",
                                a.shape, b.shape
                            ),
                        ));
                    }
                    (simple::add(a, b), Cache::None, None)
                }
                Kind::Identity => (get(0).clone(), Cache::None, None),
            };
            if let Some((im, iv, mu, var, unbias)) = stats {
                let run = &mut self.params;
                for (r, b) in run[im].value.iter_mut().zip(&mu) {
                    *r = momentum * *r + (1.0 - momentum) * b;
                }
                for (r, b) in run[iv].value.iter_mut().zip(&var) {
                    *r = momentum * *r + (1.0 - momentum) * b * unbias;
                }
            }
            acts[step.output] = Some(y);
            caches.push(cache);
        }
        Ok(Tape {
            acts,
            caches,
            output: self.output,
        })
    }

    /// Every step's output in `tape`, named by its node (an activation's fake
    /// quantization as `<tensor>:fake_quant`, a folded Conv + BatchNorm by the conv), in
    /// execution order: for comparing a QAT network with the int8 model layer by layer.
    pub fn step_outputs<'t>(&'t self, tape: &'t Tape) -> Vec<(&'t str, &'t Buf)> {
        self.steps
            .iter()
            .filter_map(|s| Some((s.node.as_str(), tape.acts[s.output].as_ref()?)))
            .collect()
    }

    /// Back-propagates `dout` (the gradient of the loss with respect to the output of
    /// `tape`) to every trainable parameter and the input.
    pub fn backward(&self, tape: &Tape, dout: &Buf) -> Result<Grads> {
        if dout.shape != tape.output().shape {
            return Err(ModelError::Graph {
                file: self.template.name.clone(),
                msg: format!(
                    "output gradient of shape {:?} for an output of shape {:?}",
                    dout.shape,
                    tape.output().shape
                ),
            });
        }
        let mut d: Vec<Option<Buf>> = vec![None; self.n_acts];
        d[self.output] = Some(dout.clone());
        let mut grads: Vec<Vec<f32>> = vec![Vec::new(); self.params.len()];
        let mut add_param = |p: usize, g: Vec<f32>| {
            if grads[p].is_empty() {
                grads[p] = g;
            } else {
                add_into(&mut grads[p], &g);
            }
        };
        let add_act = |d: &mut Vec<Option<Buf>>, src: Option<Src>, g: Buf| {
            if let Some(Src::Act(a)) = src {
                match &mut d[a] {
                    Some(acc) => add_into(&mut acc.data, &g.data),
                    slot => *slot = Some(g),
                }
            }
        };
        for (step, cache) in self.steps.iter().zip(&tape.caches).rev() {
            let Some(dy) = d[step.output].take() else {
                continue;
            };
            let input = |i: usize| -> &Buf {
                match step.inputs[i] {
                    Some(Src::Act(a)) => tape.acts[a].as_ref().expect("forward ran"),
                    _ => unreachable!("compile checked activation inputs"),
                }
            };
            match (&step.kind, cache) {
                (_, Cache::NoGrad(why)) => {
                    return Err(exec_err(step, format!("no gradient for {why}")))
                }
                (Kind::Gemm { trans_b, .. }, Cache::QWeight { w, mask, .. }) => {
                    let fout = dy.shape[1];
                    let (dx, mut dw, db) = linear::backward(input(0), w, *trans_b, fout, &dy);
                    straight_through(&mut dw, mask);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Gemm { trans_b, .. }, _) => {
                    let w = &self.params[pidx(step, 1)];
                    let fout = dy.shape[1];
                    let (dx, dw, db) = linear::backward(input(0), &w.value, *trans_b, fout, &dy);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (
                    Kind::Conv { .. },
                    Cache::QWeight {
                        shape: Some(s),
                        w,
                        mask,
                    },
                ) => {
                    let (dx, mut dw, db) = conv::backward(s, input(0), w, &dy);
                    straight_through(&mut dw, mask);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Conv { .. }, Cache::Conv(s)) => {
                    let w = &self.params[pidx(step, 1)].value;
                    let (dx, dw, db) = conv::backward(s, input(0), w, &dy);
                    add_param(pidx(step, 1), dw);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::ConvBn { .. }, Cache::ConvBn(c)) => {
                    let gamma = &self.params[pidx(step, 3)].value;
                    let w = &self.params[pidx(step, 1)].value;
                    let (dx, grads_w, dgamma, dbeta, db) =
                        conv_bn_backward(c, input(0), w, gamma, &dy);
                    add_param(pidx(step, 1), grads_w);
                    add_param(pidx(step, 3), dgamma);
                    add_param(pidx(step, 4), dbeta);
                    if let Some(Src::Param(b)) = step.inputs[2] {
                        add_param(b, db);
                    }
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::FakeQuant { .. }, Cache::Mask(mask)) => {
                    let mut g = dy;
                    straight_through(&mut g.data, mask);
                    add_act(&mut d, step.inputs[0], g);
                }
                (Kind::FakeQuant { .. }, _) => add_act(&mut d, step.inputs[0], dy),
                (Kind::BatchNorm { .. }, Cache::Bn(c)) => {
                    let gamma = &self.params[pidx(step, 1)].value;
                    let (dx, dg, db) = batchnorm::backward(c, gamma, &dy);
                    add_param(pidx(step, 1), dg);
                    add_param(pidx(step, 2), db);
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Relu, _) => {
                    let y = tape.acts[step.output].as_ref().expect("forward ran");
                    add_act(&mut d, step.inputs[0], simple::relu_backward(y, &dy));
                }
                (Kind::MaxPool { .. }, Cache::Max(g, arg)) => {
                    let dx = pool::max_backward(g, &input(0).shape, arg, &dy);
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::AvgPool { include_pad, .. }, Cache::Pool(g)) => {
                    let dx = pool::avg_backward(g, &input(0).shape, &dy, *include_pad);
                    add_act(&mut d, step.inputs[0], dx);
                }
                (Kind::Gap, _) => {
                    add_act(
                        &mut d,
                        step.inputs[0],
                        pool::gap_backward(&input(0).shape, &dy),
                    );
                }
                (Kind::Flatten { .. }, _) => {
                    let shape = input(0).shape.clone();
                    add_act(&mut d, step.inputs[0], Buf::new(shape, dy.data));
                }
                (Kind::Add, _) => {
                    add_act(&mut d, step.inputs[0], dy.clone());
                    add_act(&mut d, step.inputs[1], dy);
                }
                (Kind::Identity, _) => add_act(&mut d, step.inputs[0], dy),
                _ => return Err(exec_err(step, "the tape does not match the network")),
            }
        }
        let input = d[0]
            .take()
            .unwrap_or_else(|| Buf::zeros(tape.acts[0].as_ref().expect("input").shape.clone()));
        Ok(Grads {
            params: grads,
            input,
        })
    }
}

/// Registers a step's output (or the graph input) as `name`, preceded by its fake
/// quantization step when `fq` says so; later readers see the fake-quantized value.
fn emit(
    steps: &mut Vec<Step>,
    slots: &mut HashMap<String, Src>,
    n_acts: &mut usize,
    fq: Option<(usize, bool)>,
    name: &str,
) {
    if let Some((q, observe)) = fq {
        steps.push(Step {
            node: format!("{name}:fake_quant"),
            op: "FakeQuantize",
            kind: Kind::FakeQuant { q, observe },
            inputs: vec![Some(Src::Act(*n_acts))],
            output: *n_acts + 1,
        });
        *n_acts += 1;
    }
    slots.insert(name.to_string(), Src::Act(*n_acts));
    *n_acts += 1;
}

/// Registers input `i` of a node as a parameter of a role (compile's closure).
type ParamFn<'a> = dyn FnMut(&Node, usize, ParamKind) -> Result<Option<Src>> + 'a;

/// Pushes a BatchNormalization node's γ, β, running mean and running variance.
fn bn_params(
    file: &str,
    n: &Node,
    inputs: &mut Vec<Option<Src>>,
    param: &mut ParamFn,
) -> Result<()> {
    let roles = [
        ParamKind::BnScale,
        ParamKind::BnShift,
        ParamKind::RunningMean,
        ParamKind::RunningVar,
    ];
    for (i, k) in roles.into_iter().enumerate() {
        let p = param(n, i + 1, k)?;
        if p.is_none() {
            return Err(node_err(
                file,
                &n.name,
                n.op.onnx_name(),
                format!("input {} is missing", i + 1),
            ));
        }
        inputs.push(p);
    }
    Ok(())
}

/// The straight-through estimator: the gradient passes where the value was inside the
/// grid (`mask`) and is zero where fake quantization clamped it.
fn straight_through(g: &mut [f32], mask: &[bool]) {
    for (v, &m) in g.iter_mut().zip(mask) {
        if !m {
            *v = 0.0;
        }
    }
}

/// Backward of a folded Conv + BatchNorm (PyTorch's `ConvBn2d`):
/// `y = BN(z)`, `z = u / s + b`, `u = conv(x, fq(W·s))`, `s = γ·r` with
/// `r = 1/√(σ²_running+ε)`. Returns dx, dW, dγ (BatchNorm's plus the path through `s`),
/// dβ and db.
fn conv_bn_backward(
    c: &ConvBnCache,
    x: &Buf,
    w: &[f32],
    gamma: &[f32],
    dy: &Buf,
) -> (Buf, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let cout = c.shape.cout;
    let (dz, dgamma_bn, dbeta) = batchnorm::backward(&c.bn, gamma, dy);
    let hw = dz.data.len() / (dz.shape[0] * cout).max(1);
    let n = dz.shape[0];
    // Per channel: db = Σ dz; ds (through the division) = −Σ dz·u / s².
    let sums: Vec<(f64, f64)> = (0..cout)
        .into_par_iter()
        .map(|ch| {
            let (mut sd, mut sdu) = (0.0f64, 0.0f64);
            for i in 0..n {
                let off = (i * cout + ch) * hw;
                for (&g, &u) in dz.data[off..off + hw].iter().zip(&c.u.data[off..off + hw]) {
                    sd += f64::from(g);
                    sdu += f64::from(g) * f64::from(u);
                }
            }
            (sd, sdu)
        })
        .collect();
    let db: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let mut ds: Vec<f64> = sums
        .iter()
        .zip(&c.scale)
        .map(|(s, &k)| -s.1 / (f64::from(k) * f64::from(k)))
        .collect();
    let mut du = dz;
    du.data
        .par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, v)| {
            let k = c.scale[plane % cout];
            v.iter_mut().for_each(|g| *g /= k);
        });
    let (dx, mut dwq, _) = conv::backward(&c.shape, x, &c.w, &du);
    if let Some(mask) = &c.mask {
        straight_through(&mut dwq, mask);
    }
    // W·s → W: dW = dWs·s, and ds += Σ dWs·W over the channel's weights.
    let per_out = w.len() / cout;
    let mut dw = vec![0.0f32; w.len()];
    for (ch, ((dst, (g, wr)), d)) in dw
        .chunks_mut(per_out)
        .zip(dwq.chunks(per_out).zip(w.chunks(per_out)))
        .zip(ds.iter_mut())
        .enumerate()
    {
        let k = c.scale[ch];
        let mut acc = 0.0f64;
        for ((o, &gv), &wv) in dst.iter_mut().zip(g).zip(wr) {
            *o = gv * k;
            acc += f64::from(gv) * f64::from(wv);
        }
        *d += acc;
    }
    let dgamma = dgamma_bn
        .iter()
        .zip(&ds)
        .zip(&c.inv_std)
        .map(|((&g, &s), &r)| g + (s * f64::from(r)) as f32)
        .collect();
    (dx, dw, dgamma, dbeta, db)
}

/// The parameter index of input `i` (compile guarantees it is a parameter).
fn pidx(step: &Step, i: usize) -> usize {
    match step.inputs[i] {
        Some(Src::Param(p)) => p,
        _ => unreachable!("compile checked parameter inputs"),
    }
}

fn gemm_dims(step: &Step, w: &Param, trans_b: bool, x: &Buf) -> Result<(usize, usize)> {
    if w.shape.len() != 2 || x.shape.len() != 2 {
        return Err(exec_err(
            step,
            format!(
                "needs 2-D input and weight, got {:?} and {:?}",
                x.shape, w.shape
            ),
        ));
    }
    let (fout, fin) = if trans_b {
        (w.shape[0], w.shape[1])
    } else {
        (w.shape[1], w.shape[0])
    };
    if x.shape[1] != fin {
        return Err(exec_err(
            step,
            format!(
                "input has {} features, the weight {:?} takes {fin}",
                x.shape[1], w.shape
            ),
        ));
    }
    Ok((fout, fin))
}

fn bias<'a>(step: &Step, b: Option<&'a [f32]>, n: usize) -> Result<Option<&'a [f32]>> {
    match b {
        Some(b) if b.len() != n => Err(exec_err(
            step,
            format!("bias holds {} values, the output has {n} channels", b.len()),
        )),
        b => Ok(b),
    }
}

fn conv_shape(step: &Step, sp: &Spatial, group: usize, w: &Param, x: &Buf) -> Result<ConvShape> {
    if w.shape.len() != 4 || x.shape.len() != 4 {
        return Err(exec_err(
            step,
            format!(
                "2-D conv needs 4-D input and weight, got {:?} and {:?}",
                x.shape, w.shape
            ),
        ));
    }
    let (cout, cin_g, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let c = x.shape[1];
    if group == 0 || c != cin_g * group || cout % group != 0 {
        return Err(exec_err(
            step,
            format!(
                "input has {c} channels; weight {:?} with {group} groups",
                w.shape
            ),
        ));
    }
    if sp.kernel.is_some_and(|k| k != [kh, kw]) {
        return Err(exec_err(step, "kernel_shape disagrees with the weight"));
    }
    let pads = sp.resolve_pads([kh, kw], x.shape[2], x.shape[3]);
    let g = Geom::new(
        c,
        x.shape[2],
        x.shape[3],
        [kh, kw],
        sp.strides,
        sp.dilations,
        pads,
    )
    .ok_or_else(|| {
        exec_err(
            step,
            format!("kernel larger than the padded input {:?}", x.shape),
        )
    })?;
    Ok(ConvShape {
        g,
        cout,
        groups: group,
    })
}

fn pool_geom(step: &Step, sp: &Spatial, x: &Buf) -> Result<Geom> {
    let k = sp
        .kernel
        .ok_or_else(|| exec_err(step, "kernel_shape is required"))?;
    if x.shape.len() != 4 {
        return Err(exec_err(
            step,
            format!("needs a 4-D input, got {:?}", x.shape),
        ));
    }
    let pads = sp.resolve_pads(k, x.shape[2], x.shape[3]);
    Geom::new(
        x.shape[1],
        x.shape[2],
        x.shape[3],
        k,
        sp.strides,
        sp.dilations,
        pads,
    )
    .ok_or_else(|| {
        exec_err(
            step,
            format!("window larger than the padded input {:?}", x.shape),
        )
    })
}
