//! What a group builds and runs: a built method, the eval data, the executors as timed on
//! some thread count (prepared once per count and shared with tract's run), and top-1
//! predictions over the eval set in batches of [`EVAL_BATCH`].

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use qbench_models::data::IMAGE_LEN;
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::QExecutor;
use rayon::prelude::*;

use crate::results::{Method, Sqnr};
use crate::target::{self};

/// What a built method contributes to its cells regardless of batch.
pub(super) struct Built {
    pub(super) model: qbench_quantizers::QuantizedModel,
    pub(super) exec: QExecutor,
    pub(super) size: u64,
    pub(super) quantize_s: f64,
    pub(super) accuracy: Option<(f64, Vec<usize>)>,
    pub(super) sqnr: Option<Sqnr>,
    pub(super) sqnr_note: Option<String>,
}

/// The eval data of a model: inputs and labels, `None` without an eval set.
pub(super) struct EvalData {
    pub(super) images: Vec<f32>,
    pub(super) labels: Vec<usize>,
}

/// Images per batch when the sweep evaluates accuracy. Dynamic quantization takes one
/// activation scale per tensor, i.e. per batch, so tract's cross-check
/// ([`super::tract`]) must feed the same batches: both use this one constant.
pub(crate) const EVAL_BATCH: usize = 256;

/// Predictions over the eval set, in parallel batches of [`EVAL_BATCH`] across rayon threads
/// (the latency measurement, not this, is what uses exactly the requested threads).
pub(super) fn predict(
    run: &(dyn Fn(&[Tensor]) -> Result<Vec<Tensor>> + Sync),
    data: &EvalData,
) -> Result<Vec<usize>> {
    let chunks: Vec<&[f32]> = data.images.chunks(EVAL_BATCH * IMAGE_LEN).collect();
    let preds: Vec<Vec<usize>> = chunks
        .par_iter()
        .map(|x| {
            let out = run(&[target::batch_tensor(x)?])?;
            target::predictions(&out, x.len() / IMAGE_LEN)
        })
        .collect::<Result<_>>()?;
    Ok(preds.concat())
}

pub(super) fn top1(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
}

/// An executor as timed on some number of threads: the one built for evaluation (one
/// thread) when that is the number, else the same model prepared again for `threads`
/// (weights repacked; evaluation itself stays one thread per call, parallel across
/// batches).
pub(crate) enum Rethreaded<'a, E> {
    Built(&'a E),
    Prepared(E),
}

impl<E> Rethreaded<'_, E> {
    pub(crate) fn get(&self) -> &E {
        match self {
            Rethreaded::Built(e) => e,
            Rethreaded::Prepared(e) => e,
        }
    }
}

impl<'a> Rethreaded<'a, Executor> {
    pub(crate) fn fp32(built: &'a Executor, graph: &Graph, threads: usize) -> Result<Self> {
        Ok(if threads == 1 {
            Rethreaded::Built(built)
        } else {
            Rethreaded::Prepared(Executor::new(graph, Options { threads })?)
        })
    }
}

impl<'a> Rethreaded<'a, QExecutor> {
    pub(crate) fn quantized(
        built: &'a QExecutor,
        model: &qbench_quantizers::QuantizedModel,
        threads: usize,
    ) -> Result<Self> {
        Ok(if threads == built.threads() {
            Rethreaded::Built(built)
        } else {
            Rethreaded::Prepared(
                QExecutor::with_threads(model, threads).with_context(|| {
                    format!("preparing the quantized model for {threads} threads")
                })?,
            )
        })
    }
}

/// A group's executors as they are timed on one thread count: our fp32 and every built
/// method that is timed here. Prepared once per thread count, and shared by our timing
/// and tract's interleaved run.
pub(crate) struct Executors<'a> {
    pub fp32: Rethreaded<'a, Executor>,
    /// Timed methods, in method order.
    pub methods: Vec<(Method, Rethreaded<'a, QExecutor>)>,
}

impl<'a> Executors<'a> {
    pub(super) fn prepare(
        fp32: &'a Executor,
        graph: &Graph,
        built: &'a BTreeMap<Method, std::result::Result<Built, String>>,
        threads: usize,
        int8_na: bool,
    ) -> Result<Executors<'a>> {
        let methods = built
            .iter()
            .filter_map(|(&m, b)| b.as_ref().ok().map(|b| (m, b)))
            .filter(|(m, _)| !int8_na || *m == Method::Fp16)
            .map(|(m, b)| Ok((m, Rethreaded::quantized(&b.exec, &b.model, threads)?)))
            .collect::<Result<_>>()?;
        Ok(Executors {
            fp32: Rethreaded::fp32(fp32, graph, threads)?,
            methods,
        })
    }
}
