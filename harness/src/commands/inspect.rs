//! `qbench inspect`: what a model is made of, as qbench's importer sees it.
//!
//! Lists every node (name, op, inputs, outputs), the shapes of their tensors, the
//! parameter count and whether qbench supports each op, and exits non-zero when any node
//! is not supported. The importer stops at the first node it refuses; for such a file the
//! nodes are listed from the raw protobuf instead, each checked on its own
//! (`onnx::check_nodes`, the importer's own per-node checks), with the reason for every
//! refusal and without shapes or a parameter count (those need the imported graph).
//!
//! Shapes come from a dry run at batch 1: the graph is rebuilt with every node output
//! declared a graph output and run once on zeros, so the executor itself reports every
//! intermediate shape (including those of weights built at load time, e.g. by
//! `ConstantOfShape` in the ONNX "light" models). If the dry run fails, its error is shown
//! and shapes are only those of initializers. The activation memory at batch 1 (the peak
//! of tensors alive at once, and the largest) comes from shapes inferred before running
//! (`qbench_models::shapes`), the plan the memory budget is checked against.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{bail, Context, Result};
use qbench_models::error::ModelError;
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Graph, ValueInfo};
use qbench_models::shapes::MemoryPlan;
use qbench_models::tensor::Tensor;
use serde::Serialize;
use tabled::{builder::Builder, settings::Style};

use crate::target;

#[derive(Serialize)]
struct TensorInfo {
    name: String,
    /// `None` where no shape is known.
    shape: Option<Vec<usize>>,
}

#[derive(Serialize)]
struct NodeInfo {
    name: String,
    op: String,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    supported: bool,
    /// Why not, when `supported` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    file: String,
    graph_inputs: Vec<TensorInfo>,
    graph_outputs: Vec<TensorInfo>,
    /// Elements of every f32 constant read by a non-constant node: initializers and
    /// tensors built from constants at load time. `None` when the import failed.
    parameters: Option<usize>,
    /// Where the shapes came from.
    shapes_from: String,
    /// The dry run's error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run_error: Option<String>,
    /// Activation memory at batch 1 from inferred shapes; `None` when the file did not
    /// import.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryInfo>,
    /// Node count per op type.
    ops: BTreeMap<String, usize>,
    all_supported: bool,
    nodes: Vec<NodeInfo>,
}

#[derive(Serialize)]
struct MemoryInfo {
    /// Bytes of activations alive at once at the busiest node, counting each node's
    /// outputs beside its inputs.
    peak_bytes: Option<u64>,
    peak_node: Option<String>,
    largest_tensor_bytes: Option<u64>,
    /// Tensors whose shapes depend on input data (checked when allocated).
    unknown_shapes: Option<usize>,
    /// Why there is no plan (a shape that does not fit, over the budget, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl MemoryInfo {
    fn of(plan: Result<MemoryPlan, ModelError>) -> MemoryInfo {
        match plan {
            Ok(p) => MemoryInfo {
                peak_bytes: Some(p.peak),
                peak_node: Some(p.peak_node),
                largest_tensor_bytes: Some(p.largest),
                unknown_shapes: Some(p.unknown),
                error: None,
            },
            Err(e) => MemoryInfo {
                peak_bytes: None,
                peak_node: None,
                largest_tensor_bytes: None,
                unknown_shapes: None,
                error: Some(e.to_string()),
            },
        }
    }
}

/// `qbench inspect`.
pub fn cmd_inspect(model: &str, json: bool) -> Result<()> {
    let target = target::resolve(model)?;
    let report = match qbench_models::onnx::load(&target.path) {
        Ok(graph) => imported_report(&target, &graph),
        // A node the importer refuses: list them all as written, each with its verdict.
        Err(e @ ModelError::Node { .. }) => match raw_report(&target)? {
            Some(r) => r,
            // Every node passes on its own: the refusal is about the graph (a tensor read
            // before it is defined), and the importer's error says it best.
            None => return Err(e).with_context(|| format!("importing {}", target.path.display())),
        },
        Err(e) => return Err(e).with_context(|| format!("importing {}", target.path.display())),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        // The table is long: write it in one go and treat a closed pipe (`| head`) as
        // done rather than letting println! panic on EPIPE.
        let text = render_text(&report);
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.context("writing to stdout")?,
        }
    }
    let refused: Vec<String> = report
        .nodes
        .iter()
        .filter(|n| !n.supported)
        .map(|n| format!("{:?} ({})", n.name, n.op))
        .collect();
    if !refused.is_empty() {
        bail!(
            "{}: {} of {} nodes are not supported: {}",
            report.file,
            refused.len(),
            report.nodes.len(),
            refused.join(", ")
        );
    }
    // A listing whose shapes could not be worked out is not a clean bill of health.
    if let Some(e) = &report.dry_run_error {
        bail!("{}: the dry run at batch 1 failed: {e}", report.file);
    }
    Ok(())
}

/// The listing of a file the importer refused, from its raw protobuf; `None` when every
/// node passes its own checks.
fn raw_report(target: &target::Target) -> Result<Option<Report>> {
    let raw = qbench_models::onnx::check_file(&target.path)?;
    if raw.nodes.iter().all(|n| n.error.is_none()) {
        return Ok(None);
    }
    let names = |names: &[String]| {
        names
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| TensorInfo {
                name: s.clone(),
                shape: None,
            })
            .collect::<Vec<_>>()
    };
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let nodes: Vec<NodeInfo> = raw
        .nodes
        .iter()
        .map(|n| {
            *ops.entry(n.op.clone()).or_default() += 1;
            NodeInfo {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: names(&n.inputs),
                outputs: names(&n.outputs),
                supported: n.error.is_none(),
                error: n.error.clone(),
            }
        })
        .collect();
    Ok(Some(Report {
        model: target.name.clone(),
        file: target.path.display().to_string(),
        graph_inputs: names(&raw.inputs),
        graph_outputs: names(&raw.outputs),
        parameters: None,
        shapes_from: "none: the importer refused the file, nodes listed as written".into(),
        dry_run_error: None,
        memory: None,
        all_supported: false,
        ops,
        nodes,
    }))
}

/// The listing of an imported graph, with shapes from a dry run.
fn imported_report(target: &target::Target, graph: &Graph) -> Report {
    let (values, dry_run_error) = match dry_run(graph) {
        Ok(v) => (v, None),
        Err(e) => (HashMap::new(), Some(e)),
    };
    let shape_of = |name: &str| -> Option<Vec<usize>> {
        values
            .get(name)
            .map(|t| t.shape().to_vec())
            .or_else(|| graph.initializers.get(name).map(|t| t.shape().to_vec()))
            .or_else(|| {
                graph
                    .inputs
                    .iter()
                    .find(|vi| vi.name == name)
                    .and_then(batch1_shape)
            })
    };
    // The node the dry run failed on, if the error names one.
    let failed_node = match &dry_run_error {
        Some(ModelError::Exec { node, .. }) | Some(ModelError::Node { node, .. }) => {
            Some(node.clone())
        }
        _ => None,
    };

    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let nodes: Vec<NodeInfo> = graph
        .nodes
        .iter()
        .map(|n| {
            *ops.entry(n.op.onnx_name().to_string()).or_default() += 1;
            let info = |names: &[String]| {
                names
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| TensorInfo {
                        name: s.clone(),
                        shape: shape_of(s),
                    })
                    .collect()
            };
            let failed = failed_node.as_deref() == Some(n.name.as_str());
            NodeInfo {
                name: n.name.clone(),
                op: n.op.onnx_name().to_string(),
                inputs: info(&n.inputs),
                outputs: info(&n.outputs),
                supported: !failed,
                error: if failed {
                    dry_run_error.as_ref().map(|e| e.to_string())
                } else {
                    None
                },
            }
        })
        .collect();

    Report {
        model: target.name.clone(),
        file: target.path.display().to_string(),
        graph_inputs: graph
            .inputs
            .iter()
            .map(|vi| TensorInfo {
                name: vi.name.clone(),
                shape: shape_of(&vi.name),
            })
            .collect(),
        graph_outputs: graph
            .outputs
            .iter()
            .map(|vi| TensorInfo {
                name: vi.name.clone(),
                shape: shape_of(&vi.name),
            })
            .collect(),
        parameters: Some(parameter_count(graph, &values)),
        shapes_from: if dry_run_error.is_none() {
            "dry run at batch 1".into()
        } else {
            "initializers only (the dry run failed)".into()
        },
        dry_run_error: dry_run_error.as_ref().map(|e| e.to_string()),
        memory: Some(MemoryInfo::of(memory_at_batch1(graph))),
        all_supported: nodes.iter().all(|n| n.supported),
        ops,
        nodes,
    }
}

fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let list = |ts: &[TensorInfo]| {
        ts.iter()
            .map(|t| format!("{} {}", t.name, fmt_shape(&t.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "model       {} ({})", r.model, r.file);
    let _ = writeln!(s, "inputs      {}", list(&r.graph_inputs));
    let _ = writeln!(s, "outputs     {}", list(&r.graph_outputs));
    match r.parameters {
        Some(p) => writeln!(
            s,
            "parameters  {} (f32 constants read by compute nodes)",
            thousands(p)
        ),
        None => writeln!(s, "parameters  unknown (the file did not import)"),
    }
    .ok();
    let _ = writeln!(s, "shapes      {}", r.shapes_from);
    if let Some(e) = &r.dry_run_error {
        let _ = writeln!(s, "dry run     FAILED: {e}");
    }
    if let Some(m) = &r.memory {
        let _ = match (&m.error, m.peak_bytes, &m.peak_node, m.largest_tensor_bytes) {
            (Some(e), ..) => writeln!(s, "memory      no plan at batch 1: {e}"),
            (None, Some(peak), Some(node), Some(largest)) => writeln!(
                s,
                "memory      at batch 1: {} of activations at most (at node {node:?}), largest tensor {}{}",
                mib(peak),
                mib(largest),
                match m.unknown_shapes {
                    Some(n) if n > 0 => format!("; {n} tensors' shapes depend on input data"),
                    _ => String::new(),
                }
            ),
            _ => Ok(()),
        };
    }
    let ops: Vec<String> = r.ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
    let _ = writeln!(s, "ops         {}", ops.join(", "));
    let mut table = Builder::default();
    table.push_record(["#", "node", "op", "inputs", "outputs", "supported"]);
    for (i, n) in r.nodes.iter().enumerate() {
        let supported = match &n.error {
            None => "yes".to_string(),
            Some(e) => format!("no: {e}"),
        };
        table.push_record([
            i.to_string(),
            n.name.clone(),
            n.op.to_string(),
            list(&n.inputs),
            list(&n.outputs),
            supported,
        ]);
    }
    let _ = writeln!(s, "{}", table.build().with(Style::sharp()));
    let _ = writeln!(
        s,
        "{} nodes; {}",
        r.nodes.len(),
        if r.all_supported {
            "every op is supported by qbench's importer and fp32 executor"
        } else {
            "some nodes are NOT supported (see above)"
        }
    );
    s
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn fmt_shape(s: &Option<Vec<usize>>) -> String {
    match s {
        Some(s) => format!("{s:?}"),
        None => "[?]".into(),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A graph input's shape with a free batch dimension set to 1; `None` when another
/// dimension is free.
pub fn batch1_shape(vi: &ValueInfo) -> Option<Vec<usize>> {
    qbench_models::shapes::bind_batch(vi, 1)
}

/// The activation memory of a run at batch 1, from shapes inferred before running
/// (`qbench_models::shapes`): what the budget is checked against at plan time.
fn memory_at_batch1(graph: &Graph) -> Result<MemoryPlan, ModelError> {
    let shapes = graph
        .inputs
        .iter()
        .map(|vi| {
            batch1_shape(vi).ok_or_else(|| {
                ModelError::Tensor(format!(
                    "input {:?} has a free dimension other than the batch: {:?}",
                    vi.name, vi.dims
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Executor::new(graph, Options { threads: 1 })?.memory_plan(&shapes)
}

/// Runs the graph once at batch 1 on zeros with every node output made a graph output,
/// and returns every tensor by name. The input tensors are checked against the memory
/// budget before they are allocated (their shapes come from the file).
pub fn dry_run(graph: &Graph) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut g = graph.clone();
    let already: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    for n in &graph.nodes {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if !already.contains(o) {
                g.outputs.push(ValueInfo {
                    name: o.clone(),
                    dims: Vec::new(),
                });
            }
        }
    }
    let inputs = graph
        .inputs
        .iter()
        .map(|vi| {
            let shape = batch1_shape(vi).ok_or_else(|| {
                ModelError::Tensor(format!(
                    "input {:?} has a free dimension other than the batch: {:?}",
                    vi.name, vi.dims
                ))
            })?;
            Tensor::try_zeros(shape)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exec = Executor::new(&g, Options { threads: 1 })?;
    let outs = exec.run(&inputs)?;
    Ok(g.outputs.iter().map(|o| o.name.clone()).zip(outs).collect())
}

/// Elements of the f32 constants that non-constant nodes read. A tensor is constant if it
/// is an initializer or every input of the node producing it is; counting only the
/// frontier counts a weight once, whether stored or built at load time (the light
/// models' `ConstantOfShape` weights), and skips i64 shape arithmetic.
fn parameter_count(graph: &Graph, values: &HashMap<String, Tensor>) -> usize {
    let is_input: HashSet<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
    let mut constant: HashSet<&str> = graph
        .initializers
        .keys()
        .map(String::as_str)
        .filter(|k| !is_input.contains(k))
        .collect();
    let mut counted: HashSet<&str> = HashSet::new();
    let mut total = 0;
    for n in &graph.nodes {
        let ins = n.inputs.iter().filter(|i| !i.is_empty());
        if ins.clone().all(|i| constant.contains(i.as_str())) {
            constant.extend(n.outputs.iter().map(String::as_str));
            continue;
        }
        for i in ins.filter(|i| constant.contains(i.as_str())) {
            let t = values.get(i).or_else(|| graph.initializers.get(i));
            if let Some(t) = t.filter(|t| t.is_f32()) {
                if counted.insert(i) {
                    total += t.len();
                }
            }
        }
    }
    total
}
