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
//! 3. Each finished group rewrites `results.json` atomically, so an interrupted sweep
//!    keeps what it finished and `--resume DIR` completes only the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use qbench::results::{
    self, Accuracy, Backend, Cell, CellKey, Latency, LayerSqnr, Measure, Method, Results, Shard,
    Sqnr, State, SweepConfig,
};
use qbench_models::data::IMAGE_LEN;
use qbench_models::exec::Executor;
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_models::zoo::Dim;
use qbench_quantizers::{save, sqnr, QExecutor};
use rayon::prelude::*;

use crate::eval::{self, Target};
use crate::measure::{self, Budget, Candidate};
use crate::progress::Progress;
use crate::quantize::{self, QuantSpec};
use crate::sweep_minilm;

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
    // The int8 runtime runs on one thread; timing fp32 on more would make the speedup a
    // comparison of thread counts, not of kernels.
    if let Some(t) = config.threads.iter().find(|&&t| t != 1) {
        bail!("threads {t}: only 1 is supported (the int8 runtime is single-threaded, and a speedup against multi-threaded fp32 would compare thread counts)");
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
pub(crate) fn speed_absent(backend: Backend, rung: &str) -> Option<String> {
    let native = match backend {
        Backend::Fbgemm => matches!(rung, "avx2" | "avx512vnni"),
        Backend::Vnni => rung == "avx512vnni",
        Backend::Qnnpack => matches!(rung, "neon" | "neon-dotprod"),
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
    let path = plan.out.join("results.json");
    let mut results = if args.resume.is_some() {
        let mut r =
            Results::read(&path).with_context(|| format!("--resume {}", plan.out.display()))?;
        ensure!(
            r.config == plan.config,
            "--resume {}: its config differs from this sweep's (give the same --config and flags; recorded: {})",
            plan.out.display(),
            serde_json::to_string(&r.config)?
        );
        // Failed cells are tried again; measured and skipped ones are kept.
        r.cells.retain(|c| c.state != State::Failed);
        r.runs.push(results::Run::detect(plan.shard));
        r
    } else {
        ensure!(
            !path.exists(),
            "{} exists; use --resume {} to complete it, or another --out",
            path.display(),
            plan.out.display()
        );
        let mut r = Results::new(plan.config.clone(), plan.shard);
        for (purpose, offset) in [
            ("calibration", 1u64),
            ("random_inputs", 2),
            ("qat_shuffle", 3),
        ] {
            r.seeds
                .insert(purpose.into(), plan.config.seed.wrapping_add(offset));
        }
        r
    };
    let run = results.runs.len() - 1;
    let done: std::collections::BTreeSet<CellKey> = results.cells.iter().map(Cell::key).collect();
    let todo: Vec<&CellKey> = plan.cells.iter().filter(|k| !done.contains(k)).collect();
    eprintln!(
        "sweep: {} cells planned, {} already done, {} to run → {}",
        plan.cells.len(),
        plan.cells.len() - todo.len(),
        todo.len(),
        path.display()
    );
    results.write(&path)?;
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
        let weights_model = sweep_minilm::weights_model(&model)?.is_some();
        let result = if weights_model {
            sweep_minilm::run_group(&plan, &model, backend, &keys, &progress)
        } else {
            run_group(&plan, &model, backend, &keys, &progress)
        };
        let mut cells = match result {
            Ok(cells) => cells,
            // A model that cannot even load fails its cells; the sweep goes on.
            Err(e) => keys.iter().map(|k| failed(k, &format!("{e:#}"))).collect(),
        };
        for c in &mut cells {
            c.run = run;
        }
        progress.done(cells.len());
        results.cells.extend(cells);
        results.cells.sort_by_key(Cell::key);
        results.write(&path)?;
    }
    progress.finish();
    results.runs[run].finished_at = Some(results::rfc3339_utc(std::time::SystemTime::now()));
    results.write(&path)?;
    qbench::report::write_all(&results, &plan.out)?;
    println!("{}", qbench::report::terminal(&results));
    eprintln!(
        "sweep finished in {:.1} s: {} (report.md, report.html, results.csv beside it)",
        start.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

fn failed(key: &CellKey, reason: &str) -> Cell {
    let mut c = Cell::new(&key.model, key.method, key.backend, key.batch, key.threads);
    c.state = State::Failed;
    c.reason = Some(reason.to_owned());
    c
}

fn skipped(key: &CellKey, reason: &str) -> Cell {
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

/// Predictions over the eval set, in parallel batches of 256 across rayon threads (the
/// latency measurement, not this, is what uses exactly the requested threads).
fn predict(
    run: &(dyn Fn(&[Tensor]) -> Result<Vec<Tensor>> + Sync),
    data: &EvalData,
) -> Result<Vec<usize>> {
    let chunks: Vec<&[f32]> = data.images.chunks(256 * IMAGE_LEN).collect();
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

/// One (model, backend) group: build, evaluate, and time every method it has.
fn run_group(
    plan: &Plan,
    model: &str,
    backend: Backend,
    keys: &[CellKey],
    progress: &Progress,
) -> Result<Vec<Cell>> {
    let config = &plan.config;
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

    let methods: Vec<Method> = {
        let mut m: Vec<Method> = keys.iter().map(|k| k.method).collect();
        m.dedup();
        m.sort();
        m.dedup();
        m
    };
    let mut built: BTreeMap<Method, std::result::Result<Built, String>> = BTreeMap::new();
    for &method in &methods {
        // Built once per method when any of its cells (batch sizes) is to be measured.
        if method == Method::Fp32
            || keys
                .iter()
                .filter(|k| k.method == method)
                .all(|k| plan.skips.contains_key(k))
        {
            continue;
        }
        progress.step(&format!("quantizing: {}", method.as_str()));
        let b = build_method(
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
        .map_err(|e| format!("{e:#}"));
        if let Err(e) = &b {
            progress.note(&format!("{} failed: {e}", method.as_str()));
        }
        built.insert(method, b);
    }

    let rung = qbench_kernels::isa::active().name();
    let no_speed = speed_absent(backend, rung);
    let mut cells = Vec::new();
    for &batch in &config.batch {
        for &threads in &config.threads {
            let group: Vec<&CellKey> = keys
                .iter()
                .filter(|k| k.batch == batch && k.threads == threads)
                .collect();
            if group.is_empty() {
                continue;
            }
            progress.step(&format!("timing batch {batch}"));
            let timed = time_batch(
                config,
                &target,
                &graph,
                &fp32,
                &built,
                batch as usize,
                no_speed.is_some(),
            )
            .map_err(|e| format!("{e:#}"));
            for key in group {
                if let Some(r) = plan.skips.get(key) {
                    cells.push(skipped(key, r));
                    continue;
                }
                let mut c = Cell::new(model, key.method, backend, batch, threads);
                // Speed: measured, or why not.
                let speed = match &timed {
                    Ok(t) => t.get(&key.method).cloned(),
                    Err(e) => {
                        cells.push(failed(key, &format!("timing batch {batch}: {e}")));
                        continue;
                    }
                };
                match (speed, key.method) {
                    (Some((lat, speedup)), _) => {
                        c.latency_ms = Some(lat);
                        c.speedup_vs_fp32 = Some(speedup);
                    }
                    (None, _) => {
                        c.not_applicable.insert(
                            Measure::Speed,
                            no_speed.clone().unwrap_or_else(|| "not timed".into()),
                        );
                    }
                }
                if key.method == Method::Fp32 {
                    c.kernel = Some("fp32".into());
                    c.size_bytes = Some(fp32_size);
                    c.size_ratio = Some(1.0);
                    c.not_applicable
                        .insert(Measure::Sqnr, "fp32 is the reference".into());
                    c.not_applicable
                        .insert(Measure::Quantize, "fp32 is not quantized".into());
                    match (fp32_acc, &data) {
                        (Some(a), Some(d)) => {
                            c.accuracy = Some(accuracy(a, a, d.labels.len()));
                            c.agreement = Some(1.0);
                        }
                        _ => na_accuracy(&mut c, model),
                    }
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
                // fp16 stores weights as f16 and computes in f32: no int8 rung runs.
                c.kernel = Some(if key.method == Method::Fp16 {
                    "fp32 (f16 weights)".to_owned()
                } else {
                    b.exec.rung().name().to_owned()
                });
                c.size_bytes = Some(b.size);
                c.size_ratio = Some(b.size as f64 / fp32_size as f64);
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
                match (&b.accuracy, fp32_acc, &data) {
                    (Some((v, pred)), Some(f), Some(d)) => {
                        c.accuracy = Some(accuracy(*v, f, d.labels.len()));
                        let same = fp32_pred
                            .as_ref()
                            .map_or(0, |fp| fp.iter().zip(pred).filter(|(a, b)| a == b).count());
                        c.agreement = Some(same as f64 / d.labels.len() as f64);
                    }
                    _ => na_accuracy(&mut c, model),
                }
                cells.push(c);
            }
        }
    }
    let tract_built = built.iter().filter_map(|(&method, b)| {
        let b = b.as_ref().ok()?;
        let pred = b.accuracy.as_ref().map(|a| a.1.as_slice());
        let untimed = no_speed.is_some() && method != Method::Fp16;
        Some(crate::sweep_tract::Built {
            method,
            model: &b.model,
            exec: &b.exec,
            pred,
            untimed,
        })
    });
    progress.step("tract");
    crate::sweep_tract::fill(
        &mut cells,
        &crate::sweep_tract::Group {
            config,
            onnx: &target.path,
            fp32: &fp32,
            built: tract_built.collect(),
            eval_images: data.as_ref().map(|d| d.images.as_slice()),
            fp32_pred: fp32_pred.as_deref(),
            input: &|b: usize| crate::bench_model::input_batch(&target, &graph, b),
            budget: budget(config),
        },
    );
    Ok(cells)
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
    fp32: &Executor,
    built: &BTreeMap<Method, std::result::Result<Built, String>>,
    batch: usize,
    int8_na: bool,
) -> Result<BTreeMap<Method, (Latency, f64)>> {
    let x = crate::bench_model::input_batch(target, graph, batch)?;
    let input = std::slice::from_ref(&x);
    fp32.run(input)?;
    let mut names = vec![Method::Fp32];
    let mut candidates = vec![Candidate {
        name: "fp32".into(),
        run: Box::new(|| {
            std::hint::black_box(fp32.run(input).ok());
        }),
    }];
    for (&m, b) in built {
        let Ok(b) = b else { continue };
        if int8_na && m != Method::Fp16 {
            continue;
        }
        b.exec.run(input)?;
        let exec = &b.exec;
        names.push(m);
        candidates.push(Candidate {
            name: m.as_str().into(),
            run: Box::new(move || {
                std::hint::black_box(exec.run(input).ok());
            }),
        });
    }
    let s = measure::interleaved(&mut candidates, budget(config));
    let base = s[0].median;
    Ok(names
        .into_iter()
        .zip(s)
        .map(|(m, s)| (m, (latency(&s, batch), base / s.median)))
        .collect())
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
