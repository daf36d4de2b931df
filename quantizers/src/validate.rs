//! Checks a quantized model against its own graph: the one place where a model read from
//! a `.safetensors` file (whose `qbench.model` metadata may have been edited, truncated or
//! crafted) is proved fit to plan and run, so the planner, the packers and the kernels can
//! index weight shapes, scales and zero points without re-checking them.
//!
//! [`crate::save::from_bytes`] (the one load entry point) calls [`check`] after reading
//! the tensors and before handing the model to anyone, and [`crate::save::to_bytes`]
//! calls it before writing, so qbench never writes a file it would refuse. What is
//! checked, per int8 layer (`layers[i]`):
//! - its node is unique among the layers and is a node of the graph, of the layer's kind
//!   (`conv`: a Conv; `linear`: a Gemm without `transA`, or a MatMul), reading `input`
//!   and `weight_name`, writing `output` (through the fused Relu `relu`, when there is
//!   one: a Relu reading the node's output, fused into one layer only);
//! - `weight_shape` has the kind's rank (Conv `[c_out, c_in/groups, kh, kw]`, Linear
//!   `[n, k]`), no zero dim, and as many elements (checked arithmetic) as the weight has
//!   bytes; a Conv's kernel is the node's, its `c_out` splits into the node's groups, and
//!   its input channels are the input tensor's (whose 4-D shape must be known); a
//!   Linear's `k` is its input's last dim when that shape is known;
//! - `weight_q`: qint8 (the weights are stored as i8) on a grid inside it, per tensor or
//!   per output channel (axis 0), with exactly one scale and one zero point per channel;
//!   every scale finite and > 0, every zero point on the grid;
//! - its bias, when it has one: one finite value per output channel.
//!
//! And per activation (`activations.<tensor>`): the tensor is one of the graph's (an
//! input or a node output), its qparams are per-tensor quint8 (the runtime's u8 domain) on
//! a grid inside it, with one finite scale > 0 and one zero point on the grid; in a static
//! or QAT model every layer's input and output has them.
//!
//! Errors are [`Invalid`]: the layer or tensor at fault, the key path inside the
//! `qbench.model` JSON (the same path a parse error names), and what is wrong. The loader
//! prefixes the file's path.

use std::collections::{HashMap, HashSet};
use std::fmt;

use qbench_models::ir::{Node, Op};

use crate::model::{LayerKind, Method, QLayer, QuantizedModel};
use crate::qparams::{Granularity, QDType, QParams};

/// What is wrong with a model, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `layer "conv"`, `activation "x"`, or `None` for the file as a whole.
    pub subject: Option<String>,
    /// The key path in the metadata JSON (`layers[0].weight_q.scales[3]`) or the tensor.
    pub key: String,
    pub msg: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(s) => write!(f, "{s}: {}: {}", self.key, self.msg),
            None => write!(f, "{}: {}", self.key, self.msg),
        }
    }
}

impl std::error::Error for Invalid {}

/// The subject of a layer's errors.
pub fn layer_subject(node: &str) -> String {
    format!("layer {node:?}")
}

/// The subject of an activation's errors.
pub fn activation_subject(tensor: &str) -> String {
    format!("activation {tensor:?}")
}

/// Checks `model` (module docs).
pub fn check(model: &QuantizedModel) -> Result<(), Invalid> {
    // `Method` also names the fp32 baseline (the sweep's cells use it); no quantized
    // model is made by it.
    if model.recipe.method == Method::Fp32 {
        return Err(Invalid {
            subject: None,
            key: "recipe.method".into(),
            msg: "fp32 is the unquantized baseline, not a quantization method".into(),
        });
    }
    let g = &model.graph;
    let mut nodes: HashMap<&str, &Node> = HashMap::new();
    for n in &g.nodes {
        nodes.entry(n.name.as_str()).or_insert(n);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut relus: HashMap<&str, &str> = HashMap::new();
    for (i, l) in model.layers.iter().enumerate() {
        let err = |key: &str, msg: String| Invalid {
            subject: Some(layer_subject(&l.node)),
            key: format!("layers[{i}].{key}"),
            msg,
        };
        if let Some(j) = seen.insert(&l.node, i) {
            return Err(err("node", format!("the same node as layers[{j}]")));
        }
        let node = nodes
            .get(l.node.as_str())
            .ok_or_else(|| err("node", "no node of that name in the graph".into()))?;
        if let Some(r) = &l.relu {
            if let Some(other) = relus.insert(r, &l.node) {
                return Err(err(
                    "relu",
                    format!("Relu {r:?} is fused into layer {other:?} too"),
                ));
            }
        }
        check_layer(model, l, node, &nodes, &|k, m| err(k, m))?;
        if matches!(model.recipe.method, Method::Static | Method::Qat) {
            for (key, t) in [("input", &l.input), ("output", &l.output)] {
                if !model.activations.contains_key(t) {
                    return Err(err(key, format!("{t:?} has no activation qparams")));
                }
            }
        }
    }
    let tensors: HashSet<&str> = g
        .inputs
        .iter()
        .map(|v| v.name.as_str())
        .chain(
            g.nodes
                .iter()
                .flat_map(|n| n.outputs.iter().map(String::as_str)),
        )
        .collect();
    for (t, q) in &model.activations {
        let err = |key: &str, msg: String| Invalid {
            subject: Some(activation_subject(t)),
            key: format!("activations.{t}{key}"),
            msg,
        };
        if !tensors.contains(t.as_str()) {
            return Err(err("", "no tensor of that name in the graph".into()));
        }
        if q.spec.dtype != QDType::QUInt8 {
            return Err(err(
                ".spec.dtype",
                format!("{}, but activations run as quint8", q.spec.dtype.name()),
            ));
        }
        if q.spec.granularity != Granularity::PerTensor {
            return Err(err(
                ".spec.granularity",
                "per-channel, but activations are quantized per tensor".into(),
            ));
        }
        check_qparams(q, 1, &|k, m| err(&format!(".{k}"), m))?;
    }
    Ok(())
}

fn kind_name(kind: LayerKind) -> &'static str {
    match kind {
        LayerKind::Conv => "conv",
        LayerKind::Linear => "linear",
    }
}

/// Makes an error from a key (relative to the layer or activation) and a message.
type ErrAt<'a> = &'a dyn Fn(&str, String) -> Invalid;

/// One layer against its node (`err` names the layer and prefixes its key path).
fn check_layer(
    model: &QuantizedModel,
    l: &QLayer,
    node: &Node,
    nodes: &HashMap<&str, &Node>,
    err: ErrAt,
) -> Result<(), Invalid> {
    let group = match (&l.kind, &node.op) {
        (LayerKind::Conv, Op::Conv { spatial, group }) => Some((spatial, *group)),
        (LayerKind::Linear, Op::Gemm { trans_a: false, .. } | Op::MatMul) => None,
        (kind, op) => {
            let kind = kind_name(*kind);
            let transposed = if matches!(op, Op::Gemm { trans_a: true, .. }) {
                " with transA"
            } else {
                ""
            };
            return Err(err(
                "kind",
                format!(
                    "{kind}, but node {:?} is a {}{transposed}",
                    node.name,
                    op.onnx_name()
                ),
            ));
        }
    };
    let wired = |key: &str, have: &str, want: Option<&String>, what: &str| match want {
        Some(w) if w == have => Ok(()),
        _ => Err(err(
            key,
            format!(
                "{have:?}, but node {:?} has {what} {:?}",
                node.name,
                want.map_or("", String::as_str)
            ),
        )),
    };
    wired("input", &l.input, node.inputs.first(), "input")?;
    wired("weight_name", &l.weight_name, node.inputs.get(1), "weight")?;
    match &l.relu {
        None => wired("output", &l.output, node.outputs.first(), "output")?,
        Some(r) => {
            let relu = nodes
                .get(r.as_str())
                .filter(|n| n.op == Op::Relu)
                .ok_or_else(|| err("relu", format!("{r:?} is not a Relu node of the graph")))?;
            if relu.inputs.first() != node.outputs.first() {
                return Err(err(
                    "relu",
                    format!("Relu {r:?} does not read node {:?}'s output", node.name),
                ));
            }
            wired(
                "output",
                &l.output,
                relu.outputs.first(),
                "fused Relu output",
            )?;
        }
    }

    let s = &l.weight_shape;
    let rank = match l.kind {
        LayerKind::Conv => 4,
        LayerKind::Linear => 2,
    };
    if s.len() != rank {
        return Err(err(
            "weight_shape",
            format!(
                "{s:?} has rank {}, a {:?} weight has rank {rank}",
                s.len(),
                l.kind
            )
            .to_lowercase(),
        ));
    }
    if s.contains(&0) {
        return Err(err("weight_shape", format!("{s:?} has a zero dim")));
    }
    let elements = s
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            err(
                "weight_shape",
                format!("{s:?} has more elements than usize holds"),
            )
        })?;
    if elements != l.weight.len() {
        return Err(err(
            "weight_shape",
            format!(
                "{s:?} has {elements} elements, but the weight tensor has {} bytes",
                l.weight.len()
            ),
        ));
    }
    let channels = s[0];
    let in_shape = model.shapes.get(&l.input);
    match group {
        Some((spatial, group)) => {
            if let Some(k) = spatial.kernel {
                if k != [s[2], s[3]] {
                    return Err(err(
                        "weight_shape",
                        format!(
                            "kernel {:?}, but node {:?} has kernel_shape {k:?}",
                            &s[2..],
                            node.name
                        ),
                    ));
                }
            }
            if group == 0 || !channels.is_multiple_of(group) {
                return Err(err(
                    "weight_shape",
                    format!("{channels} output channels do not split into {group} groups"),
                ));
            }
            let in_shape = in_shape.ok_or_else(|| {
                err(
                    "input",
                    format!("no shape recorded for {:?} (shapes)", l.input),
                )
            })?;
            let want = s[1].checked_mul(group);
            if in_shape.len() != 4 || want != Some(in_shape[1]) {
                return Err(err(
                    "weight_shape",
                    format!(
                        "{s:?} in {group} group(s) takes {} input channels, but input {:?} has shape {in_shape:?}",
                        want.map_or("too many".to_string(), |w| w.to_string()),
                        l.input
                    ),
                ));
            }
        }
        None => {
            if let Some(&last) = in_shape.and_then(|v| v.last()) {
                if last != s[1] {
                    return Err(err(
                        "weight_shape",
                        format!(
                            "{s:?} takes k = {}, but input {:?} has shape {:?}",
                            s[1],
                            l.input,
                            in_shape.map(Vec::as_slice).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
    }

    let q = &l.weight_q;
    if q.spec.dtype != QDType::QInt8 {
        return Err(err(
            "weight_q.spec.dtype",
            format!("{}, but weights are stored as qint8", q.spec.dtype.name()),
        ));
    }
    let per = match q.spec.granularity {
        Granularity::PerTensor => 1,
        Granularity::PerChannel { axis: 0 } => channels,
        Granularity::PerChannel { axis } => {
            return Err(err(
                "weight_q.spec.granularity",
                format!("per-channel on axis {axis}, but the output channels are axis 0"),
            ))
        }
    };
    check_qparams(q, per, &|k, m| err(&format!("weight_q.{k}"), m))?;

    if let Some(b) = &l.bias {
        // Not a key of the JSON: the tensor `<node>.bias`.
        let bias_err = |msg: String| Invalid {
            subject: Some(layer_subject(&l.node)),
            key: format!("tensor {:?}", format!("{}.bias", l.node)),
            msg,
        };
        if b.len() != channels {
            return Err(bias_err(format!(
                "{} values for {channels} output channels",
                b.len()
            )));
        }
        if let Some(i) = b.iter().position(|v| !v.is_finite()) {
            return Err(bias_err(format!("value {} at index {i}", b[i])));
        }
    }
    Ok(())
}

/// A grid inside its dtype, `n` scales (finite, > 0) and `n` zero points on the grid.
fn check_qparams(q: &QParams, n: usize, err: ErrAt) -> Result<(), Invalid> {
    let spec = &q.spec;
    let (lo, hi) = spec.dtype.full_range();
    if spec.qmin < lo || spec.qmax > hi || spec.qmin >= spec.qmax {
        return Err(err(
            "spec",
            format!(
                "qmin {} / qmax {} must satisfy {lo} <= qmin < qmax <= {hi} for {}",
                spec.qmin,
                spec.qmax,
                spec.dtype.name()
            ),
        ));
    }
    for (key, len) in [
        ("scales", q.scales.len()),
        ("zero_points", q.zero_points.len()),
    ] {
        if len != n {
            return Err(err(key, format!("{len} values, expected {n}")));
        }
    }
    if let Some((c, s)) = q
        .scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        return Err(err(
            &format!("scales[{c}]"),
            format!("{s} is not a finite number > 0"),
        ));
    }
    if let Some((c, z)) = q
        .zero_points
        .iter()
        .enumerate()
        .find(|(_, z)| !(spec.qmin..=spec.qmax).contains(*z))
    {
        return Err(err(
            &format!("zero_points[{c}]"),
            format!("{z} is outside the grid {}..={}", spec.qmin, spec.qmax),
        ));
    }
    Ok(())
}
