//! `qbench eval`: a model's eval set through qbench's own fp32 executor (or, for a
//! quantized `.safetensors` file, the quantized executor), scored top-1.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use qbench_models::data::{DatasetKind, Split, IMAGE_LEN};
use qbench_quantizers::QExecutor;
use rayon::prelude::*;

use crate::target::{
    batch_tensor, eval_spec, executor, load_dataset, load_graph, model_inputs, predictions,
    resolve, EvalSpec, Runner,
};

/// Validated arguments of `qbench eval`.
pub struct EvalArgs {
    pub model: String,
    pub json: bool,
    pub limit: Option<usize>,
    pub batch: usize,
    pub dataset: Option<DatasetKind>,
}

/// `qbench eval`.
pub fn cmd_eval(args: &EvalArgs) -> Result<()> {
    // A quantized model (`qbench quantize`'s output) is evaluated on its source's data.
    let quantized = if args.model.ends_with(".safetensors") {
        Some(qbench_quantizers::save::load(Path::new(&args.model))?)
    } else {
        None
    };
    // Cheap checks first: the name/file and which data, before reading anything big.
    let target = match &quantized {
        Some(m) => crate::target::resolve_source(Path::new(&args.model), &m.recipe)?,
        None => resolve(&args.model)?,
    };
    let spec = eval_spec(&target, args.dataset, true)?
        .context("eval_spec(required) returned no eval set")?;

    let start = Instant::now();
    let exec = match &quantized {
        Some(model) => Runner::Quantized(Box::new(
            QExecutor::new(model).with_context(|| format!("preparing {}", args.model))?,
        )),
        None => Runner::Fp32(Box::new(executor(
            &load_graph(&target.path)?,
            &target.path,
        )?)),
    };
    let ds = load_dataset(&spec, args.limit)?;
    ensure!(!ds.is_empty(), "the eval set is empty");
    let images = model_inputs(&ds, &spec);
    let labels = ds.labels();

    let correct: usize = images
        .par_chunks(args.batch * IMAGE_LEN)
        .zip(labels.par_chunks(args.batch))
        .map(|(x, y)| -> Result<usize> {
            let out = exec.run(&[batch_tensor(x)?])?;
            let pred = predictions(&out, y.len())?;
            Ok(pred
                .iter()
                .zip(y)
                .filter(|(p, l)| **p == usize::from(**l))
                .count())
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))
        .with_context(|| match &quantized {
            // The file that ran is the quantized one, not its source.
            Some(_) => format!("running {}", args.model),
            None => format!("running {}", target.path.display()),
        })?;
    let elapsed = start.elapsed();
    let n = ds.len();
    let value = correct as f64 / n as f64;

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": quantized.as_ref().map_or(target.name.clone(), |_| args.model.clone()),
                "metric": "top1",
                "value": value,
                "samples": n,
            })
        );
        return Ok(());
    }
    let label = match &quantized {
        Some(m) => format!(
            "{} ({} / {})",
            args.model,
            m.recipe.method.name(),
            m.recipe.backend.name()
        ),
        None => target.name.clone(),
    };
    println!(
        "{label}  {} {}  top-1 {:.2} %  ({correct} / {n})",
        spec.dataset.name(),
        spec.split.name(),
        100.0 * value
    );
    if let Some(fp32) = target
        .entry
        .as_ref()
        .and_then(|e| e.manifest.eval.as_ref())
        .and_then(|e| e.fp32.as_ref())
    {
        let scope = if n == full_len(&spec) {
            "full set"
        } else {
            "a slice only, not comparable"
        };
        println!("manifest fp32 value {:.2} % ({scope})", fp32.value);
    }
    // Which executor ran: a quantized file runs on the quantized one (int8 layers on the
    // kernels; fp16 weights in f32), never on the fp32 executor.
    let engine = match &quantized {
        Some(m) => format!("qbench quantized executor ({})", m.recipe.method.name()),
        None => "qbench fp32 executor".to_string(),
    };
    println!(
        "{engine}, batch {}, {} rayon threads across batches; {:.2} s (load + run)",
        args.batch,
        rayon::current_num_threads(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Size of the full split (MNIST and Fashion-MNIST have the same).
fn full_len(spec: &EvalSpec) -> usize {
    match spec.split {
        Split::Train => 60_000,
        Split::Test => 10_000,
    }
}
