//! Planning a quantized model: which form (f32, u8, dynamically quantized) of each
//! tensor lives in which slot, the int8 step of each layer, quantize and dequantize steps
//! where a value changes domain, and consecutive fp32 nodes grouped into one sub-graph.

use std::collections::{HashMap, HashSet};

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Dim, Graph, Node, Op, ValueInfo};
use qbench_models::plan::{Plan, PlanStep};

use super::pack::{affine, layer_err, multipliers, pack_conv, pack_linear, Requantize};
use super::steps::{Kind, Step};
use super::values::DynAct;
use super::{Placement, QStep};
use crate::error::{QuantError, Result};
use crate::model::{ActScales, LayerKind, Method, QLayer, QuantizedModel};
use crate::qparams::{quantize_bias, QParams, QSpec};

/// A planned model: the steps over their slots, where the graph inputs go and the
/// outputs come from, the slot of every traced tensor, and per node where it runs.
pub(super) struct Planned {
    pub(super) plan: Plan<QStep>,
    pub(super) inputs: Vec<(usize, ValueInfo)>,
    pub(super) outputs: Vec<usize>,
    pub(super) traced: Vec<(String, usize)>,
    pub(super) placements: Vec<Placement>,
}

/// The plan under construction: which form of each tensor lives in which slot.
pub(super) struct Planner<'m> {
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
    pub(super) fn slot(&mut self) -> usize {
        self.nslots += 1;
        self.nslots - 1
    }

    pub(super) fn need_f32(&mut self, t: &str) -> Result<usize> {
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

    pub(super) fn need_u8(&mut self, t: &str, reader: &str) -> Result<(usize, QParams)> {
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

    pub(super) fn new_u8(&mut self, t: &str, qp: QParams) -> usize {
        let s = self.slot();
        self.u8_slot.insert(t.to_string(), s);
        self.u8_q.insert(t.to_string(), qp);
        s
    }

    pub(super) fn new_f32(&mut self, t: &str) -> usize {
        let s = self.slot();
        self.f32_slot.insert(t.to_string(), s);
        s
    }

    pub(super) fn place(&mut self, node: &Node, int8: bool, note: Option<String>) {
        self.placements.push(Placement {
            node: node.name.clone(),
            op: node.op.onnx_name().to_string(),
            int8,
            note,
        });
    }

    /// Emits the pending fp32 nodes as one sub-graph step.
    pub(super) fn flush(&mut self) -> Result<()> {
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

pub(super) fn plan(model: &QuantizedModel, threads: usize) -> Result<Planned> {
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
            if let Some(fused) = plan_u8_op(&mut p, i, node, &mut add_relu)? {
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
    Ok(Planned {
        plan: Plan::new(p.nslots, steps, &outputs),
        inputs,
        outputs,
        traced,
        placements: p.placements,
    })
}

/// Plans a static u8 op whose inputs are already u8; `None` leaves it to fp32.
pub(super) fn plan_u8_op(
    p: &mut Planner,
    i: usize,
    node: &Node,
    add_relu: &mut HashSet<usize>,
) -> Result<Option<Option<String>>> {
    let model = p.model;
    let x = node.inputs.first().cloned().unwrap_or_default();
    let out = node.outputs.first().cloned().unwrap_or_default();
    let have_u8 = |p: &Planner, t: &str| p.u8_slot.contains_key(t) && !p.f32_slot.contains_key(t);
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
                [j] if model.graph.nodes[*j].op == Op::Relu && !p.graph_outputs.contains(&out) => {
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
