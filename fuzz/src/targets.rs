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
//! - IDX: the reader `eval` and the trainer use, from a file (gzip is detected and
//!   inflated there, in `read_idx`, not in `parse_idx`).
//! - results and thresholds: parse, then `gate` against the other seed, and (results)
//!   `compare` against the baseline and `report`.

use std::path::Path;

use prost::Message;
use qbench_models::error::ModelError;
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
        Format::Idx => idx(bytes),
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
    let _ = harness::inspect_dry_run(&graph);
    let mut opts = DynamicOptions::new(Backend::Fbgemm);
    opts.op_types = vec!["Gemm".into(), "MatMul".into(), "Conv".into()];
    if let Ok(q) = qbench_quantizers::quantize_dynamic(&graph, &opts) {
        if let (Ok(exec), Some(inputs)) = (
            QExecutor::with_threads(&q, 1),
            harness::batch1_zeros(&q.graph.inputs),
        ) {
            let _ = exec.run(&inputs);
        }
        if let Ok(file) = qbench_quantizers::save::to_bytes(&q) {
            let _ = qbench_quantizers::save::from_bytes(&file, Path::new(FILE));
        }
    }
    true
}

/// `read_idx` on the bytes written to this process's scratch file.
fn idx(bytes: &[u8]) -> bool {
    let path = std::env::temp_dir().join(format!("qbench-fuzz-{}.idx", std::process::id()));
    if std::fs::write(&path, bytes).is_err() {
        return false;
    }
    let ok = qbench_models::idx::read_idx(&path).is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

/// Largest input (elements) the quantized-file target feeds: `eval` feeds images from
/// its dataset, not tensors of the declared input shape, so a huge declared input is
/// not this entry point's finding (the ONNX target's dry run covers `inspect`'s).
const MAX_QUANTIZED_INPUT: usize = 1 << 24;

fn safetensors(bytes: &[u8]) -> bool {
    let Ok(model) = qbench_quantizers::save::from_bytes(bytes, Path::new(FILE)) else {
        return false;
    };
    let small = model.graph.inputs.iter().all(|vi| {
        harness::batch1_shape(vi).is_some_and(|s| {
            s.iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .is_some_and(|n| n <= MAX_QUANTIZED_INPUT)
        })
    });
    let exec = QExecutor::with_threads(&model, 1);
    if let (Ok(exec), true) = (exec, small) {
        if let Some(inputs) = harness::batch1_zeros(&model.graph.inputs) {
            let _ = exec.run(&inputs);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed its own parser refuses would make every case of it a parse-error test.
    #[test]
    fn every_seed_is_accepted_by_its_target() {
        for format in Format::ALL {
            let ctx = Context::new(format);
            for s in crate::seeds::for_format(format) {
                assert!(
                    run(format, &s.bytes, &ctx),
                    "{format:?} seed {} refused",
                    s.name
                );
            }
        }
    }
}
