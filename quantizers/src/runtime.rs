//! Runs a [`QuantizedModel`] on the kernel ladder.
//!
//! [`QExecutor::new`] plans the graph once: each int8 layer becomes a packed conv or GEMM
//! step (requantized u8 out for static models, dequantized f32 for dynamic ones); in a
//! static model, pools, ReLU, Add (with a following ReLU fused into its clamp), Flatten
//! and Reshape stay in u8 when their inputs already are; everything else runs in fp32,
//! consecutive fp32 nodes grouped into one sub-graph on the fp32 executor. Quantize and
//! dequantize steps are inserted exactly where a value changes domain, and
//! [`QExecutor::placements`] lists, per node, whether it ran in int8 and if not why.
//!
//! **Layout.** u8 activations of rank 4 are always NHWC (what the int8 conv and pools
//! take); every other value is plain row-major, f32 values NCHW as ONNX defines them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use qbench_kernels::gemm::{ActZeroPoints, Dequant, MatA, MatB, PackedB, Requant, Scales};
use qbench_kernels::{
    conv_dequant, conv_requant, eltwise, pool, AddQuant, Affine, ConvWeights, Nhwc, PackedConv,
    PoolQuant, Rung, Window,
};
use qbench_models::exec::{reshape_target, Executor, Options};
use qbench_models::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::plan::{Plan, PlanStep};
use qbench_models::tensor::Tensor;
use rayon::prelude::*;

use crate::error::{check_finite, QuantError, Result};
use crate::model::{ActScales, LayerKind, Method, QLayer, QuantizedModel};
use crate::qparams::{quantize, quantize_bias, QParams, QSpec};

/// Where one node of the graph runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    pub node: String,
    pub op: String,
    pub int8: bool,
    /// Why it stayed in fp32 (or what it was fused into).
    pub note: Option<String>,
}

/// A u8 activation: data, physical shape (NHWC when `nhwc`), its scale and zero point.
#[derive(Clone, Debug)]
struct U8Tensor {
    data: Vec<u8>,
    shape: Vec<usize>,
    nhwc: bool,
    q: Affine,
}

impl U8Tensor {
    fn logical_shape(&self) -> Vec<usize> {
        if self.nhwc {
            let s = &self.shape;
            vec![s[0], s[3], s[1], s[2]]
        } else {
            self.shape.clone()
        }
    }

    fn nhwc_dims(&self) -> Result<Nhwc> {
        if !self.nhwc {
            return Err(QuantError::Config {
                key: "runtime".into(),
                msg: format!("expected an NHWC activation, got shape {:?}", self.shape),
            });
        }
        let s = &self.shape;
        Ok(Nhwc::new(s[0], s[1], s[2], s[3]))
    }

    /// The data in logical (NCHW) order.
    fn plain_data(&self) -> Vec<u8> {
        if !self.nhwc {
            return self.data.clone();
        }
        let [n, h, w, c] = [self.shape[0], self.shape[1], self.shape[2], self.shape[3]];
        let mut out = vec![0u8; self.data.len()];
        for b in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let src = ((b * h + y) * w + x) * c;
                    for ch in 0..c {
                        out[((b * c + ch) * h + y) * w + x] = self.data[src + ch];
                    }
                }
            }
        }
        out
    }

    fn dequantize(&self) -> Result<Tensor> {
        let (s, z) = (self.q.scale, self.q.zero_point);
        let data = self
            .plain_data()
            .into_iter()
            .map(|v| (v as i32 - z) as f32 * s)
            .collect();
        Ok(Tensor::new(self.logical_shape(), data)?)
    }
}

/// Quantizes an f32 (NCHW) tensor; rank 4 comes out NHWC.
fn quantize_tensor(t: &Tensor, q: Affine, qmin: i32, qmax: i32) -> Result<U8Tensor> {
    let x = t.f32s()?;
    let shape = t.shape();
    let quant = |v: f32| quantize(v, q.scale, q.zero_point, qmin, qmax) as u8;
    if shape.len() == 4 {
        let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        let mut data = vec![0u8; x.len()];
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    let src = ((b * c + ch) * h + y) * w;
                    for xx in 0..w {
                        data[((b * h + y) * w + xx) * c + ch] = quant(x[src + xx]);
                    }
                }
            }
        }
        Ok(U8Tensor {
            data,
            shape: vec![n, h, w, c],
            nhwc: true,
            q,
        })
    } else {
        Ok(U8Tensor {
            data: x.iter().map(|&v| quant(v)).collect(),
            shape: shape.to_vec(),
            nhwc: false,
            q,
        })
    }
}

#[derive(Clone, Debug)]
enum QVal {
    F32(Tensor),
    U8(U8Tensor),
    /// An f32 tensor quantized for dynamic layers: rows of `k` bytes with the parameters
    /// of each row (or one pair for the whole tensor). Made once per tensor and shared by
    /// every dynamic layer reading it (a transformer's Q, K and V projections).
    Dyn(DynU8),
}

#[derive(Clone, Debug)]
struct DynU8 {
    data: Vec<u8>,
    /// The logical shape of the f32 tensor (last axis = k).
    shape: Vec<usize>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

/// What a dynamic layer does to its activations on each call.
#[derive(Clone, Copy, Debug)]
struct DynAct {
    spec: QSpec,
    per_row: bool,
}

impl DynAct {
    fn qparams(&self, data: &[f32]) -> (f32, i32) {
        let (lo, hi) = qbench_kernels::quantize::min_max(data);
        if lo > hi {
            return self.spec.qparams_for_range(0.0, 0.0);
        }
        self.spec.qparams_for_range(lo, hi)
    }
}

struct Requantize {
    bias: Vec<i32>,
    multiplier: Vec<f32>,
    out: Affine,
    qmin: u8,
    qmax: u8,
}

impl Requantize {
    fn params(&self) -> Requant<'_> {
        Requant {
            bias: Some(&self.bias),
            multiplier: &self.multiplier,
            out_zero_point: self.out.zero_point,
            qmin: self.qmin,
            qmax: self.qmax,
        }
    }
}

enum Kind {
    Quantize {
        q: Affine,
        qmin: i32,
        qmax: i32,
    },
    Dequantize,
    Conv {
        conv: PackedConv,
        rq: Requantize,
    },
    Linear {
        b: PackedB,
        rq: Requantize,
    },
    /// Quantizes an f32 tensor for the dynamic layers that read it.
    DynQuantize {
        act: DynAct,
        k: usize,
    },
    /// Reads a [`QVal::Dyn`] made by a `DynQuantize` step.
    DynLinear {
        b: PackedB,
        w_scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        relu: bool,
    },
    DynConv {
        conv: PackedConv,
        w_scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        relu: bool,
        act: DynAct,
    },
    MaxPool {
        spatial: Spatial,
    },
    AvgPool {
        spatial: Spatial,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    Add {
        out: Affine,
        qmin: u8,
        qmax: u8,
    },
    Relu,
    Flatten {
        axis: i64,
    },
    Reshape {
        spec: Vec<i64>,
    },
    Fp32 {
        exec: Box<Executor>,
    },
}

struct Step {
    /// The node (or region of nodes) this step runs, for errors.
    name: String,
    kind: Kind,
    ins: Vec<usize>,
    outs: Vec<usize>,
}

/// What one step of the plan runs (the node or region it stands for, for errors).
struct QStep {
    name: String,
    kind: Kind,
}

/// A quantized model prepared to run: weights packed for the active rung.
pub struct QExecutor {
    method: Method,
    plan: Plan<QStep>,
    inputs: Vec<(usize, ValueInfo)>,
    outputs: Vec<usize>,
    /// Tensor name → slot holding its f32 or u8 form, for tracing.
    traced: Vec<(String, usize)>,
    placements: Vec<Placement>,
    rung: Rung,
    /// Threads given to each int8 GEMM and conv (and, through their executors, to the
    /// fp32 regions' GEMMs); 1 runs everything on the calling thread.
    threads: usize,
}

fn layer_err(node: &Node, msg: impl Into<String>) -> QuantError {
    QuantError::Layer {
        layer: node.name.clone(),
        op: node.op.onnx_name().to_string(),
        msg: msg.into(),
    }
}

/// The plan under construction: which form of each tensor lives in which slot.
struct Planner<'m> {
    model: &'m QuantizedModel,
    steps: Vec<Step>,
    nslots: usize,
    f32_slot: HashMap<String, usize>,
    u8_slot: HashMap<String, usize>,
    /// Plan-time qparams of every u8 tensor.
    u8_q: HashMap<String, QParams>,
    /// Slot of each tensor's dynamic quantization (shared by the layers reading it).
    dyn_slot: HashMap<String, usize>,
    region: Vec<usize>,
    placements: Vec<Placement>,
    /// Node indices reading each tensor.
    readers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
    threads: usize,
}

impl<'m> Planner<'m> {
    fn slot(&mut self) -> usize {
        self.nslots += 1;
        self.nslots - 1
    }

    fn need_f32(&mut self, t: &str) -> Result<usize> {
        if let Some(&s) = self.f32_slot.get(t) {
            return Ok(s);
        }
        let Some(&src) = self.u8_slot.get(t) else {
            return Err(QuantError::Config {
                key: t.to_string(),
                msg: "tensor is read before it is computed".into(),
            });
        };
        let dst = self.slot();
        self.steps.push(Step {
            name: format!("dequantize {t}"),
            kind: Kind::Dequantize,
            ins: vec![src],
            outs: vec![dst],
        });
        self.f32_slot.insert(t.to_string(), dst);
        Ok(dst)
    }

    fn need_u8(&mut self, t: &str, reader: &str) -> Result<(usize, QParams)> {
        if let Some(&s) = self.u8_slot.get(t) {
            return Ok((s, self.u8_q[t].clone()));
        }
        let qp = self
            .model
            .activations
            .get(t)
            .cloned()
            .ok_or_else(|| QuantError::Layer {
                layer: reader.to_string(),
                op: "quantize".into(),
                msg: format!("no activation qparams for its input {t:?} (not calibrated)"),
            })?;
        let src = self.need_f32(t)?;
        let dst = self.slot();
        self.steps.push(Step {
            name: format!("quantize {t}"),
            kind: Kind::Quantize {
                q: affine(&qp),
                qmin: qp.spec.qmin,
                qmax: qp.spec.qmax,
            },
            ins: vec![src],
            outs: vec![dst],
        });
        self.u8_slot.insert(t.to_string(), dst);
        self.u8_q.insert(t.to_string(), qp.clone());
        Ok((dst, qp))
    }

    fn new_u8(&mut self, t: &str, qp: QParams) -> usize {
        let s = self.slot();
        self.u8_slot.insert(t.to_string(), s);
        self.u8_q.insert(t.to_string(), qp);
        s
    }

    fn new_f32(&mut self, t: &str) -> usize {
        let s = self.slot();
        self.f32_slot.insert(t.to_string(), s);
        s
    }

    fn place(&mut self, node: &Node, int8: bool, note: Option<String>) {
        self.placements.push(Placement {
            node: node.name.clone(),
            op: node.op.onnx_name().to_string(),
            int8,
            note,
        });
    }

    /// Emits the pending fp32 nodes as one sub-graph step.
    fn flush(&mut self) -> Result<()> {
        if self.region.is_empty() {
            return Ok(());
        }
        let graph = &self.model.graph;
        let idx: Vec<usize> = std::mem::take(&mut self.region);
        let in_region: HashSet<usize> = idx.iter().copied().collect();
        let produced: HashSet<&str> = idx
            .iter()
            .flat_map(|&i| graph.nodes[i].outputs.iter().map(String::as_str))
            .collect();
        let mut ext_inputs: Vec<String> = Vec::new();
        let mut inits = std::collections::BTreeMap::new();
        for &i in &idx {
            for t in &graph.nodes[i].inputs {
                if t.is_empty() || produced.contains(t.as_str()) {
                    continue;
                }
                if let Some(c) = graph.initializers.get(t) {
                    inits.insert(t.clone(), c.clone());
                } else if !ext_inputs.contains(t) {
                    ext_inputs.push(t.clone());
                }
            }
        }
        let mut ext_outputs: Vec<String> = Vec::new();
        for &i in &idx {
            for t in graph.nodes[i].outputs.iter().filter(|t| !t.is_empty()) {
                let read_outside = self
                    .readers
                    .get(t)
                    .is_some_and(|r| r.iter().any(|j| !in_region.contains(j)));
                if read_outside || self.graph_outputs.contains(t) {
                    ext_outputs.push(t.clone());
                }
            }
        }
        let ins = ext_inputs
            .iter()
            .map(|t| self.need_f32(t))
            .collect::<Result<Vec<_>>>()?;
        let rank = |t: &str| self.model.shapes.get(t).map_or(0, Vec::len);
        let sub = Graph {
            name: format!("{}:fp32", graph.name),
            inputs: ext_inputs
                .iter()
                .map(|t| ValueInfo {
                    name: t.clone(),
                    dims: (0..rank(t))
                        .map(|d| Dim::Symbolic(format!("d{d}")))
                        .collect(),
                })
                .collect(),
            outputs: ext_outputs
                .iter()
                .map(|t| ValueInfo {
                    name: t.clone(),
                    dims: Vec::new(),
                })
                .collect(),
            initializers: inits,
            nodes: idx.iter().map(|&i| graph.nodes[i].clone()).collect(),
        };
        let exec = Executor::new(
            &sub,
            Options {
                threads: self.threads,
            },
        )?;
        let outs = ext_outputs.iter().map(|t| self.new_f32(t)).collect();
        let first = &graph.nodes[idx[0]].name;
        let last = &graph.nodes[idx[idx.len() - 1]].name;
        self.steps.push(Step {
            name: format!("fp32 nodes {first}..{last}"),
            kind: Kind::Fp32 {
                exec: Box::new(exec),
            },
            ins,
            outs,
        });
        Ok(())
    }
}

fn affine(qp: &QParams) -> Affine {
    Affine::new(qp.scales[0], qp.zero_points[0])
}

/// `sa · sw[c] / s_out`, computed in f64 and rounded once.
pub(crate) fn multipliers(sa: f32, sw: &[f32], so: f32) -> Vec<f32> {
    sw.iter()
        .map(|&w| (sa as f64 * w as f64 / so as f64) as f32)
        .collect()
}

fn weight_zero_points(qp: &QParams) -> Vec<i32> {
    if qp.zero_points.iter().all(|&z| z == 0) {
        vec![0]
    } else {
        qp.zero_points.clone()
    }
}

fn pack_linear(layer: &QLayer) -> Result<PackedB> {
    let [n, k] = [layer.weight_shape[0], layer.weight_shape[1]];
    let zps = weight_zero_points(&layer.weight_q);
    Ok(PackedB::new(&MatB {
        data: &layer.weight,
        rows: k,
        cols: n,
        zero_points: &zps,
        transposed: true,
    })?)
}

fn pack_conv(layer: &QLayer, node: &Node, in_shape: &[usize]) -> Result<PackedConv> {
    let Op::Conv { spatial, group } = &node.op else {
        return Err(layer_err(node, "not a Conv"));
    };
    let s = &layer.weight_shape;
    let kernel = [s[2], s[3]];
    if in_shape.len() != 4 {
        return Err(layer_err(
            node,
            format!("input shape {in_shape:?} is not 4-D"),
        ));
    }
    let pads = spatial.resolve_pads(kernel, in_shape[2], in_shape[3]);
    let window = Window::new(kernel[0], kernel[1])
        .stride(spatial.strides[0], spatial.strides[1])
        .dilation(spatial.dilations[0], spatial.dilations[1])
        .pads(pads);
    let zps = weight_zero_points(&layer.weight_q);
    let w = ConvWeights {
        data: &layer.weight,
        out_channels: s[0],
        in_channels_per_group: s[1],
        kernel,
        zero_points: &zps,
    };
    Ok(PackedConv::new(&w, *group, window)?)
}

impl QExecutor {
    /// Prepares `model` to run on the calling thread only.
    pub fn new(model: &QuantizedModel) -> Result<QExecutor> {
        QExecutor::with_threads(model, 1)
    }

    /// Prepares `model` to run its GEMMs and convolutions on `threads` threads of the
    /// current rayon pool (the other steps stay on the calling thread). The outputs are
    /// bit-identical for every thread count.
    pub fn with_threads(model: &QuantizedModel, threads: usize) -> Result<QExecutor> {
        let threads = threads.max(1);
        let graph = &model.graph;
        let method = model.recipe.method;
        let is_static = matches!(method, Method::Static | Method::Qat);
        let layers: HashMap<&str, &QLayer> =
            model.layers.iter().map(|l| (l.node.as_str(), l)).collect();
        let fused_relus: HashMap<&str, &str> = model
            .layers
            .iter()
            .filter_map(|l| l.relu.as_deref().map(|r| (r, l.node.as_str())))
            .collect();
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for t in n.inputs.iter().filter(|t| !t.is_empty()) {
                readers.entry(t.clone()).or_default().push(i);
            }
        }
        let mut p = Planner {
            model,
            steps: Vec::new(),
            nslots: 0,
            f32_slot: HashMap::new(),
            u8_slot: HashMap::new(),
            u8_q: HashMap::new(),
            dyn_slot: HashMap::new(),
            region: Vec::new(),
            placements: Vec::new(),
            readers,
            graph_outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
            threads,
        };
        let inputs: Vec<(usize, ValueInfo)> = graph
            .inputs
            .iter()
            .map(|vi| (p.new_f32(&vi.name), vi.clone()))
            .collect();
        let act_spec = QSpec::activation_quint8(model.recipe.backend.reduce_range());
        let mut add_relu: HashSet<usize> = HashSet::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            if let Some(owner) = fused_relus.get(node.name.as_str()) {
                p.place(node, true, Some(format!("fused into {owner}")));
                continue;
            }
            if add_relu.contains(&i) {
                p.place(node, true, Some("fused into the Add before it".into()));
                continue;
            }
            if let Some(layer) = layers.get(node.name.as_str()) {
                p.flush()?;
                let in_shape = model.shapes.get(&layer.input).cloned().unwrap_or_default();
                let relu = layer.relu.is_some();
                let (kind, ins, outs) = if is_static {
                    let (src, in_q) = p.need_u8(&layer.input, &node.name)?;
                    let out_q = model
                        .activations
                        .get(&layer.output)
                        .cloned()
                        .ok_or_else(|| {
                            layer_err(
                                node,
                                format!("output {:?} was not calibrated", layer.output),
                            )
                        })?;
                    let sa = in_q.scales[0];
                    let bias = quantize_bias(
                        layer
                            .bias
                            .as_deref()
                            .unwrap_or(&vec![0.0; layer.weight_shape[0]]),
                        sa,
                        &layer.weight_q.scales,
                    );
                    let out = affine(&out_q);
                    let rq = Requantize {
                        bias,
                        multiplier: multipliers(sa, &layer.weight_q.scales, out.scale),
                        out,
                        qmin: if relu {
                            out.zero_point.max(out_q.spec.qmin) as u8
                        } else {
                            out_q.spec.qmin as u8
                        },
                        qmax: out_q.spec.qmax as u8,
                    };
                    let kind = match layer.kind {
                        LayerKind::Conv => Kind::Conv {
                            conv: pack_conv(layer, node, &in_shape)?,
                            rq,
                        },
                        LayerKind::Linear => Kind::Linear {
                            b: pack_linear(layer)?,
                            rq,
                        },
                    };
                    let dst = p.new_u8(&layer.output, out_q);
                    (kind, vec![src], vec![dst])
                } else {
                    let src = p.need_f32(&layer.input)?;
                    let act = DynAct {
                        spec: act_spec,
                        per_row: model.recipe.act_scales == ActScales::PerRow,
                    };
                    let w_scales = layer.weight_q.scales.clone();
                    let (kind, src) = match layer.kind {
                        LayerKind::Conv => (
                            Kind::DynConv {
                                conv: pack_conv(layer, node, &in_shape)?,
                                w_scales,
                                bias: layer.bias.clone(),
                                relu,
                                act,
                            },
                            src,
                        ),
                        LayerKind::Linear => {
                            let k = layer.weight_shape[1];
                            // Quantized once per tensor: every dynamic Linear has the
                            // same activation spec, so readers of one input share it.
                            let q = match p.dyn_slot.get(&layer.input) {
                                Some(&q) => q,
                                None => {
                                    let q = p.slot();
                                    p.steps.push(Step {
                                        name: format!("quantize {}", layer.input),
                                        kind: Kind::DynQuantize { act, k },
                                        ins: vec![src],
                                        outs: vec![q],
                                    });
                                    p.dyn_slot.insert(layer.input.clone(), q);
                                    q
                                }
                            };
                            (
                                Kind::DynLinear {
                                    b: pack_linear(layer)?,
                                    w_scales,
                                    bias: layer.bias.clone(),
                                    relu,
                                },
                                q,
                            )
                        }
                    };
                    let dst = p.new_f32(&layer.output);
                    (kind, vec![src], vec![dst])
                };
                p.steps.push(Step {
                    name: node.name.clone(),
                    kind,
                    ins,
                    outs,
                });
                p.place(node, true, None);
                continue;
            }
            if is_static {
                if let Some(fused) = Self::plan_u8_op(&mut p, i, node, &mut add_relu)? {
                    p.place(node, true, fused);
                    continue;
                }
            }
            p.region.push(i);
            let why = if is_static {
                "no int8 kernel for this op, or its input is not int8"
            } else {
                "dynamic quantization covers weighted layers only"
            };
            p.place(node, false, Some(why.into()));
        }
        p.flush()?;
        let outputs = graph
            .outputs
            .iter()
            .map(|o| p.need_f32(&o.name))
            .collect::<Result<Vec<_>>>()?;
        let mut traced: Vec<(String, usize)> =
            p.f32_slot.iter().map(|(k, &v)| (k.clone(), v)).collect();
        for (k, &v) in &p.u8_slot {
            if !p.f32_slot.contains_key(k) {
                traced.push((k.clone(), v));
            }
        }
        traced.sort();
        let steps = p
            .steps
            .into_iter()
            .map(|st| PlanStep {
                op: QStep {
                    name: st.name,
                    kind: st.kind,
                },
                inputs: st.ins.into_iter().map(Some).collect(),
                outputs: st.outs.into_iter().map(Some).collect(),
            })
            .collect();
        Ok(QExecutor {
            method,
            plan: Plan::new(p.nslots, steps, &outputs),
            inputs,
            outputs,
            traced,
            placements: p.placements,
            rung: qbench_kernels::isa::active(),
            threads,
        })
    }

    /// Plans a static u8 op whose inputs are already u8; `None` leaves it to fp32.
    fn plan_u8_op(
        p: &mut Planner,
        i: usize,
        node: &Node,
        add_relu: &mut HashSet<usize>,
    ) -> Result<Option<Option<String>>> {
        let model = p.model;
        let x = node.inputs.first().cloned().unwrap_or_default();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let have_u8 =
            |p: &Planner, t: &str| p.u8_slot.contains_key(t) && !p.f32_slot.contains_key(t);
        let out_rank = model.shapes.get(&out).map_or(0, Vec::len);
        let kind = match &node.op {
            Op::MaxPool { spatial }
                if have_u8(p, &x) && !spatial.ceil_mode && spatial.kernel.is_some() =>
            {
                Kind::MaxPool {
                    spatial: spatial.clone(),
                }
            }
            Op::AveragePool {
                spatial,
                count_include_pad,
            } if have_u8(p, &x)
                && !spatial.ceil_mode
                && spatial.kernel.is_some()
                && spatial.dilations == [1, 1] =>
            {
                Kind::AvgPool {
                    spatial: spatial.clone(),
                    count_include_pad: *count_include_pad,
                }
            }
            Op::GlobalAveragePool if have_u8(p, &x) => Kind::GlobalAvgPool,
            Op::Relu if have_u8(p, &x) => Kind::Relu,
            Op::Flatten { axis } if have_u8(p, &x) => Kind::Flatten { axis: *axis },
            Op::Reshape
                if have_u8(p, &x)
                    && out_rank != 4
                    && model.graph.initializers.contains_key(&node.inputs[1]) =>
            {
                let spec = model.graph.initializers[&node.inputs[1]]
                    .i64s()
                    .map(<[i64]>::to_vec)
                    .unwrap_or_default();
                Kind::Reshape { spec }
            }
            // A two-input Sum is an Add (ResNet exports use it for the residual).
            Op::Add | Op::Sum if node.inputs.len() == 2 => {
                let b = node.inputs.get(1).cloned().unwrap_or_default();
                // A ReLU that is the Add's only reader joins it as the clamp.
                let relu = p.readers.get(&out).and_then(|r| match r.as_slice() {
                    [j] if model.graph.nodes[*j].op == Op::Relu
                        && !p.graph_outputs.contains(&out) =>
                    {
                        Some(*j)
                    }
                    _ => None,
                });
                let final_out = match relu {
                    Some(j) => model.graph.nodes[j].outputs[0].clone(),
                    None => out.clone(),
                };
                let same_shape =
                    model.shapes.contains_key(&x) && model.shapes.get(&x) == model.shapes.get(&b);
                let Some(out_q) = model.activations.get(&final_out).cloned() else {
                    return Ok(None);
                };
                if !(have_u8(p, &x) && have_u8(p, &b) && same_shape) {
                    return Ok(None);
                }
                p.flush()?;
                let (sa, _) = p.need_u8(&x, &node.name)?;
                let (sb, _) = p.need_u8(&b, &node.name)?;
                let o = affine(&out_q);
                let qmin = if relu.is_some() {
                    o.zero_point.max(out_q.spec.qmin)
                } else {
                    out_q.spec.qmin
                };
                let qmax = out_q.spec.qmax;
                let dst = p.new_u8(&final_out, out_q);
                p.steps.push(Step {
                    name: node.name.clone(),
                    kind: Kind::Add {
                        out: o,
                        qmin: qmin as u8,
                        qmax: qmax as u8,
                    },
                    ins: vec![sa, sb],
                    outs: vec![dst],
                });
                if let Some(j) = relu {
                    add_relu.insert(j);
                }
                let _ = i;
                return Ok(Some(None));
            }
            _ => return Ok(None),
        };
        p.flush()?;
        let (src, qp) = p.need_u8(&x, &node.name)?;
        let dst = p.new_u8(&out, qp);
        p.steps.push(Step {
            name: node.name.clone(),
            kind,
            ins: vec![src],
            outs: vec![dst],
        });
        Ok(Some(None))
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// The kernel rung the int8 steps run on.
    /// The threads each GEMM and convolution runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn rung(&self) -> Rung {
        self.rung
    }

    /// Per node, in graph order: int8 or fp32, and why.
    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }

    /// Runs on `inputs` (f32, NCHW, the graph's input order); returns f32 outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let vals = self.execute(inputs, false)?;
        self.outputs
            .iter()
            .map(|&s| match &vals[s] {
                Some(QVal::F32(t)) => Ok(t.clone()),
                Some(QVal::U8(u)) => u.dequantize(),
                Some(QVal::Dyn(_)) | None => Err(QuantError::Config {
                    key: "runtime".into(),
                    msg: "an output was not computed".into(),
                }),
            })
            .collect()
    }

    /// Runs and returns every tensor the plan materialised, dequantized to f32 (NCHW):
    /// the quantized side of per-layer SQNR.
    pub fn run_traced(&self, inputs: &[Tensor]) -> Result<HashMap<String, Tensor>> {
        let vals = self.execute(inputs, true)?;
        let mut out = HashMap::new();
        for (name, s) in &self.traced {
            match &vals[*s] {
                Some(QVal::F32(t)) => {
                    out.insert(name.clone(), t.clone());
                }
                Some(QVal::U8(u)) => {
                    out.insert(name.clone(), u.dequantize()?);
                }
                Some(QVal::Dyn(_)) | None => {}
            }
        }
        Ok(out)
    }

    fn execute(&self, inputs: &[Tensor], keep_all: bool) -> Result<Vec<Option<QVal>>> {
        if inputs.len() != self.inputs.len() {
            return Err(QuantError::Config {
                key: "inputs".into(),
                msg: format!(
                    "the model has {} inputs, {} given",
                    self.inputs.len(),
                    inputs.len()
                ),
            });
        }
        let mut vals = self.plan.slots();
        for ((s, vi), t) in self.inputs.iter().zip(inputs) {
            if t.rank() != vi.dims.len() {
                return Err(QuantError::Config {
                    key: vi.name.clone(),
                    msg: format!("expected rank {}, got shape {:?}", vi.dims.len(), t.shape()),
                });
            }
            vals[*s] = Some(QVal::F32(t.clone()));
        }
        self.plan.run(
            vals,
            &[],
            keep_all,
            |st, args| {
                let step_err = |e: QuantError| match e {
                    QuantError::Layer { .. } => e,
                    other => QuantError::Layer {
                        layer: st.name.clone(),
                        op: "run".into(),
                        msg: other.to_string(),
                    },
                };
                // An fp32 sub-graph takes its inputs by value: those it reads last are
                // moved in, not copied.
                if let Kind::Fp32 { exec } = &st.kind {
                    return run_fp32(exec, args).map_err(step_err);
                }
                let refs: Vec<&QVal> = args.iter().flatten().map(|a| &**a).collect();
                run_step(&st.kind, &refs, self.threads).map_err(step_err)
            },
            |st, _| QuantError::Config {
                key: st.name.clone(),
                msg: "input not computed".into(),
            },
        )
    }
}

/// Runs an fp32 region on its inputs, moving in those it was handed by value.
fn run_fp32(exec: &Executor, args: Vec<Option<Cow<QVal>>>) -> Result<Vec<QVal>> {
    let ins = args
        .into_iter()
        .map(|a| match a {
            Some(Cow::Owned(QVal::F32(t))) => Ok(t),
            Some(Cow::Borrowed(QVal::F32(t))) => Ok(t.clone()),
            _ => Err(QuantError::Config {
                key: "runtime".into(),
                msg: "an input of an fp32 region is not f32".into(),
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(exec.run_owned(ins)?.into_iter().map(QVal::F32).collect())
}

fn want_u8(v: &QVal) -> Result<&U8Tensor> {
    match v {
        QVal::U8(u) => Ok(u),
        QVal::F32(_) | QVal::Dyn(_) => Err(QuantError::Config {
            key: "runtime".into(),
            msg: "expected a u8 activation, got f32".into(),
        }),
    }
}

fn want_f32(v: &QVal) -> Result<&Tensor> {
    match v {
        QVal::F32(t) => Ok(t),
        QVal::U8(_) | QVal::Dyn(_) => Err(QuantError::Config {
            key: "runtime".into(),
            msg: "expected an f32 activation, got u8".into(),
        }),
    }
}

fn pool_window(spatial: &Spatial, h: usize, w: usize) -> Window {
    let kernel = spatial.kernel.unwrap_or([1, 1]);
    Window::new(kernel[0], kernel[1])
        .stride(spatial.strides[0], spatial.strides[1])
        .dilation(spatial.dilations[0], spatial.dilations[1])
        .pads(spatial.resolve_pads(kernel, h, w))
}

fn nhwc_out(shape: Nhwc, q: Affine, data: Vec<u8>) -> QVal {
    QVal::U8(U8Tensor {
        data,
        shape: vec![shape.n, shape.h, shape.w, shape.c],
        nhwc: true,
        q,
    })
}

/// Quantizes f32 rows with per-tensor or per-row parameters for a dynamic layer, on the
/// kernels' vector quantizer (bit-exact with `qparams::quantize`). Per row, on several
/// threads, the rows are shared out whole (each row's parameters depend on it alone).
fn quantize_dynamic(
    x: &[f32],
    rows: usize,
    k: usize,
    act: DynAct,
    threads: usize,
) -> (Vec<u8>, Vec<f32>, Vec<i32>) {
    let mut q = vec![0u8; x.len()];
    let quantize = |x: &[f32], q: &mut [u8]| {
        let (s, z) = act.qparams(x);
        qbench_kernels::quantize::quantize_u8(x, s, z, act.spec.qmin as u8, act.spec.qmax as u8, q);
        (s, z)
    };
    if !act.per_row {
        let (s, z) = quantize(x, &mut q);
        return (q, vec![s], vec![z]);
    }
    let params: Vec<(f32, i32)> = if k == 0 {
        (0..rows).map(|_| quantize(&[], &mut [])).collect()
    } else if threads > 1 && rows > 1 && x.len() >= 1 << 14 {
        x.par_chunks(k)
            .zip(q.par_chunks_mut(k))
            .with_min_len(rows.div_ceil(threads))
            .map(|(x, q)| quantize(x, q))
            .collect()
    } else {
        x.chunks(k)
            .zip(q.chunks_mut(k))
            .map(|(x, q)| quantize(x, q))
            .collect()
    };
    let (scales, zps) = params.into_iter().unzip();
    (q, scales, zps)
}

fn run_step(kind: &Kind, args: &[&QVal], threads: usize) -> Result<Vec<QVal>> {
    Ok(match kind {
        Kind::Quantize { q, qmin, qmax } => {
            let t = want_f32(args[0])?;
            check_finite("input", "activations", t.f32s()?)?;
            vec![QVal::U8(quantize_tensor(t, *q, *qmin, *qmax)?)]
        }
        Kind::Dequantize => vec![QVal::F32(want_u8(args[0])?.dequantize()?)],
        Kind::Conv { conv, rq } => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let os = conv.output_shape(shape)?;
            let mut out = vec![0u8; os.len()];
            conv_requant(
                &x.data,
                shape,
                x.q.zero_point,
                conv,
                &rq.params(),
                &mut out,
                threads,
            )?;
            vec![nhwc_out(os, rq.out, out)]
        }
        Kind::Linear { b, rq } => {
            let x = want_u8(args[0])?;
            let k = b.k();
            let rows = x.data.len() / k.max(1);
            let mut out = vec![0u8; rows * b.n()];
            let a = MatA::new(&x.data, rows, k, x.q.zero_point);
            qbench_kernels::gemm::gemm_requant(&a, b, &rq.params(), &mut out, b.n(), threads)?;
            let mut shape = x.logical_shape();
            *shape.last_mut().unwrap_or(&mut 0) = b.n();
            vec![QVal::U8(U8Tensor {
                data: out,
                shape,
                nhwc: false,
                q: rq.out,
            })]
        }
        Kind::DynQuantize { act, k } => {
            let t = want_f32(args[0])?;
            let x = t.f32s()?;
            check_finite("input", "activations", x)?;
            let rows = x.len() / (*k).max(1);
            if rows * k != x.len() {
                return Err(QuantError::Config {
                    key: "runtime".into(),
                    msg: format!("input shape {:?} does not end in {k}", t.shape()),
                });
            }
            let (data, scales, zero_points) = quantize_dynamic(x, rows, *k, *act, threads);
            vec![QVal::Dyn(DynU8 {
                data,
                shape: t.shape().to_vec(),
                scales,
                zero_points,
            })]
        }
        Kind::DynLinear {
            b,
            w_scales,
            bias,
            relu,
        } => {
            let QVal::Dyn(x) = args[0] else {
                return Err(QuantError::Config {
                    key: "runtime".into(),
                    msg: "a dynamic Linear expects its quantized input".into(),
                });
            };
            let k = b.k();
            let rows = x.data.len() / k.max(1);
            let per_row = x.scales.len() > 1;
            let a = MatA {
                data: &x.data,
                rows,
                cols: k,
                stride: k,
                zero_point: if per_row {
                    ActZeroPoints::PerRow(&x.zero_points)
                } else {
                    ActZeroPoints::PerTensor(x.zero_points[0])
                },
            };
            let p = Dequant {
                a_scale: if per_row {
                    Scales::PerRow(&x.scales)
                } else {
                    Scales::PerTensor(x.scales[0])
                },
                b_scale: w_scales,
                bias: bias.as_deref(),
            };
            let mut out = vec![0f32; rows * b.n()];
            qbench_kernels::gemm::gemm_dequant(&a, b, &p, &mut out, b.n(), threads)?;
            if *relu {
                out.iter_mut()
                    .for_each(|v| *v = qbench_models::exec::relu(*v));
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().unwrap_or(&mut 0) = b.n();
            vec![QVal::F32(Tensor::new(shape, out)?)]
        }
        Kind::DynConv {
            conv,
            w_scales,
            bias,
            relu,
            act,
        } => {
            let t = want_f32(args[0])?;
            check_finite("input", "activations", t.f32s()?)?;
            let (s, z) = act.qparams(t.f32s()?);
            let x = quantize_tensor(t, Affine::new(s, z), act.spec.qmin, act.spec.qmax)?;
            let shape = x.nhwc_dims()?;
            let os = conv.output_shape(shape)?;
            let mut out = vec![0f32; os.len()];
            let p = Dequant {
                a_scale: Scales::PerTensor(s),
                b_scale: w_scales,
                bias: bias.as_deref(),
            };
            conv_dequant(&x.data, shape, z, conv, &p, &mut out, threads)?;
            if *relu {
                out.iter_mut()
                    .for_each(|v| *v = qbench_models::exec::relu(*v));
            }
            let nhwc = Tensor::new(vec![os.n, os.h, os.w, os.c], out)?;
            vec![QVal::F32(nhwc.transposed(&[0, 3, 1, 2])?)]
        }
        Kind::MaxPool { spatial } => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let window = pool_window(spatial, shape.h, shape.w);
            let (oh, ow) = window.output_hw(shape.h, shape.w)?;
            let mut out = vec![0u8; shape.n * oh * ow * shape.c];
            let (os, _) = pool::max_pool(&x.data, shape, &window, &mut out)?;
            vec![nhwc_out(os, x.q, out)]
        }
        Kind::AvgPool {
            spatial,
            count_include_pad,
        } => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let window = pool_window(spatial, shape.h, shape.w);
            let (oh, ow) = window.output_hw(shape.h, shape.w)?;
            let mut out = vec![0u8; shape.n * oh * ow * shape.c];
            let q = PoolQuant {
                in_q: x.q,
                out_q: x.q,
                qmin: 0,
                qmax: 255,
            };
            let (os, _) =
                pool::avg_pool(&x.data, shape, &window, *count_include_pad, &q, &mut out)?;
            vec![nhwc_out(os, x.q, out)]
        }
        Kind::GlobalAvgPool => {
            let x = want_u8(args[0])?;
            let shape = x.nhwc_dims()?;
            let mut out = vec![0u8; shape.n * shape.c];
            let q = PoolQuant {
                in_q: x.q,
                out_q: x.q,
                qmin: 0,
                qmax: 255,
            };
            let (os, _) = pool::global_avg_pool(&x.data, shape, &q, &mut out)?;
            vec![nhwc_out(os, x.q, out)]
        }
        Kind::Add { out, qmin, qmax } => {
            let (a, b) = (want_u8(args[0])?, want_u8(args[1])?);
            if a.shape != b.shape || a.nhwc != b.nhwc {
                return Err(QuantError::Config {
                    key: "Add".into(),
                    msg: format!("operand shapes differ: {:?} and {:?}", a.shape, b.shape),
                });
            }
            let q = AddQuant {
                a_q: a.q,
                b_q: b.q,
                out_q: *out,
                qmin: *qmin,
                qmax: *qmax,
            };
            let mut data = vec![0u8; a.data.len()];
            eltwise::add(&a.data, &b.data, &q, &mut data)?;
            vec![QVal::U8(U8Tensor {
                data,
                shape: a.shape.clone(),
                nhwc: a.nhwc,
                q: *out,
            })]
        }
        Kind::Relu => {
            let x = want_u8(args[0])?;
            let floor = x.q.zero_point.clamp(0, 255) as u8;
            let mut y = x.clone();
            y.data.iter_mut().for_each(|v| *v = (*v).max(floor));
            vec![QVal::U8(y)]
        }
        Kind::Flatten { axis } => {
            let x = want_u8(args[0])?;
            let logical = x.logical_shape();
            let r = logical.len() as i64;
            let ax = if *axis < 0 { axis + r } else { *axis };
            if !(0..=r).contains(&ax) {
                return Err(QuantError::Config {
                    key: "Flatten".into(),
                    msg: format!("axis {axis} out of range for rank {r}"),
                });
            }
            let ax = ax as usize;
            vec![QVal::U8(U8Tensor {
                data: x.plain_data(),
                shape: vec![
                    logical[..ax].iter().product(),
                    logical[ax..].iter().product(),
                ],
                nhwc: false,
                q: x.q,
            })]
        }
        Kind::Reshape { spec } => {
            let x = want_u8(args[0])?;
            let target = reshape_target(&x.logical_shape(), spec)?;
            vec![QVal::U8(U8Tensor {
                data: x.plain_data(),
                shape: target,
                nhwc: false,
                q: x.q,
            })]
        }
        Kind::Fp32 { exec } => {
            run_fp32(exec, args.iter().map(|v| Some(Cow::Borrowed(*v))).collect())?
        }
    })
}
