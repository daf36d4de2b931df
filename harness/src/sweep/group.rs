//! One (model, backend) group of an image model: build and evaluate each method once,
//! then per (batch, threads) time fp32 and every method interleaved, tract alongside, and
//! hand each batch's cells over as soon as they are final.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::{save, sqnr, QExecutor};

use super::cell::{failed, latency, measured_cell, skipped, speed_absent, Emit, Facts};
use super::executors::{predict, top1, Built, EvalData, Executors};
use super::isolate;
use super::plan::{budget, fixed_batch, Plan};
use crate::pipeline::{self, QuantSpec};
use crate::progress::{cell_names, Progress};
use crate::results::{
    Backend, Cell, CellKey, Latency, LayerSqnr, Measure, Method, Sqnr, State, SweepConfig,
};
use crate::target::{self, Target};
use crate::timing::measure::{self, Candidate};
use crate::timing::pools;

/// One (model, backend) group: build and evaluate each method once, then per batch time
/// fp32 and every method interleaved and hand that batch's cells to `emit`, final (tract's
/// columns included). Skipped cells are handed over before any work, and the cells of a
/// method that fails to build as soon as it fails.
pub(super) fn run_group(
    plan: &Plan,
    model: &str,
    backend: Backend,
    keys: &[CellKey],
    progress: &Progress,
    emit: &mut Emit,
) -> Result<()> {
    let config = &plan.config;
    let (skip, work): (Vec<&CellKey>, Vec<&CellKey>) =
        keys.iter().partition(|k| plan.skips.contains_key(*k));
    emit(skip.iter().map(|k| skipped(k, &plan.skips[*k])).collect())?;
    if work.is_empty() {
        return Ok(());
    }
    progress.cells(&work, "loading the model, fp32 eval");
    let target = target::resolve(model)?;
    let graph = target::load_graph(&target.path)?;
    let fp32 = target::executor(&graph, &target.path)?;
    let fp32_size = pipeline::fp32_size(&target, &graph)?;
    let data = match target::eval_spec(&target, None, false)? {
        Some(spec) => {
            let ds = target::load_dataset(&spec, config.eval_limit)?;
            ensure!(!ds.is_empty(), "the eval set of {model} is empty");
            Some(EvalData {
                images: target::model_inputs(&ds, &spec).into_owned(),
                labels: ds.labels().iter().map(|&l| usize::from(l)).collect(),
            })
        }
        None => None,
    };
    let fp32_pred = data
        .as_ref()
        .map(|d| predict(&|x| Ok(fp32.run(x)?), d))
        .transpose()
        .context("evaluating fp32")?;
    let fp32_acc = match (&fp32_pred, &data) {
        (Some(p), Some(d)) => Some(top1(p, &d.labels)),
        _ => None,
    };
    // A model whose file fixes the batch is probed at that batch.
    let sqnr_batch = fixed_batch(&target).unwrap_or(32);
    let sqnr_input = crate::target::input_batch(&target, &graph, sqnr_batch)?;

    let mut methods: Vec<Method> = work
        .iter()
        .map(|k| k.method)
        .filter(|&m| m != Method::Fp32)
        .collect();
    methods.sort();
    methods.dedup();
    // Built once per method, for all its batch sizes.
    let mut built: BTreeMap<Method, std::result::Result<Built, String>> = BTreeMap::new();
    for method in methods {
        let mine: Vec<&CellKey> = work
            .iter()
            .copied()
            .filter(|k| k.method == method)
            .collect();
        progress.cells(&mine, "quantizing");
        let b = isolate::run(|| {
            build_method(
                config,
                &target,
                &graph,
                backend,
                method,
                data.as_ref(),
                fp32_pred.as_deref(),
                &sqnr_input,
                progress,
            )
        });
        if let Err(e) = &b {
            progress.note(&format!("{} failed: {e}", cell_names(&mine)));
            emit(mine.iter().map(|k| failed(k, e)).collect())?;
        }
        built.insert(method, b);
    }

    let no_speed = speed_absent(backend, qbench_kernels::isa::active());
    let facts = Facts {
        model,
        backend,
        fp32_size,
        fp32_acc,
        fp32_pred: fp32_pred.as_deref(),
        data: data.as_ref(),
        no_speed: no_speed.as_deref(),
    };
    let input = |b: usize| crate::target::input_batch(&target, &graph, b);
    let tract_built = built.iter().filter_map(|(&method, b)| {
        let b = b.as_ref().ok()?;
        let pred = b.accuracy.as_ref().map(|a| a.1.as_slice());
        Some(super::tract::Built {
            method,
            model: &b.model,
            pred,
        })
    });
    let tract_group = super::tract::Group {
        config,
        onnx: &target.path,
        built: tract_built.collect(),
        eval_images: data.as_ref().map(|d| d.images.as_slice()),
        fp32_pred: fp32_pred.as_deref(),
        input: &input,
        budget: budget(config),
    };
    let open = |k: &&CellKey| !matches!(built.get(&k.method), Some(Err(_)));
    progress.cells(
        &work.iter().copied().filter(open).collect::<Vec<_>>(),
        "tract: exports and argmax agreement",
    );
    let mut tract = isolate::run(|| Ok(super::tract::TractRun::prepare(tract_group)));

    // Per thread count, the executors timed (on one thread, the ones built above).
    let executors: BTreeMap<u32, std::result::Result<Executors, String>> = config
        .threads
        .iter()
        .map(|&t| {
            let prepared = isolate::run(|| {
                Executors::prepare(&fp32, &graph, &built, t as usize, no_speed.is_some())
            });
            (t, prepared)
        })
        .collect();
    for &batch in &config.batch {
        for &threads in &config.threads {
            let group: Vec<&CellKey> = work
                .iter()
                .copied()
                .filter(|k| k.batch == batch && k.threads == threads)
                .filter(open)
                .collect();
            if group.is_empty() {
                continue;
            }
            progress.cells(&group, "timing");
            let execs = &executors[&threads];
            let timed = execs.as_ref().map_err(Clone::clone).and_then(|execs| {
                isolate::run(|| {
                    time_batch(
                        config,
                        &target,
                        &graph,
                        execs,
                        batch as usize,
                        threads as usize,
                    )
                })
            });
            let mut cells: Vec<Cell> = group
                .iter()
                .map(|key| match &timed {
                    Ok(t) => measured_cell(key, &facts, t, built.get(&key.method)),
                    Err(e) => failed(key, &format!("timing batch {batch}: {e}")),
                })
                .collect();
            progress.cells(&group, "tract");
            // tract never fails a cell (see `tract`); not even by panicking.
            let tract_ran = match (&mut tract, execs) {
                (Ok(t), Ok(execs)) => isolate::run(|| {
                    t.fill(batch, threads, execs, &mut cells);
                    Ok(())
                }),
                (Err(e), _) => Err(e.clone()),
                (_, Err(e)) => Err(e.clone()),
            };
            if let Err(e) = tract_ran {
                for c in cells.iter_mut().filter(|c| c.state == State::Measured) {
                    if c.tract.is_none() {
                        c.not_applicable
                            .insert(Measure::Tract, format!("tract failed: {e}"));
                    }
                }
            }
            emit(cells)?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build_method(
    config: &SweepConfig,
    target: &Target,
    graph: &Graph,
    backend: Backend,
    method: Method,
    data: Option<&EvalData>,
    fp32_pred: Option<&[usize]>,
    sqnr_input: &Tensor,
    progress: &Progress,
) -> Result<Built> {
    ensure!(
        method != Method::Fp32,
        "fp32 is the baseline: nothing to build"
    );
    let mut spec = QuantSpec::new(method, backend);
    spec.calib_samples = config.calib_samples;
    // QAT: `qat_epochs` over `qat_train_samples` training images; its time is the
    // cell's quantization time.
    spec.qat.epochs = config.qat_epochs as usize;
    spec.qat.seed = config.seed.wrapping_add(3);
    spec.qat_samples = config.qat_train_samples;
    let (model, took) = pipeline::build(target, graph, &spec, progress)?;
    let exec = QExecutor::new(&model).context("preparing the quantized model")?;
    let size = save::to_bytes(&model)?.len() as u64;
    let accuracy = match (data, fp32_pred) {
        (Some(d), Some(_)) => {
            let pred = predict(&|x| Ok(exec.run(x)?), d)?;
            Some((top1(&pred, &d.labels), pred))
        }
        _ => None,
    };
    let layers = sqnr::per_layer_sqnr(graph, &model, &exec, sqnr_input)?;
    // An infinite SQNR (identical outputs) has no JSON number; such layers are left out
    // of the summary and the note says so.
    let finite: Vec<LayerSqnr> = layers
        .iter()
        .filter(|l| l.sqnr_db.is_finite())
        .map(|l| LayerSqnr {
            layer: l.layer.clone(),
            db: l.sqnr_db,
        })
        .collect();
    let (sqnr, sqnr_note) = match finite.iter().min_by(|a, b| a.db.total_cmp(&b.db)) {
        Some(worst) => (
            Some(Sqnr {
                worst_layer: worst.layer.clone(),
                worst_db: worst.db,
                mean_db: finite.iter().map(|l| l.db).sum::<f64>() / finite.len() as f64,
                per_layer: finite.clone(),
            }),
            None,
        ),
        None if layers.is_empty() => (None, Some("no int8 layer to compare".to_owned())),
        None => (
            None,
            Some("every layer's output equals fp32 (infinite SQNR)".to_owned()),
        ),
    };
    Ok(Built {
        model,
        exec,
        size,
        quantize_s: took.as_secs_f64(),
        accuracy,
        sqnr,
        sqnr_note,
    })
}

/// Times fp32 and every built method at `batch`, interleaved in one run. Returns each
/// method's latency and speedup against the fp32 of this same run. Int8 methods are left
/// out when their backend's ISA is absent (`int8_na`); fp32 and fp16 run the fp32 kernels.
fn time_batch(
    config: &SweepConfig,
    target: &Target,
    graph: &Graph,
    execs: &Executors,
    batch: usize,
    threads: usize,
) -> Result<BTreeMap<Method, (Latency, f64)>> {
    let x = crate::target::input_batch(target, graph, batch)?;
    let input = std::slice::from_ref(&x);
    let fp32 = &execs.fp32;
    let s = pools::on_threads(threads, || {
        fp32.get().run(input)?;
        let mut candidates = vec![Candidate {
            name: "fp32".into(),
            run: Box::new(|| {
                std::hint::black_box(fp32.get().run(input).ok());
            }),
        }];
        for (m, exec) in &execs.methods {
            let exec = exec.get();
            exec.run(input)?;
            candidates.push(Candidate {
                name: m.name().into(),
                run: Box::new(move || {
                    std::hint::black_box(exec.run(input).ok());
                }),
            });
        }
        anyhow::Ok(measure::interleaved(&mut candidates, budget(config)))
    })??;
    let names = std::iter::once(Method::Fp32).chain(execs.methods.iter().map(|(m, _)| *m));
    let base = s[0].median;
    Ok(names
        .zip(s)
        .map(|(m, s)| (m, (latency(&s, batch), base / s.median)))
        .collect())
}
