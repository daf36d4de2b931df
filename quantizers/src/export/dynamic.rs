//! The ONNX form of a dynamic model, as ONNX Runtime's `quantize_dynamic` writes it: each
//! int8 layer quantizes its f32 input on every call, multiplies in integers
//! (`MatMulInteger` for Linear, `ConvInteger` for Conv) and dequantizes with
//! `sa · sw[c]`, then adds the float bias; every other node is written as it is.
//!
//! The activation is quantized in plain ops, as the executor defines it for every scheme
//! (full-range u8, fbgemm's 7-bit `[0, 127]`, per tensor or per row): ReduceMin/ReduceMax
//! (over the last axis per row; from opset 18 the axes are an input) → Min/Max with 0 →
//! scale and zero point → `Clip(Round(x / scale) + zp, qmin, qmax)` → Cast to u8. Not
//! `DynamicQuantizeLinear`, for two reasons: it always uses 255 levels, so it cannot
//! express a 7-bit grid; and tract 0.23.9 computes `DynamicQuantizeLinear` →
//! `MatMulInteger` wrongly once a quantized value exceeds 127 (a row of 255s times 127s
//! over k = 64 gave 127·127·64, not 255·127·64; the same product from a Cast is exact).
//! A Linear multiplies its input as a matrix of rows (`[N, S, K]` is reshaped to
//! `[N·S, K]` and the output back), as the executor does. A per-tensor zero point goes
//! into `MatMulInteger`/`ConvInteger`; per row, `MatMulInteger` gets none and
//! `zp[m] · Σk w[k][n]` is subtracted in int32 (tract applies only one value of a per-row
//! zero point vector, and ONNX Runtime's fused kernel refuses one).
//!
//! The dequantization is `y = Cast<f32>(acc) · (sa · sw)` then `+ bias`, two f32
//! operations in the order of the kernels' dequantized-f32 contract.

use std::collections::HashSet;

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::{f32_tensor, i32_tensor, i8_tensor, node, proto_nodes_per_node};
use crate::error::{QuantError, Result};
use crate::model::{ActScales, LayerKind, Method, QLayer, QuantizedModel};
use crate::qparams::{QSpec, MIN_SCALE};

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

struct Builder {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    /// From opset 18 on, ReduceMin/ReduceMax take their axes as an input, not an
    /// attribute (an attribute there is an invalid model, which ONNX Runtime refuses).
    axes_as_input: bool,
}

impl Builder {
    fn push(&mut self, name: String, op: &str, inputs: Vec<String>, output: String) -> String {
        self.nodes
            .push(node(name, op, inputs, vec![output.clone()]));
        output
    }

    fn i64s(&mut self, name: String, v: Vec<i64>) -> String {
        self.init(qbench_models::onnx::export::tensor_to_proto(
            &name,
            &qbench_models::tensor::Tensor::from_i64s(v),
        ))
    }

    fn init(&mut self, t: pb::TensorProto) -> String {
        let name = t.name.clone();
        self.inits.push(t);
        name
    }

    /// Quantizes `x` on each call with `spec`; returns the names of the u8 tensor, the
    /// scale and the zero point (f32, integral).
    /// `per_row`: one scale per row over the last axis (the executor's per-token scales).
    fn quantize_dynamic(
        &mut self,
        p: &dyn Fn(&str) -> String,
        x: &str,
        spec: &QSpec,
        per_row: bool,
    ) -> (String, String, String) {
        // PyTorch's affine `_calculate_qparams`, as `QSpec::qparams_for_range`.
        let reduce = |b: &mut Builder, op: &str, out: &str| {
            let mut inputs = vec![x.to_string()];
            if per_row && b.axes_as_input {
                inputs.push(b.i64s(p(&format!("{out}_axes")), vec![-1]));
            }
            let mut n = node(p(out), op, inputs, vec![p(out)]);
            if per_row && !b.axes_as_input {
                n.attribute.push(ints_attr("axes", vec![-1]));
            }
            n.attribute.push(int_attr("keepdims", per_row as i64));
            b.nodes.push(n);
            p(out)
        };
        let lo = reduce(self, "ReduceMin", "x_min");
        let hi = reduce(self, "ReduceMax", "x_max");
        let zero = self.init(f32_tensor(&p("zero"), &[], &[0.0]));
        let lo = self.push(p("min_neg"), "Min", vec![lo, zero.clone()], p("min_neg"));
        let hi = self.push(p("max_pos"), "Max", vec![hi, zero], p("max_pos"));
        let range = self.push(p("range"), "Sub", vec![hi, lo.clone()], p("range"));
        let levels = self.init(f32_tensor(
            &p("levels"),
            &[],
            &[(spec.qmax - spec.qmin) as f32],
        ));
        let scale = self.push(p("scale_raw"), "Div", vec![range, levels], p("scale_raw"));
        let eps = self.init(f32_tensor(&p("min_scale"), &[], &[MIN_SCALE]));
        let scale = self.push(p("x_scale"), "Max", vec![scale, eps], p("x_scale"));
        // zp = clamp(qmin − round(min_neg / scale), qmin, qmax), kept in f32 (exact).
        let q_lo = self.init(f32_tensor(&p("qmin"), &[], &[spec.qmin as f32]));
        let q_hi = self.init(f32_tensor(&p("qmax"), &[], &[spec.qmax as f32]));
        let t = self.push(
            p("min_over_scale"),
            "Div",
            vec![lo, scale.clone()],
            p("min_over_scale"),
        );
        let t = self.push(p("min_rounded"), "Round", vec![t], p("min_rounded"));
        let t = self.push(p("zp_raw"), "Sub", vec![q_lo.clone(), t], p("zp_raw"));
        let zp_f = self.push(
            p("zp_f32"),
            "Clip",
            vec![t, q_lo.clone(), q_hi.clone()],
            p("zp_f32"),
        );
        // q = clamp(round(x / scale) + zp, qmin, qmax) as u8.
        let t = self.push(
            p("x_over_scale"),
            "Div",
            vec![x.to_string(), scale.clone()],
            p("x_over_scale"),
        );
        let t = self.push(p("x_rounded"), "Round", vec![t], p("x_rounded"));
        let t = self.push(p("x_shifted"), "Add", vec![t, zp_f.clone()], p("x_shifted"));
        let t = self.push(p("x_clipped"), "Clip", vec![t, q_lo, q_hi], p("x_clipped"));
        let cast_u8 = |b: &mut Builder, from: String, out: &str| {
            let mut n = node(p(out), "Cast", vec![from], vec![p(out)]);
            n.attribute.push(int_attr("to", DataType::Uint8 as i64));
            b.nodes.push(n);
            p(out)
        };
        let q = cast_u8(self, t, "x_u8");
        (q, scale, zp_f)
    }

    fn layer(
        &mut self,
        layer: &QLayer,
        proto: &pb::NodeProto,
        spec: &QSpec,
        per_row: bool,
    ) -> Result<()> {
        let fail = |msg: &str| QuantError::Layer {
            layer: layer.node.clone(),
            op: proto.op_type.clone(),
            msg: msg.to_string(),
        };
        if layer.relu.is_some() {
            return Err(fail("a fused ReLU in a dynamic model is not exported"));
        }
        if layer.weight_q.zero_points.iter().any(|&z| z != 0) {
            return Err(fail("weight zero points other than 0 are not exported"));
        }
        let p = |s: &str| format!("{}::{s}", layer.node);
        let sw = &layer.weight_q.scales;
        // The executor scales a conv's input per tensor even in per-row mode.
        let per_row = per_row && layer.kind == LayerKind::Linear;
        // A Linear's input is quantized and multiplied as a matrix of rows [M, K], as the
        // executor does: a transformer's [N, S, K] input is flattened first and the output
        // given back its leading dims at the end. MatMulInteger's per-row zero point is
        // defined for a 2-D A only, and tract computed a 3-D A with a runtime zero point
        // differently from ONNX Runtime and from us.
        let input = match layer.kind {
            LayerKind::Linear => {
                let k = layer.weight_shape[1] as i64;
                let rows = self.i64s(p("rows_shape"), vec![-1, k]);
                self.push(
                    p("rows"),
                    "Reshape",
                    vec![layer.input.clone(), rows],
                    p("rows"),
                )
            }
            LayerKind::Conv => layer.input.clone(),
        };
        let (xq, xs, xz_f) = self.quantize_dynamic(&p, &input, spec, per_row);
        let cast_to = |b: &mut Builder, from: String, out: &str, to: DataType| {
            let mut n = node(p(out), "Cast", vec![from], vec![p(out)]);
            n.attribute.push(int_attr("to", to as i64));
            b.nodes.push(n);
            p(out)
        };
        // Per tensor, the zero point goes into MatMulInteger/ConvInteger as ONNX intends.
        // Per row, MatMulInteger gets none and the correction zp[m] · Σk w[k][n] is
        // subtracted in int32 (exact): tract 0.23.9 applies only one zero point of a
        // per-row vector (a test whose rows all shared one zero point hid it), and ONNX
        // Runtime's fused kernel refuses a per-row zero point.
        let xz = (!per_row).then(|| cast_to(self, xz_f.clone(), "x_zp", DataType::Uint8));
        let acc = match layer.kind {
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
                match xz {
                    Some(xz) => self.push(
                        layer.node.clone(),
                        "MatMulInteger",
                        vec![xq, w, xz],
                        p("acc"),
                    ),
                    None => {
                        let raw = self.push(
                            layer.node.clone(),
                            "MatMulInteger",
                            vec![xq, w],
                            p("acc_raw"),
                        );
                        let col_sums: Vec<i32> = (0..n)
                            .map(|c| (0..k).map(|r| i32::from(wt[r * n + c])).sum())
                            .collect();
                        let sums = self.init(i32_tensor(&p("w_col_sums"), &[n], &col_sums));
                        let zp = cast_to(self, xz_f, "x_zp_i32", DataType::Int32);
                        let corr = self.push(p("zp_corr"), "Mul", vec![zp, sums], p("zp_corr"));
                        self.push(p("acc_sub"), "Sub", vec![raw, corr], p("acc"))
                    }
                }
            }
            LayerKind::Conv => {
                let w = self.init(i8_tensor(&p("w"), &layer.weight_shape, &layer.weight));
                let xz = xz.expect("a conv's input is quantized per tensor");
                self.nodes.push(pb::NodeProto {
                    name: layer.node.clone(),
                    op_type: "ConvInteger".into(),
                    input: vec![xq, w, xz],
                    output: vec![p("acc")],
                    attribute: proto.attribute.clone(),
                    ..Default::default()
                });
                p("acc")
            }
        };
        // Per-channel values broadcast along the output channel: the last axis of a
        // Linear output, axis 1 of a conv's NCHW output.
        let channel_dims = |len: usize| -> Vec<usize> {
            match (len, layer.kind) {
                (1, _) => vec![],
                (c, LayerKind::Linear) => vec![c],
                (c, LayerKind::Conv) => vec![c, 1, 1],
            }
        };
        let ws = self.init(f32_tensor(&p("w_scale"), &channel_dims(sw.len()), sw));
        let s = self.push(p("scale"), "Mul", vec![xs, ws], p("scale"));
        let mut cast = node(p("acc_f32"), "Cast", vec![acc], vec![p("acc_f32")]);
        cast.attribute.push(int_attr("to", DataType::Float as i64));
        self.nodes.push(cast);
        let out = proto.output[0].clone();
        // A Linear's [M, n] result goes to `out` through a Reshape to the input's leading
        // dims + [n]; a conv's result is the output itself.
        let last = match layer.kind {
            LayerKind::Linear => p("out_rows"),
            LayerKind::Conv => out.clone(),
        };
        match &layer.bias {
            Some(b) => {
                let y = self.push(p("dequant"), "Mul", vec![p("acc_f32"), s], p("dequant"));
                let bias = self.init(f32_tensor(&p("bias"), &channel_dims(b.len()), b));
                self.push(p("bias_add"), "Add", vec![y, bias], last.clone());
            }
            None => {
                self.push(p("dequant"), "Mul", vec![p("acc_f32"), s], last.clone());
            }
        }
        if layer.kind == LayerKind::Linear {
            let n = layer.weight_shape[0] as i64;
            let shape = self.push(
                p("in_shape"),
                "Shape",
                vec![layer.input.clone()],
                p("in_shape"),
            );
            let (zero, minus_one) = (
                self.i64s(p("lead_start"), vec![0]),
                self.i64s(p("lead_end"), vec![-1]),
            );
            let lead = self.push(
                p("lead_dims"),
                "Slice",
                vec![shape, zero, minus_one],
                p("lead_dims"),
            );
            let n = self.i64s(p("out_features"), vec![n]);
            let mut cat = node(
                p("out_shape"),
                "Concat",
                vec![lead, n],
                vec![p("out_shape")],
            );
            cat.attribute.push(int_attr("axis", 0));
            self.nodes.push(cat);
            self.push(p("unflatten"), "Reshape", vec![last, p("out_shape")], out);
        }
        Ok(())
    }
}

/// The ONNX form of a dynamic model (module docs).
pub fn to_model_proto(model: &QuantizedModel) -> Result<pb::ModelProto> {
    if model.recipe.method != Method::Dynamic {
        return Err(QuantError::Config {
            key: "method".into(),
            msg: format!(
                "the dynamic export takes dynamic models, not {}",
                model.recipe.method.name()
            ),
        });
    }
    let spec = QSpec::activation_quint8(model.recipe.backend.reduce_range());
    let per_row = model.recipe.act_scales == ActScales::PerRow;
    let mut base = qbench_models::onnx::to_model_proto(&model.graph);
    let per_node = proto_nodes_per_node(model, &base);
    let g = base
        .graph
        .take()
        .expect("models' exporter always writes a graph");
    let opset = base
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty())
        .map_or(qbench_models::onnx::export::EXPORT_OPSET, |o| o.version);
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        axes_as_input: opset >= 18,
    };
    for (i, n) in model.graph.nodes.iter().enumerate() {
        let protos = &per_node[i];
        match model.layer(&n.name) {
            Some(layer) => {
                let proto = protos.last().expect("one proto node per layer");
                b.layer(layer, proto, &spec, per_row)?;
            }
            None => b.nodes.extend(protos.iter().cloned()),
        }
    }
    // Keep the float initializers some node still reads (int8 layers' weights and biases
    // are initializers of their own now).
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
        name: format!("{}:dynamic", g.name),
        node: b.nodes,
        initializer,
        input: g.input,
        output: g.output,
        ..Default::default()
    });
    Ok(out)
}
