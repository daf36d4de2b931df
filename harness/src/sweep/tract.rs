//! The sweep's tract columns (`cells[].tract`): tract-onnx running the same models as a
//! (model, backend) group's cells, measured in the sweep's process.
//!
//! - **What tract runs**: the model's fp32 ONNX file for the fp32 cells, and our ONNX
//!   export of each built method for the others (`qbench_quantizers::export`, asked for
//!   as the QOperator form): static = QLinearConv / MatMulInteger on tract's int8
//!   kernels, dynamic = plain-op quantization + MatMulInteger, fp16 = FLOAT16 weights
//!   cast to float. Its median is `int8_ms` (for fp16 cells: the fp16 export's).
//! - **Latency**: per batch size and thread count, our fp32 and quantized executors and
//!   tract's plans are timed in one interleaved run with the sweep's budget and median
//!   method ([`crate::timing::measure::interleaved`]), so `ours_ms` and tract's figures come from
//!   the same conditions. On N threads, ours run in a rayon pool of N workers and tract on
//!   its own executor of N workers (tract-linalg's `multithread-mm`). A method whose backend's ISA is absent here is not timed on our side
//!   (its speed is `n/a`), but tract still runs its export.
//! - **Agreement**: tract's argmax over a slice of the eval set against ours for the same
//!   cell (`agreement`) and against our fp32 (`agreement_fp32`).
//! - **Cost in `--quick`**: a 256-input slice (one eval batch) and the first batch size
//!   only (other batch sizes say so in `note`), so the tests' quick sweeps stay quick.
//!
//! - **Order**: [`TractRun::prepare`] makes the exports and the agreement slice once per
//!   group; [`TractRun::fill`] times one batch size and thread count and fills those
//!   cells, so the sweep can record them as soon as they are final.
//!
//! tract failing on a model (an op it lacks, a shape it cannot infer) never fails a cell:
//! the error goes into `tract.note` and the measured parts stay (a panic, caught by the
//! sweep, goes into `not_applicable.tract`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::results::{Cell, Measure, Method, State, SweepConfig, Tract};
use anyhow::{Context, Result};
use qbench_models::data::IMAGE_LEN;
use qbench_models::onnx::crosscheck::TractPlan;
use qbench_models::tensor::Tensor;
use qbench_quantizers::export::{self, Form};
use qbench_quantizers::QuantizedModel;

use super::executors::{Executors, EVAL_BATCH};
use crate::target;
use crate::timing::measure::{self, Budget, Candidate};
use crate::timing::pools;
use tract_linalg::multithread::multithread_tract_scope;

/// Eval inputs compared with tract: the first `EVAL_SLICE` (`QUICK_EVAL_SLICE` in
/// `--quick`), in chunks of `CHUNK` (tract plans have fixed shapes). `CHUNK` is the
/// batch the sweep evaluates our models in ([`EVAL_BATCH`]) and the slices are whole
/// chunks: dynamic quantization takes one activation scale per tensor, i.e. per batch, so
/// tract must see the same batches as our executor did or the two quantize differently.
const EVAL_SLICE: usize = 4 * CHUNK;
const QUICK_EVAL_SLICE: usize = CHUNK;
const CHUNK: usize = EVAL_BATCH;

/// One built method of the group.
pub struct Built<'a> {
    pub method: Method,
    pub model: &'a QuantizedModel,
    /// Our predictions over the eval set (None without one).
    pub pred: Option<&'a [usize]>,
}

/// Everything of a (model, backend) group the tract columns need.
pub struct Group<'a> {
    pub config: &'a SweepConfig,
    pub onnx: &'a Path,
    pub built: Vec<Built<'a>>,
    /// Eval inputs as the model wants them (`IMAGE_LEN` floats each), if it has an eval set.
    pub eval_images: Option<&'a [f32]>,
    pub fp32_pred: Option<&'a [usize]>,
    /// The timing input of a batch size (the sweep's own).
    pub input: &'a dyn Fn(usize) -> Result<Tensor>,
    pub budget: Budget,
}

/// A source tract runs: the fp32 file, or one method's export.
enum Source<'a> {
    Fp32(&'a Path),
    Export(Method, Box<export::ModelProto>),
}

impl Source<'_> {
    fn method(&self) -> Method {
        match self {
            Source::Fp32(_) => Method::Fp32,
            Source::Export(m, _) => *m,
        }
    }

    fn plan(&self, shape: &[usize]) -> Result<TractPlan> {
        Ok(match self {
            Source::Fp32(p) => TractPlan::new(p, &[shape])?,
            Source::Export(m, proto) => {
                TractPlan::from_proto(proto, &format!("the {} export", m.name()), &[shape])?
            }
        })
    }
}

/// What tract gave for one method: predictions on the slice and medians per batch.
#[derive(Default)]
struct Measured {
    pred: Option<Vec<usize>>,
    /// (batch, threads) → (tract median ms, our median ms in the same run)
    ms: BTreeMap<(u32, u32), (f64, Option<f64>)>,
    notes: Vec<String>,
}

/// tract's side of a group: its sources, what they gave so far, and the batch sizes it
/// is timed at. Prepared once per group, then filled in per batch, so each batch's cells
/// are final (and written) as soon as that batch is timed.
pub struct TractRun<'a> {
    g: Group<'a>,
    sources: Vec<Source<'a>>,
    measured: BTreeMap<Method, Measured>,
    /// Batch sizes tract is timed at (`--quick`: the first only).
    timed: Vec<u32>,
    /// The (batch, threads) already timed.
    done: Vec<(u32, u32)>,
}

impl<'a> TractRun<'a> {
    /// Exports each built method and runs tract's argmax over the eval slice: the
    /// batch-independent part.
    pub fn prepare(g: Group<'a>) -> TractRun<'a> {
        let mut sources = vec![Source::Fp32(g.onnx)];
        let mut measured: BTreeMap<Method, Measured> = BTreeMap::new();
        for b in &g.built {
            match export::to_model_proto(b.model, Form::QOperator) {
                Ok(p) => sources.push(Source::Export(b.method, Box::new(p))),
                Err(e) => {
                    measured
                        .entry(b.method)
                        .or_default()
                        .notes
                        .push(one_line(&format!("no ONNX export for tract: {e}")));
                }
            }
        }
        let quick = g.config.quick;
        if let Some(images) = g.eval_images {
            let limit = if quick { QUICK_EVAL_SLICE } else { EVAL_SLICE };
            let n = (images.len() / IMAGE_LEN).min(limit);
            for s in &sources {
                let m = measured.entry(s.method()).or_default();
                match predict(s, &images[..n * IMAGE_LEN]) {
                    Ok(p) => m.pred = Some(p),
                    Err(e) => m
                        .notes
                        .push(one_line(&format!("tract cannot run it: {e:#}"))),
                }
            }
        }
        let timed: Vec<u32> = if quick {
            g.config.batch.iter().copied().take(1).collect()
        } else {
            g.config.batch.clone()
        };
        TractRun {
            g,
            sources,
            measured,
            timed,
            done: Vec::new(),
        }
    }

    /// Times tract at `batch` on `threads` threads (if it is timed at that batch and was
    /// not yet), then fills `tract` (or `not_applicable.tract`) of every measured cell in
    /// `cells`, all of that batch and thread count; `execs` are ours on that count.
    pub fn fill(&mut self, batch: u32, threads: u32, execs: &Executors, cells: &mut [Cell]) {
        if self.timed.contains(&batch) && !self.done.contains(&(batch, threads)) {
            self.done.push((batch, threads));
            let timed = time_batch(
                &self.g,
                &self.sources,
                execs,
                batch,
                threads,
                &mut self.measured,
            );
            if let Err(e) = timed {
                for s in &self.sources {
                    self.measured
                        .entry(s.method())
                        .or_default()
                        .notes
                        .push(one_line(&format!(
                            "batch {batch} not timed in tract: {e:#}"
                        )));
                }
            }
        }
        for c in cells.iter_mut() {
            if c.state != State::Measured {
                continue;
            }
            c.not_applicable.remove(&Measure::Tract);
            let Some(m) = self.measured.get(&c.method) else {
                c.not_applicable.insert(
                    Measure::Tract,
                    "tract did not run this method (not built)".into(),
                );
                continue;
            };
            c.tract = Some(tract_of(
                c,
                m,
                self.measured.get(&Method::Fp32),
                &self.g,
                &self.timed,
            ));
        }
    }
}

fn tract_of(
    c: &Cell,
    m: &Measured,
    fp32: Option<&Measured>,
    g: &Group,
    timed_batches: &[u32],
) -> Tract {
    let is_fp32 = c.method == Method::Fp32;
    let key = (c.batch, c.threads);
    let fp32_tract = fp32.and_then(|f| f.ms.get(&key)).map(|t| t.0);
    let own = m.ms.get(&key);
    let ours_pred = if is_fp32 {
        g.fp32_pred
    } else {
        g.built
            .iter()
            .find(|b| b.method == c.method)
            .and_then(|b| b.pred)
    };
    let share = |theirs: &[usize], ours: Option<&[usize]>| {
        ours.map(|o| {
            let same = theirs.iter().zip(o).filter(|(a, b)| a == b).count();
            same as f64 / theirs.len().max(1) as f64
        })
    };
    let mut notes = m.notes.clone();
    if !timed_batches.contains(&c.batch) {
        notes.push(format!(
            "--quick times tract at batch {} only",
            timed_batches.first().copied().unwrap_or(1)
        ));
    }
    if g.eval_images.is_none() {
        notes.push("no eval set: agreement not measured".into());
    }
    let pred = m.pred.as_deref();
    Tract {
        fp32_ms: fp32_tract,
        int8_ms: if is_fp32 { None } else { own.map(|t| t.0) },
        ours_ms: own.and_then(|t| t.1),
        agreement: pred.and_then(|p| share(p, ours_pred)),
        agreement_fp32: if is_fp32 {
            None
        } else {
            pred.and_then(|p| share(p, g.fp32_pred))
        },
        samples: pred.map(|p| p.len()),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// An error as one line for a note: tract's errors print their cause chain over several
/// lines and, with `RUST_BACKTRACE` set, a stack backtrace, which is no use in a report.
fn one_line(text: &str) -> String {
    let text = text.split("Stack backtrace:").next().unwrap_or(text);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// tract's argmax over `images`, in chunks of [`CHUNK`] (plans have fixed shapes).
fn predict(source: &Source, images: &[f32]) -> Result<Vec<usize>> {
    let n = images.len() / IMAGE_LEN;
    let mut plans: BTreeMap<usize, TractPlan> = BTreeMap::new();
    let mut pred = Vec::with_capacity(n);
    for chunk in images.chunks(CHUNK * IMAGE_LEN) {
        let x = target::batch_tensor(chunk)?;
        let rows = x.shape()[0];
        let plan = match plans.entry(rows) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(source.plan(x.shape())?),
        };
        let out = plan.run(std::slice::from_ref(&x))?;
        pred.extend(target::predictions(&out, rows)?);
    }
    Ok(pred)
}

/// One interleaved run at `batch` on `threads` threads: our fp32 and methods (prepared
/// for `threads`), tract's fp32 and exports (on a tract executor of `threads` workers).
fn time_batch(
    g: &Group,
    sources: &[Source],
    execs: &Executors,
    batch: u32,
    threads: u32,
    measured: &mut BTreeMap<Method, Measured>,
) -> Result<()> {
    let threads = threads as usize;
    let x = (g.input)(batch as usize)?;
    let input = std::slice::from_ref(&x);
    let tract_threads = pools::tract_executor(threads);
    let mut plans = Vec::new();
    for s in sources {
        let planned = s.plan(x.shape()).and_then(|p| {
            multithread_tract_scope(tract_threads.clone(), || p.run(input))?;
            Ok(p)
        });
        match planned {
            Ok(p) => plans.push((s.method(), p)),
            Err(e) => measured
                .entry(s.method())
                .or_default()
                .notes
                .push(one_line(&format!(
                    "tract cannot run it at batch {batch}: {e:#}"
                ))),
        }
    }
    let fp32 = &execs.fp32;
    // (method, is tract) per candidate, in candidate order.
    let mut who: Vec<(Method, bool)> = Vec::new();
    let budget = g.budget;
    let summaries = pools::on_threads(threads, || {
        let mut candidates: Vec<Candidate> = Vec::new();
        fp32.get().run(input).context("our fp32")?;
        who.push((Method::Fp32, false));
        candidates.push(Candidate {
            name: "fp32".into(),
            run: Box::new(|| {
                std::hint::black_box(fp32.get().run(input).ok());
            }),
        });
        for (method, exec) in &execs.methods {
            let exec = exec.get();
            if exec.run(input).is_err() {
                continue;
            }
            who.push((*method, false));
            candidates.push(Candidate {
                name: method.name().into(),
                run: Box::new(move || {
                    std::hint::black_box(exec.run(input).ok());
                }),
            });
        }
        for (m, p) in &plans {
            who.push((*m, true));
            let tract_threads = &tract_threads;
            candidates.push(Candidate {
                name: format!("tract-{}", m.name()),
                run: Box::new(move || {
                    multithread_tract_scope(tract_threads.clone(), || {
                        std::hint::black_box(p.run(input).ok())
                    });
                }),
            });
        }
        anyhow::Ok(measure::interleaved(&mut candidates, budget))
    })??;
    let ms: BTreeMap<(Method, bool), f64> = who
        .into_iter()
        .zip(&summaries)
        .map(|(k, s)| (k, s.median / 1e6))
        .collect();
    for (&(m, is_tract), &v) in &ms {
        if is_tract {
            let ours = ms.get(&(m, false)).copied();
            let key = (batch, threads as u32);
            measured.entry(m).or_default().ms.insert(key, (v, ours));
        }
    }
    Ok(())
}
