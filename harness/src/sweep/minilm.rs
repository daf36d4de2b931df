//! The sweep's handling of zoo models built from fetched weights rather than loaded from
//! an ONNX file (manifest `architecture = "bert-sentence"`: MiniLM).
//!
//! Such a model has no image eval set and no ONNX file, so the generic path of
//! [`super::group`] (`target::resolve`, top-1 on MNIST) does not apply to it. The plan
//! decides what its cells are ([`super::plan::weights_model`]: absent weights or corpus
//! make every cell skipped with the fetch message, never a failed plan); this module runs
//! its groups:
//!
//! - methods fp32, fp16 and dynamic (every Linear in int8; per-token activation scales are
//!   the cell's numbers, per-tensor ones, PyTorch's default, are measured beside them in
//!   `embedding.per_tensor`); static and qat are skipped with the reason;
//! - accuracy = a logistic-regression probe trained on fp32 embeddings of a seeded train
//!   split of the Rotten Tomatoes snippets, scored on the held-out split; agreement = the
//!   share of held-out snippets where the probe's label equals its label on fp32; the
//!   cosine of each embedding to fp32's (mean, worst) goes in `embedding`;
//! - speed at `batch` × 128 real tokens on each requested thread count, fp32 and every
//!   method interleaved.
//!
//! The fp32 embeddings and the probe are computed once per process and shared by the
//! backends' groups.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::results::{
    Accuracy, Backend, Cell, CellKey, Embedding, Latency, Measure, Method, SweepConfig, Variant,
};
use anyhow::{bail, ensure, Context, Result};
use qbench_models::bert::{self, tokenize};
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Dim, Graph};
use qbench_models::rotten_tomatoes::{self, Snippet};
use qbench_models::tensor::Tensor;
use qbench_models::zoo::ZooEntry;
use qbench_quantizers::fp16::quantize_fp16;
use qbench_quantizers::{
    quantize_dynamic, save, ActScales, DynamicOptions, QExecutor, QuantizedModel,
};
use rayon::prelude::*;

use super::cell::{failed, latency, skipped, speed_absent, Emit};
use super::executors::Rethreaded;
use super::isolate;
use super::plan::{budget, weights_model, Plan};
use crate::embed_metrics::{agreement, cosine_stats, CosineStats, Probe};
use crate::progress::{cell_names, Progress};
use crate::timing::measure::{self, Candidate};
use crate::timing::pools;

/// Sentences of the probe: seeded split sizes. The full run compares ≥ 500 sentences;
/// `--quick` keeps a smoke-test slice.
const TRAIN: usize = 2000;
const TEST: usize = 1000;
const QUICK_TRAIN: usize = 200;
const QUICK_TEST: usize = 100;
/// Tokens per sentence of the latency inputs (the benchmark length of issue 9).
const LATENCY_TOKENS: usize = 128;
/// Sentences per call when embedding the corpus (sorted by length, so little padding).
const EMBED_BATCH: usize = 32;
/// The probe's L2 penalty (scikit-learn's default C = 1).
const PROBE_L2: f64 = 1.0;

/// The data and fp32 results every group of one sweep shares (computed once per process).
struct Shared {
    graph: Graph,
    dir: PathBuf,
    fp32: Executor,
    fp32_size: u64,
    d: usize,
    test_batches: Vec<(Vec<usize>, tokenize::Batch)>,
    test_labels: Vec<bool>,
    test_n: usize,
    fp32_test: Vec<f32>,
    probe: Probe,
    fp32_pred: Vec<bool>,
}

/// The last [`Shared`] built, keyed by model, seed and split sizes.
type SharedCache = Mutex<Option<(String, Arc<Shared>)>>;
static SHARED: OnceLock<SharedCache> = OnceLock::new();

/// Tokenizes `snippets` into batches of similar length; each batch keeps the indices of
/// its sentences so embeddings go back in corpus order.
fn batches(
    tok: &tokenize::SentenceTokenizer,
    snippets: &[Snippet],
) -> Result<Vec<(Vec<usize>, tokenize::Batch)>> {
    let ids: Vec<Vec<u32>> = snippets
        .iter()
        .map(|s| tok.encode(&s.text))
        .collect::<qbench_models::error::Result<_>>()?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| (ids[i].len(), i));
    Ok(order
        .chunks(EMBED_BATCH)
        .map(|c| {
            let rows: Vec<Vec<u32>> = c.iter().map(|&i| ids[i].clone()).collect();
            (c.to_vec(), tokenize::pad(&rows))
        })
        .collect())
}

/// Embeddings of every sentence (`n × d`, corpus order), batches in parallel across rayon
/// threads (each call single-threaded).
fn embed(
    run: &(dyn Fn(&[Tensor]) -> Result<Vec<Tensor>> + Sync),
    batches: &[(Vec<usize>, tokenize::Batch)],
    n: usize,
    d: usize,
) -> Result<Vec<f32>> {
    let parts: Vec<(Vec<usize>, Vec<f32>)> = batches
        .par_iter()
        .map(|(idx, b)| {
            let out = run(&[b.input_ids.clone(), b.attention_mask.clone()])?;
            let t = out
                .into_iter()
                .next()
                .context("the encoder has no output")?;
            ensure!(
                t.shape() == [idx.len(), d],
                "embedding shape {:?}, expected [{}, {d}]",
                t.shape(),
                idx.len()
            );
            Ok((idx.clone(), t.f32s()?.to_vec()))
        })
        .collect::<Result<_>>()?;
    let mut out = vec![0f32; n * d];
    for (idx, v) in parts {
        for (k, &i) in idx.iter().enumerate() {
            out[i * d..(i + 1) * d].copy_from_slice(&v[k * d..(k + 1) * d]);
        }
    }
    Ok(out)
}

fn shared(entry: &ZooEntry, config: &SweepConfig) -> Result<Arc<Shared>> {
    let (train_n, test_n) = if config.quick {
        (QUICK_TRAIN, QUICK_TEST)
    } else {
        (TRAIN, TEST)
    };
    let key = format!("{}/{}/{train_n}/{test_n}", entry.manifest.name, config.seed);
    let cell = SHARED.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().map_err(|_| anyhow::anyhow!("poisoned cache"))?;
    if let Some((k, s)) = guard.as_ref() {
        if *k == key {
            return Ok(Arc::clone(s));
        }
    }
    let dir = crate::fetch::fetched_dir(entry)?;
    let graph = bert::load_graph(&dir)
        .with_context(|| format!("building {} from {}", entry.manifest.name, dir.display()))?;
    let fp32 = Executor::new(&graph, Options { threads: 1 })?;
    let weights = dir.join(&entry.manifest.file);
    let fp32_size = std::fs::metadata(&weights)
        .with_context(|| format!("reading {}", weights.display()))?
        .len();
    let d = match graph.outputs.first().and_then(|o| o.dims.last()) {
        Some(Dim::Fixed(d)) => *d,
        _ => bail!("the encoder's output has no fixed width"),
    };
    let corpus_path = rotten_tomatoes::ensure_fetched()?;
    let corpus = rotten_tomatoes::load(&corpus_path)?;
    let (train, test) =
        rotten_tomatoes::split(&corpus, config.seed.wrapping_add(3), train_n, test_n)?;
    let tok = tokenize::SentenceTokenizer::from_dir(&dir)?;
    let train_batches = batches(&tok, &train)?;
    let test_batches = batches(&tok, &test)?;
    let run = |x: &[Tensor]| Ok(fp32.run(x)?);
    let fp32_train = embed(&run, &train_batches, train_n, d).context("embedding in fp32")?;
    let fp32_test = embed(&run, &test_batches, test_n, d).context("embedding in fp32")?;
    let train_labels: Vec<bool> = train.iter().map(|s| s.fresh).collect();
    let probe = Probe::fit(&fp32_train, d, &train_labels, PROBE_L2);
    let fp32_pred = probe.predict(&fp32_test);
    let s = Arc::new(Shared {
        graph,
        dir,
        fp32,
        fp32_size,
        d,
        test_batches,
        test_labels: test.iter().map(|s| s.fresh).collect(),
        test_n,
        fp32_test,
        probe,
        fp32_pred,
    });
    *guard = Some((key, Arc::clone(&s)));
    Ok(s)
}

/// One built method: its executor and what it scored (batch-independent).
struct Built {
    /// Kept to prepare it again for timing on more than one thread.
    model: QuantizedModel,
    exec: QExecutor,
    size: u64,
    quantize_s: f64,
    cos: CosineStats,
    accuracy: f64,
    agreement: f64,
    kernel: String,
}

fn build(s: &Shared, model: QuantizedModel, took: Duration) -> Result<Built> {
    let exec = QExecutor::new(&model).context("preparing the quantized model")?;
    let size = save::to_bytes(&model)?.len() as u64;
    let emb = embed(&|x| Ok(exec.run(x)?), &s.test_batches, s.test_n, s.d)?;
    let pred = s.probe.predict(&emb);
    let kernel = if model.layers.is_empty() {
        "fp32 (f16 weights)".to_owned()
    } else {
        exec.rung().name().to_owned()
    };
    Ok(Built {
        cos: cosine_stats(&emb, &s.fp32_test, s.d),
        accuracy: agreement(&pred, &s.test_labels),
        agreement: agreement(&pred, &s.fp32_pred),
        model,
        exec,
        size,
        quantize_s: took.as_secs_f64(),
        kernel,
    })
}

fn dynamic(s: &Shared, backend: Backend, act: ActScales) -> Result<Built> {
    let start = Instant::now();
    let mut opts = DynamicOptions::new(backend);
    opts.act_scales = act;
    opts.op_types = vec!["MatMul".into()];
    // The schemes' weight granularity (per channel under fbgemm and vnni, as their static
    // presets and PyTorch's `per_channel_dynamic_qconfig`; per tensor under qnnpack). Not
    // PyTorch's `default_dynamic_qconfig` (per-tensor weights), which `qbench quantize
    // --method dynamic --backend fbgemm` mirrors: on MiniLM it keeps a mean cosine of
    // only 0.934 (per-tensor activations) / 0.962 (per-token) here.
    opts.per_channel = backend.per_channel_weights();
    let mut model = quantize_dynamic(&s.graph, &opts)?;
    model.recipe.source = "minilm".into();
    build(s, model, start.elapsed())
}

fn probe_accuracy(value: f64, fp32: f64, samples: usize) -> Accuracy {
    Accuracy {
        metric: "probe_accuracy".into(),
        value,
        fp32,
        drop_pp: (fp32 - value) * 100.0,
        relative: if fp32 == 0.0 { 0.0 } else { value / fp32 },
        samples,
    }
}

/// What the latency inputs are: `batch` rows of exactly 128 real tokens.
fn latency_input(s: &Shared, batch: usize) -> Result<[Tensor; 2]> {
    let b = crate::bench::minilm::inputs(&s.dir, batch, LATENCY_TOKENS)?;
    Ok([b.input_ids, b.attention_mask])
}

/// The cells of one (model, backend) group of a weights model: build fp16 and dynamic
/// (per-token, with per-tensor beside it), score every method on the probe split, then
/// per batch time fp32 and every method interleaved in one run and hand that batch's
/// cells to `emit`. Skipped cells are handed over first, a failed build's cells at once.
pub fn run_group(
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
    let entry = weights_model(model)?.context("not a model built from weights")?;
    let of =
        |m: Method| -> Vec<&CellKey> { work.iter().copied().filter(|k| k.method == m).collect() };
    progress.cells(&work, "fp32 embeddings of the probe split");
    let s = shared(&entry, config)?;
    let fp32_acc = agreement(&s.fp32_pred, &s.test_labels);
    let mut built: BTreeMap<Method, std::result::Result<Built, String>> = BTreeMap::new();
    let mut per_tensor: Option<std::result::Result<Built, String>> = None;
    if !of(Method::Fp16).is_empty() {
        progress.cells(&of(Method::Fp16), "quantizing");
        let start = Instant::now();
        let b = isolate::run(|| build(&s, quantize_fp16(&s.graph)?, start.elapsed()));
        built.insert(Method::Fp16, b);
    }
    if !of(Method::Dynamic).is_empty() {
        progress.cells(&of(Method::Dynamic), "quantizing, per-token and per-tensor");
        built.insert(
            Method::Dynamic,
            isolate::run(|| dynamic(&s, backend, ActScales::PerRow)),
        );
        per_tensor = Some(isolate::run(|| dynamic(&s, backend, ActScales::PerTensor)));
    }
    for (&m, b) in &built {
        if let Err(e) = b {
            let mine = of(m);
            progress.note(&format!("{} failed: {e}", cell_names(&mine)));
            emit(mine.iter().map(|k| failed(k, e)).collect())?;
        }
    }

    let no_speed = speed_absent(backend, qbench_kernels::isa::active());
    let per_tensor_built = per_tensor.as_ref().and_then(|b| b.as_ref().ok());
    let executors: BTreeMap<u32, std::result::Result<Executors, String>> = config
        .threads
        .iter()
        .map(|&t| {
            let prepared = isolate::run(|| {
                Executors::prepare(&s, &built, per_tensor_built, t as usize, no_speed.is_some())
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
                .filter(|k| !matches!(built.get(&k.method), Some(Err(_))))
                .collect();
            if group.is_empty() {
                continue;
            }
            progress.cells(&group, "timing");
            let timed = executors[&threads]
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|execs| {
                    isolate::run(|| time_batch(config, &s, execs, batch as usize, threads as usize))
                });
            let mut cells = Vec::new();
            for key in group {
                let times = match &timed {
                    Ok(t) => t,
                    Err(e) => {
                        cells.push(failed(key, &format!("timing batch {batch}: {e}")));
                        continue;
                    }
                };
                let mut c = Cell::new(model, key.method, backend, batch, threads);
                c.not_applicable.insert(
                    Measure::Tract,
                    "tract is not run in MiniLM's cells (`qbench bench-minilm` times tract's fp32 against ours)".into(),
                );
                c.not_applicable.insert(
                    Measure::Sqnr,
                    "per-layer SQNR takes single-input models; MiniLM's fidelity is the embedding cosine to fp32".into(),
                );
                match times.get(&Timed::Method(key.method)) {
                    Some((lat, speedup)) => {
                        c.latency_ms = Some(lat.clone());
                        c.speedup_vs_fp32 = Some(*speedup);
                    }
                    None => {
                        c.not_applicable.insert(
                            Measure::Speed,
                            no_speed.clone().unwrap_or_else(|| "not timed".into()),
                        );
                    }
                }
                if key.method == Method::Fp32 {
                    c.kernel = Some("fp32".into());
                    c.size_bytes = Some(s.fp32_size);
                    c.size_ratio = Some(1.0);
                    c.not_applicable
                        .insert(Measure::Quantize, "fp32 is not quantized".into());
                    c.accuracy = Some(probe_accuracy(fp32_acc, fp32_acc, s.test_n));
                    c.agreement = Some(1.0);
                    c.embedding = Some(Embedding {
                        cosine_mean: 1.0,
                        cosine_worst: 1.0,
                        samples: s.test_n,
                        act_scales: None,
                        per_tensor: None,
                    });
                    cells.push(c);
                    continue;
                }
                let b = match built.get(&key.method) {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        cells.push(failed(key, e));
                        continue;
                    }
                    None => {
                        cells.push(failed(key, "not built"));
                        continue;
                    }
                };
                c.kernel = Some(b.kernel.clone());
                c.size_bytes = Some(b.size);
                c.size_ratio = Some(b.size as f64 / s.fp32_size as f64);
                c.quantize_s = Some(b.quantize_s);
                c.accuracy = Some(probe_accuracy(b.accuracy, fp32_acc, s.test_n));
                c.agreement = Some(b.agreement);
                let dynamic = key.method == Method::Dynamic;
                c.embedding = Some(Embedding {
                    cosine_mean: b.cos.mean,
                    cosine_worst: b.cos.worst,
                    samples: b.cos.samples,
                    act_scales: dynamic.then(|| "per_token".into()),
                    per_tensor: match (&per_tensor, dynamic) {
                        (Some(Ok(v)), true) => {
                            let t = times.get(&Timed::PerTensor);
                            Some(Variant {
                                cosine_mean: v.cos.mean,
                                cosine_worst: v.cos.worst,
                                accuracy: v.accuracy,
                                agreement: v.agreement,
                                latency_ms: t.map(|(l, _)| l.median),
                                speedup_vs_fp32: t.map(|(_, x)| *x),
                            })
                        }
                        _ => None,
                    },
                });
                cells.push(c);
            }
            emit(cells)?;
        }
    }
    Ok(())
}

/// What one interleaved run times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timed {
    Method(Method),
    /// The per-tensor variant of dynamic.
    PerTensor,
}

/// MiniLM's executors as timed on one thread count: fp32, and fp16, dynamic (per token)
/// and its per-tensor variant, int8 ones left out when the backend's ISA is absent here
/// (`int8_na`). Prepared once per thread count, for every batch size.
struct Executors<'a> {
    fp32: Rethreaded<'a, Executor>,
    timed: Vec<(Timed, Rethreaded<'a, QExecutor>)>,
}

impl<'a> Executors<'a> {
    fn prepare(
        s: &'a Shared,
        built: &'a BTreeMap<Method, std::result::Result<Built, String>>,
        per_tensor: Option<&'a Built>,
        threads: usize,
        int8_na: bool,
    ) -> Result<Executors<'a>> {
        let mut ours: Vec<(Timed, &Built)> = built
            .iter()
            .filter_map(|(&m, b)| b.as_ref().ok().map(|b| (Timed::Method(m), b)))
            .collect();
        if let Some(p) = per_tensor {
            ours.push((Timed::PerTensor, p));
        }
        ours.retain(|(t, _)| !int8_na || *t == Timed::Method(Method::Fp16));
        let timed = ours
            .into_iter()
            .map(|(t, b)| Ok((t, Rethreaded::quantized(&b.exec, &b.model, threads)?)))
            .collect::<Result<_>>()?;
        Ok(Executors {
            fp32: Rethreaded::fp32(&s.fp32, &s.graph, threads)?,
            timed,
        })
    }
}

/// Times `execs` at `batch` × 128 tokens, interleaved, on `threads` threads.
fn time_batch(
    config: &SweepConfig,
    s: &Shared,
    execs: &Executors,
    batch: usize,
    threads: usize,
) -> Result<BTreeMap<Timed, (Latency, f64)>> {
    let input = latency_input(s, batch)?;
    let fp32 = &execs.fp32;
    let summaries = pools::on_threads(threads, || {
        fp32.get().run(&input)?;
        let mut candidates = vec![Candidate {
            name: "fp32".into(),
            run: Box::new(|| {
                std::hint::black_box(fp32.get().run(&input).ok());
            }),
        }];
        for (t, exec) in &execs.timed {
            let exec = exec.get();
            exec.run(&input)?;
            let input = &input;
            candidates.push(Candidate {
                name: format!("{t:?}"),
                run: Box::new(move || {
                    std::hint::black_box(exec.run(input).ok());
                }),
            });
        }
        anyhow::Ok(measure::interleaved(&mut candidates, budget(config)))
    })??;
    let names =
        std::iter::once(Timed::Method(Method::Fp32)).chain(execs.timed.iter().map(|(t, _)| *t));
    let base = summaries[0].median;
    Ok(names
        .zip(summaries)
        .map(|(t, m)| (t, (latency(&m, batch), base / m.median)))
        .collect())
}
