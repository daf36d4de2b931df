//! `qbench bench-model`: a model's fp32 executor and its quantized form timed in one run,
//! samples interleaved, single thread, at a chosen batch: the measurement the sweep uses.

use anyhow::Result;
use qbench_quantizers::QExecutor;
use serde::Serialize;

use crate::pipeline::{self, QuantSpec};
use crate::target;
use crate::timing::measure::{self, Budget, Candidate};

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

/// Builds the quantized model and times it against fp32, interleaved.
pub fn bench(model: &str, spec: &QuantSpec, batch: usize, budget: Budget) -> Result<ModelBench> {
    let target = target::resolve(model)?;
    let graph = target::load_graph(&target.path)?;
    let fp32 = target::executor(&graph, &target.path)?;
    // The input first: a batch the data or the memory budget cannot hold fails before
    // the model is quantized.
    let x = target::input_batch(&target, &graph, batch)?;
    let progress = crate::progress::Progress::spinner();
    let (qmodel, _) = pipeline::build(&target, &graph, spec, &progress)?;
    progress.finish();
    let qexec = QExecutor::new(&qmodel)?;
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

/// `qbench bench-model`: [`bench`], printed as one line or one JSON object.
pub fn cmd_bench_model(
    model: &str,
    spec: &QuantSpec,
    batch: usize,
    json: bool,
    budget: Budget,
) -> Result<()> {
    let r = bench(model, spec, batch, budget)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} {} / {} batch {}: fp32 {:.3} ms, quantized {:.3} ms, speedup {:.2}x (kernel {}, spreads {:.1}% / {:.1}%)",
            r.model, r.method, r.backend, r.batch, r.fp32_ms, r.quant_ms, r.speedup,
            r.kernel, 100.0 * r.fp32_spread, 100.0 * r.quant_spread
        );
    }
    Ok(())
}
