//! `qbench quantize`: a zoo model or ONNX file through the dynamic, fp16, static or QAT
//! pipeline into a `.safetensors` quantized model, and optionally an ONNX export.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use qbench_quantizers::export::{self, Form};
use qbench_quantizers::{save, QExecutor};

use crate::pipeline::{build, fp32_size, QuantSpec};
use crate::progress::Progress;
use crate::target;

/// Validated arguments of `qbench quantize`.
pub struct QuantizeArgs {
    pub model: String,
    pub spec: QuantSpec,
    pub out: PathBuf,
    /// `--export-onnx FORM FILE.onnx`.
    pub export_onnx: Option<(Form, PathBuf)>,
}

/// `qbench quantize`.
pub fn cmd_quantize(args: &QuantizeArgs) -> Result<()> {
    let target = target::resolve(&args.model)?;
    let graph = target::load_graph(&target.path)?;
    let progress = Progress::spinner();
    let (model, took) = build(&target, &graph, &args.spec, &progress)?;
    progress.finish();
    let exec = QExecutor::new(&model).context("preparing the quantized model")?;
    // Everything that can refuse is done before the first write: the export is built in
    // memory, then both files are written atomically (temp file + rename).
    let export = match &args.export_onnx {
        Some((form, path)) => {
            let bytes = export::to_bytes(&model, *form)
                .with_context(|| format!("exporting {} as ONNX ({form:?})", target.name))?;
            Some((*form, path, bytes))
        }
        None => None,
    };
    save::save(&model, &args.out)?;
    let size = file_len(&args.out)?;
    let fp32_size = fp32_size(&target, &graph)?;
    let int8: Vec<&str> = exec
        .placements()
        .iter()
        .filter(|p| p.int8)
        .map(|p| p.node.as_str())
        .collect();
    let fp32: Vec<String> = exec
        .placements()
        .iter()
        .filter(|p| !p.int8)
        .map(|p| format!("{} ({})", p.node, p.op))
        .collect();
    println!(
        "{} → {}: {} / {}, {} int8 layers, kernel rung {}",
        target.name,
        args.out.display(),
        args.spec.method.name(),
        args.spec.backend.name(),
        model.layers.len(),
        exec.rung().name()
    );
    println!(
        "size {} bytes = {:.3}x fp32 ({} bytes: the file, or the weights it builds at load); took {:.2} s",
        size,
        size as f64 / fp32_size as f64,
        fp32_size,
        took.as_secs_f64()
    );
    println!("int8 nodes ({}): {}", int8.len(), int8.join(", "));
    if !fp32.is_empty() {
        println!("fp32 nodes ({}): {}", fp32.len(), fp32.join(", "));
    }
    if let Some((form, path, bytes)) = export {
        crate::output::write_atomic(path, &bytes)
            .with_context(|| format!("writing the ONNX export {}", path.display()))?;
        println!("ONNX ({form:?}) → {}", path.display());
    }
    Ok(())
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}
