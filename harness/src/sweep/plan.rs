//! A sweep's plan: the config (built-in grid, TOML file, flag overrides) resolved and
//! validated into the cells to fill, before anything is measured, so that a typo fails in
//! milliseconds, not after an hour of measuring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use qbench_models::rotten_tomatoes;
use qbench_models::zoo::{self, Dim, ZooEntry};

use crate::results::{self, Backend, CellKey, Method, Results, Shard, SweepConfig};
use crate::target::{self, Target};
use crate::timing::measure::Budget;

/// The embedded default: every zoo model present, the whole method and backend grid.
/// `models = []` here means "the zoo as found at run time".
pub(super) const DEFAULT_CONFIG: &str = r#"
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
pub(super) const QUICK_EVAL: usize = 500;

pub(super) const QUICK_CALIB: usize = 256;

pub(super) const QUICK_WARMUP_MS: u64 = 20;

/// `--quick`: QAT fine-tunes on this many training images.
pub(super) const QUICK_QAT: usize = 1000;

pub(super) const QUICK_BUDGET_MS: u64 = 120;

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
    /// Where each model's groups run.
    pub isolation: Isolation,
}

/// Where a sweep runs each model's groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// In this process: an error or a panic fails only its cells, a crash ends the sweep.
    /// For callers that are not the `qbench` binary (tests calling the library).
    #[default]
    InProcess,
    /// In a child process of the `qbench` binary per model (`super::child`): a crash
    /// fails only that model's open cells. What `qbench sweep` does.
    ChildProcess,
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

pub(super) fn parse_names<T: Copy>(
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

pub(super) fn parse_shard(s: &str) -> Result<Shard> {
    let bad = || format!("--shard {s:?}: expected i/n with 0 ≤ i < n (i is 0-based), e.g. 0/4");
    let (i, n) = s.split_once('/').with_context(bad)?;
    let index: u32 = i.trim().parse().ok().with_context(bad)?;
    let count: u32 = n.trim().parse().ok().with_context(bad)?;
    ensure!(count > 0 && index < count, bad());
    Ok(Shard { index, count })
}

/// The zoo models present (those with a manifest).
pub(super) fn zoo_names() -> Result<Vec<String>> {
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
    // `--resume DIR` alone continues DIR's own sweep: its recorded config and shard.
    let resumed = match &args.resume {
        Some(dir) => {
            let path = dir.join("results.json");
            Some(Results::read(&path).with_context(|| format!("--resume {}", dir.display()))?)
        }
        None => None,
    };
    let mut config: SweepConfig = match (&args.config, &resumed) {
        (Some(path), _) => SweepConfig::read_toml(path)?,
        (None, Some(r)) => r.config.clone(),
        (None, None) => results::from_toml(DEFAULT_CONFIG, Path::new("<built-in default config>"))?,
    };
    if let Some(m) = &args.models {
        config.models = m.iter().map(|s| s.trim().to_owned()).collect();
    }
    if let Some(m) = &args.methods {
        config.methods = parse_names("--methods", m, &Method::ALL, Method::name)?;
    }
    if let Some(b) = &args.backends {
        config.backends = parse_names("--backends", b, &Backend::ALL, Backend::name)?;
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
    for &t in &config.threads {
        crate::timing::pools::check_threads(t as usize)?;
    }
    let mut shard = args.shard.as_deref().map(parse_shard).transpose()?;
    if let (Some(r), Some(dir)) = (&resumed, &args.resume) {
        let recorded = r.runs.first().and_then(|run| run.shard);
        match (shard, recorded) {
            (None, _) => shard = recorded,
            (Some(s), Some(rec)) if s == rec => {}
            (Some(s), _) => bail!(
                "--resume {}: --shard {s} differs from the directory's own ({}); resume it with its shard, or without --shard",
                dir.display(),
                recorded.map_or("no shard".to_owned(), |r| format!("shard {r}"))
            ),
        }
    }

    // Every model must resolve (zoo name or existing file) before any work.
    let mut skips = BTreeMap::new();
    let mut has_eval = BTreeMap::new();
    let mut fixed_batches: BTreeMap<String, usize> = BTreeMap::new();
    // Models built from fetched weights (MiniLM): their own rules (below; `minilm` runs them); absent
    // weights skip their cells with the fetch message instead of failing the plan.
    let mut weights_models: BTreeMap<String, Option<String>> = BTreeMap::new();
    for m in &config.models {
        if let Some(entry) = weights_model(m)? {
            weights_models.insert(m.clone(), absent_reason(&entry));
            continue;
        }
        let target = target::resolve(m).with_context(|| format!("--models / `models`: {m}"))?;
        // A malformed eval section fails the plan now, not the model's cells later. A model
        // without an eval set still gets static cells: calibrated on seeded noise, timed, and
        // its accuracy n/a.
        has_eval.insert(
            m.clone(),
            target::eval_spec(&target, None, false)?.is_some(),
        );
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
                            .or_else(|| method_skip(method).map(str::to_owned))
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
pub(super) fn fixed_batch(target: &Target) -> Option<usize> {
    match target.entry.as_ref()?.manifest.input.shape.first()? {
        Dim::Fixed(n) => Some(*n),
        Dim::Symbolic(_) => None,
    }
}

/// The (model, backend) pairs in grid order: the unit of sharding and of fp32 baselines.
pub(super) fn groups(config: &SweepConfig) -> Vec<(String, Backend)> {
    let mut g = Vec::new();
    for m in &config.models {
        for &b in &config.backends {
            g.push((m.clone(), b));
        }
    }
    g
}

pub(super) fn utc_stamp() -> String {
    // 2026-11-27T01:02:03Z → 20261127T010203Z, the directory name ci/main.sh uses.
    results::rfc3339_utc(std::time::SystemTime::now()).replace(['-', ':'], "")
}

pub(crate) fn budget(config: &SweepConfig) -> Budget {
    let base = Budget::quick_or_default(config.quick);
    Budget {
        warmup: Duration::from_millis(config.warmup_ms),
        measure: Duration::from_millis(config.budget_ms),
        ..base
    }
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
        names(c.methods.iter().map(|m| m.name()).collect())
    );
    println!(
        "backends: {}",
        names(c.backends.iter().map(|b| b.name()).collect())
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

// Models built from fetched weights (manifest `architecture`, MiniLM) have their own
// rules at plan time; `super::minilm` runs their groups.

/// The zoo entry of `name` when it is a model built from weights, else `None` (a file
/// path, an ONNX zoo model, or an unknown name: the generic path reports those).
pub fn weights_model(name: &str) -> Result<Option<ZooEntry>> {
    let dir = zoo::zoo_dir();
    let entries =
        zoo::list(&dir).with_context(|| format!("reading the model zoo in {}", dir.display()))?;
    Ok(entries
        .into_iter()
        .find(|e| e.manifest.name == name && e.manifest.architecture.is_some()))
}

/// Why every cell of `entry` is skipped on this machine, if one is: its weights or its
/// probe corpus are not fetched (the message says how to fetch them).
pub fn absent_reason(entry: &ZooEntry) -> Option<String> {
    if let Err(e) = crate::fetch::fetched_dir(entry) {
        return Some(format!("{e:#}"));
    }
    rotten_tomatoes::ensure_fetched().err().map(|e| {
        format!(
            "{e} (`qbench fetch {}` fetches it with the model)",
            entry.manifest.name
        )
    })
}

/// Why `method` does not apply to a model built from weights, if it does not.
pub fn method_skip(method: Method) -> Option<&'static str> {
    match method {
        Method::Static => Some(
            "static quantization of the transformer is not built: per-tensor activation scales \
             calibrated offline cannot hold MiniLM's outlier tokens (dynamic per-token scales are \
             the method for it)",
        ),
        Method::Qat => Some(
            "qat is not built for MiniLM (it needs a training objective and data for the encoder)",
        ),
        _ => None,
    }
}
