//! The fp32 executor: runs a [`Graph`] on the kernels crate's strong fp32 paths.
//!
//! At construction ([`Executor::new`]) it runs the shared graph passes ([`crate::passes`]):
//! 1. constant folding, so constant-filled weights and shape subgraphs cost nothing per
//!    call;
//! 2. BatchNormalization folding (a BatchNorm right after the Conv whose output it alone
//!    reads goes into the conv's weights and bias), and Conv + Relu fusion (the Relu
//!    becomes the conv step's activation);
//! 3. packs every Conv once into a [`PackedConvF32`] and pre-transposes every constant Gemm
//!    `B` (with `alpha` folded in), so a call does no weight preparation.
//!
//! **Layout.** ONNX activations are NCHW; [`PackedConvF32`] is NHWC. Converting at every
//! conv would cost two transposes per layer, so 4-D activations stay NHWC from the first
//! conv on, through the ops that are layout-agnostic or have an NHWC body here (element-wise
//! ops and broadcasting binaries, BatchNorm, pools, LRN, channel Concat), and are converted
//! back to NCHW only where an op needs the ONNX order (Flatten, Reshape, Transpose, Gemm,
//! MatMul, Softmax, Gather, the transformer ops of [`nn`], ...) and at the graph outputs. Each runtime value carries a flag
//! saying which layout its buffer is in; `Shape` reports the logical (NCHW) shape.
//!
//! **Batch.** The first dimension of every graph input is free at run time; other declared
//! fixed dims are checked. **Threads**: [`Options::threads`] goes to the GEMMs and convs,
//! the batched MatMuls (batch entries across threads) and the row-wise transformer ops
//! (softmax, layer norm, GELU: whole rows across threads, [`rows`]); 1 = the calling
//! thread only, the default. Results have the same bits for every thread count.

mod dispatch;
pub mod nn;
mod ops;
mod rows;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use qbench_kernels::conv::fp32::PackedConvF32;
use qbench_kernels::{Nhwc, Window};

use crate::error::{ModelError, Result};
use crate::ir::{AutoPad, Dim, Graph, Node, Op, ValueInfo};
use crate::passes::{self, Activation, FusedNode, OutputNodes, Reach};
use crate::plan::{Plan, PlanStep};
use crate::shapes::{Inferred, MemoryPlan, ShapeModel};
use crate::tensor::{broadcast_binary, broadcast_shapes, Tensor};
use dispatch::eval;

pub use ops::{norm_axis, pool_geom, pool_out, reshape_target};

/// Executor settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads for GEMM and conv; 1 runs on the calling thread only.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { threads: 1 }
    }
}

/// Physical NHWC → logical NCHW, and back.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];

/// A runtime value: a tensor and whether its (rank-4) buffer is NHWC. When `nhwc`, the
/// tensor's shape is the physical `[n, h, w, c]`.
#[derive(Clone, Debug)]
struct Val {
    t: Tensor,
    nhwc: bool,
}

impl Val {
    fn plain(t: Tensor) -> Val {
        Val { t, nhwc: false }
    }

    fn logical_shape(&self) -> Vec<usize> {
        let s = self.t.shape();
        if self.nhwc {
            vec![s[0], s[3], s[1], s[2]]
        } else {
            s.to_vec()
        }
    }
}

enum Kernel {
    Generic,
    Conv {
        packed: PackedConvF32,
        /// Pads `[top, left, bottom, right]`, to check the padded input's extent
        /// before the kernel adds them unchecked.
        pads: [usize; 4],
        /// Fused by [`passes::fuse_activations`]: applied to the conv's output buffer.
        activation: Option<Activation>,
    },
    /// Constant `B` as `k × n` row-major, `alpha` folded in.
    Gemm {
        b: Vec<f32>,
        k: usize,
        n: usize,
    },
}

/// What one step of the [`Plan`] runs.
struct Step {
    name: String,
    op: Op,
    kernel: Kernel,
    /// The node's output names, to hold each output to its inferred shape (debug builds).
    out_names: Vec<String>,
}

/// A graph prepared to run: constants folded, convs packed. Immutable and `Sync`; one
/// executor can serve calls from several threads.
pub struct Executor {
    inputs: Vec<(usize, ValueInfo)>,
    outputs: Vec<(usize, String)>,
    /// Constants by slot (folded and initializers that running steps still read).
    consts: Vec<Option<Val>>,
    plan: Plan<Step>,
    threads: usize,
    /// The folded graph's shapes, inferred per input shape before a call runs anything.
    shapes: ShapeModel,
    /// Each slot's tensor name.
    slot_names: Vec<String>,
    /// The inferred shapes and memory plans of the input shapes seen so far (see
    /// [`Executor::memory_plan`]).
    memory: Mutex<HashMap<Vec<Vec<usize>>, Planned>>,
}

/// What [`Executor::memory_plan`] knows of one input shape.
#[derive(Clone)]
struct Planned {
    inferred: Arc<Inferred>,
    memory: MemoryPlan,
}

/// How many input shapes' memory plans an executor keeps.
const MEMORY_PLANS_KEPT: usize = 64;

fn exec_err(node: &str, op: &Op, e: impl std::fmt::Display) -> ModelError {
    ModelError::Exec {
        node: node.to_string(),
        op: op.onnx_name().to_string(),
        msg: e.to_string(),
    }
}

impl Executor {
    /// Prepares `graph` (see the module docs for what is folded and packed).
    pub fn new(graph: &Graph, opts: Options) -> Result<Executor> {
        graph.validate(&graph.name)?;
        let threads = opts.threads.max(1);
        let mut g = graph.clone();
        passes::fold_constants(&mut g, OutputNodes::Fold)?;
        passes::fold_batch_norms(&mut g, Reach::Adjacent)?;
        let live = passes::fuse_activations(&g);
        let shapes = ShapeModel::new(&g);
        let consts = g.initializers;

        // Slots: every name a running step or a graph output reads or writes.
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut slot = |name: &str| -> usize {
            let n = slot_of.len();
            *slot_of.entry(name.to_string()).or_insert(n)
        };
        let inputs: Vec<(usize, ValueInfo)> = graph
            .inputs
            .iter()
            .map(|vi| (slot(&vi.name), vi.clone()))
            .collect();
        let mut steps = Vec::with_capacity(live.len());
        for FusedNode { node, activation } in live {
            let kernel = prepare(&node, activation, &consts)?;
            // A conv step reads only X and a packed gemm step A and C: the weights live
            // in the kernel, so their slots are not read (and not kept) at run time.
            let read = |k: usize| match kernel {
                Kernel::Generic => true,
                Kernel::Conv { .. } => k == 0,
                Kernel::Gemm { .. } => k != 1,
            };
            let ins = node
                .inputs
                .iter()
                .enumerate()
                .map(|(k, i)| (!i.is_empty() && read(k)).then(|| slot(i)))
                .collect();
            let outs = node
                .outputs
                .iter()
                .map(|o| (!o.is_empty()).then(|| slot(o)))
                .collect();
            steps.push(PlanStep {
                op: Step {
                    name: node.name,
                    op: node.op,
                    kernel,
                    out_names: node.outputs,
                },
                inputs: ins,
                outputs: outs,
            });
        }
        let outputs: Vec<(usize, String)> = graph
            .outputs
            .iter()
            .map(|o| (slot(&o.name), o.name.clone()))
            .collect();
        let nslots = slot_of.len();
        let mut const_slots: Vec<Option<Val>> = vec![None; nslots];
        for (name, &s) in &slot_of {
            if let Some(t) = consts.get(name) {
                if !graph.inputs.iter().any(|i| &i.name == name) {
                    const_slots[s] = Some(Val::plain(t.clone()));
                }
            }
        }
        let out_slots: Vec<usize> = outputs.iter().map(|(s, _)| *s).collect();
        let mut slot_names = vec![String::new(); nslots];
        for (name, s) in slot_of {
            slot_names[s] = name;
        }
        Ok(Executor {
            inputs,
            outputs,
            consts: const_slots,
            plan: Plan::new(nslots, steps, &out_slots),
            threads,
            shapes,
            slot_names,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// The memory a call on inputs of `input_shapes` needs, from shapes inferred before
    /// anything runs ([`crate::shapes`]); an error names the node when one tensor, or the
    /// tensors alive at once, would be over the memory budget. Every call checks this
    /// first; plans are kept per input shape.
    pub fn memory_plan(&self, input_shapes: &[Vec<usize>]) -> Result<MemoryPlan> {
        Ok(self.planned(input_shapes)?.memory)
    }

    fn planned(&self, input_shapes: &[Vec<usize>]) -> Result<Planned> {
        let cached = self
            .memory
            .lock()
            .ok()
            .and_then(|m| m.get(input_shapes).cloned());
        if let Some(p) = cached {
            return Ok(p);
        }
        let inferred = self.shapes.infer(input_shapes)?;
        let memory = self.plan_memory(&inferred);
        memory.check(&crate::budget::MemoryBudget::global()?)?;
        let planned = Planned {
            inferred: Arc::new(inferred),
            memory,
        };
        if let Ok(mut m) = self.memory.lock() {
            if m.len() >= MEMORY_PLANS_KEPT {
                m.clear();
            }
            m.insert(input_shapes.to_vec(), planned.clone());
        }
        Ok(planned)
    }

    fn plan_memory(&self, inferred: &Inferred) -> MemoryPlan {
        let mut unknown = 0;
        let bytes: Vec<u64> = self
            .slot_names
            .iter()
            .enumerate()
            .map(|(s, name)| {
                if self.consts[s].is_some() {
                    return 0;
                }
                match inferred.tensors.get(name) {
                    Some(info) => info.bytes(),
                    None => {
                        unknown += 1;
                        0
                    }
                }
            })
            .collect();
        let filled: Vec<usize> = self.inputs.iter().map(|(s, _)| *s).collect();
        let (peak, at) = self.plan.peak(&bytes, &filled);
        MemoryPlan {
            largest: bytes.iter().copied().max().unwrap_or(0),
            peak,
            peak_node: match at {
                Some(k) => self.plan.steps()[k].op.name.clone(),
                None => "(the inputs)".into(),
            },
            unknown,
        }
    }

    /// Number of steps that run per call (after folding and fusion).
    pub fn num_steps(&self) -> usize {
        self.plan.steps().len()
    }

    /// Runs on `inputs` in the graph's input order; returns the outputs in its output
    /// order, NCHW as ONNX defines them.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_owned(inputs.to_vec())
    }

    /// As [`Executor::run`], taking the inputs by value: element-wise ops then work in
    /// their buffers instead of copies (the int8 runtime hands its fp32 sub-graphs
    /// activations it no longer needs).
    pub fn run_owned(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if inputs.len() != self.inputs.len() {
            return Err(ModelError::Tensor(format!(
                "the graph has {} inputs, {} given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for ((_, vi), t) in self.inputs.iter().zip(&inputs) {
            check_input(vi, t)?;
        }
        let input_shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let planned = self.planned(&input_shapes)?;
        let mut vals = self.plan.slots();
        for ((slot, _), t) in self.inputs.iter().zip(inputs) {
            vals[*slot] = Some(Val::plain(t));
        }
        let mut vals = self.plan.run(
            vals,
            &self.consts,
            false,
            |st, args| {
                let outs = eval(&st.op, &st.kernel, args, self.threads)
                    .map_err(|e| exec_err(&st.name, &st.op, e))?;
                // Debug builds hold every output to its inferred shape, so the inference
                // rules cannot drift from the op bodies unnoticed.
                #[cfg(debug_assertions)]
                for (name, v) in st.out_names.iter().zip(&outs) {
                    if let Some(info) = planned.inferred.tensors.get(name) {
                        debug_assert_eq!(
                            info.shape,
                            v.logical_shape(),
                            "node {:?} output {name:?}: inferred shape differs from the run's",
                            st.name
                        );
                    }
                }
                Ok(outs)
            },
            |st, s| exec_err(&st.name, &st.op, format!("input slot {s} is empty")),
        )?;
        // Outputs are moved out (an output read twice is cloned the second time), not
        // copied: a sub-graph of the int8 runtime returns activations on every call.
        let mut last_read: HashMap<usize, usize> = HashMap::new();
        for (k, (s, _)) in self.outputs.iter().enumerate() {
            last_read.insert(*s, k);
        }
        self.outputs
            .iter()
            .enumerate()
            .map(|(k, (s, name))| {
                let v = if last_read[s] == k {
                    vals[*s].take()
                } else {
                    vals[*s].clone()
                };
                let v = v.or_else(|| self.consts[*s].clone()).ok_or_else(|| {
                    ModelError::Tensor(format!("output {name:?} was not computed"))
                })?;
                Ok(to_plain(Cow::Owned(v))?.into_owned())
            })
            .collect()
    }
}

fn check_input(vi: &ValueInfo, t: &Tensor) -> Result<()> {
    let bad = t.rank() != vi.dims.len()
        || vi
            .dims
            .iter()
            .zip(t.shape())
            .enumerate()
            .any(|(i, (d, &x))| i > 0 && matches!(d, Dim::Fixed(f) if *f != x));
    if bad || !t.is_f32() {
        return Err(ModelError::Tensor(format!(
            "input {:?}: expected f32 {:?} (first dim free), got {:?} shape {:?}",
            vi.name,
            vi.dims,
            if t.is_f32() { "f32" } else { "i64" },
            t.shape()
        )));
    }
    Ok(())
}

/// Evaluates a node whose inputs are all constants (`None` for an omitted optional
/// input), on the calling thread: constant folding ([`crate::passes::constants`]) runs
/// the executor's own ops, so a folded value has the bits a running step would give.
pub(crate) fn eval_constant(node: &Node, inputs: Vec<Option<Tensor>>) -> Result<Vec<Tensor>> {
    let args = inputs
        .into_iter()
        .map(|t| t.map(|t| Cow::Owned(Val::plain(t))))
        .collect();
    let outs =
        eval(&node.op, &Kernel::Generic, args, 1).map_err(|e| exec_err(&node.name, &node.op, e))?;
    outs.into_iter()
        .map(|v| Ok(to_plain(Cow::Owned(v))?.into_owned()))
        .collect()
}

/// Packs what a step can pack: conv weights, constant Gemm `B`.
fn prepare(
    node: &Node,
    activation: Option<Activation>,
    consts: &BTreeMap<String, Tensor>,
) -> Result<Kernel> {
    let err = |e: &dyn std::fmt::Display| exec_err(&node.name, &node.op, e);
    match &node.op {
        Op::Conv { spatial, group } => {
            let w = node
                .inputs
                .get(1)
                .and_then(|w| consts.get(w))
                .ok_or_else(|| err(&"weights must be constant (an initializer or foldable)"))?;
            let ws = w.shape();
            if ws.len() != 4 {
                return Err(err(&format!(
                    "only 2-D convolution is supported; weights have shape {ws:?}"
                )));
            }
            // No output or input channels, or an empty kernel, computes nothing; and the
            // kernel's `k - 1` arithmetic must not see a 0.
            if ws.contains(&0) {
                return Err(err(&format!(
                    "weights of shape {ws:?} have an empty dimension"
                )));
            }
            let k = [ws[2], ws[3]];
            if spatial.kernel.is_some_and(|ks| ks != k) {
                return Err(err(&format!(
                    "kernel_shape {:?} differs from the weights' {k:?}",
                    spatial.kernel
                )));
            }
            if matches!(spatial.auto_pad, AutoPad::SameUpper | AutoPad::SameLower)
                && spatial.strides != [1, 1]
            {
                return Err(err(&"auto_pad SAME with stride > 1 is not supported (pads depend on the input size)"));
            }
            // With unit stride, SAME pads do not depend on the input size.
            let pads = spatial.resolve_pads(k, 1024, 1024);
            let window = Window::new(k[0], k[1])
                .stride(spatial.strides[0], spatial.strides[1])
                .dilation(spatial.dilations[0], spatial.dilations[1])
                .pads(pads);
            let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
                Some(b) => Some(
                    consts
                        .get(b)
                        .ok_or_else(|| err(&"bias must be constant"))?
                        .f32s()?,
                ),
                None => None,
            };
            let packed = PackedConvF32::new(w.f32s()?, ws[0], ws[1], *group, window, bias)
                .map_err(|e| err(&e))?;
            Ok(Kernel::Conv {
                packed,
                pads,
                activation,
            })
        }
        Op::Gemm { alpha, trans_b, .. } => {
            let Some(b) = node.inputs.get(1).and_then(|b| consts.get(b)) else {
                return Ok(Kernel::Generic);
            };
            if b.rank() != 2 {
                return Err(err(&format!("B must be 2-D, has shape {:?}", b.shape())));
            }
            let bt = if *trans_b {
                b.transposed(&[1, 0])?
            } else {
                b.clone()
            };
            let (k, n) = (bt.shape()[0], bt.shape()[1]);
            let bv: Vec<f32> = bt.f32s()?.iter().map(|x| x * alpha).collect();
            Ok(Kernel::Gemm { b: bv, k, n })
        }
        _ => Ok(Kernel::Generic),
    }
}

fn to_plain(v: Cow<Val>) -> Result<Cow<Tensor>> {
    Ok(match v {
        Cow::Borrowed(v) if v.nhwc => Cow::Owned(v.t.transposed(&TO_NCHW)?),
        Cow::Borrowed(v) => Cow::Borrowed(&v.t),
        Cow::Owned(v) if v.nhwc => Cow::Owned(v.t.transposed(&TO_NCHW)?),
        Cow::Owned(v) => Cow::Owned(v.t),
    })
}

fn to_nhwc(v: Cow<Val>) -> Result<(Cow<Tensor>, Nhwc)> {
    let t = match v {
        Cow::Borrowed(v) if v.nhwc => Cow::Borrowed(&v.t),
        Cow::Owned(v) if v.nhwc => Cow::Owned(v.t),
        v => {
            if v.t.rank() != 4 {
                return Err(ModelError::Tensor(format!(
                    "expected a 4-D NCHW tensor, got shape {:?}",
                    v.t.shape()
                )));
            }
            Cow::Owned(v.t.transposed(&TO_NHWC)?)
        }
    };
    let s = t.shape();
    let shape = Nhwc::new(s[0], s[1], s[2], s[3]);
    Ok((t, shape))
}

fn arg<'a>(args: &mut [Option<Cow<'a, Val>>], i: usize) -> Result<Cow<'a, Val>> {
    args.get_mut(i)
        .and_then(Option::take)
        .ok_or_else(|| ModelError::Tensor(format!("missing input {i}")))
}

fn opt_arg<'a>(args: &mut [Option<Cow<'a, Val>>], i: usize) -> Option<Cow<'a, Val>> {
    args.get_mut(i).and_then(Option::take)
}

/// A scalar f32 from an optional input (Clip bounds).
fn scalar_arg(args: &mut [Option<Cow<Val>>], i: usize) -> Result<Option<f32>> {
    match opt_arg(args, i) {
        None => Ok(None),
        Some(v) => {
            let t = to_plain(v)?;
            match t.f32s()? {
                [x] => Ok(Some(*x)),
                _ => Err(ModelError::Tensor(format!(
                    "input {i} must be a scalar, has shape {:?}",
                    t.shape()
                ))),
            }
        }
    }
}

/// `max(x, 0)` that keeps NaN (as PyTorch and ONNX do): `f32::max` would turn a NaN into
/// 0 and hide bad input from every check downstream.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Clip to `[lo, hi]`, keeping NaN (as ONNX Clip does), for the same reason as [`relu`].
#[inline(always)]
fn clip(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

fn map_in_place(v: Cow<Val>, f: impl Fn(f32) -> f32) -> Result<Val> {
    let mut v = v.into_owned();
    for x in v.t.f32s_mut()? {
        *x = f(*x);
    }
    Ok(v)
}

/// A broadcasting binary op on values in either layout. When one operand is NHWC and the
/// result is 4-D, the others are brought into NHWC order (cheap: they are usually small
/// per-channel constants) and the result stays NHWC.
// Generic over the operation (not a `fn` pointer) so each op's loops are monomorphised
// and vectorised: through a pointer every element cost an indirect call, which made the
// bias, residual, scale and mask additions of a transformer a tenth of its fp32 time.
fn binary<F: Fn(f32, f32) -> f32 + Copy>(a: Cow<Val>, b: Cow<Val>, f: F) -> Result<Val> {
    if a.nhwc == b.nhwc && a.t.shape() == b.t.shape() {
        let mut out = a.into_owned();
        for (x, &y) in out.t.f32s_mut()?.iter_mut().zip(b.t.f32s()?) {
            *x = f(*x, y);
        }
        return Ok(out);
    }
    // `b` broadcast along the leading axes of `a` (a Linear's bias, a scalar): a row-wise
    // loop on `a`'s buffer, without materialising the broadcast `b` (transformers do this
    // dozens of times per call on [N, S, hidden] tensors).
    if !a.nhwc && !b.nhwc && !b.t.is_empty() && a.t.shape().ends_with(b.t.shape()) {
        let mut out = a.into_owned();
        let bv = b.t.f32s()?;
        // One value (attention's 1/√d scaling, a constant): a plain loop the compiler
        // vectorises; rows of length 1 would be one scalar operation each.
        if let [y] = *bv {
            for x in out.t.f32s_mut()? {
                *x = f(*x, y);
            }
            return Ok(out);
        }
        for row in out.t.f32s_mut()?.chunks_exact_mut(bv.len()) {
            for (x, &y) in row.iter_mut().zip(bv) {
                *x = f(*x, y);
            }
        }
        return Ok(out);
    }
    let out_rank = broadcast_shapes(&a.logical_shape(), &b.logical_shape())?.len();
    if (a.nhwc || b.nhwc) && out_rank == 4 {
        let phys = |v: &Val| -> Result<Tensor> {
            if v.nhwc {
                return Ok(v.t.clone());
            }
            let mut s = v.t.shape().to_vec();
            while s.len() < 4 {
                s.insert(0, 1);
            }
            v.t.clone().reshaped(s)?.transposed(&TO_NHWC)
        };
        let t = broadcast_binary(&phys(&a)?, &phys(&b)?, f)?;
        return Ok(Val { t, nhwc: true });
    }
    let t = broadcast_binary(&*to_plain(a)?, &*to_plain(b)?, f)?;
    Ok(Val::plain(t))
}

/// Add/Sub/Mul/Div/Sum over the inputs, left to right, in place on an owned operand when
/// the op commutes.
fn fold_binary<F: Fn(f32, f32) -> f32 + Copy>(
    op: &Op,
    args: Vec<Option<Cow<Val>>>,
    f: F,
) -> Result<Val> {
    let mut items: Vec<Cow<Val>> = args.into_iter().flatten().collect();
    if items.is_empty() {
        return Err(ModelError::Tensor("no inputs".into()));
    }
    // Prefer an owned operand first so the common same-shape case is in place.
    if matches!(op, Op::Add | Op::Mul | Op::Sum) {
        if let Some(i) = items.iter().position(|v| matches!(v, Cow::Owned(_))) {
            items.swap(0, i);
        }
    }
    let mut it = items.into_iter();
    let mut acc = it.next().expect("non-empty");
    for b in it {
        acc = Cow::Owned(binary(acc, b, f)?);
    }
    Ok(acc.into_owned())
}
