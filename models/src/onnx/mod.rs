//! ONNX in and out, through tract-onnx's generated protobuf types (`tract_onnx::pb`) and
//! `prost::Message`: no hand-written protobuf parsing.
//!
//! Import ([`load`], [`from_bytes`]) validates every node against what the IR and the
//! executor support: an unsupported op, domain, attribute, attribute value or dtype is a
//! [`ModelError::Node`] naming the file, the node and its op. Truncated or corrupted bytes
//! are a [`ModelError::Decode`]; nothing panics on bad input. [`check_nodes`] applies the
//! same per-node checks without stopping at the first refusal (what `qbench inspect`
//! lists for a file the importer refuses). Export lives in [`export`], the cross-check
//! against tract in [`crosscheck`], seeded random weights for constant-weight files in
//! [`random_weights`].

pub mod crosscheck;
pub mod export;
pub mod random_weights;

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use tract_onnx::pb;

use crate::error::{ModelError, Result};
use crate::ir::{AutoPad, Dim, Graph, Node, Op, Spatial, ValueInfo};
use crate::tensor::Tensor;

pub use crosscheck::{crosscheck, CrossCheck, TractPlan, CROSSCHECK_REL_TOL};
pub use export::{save, to_bytes, to_model_proto};

/// Reads and imports an ONNX file.
pub fn load(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, &path.display().to_string())
}

/// Imports an ONNX model from bytes; `file` names the source in errors.
pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Graph> {
    let model = pb::ModelProto::decode(bytes).map_err(|source| ModelError::Decode {
        file: file.to_string(),
        source,
    })?;
    from_model_proto(&model, file)
}

/// The default-domain opset a model imports.
fn opset_of(model: &pb::ModelProto, file: &str) -> Result<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| ModelError::Graph {
            file: file.to_string(),
            msg: "no opset_import for the default ONNX domain".into(),
        })
}

/// The default-domain opset (checked to be one the importer knows) and the graph.
fn opset_and_graph<'m>(model: &'m pb::ModelProto, file: &str) -> Result<(i64, &'m pb::GraphProto)> {
    let gerr = |msg: String| ModelError::Graph {
        file: file.to_string(),
        msg,
    };
    let opset = opset_of(model, file)?;
    if !(1..=22).contains(&opset) {
        return Err(gerr(format!("unsupported default-domain opset {opset}")));
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| gerr("the model has no graph".into()))?;
    Ok((opset, g))
}

/// Imports a decoded `ModelProto`.
pub fn from_model_proto(model: &pb::ModelProto, file: &str) -> Result<Graph> {
    let gerr = |msg: String| ModelError::Graph {
        file: file.to_string(),
        msg,
    };
    let (opset, g) = opset_and_graph(model, file)?;
    if !g.sparse_initializer.is_empty() {
        return Err(gerr("sparse initializers are not supported".into()));
    }
    let mut initializers = std::collections::BTreeMap::new();
    for t in &g.initializer {
        let v = tensor_from_proto(t).map_err(|e| gerr(format!("initializer {:?}: {e}", t.name)))?;
        // Last-wins would make the graph mean whichever copy a reader happens to keep.
        if initializers.insert(t.name.clone(), v).is_some() {
            return Err(gerr(format!("initializer {:?} is defined twice", t.name)));
        }
    }
    let value_info = |vi: &pb::ValueInfoProto| -> Result<ValueInfo> {
        let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(tt)) => tt,
            None => {
                return Err(gerr(format!(
                    "graph input/output {:?} has no tensor type",
                    vi.name
                )))
            }
        };
        if tt.elem_type != pb::tensor_proto::DataType::Float as i32 {
            return Err(gerr(format!(
                "graph input/output {:?} has dtype {}, only FLOAT is supported",
                vi.name,
                dtype_name(tt.elem_type)
            )));
        }
        let dims = tt
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                            Ok(Dim::Fixed(*v as usize))
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                            Err(gerr(format!("{:?}: negative dim {v}", vi.name)))
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                            Ok(Dim::Symbolic(p.clone()))
                        }
                        None => Ok(Dim::Symbolic("?".into())),
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        check_declared_shape(&vi.name, &dims).map_err(|e| gerr(e.to_string()))?;
        Ok(ValueInfo {
            name: vi.name.clone(),
            dims,
        })
    };
    // ONNX IR < 4 lists initializers among the inputs too; those are constants here.
    let inputs = g
        .input
        .iter()
        .filter(|i| !initializers.contains_key(&i.name))
        .map(value_info)
        .collect::<Result<Vec<_>>>()?;
    // The first dim of a graph input is the batch (the executor, the zoo and every
    // command set it); a scalar input has none.
    if let Some(i) = inputs.iter().find(|i| i.dims.is_empty()) {
        return Err(gerr(format!(
            "graph input {:?} has rank 0 (or no shape); qbench needs a batch dimension",
            i.name
        )));
    }
    let outputs = g
        .output
        .iter()
        .map(value_info)
        .collect::<Result<Vec<_>>>()?;
    let used = read_tensors(g);
    let mut nodes = Vec::with_capacity(g.node.len());
    for (i, n) in g.node.iter().enumerate() {
        let name = node_name(n, i);
        let node = import_node(n, name.clone(), opset, &used).map_err(|msg| ModelError::Node {
            file: file.to_string(),
            node: name,
            op: n.op_type.clone(),
            msg,
        })?;
        nodes.push(node);
    }
    let nodes = fold_legacy_softmax(nodes, &outputs);
    let graph = Graph {
        name: g.name.clone(),
        inputs,
        outputs,
        initializers,
        nodes,
    };
    graph.validate(file)?;
    Ok(graph)
}

/// A graph input's or output's declared shape, at batch 1 (a free dim counts as 1): its
/// element count must not overflow and the tensor must fit the budget, because callers
/// build a zero tensor of it (`inspect`'s dry run, the quantizers' probe).
fn check_declared_shape(name: &str, dims: &[Dim]) -> Result<()> {
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Symbolic(_) => 1,
        })
        .collect();
    crate::budget::check_shape(&format_args!("graph input/output {name:?}"), &shape, 4)?;
    Ok(())
}

/// Tensors some node or the graph's outputs read.
fn read_tensors(g: &pb::GraphProto) -> HashSet<&str> {
    let mut used: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    used.extend(g.output.iter().map(|o| o.name.as_str()));
    used
}

/// A node's name, or `{op}_{index}` for an unnamed one (as errors and the IR name it).
fn node_name(n: &pb::NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

/// Imports one node on its own: domain, op, attributes and which outputs are read. The
/// error is the reason alone; callers add the file, node and op.
fn import_node(
    n: &pb::NodeProto,
    name: String,
    opset: i64,
    used: &HashSet<&str>,
) -> std::result::Result<Node, String> {
    if !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return Err(format!("unsupported domain {:?}", n.domain));
    }
    let op = parse_op(n, opset)?;
    // Every op here computes its first output; a node without one is malformed (and
    // the passes and executors index it).
    if n.output.first().is_none_or(String::is_empty) {
        return Err("has no output".into());
    }
    let mut outputs = n.output.clone();
    // Ops whose extra outputs (Dropout mask, BatchNorm training stats, MaxPool
    // indices) we do not compute: refuse them only when something reads them.
    let max_outputs = 1;
    for extra in outputs.iter().skip(max_outputs) {
        if !extra.is_empty() && used.contains(extra.as_str()) {
            return Err(format!(
                "output {extra:?} is read by the graph but is not supported"
            ));
        }
    }
    outputs.truncate(max_outputs);
    Ok(Node {
        name,
        op,
        inputs: n.input.clone(),
        outputs,
    })
}

/// An ONNX graph as written, each node checked on its own ([`check_nodes`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RawGraph {
    /// Graph inputs that are not initializers, and graph outputs, by name.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub nodes: Vec<NodeCheck>,
}

/// One node of an ONNX file as written, and whether the importer takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCheck {
    /// The node's name (`{op}_{index}` when the file leaves it empty).
    pub name: String,
    /// `op_type`, prefixed with the domain when it is not the default one.
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Why the importer refuses the node; `None` when it takes it.
    pub error: Option<String>,
}

/// Checks every node of a decoded model on its own, as [`from_model_proto`] does, but
/// without stopping at the first refusal: `qbench inspect` lists them all. Errors only
/// where there are no nodes to list (no graph, no default-domain opset, an opset out of
/// range); graph-level checks (initializers, undefined tensors) are import's alone.
pub fn check_nodes(model: &pb::ModelProto, file: &str) -> Result<RawGraph> {
    let (opset, g) = opset_and_graph(model, file)?;
    let used = read_tensors(g);
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let nodes = g
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = node_name(n, i);
            let op = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}.{}", n.domain, n.op_type)
            };
            NodeCheck {
                error: import_node(n, name.clone(), opset, &used).err(),
                name,
                op,
                inputs: n.input.clone(),
                outputs: n.output.clone(),
            }
        })
        .collect();
    Ok(RawGraph {
        inputs: g
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .collect(),
        outputs: g.output.iter().map(|o| o.name.clone()).collect(),
        nodes,
    })
}

/// [`check_nodes`] on a file: read, decode (a [`ModelError::Decode`] for bad bytes), check.
pub fn check_file(path: impl AsRef<Path>) -> Result<RawGraph> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let model = pb::ModelProto::decode(bytes.as_slice()).map_err(|source| ModelError::Decode {
        file: file.clone(),
        source,
    })?;
    check_nodes(&model, &file)
}

/// Folds `Reshape(Softmax(Flatten(x, axis), axis = 1), Shape(x))`, the opset-13 form
/// [`export`] writes for a legacy Softmax, back into one legacy `Softmax { axis }` node
/// named as the Reshape. The two compute the same thing; folding makes export → import
/// give back the graph that was exported, which saved quantized models rely on (their
/// per-tensor records name the Softmax's tensors, not the expansion's), and spares the
/// executors a shape tensor. Intermediates read elsewhere (by another node or as a graph
/// output) leave the pattern unfolded.
fn fold_legacy_softmax(mut nodes: Vec<Node>, outputs: &[ValueInfo]) -> Vec<Node> {
    use std::collections::HashMap;
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.outputs {
            producer.insert(o, i);
        }
        for t in &n.inputs {
            *readers.entry(t).or_default() += 1;
        }
    }
    for o in outputs {
        *readers.entry(&o.name).or_default() += 1;
    }
    let sole = |t: &str| readers.get(t) == Some(&1);
    let mut folds = Vec::new();
    for (r, node) in nodes.iter().enumerate() {
        let [soft, shape] = node.inputs.as_slice() else {
            continue;
        };
        if !matches!(node.op, Op::Reshape) || !sole(soft) || !sole(shape) {
            continue;
        }
        let (Some(&s), Some(&sh)) = (producer.get(soft.as_str()), producer.get(shape.as_str()))
        else {
            continue;
        };
        if !matches!(
            nodes[s].op,
            Op::Softmax {
                axis: 1 | -1,
                legacy: false
            }
        ) || !matches!(nodes[sh].op, Op::Shape)
        {
            continue;
        }
        let Some(&f) = nodes[s]
            .inputs
            .first()
            .and_then(|t| producer.get(t.as_str()))
        else {
            continue;
        };
        let Op::Flatten { axis } = nodes[f].op else {
            continue;
        };
        let x = &nodes[f].inputs[0];
        if !sole(&nodes[s].inputs[0]) || nodes[sh].inputs.first() != Some(x) {
            continue;
        }
        folds.push((r, axis, x.clone(), [s, sh, f]));
    }
    let mut dropped = HashSet::new();
    for (r, axis, x, parts) in folds {
        nodes[r].op = Op::Softmax { axis, legacy: true };
        nodes[r].inputs = vec![x];
        dropped.extend(parts);
    }
    nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, n)| n)
        .collect()
}

fn dtype_name(t: i32) -> &'static str {
    pb::tensor_proto::DataType::try_from(t).map_or("unknown", |d| d.as_str_name())
}

/// Converts an initializer or attribute tensor: FLOAT, DOUBLE (to f32), INT64 and INT32
/// (to i64); raw little-endian or typed fields.
pub fn tensor_from_proto(t: &pb::TensorProto) -> std::result::Result<Tensor, String> {
    use pb::tensor_proto::DataType as D;
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return Err("external data is not supported".into());
    }
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    // Before any conversion allocates: the element count must not overflow (the sizes
    // below multiply it) and the converted tensor must fit the budget.
    let elem = match D::try_from(t.data_type) {
        Ok(D::Float) | Ok(D::Double) => 4,
        _ => 8,
    };
    let n = crate::budget::check_shape(&"the tensor", &shape, elem).map_err(|e| e.to_string())?;
    let raw = &t.raw_data;
    let from_raw = |size: usize| -> std::result::Result<Vec<&[u8]>, String> {
        if Some(raw.len()) != n.checked_mul(size) {
            return Err(format!(
                "raw_data has {} bytes, dims {:?} need {n} values of {size} bytes",
                raw.len(),
                t.dims,
            ));
        }
        Ok(raw.chunks_exact(size).collect())
    };
    let check = |len: usize| -> std::result::Result<(), String> {
        if len == n {
            Ok(())
        } else {
            Err(format!("holds {len} values, dims {:?} need {n}", t.dims))
        }
    };
    let tensor = match D::try_from(t.data_type) {
        Ok(D::Float) => {
            let v: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                from_raw(4)?
                    .into_iter()
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect()
            };
            check(v.len())?;
            Tensor::new(shape, v)
        }
        Ok(D::Double) => {
            let v: Vec<f32> = if raw.is_empty() {
                t.double_data.iter().map(|&x| x as f32).collect()
            } else {
                from_raw(8)?
                    .into_iter()
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect()
            };
            check(v.len())?;
            Tensor::new(shape, v)
        }
        Ok(D::Int64) => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int64_data.clone()
            } else {
                from_raw(8)?
                    .into_iter()
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect()
            };
            check(v.len())?;
            Tensor::new_i64(shape, v)
        }
        Ok(D::Int32) => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| i64::from(x)).collect()
            } else {
                from_raw(4)?
                    .into_iter()
                    .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
                    .collect()
            };
            check(v.len())?;
            Tensor::new_i64(shape, v)
        }
        _ => {
            return Err(format!(
                "dtype {} is not supported",
                dtype_name(t.data_type)
            ))
        }
    };
    tensor.map_err(|e| e.to_string())
}

/// Attribute access that records what was read, so unread (unsupported) attributes are
/// reported by [`Attrs::finish`].
struct Attrs<'a> {
    node: &'a pb::NodeProto,
    read: HashSet<&'a str>,
}

type AttrResult<T> = std::result::Result<T, String>;

impl<'a> Attrs<'a> {
    fn new(node: &'a pb::NodeProto) -> Self {
        Attrs {
            node,
            read: HashSet::new(),
        }
    }

    fn get(
        &mut self,
        name: &str,
        want: pb::attribute_proto::AttributeType,
    ) -> AttrResult<Option<&'a pb::AttributeProto>> {
        let Some(a) = self.node.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        self.read.insert(&a.name);
        // Old exporters leave `type` unset; then trust the field the name implies.
        if a.r#type != 0 && a.r#type != want as i32 {
            return Err(format!(
                "attribute {name} should be {}, is type {}",
                want.as_str_name(),
                a.r#type
            ));
        }
        Ok(Some(a))
    }

    fn int(&mut self, name: &str, default: i64) -> AttrResult<i64> {
        Ok(self
            .get(name, pb::attribute_proto::AttributeType::Int)?
            .map_or(default, |a| a.i))
    }

    fn float(&mut self, name: &str, default: f32) -> AttrResult<f32> {
        Ok(self
            .get(name, pb::attribute_proto::AttributeType::Float)?
            .map_or(default, |a| a.f))
    }

    fn ints(&mut self, name: &str) -> AttrResult<Option<Vec<i64>>> {
        Ok(self
            .get(name, pb::attribute_proto::AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    fn string(&mut self, name: &str) -> AttrResult<Option<String>> {
        self.get(name, pb::attribute_proto::AttributeType::String)?
            .map(|a| {
                String::from_utf8(a.s.clone()).map_err(|_| format!("attribute {name} is not UTF-8"))
            })
            .transpose()
    }

    fn tensor(&mut self, name: &str) -> AttrResult<Option<Tensor>> {
        self.get(name, pb::attribute_proto::AttributeType::Tensor)?
            .map(|a| {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| format!("attribute {name} holds no tensor"))?;
                tensor_from_proto(t).map_err(|e| format!("attribute {name}: {e}"))
            })
            .transpose()
    }

    /// Reads and ignores an attribute that does not change inference results.
    fn ignore(&mut self, name: &str) {
        if let Some(a) = self.node.attribute.iter().find(|a| a.name == name) {
            self.read.insert(&a.name);
        }
    }

    fn finish(self) -> AttrResult<()> {
        match self
            .node
            .attribute
            .iter()
            .find(|a| !self.read.contains(a.name.as_str()))
        {
            Some(a) => Err(format!("unsupported attribute {:?}", a.name)),
            None => Ok(()),
        }
    }
}

fn pair(v: Option<Vec<i64>>, name: &str, default: usize, min: usize) -> AttrResult<[usize; 2]> {
    match v {
        None => Ok([default; 2]),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x >= min as i64 && x < 1 << 20) => {
            Ok([v[0] as usize, v[1] as usize])
        }
        Some(v) => Err(format!(
            "{name} {v:?}: only 2-D windows with values ≥ {min} are supported"
        )),
    }
}

fn spatial(at: &mut Attrs, is_conv: bool, dilations: bool) -> AttrResult<Spatial> {
    let kernel = match at.ints("kernel_shape")? {
        Some(k) => Some(pair(Some(k), "kernel_shape", 1, 1)?),
        None if is_conv => None,
        None => return Err("kernel_shape is required".into()),
    };
    let pads = match at.ints("pads")? {
        None => [0; 4],
        Some(p) if p.len() == 4 && p.iter().all(|&x| (0..1 << 20).contains(&x)) => {
            [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
        }
        Some(p) => Err(format!(
            "pads {p:?}: only 2-D non-negative pads are supported"
        ))?,
    };
    let auto_pad = match at.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("VALID") => AutoPad::Valid,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some(s) => return Err(format!("auto_pad {s:?} is not supported")),
    };
    let dil = if dilations {
        at.ints("dilations")?
    } else {
        None
    };
    Ok(Spatial {
        kernel,
        strides: pair(at.ints("strides")?, "strides", 1, 1)?,
        dilations: pair(dil, "dilations", 1, 1)?,
        pads,
        auto_pad,
        ceil_mode: false,
    })
}

/// Parses and validates one node's op and attributes; the error names the problem, the
/// caller adds file, node and op.
fn parse_op(n: &pb::NodeProto, opset: i64) -> AttrResult<Op> {
    let mut at = Attrs::new(n);
    let nin = n.input.len();
    let arity = |lo: usize, hi: usize| -> AttrResult<()> {
        if (lo..=hi).contains(&nin) {
            Ok(())
        } else {
            Err(format!("takes {lo}..={hi} inputs, has {nin}"))
        }
    };
    let op = match n.op_type.as_str() {
        "Gemm" => {
            arity(2, 3)?;
            if opset < 7 {
                at.ignore("broadcast");
            }
            Op::Gemm {
                alpha: at.float("alpha", 1.0)?,
                beta: at.float("beta", 1.0)?,
                trans_a: at.int("transA", 0)? != 0,
                trans_b: at.int("transB", 0)? != 0,
            }
        }
        "MatMul" => {
            arity(2, 2)?;
            Op::MatMul
        }
        "Conv" => {
            arity(2, 3)?;
            let sp = spatial(&mut at, true, true)?;
            let group = at.int("group", 1)?;
            if group < 1 {
                return Err(format!("group {group} must be positive"));
            }
            Op::Conv {
                spatial: sp,
                group: group as usize,
            }
        }
        "BatchNormalization" => {
            arity(5, 5)?;
            at.ignore("momentum");
            if at.int("spatial", 1)? != 1 {
                return Err("spatial = 0 is not supported".into());
            }
            if at.int("training_mode", 0)? != 0 || at.int("is_test", 1)? == 0 && opset < 7 {
                return Err("training mode is not supported (inference only)".into());
            }
            Op::BatchNorm {
                epsilon: at.float("epsilon", 1e-5)?,
            }
        }
        "Relu" => Op::Relu,
        "Sigmoid" => Op::Sigmoid,
        "HardSwish" => Op::HardSwish,
        "HardSigmoid" => Op::HardSigmoid {
            alpha: at.float("alpha", 0.2)?,
            beta: at.float("beta", 0.5)?,
        },
        "Clip" if opset < 11 => Op::Clip {
            min: Some(at.float("min", f32::MIN)?),
            max: Some(at.float("max", f32::MAX)?),
        },
        "Clip" => {
            arity(1, 3)?;
            Op::Clip {
                min: None,
                max: None,
            }
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            arity(2, 2)?;
            if opset < 7 && at.int("broadcast", 0)? != 0 && at.int("axis", i64::MIN)? != i64::MIN {
                return Err("legacy broadcast with an axis is not supported".into());
            }
            match n.op_type.as_str() {
                "Add" => Op::Add,
                "Sub" => Op::Sub,
                "Mul" => Op::Mul,
                _ => Op::Div,
            }
        }
        "Sum" => {
            arity(1, usize::MAX)?;
            Op::Sum
        }
        "MaxPool" => {
            arity(1, 1)?;
            let mut sp = spatial(&mut at, false, opset >= 10)?;
            sp.ceil_mode = at.int("ceil_mode", 0)? != 0;
            if at.int("storage_order", 0)? != 0 {
                return Err("storage_order = 1 is not supported".into());
            }
            Op::MaxPool { spatial: sp }
        }
        "AveragePool" => {
            arity(1, 1)?;
            let mut sp = spatial(&mut at, false, false)?;
            sp.ceil_mode = at.int("ceil_mode", 0)? != 0;
            Op::AveragePool {
                spatial: sp,
                count_include_pad: at.int("count_include_pad", 0)? != 0,
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "LRN" => {
            let size = at.int("size", 0)?;
            if !(1..=1024).contains(&size) {
                return Err(format!("size {size} must be in 1..=1024"));
            }
            Op::Lrn {
                alpha: at.float("alpha", 1e-4)?,
                beta: at.float("beta", 0.75)?,
                bias: at.float("bias", 1.0)?,
                size: size as usize,
            }
        }
        "Flatten" => Op::Flatten {
            axis: at.int("axis", 1)?,
        },
        "Reshape" => {
            if opset < 5 {
                return Err("Reshape with a shape attribute (opset < 5) is not supported".into());
            }
            arity(2, 2)?;
            if at.int("allowzero", 0)? != 0 {
                return Err("allowzero = 1 is not supported".into());
            }
            Op::Reshape
        }
        "Transpose" => Op::Transpose {
            perm: at
                .ints("perm")?
                .map(|p| {
                    p.iter()
                        .map(|&x| usize::try_from(x).map_err(|_| format!("perm {p:?}")))
                        .collect::<AttrResult<Vec<_>>>()
                })
                .transpose()?,
        },
        "Concat" => {
            arity(1, usize::MAX)?;
            let axis = at
                .get("axis", pb::attribute_proto::AttributeType::Int)?
                .ok_or("axis is required")?
                .i;
            Op::Concat { axis }
        }
        "Softmax" => Op::Softmax {
            axis: at.int("axis", if opset < 13 { 1 } else { -1 })?,
            legacy: opset < 13,
        },
        "Dropout" => {
            at.ignore("ratio");
            at.ignore("seed");
            if opset < 7 && at.int("is_test", 0)? == 0 {
                return Err("training-mode Dropout (is_test = 0) is not supported".into());
            }
            Op::Identity
        }
        "Identity" => Op::Identity,
        "Constant" => {
            let value = if let Some(t) = at.tensor("value")? {
                t
            } else if let Some(a) =
                at.get("value_float", pb::attribute_proto::AttributeType::Float)?
            {
                Tensor::scalar(a.f)
            } else if let Some(a) =
                at.get("value_floats", pb::attribute_proto::AttributeType::Floats)?
            {
                Tensor::new(vec![a.floats.len()], a.floats.clone()).map_err(|e| e.to_string())?
            } else if let Some(a) = at.get("value_int", pb::attribute_proto::AttributeType::Int)? {
                Tensor::new_i64(vec![], vec![a.i]).map_err(|e| e.to_string())?
            } else if let Some(a) =
                at.get("value_ints", pb::attribute_proto::AttributeType::Ints)?
            {
                Tensor::from_i64s(a.ints.clone())
            } else {
                return Err(
                    "needs a value (tensor, float(s) or int(s)); other forms are not supported"
                        .into(),
                );
            };
            Op::Constant { value }
        }
        "ConstantOfShape" => {
            arity(1, 1)?;
            let value = at.tensor("value")?.unwrap_or_else(|| Tensor::scalar(0.0));
            if value.len() != 1 {
                return Err(format!("value must hold one element, has {}", value.len()));
            }
            Op::ConstantOfShape { value }
        }
        "Shape" => {
            arity(1, 1)?;
            Op::Shape
        }
        "Gather" => {
            arity(2, 2)?;
            Op::Gather {
                axis: at.int("axis", 0)?,
            }
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = if opset < 13 {
                arity(1, 1)?;
                at.ints("axes")?
            } else {
                arity(1, 2)?;
                None
            };
            if n.op_type == "Unsqueeze" {
                if opset < 13 && axes.is_none() {
                    return Err("axes is required".into());
                }
                Op::Unsqueeze { axes }
            } else {
                Op::Squeeze { axes }
            }
        }
        "LayerNormalization" => {
            arity(2, 3)?;
            // stash_type is the precision of mean and variance; we compute them in f32,
            // which is ONNX's default (1 = FLOAT). Other values are refused.
            if at.int("stash_type", 1)? != 1 {
                return Err("stash_type other than 1 (FLOAT) is not supported".into());
            }
            Op::LayerNorm {
                axis: at.int("axis", -1)?,
                epsilon: at.float("epsilon", 1e-5)?,
            }
        }
        "Gelu" => {
            arity(1, 1)?;
            let tanh = match at.string("approximate")?.as_deref() {
                None | Some("none") => false,
                Some("tanh") => true,
                Some(s) => return Err(format!("approximate {s:?} is not supported")),
            };
            Op::Gelu { tanh }
        }
        "Erf" => {
            arity(1, 1)?;
            Op::Erf
        }
        "ReduceSum" | "ReduceMean" => {
            // Axes moved from an attribute to input 1 at opset 13 for ReduceSum, 18 for
            // the other reductions.
            let axes_input_from = if n.op_type == "ReduceSum" { 13 } else { 18 };
            let axes = if opset < axes_input_from {
                arity(1, 1)?;
                Some(at.ints("axes")?.unwrap_or_default())
            } else {
                arity(1, 2)?;
                None
            };
            let keepdims = at.int("keepdims", 1)? != 0;
            let noop_with_empty_axes = at.int("noop_with_empty_axes", 0)? != 0;
            if n.op_type == "ReduceSum" {
                Op::ReduceSum {
                    axes,
                    keepdims,
                    noop_with_empty_axes,
                }
            } else {
                Op::ReduceMean {
                    axes,
                    keepdims,
                    noop_with_empty_axes,
                }
            }
        }
        "LpNormalization" => {
            arity(1, 1)?;
            let p = at.int("p", 2)?;
            if p != 1 && p != 2 {
                return Err(format!("p = {p}: only 1 and 2 are defined"));
            }
            Op::LpNormalization {
                axis: at.int("axis", -1)?,
                p: p as u8,
            }
        }
        "Range" => {
            arity(3, 3)?;
            Op::Range
        }
        "Cast" => {
            arity(1, 1)?;
            use pb::tensor_proto::DataType as D;
            // `saturate` (opset 19) only affects float8 targets.
            at.ignore("saturate");
            let to = at.int("to", 0)?;
            let to = match D::try_from(to as i32) {
                Ok(D::Float) => crate::ir::CastTo::F32,
                Ok(D::Int64) => crate::ir::CastTo::I64,
                _ => {
                    return Err(format!(
                        "to = {} is not supported (FLOAT and INT64 only)",
                        dtype_name(to as i32)
                    ))
                }
            };
            Op::Cast { to }
        }
        other => return Err(format!("unsupported op {other:?}")),
    };
    at.finish()?;
    Ok(op)
}
