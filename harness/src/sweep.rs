//! `qbench sweep`: the model × method × backend × batch × threads grid, measured and
//! written to `results.json` (schema in `qbench::results`) plus the reports beside it.
//!
//! Order of work, and why:
//! 1. The whole plan is resolved and validated first (config file, flags, zoo names,
//!    eval sets), so a typo fails in milliseconds, not after an hour of measuring.
//! 2. Cells are grouped by (model, backend), the shard unit: a group builds each
//!    quantized model once, evaluates it once (accuracy does not depend on the latency
//!    batch), then per (batch, threads) times fp32 and every method interleaved in one
//!    run, so each speedup is against an fp32 baseline measured alongside it.
//! 3. Cells are recorded as soon as they are final (`sweep_store`: an atomic rewrite of
//!    `results.json`): skipped ones before any work, a failed build's at once, measured
//!    ones per (batch, threads) after that batch's interleaved run (ours and tract's). An
//!    interrupted sweep keeps every recorded cell and `--resume DIR` completes the rest.
//! 4. Each unit of work (a group, a method's build, a batch's timing) runs isolated
//!    (`isolate`): an error or a panic fails the cells it was to fill, with its message,
//!    and the sweep goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use qbench::results::{
    self, Accuracy, Backend, Cell, CellKey, Latency, LayerSqnr, Measure, Method, Shard, Sqnr,
    State, SweepConfig,
};
use qbench_kernels::isa::Rung;
use qbench_models::data::IMAGE_LEN;
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_models::zoo::Dim;
use qbench_quantizers::{save, sqnr, QExecutor};
use rayon::prelude::*;

use crate::eval::{self, Target};
use crate::isolate;
use crate::measure::{self, Budget, Candidate};
use crate::progress::{cell_names, Progress};
use crate::quantize::{self, QuantSpec};
use crate::sweep_minilm;
use crate::sweep_store::Store;

/// The embedded default: every zoo model present, the whole method and backend grid.
/// `models = []` here means "the zoo as found at run time".
const DEFAULT_CONFIG: &str = r#"
models = []
methods = ["fp32", "fp16", "dynamic", "static", "qat"]
backends = ["fbgemm", "vnni", "qnnpack"]
batch = [1, 32]
threads = [1]
seed = 0
quick = false
calib_samples = 1024
qat_epochs = 1
# A sixth of an epoch: one full epoch per (model, backend) would add 15-25 minutes on 2
# cores; `qbench quantize --method qat` trains on the whole split by default.
qat_train_samples = 10000
warmup_ms = 100
budget_ms = 500
"#;

/// `--quick`: the eval slice and the time budgets used instead of the config's.
const QUICK_EVAL: usize = 500;
const QUICK_CALIB: usize = 256;
const QUICK_WARMUP_MS: u64 = 20;
/// `--quick`: QAT fine-tunes on this many training images.
const QUICK_QAT: usize = 1000;
const QUICK_BUDGET_MS: u64 = 120;

/// Command-line overrides of the config, as parsed by clap (strings checked here, so the
/// message can list the valid names).
#[derive(Default)]
pub struct SweepArgs {
    pub config: Option<PathBuf>,
    pub models: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub backends: Option<Vec<String>>,
    pub batch: Option<Vec<u32>>,
    pub threads: Option<Vec<u32>>,
    pub quick: bool,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub shard: Option<String>,
    pub dry_run: bool,
}

/// One validated sweep: the resolved config, its shard, the cells it will fill.
pub struct Plan {
    pub config: SweepConfig,
    pub shard: Option<Shard>,
    pub out: PathBuf,
    pub cells: Vec<CellKey>,
    /// Cells known to be skipped before any work, with the reason.
    pub skips: BTreeMap<CellKey, String>,
}

fn parse_names<T: Copy>(
    flag: &str,
    items: &[String],
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>> {
    items
        .iter()
        .map(|s| {
            all.iter()
                .copied()
                .find(|&v| name(v) == s.trim())
                .with_context(|| {
                    let valid: Vec<&str> = all.iter().map(|&v| name(v)).collect();
                    format!("{flag}: unknown name {s:?}; valid: {}", valid.join(", "))
                })
        })
        .collect()
}

fn parse_shard(s: &str) -> Result<Shard> {
    let bad = || format!("--shard {s:?}: expected i/n with 0 ≤ i < n (i is 0-based), e.g. 0/4");
    let (i, n) = s.split_once('/').with_context(bad)?;
    let index: u32 = i.trim().parse().ok().with_context(bad)?;
    let count: u32 = n.trim().parse().ok().with_context(bad)?;
    ensure!(count > 0 && index < count, bad());
    Ok(Shard { index, count })
}

/// The zoo models present (those with a manifest).
fn zoo_names() -> Result<Vec<String>> {
    let dir = qbench_models::zoo::zoo_dir();
    let mut names: Vec<String> = qbench_models::zoo::list(&dir)
        .with_context(|| format!("reading the model zoo in {}", dir.display()))?
        .into_iter()
        .map(|e| e.manifest.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Resolves config + flags into a plan, checking everything that can be checked without
/// loading a model.
pub fn plan(args: &SweepArgs) -> Result<Plan> {
    let mut config: SweepConfig = match &args.config {
        Some(path) => SweepConfig::read_toml(path)?,
        None => results::from_toml(DEFAULT_CONFIG, Path::new("<built-in default config>"))?,
    };
    if let Some(m) = &args.models {
        config.models = m.iter().map(|s| s.trim().to_owned()).collect();
    }
    if let Some(m) = &args.methods {
        config.methods = parse_names("--methods", m, &results::METHODS, Method::as_str)?;
    }
    if let Some(b) = &args.backends {
        config.backends = parse_names("--backends", b, &results::BACKENDS, Backend::as_str)?;
    }
    if let Some(b) = &args.batch {
        config.batch = b.clone();
    }
    if let Some(t) = &args.threads {
        config.threads = t.clone();
    }
    if args.quick {
        config.quick = true;
    }
    if config.models.is_empty() {
        config.models = zoo_names()?;
        ensure!(
            !config.models.is_empty(),
            "the model zoo in {} has no models with a manifest; name models with --models",
            qbench_models::zoo::zoo_dir().display()
        );
    }
    if config.quick {
        config.eval_limit = Some(config.eval_limit.map_or(QUICK_EVAL, |n| n.min(QUICK_EVAL)));
        config.calib_samples = config.calib_samples.min(QUICK_CALIB);
        config.warmup_ms = config.warmup_ms.min(QUICK_WARMUP_MS);
        config.budget_ms = config.budget_ms.min(QUICK_BUDGET_MS);
        config.qat_train_samples = Some(
            config
                .qat_train_samples
                .map_or(QUICK_QAT, |n| n.min(QUICK_QAT)),
        );
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("sweep config: {e}"))?;
    // More threads than cores would time the scheduler's time-slicing, not the kernels.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if let Some(t) = config.threads.iter().find(|&&t| t as usize > cores) {
        bail!(
            "threads {t}: this machine has {cores} cores; latencies on more threads than cores would measure time-slicing (run those thread counts on a machine that has the cores)"
        );
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;

    // Every model must resolve (zoo name or existing file) before any work.
    let mut skips = BTreeMap::new();
    let mut has_eval = BTreeMap::new();
    let mut fixed_batches: BTreeMap<String, usize> = BTreeMap::new();
    // Models built from fetched weights (MiniLM): their own rules (sweep_minilm); absent
    // weights skip their cells with the fetch message instead of failing the plan.
    let mut weights_models: BTreeMap<String, Option<String>> = BTreeMap::new();
    for m in &config.models {
        if let Some(entry) = sweep_minilm::weights_model(m)? {
            weights_models.insert(m.clone(), sweep_minilm::absent_reason(&entry));
            continue;
        }
        let target = eval::resolve(m).with_context(|| format!("--models / `models`: {m}"))?;
        // A malformed eval section fails the plan now, not the model's cells later. A model
        // without an eval set still gets static cells: calibrated on seeded noise, timed, and
        // its accuracy n/a.
        has_eval.insert(m.clone(), eval::eval_spec(&target, None, false)?.is_some());
        if let Some(b) = fixed_batch(&target) {
            fixed_batches.insert(m.clone(), b);
        }
    }
    let mut cells = Vec::new();
    for (g, (model, backend)) in groups(&config).into_iter().enumerate() {
        if let Some(s) = shard {
            if g as u32 % s.count != s.index {
                continue;
            }
        }
        for &method in &config.methods {
            for &batch in &config.batch {
                for &threads in &config.threads {
                    let key = CellKey {
                        model: model.clone(),
                        method,
                        backend,
                        batch,
                        threads,
                    };
                    if let Some(absent) = weights_models.get(&model) {
                        if let Some(r) = absent
                            .clone()
                            .or_else(|| sweep_minilm::method_skip(method).map(str::to_owned))
                        {
                            skips.insert(key.clone(), r);
                        }
                    } else if method == Method::Qat && !has_eval[&model] {
                        skips.insert(
                            key.clone(),
                            format!(
                                "{model} has no eval set, so no training split to fine-tune QAT on"
                            ),
                        );
                    } else if let Some(&fixed) = fixed_batches
                        .get(&model)
                        .filter(|&&fixed| fixed != batch as usize)
                    {
                        skips.insert(
                            key.clone(),
                            format!("{model}'s file fixes the batch at {fixed}"),
                        );
                    }
                    cells.push(key);
                }
            }
        }
    }
    let out = match (&args.resume, &args.out) {
        (Some(_), Some(_)) => bail!("--resume DIR and --out DIR both name the output; give one"),
        (Some(dir), None) | (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from("reports/runs").join(utc_stamp()),
    };
    Ok(Plan {
        config,
        shard,
        out,
        cells,
        skips,
    })
}

/// The batch a model's file fixes (speed-only models may), from its manifest.
fn fixed_batch(target: &Target) -> Option<usize> {
    match target.entry.as_ref()?.manifest.input.shape.first()? {
        Dim::Fixed(n) => Some(*n),
        Dim::Symbolic(_) => None,
    }
}

/// The (model, backend) pairs in grid order: the unit of sharding and of fp32 baselines.
fn groups(config: &SweepConfig) -> Vec<(String, Backend)> {
    let mut g = Vec::new();
    for m in &config.models {
        for &b in &config.backends {
            g.push((m.clone(), b));
        }
    }
    g
}

fn utc_stamp() -> String {
    // 2026-11-27T01:02:03Z → 20261127T010203Z, the directory name ci/main.sh uses.
    results::rfc3339_utc(std::time::SystemTime::now()).replace(['-', ':'], "")
}

pub(crate) fn budget(config: &SweepConfig) -> Budget {
    let base = if config.quick {
        Budget::QUICK
    } else {
        Budget::DEFAULT
    };
    Budget {
        warmup: Duration::from_millis(config.warmup_ms),
        measure: Duration::from_millis(config.budget_ms),
        ..base
    }
}

fn to_quant(b: Backend) -> qbench_quantizers::Backend {
    match b {
        Backend::Fbgemm => qbench_quantizers::Backend::Fbgemm,
        Backend::Vnni => qbench_quantizers::Backend::Vnni,
        Backend::Qnnpack => qbench_quantizers::Backend::Qnnpack,
    }
}

fn to_quant_method(m: Method) -> Option<qbench_quantizers::Method> {
    match m {
        Method::Fp32 => None,
        Method::Fp16 => Some(qbench_quantizers::Method::Fp16),
        Method::Dynamic => Some(qbench_quantizers::Method::Dynamic),
        Method::Static => Some(qbench_quantizers::Method::Static),
        Method::Qat => Some(qbench_quantizers::Method::Qat),
    }
}

/// Why this machine cannot time `backend`'s kernels natively, if it cannot. Accuracy is
/// still computed: every rung is bit-exact with the reference, so the scheme's numbers
/// are the same on whichever rung runs here.
pub(crate) fn speed_absent(backend: Backend, rung: Rung) -> Option<String> {
    // A rung above the scheme's own (amx above avx512vnni) runs it natively too: it has
    // the instructions the scheme's kernels were written for, and faster ones.
    let native = match backend {
        Backend::Fbgemm => matches!(rung, Rung::Avx2 | Rung::Avx512Vnni | Rung::Amx),
        Backend::Vnni => matches!(rung, Rung::Avx512Vnni | Rung::Amx),
        Backend::Qnnpack => matches!(rung, Rung::Neon | Rung::NeonDotprod),
    };
    let isa = match backend {
        Backend::Fbgemm => "x86-64 AVX2",
        Backend::Vnni => "AVX-512 VNNI",
        Backend::Qnnpack => "aarch64 NEON",
    };
    (!native).then(|| {
        format!("{isa} is absent here (rung {rung}); accuracy is exact regardless: this scheme ran on the {rung} rung, bit-exact with the generic one")
    })
}

/// Prints the plan (for `--dry-run`).
pub fn print_plan(plan: &Plan) {
    let c = &plan.config;
    println!(
        "sweep plan: {} cells → {}{}",
        plan.cells.len(),
        plan.out.display(),
        plan.shard
            .map(|s| format!(" (shard {s})"))
            .unwrap_or_default()
    );
    println!("models: {}", c.models.join(", "));
    let names = |v: Vec<&str>| v.join(", ");
    println!(
        "methods: {}",
        names(c.methods.iter().map(|m| m.as_str()).collect())
    );
    println!(
        "backends: {}",
        names(c.backends.iter().map(|b| b.as_str()).collect())
    );
    println!(
        "batch: {:?}  threads: {:?}  seed: {}",
        c.batch, c.threads, c.seed
    );
    println!(
        "eval: {}  calibration: {} inputs  qat: {} epoch(s) of {}  latency: {} ms warm-up + {} ms per candidate{}",
        c.eval_limit
            .map_or("full test set".to_string(), |n| format!("first {n} inputs")),
        c.calib_samples,
        c.qat_epochs,
        c.qat_train_samples
            .map_or("the whole training split".to_string(), |n| format!("{n} training images")),
        c.warmup_ms,
        c.budget_ms,
        if c.quick { "  (quick)" } else { "" }
    );
    for key in &plan.cells {
        match plan.skips.get(key) {
            Some(r) => println!("  {key}  skip: {r}"),
            None => println!("  {key}"),
        }
    }
}

/// `qbench sweep`.
pub fn cmd_sweep(args: &SweepArgs) -> Result<()> {
    let plan = plan(args)?;
    if args.dry_run {
        print_plan(&plan);
        return Ok(());
    }
    let mut store = Store::open(&plan, args.resume.is_some())?;
    let done = store.final_keys();
    let todo: Vec<&CellKey> = plan.cells.iter().filter(|k| !done.contains(k)).collect();
    eprintln!(
        "sweep: {} cells planned, {} already done, {} to run → {}",
        plan.cells.len(),
        plan.cells.len() - todo.len(),
        todo.len(),
        store.path().display()
    );
    let start = Instant::now();
    let progress = Progress::new(todo.len());
    for (model, backend) in groups(&plan.config) {
        let keys: Vec<CellKey> = todo
            .iter()
            .filter(|k| k.model == model && k.backend == backend)
            .map(|&k| k.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        progress.group(&model, backend.as_str(), keys.len());
        isolated_group(&plan, &model, backend, &keys, &progress, &mut store)?;
    }
    progress.finish();
    let path = store.path().to_owned();
    let results = store.finish()?;
    qbench::report::write_all(&results, &plan.out)?;
    println!("{}", qbench::report::terminal(&results));
    eprintln!(
        "sweep finished in {:.1} s: {} (report.md, report.html, results.csv beside it)",
        start.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// Cells as a group runner hands them over, each batch as soon as it is final.
pub(crate) type Emit<'a> = dyn FnMut(Vec<Cell>) -> Result<()> + 'a;

/// Runs one (model, backend) group with its cells recorded as they become final. An error
/// or a panic that escapes the group (a model that does not load, a bug) fails only the
/// group's cells not yet recorded, with its message, and the sweep goes on; only a failure
/// to write `results.json` ends the sweep.
fn isolated_group(
    plan: &Plan,
    model: &str,
    backend: Backend,
    keys: &[CellKey],
    progress: &Progress,
    store: &mut Store,
) -> Result<()> {
    let mut open: BTreeSet<CellKey> = keys.iter().cloned().collect();
    let mut write_error: Option<anyhow::Error> = None;
    let outcome = {
        let mut emit = |cells: Vec<Cell>| -> Result<()> {
            let n = cells.len();
            for c in &cells {
                open.remove(&c.key());
            }
            if let Err(e) = store.record(cells) {
                let text = format!("{e:#}");
                write_error = Some(e);
                bail!("{text}");
            }
            progress.done(n);
            Ok(())
        };
        isolate::run(|| {
            if sweep_minilm::weights_model(model)?.is_some() {
                sweep_minilm::run_group(plan, model, backend, keys, progress, &mut emit)
            } else {
                run_group(plan, model, backend, keys, progress, &mut emit)
            }
        })
    };
    if let Some(e) = write_error {
        return Err(e);
    }
    let reason = match outcome {
        Err(e) => e,
        // Every cell is handed over by a group that returns; a cell left over would
        // otherwise vanish from the results, so it is recorded as failed.
        Ok(()) if !open.is_empty() => "the group ended without measuring this cell".to_owned(),
        Ok(()) => return Ok(()),
    };
    let rest: Vec<Cell> = keys
        .iter()
        .filter(|k| open.contains(k))
        .map(|k| failed(k, &reason))
        .collect();
    progress.note(&format!(
        "{model} / {}: {} cell(s) failed: {reason}",
        backend.as_str(),
        rest.len()
    ));
    let n = rest.len();
    store.record(rest)?;
    progress.done(n);
    Ok(())
}

pub(crate) fn failed(key: &CellKey, reason: &str) -> Cell {
    let mut c = Cell::new(&key.model, key.method, key.backend, key.batch, key.threads);
    c.state = State::Failed;
    c.reason = Some(reason.to_owned());
    c
}

pub(crate) fn skipped(key: &CellKey, reason: &str) -> Cell {
    let mut c = failed(key, reason);
    c.state = State::Skipped;
    c
}

/// What a built method contributes to its cells regardless of batch.
struct Built {
    model: qbench_quantizers::QuantizedModel,
    exec: QExecutor,
    size: u64,
    quantize_s: f64,
    accuracy: Option<(f64, Vec<usize>)>,
    sqnr: Option<Sqnr>,
    sqnr_note: Option<String>,
}

/// The eval data of a model: inputs and labels, `None` without an eval set.
struct EvalData {
    images: Vec<f32>,
    labels: Vec<usize>,
}

/// Images per batch when the sweep evaluates accuracy. Dynamic quantization takes one
/// activation scale per tensor, i.e. per batch, so tract's cross-check
/// (`sweep_tract`) must feed the same batches: both use this one constant.
pub(crate) const EVAL_BATCH: usize = 256;

/// Predictions over the eval set, in parallel batches of [`EVAL_BATCH`] across rayon threads
/// (the latency measurement, not this, is what uses exactly the requested threads).
fn predict(
    run: &(dyn Fn(&[Tensor]) -> Result<Vec<Tensor>> + Sync),
    data: &EvalData,
) -> Result<Vec<usize>> {
    let chunks: Vec<&[f32]> = data.images.chunks(EVAL_BATCH * IMAGE_LEN).collect();
    let preds: Vec<Vec<usize>> = chunks
        .par_iter()
        .map(|x| {
            let out = run(&[eval::batch_tensor(x)?])?;
            eval::predictions(&out, x.len() / IMAGE_LEN)
        })
        .collect::<Result<_>>()?;
    Ok(preds.concat())
}

fn top1(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
}

/// One (model, backend) group: build and evaluate each method once, then per batch time
/// fp32 and every method interleaved and hand that batch's cells to `emit`, final (tract's
/// columns included). Skipped cells are handed over before any work, and the cells of a
/// method that fails to build as soon as it fails.
fn run_group(
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
    let target = eval::resolve(model)?;
    let graph = eval::load_graph(&target.path)?;
    let fp32 = eval::executor(&graph, &target.path)?;
    let fp32_size = quantize::fp32_size(&target, &graph)?;
    let data = match eval::eval_spec(&target, None, false)? {
        Some(spec) => {
            let ds = eval::load_dataset(&spec, config.eval_limit)?;
            ensure!(!ds.is_empty(), "the eval set of {model} is empty");
            Some(EvalData {
                images: eval::model_inputs(&ds, &spec).into_owned(),
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
    let sqnr_input = crate::bench_model::input_batch(&target, &graph, sqnr_batch)?;

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
    let input = |b: usize| crate::bench_model::input_batch(&target, &graph, b);
    let tract_built = built.iter().filter_map(|(&method, b)| {
        let b = b.as_ref().ok()?;
        let pred = b.accuracy.as_ref().map(|a| a.1.as_slice());
        Some(crate::sweep_tract::Built {
            method,
            model: &b.model,
            pred,
        })
    });
    let tract_group = crate::sweep_tract::Group {
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
    let mut tract = isolate::run(|| Ok(crate::sweep_tract::TractRun::prepare(tract_group)));

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
            // tract never fails a cell (see sweep_tract); not even by panicking.
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

/// What a group knows before timing: fp32's results and why speed may be absent.
struct Facts<'a> {
    model: &'a str,
    backend: Backend,
    fp32_size: u64,
    fp32_acc: Option<f64>,
    fp32_pred: Option<&'a [usize]>,
    data: Option<&'a EvalData>,
    /// Why this machine cannot time the backend's int8 kernels, if it cannot.
    no_speed: Option<&'a str>,
}

/// The cell of `key` from its group's facts, its batch's timings and its built method.
fn measured_cell(
    key: &CellKey,
    f: &Facts,
    timed: &BTreeMap<Method, (Latency, f64)>,
    built: Option<&std::result::Result<Built, String>>,
) -> Cell {
    let mut c = Cell::new(f.model, key.method, f.backend, key.batch, key.threads);
    // Speed: measured, or why not.
    match timed.get(&key.method) {
        Some((lat, speedup)) => {
            c.latency_ms = Some(lat.clone());
            c.speedup_vs_fp32 = Some(*speedup);
        }
        None => {
            c.not_applicable
                .insert(Measure::Speed, f.no_speed.unwrap_or("not timed").to_owned());
        }
    }
    if key.method == Method::Fp32 {
        c.kernel = Some("fp32".into());
        c.size_bytes = Some(f.fp32_size);
        c.size_ratio = Some(1.0);
        c.not_applicable
            .insert(Measure::Sqnr, "fp32 is the reference".into());
        c.not_applicable
            .insert(Measure::Quantize, "fp32 is not quantized".into());
        match (f.fp32_acc, f.data) {
            (Some(a), Some(d)) => {
                c.accuracy = Some(accuracy(a, a, d.labels.len()));
                c.agreement = Some(1.0);
            }
            _ => na_accuracy(&mut c, f.model),
        }
        return c;
    }
    let b = match built {
        Some(Ok(b)) => b,
        Some(Err(e)) => return failed(key, e),
        None => return failed(key, "not built"),
    };
    // fp16 stores weights as f16 and computes in f32: no int8 rung runs.
    c.kernel = Some(if key.method == Method::Fp16 {
        "fp32 (f16 weights)".to_owned()
    } else {
        b.exec.rung().name().to_owned()
    });
    c.size_bytes = Some(b.size);
    c.size_ratio = Some(b.size as f64 / f.fp32_size as f64);
    c.quantize_s = Some(b.quantize_s);
    match &b.sqnr {
        Some(s) => c.sqnr = Some(s.clone()),
        None => {
            c.not_applicable.insert(
                Measure::Sqnr,
                b.sqnr_note
                    .clone()
                    .unwrap_or_else(|| "no int8 layer".into()),
            );
        }
    }
    match (&b.accuracy, f.fp32_acc, f.data) {
        (Some((v, pred)), Some(fp32), Some(d)) => {
            c.accuracy = Some(accuracy(*v, fp32, d.labels.len()));
            let same = f
                .fp32_pred
                .map_or(0, |fp| fp.iter().zip(pred).filter(|(a, b)| a == b).count());
            c.agreement = Some(same as f64 / d.labels.len() as f64);
        }
        _ => na_accuracy(&mut c, f.model),
    }
    c
}

fn na_accuracy(c: &mut Cell, model: &str) {
    let r = format!("{model} has no eval set");
    c.not_applicable.insert(Measure::Accuracy, r.clone());
    c.not_applicable.insert(Measure::Agreement, r);
}

fn accuracy(value: f64, fp32: f64, samples: usize) -> Accuracy {
    Accuracy {
        metric: "top1".into(),
        value,
        fp32,
        drop_pp: (fp32 - value) * 100.0,
        relative: if fp32 == 0.0 { 0.0 } else { value / fp32 },
        samples,
    }
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
    let qm = to_quant_method(method).context("fp32 is not built")?;
    let mut spec = QuantSpec::new(qm, to_quant(backend));
    spec.calib_samples = config.calib_samples;
    // QAT: `qat_epochs` over `qat_train_samples` training images; its time is the
    // cell's quantization time.
    spec.qat.epochs = config.qat_epochs as usize;
    spec.qat.seed = config.seed.wrapping_add(3);
    spec.qat_samples = config.qat_train_samples;
    let (model, took) = quantize::build(target, graph, &spec, progress)?;
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
    let x = crate::bench_model::input_batch(target, graph, batch)?;
    let input = std::slice::from_ref(&x);
    let fp32 = &execs.fp32;
    let s = measure::on_threads(threads, || {
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
                name: m.as_str().into(),
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
    fn prepare(
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

/// A measured summary (nanoseconds per run of `batch` inputs) as a cell's latency.
pub(crate) fn latency(s: &crate::stats::Summary, batch: usize) -> Latency {
    let ms = s.median / 1e6;
    Latency {
        median: ms,
        p10: s.p10 / 1e6,
        p90: s.p90 / 1e6,
        spread: s.spread,
        samples: s.samples,
        throughput: batch as f64 / (ms / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rung_above_the_schemes_own_times_it_natively() {
        assert_eq!(speed_absent(Backend::Vnni, Rung::Amx), None);
        assert_eq!(speed_absent(Backend::Vnni, Rung::Avx512Vnni), None);
        assert_eq!(speed_absent(Backend::Fbgemm, Rung::Amx), None);
        assert_eq!(speed_absent(Backend::Fbgemm, Rung::Avx2), None);
        let why = speed_absent(Backend::Vnni, Rung::Avx2).expect("avx2 lacks VNNI");
        assert!(
            why.contains("AVX-512 VNNI") && why.contains("avx2"),
            "{why}"
        );
        assert!(speed_absent(Backend::Qnnpack, Rung::Amx).is_some());
        assert_eq!(speed_absent(Backend::Qnnpack, Rung::NeonDotprod), None);
    }
}
