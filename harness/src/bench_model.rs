//! `qbench bench-model`: a model's fp32 executor and its quantized form timed in one run,
//! samples interleaved, single thread, at a chosen batch: the measurement the sweep uses.

use anyhow::{Context, Result};
use qbench_models::tensor::Tensor;
use qbench_quantizers::QExecutor;
use serde::Serialize;

use crate::eval;
use crate::measure::{self, Budget, Candidate};
use crate::quantize::{self, QuantSpec};

/// One bench-model result.
#[derive(Clone, Debug, Serialize)]
pub struct ModelBench {
    pub model: String,
    pub method: String,
    pub backend: String,
    pub batch: usize,
    /// The kernel rung the int8 steps ran on.
    pub kernel: String,
    pub fp32_ms: f64,
    pub quant_ms: f64,
    pub speedup: f64,
    pub fp32_spread: f64,
    pub quant_spread: f64,
}

/// A deterministic input batch for the model: eval images when it has an eval set, else
/// a seeded pseudo-random tensor of its declared input shape.
pub fn input_batch(
    target: &eval::Target,
    graph: &qbench_models::ir::Graph,
    batch: usize,
) -> Result<Tensor> {
    if let Some(spec) = eval::eval_spec(target, None, false)? {
        let ds = eval::load_dataset(&spec, Some(batch))?;
        return eval::batch_tensor(&eval::model_inputs(&ds, &spec));
    }
    let mut dims = qbench_quantizers::shapes::zero_inputs(graph)?
        .into_iter()
        .next()
        .context("the model has no inputs")?
        .1
        .shape()
        .to_vec();
    dims[0] = batch;
    let n: usize = dims.iter().product();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Ok(Tensor::new(dims, data)?)
}

/// Builds the quantized model and times it against fp32, interleaved.
pub fn bench(model: &str, spec: &QuantSpec, batch: usize, budget: Budget) -> Result<ModelBench> {
    let target = eval::resolve(model)?;
    let graph = eval::load_graph(&target.path)?;
    let fp32 = eval::executor(&graph, &target.path)?;
    let progress = crate::progress::Progress::spinner();
    let (qmodel, _) = quantize::build(&target, &graph, spec, &progress)?;
    progress.finish();
    let qexec = QExecutor::new(&qmodel)?;
    let x = input_batch(&target, &graph, batch)?;
    let input = std::slice::from_ref(&x);
    // Fail before timing if either side cannot run.
    fp32.run(input)?;
    qexec.run(input)?;
    let mut candidates = [
        Candidate {
            name: "fp32".into(),
            run: Box::new(|| {
                std::hint::black_box(fp32.run(input).ok());
            }),
        },
        Candidate {
            name: spec.method.name().into(),
            run: Box::new(|| {
                std::hint::black_box(qexec.run(input).ok());
            }),
        },
    ];
    let s = measure::interleaved(&mut candidates, budget);
    Ok(ModelBench {
        model: target.name,
        method: spec.method.name().into(),
        backend: spec.backend.name().into(),
        batch,
        kernel: qexec.rung().name().into(),
        fp32_ms: s[0].median / 1e6,
        quant_ms: s[1].median / 1e6,
        speedup: s[0].median / s[1].median,
        fp32_spread: s[0].spread,
        quant_spread: s[1].spread,
    })
}
