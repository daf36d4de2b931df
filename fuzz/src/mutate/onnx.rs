//! Structure-aware mutation of ONNX models, on the decoded `ModelProto` (tract-onnx's
//! generated types, the ones the importer decodes into).
//!
//! Editing the structure rather than the bytes keeps the protobuf valid, so a case gets
//! past the decoder and reaches what the issue is about: shape arithmetic, initializer
//! sizes, attributes and graph wiring. The edits: dims set to 0 / 2^31 / 2^32 / negative,
//! rank changes (of initializers, graph inputs and outputs), shape-tensor values
//! (Reshape, ConstantOfShape, Range operands), attribute edits, duplicated initializer,
//! node and output names, rewired or dropped inputs and outputs, changed op types and
//! opsets. An initializer whose dims change gets data of the new size when that is small,
//! so the file stays consistent and the edit reaches shape inference.

use prost::Message;
use qbench_models::rng::Rng;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};

use super::Draw;

/// Op types an edit may switch a node to: the importer's ops, which all have different
/// arity and attribute rules.
const OPS: [&str; 24] = [
    "MatMul",
    "Gemm",
    "Conv",
    "BatchNormalization",
    "Relu",
    "Add",
    "Mul",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Gather",
    "Softmax",
    "ConstantOfShape",
    "Range",
    "Shape",
    "Unsqueeze",
    "Squeeze",
    "LRN",
    "Clip",
    "Sum",
];

/// Attributes an edit may add (with a random value) to any node.
const ATTRS: [&str; 12] = [
    "pads",
    "strides",
    "kernel_shape",
    "dilations",
    "group",
    "axis",
    "perm",
    "transB",
    "epsilon",
    "auto_pad",
    "size",
    "axes",
];

/// ONNX data types: FLOAT, INT64, and the ones the importer refuses.
const DTYPES: [i32; 6] = [1, 7, 6, 10, 11, 0];

/// Above this many elements an initializer keeps its old data when its dims change (the
/// mismatch is the edit then).
const MAX_REFILL: i64 = 1 << 16;

/// Decodes `seed`, applies 1–3 structural edits, encodes. Returns the labels.
pub fn mutate(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) -> Vec<String> {
    let mut model = match pb::ModelProto::decode(seed) {
        Ok(m) => m,
        // Seeds are valid models; a seed that is not is mutated as bytes.
        Err(_) => {
            out.extend_from_slice(seed);
            return vec![super::bytes(rng, out)];
        }
    };
    let edits = 1 + rng.below(3);
    let mut labels: Vec<String> = (0..edits).map(|_| edit(rng, &mut model)).collect();
    model.encode(out).expect("a Vec grows as needed");
    if rng.one_in(6) {
        labels.push(super::bytes(rng, out));
    }
    labels
}

fn edit(rng: &mut Rng, m: &mut pb::ModelProto) -> String {
    if rng.one_in(30) {
        let v = rng.special_int();
        if let Some(o) = m.opset_import.first_mut() {
            o.version = v;
        }
        return format!("opset version {v}");
    }
    let Some(g) = m.graph.as_mut() else {
        return "no graph".into();
    };
    match rng.below(16) {
        0 | 1 => init_dims(rng, g),
        2 | 3 => io_dims(rng, g),
        4 | 5 => int_values(rng, g),
        6 | 7 => attr_edit(rng, g),
        8 => add_attr(rng, g),
        9 => duplicate_name(rng, g),
        10 => rewire(rng, g),
        11 => node_list(rng, g),
        12 => op_type(rng, g),
        13 => float_values(rng, g),
        14 => dtype(rng, g),
        _ => graph_io(rng, g),
    }
}

/// A dim value for a site: special most of the time, else a small one.
fn dim_value(rng: &mut Rng) -> i64 {
    rng.special_int()
}

fn product(dims: &[i64]) -> Option<i64> {
    dims.iter().try_fold(
        1i64,
        |acc, &d| if d < 0 { None } else { acc.checked_mul(d) },
    )
}

/// Gives `t` data of its dims' size when that is small (zeros, or ones for int64 so a
/// shape tensor stays usable).
fn refill(t: &mut pb::TensorProto) {
    let Some(n) = product(&t.dims).filter(|&n| n <= MAX_REFILL) else {
        return;
    };
    let n = n as usize;
    t.float_data.clear();
    t.int64_data.clear();
    t.raw_data = match t.data_type {
        7 => (0..n).flat_map(|_| 1i64.to_le_bytes()).collect(),
        _ => vec![0; n * 4],
    };
}

fn init_dims(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    if g.initializer.is_empty() {
        return io_dims(rng, g);
    }
    let k = rng.below(g.initializer.len());
    let t = &mut g.initializer[k];
    let what = match rng.below(6) {
        0 if !t.dims.is_empty() => {
            t.dims.pop();
            "rank -1".to_string()
        }
        // Off by one: a bias one shorter than the channels, a weight one row short.
        4 if !t.dims.is_empty() => {
            let at = rng.below(t.dims.len());
            // Wrapping: an earlier edit may have left i64::MIN or MAX there.
            t.dims[at] = if rng.one_in(2) {
                t.dims[at].wrapping_sub(1)
            } else {
                t.dims[at].wrapping_add(1)
            };
            format!("dim {at} off by one")
        }
        1 => {
            let v = if rng.one_in(2) { 1 } else { dim_value(rng) };
            let at = rng.below(t.dims.len() + 1);
            t.dims.insert(at, v);
            format!("rank +1 (dim {v} at {at})")
        }
        2 => {
            t.dims.clear();
            "rank 0".to_string()
        }
        _ if !t.dims.is_empty() => {
            let at = rng.below(t.dims.len());
            let v = dim_value(rng);
            t.dims[at] = v;
            format!("dim {at} = {v}")
        }
        _ => "rank 0 kept".to_string(),
    };
    if !rng.one_in(4) {
        refill(t);
    }
    format!("initializer {:?}: {what} -> {:?}", t.name, t.dims)
}

/// The dims of a graph input/output/value_info, if it has a tensor shape.
fn shape_of(vi: &mut pb::ValueInfoProto) -> Option<&mut Vec<Dimension>> {
    match vi.r#type.as_mut()?.value.as_mut()? {
        pb::type_proto::Value::TensorType(t) => {
            Some(&mut t.shape.get_or_insert_with(Default::default).dim)
        }
    }
}

fn io_dims(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    let (list, which) = match rng.below(3) {
        0 | 1 => (&mut g.input, "input"),
        _ => (&mut g.output, "output"),
    };
    if list.is_empty() {
        return format!("no graph {which}");
    }
    let k = rng.below(list.len());
    let name = list[k].name.clone();
    let Some(dims) = shape_of(&mut list[k]) else {
        return format!("graph {which} {name:?} has no shape");
    };
    let fixed = |v: i64| Dimension {
        denotation: String::new(),
        value: Some(dimension::Value::DimValue(v)),
    };
    let what = match rng.below(6) {
        0 => {
            dims.clear();
            "rank 0".to_string()
        }
        // Every dim the same: [2^32, 2^32, 2^32] is how element counts wrap to 0.
        5 if !dims.is_empty() => {
            let v = dim_value(rng);
            dims.iter_mut().for_each(|d| *d = fixed(v));
            format!("every dim = {v}")
        }
        1 if !dims.is_empty() => {
            dims.pop();
            "rank -1".to_string()
        }
        2 => {
            let v = dim_value(rng);
            dims.push(fixed(v));
            format!("rank +1 (dim {v})")
        }
        3 if !dims.is_empty() => {
            let at = rng.below(dims.len());
            dims[at] = Dimension {
                denotation: String::new(),
                value: Some(dimension::Value::DimParam("n".into())),
            };
            format!("dim {at} symbolic")
        }
        _ if !dims.is_empty() => {
            let at = rng.below(dims.len());
            let v = dim_value(rng);
            dims[at] = fixed(v);
            format!("dim {at} = {v}")
        }
        _ => "rank 0 kept".to_string(),
    };
    format!("graph {which} {name:?}: {what}")
}

/// Values of an int64 initializer: shape operands (Reshape, ConstantOfShape, Range,
/// Unsqueeze axes).
fn int_values(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    let ints: Vec<usize> = (0..g.initializer.len())
        .filter(|&i| g.initializer[i].data_type == 7)
        .collect();
    if ints.is_empty() {
        return init_dims(rng, g);
    }
    let t = &mut g.initializer[ints[rng.below(ints.len())]];
    let v = rng.special_int();
    if !t.int64_data.is_empty() {
        let at = rng.below(t.int64_data.len());
        t.int64_data[at] = v;
        return format!("int64 initializer {:?}[{at}] = {v}", t.name);
    }
    let n = t.raw_data.len() / 8;
    if n == 0 {
        return format!("int64 initializer {:?} is empty", t.name);
    }
    let at = rng.below(n);
    t.raw_data[at * 8..at * 8 + 8].copy_from_slice(&v.to_le_bytes());
    format!("int64 initializer {:?}[{at}] = {v}", t.name)
}

fn float_values(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    let floats: Vec<usize> = (0..g.initializer.len())
        .filter(|&i| g.initializer[i].data_type == 1)
        .collect();
    if floats.is_empty() {
        return "no float initializer".into();
    }
    let t = &mut g.initializer[floats[rng.below(floats.len())]];
    let v = rng.special_float() as f32;
    if !t.float_data.is_empty() {
        let at = rng.below(t.float_data.len());
        t.float_data[at] = v;
        return format!("float initializer {:?}[{at}] = {v}", t.name);
    }
    let n = t.raw_data.len() / 4;
    if n == 0 {
        return format!("float initializer {:?} is empty", t.name);
    }
    // A whole run, so a BatchNorm variance or a scale-like tensor is hit everywhere.
    let all = rng.one_in(3);
    let (lo, hi) = if all {
        (0, n)
    } else {
        let at = rng.below(n);
        (at, at + 1)
    };
    for at in lo..hi {
        t.raw_data[at * 4..at * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    format!(
        "float initializer {:?}: {} = {v}",
        t.name,
        if all { "all" } else { "one" }
    )
}

fn attr_edit(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    let with: Vec<usize> = (0..g.node.len())
        .filter(|&i| !g.node[i].attribute.is_empty())
        .collect();
    if with.is_empty() {
        return add_attr(rng, g);
    }
    let n = &mut g.node[with[rng.below(with.len())]];
    let k = rng.below(n.attribute.len());
    let node = n.name.clone();
    let a = &mut n.attribute[k];
    let name = a.name.clone();
    let what = match rng.below(7) {
        0 => {
            a.i = rng.special_int();
            format!("i = {}", a.i)
        }
        1 if !a.ints.is_empty() => {
            let at = rng.below(a.ints.len());
            a.ints[at] = rng.special_int();
            format!("ints[{at}] = {}", a.ints[at])
        }
        2 if !a.ints.is_empty() => {
            a.ints.pop();
            format!("ints shortened to {:?}", a.ints)
        }
        3 => {
            a.ints.push(rng.special_int());
            format!("ints extended to {:?}", a.ints)
        }
        4 => {
            a.f = rng.special_float() as f32;
            format!("f = {}", a.f)
        }
        5 => {
            let dup = a.clone();
            n.attribute.push(dup);
            "duplicated".to_string()
        }
        _ => {
            n.attribute.remove(k);
            "removed".to_string()
        }
    };
    format!("node {node:?} attribute {name:?}: {what}")
}

fn add_attr(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    if g.node.is_empty() {
        return "no node".into();
    }
    let k = rng.below(g.node.len());
    let name = ATTRS[rng.below(ATTRS.len())];
    let mut a = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    let what = match name {
        "epsilon" => {
            a.r#type = 1;
            a.f = rng.special_float() as f32;
            format!("{}", a.f)
        }
        "auto_pad" => {
            a.r#type = 3;
            let v = ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "bogus"][rng.below(5)];
            a.s = v.as_bytes().to_vec();
            v.to_string()
        }
        "group" | "axis" | "transB" | "size" => {
            a.r#type = 2;
            a.i = rng.special_int();
            a.i.to_string()
        }
        _ => {
            a.r#type = 7;
            let n = rng.below(6);
            a.ints = (0..n).map(|_| rng.special_int()).collect();
            format!("{:?}", a.ints)
        }
    };
    let n = &mut g.node[k];
    // Replace an existing one most of the time: a duplicate is its own edit.
    n.attribute.retain(|x| x.name != name);
    n.attribute.push(a);
    format!("node {:?}: attribute {name} = {what}", n.name)
}

fn duplicate_name(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    match rng.below(3) {
        0 if !g.initializer.is_empty() => {
            let k = rng.below(g.initializer.len());
            let mut t = g.initializer[k].clone();
            if rng.one_in(2) && !t.dims.is_empty() {
                t.dims[0] = t.dims[0].saturating_add(1);
                refill(&mut t);
            }
            let name = t.name.clone();
            g.initializer.push(t);
            format!("initializer {name:?} duplicated")
        }
        1 if g.node.len() >= 2 => {
            let (a, b) = (rng.below(g.node.len()), rng.below(g.node.len()));
            g.node[a].name = g.node[b].name.clone();
            format!("node {a} renamed to node {b}'s name")
        }
        _ if g.node.len() >= 2 => {
            let (a, b) = (rng.below(g.node.len()), rng.below(g.node.len()));
            let Some(out) = g.node[b].output.first().cloned() else {
                return "node without outputs".into();
            };
            if let Some(o) = g.node[a].output.first_mut() {
                *o = out.clone();
            }
            format!("node {a} also writes {out:?}")
        }
        _ => "too few nodes to duplicate".into(),
    }
}

/// Names defined in the graph: inputs, initializers, node outputs.
fn tensor_names(g: &pb::GraphProto) -> Vec<String> {
    g.input
        .iter()
        .map(|i| i.name.clone())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect()
}

fn rewire(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    if g.node.is_empty() {
        return "no node".into();
    }
    let names = tensor_names(g);
    let k = rng.below(g.node.len());
    let n = &mut g.node[k];
    let label = n.name.clone();
    match rng.below(6) {
        0 if !n.input.is_empty() => {
            let at = rng.below(n.input.len());
            let to = names[rng.below(names.len())].clone();
            n.input[at] = to.clone();
            format!("node {label:?} input {at} = {to:?}")
        }
        1 if !n.input.is_empty() => {
            let at = rng.below(n.input.len());
            n.input.remove(at);
            format!("node {label:?} input {at} removed")
        }
        2 if !n.input.is_empty() => {
            let at = rng.below(n.input.len());
            n.input[at].clear();
            format!("node {label:?} input {at} empty")
        }
        3 => {
            let to = names[rng.below(names.len())].clone();
            n.input.push(to.clone());
            format!("node {label:?} extra input {to:?}")
        }
        4 => {
            n.output.clear();
            format!("node {label:?} has no outputs")
        }
        _ => {
            n.output.push(format!("extra_{k}"));
            format!("node {label:?} extra output")
        }
    }
}

fn node_list(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    if g.node.is_empty() {
        return "no node".into();
    }
    let k = rng.below(g.node.len());
    match rng.below(3) {
        0 => {
            g.node.remove(k);
            format!("node {k} removed")
        }
        1 => {
            let n = g.node[k].clone();
            g.node.insert(k, n);
            format!("node {k} duplicated")
        }
        _ => {
            let j = rng.below(g.node.len());
            g.node.swap(k, j);
            format!("nodes {k} and {j} swapped")
        }
    }
}

fn op_type(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    if g.node.is_empty() {
        return "no node".into();
    }
    let k = rng.below(g.node.len());
    let op = OPS[rng.below(OPS.len())];
    let from = std::mem::replace(&mut g.node[k].op_type, op.to_string());
    format!("node {k}: op {from} -> {op}")
}

fn dtype(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    if g.initializer.is_empty() {
        return io_dims(rng, g);
    }
    let k = rng.below(g.initializer.len());
    let t = &mut g.initializer[k];
    t.data_type = DTYPES[rng.below(DTYPES.len())];
    format!("initializer {:?}: data_type {}", t.name, t.data_type)
}

fn graph_io(rng: &mut Rng, g: &mut pb::GraphProto) -> String {
    match rng.below(4) {
        0 if !g.input.is_empty() => {
            let k = rng.below(g.input.len());
            let vi = g.input.remove(k);
            format!("graph input {:?} removed", vi.name)
        }
        1 if !g.output.is_empty() => {
            let k = rng.below(g.output.len());
            let vi = g.output.remove(k);
            format!("graph output {:?} removed", vi.name)
        }
        2 if !g.initializer.is_empty() => {
            // An initializer that is also a graph input: the input overrides it.
            let t = &g.initializer[rng.below(g.initializer.len())];
            let vi = pb::ValueInfoProto {
                name: t.name.clone(),
                r#type: Some(pb::TypeProto {
                    denotation: String::new(),
                    value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                        elem_type: 1,
                        shape: Some(pb::TensorShapeProto {
                            dim: t
                                .dims
                                .iter()
                                .map(|&d| Dimension {
                                    denotation: String::new(),
                                    value: Some(dimension::Value::DimValue(d)),
                                })
                                .collect(),
                        }),
                    })),
                }),
                ..Default::default()
            };
            let name = vi.name.clone();
            g.input.push(vi);
            format!("initializer {name:?} also a graph input")
        }
        _ => {
            let names = tensor_names(g);
            if names.is_empty() {
                return "no tensor".into();
            }
            let name = names[rng.below(names.len())].clone();
            g.output.push(pb::ValueInfoProto {
                name: name.clone(),
                ..Default::default()
            });
            format!("{name:?} made a graph output")
        }
    }
}
