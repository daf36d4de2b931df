//! The real entry points each format's inputs go through, in-process.
//!
//! An `Err` from qbench is the right answer to a bad input and is not a finding; only a
//! panic, an abort, a signal or an allocation over the budget is. Each target returns
//! whether the input was accepted by the first parser (the share of accepted cases says
//! how deep the mutations reach).
//!
//! - ONNX: what `inspect`, `crosscheck` and `quantize --method dynamic` do: import (and
//!   the per-node listing of a refused file), the dry run at batch 1 on zeros with every
//!   node output made a graph output, dynamic quantization, its int8 executor on the same
//!   zeros, and the quantized file's save and load.
//! - safetensors: `eval`/`crosscheck` of a quantized file: load, prepare the int8
//!   executor, run it at batch 1 on zeros.
//! - IDX: the reader `eval` and the trainer use.
//! - results and thresholds: parse, then `gate` against the other seed, and (results)
//!   `compare` against the baseline and `report`.

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use qbench_models::error::ModelError;
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Dim, Graph, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_quantizers::{Backend, DynamicOptions, QExecutor};

use crate::format::Format;
use crate::harness_adapter as harness;

/// The file name inputs are given in errors.
const FILE: &str = "fuzz-input";

/// Parsed seeds the text targets pair a mutated file with.
pub struct Context {
    results: Option<harness::Results>,
    thresholds: Option<harness::Thresholds>,
}

impl Context {
    pub fn new(format: Format) -> Context {
        let text = |f: Format| {
            crate::seeds::for_format(f)
                .into_iter()
                .next()
                .and_then(|s| String::from_utf8(s.bytes).ok())
        };
        let (results, thresholds) = match format {
            Format::Results | Format::Thresholds => (
                text(Format::Results).and_then(|t| harness::parse_results(&t)),
                text(Format::Thresholds).and_then(|t| harness::parse_thresholds(&t)),
            ),
            _ => (None, None),
        };
        Context {
            results,
            thresholds,
        }
    }
}

/// Runs `bytes` through `format`'s entry points; whether the first parser accepted it.
pub fn run(format: Format, bytes: &[u8], ctx: &Context) -> bool {
    match format {
        Format::Onnx => onnx(bytes),
        Format::Safetensors => safetensors(bytes),
        Format::Idx => qbench_models::idx::parse_idx(bytes, Path::new(FILE)).is_ok(),
        Format::Results => {
            let Some(r) = std::str::from_utf8(bytes)
                .ok()
                .and_then(harness::parse_results)
            else {
                return false;
            };
            if let Some(t) = &ctx.thresholds {
                harness::gate(&r, t);
            }
            if let Some(base) = &ctx.results {
                harness::compare_and_report(&r, base);
            }
            true
        }
        Format::Thresholds => {
            let Some(t) = std::str::from_utf8(bytes)
                .ok()
                .and_then(harness::parse_thresholds)
            else {
                return false;
            };
            if let Some(r) = &ctx.results {
                harness::gate(r, &t);
            }
            true
        }
        Format::Selftest => crate::selftest::run(bytes),
    }
}

/// A graph input's shape at batch 1 (a free first dim is the batch); `None` when another
/// dim is free. The same rule as `qbench inspect`'s dry run.
fn batch1_shape(vi: &ValueInfo) -> Option<Vec<usize>> {
    vi.dims
        .iter()
        .enumerate()
        .map(|(k, d)| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) if k == 0 => Some(1),
            Dim::Symbolic(_) => None,
        })
        .collect()
}

/// Zeros for every graph input, as the dry run feeds them.
fn zeros_for(inputs: &[ValueInfo]) -> Option<Vec<Tensor>> {
    inputs
        .iter()
        .map(|vi| batch1_shape(vi).map(Tensor::zeros))
        .collect()
}

fn onnx(bytes: &[u8]) -> bool {
    let graph = match qbench_models::onnx::from_bytes(bytes, FILE) {
        Ok(g) => g,
        Err(ModelError::Node { .. }) => {
            // `inspect` lists a refused file's nodes from the raw protobuf.
            if let Ok(m) = tract_onnx::pb::ModelProto::decode(bytes) {
                let _ = qbench_models::onnx::check_nodes(&m, FILE);
            }
            return false;
        }
        Err(_) => return false,
    };
    let _ = dry_run(&graph);
    let mut opts = DynamicOptions::new(Backend::Fbgemm);
    opts.op_types = vec!["Gemm".into(), "MatMul".into(), "Conv".into()];
    if let Ok(q) = qbench_quantizers::quantize_dynamic(&graph, &opts) {
        if let (Ok(exec), Some(inputs)) =
            (QExecutor::with_threads(&q, 1), zeros_for(&q.graph.inputs))
        {
            let _ = exec.run(&inputs);
        }
        if let Ok(file) = qbench_quantizers::save::to_bytes(&q) {
            let _ = qbench_quantizers::save::from_bytes(&file, Path::new(FILE));
        }
    }
    true
}

/// `qbench inspect`'s dry run: every node output a graph output, batch 1, zeros.
fn dry_run(graph: &Graph) -> Result<Vec<Tensor>, ModelError> {
    let mut g = graph.clone();
    let already: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    for n in &graph.nodes {
        for o in n
            .outputs
            .iter()
            .filter(|o| !o.is_empty() && !already.contains(*o))
        {
            g.outputs.push(ValueInfo {
                name: o.clone(),
                dims: Vec::new(),
            });
        }
    }
    let inputs = zeros_for(&graph.inputs)
        .ok_or_else(|| ModelError::Tensor("an input has a free non-batch dim".into()))?;
    Executor::new(&g, Options { threads: 1 })?.run(&inputs)
}

fn safetensors(bytes: &[u8]) -> bool {
    let Ok(model) = qbench_quantizers::save::from_bytes(bytes, Path::new(FILE)) else {
        return false;
    };
    if let (Ok(exec), Some(inputs)) = (
        QExecutor::with_threads(&model, 1),
        zeros_for(&model.graph.inputs),
    ) {
        let _ = exec.run(&inputs);
    }
    true
}
