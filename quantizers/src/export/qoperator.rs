//! The QOperator form: QuantizeLinear at the input, QLinearConv for int8 convolutions
//! (int32 bias, per-channel weight scales), MatMulInteger + rescale for int8 Linear
//! layers, MaxPool / Flatten / Reshape directly on u8, DequantizeLinear → float op →
//! QuantizeLinear around ReLU, Add and average pools, fp32 fallback nodes as they are,
//! DequantizeLinear at the outputs.
//!
//! Why MatMulInteger for Linear: QLinearMatMul has no bias input, and adding a float bias
//! after it would round twice. `MatMulInteger → Add(bias_i32) → Cast → Mul(M) → Clip →
//! QuantizeLinear(scale 1, zero point z_out)` is the executor's requantization
//! (`q = clamp(round_half_even((acc + bias) as f32 · M) + z_out)`) spelled in ONNX ops,
//! with the same f32 multiplier M.
//!
//! Why a Clip after some quantizing ops: ONNX u8 ops saturate to [0, 255], while fbgemm's
//! reduce_range activations live in [0, 127] (and a fused ReLU clamps at the zero
//! point). Where the executor's clamp is narrower than [0, 255], a u8 Clip follows.
//!
//! QLinearAdd / QLinearGlobalAveragePool (com.microsoft) are not used: tract-onnx 0.23
//! has no com.microsoft domain ops, so those go through float.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::{
    f32_tensor, i32_tensor, i8_tensor, node, proto_nodes_per_node, require_static, u8_tensor,
};
use crate::error::{QuantError, Result};
use crate::model::{LayerKind, QLayer, QuantizedModel};
use crate::qparams::{quantize_bias, QParams};
use crate::runtime::{multipliers, QExecutor};
use qbench_models::ir::Op;

/// The u8 form of tensor `t` in the exported graph.
pub fn u8_name(t: &str) -> String {
    format!("{t}::u8")
}

struct Builder<'m> {
    model: &'m QuantizedModel,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    init_names: HashSet<String>,
    /// Tensors available as u8, with their qparams.
    u8q: HashMap<String, QParams>,
    /// Tensors available as f32 (graph inputs, initializers, fp32 results).
    f32s: HashSet<String>,
}

impl<'m> Builder<'m> {
    fn init(&mut self, t: pb::TensorProto) -> String {
        let name = t.name.clone();
        if self.init_names.insert(name.clone()) {
            self.inits.push(t);
        }
        name
    }

    /// Scale and zero-point initializers of a per-tensor u8 activation.
    fn qparams_inits(&mut self, t: &str, qp: &QParams) -> (String, String) {
        let s = self.init(f32_tensor(&format!("{t}::scale"), &[], &[qp.scales[0]]));
        let z = self.init(u8_tensor(
            &format!("{t}::zp"),
            &[],
            &[qp.zero_points[0] as u8],
        ));
        (s, z)
    }

    /// Appends a u8 Clip to `[lo, hi]` unless that is the full u8 range; returns the name
    /// holding the clamped value (`out`).
    fn clamp_u8(&mut self, raw: String, out: String, lo: i32, hi: i32, at: &str) -> String {
        if (lo, hi) == (0, 255) {
            if let Some(last) = self.nodes.last_mut() {
                for o in &mut last.output {
                    if *o == raw {
                        *o = out.clone();
                    }
                }
            }
            return out;
        }
        let lo = self.init(u8_tensor(&format!("{at}::clip_lo"), &[], &[lo as u8]));
        let hi = self.init(u8_tensor(&format!("{at}::clip_hi"), &[], &[hi as u8]));
        self.nodes.push(node(
            format!("{at}::clip"),
            "Clip",
            vec![raw, lo, hi],
            vec![out.clone()],
        ));
        out
    }

    fn need_u8(&mut self, t: &str, reader: &str) -> Result<QParams> {
        if let Some(q) = self.u8q.get(t) {
            return Ok(q.clone());
        }
        let qp = self
            .model
            .activations
            .get(t)
            .cloned()
            .ok_or_else(|| QuantError::Layer {
                layer: reader.to_string(),
                op: "QuantizeLinear".into(),
                msg: format!("no activation qparams for its input {t:?} (not calibrated)"),
            })?;
        self.need_f32(t)?;
        let (s, z) = self.qparams_inits(t, &qp);
        let raw = format!("{t}::u8raw");
        self.nodes.push(node(
            format!("{t}::quantize"),
            "QuantizeLinear",
            vec![t.into(), s, z],
            vec![raw.clone()],
        ));
        self.clamp_u8(
            raw,
            u8_name(t),
            qp.spec.qmin,
            qp.spec.qmax,
            &format!("{t}::quantize"),
        );
        self.u8q.insert(t.to_string(), qp.clone());
        Ok(qp)
    }

    fn need_f32(&mut self, t: &str) -> Result<()> {
        if self.f32s.contains(t) {
            return Ok(());
        }
        let Some(qp) = self.u8q.get(t).cloned() else {
            return Err(QuantError::Config {
                key: t.to_string(),
                msg: "tensor is read before it is computed".into(),
            });
        };
        let (s, z) = self.qparams_inits(t, &qp);
        self.nodes.push(node(
            format!("{t}::dequantize"),
            "DequantizeLinear",
            vec![u8_name(t), s, z],
            vec![t.into()],
        ));
        self.f32s.insert(t.to_string());
        Ok(())
    }

    /// A static int8 layer: QLinearConv, or MatMulInteger + rescale for Linear.
    fn layer(&mut self, layer: &QLayer, proto: &pb::NodeProto) -> Result<()> {
        let in_q = self.need_u8(&layer.input, &layer.node)?;
        let out_q = self
            .model
            .activations
            .get(&layer.output)
            .cloned()
            .ok_or_else(|| QuantError::Layer {
                layer: layer.node.clone(),
                op: proto.op_type.clone(),
                msg: format!("output {:?} was not calibrated", layer.output),
            })?;
        let c_out = layer.weight_shape[0];
        let sw = &layer.weight_q.scales;
        if layer.weight_q.zero_points.iter().any(|&z| z != 0) {
            return Err(QuantError::Layer {
                layer: layer.node.clone(),
                op: proto.op_type.clone(),
                msg: "weight zero points other than 0 are not exported".into(),
            });
        }
        let sa = in_q.scales[0];
        let bias = quantize_bias(layer.bias.as_deref().unwrap_or(&vec![0.0; c_out]), sa, sw);
        let (lo, hi) = {
            let zo = out_q.zero_points[0];
            let lo = if layer.relu.is_some() {
                zo.max(out_q.spec.qmin)
            } else {
                out_q.spec.qmin
            };
            (lo, out_q.spec.qmax)
        };
        let p = |s: &str| format!("{}::{s}", layer.node);
        let (xs, xz) = self.qparams_inits(&layer.input, &in_q);
        let (ys, yz) = self.qparams_inits(&layer.output, &out_q);
        // Per-tensor scales are scalars, per-channel ones 1-D over the output channels.
        let sdims: Vec<usize> = if sw.len() == 1 {
            vec![]
        } else {
            vec![sw.len()]
        };
        match layer.kind {
            LayerKind::Conv => {
                let w = self.init(i8_tensor(&p("w"), &layer.weight_shape, &layer.weight));
                let ws = self.init(f32_tensor(&p("w_scale"), &sdims, sw));
                let wz = self.init(i8_tensor(&p("w_zp"), &sdims, &vec![0; sw.len()]));
                let b = self.init(i32_tensor(&p("bias_i32"), &[c_out], &bias));
                let raw = p("u8raw");
                self.nodes.push(pb::NodeProto {
                    name: layer.node.clone(),
                    op_type: "QLinearConv".into(),
                    input: vec![u8_name(&layer.input), xs, xz, w, ws, wz, ys, yz, b],
                    output: vec![raw.clone()],
                    attribute: proto.attribute.clone(),
                    ..Default::default()
                });
                self.clamp_u8(raw, u8_name(&layer.output), lo, hi, &layer.node);
            }
            LayerKind::Linear => {
                let [n, k] = [layer.weight_shape[0], layer.weight_shape[1]];
                // MatMulInteger wants B as [k, n]; ours is [n, k].
                let mut wt = vec![0i8; n * k];
                for r in 0..n {
                    for c in 0..k {
                        wt[c * n + r] = layer.weight[r * k + c];
                    }
                }
                let w = self.init(i8_tensor(&p("w"), &[k, n], &wt));
                let b = self.init(i32_tensor(&p("bias_i32"), &[n], &bias));
                let zo = out_q.zero_points[0];
                let m = multipliers(sa, sw, out_q.scales[0]);
                let m = self.init(f32_tensor(&p("multiplier"), &sdims, &m));
                // Clamp in float before rounding: with integer bounds the same as after.
                let clo = self.init(f32_tensor(&p("clip_lo"), &[], &[(lo - zo) as f32]));
                let chi = self.init(f32_tensor(&p("clip_hi"), &[], &[(hi - zo) as f32]));
                let one = self.init(f32_tensor(&p("unit_scale"), &[], &[1.0]));
                let zp = self.init(u8_tensor(&p("out_zp"), &[], &[zo as u8]));
                let mut x = u8_name(&layer.input);
                if self
                    .model
                    .shapes
                    .get(&layer.input)
                    .is_some_and(|s| s.len() != 2)
                {
                    // The executor reads any input as rows of k.
                    let shape = self.init(qbench_models::onnx::export::tensor_to_proto(
                        &p("rows_shape"),
                        &qbench_models::tensor::Tensor::from_i64s(vec![-1, k as i64]),
                    ));
                    self.nodes
                        .push(node(p("rows"), "Reshape", vec![x, shape], vec![p("rows")]));
                    x = p("rows");
                }
                let chain: [(&str, Vec<String>); 6] = [
                    ("MatMulInteger", vec![x, w, xz]),
                    ("Add", vec![p("acc"), b]),
                    ("Cast", vec![p("acc_bias")]),
                    ("Mul", vec![p("acc_f32"), m]),
                    ("Clip", vec![p("scaled"), clo, chi]),
                    ("QuantizeLinear", vec![p("clipped"), one, zp]),
                ];
                let outs = ["acc", "acc_bias", "acc_f32", "scaled", "clipped"];
                for (i, (op, ins)) in chain.into_iter().enumerate() {
                    let out = outs.get(i).map_or_else(|| u8_name(&layer.output), |o| p(o));
                    let mut nd = node(
                        if op == "MatMulInteger" {
                            layer.node.clone()
                        } else {
                            p(&op.to_lowercase())
                        },
                        op,
                        ins,
                        vec![out],
                    );
                    if op == "Cast" {
                        nd.attribute.push(pb::AttributeProto {
                            name: "to".into(),
                            r#type: pb::attribute_proto::AttributeType::Int as i32,
                            i: pb::tensor_proto::DataType::Float as i64,
                            ..Default::default()
                        });
                    }
                    self.nodes.push(nd);
                }
            }
        }
        self.u8q.insert(layer.output.clone(), out_q);
        Ok(())
    }

    /// `op` in float between a dequantize of `inputs` and a quantize with `out_q`.
    fn through_float(
        &mut self,
        protos: &[pb::NodeProto],
        inputs: &[String],
        out: &str,
        out_q: QParams,
        lo: i32,
    ) -> Result<()> {
        for t in inputs {
            self.need_f32(t)?;
        }
        // The float result is not `out`: like the executor, later float readers see the
        // dequantized u8 value.
        let pre = format!("{out}::f32pre");
        let mut protos = protos.to_vec();
        if let Some(last) = protos.last_mut() {
            last.output = vec![pre.clone()];
        }
        self.nodes.extend(protos);
        let (s, z) = self.qparams_inits(out, &out_q);
        let raw = format!("{out}::u8raw");
        self.nodes.push(node(
            format!("{out}::quantize"),
            "QuantizeLinear",
            vec![pre, s, z],
            vec![raw.clone()],
        ));
        self.clamp_u8(
            raw,
            u8_name(out),
            lo,
            out_q.spec.qmax,
            &format!("{out}::quantize"),
        );
        self.u8q.insert(out.to_string(), out_q);
        Ok(())
    }
}

/// The QOperator form of a static model (module docs).
pub fn to_model_proto(model: &QuantizedModel) -> Result<pb::ModelProto> {
    Ok(build(model)?.0)
}

/// The QOperator form and the tensors it holds in u8, with their qparams (the QDQ form
/// puts its QuantizeLinear/DequantizeLinear pairs on exactly those).
pub(crate) fn build(model: &QuantizedModel) -> Result<(pb::ModelProto, HashMap<String, QParams>)> {
    require_static(model)?;
    let exec = QExecutor::new(model)?;
    let placements = exec.placements();
    let mut base = qbench_models::onnx::to_model_proto(&model.graph);
    let per_node = proto_nodes_per_node(model, &base);
    let g = base
        .graph
        .take()
        .expect("models' exporter always writes a graph");
    let graph = &model.graph;
    let mut b = Builder {
        model,
        nodes: Vec::new(),
        inits: Vec::new(),
        init_names: HashSet::new(),
        u8q: HashMap::new(),
        f32s: graph
            .inputs
            .iter()
            .map(|v| v.name.clone())
            .chain(g.initializer.iter().map(|t| t.name.clone()))
            .collect(),
    };
    let base_inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let layers: HashMap<&str, &QLayer> =
        model.layers.iter().map(|l| (l.node.as_str(), l)).collect();
    for (i, n) in graph.nodes.iter().enumerate() {
        let pl = &placements[i];
        let protos = &per_node[i];
        if pl
            .note
            .as_deref()
            .is_some_and(|s| s.starts_with("fused into"))
        {
            continue;
        }
        if let Some(layer) = layers.get(n.name.as_str()) {
            b.layer(layer, protos.last().expect("one proto node per layer"))?;
            continue;
        }
        let x = n.inputs.first().cloned().unwrap_or_default();
        let out = n.outputs.first().cloned().unwrap_or_default();
        if pl.int8 {
            match &n.op {
                Op::MaxPool { .. } | Op::Flatten { .. } | Op::Reshape => {
                    let qp = b.need_u8(&x, &n.name)?;
                    let mut p = protos.last().expect("one proto node").clone();
                    p.input[0] = u8_name(&x);
                    p.output = vec![u8_name(&out)];
                    b.nodes.push(p);
                    b.u8q.insert(out, qp);
                }
                Op::Relu | Op::AveragePool { .. } | Op::GlobalAveragePool => {
                    // Same qparams in and out, as the executor's u8 kernels.
                    let qp = b.need_u8(&x, &n.name)?;
                    let lo = qp.spec.qmin;
                    b.through_float(protos, &[x], &out, qp, lo)?;
                }
                // A two-input Sum is an Add (the executor runs both on the u8 add kernel).
                Op::Add | Op::Sum => {
                    let relu = graph.nodes.iter().zip(placements).find(|(m, p)| {
                        m.op == Op::Relu
                            && m.inputs.first() == Some(&out)
                            && p.note.as_deref() == Some("fused into the Add before it")
                    });
                    let mut protos = protos.clone();
                    let final_out = match relu {
                        Some((m, _)) => {
                            let j = graph
                                .nodes
                                .iter()
                                .position(|k| k.name == m.name)
                                .expect("found above");
                            protos.extend(per_node[j].iter().cloned());
                            m.outputs[0].clone()
                        }
                        None => out.clone(),
                    };
                    let out_q = model.activations.get(&final_out).cloned().ok_or_else(|| {
                        QuantError::Layer {
                            layer: n.name.clone(),
                            op: n.op.onnx_name().into(),
                            msg: format!("output {final_out:?} was not calibrated"),
                        }
                    })?;
                    let lo = if relu.is_some() {
                        out_q.zero_points[0].max(out_q.spec.qmin)
                    } else {
                        out_q.spec.qmin
                    };
                    b.through_float(&protos, &n.inputs, &final_out, out_q, lo)?;
                }
                op => {
                    return Err(QuantError::Layer {
                        layer: n.name.clone(),
                        op: op.onnx_name().into(),
                        msg: "runs in int8 in the executor but has no QOperator export".into(),
                    })
                }
            }
            continue;
        }
        // fp32 fallback: the node as models' exporter writes it, on float inputs.
        for t in n.inputs.iter().filter(|t| !t.is_empty()) {
            if !base_inits.contains_key(t.as_str()) {
                b.need_f32(t)?;
            }
        }
        b.nodes.extend(protos.iter().cloned());
        b.f32s.extend(n.outputs.iter().cloned());
    }
    for o in &graph.outputs {
        b.need_f32(&o.name)?;
    }
    // Keep only the float initializers some node still reads (int8 layers' biases are
    // now int32 initializers of their own).
    let used: HashSet<&str> = b
        .nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializer: Vec<pb::TensorProto> = g
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    initializer.extend(b.inits);
    let mut out = base;
    out.graph = Some(pb::GraphProto {
        name: format!("{}:qoperator", g.name),
        node: b.nodes,
        initializer,
        input: g.input,
        output: g.output,
        ..Default::default()
    });
    // The default-domain opset 14 covers QLinearConv, MatMulInteger, u8 MaxPool and Clip.
    Ok((out, b.u8q))
}
