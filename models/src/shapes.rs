//! Static shape inference: the shape and element type of every tensor of a graph, from
//! the shapes of its inputs, before anything runs. The memory budget is checked on it at
//! plan time ([`MemoryPlan`]), and `inspect` lists shapes without running the model.
//!
//! Shapes that depend on values (a `Reshape` target, `ConstantOfShape`, `Range`, axes
//! given as inputs) are known when those values are: the values of constants, and of
//! every small tensor computed only from constants and from input *shapes* (the `Shape →
//! Gather → Concat → Reshape` chains of exported models), are carried along and computed
//! by the executor's own op bodies ([`crate::exec::eval_constant`]), so they have the
//! bits a run would give. A shape that depends on input *data* is unknown: the tensor and
//! everything computed from it are listed as such, and the executor checks them when
//! they are allocated, as it does every tensor.
//!
//! Shapes are the logical (ONNX, NCHW) ones whatever layout the executor keeps a buffer
//! in; the layout changes no size.

use std::collections::HashMap;

use qbench_kernels::Nhwc;

use crate::budget::{self, MemoryBudget};
use crate::error::{ModelError, Result};
use crate::exec::{eval_constant, norm_axis, pool_geom, pool_out, reshape_target};
use crate::ir::{AutoPad, Dim, Graph, Node, Op, ValueInfo};
use crate::tensor::{broadcast_shapes, Data, Tensor};

/// Values at most this many elements long are carried through inference (shape
/// arithmetic is a handful of i64s; a weight is not needed for any shape).
const MAX_VALUE_ELEMS: usize = 4096;

/// The element types a tensor of the executor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
}

impl Elem {
    pub fn bytes(self) -> u64 {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
        }
    }

    fn of(t: &Tensor) -> Elem {
        match t.data() {
            Data::F32(_) => Elem::F32,
            Data::I64(_) => Elem::I64,
        }
    }
}

/// What inference knows of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub elem: Elem,
    /// The value, when it is known before running and small (see the module docs).
    pub value: Option<Tensor>,
}

impl TensorInfo {
    fn of(t: &Tensor) -> TensorInfo {
        TensorInfo {
            shape: t.shape().to_vec(),
            elem: Elem::of(t),
            value: (t.len() <= MAX_VALUE_ELEMS).then(|| t.clone()),
        }
    }

    fn shaped(shape: Vec<usize>, elem: Elem) -> TensorInfo {
        TensorInfo {
            shape,
            elem,
            value: None,
        }
    }

    /// Bytes of the tensor's buffer. Saturating: every shape inference produced went
    /// through [`budget::check_shape`], so this is exact for them.
    pub fn bytes(&self) -> u64 {
        budget::numel(&self.shape)
            .map_or(u64::MAX, |n| (n as u64).saturating_mul(self.elem.bytes()))
    }
}

/// Every tensor's [`TensorInfo`] where it is known, and for the rest the node whose
/// output shape depends on data, with the reason.
#[derive(Clone, Debug, Default)]
pub struct Inferred {
    pub tensors: HashMap<String, TensorInfo>,
    /// `(node, reason)` for each node whose outputs are unknown, in graph order.
    pub unknown: Vec<(String, String)>,
}

/// A graph reduced to what inference needs: its nodes, its inputs, and the shape (and
/// small value) of each initializer. Built once per executor, run per input shape.
#[derive(Clone, Debug)]
pub struct ShapeModel {
    name: String,
    inputs: Vec<ValueInfo>,
    nodes: Vec<Node>,
    consts: HashMap<String, TensorInfo>,
}

impl ShapeModel {
    pub fn new(g: &Graph) -> ShapeModel {
        let is_input = |n: &str| g.inputs.iter().any(|i| i.name == n);
        ShapeModel {
            name: g.name.clone(),
            inputs: g.inputs.clone(),
            nodes: g.nodes.clone(),
            consts: g
                .initializers
                .iter()
                .filter(|(n, _)| !is_input(n))
                .map(|(n, t)| (n.clone(), TensorInfo::of(t)))
                .collect(),
        }
    }

    /// Infers every tensor's shape for graph inputs of `input_shapes` (in the graph's
    /// input order, f32 as the executor takes them). Each input shape must match its
    /// declared rank and fixed dims (symbolic dims take any size). An error names the
    /// node whose inputs do not fit it, or a tensor over the memory budget.
    pub fn infer(&self, input_shapes: &[Vec<usize>]) -> Result<Inferred> {
        if input_shapes.len() != self.inputs.len() {
            return Err(ModelError::Tensor(format!(
                "graph {:?} has {} inputs, {} shapes given",
                self.name,
                self.inputs.len(),
                input_shapes.len()
            )));
        }
        let mut known: HashMap<String, TensorInfo> = self.consts.clone();
        for (vi, shape) in self.inputs.iter().zip(input_shapes) {
            check_declared(vi, shape)?;
            budget::check_shape(&format_args!("input {:?}", vi.name), shape, 4)?;
            known.insert(
                vi.name.clone(),
                TensorInfo::shaped(shape.clone(), Elem::F32),
            );
        }
        let mut unknown = Vec::new();
        for node in &self.nodes {
            let ins: Option<Vec<Option<&TensorInfo>>> = node
                .inputs
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        Some(None)
                    } else {
                        known.get(i).map(Some)
                    }
                })
                .collect();
            let Some(ins) = ins else {
                let missing = node
                    .inputs
                    .iter()
                    .find(|i| !i.is_empty() && !known.contains_key(*i))
                    .cloned()
                    .unwrap_or_default();
                unknown.push((
                    node.name.clone(),
                    format!("input {missing:?} has an unknown shape"),
                ));
                continue;
            };
            let err = |msg: String| ModelError::Exec {
                node: node.name.clone(),
                op: node.op.onnx_name().into(),
                msg,
            };
            let outs = match infer_node(node, &ins) {
                Ok(Some(outs)) => outs,
                Ok(None) => {
                    unknown.push((
                        node.name.clone(),
                        "its output shape depends on input data".into(),
                    ));
                    continue;
                }
                Err(e) => return Err(err(e.to_string())),
            };
            for (name, info) in node.outputs.iter().zip(outs) {
                if name.is_empty() {
                    continue;
                }
                budget::check_shape(
                    &format_args!("output {name:?}"),
                    &info.shape,
                    info.elem.bytes() as usize,
                )
                .map_err(|e| err(e.to_string()))?;
                known.insert(name.clone(), info);
            }
        }
        Ok(Inferred {
            tensors: known,
            unknown,
        })
    }
}

/// [`ShapeModel::infer`] on `g` once.
pub fn infer(g: &Graph, input_shapes: &[Vec<usize>]) -> Result<Inferred> {
    ShapeModel::new(g).infer(input_shapes)
}

/// The shape of input `vi` with a symbolic first dim (the batch) set to `batch`; a fixed
/// one stays what the file says. `None` when another dim is symbolic (it has no size to
/// take).
pub fn bind_batch(vi: &ValueInfo, batch: usize) -> Option<Vec<usize>> {
    vi.dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) if i == 0 => Some(batch),
            Dim::Symbolic(_) => None,
        })
        .collect()
}

fn check_declared(vi: &ValueInfo, shape: &[usize]) -> Result<()> {
    let fits = vi.dims.len() == shape.len()
        && vi
            .dims
            .iter()
            .zip(shape)
            .enumerate()
            .all(|(i, (d, &x))| i == 0 || !matches!(d, Dim::Fixed(f) if *f != x));
    if fits {
        Ok(())
    } else {
        Err(ModelError::Tensor(format!(
            "input {:?}: declared {:?} (first dim free), given shape {shape:?}",
            vi.name, vi.dims
        )))
    }
}

/// The infos of one node's outputs from its inputs' (`None`: an omitted optional
/// input); `Ok(None)` when they depend on a value that is not known.
fn infer_node(node: &Node, ins: &[Option<&TensorInfo>]) -> Result<Option<Vec<TensorInfo>>> {
    let shapes = match output_shapes(&node.op, ins)? {
        Some(s) => s,
        None => return Ok(None),
    };
    // A Shape's value is its input's shape, whatever is known of the input's values: the
    // root of every shape chain.
    if let (Op::Shape, Some(Some(x))) = (&node.op, ins.first()) {
        let dims = x.shape.iter().map(|&d| d as i64).collect();
        return Ok(Some(vec![TensorInfo::of(&Tensor::from_i64s(dims))]));
    }
    let all_values = ins.iter().all(|i| i.is_none_or(|i| i.value.is_some()));
    let small = shapes
        .iter()
        .all(|(s, _)| budget::numel(s).is_some_and(|n| n <= MAX_VALUE_ELEMS));
    // Convs are packed by the executor, never evaluated on the side.
    if all_values && small && !matches!(node.op, Op::Conv { .. }) {
        let args = ins
            .iter()
            .map(|i| i.and_then(|i| i.value.clone()))
            .collect();
        let values = eval_constant(node, args)?;
        return values
            .into_iter()
            .zip(&shapes)
            .map(|(v, (shape, _))| {
                // The rule and the op body must agree; a disagreement is a bug here, but
                // the value is what a run computes, so it wins.
                debug_assert_eq!(
                    v.shape(),
                    &shape[..],
                    "node {:?}: inferred shape differs from the evaluated one",
                    node.name
                );
                Ok(TensorInfo::of(&v))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some);
    }
    Ok(Some(
        shapes
            .into_iter()
            .map(|(s, e)| TensorInfo::shaped(s, e))
            .collect(),
    ))
}

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModelError::Tensor(msg.into()))
}

fn input<'a>(ins: &[Option<&'a TensorInfo>], k: usize) -> Result<&'a TensorInfo> {
    match ins.get(k).copied().flatten() {
        Some(i) => Ok(i),
        None => fail(format!("missing input {k}")),
    }
}

/// An i64 value needed for a shape: `Ok(None)` when it is not known.
fn i64_value(ins: &[Option<&TensorInfo>], k: usize) -> Result<Option<Vec<i64>>> {
    match &input(ins, k)?.value {
        Some(t) => Ok(Some(t.i64s()?.to_vec())),
        None => Ok(None),
    }
}

/// Axes from an attribute, else from optional input `k`; `Ok(Err(()))` when the input is
/// there but its value is unknown.
fn axes_of(
    attr: &Option<Vec<i64>>,
    ins: &[Option<&TensorInfo>],
    k: usize,
) -> Result<std::result::Result<Option<Vec<i64>>, ()>> {
    if let Some(a) = attr {
        return Ok(Ok(Some(a.clone())));
    }
    match ins.get(k).copied().flatten() {
        None => Ok(Ok(None)),
        Some(_) => Ok(i64_value(ins, k)?.map(Some).ok_or(())),
    }
}

/// Each output's shape and element type; `None` when a needed value is unknown.
type Outputs = Option<Vec<(Vec<usize>, Elem)>>;

/// The output shapes and element types of `op` (one entry per output the executor
/// produces), or `None` when a needed value is unknown. These rules mirror the op bodies
/// in `exec`; `shapes_match_a_run` in the tests holds them to it on every zoo model.
fn output_shapes(op: &Op, ins: &[Option<&TensorInfo>]) -> Result<Outputs> {
    let x = || input(ins, 0);
    let same = || -> Result<Outputs> {
        let x = x()?;
        Ok(Some(vec![(x.shape.clone(), x.elem)]))
    };
    let one = |s: Vec<usize>, e: Elem| Ok(Some(vec![(s, e)]));
    match op {
        Op::Relu
        | Op::Clip { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::Identity
        | Op::Erf
        | Op::Gelu { .. }
        | Op::LayerNorm { .. }
        | Op::LpNormalization { .. } => same(),
        Op::BatchNorm { .. } | Op::Lrn { .. } => {
            let x = x()?;
            if x.shape.len() < 2 && matches!(op, Op::BatchNorm { .. }) {
                return fail(format!("BatchNormalization of shape {:?}", x.shape));
            }
            same()
        }
        Op::Softmax { axis, .. } => {
            norm_axis(*axis, x()?.shape.len())?;
            same()
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let (a, b) = (&x()?.shape, &input(ins, 1)?.shape);
            if a.len() != 2 || b.len() != 2 {
                return fail(format!("Gemm of {a:?} and {b:?}: both must be 2-D"));
            }
            let (m, ka) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (kb, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if ka != kb {
                return fail(format!("Gemm: A is {m}x{ka}, B' is {kb}x{n}"));
            }
            one(vec![m, n], Elem::F32)
        }
        Op::MatMul => {
            let (a, b) = (&x()?.shape, &input(ins, 1)?.shape);
            if a.is_empty() || b.is_empty() {
                return fail("MatMul of a scalar");
            }
            let (mut ash, mut bsh) = (a.clone(), b.clone());
            let (a1, b1) = (a.len() == 1, b.len() == 1);
            if a1 {
                ash.insert(0, 1);
            }
            if b1 {
                bsh.push(1);
            }
            let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
            let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
            if k != k2 {
                return fail(format!("MatMul {a:?} x {b:?}: inner dims differ"));
            }
            let mut out = broadcast_shapes(&ash[..ash.len() - 2], &bsh[..bsh.len() - 2])?;
            if !a1 {
                out.push(m);
            }
            if !b1 {
                out.push(n);
            }
            one(out, Elem::F32)
        }
        Op::Conv { spatial, group } => {
            let (xs, ws) = (&x()?.shape, &input(ins, 1)?.shape);
            if xs.len() != 4 || ws.len() != 4 {
                return fail(format!(
                    "Conv of {xs:?} with weights {ws:?}: both must be 4-D"
                ));
            }
            if xs[1] != ws[1] * group {
                return fail(format!(
                    "Conv: the input has {} channels, the weights {} x {group} groups",
                    xs[1], ws[1]
                ));
            }
            let k = [ws[2], ws[3]];
            if matches!(spatial.auto_pad, AutoPad::SameUpper | AutoPad::SameLower)
                && spatial.strides != [1, 1]
            {
                return fail("auto_pad SAME with stride > 1 is not supported");
            }
            let pads = spatial.resolve_pads(k, 1024, 1024);
            let dim = |a: usize, p0: usize, p1: usize| {
                pool_out(
                    xs[2 + a],
                    p0,
                    p1,
                    k[a],
                    spatial.dilations[a],
                    spatial.strides[a],
                    false,
                )
            };
            let (oh, ow) = (dim(0, pads[0], pads[2])?, dim(1, pads[1], pads[3])?);
            one(vec![xs[0], ws[0], oh, ow], Elem::F32)
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Sum => {
            let present: Vec<&TensorInfo> = ins.iter().flatten().copied().collect();
            let Some(first) = present.first() else {
                return fail("no inputs");
            };
            let mut shape = first.shape.clone();
            for t in &present[1..] {
                shape = broadcast_shapes(&shape, &t.shape)?;
            }
            one(shape, first.elem)
        }
        Op::MaxPool { spatial } | Op::AveragePool { spatial, .. } => {
            let xs = &x()?.shape;
            if xs.len() != 4 {
                return fail(format!("expected a 4-D NCHW tensor, got shape {xs:?}"));
            }
            let g = pool_geom(spatial, Nhwc::new(xs[0], xs[2], xs[3], xs[1]))?;
            one(vec![xs[0], xs[1], g.oh, g.ow], Elem::F32)
        }
        Op::GlobalAveragePool => {
            let xs = &x()?.shape;
            if xs.len() != 4 {
                return fail(format!("expected a 4-D NCHW tensor, got shape {xs:?}"));
            }
            one(vec![xs[0], xs[1], 1, 1], Elem::F32)
        }
        Op::Flatten { axis } => {
            let x = x()?;
            let r = x.shape.len() as i64;
            let ax = if *axis < 0 { axis + r } else { *axis };
            if ax < 0 || ax > r {
                return fail(format!("Flatten axis {axis} out of range for rank {r}"));
            }
            let (lo, hi) = x.shape.split_at(ax as usize);
            one(vec![lo.iter().product(), hi.iter().product()], x.elem)
        }
        Op::Reshape => {
            let x = x()?;
            match i64_value(ins, 1)? {
                Some(spec) => one(reshape_target(&x.shape, &spec)?, x.elem),
                None => Ok(None),
            }
        }
        Op::Transpose { perm } => {
            let x = x()?;
            let r = x.shape.len();
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
            let mut seen = vec![false; r];
            if perm.len() != r
                || perm
                    .iter()
                    .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
            {
                return fail(format!("Transpose perm {perm:?} for rank {r}"));
            }
            one(perm.iter().map(|&p| x.shape[p]).collect(), x.elem)
        }
        Op::Concat { axis } => {
            let parts: Vec<&TensorInfo> = ins.iter().flatten().copied().collect();
            let Some(first) = parts.first() else {
                return fail("Concat of nothing");
            };
            let ax = norm_axis(*axis, first.shape.len())?;
            let mut shape = first.shape.clone();
            shape[ax] = 0;
            for p in &parts {
                let fits = p.shape.len() == shape.len()
                    && (0..shape.len()).all(|i| i == ax || p.shape[i] == first.shape[i]);
                if !fits {
                    return fail(format!(
                        "Concat: shapes {:?} and {:?} differ off axis {ax}",
                        first.shape, p.shape
                    ));
                }
                shape[ax] = shape[ax]
                    .checked_add(p.shape[ax])
                    .ok_or_else(|| ModelError::Tensor("Concat: the axis overflows".into()))?;
            }
            one(shape, first.elem)
        }
        Op::Constant { value } => one(value.shape().to_vec(), Elem::of(value)),
        Op::ConstantOfShape { value } => match i64_value(ins, 0)? {
            Some(dims) => {
                let shape = dims
                    .iter()
                    .map(|&d| {
                        usize::try_from(d)
                            .map_err(|_| ModelError::Tensor(format!("negative dimension {d}")))
                    })
                    .collect::<Result<Vec<usize>>>()?;
                one(shape, Elem::of(value))
            }
            None => Ok(None),
        },
        Op::Shape => one(vec![x()?.shape.len()], Elem::I64),
        Op::Gather { axis } => {
            let (d, idx) = (x()?, input(ins, 1)?);
            let ax = norm_axis(*axis, d.shape.len())?;
            let mut shape = d.shape[..ax].to_vec();
            shape.extend_from_slice(&idx.shape);
            shape.extend_from_slice(&d.shape[ax + 1..]);
            one(shape, d.elem)
        }
        Op::Unsqueeze { axes } | Op::Squeeze { axes } => {
            let x = x()?;
            let Ok(axes) = axes_of(axes, ins, 1)? else {
                return Ok(None);
            };
            let mut shape = x.shape.clone();
            if matches!(op, Op::Unsqueeze { .. }) {
                let Some(axes) = axes else {
                    return fail("Unsqueeze needs axes");
                };
                let out_rank = shape.len() + axes.len();
                let mut norm = axes
                    .iter()
                    .map(|&a| norm_axis(a, out_rank))
                    .collect::<Result<Vec<_>>>()?;
                norm.sort_unstable();
                for a in norm {
                    shape.insert(a, 1);
                }
            } else {
                match axes {
                    Some(axes) => {
                        let mut norm = axes
                            .iter()
                            .map(|&a| norm_axis(a, shape.len()))
                            .collect::<Result<Vec<_>>>()?;
                        norm.sort_unstable();
                        for a in norm.into_iter().rev() {
                            if shape[a] != 1 {
                                return fail(format!("Squeeze axis {a} has size {}", shape[a]));
                            }
                            shape.remove(a);
                        }
                    }
                    None => shape.retain(|&d| d != 1),
                }
            }
            one(shape, x.elem)
        }
        Op::ReduceSum {
            axes,
            keepdims,
            noop_with_empty_axes,
        }
        | Op::ReduceMean {
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let x = x()?;
            let Ok(axes) = axes_of(axes, ins, 1)? else {
                return Ok(None);
            };
            let axes = axes.unwrap_or_default();
            if axes.is_empty() && *noop_with_empty_axes {
                return same();
            }
            let rank = x.shape.len();
            let mut reduced = vec![axes.is_empty(); rank];
            for &a in &axes {
                let a = norm_axis(a, rank)?;
                if std::mem::replace(&mut reduced[a], true) {
                    return fail(format!("reduce axes {axes:?} name axis {a} twice"));
                }
            }
            let shape = (0..rank)
                .filter(|&i| *keepdims || !reduced[i])
                .map(|i| if reduced[i] { 1 } else { x.shape[i] })
                .collect();
            one(shape, Elem::F32)
        }
        // The length is a function of the three scalars' values: known when they are
        // (evaluated by the caller), else unknown.
        Op::Range => {
            let vals: Option<Vec<&Tensor>> = (0..3)
                .map(|k| input(ins, k).map(|i| i.value.as_ref()))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .collect();
            match vals {
                Some(v) => {
                    let t = crate::exec::nn::range(v[0], v[1], v[2])?;
                    one(t.shape().to_vec(), Elem::of(&t))
                }
                None => Ok(None),
            }
        }
        Op::Cast { to } => one(
            x()?.shape.clone(),
            match to {
                crate::ir::CastTo::F32 => Elem::F32,
                crate::ir::CastTo::I64 => Elem::I64,
            },
        ),
    }
}

/// The memory a run of a plan needs for its activations, from inferred shapes: the
/// largest tensor, and the peak of the tensors alive at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of the largest live tensor.
    pub largest: u64,
    /// Bytes alive at once at the busiest step, with that step's node.
    pub peak: u64,
    pub peak_node: String,
    /// Tensors whose shapes depend on data (checked when allocated instead).
    pub unknown: usize,
}

impl MemoryPlan {
    /// An error naming the peak's node when the plan needs more than `budget`.
    pub fn check(&self, budget: &MemoryBudget) -> Result<()> {
        budget
            .check(
                &format_args!(
                    "the activations alive at node {:?} (inputs and outputs together)",
                    self.peak_node
                ),
                self.peak,
            )
            .map_err(|e| ModelError::Exec {
                node: self.peak_node.clone(),
                op: "plan".into(),
                msg: e.to_string(),
            })
    }
}
