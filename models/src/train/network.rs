//! [`Network`]: an IR graph compiled for training. Owns the parameters (the graph's
//! initializers, updated in place by the optimizer), runs the forward pass in train or
//! eval mode recording a [`Tape`], and runs the backward pass over it.
//!
//! Supported ops: Gemm (alpha = beta = 1, A not transposed), Conv, BatchNormalization,
//! Relu, MaxPool, AveragePool (floor mode), GlobalAveragePool, Flatten, Add of two
//! activations of one shape, Identity. Anything else is refused at compile time with the
//! node and op named. One graph input (the batch), one output (the logits).

use std::collections::HashMap;

use crate::error::{ModelError, Result};
use crate::ir::{Dim, Graph, Op, Spatial};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Act(usize),
    Param(usize),
}

#[derive(Clone, Debug)]
enum Kind {
    Gemm { trans_b: bool },
    Conv { spatial: Spatial, group: usize },
    BatchNorm { eps: f32 },
    Relu,
    MaxPool { spatial: Spatial },
    AvgPool { spatial: Spatial, include_pad: bool },
    Gap,
    Flatten { axis: i64 },
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
    Bn(BnCache),
    Max(Geom, Vec<u32>),
    Pool(Geom),
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
#[derive(Clone, Debug)]
pub struct Network {
    template: Graph,
    params: Vec<Param>,
    steps: Vec<Step>,
    n_acts: usize,
    output: usize,
    input_dims: Vec<Dim>,
    /// Running-statistics momentum, ONNX's convention: `run = m·run + (1 − m)·batch`.
    pub bn_momentum: f32,
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
        let mut slots: HashMap<String, Src> = HashMap::new();
        slots.insert(graph.inputs[0].name.clone(), Src::Act(0));
        let mut n_acts = 1;
        let mut params: Vec<Param> = Vec::new();
        let mut steps = Vec::new();
        for node in &graph.nodes {
            let op = node.op.onnx_name();
            let err = |msg: &str| node_err(file, &node.name, op, msg);
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
                    Kind::Gemm { trans_b: *trans_b }
                }
                Op::Conv { spatial, group } => Kind::Conv {
                    spatial: spatial.clone(),
                    group: *group,
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
            let mut param = |i: usize, kind: ParamKind| -> Result<Option<Src>> {
                let Some(name) = node.inputs.get(i).filter(|n| !n.is_empty()) else {
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
                Kind::Gemm { .. } | Kind::Conv { .. } => {
                    inputs.push(param(1, ParamKind::Weight)?);
                    inputs.push(param(2, ParamKind::Bias)?);
                    if inputs[1].is_none() {
                        return Err(err("the weight input is missing"));
                    }
                }
                Kind::BatchNorm { .. } => {
                    for (i, k) in [
                        ParamKind::BnScale,
                        ParamKind::BnShift,
                        ParamKind::RunningMean,
                        ParamKind::RunningVar,
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        let p = param(i + 1, k)?;
                        if p.is_none() {
                            return Err(err(&format!("input {} is missing", i + 1)));
                        }
                        inputs.push(p);
                    }
                }
                _ => {}
            }
            if node.outputs.len() != 1 && !matches!(kind, Kind::BatchNorm { .. }) {
                return Err(err("the trainer supports nodes with one output"));
            }
            let out = node.outputs[0].clone();
            slots.insert(out, Src::Act(n_acts));
            steps.push(Step {
                node: node.name.clone(),
                op,
                kind,
                inputs,
                output: n_acts,
            });
            n_acts += 1;
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
            bn_momentum: 0.9,
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
            let (y, cache, stats) = match &step.kind {
                Kind::Gemm { trans_b } => {
                    let x = get(0);
                    let w = &self.params[pidx(step, 1)];
                    let (fout, fin) = gemm_dims(step, w, *trans_b, x)?;
                    let _ = fin;
                    let b = bias(step, par(2), fout)?;
                    (
                        linear::forward(x, &w.value, *trans_b, fout, b),
                        Cache::None,
                        None,
                    )
                }
                Kind::Conv { spatial, group } => {
                    let x = get(0);
                    let s = conv_shape(step, spatial, *group, &self.params[pidx(step, 1)], x)?;
                    let b = bias(step, par(2), s.cout)?;
                    let w = par(1).expect("weight");
                    (conv::forward(&s, x, w, b), Cache::Conv(s), None)
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
                    let train = mode == Mode::Train;
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
                (Kind::Gemm { trans_b }, _) => {
                    let w = &self.params[pidx(step, 1)];
                    let fout = dy.shape[1];
                    let (dx, dw, db) = linear::backward(input(0), &w.value, *trans_b, fout, &dy);
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
