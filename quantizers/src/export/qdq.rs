//! The QDQ form (ONNX Runtime's and TensorRT's exchange format): the fused float graph,
//! with a QuantizeLinear → DequantizeLinear pair after every activation the executor holds
//! in u8 (the same set, with the same qparams, as the QOperator form), int8 weights as
//! initializers behind a DequantizeLinear (per-channel with `axis = 0`, for Conv and for
//! Linear weights stored `[n, k]` and transposed back as the original node expects), and
//! int32 biases behind a DequantizeLinear with scale `sa·sw`.
//!
//! fbgemm's reduce_range clamp at 127 is not expressible in QuantizeLinear (it saturates at
//! 255): where an activation's range is narrower than [0, 255], a float Clip to
//! `[(qmin − z)·s, (qmax − z)·s]` precedes its QuantizeLinear.

use std::collections::HashMap;

use tract_onnx::pb;

use super::{
    f32_tensor, i32_tensor, i8_tensor, node, proto_nodes_per_node, require_static, u8_tensor,
};
use crate::error::{QuantError, Result};
use crate::model::{LayerKind, QuantizedModel};
use crate::qparams::quantize_bias;
use qbench_models::ir::Op;

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// The QDQ form of a static model (module docs).
pub fn to_model_proto(model: &QuantizedModel) -> Result<pb::ModelProto> {
    require_static(model)?;
    let (_, u8q) = super::qoperator::build(model)?;
    let mut base = qbench_models::onnx::to_model_proto(&model.graph);
    let per_node = proto_nodes_per_node(model, &base);
    let mut g = base
        .graph
        .take()
        .expect("models' exporter always writes a graph");
    let mut nodes = Vec::new();
    let mut inits: Vec<pb::TensorProto> = Vec::new();
    // Q → DQ on `t`: the producer writes `t::f32pre`, readers keep reading `t`.
    let qdq = |t: &str, nodes: &mut Vec<pb::NodeProto>, inits: &mut Vec<pb::TensorProto>| {
        let key = t
            .strip_suffix("::dq")
            .filter(|k| u8q.contains_key(*k))
            .unwrap_or(t);
        let qp = &u8q[key];
        let s = format!("{t}::scale");
        let z = format!("{t}::zp");
        inits.push(f32_tensor(&s, &[], &[qp.scales[0]]));
        inits.push(u8_tensor(&z, &[], &[qp.zero_points[0] as u8]));
        let mut pre = format!("{key}::f32pre");
        let q = format!("{t}::u8");
        let (lo, hi) = (qp.spec.qmin, qp.spec.qmax);
        if (lo, hi) != (0, 255) {
            // QuantizeLinear saturates at [0, 255]; the executor clamps to the spec's
            // range (fbgemm's reduce_range: 127), so a float Clip to that range goes first.
            let z = qp.zero_points[0];
            let (cl, ch) = (format!("{t}::clip_lo"), format!("{t}::clip_hi"));
            inits.push(f32_tensor(&cl, &[], &[(lo - z) as f32 * qp.scales[0]]));
            inits.push(f32_tensor(&ch, &[], &[(hi - z) as f32 * qp.scales[0]]));
            let clipped = format!("{t}::clipped");
            nodes.push(node(
                format!("{t}::clip"),
                "Clip",
                vec![pre, cl, ch],
                vec![clipped.clone()],
            ));
            pre = clipped;
        }
        nodes.push(node(
            format!("{t}::quantize"),
            "QuantizeLinear",
            vec![pre, s.clone(), z.clone()],
            vec![q.clone()],
        ));
        nodes.push(node(
            format!("{t}::dequantize"),
            "DequantizeLinear",
            vec![q, s, z],
            vec![t.to_string()],
        ));
    };
    let rename = |t: &str| {
        if u8q.contains_key(t) {
            format!("{t}::f32pre")
        } else {
            t.to_string()
        }
    };
    // A graph input keeps its name, so its fake-quantized form is `{x}::dq` and its
    // readers are pointed there.
    let mut alias: HashMap<String, String> = HashMap::new();
    for vi in g.input.iter() {
        if u8q.contains_key(&vi.name) {
            let t = vi.name.clone();
            let dq = format!("{t}::dq");
            nodes.push(node(
                format!("{t}::identity"),
                "Identity",
                vec![t.clone()],
                vec![rename(&t)],
            ));
            qdq(&dq, &mut nodes, &mut inits);
            alias.insert(t, dq);
        }
    }
    for (i, n) in model.graph.nodes.iter().enumerate() {
        let mut protos = per_node[i].clone();
        if let Some(layer) = model.layer(&n.name) {
            let p = protos.last_mut().expect("one proto node per layer");
            let sw = &layer.weight_q.scales;
            let sdims: Vec<usize> = if sw.len() == 1 {
                vec![]
            } else {
                vec![sw.len()]
            };
            let w = format!("{}::w_int8", layer.node);
            let (ws, wz) = (
                format!("{}::w_scale", layer.node),
                format!("{}::w_zp", layer.node),
            );
            let wdq = format!("{}::w_dq", layer.node);
            let zps: Vec<i8> = layer
                .weight_q
                .zero_points
                .iter()
                .map(|&z| z as i8)
                .collect();
            inits.push(i8_tensor(&w, &layer.weight_shape, &layer.weight));
            inits.push(f32_tensor(&ws, &sdims, sw));
            inits.push(i8_tensor(&wz, &sdims, &zps));
            let mut dq = node(
                format!("{}::w_dequantize", layer.node),
                "DequantizeLinear",
                vec![w, ws, wz],
                vec![wdq.clone()],
            );
            if sw.len() > 1 {
                dq.attribute.push(int_attr("axis", 0));
            }
            nodes.push(dq);
            let mut weight_in = wdq;
            if layer.kind == LayerKind::Linear {
                // Stored [n, k]; the original node reads its weight as it was written.
                let trans_b = matches!(n.op, Op::Gemm { trans_b: true, .. });
                if !trans_b {
                    let t = format!("{}::w_dq_t", layer.node);
                    let mut tr = node(
                        format!("{}::w_transpose", layer.node),
                        "Transpose",
                        vec![weight_in],
                        vec![t.clone()],
                    );
                    tr.attribute.push(pb::AttributeProto {
                        name: "perm".into(),
                        r#type: pb::attribute_proto::AttributeType::Ints as i32,
                        ints: vec![1, 0],
                        ..Default::default()
                    });
                    nodes.push(tr);
                    weight_in = t;
                }
                if let Op::Gemm { alpha, .. } = n.op {
                    if alpha != 1.0 {
                        return Err(QuantError::Layer {
                            layer: n.name.clone(),
                            op: "Gemm".into(),
                            msg: "QDQ export of a Gemm with alpha != 1 is not implemented (alpha is folded into the int8 weight)".into(),
                        });
                    }
                }
            }
            if p.input.get(1) != Some(&layer.weight_name) {
                return Err(QuantError::Layer {
                    layer: n.name.clone(),
                    op: p.op_type.clone(),
                    msg: format!("weight input is not {:?}", layer.weight_name),
                });
            }
            p.input[1] = weight_in;
            if let Some(bias) = &layer.bias {
                let sa = u8q.get(&layer.input).map(|q| q.scales[0]).ok_or_else(|| {
                    QuantError::Layer {
                        layer: n.name.clone(),
                        op: p.op_type.clone(),
                        msg: format!("input {:?} is not quantized", layer.input),
                    }
                })?;
                let bq = quantize_bias(bias, sa, sw);
                let bs: Vec<f32> = (0..bias.len())
                    .map(|c| (sa as f64 * sw[if sw.len() == 1 { 0 } else { c }] as f64) as f32)
                    .collect();
                let (b, bsn, bzn, bdq) = (
                    format!("{}::bias_i32", layer.node),
                    format!("{}::bias_scale", layer.node),
                    format!("{}::bias_zp", layer.node),
                    format!("{}::bias_dq", layer.node),
                );
                inits.push(i32_tensor(&b, &[bias.len()], &bq));
                inits.push(f32_tensor(&bsn, &[bias.len()], &bs));
                inits.push(i32_tensor(&bzn, &[bias.len()], &vec![0; bias.len()]));
                let mut dq = node(
                    format!("{}::bias_dequantize", layer.node),
                    "DequantizeLinear",
                    vec![b, bsn, bzn],
                    vec![bdq.clone()],
                );
                dq.attribute.push(int_attr("axis", 0));
                nodes.push(dq);
                if p.input.len() > 2 {
                    p.input[2] = bdq;
                }
            }
        }
        let outs: Vec<String> = n
            .outputs
            .iter()
            .filter(|t| u8q.contains_key(*t))
            .cloned()
            .collect();
        if let Some(last) = protos.last_mut() {
            for o in &mut last.output {
                *o = rename(o);
            }
        }
        for p in &mut protos {
            for x in &mut p.input {
                if let Some(a) = alias.get(x) {
                    *x = a.clone();
                }
            }
        }
        nodes.extend(protos);
        for t in outs {
            qdq(&t, &mut nodes, &mut inits);
        }
    }
    let used: std::collections::HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializer: Vec<pb::TensorProto> = g
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    initializer.extend(inits);
    let mut seen = HashMap::new();
    initializer.retain(|t| seen.insert(t.name.clone(), ()).is_none());
    g.name = format!("{}:qdq", g.name);
    g.node = nodes;
    g.initializer = initializer;
    base.graph = Some(g);
    Ok(base)
}
