//! `qbench crosscheck`: qbench's fp32 executor against tract-onnx on the same ONNX file and
//! the same inputs.
//!
//! Inputs: for a model with an eval set (a zoo manifest, or `--dataset` for a file), its
//! first N images in batches; otherwise one seeded random input at batch 1, so a model
//! without data is still checked and the check is reproducible. The pass/fail policy is
//! the models crate's ([`CrossCheck::passes`]): all outputs finite, every row's argmax
//! the same on both sides, and max |ours − tract| ≤ [`CROSSCHECK_REL_TOL`] × max |tract|,
//! taken over all batches together.
//!
//! A file whose weights are built by `ConstantOfShape` (the light models, `resnet50`) has
//! constant weights, so every output would be equal on both sides whatever the convolutions
//! did. Those weights are replaced by seeded random ones (`onnx::random_weights`, as the
//! light-model test does) and both sides run that graph (tract from its ONNX export); the
//! output says so. Random weights without trained normalisation give huge logits that a
//! final Softmax saturates to one-hot rows, so the Softmax's input is compared as well:
//! the relative difference is then over the logits' scale, and the usual tolerance holds
//! (measured on all nine light models: ≤ 4.9e-6).

use anyhow::{bail, Context, Result};
use qbench_models::data::{DatasetKind, IMAGE_LEN};
use qbench_models::ir::Dim;
use qbench_models::onnx::crosscheck::{compare, run_tract};
use qbench_models::onnx::random_weights::randomize_constant_weights;
use qbench_models::onnx::{CrossCheck, TractPlan, CROSSCHECK_REL_TOL};
use qbench_models::tensor::Tensor;
use rayon::prelude::*;

use crate::target;

/// Validated arguments of `qbench crosscheck`.
pub struct CrosscheckArgs {
    pub model: String,
    pub samples: usize,
    pub batch: usize,
    pub dataset: Option<DatasetKind>,
    pub seed: u64,
}

/// One batch's comparison plus the row-level argmax counts the summary needs.
struct BatchResult {
    check: CrossCheck,
    rows: usize,
    agree: usize,
}

/// `qbench crosscheck`.
pub fn cmd_crosscheck(args: &CrosscheckArgs) -> Result<()> {
    if args.model.ends_with(".safetensors") {
        return crosscheck_quantized(args);
    }
    let target = target::resolve(&args.model)?;
    let spec = target::eval_spec(&target, args.dataset, false)?;
    let mut graph = target::load_graph(&target.path)?;
    let randomized = randomize_constant_weights(&mut graph, args.seed)
        .with_context(|| format!("randomizing the weights of {}", target.path.display()))?;
    // Random weights give huge logits, and a final Softmax saturates them to one-hot rows
    // that agree whenever the argmax does: its input (the logits) is compared too, as an
    // extra output of both sides.
    let logits = if randomized > 0 {
        expose_softmax_inputs(&mut graph)
    } else {
        Vec::new()
    };
    // Tract runs the randomized graph from its export, never written to disk.
    let proto = (randomized > 0).then(|| qbench_models::onnx::to_model_proto(&graph));
    let exec = target::executor(&graph, &target.path)?;

    let (batches, what): (Vec<Vec<Tensor>>, String) = match &spec {
        Some(spec) => {
            let ds = target::load_dataset(spec, Some(args.samples))?;
            let images = target::model_inputs(&ds, spec);
            let batches = images
                .chunks(args.batch * IMAGE_LEN)
                .map(|x| Ok(vec![target::batch_tensor(x)?]))
                .collect::<Result<Vec<_>>>()?;
            let what = format!(
                "first {} {} {} images, {} batch(es) of up to {}",
                ds.len(),
                spec.dataset.name(),
                spec.split.name(),
                batches.len(),
                args.batch
            );
            (batches, what)
        }
        None => {
            let mut inputs = Vec::new();
            for (i, vi) in graph.inputs.iter().enumerate() {
                // The batch dimension (first, usually symbolic) is 1; any other symbolic
                // dimension has no value we could pick honestly.
                let shape = vi
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(k, d)| match d {
                        Dim::Fixed(n) => Ok(*n),
                        Dim::Symbolic(_) if k == 0 => Ok(1),
                        Dim::Symbolic(s) => bail!(
                            "input {:?} has symbolic dimension {s:?} at axis {k}: cannot make a random input",
                            vi.name
                        ),
                    })
                    .collect::<Result<Vec<usize>>>()?;
                inputs.push(random_input(&shape, args.seed.wrapping_add(i as u64))?);
            }
            let shapes: Vec<String> = inputs.iter().map(|t| format!("{:?}", t.shape())).collect();
            let what = format!(
                "one seeded random input (seed {}, uniform in [-1, 1)), shape {}",
                args.seed,
                shapes.join(", ")
            );
            (vec![inputs], what)
        }
    };

    println!("crosscheck {} ({})", target.name, target.path.display());
    println!("  inputs     {what}");
    if randomized > 0 {
        println!(
            "  weights    {randomized} ConstantOfShape weights replaced by seeded random values (seed {}): the file's constant weights would make every output equal",
            args.seed
        );
    }
    if !logits.is_empty() {
        println!(
            "  compared   the outputs and the final Softmax's input ({}), which random weights would saturate",
            logits.join(", ")
        );
    }
    println!("  ours       qbench fp32 executor (one thread per batch)");
    println!("  reference  tract-onnx, optimised fp32 plan per batch shape");

    // Batches run in parallel; each is independent (tract builds its own plan for the
    // batch's shape), and the max/agree statistics combine in any order.
    let results = batches
        .par_iter()
        .map(|inputs| -> Result<BatchResult> {
            let ours = exec.run(inputs).context("qbench executor")?;
            let theirs = match &proto {
                Some(p) => {
                    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
                    let what = format!("{} with random weights", target.path.display());
                    TractPlan::from_proto(p, &what, &shapes)?.run(inputs)?
                }
                None => run_tract(&target.path, inputs)?,
            };
            let check = compare(&ours, &theirs)
                .map_err(anyhow::Error::msg)
                .context("comparing with tract")?;
            let (mut rows, mut agree) = (0, 0);
            for (a, b) in ours.iter().zip(&theirs) {
                let (pa, pb) = (target::per_sample_argmax(a)?, target::per_sample_argmax(b)?);
                rows += pa.len();
                agree += pa.iter().zip(&pb).filter(|(x, y)| x == y).count();
            }
            Ok(BatchResult { check, rows, agree })
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("cross-checking {}", target.path.display()))?;

    let mut total = CrossCheck {
        max_abs_diff: 0.0,
        max_abs_ref: 0.0,
        rel_diff: 0.0,
        argmax_agree: true,
        finite: true,
        shapes: Vec::new(),
    };
    let (mut rows, mut agree) = (0usize, 0usize);
    for r in &results {
        total.max_abs_diff = total.max_abs_diff.max(r.check.max_abs_diff);
        total.max_abs_ref = total.max_abs_ref.max(r.check.max_abs_ref);
        // The library's flag compares rows of the last axis; ours compares whole samples.
        total.argmax_agree &= r.check.argmax_agree && r.agree == r.rows;
        total.finite &= r.check.finite;
        for s in &r.check.shapes {
            if !total.shapes.contains(s) {
                total.shapes.push(s.clone());
            }
        }
        rows += r.rows;
        agree += r.agree;
    }
    total.rel_diff = total.max_abs_diff / total.max_abs_ref.max(f32::MIN_POSITIVE);

    println!("  max |ours - tract|   {:.3e}", total.max_abs_diff);
    println!("  max |tract|          {:.3e}", total.max_abs_ref);
    println!(
        "  relative             {:.3e}   (tolerance: max |ours - tract| <= {:.0e} x max |tract|)",
        total.rel_diff, CROSSCHECK_REL_TOL
    );
    println!(
        "  argmax agreement     {agree} / {rows} samples ({:.2} %; required: 100 %)",
        100.0 * agree as f64 / rows.max(1) as f64
    );
    println!(
        "  all outputs finite   {}",
        if total.finite { "yes" } else { "no" }
    );
    let shapes: Vec<String> = total.shapes.iter().map(|s| format!("{s:?}")).collect();
    println!("  output shapes        {}", shapes.join(", "));

    // Nothing compared is no agreement: an empty eval set or zero rows must not pass.
    if rows == 0 {
        bail!(
            "{}: no samples were compared (the inputs had no rows)",
            target.path.display()
        );
    }
    if total.passes() {
        println!("PASS");
        return Ok(());
    }
    let mut why = Vec::new();
    if !total.finite {
        why.push("non-finite outputs".to_string());
    }
    if !total.argmax_agree {
        why.push(format!(
            "argmax differs on {} of {rows} samples",
            rows - agree
        ));
    }
    if total.rel_diff.is_nan() || total.rel_diff > CROSSCHECK_REL_TOL {
        why.push(format!(
            "relative difference {:.3e} > {:.0e}",
            total.rel_diff, CROSSCHECK_REL_TOL
        ));
    }
    bail!(
        "crosscheck of {} against tract FAILED: {}",
        target.name,
        why.join("; ")
    )
}

/// Makes the input of every Softmax that produces a graph output a graph output too, and
/// returns those tensors' names.
fn expose_softmax_inputs(graph: &mut qbench_models::ir::Graph) -> Vec<String> {
    let mut added = Vec::new();
    for n in &graph.nodes {
        let feeds_output = n
            .outputs
            .iter()
            .any(|o| graph.outputs.iter().any(|g| g.name == *o));
        if !matches!(n.op, qbench_models::ir::Op::Softmax { .. }) || !feeds_output {
            continue;
        }
        let Some(x) = n.inputs.first() else { continue };
        if !graph.outputs.iter().any(|g| g.name == *x) && !added.contains(x) {
            added.push(x.clone());
        }
    }
    graph
        .outputs
        .extend(added.iter().map(|name| qbench_models::ir::ValueInfo {
            name: name.clone(),
            dims: Vec::new(),
        }));
    added
}

/// `qbench crosscheck FILE.safetensors`: a quantized model's ONNX export (QOperator and,
/// for static models, QDQ) run in tract against our executor on its source model's first
/// eval images (or one seeded random input), under the tolerance policy of
/// `qbench_quantizers::export::tract_check`.
fn crosscheck_quantized(args: &CrosscheckArgs) -> Result<()> {
    use qbench_quantizers::export::{tract_check, Form};
    use qbench_quantizers::Method;

    let path = std::path::Path::new(&args.model);
    let model = qbench_quantizers::save::load(path)?;
    let target = target::resolve_source(path, &model.recipe)?;
    let (input, what) = match target::eval_spec(&target, args.dataset, false)? {
        Some(spec) => {
            let ds = target::load_dataset(&spec, Some(args.samples))?;
            let x = target::batch_tensor(&target::model_inputs(&ds, &spec))?;
            (
                x,
                format!(
                    "first {} {} {} images",
                    ds.len(),
                    spec.dataset.name(),
                    spec.split.name()
                ),
            )
        }
        None => {
            let graph = target::load_graph(&target.path)?;
            let x = crate::target::input_batch(&target, &graph, 1)?;
            let what = format!("one seeded random input of shape {:?}", x.shape());
            (x, what)
        }
    };
    let forms: &[Form] = match model.recipe.method {
        Method::Static | Method::Qat => &[Form::QOperator, Form::Qdq],
        Method::Dynamic | Method::Fp16 => &[Form::QOperator],
        Method::Fp32 => anyhow::bail!("{}: an fp32 model is not quantized", args.model),
    };
    println!(
        "crosscheck {} ({} / {}, from {})",
        args.model,
        model.recipe.method.name(),
        model.recipe.backend.name(),
        target.name
    );
    println!("  inputs     {what}");
    println!("  ours       qbench quantized executor");
    println!("  reference  tract-onnx on the model's ONNX export");
    let mut failed = Vec::new();
    for &form in forms {
        let r = tract_check::check(&model, form, std::slice::from_ref(&input))?;
        println!(
            "  {:<10} max {:.3} LSB (LSB {:.3e}), {:.2} % of elements differ, argmax {:.2} % of {} rows: {}",
            format!("{form:?}"),
            r.max_lsb,
            r.out_scale,
            100.0 * r.diff_fraction,
            100.0 * r.argmax_agreement,
            r.rows,
            if r.passes() { "PASS" } else { "FAIL" }
        );
        if !r.passes() {
            failed.push(format!("{form:?}"));
        }
    }
    if failed.is_empty() {
        println!("PASS");
        return Ok(());
    }
    bail!(
        "crosscheck of {} against tract FAILED ({}): outside the tolerance policy (qbench_quantizers::export::tract_check)",
        args.model,
        failed.join(", ")
    )
}

/// Uniform values in [-1, 1) from the shared SplitMix64 (`qbench_models::rng`), so a run
/// is reproducible from its seed.
fn random_input(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v = qbench_models::rng::Rng::new(seed).uniforms_f32(n, -1.0, 1.0);
    Ok(Tensor::new(shape.to_vec(), v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crosscheck` prints its seed so a run can be repeated: the inputs drawn for a seed
    /// must stay those of the SplitMix64 formula it has always used, spelled out here.
    #[test]
    fn random_inputs_for_a_seed_are_the_recorded_stream() {
        for seed in [0u64, 7, 0xdead_beef] {
            let mut state = seed;
            let expected: Vec<u32> = (0..257)
                .map(|_| {
                    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0).to_bits()
                })
                .collect();
            let got = random_input(&[1, 257], seed).unwrap();
            let got: Vec<u32> = got.f32s().unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, expected, "seed {seed}");
        }
    }
}
