//! The results file of a sweep (`results.json`, schema `qbench.results/1`) and the sweep
//! configuration it records (`SweepConfig`, also the TOML form of `ci/nightly.toml`).
//!
//! This is the contract between `qbench sweep`, which writes the file, and `report`,
//! `merge`, `gate`, `compare` and `baseline`, which read it. It owns the serde types,
//! reading with validation (every error names the file and the key path, e.g.
//! `cells[3].accuracy.drop_pp`) and the key of a cell. It measures nothing and prints
//! nothing. Optional measurements are `Option`s (JSON `null`), never sentinel values;
//! a measurement that does not apply to a cell says why in `not_applicable`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// The `schema` value this qbench writes and reads. A reader refuses any other.
pub const SCHEMA: &str = "qbench.results/1";

// A cell's method and backend are the quantizers' own types (serde names `fp32`,
// `dynamic`, `fbgemm`, ...; `Method::ALL` and `Backend::ALL` are the grid, in report
// order).
pub use qbench_quantizers::{Backend, Method};

/// One results file: who produced it (header), under which configuration, and its cells.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Results {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `CARGO_PKG_VERSION` of the qbench that ran the sweep.
    pub qbench_version: String,
    /// The git commit qbench was built from (`-dirty` when the tree had changes).
    pub git_commit: String,
    /// The machine fingerprint of every run, when they all agree; `None` (JSON `null`)
    /// when merged shards ran on different machines, where each cell's machine is its
    /// run's. Derived from `runs` ([`Results::common_machine`]) and checked against them;
    /// files written before this key existed lack it and get it from their runs on read.
    #[serde(default)]
    pub machine: Option<Machine>,
    /// The resolved configuration: the config file and flags after defaults applied.
    pub config: SweepConfig,
    /// Every seed the sweep derived from `config.seed`, by purpose (e.g. `calibration`).
    #[serde(default)]
    pub seeds: BTreeMap<String, u64>,
    /// One entry per process that measured cells: one for a plain sweep, one per shard
    /// after `qbench merge`. A cell names its run by index.
    pub runs: Vec<Run>,
    pub cells: Vec<Cell>,
}

/// One sweep process: where and when it ran.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// `--shard i/n` of this process, if it was one shard of the grid.
    pub shard: Option<Shard>,
    pub machine: Machine,
    pub kernels: Kernels,
    /// RFC 3339 UTC, e.g. `2026-11-27T01:02:03Z`.
    pub started_at: String,
    /// `None` while the sweep is running or was interrupted (resumable).
    pub finished_at: Option<String>,
}

/// Shard `index` (0-based, < `count`) of a grid split into `count` shards.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The machine fingerprint, as `machine::Fingerprint` detects it. Two cells' speeds are
/// comparable only when their fingerprints are equal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub cpu_model: String,
    pub arch: String,
    pub features: Vec<String>,
    pub cores: usize,
    pub os: String,
}

impl From<&crate::machine::Fingerprint> for Machine {
    fn from(f: &crate::machine::Fingerprint) -> Machine {
        Machine {
            cpu_model: f.cpu_model.clone(),
            arch: f.arch.clone(),
            features: f.features.clone(),
            cores: f.cores,
            os: f.os.clone(),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {} cores, {})",
            self.cpu_model,
            self.arch,
            self.cores,
            self.features.join(" ")
        )
    }
}

/// The kernel ladder as the run resolved it (see `machine::KernelReport`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Kernels {
    /// The rung that ran (after `QBENCH_KERNEL`).
    pub active: String,
    /// The best rung this CPU supports.
    pub detected: String,
    /// The value of `QBENCH_KERNEL`, if set.
    pub knob: Option<String>,
}

impl From<&crate::machine::KernelReport> for Kernels {
    fn from(k: &crate::machine::KernelReport) -> Kernels {
        Kernels {
            active: k.active.clone(),
            detected: k.detected.clone(),
            knob: k.knob.clone(),
        }
    }
}

impl Run {
    /// This process, now: the machine and kernels detected here, unfinished.
    pub fn detect(shard: Option<Shard>) -> Run {
        Run {
            shard,
            machine: Machine::from(&crate::machine::Fingerprint::detect()),
            kernels: Kernels::from(&crate::machine::KernelReport::detect()),
            started_at: rfc3339_utc(std::time::SystemTime::now()),
            finished_at: None,
        }
    }
}

/// What happened to a cell.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The cell ran; each measurement is present or listed in `not_applicable`.
    Measured,
    /// The cell does not apply (e.g. static on a model without calibration data);
    /// `reason` says why and no measurement is present.
    Skipped,
    /// The cell was attempted and failed; `reason` holds the error. Measurements taken
    /// before the failure may be present.
    Failed,
}

/// A measurement that a measured cell may lack, with the reason, in `not_applicable`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// `size_bytes` and `size_ratio`.
    Size,
    /// `latency_ms` and `speedup_vs_fp32` (e.g. qnnpack's NEON kernels on x86-64).
    Speed,
    /// `accuracy` (e.g. a model without an eval set).
    Accuracy,
    /// `agreement`.
    Agreement,
    /// `sqnr`.
    Sqnr,
    /// `tract`.
    Tract,
    /// `quantize_s`.
    Quantize,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Size => "size",
            Measure::Speed => "speed",
            Measure::Accuracy => "accuracy",
            Measure::Agreement => "agreement",
            Measure::Sqnr => "sqnr",
            Measure::Tract => "tract",
            Measure::Quantize => "quantize",
        }
    }
}

/// One model × method × backend × batch × threads result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub model: String,
    pub method: Method,
    pub backend: Backend,
    pub batch: u32,
    pub threads: u32,
    /// Index into `runs`: the process (and so the machine) that measured this cell.
    pub run: usize,
    pub state: State,
    /// Why a cell was skipped, or the error of a failed cell.
    pub reason: Option<String>,
    /// The kernel that ran (e.g. `avx512vnni_gemm_u8s8i32_6x64`, or the rung).
    pub kernel: Option<String>,
    /// The model file as quantized (bytes) and its ratio to the fp32 file.
    pub size_bytes: Option<u64>,
    pub size_ratio: Option<f64>,
    pub latency_ms: Option<Latency>,
    /// fp32 median / this median, both measured interleaved in the same process.
    pub speedup_vs_fp32: Option<f64>,
    pub accuracy: Option<Accuracy>,
    /// Share of eval inputs whose argmax equals fp32's (0..=1).
    pub agreement: Option<f64>,
    pub sqnr: Option<Sqnr>,
    pub tract: Option<Tract>,
    /// Seconds spent quantizing (calibration, QAT fine-tuning, conversion).
    pub quantize_s: Option<f64>,
    /// Measurements that do not apply to this cell, each with the reason.
    #[serde(default)]
    pub not_applicable: BTreeMap<Measure, String>,
    /// Sentence encoders (MiniLM): fidelity of the embeddings to fp32's. Absent for other
    /// models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Embedding>,
    /// How many times the process measuring this cell's model died (a signal or an
    /// abort) with the cell open. A failed cell that crashed once is retried by
    /// `--resume`; one that crashed twice is final. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crashes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How close a sentence encoder's embeddings stay to fp32's, and the same figures for the
/// per-tensor variant of a dynamic cell (whose own numbers use per-token scales).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    /// Mean and worst cosine similarity to the fp32 embedding of the same sentence.
    pub cosine_mean: f64,
    pub cosine_worst: f64,
    /// Sentences compared.
    pub samples: usize,
    /// Activation scales of this cell's numbers: `per_token`, `per_tensor`, or null (fp32,
    /// fp16).
    pub act_scales: Option<String>,
    /// Dynamic cells: the same quantization with one activation scale per tensor
    /// (PyTorch's and ONNX Runtime's default), measured beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_tensor: Option<Variant>,
}

/// A variant measured beside a cell: fidelity, probe accuracy and speed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub cosine_mean: f64,
    pub cosine_worst: f64,
    /// The probe's accuracy on this variant's embeddings (fraction).
    pub accuracy: f64,
    pub agreement: f64,
    /// Median latency (ms) and speedup against the fp32 of the same run; null when not
    /// timed.
    pub latency_ms: Option<f64>,
    pub speedup_vs_fp32: Option<f64>,
}

/// Latency of one call on `batch` inputs, milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    /// `(p90 − p10) / median`: the relative noise band of this measurement.
    pub spread: f64,
    pub samples: usize,
    /// Inputs per second at the median (`batch / median`).
    pub throughput: f64,
}

/// The model's task metric on its eval set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    /// e.g. `top1`; values are fractions (0.9906 = 99.06 %).
    pub metric: String,
    pub value: f64,
    /// The same model's fp32 value on the same inputs.
    pub fp32: f64,
    /// `(fp32 − value) × 100`: the drop in percentage points (negative = better).
    pub drop_pp: f64,
    /// `value / fp32`, as MLPerf's "99 % of fp32".
    pub relative: f64,
    /// Inputs evaluated.
    pub samples: usize,
}

/// Signal-to-quantization-noise ratio of each quantized layer's output against fp32, dB.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sqnr {
    pub worst_layer: String,
    pub worst_db: f64,
    pub mean_db: f64,
    pub per_layer: Vec<LayerSqnr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayerSqnr {
    pub layer: String,
    pub db: f64,
}

/// tract-onnx running the same model in the sweep's process: the fp32 ONNX file, and
/// this cell's ONNX export (static: QOperator; dynamic: plain-op quantization +
/// MatMulInteger; fp16: FLOAT16 weights). Medians are ms per call at the cell's batch,
/// timed interleaved with ours. The last three fields came after the first files of this
/// schema and default to null.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tract {
    /// tract's median on the fp32 file.
    pub fp32_ms: Option<f64>,
    /// tract's median on this cell's export (null for fp32 cells).
    pub int8_ms: Option<f64>,
    /// Share of eval inputs whose tract argmax equals ours for this cell (fp32 cells:
    /// tract's fp32 against ours).
    pub agreement: Option<f64>,
    /// Why a part is missing (e.g. an op tract cannot run).
    pub note: Option<String>,
    /// Our median for this cell in the same interleaved run as tract's.
    #[serde(default)]
    pub ours_ms: Option<f64>,
    /// Share of eval inputs whose tract argmax on the export equals our fp32 argmax.
    #[serde(default)]
    pub agreement_fp32: Option<f64>,
    /// Eval inputs the agreements are over.
    #[serde(default)]
    pub samples: Option<usize>,
}

/// The grid and measurement settings of a sweep: the TOML config (`ci/nightly.toml`,
/// `--config`) and, resolved, the `config` of a results file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Zoo model names (or paths to .onnx files).
    pub models: Vec<String>,
    pub methods: Vec<Method>,
    pub backends: Vec<Backend>,
    /// Batch sizes of the latency measurement.
    pub batch: Vec<u32>,
    /// Threads of the latency measurement.
    pub threads: Vec<u32>,
    /// The seed every other seed is derived from.
    pub seed: u64,
    /// Subsets of eval data and short time budgets (smoke tests).
    #[serde(default)]
    pub quick: bool,
    /// Evaluate only the first N eval inputs; `None`: the whole eval set.
    #[serde(default)]
    pub eval_limit: Option<usize>,
    /// Calibration inputs for static quantization.
    pub calib_samples: usize,
    /// QAT fine-tuning epochs.
    pub qat_epochs: u32,
    /// QAT fine-tunes on a seeded slice of this many training images per epoch; absent:
    /// the whole training split (60,000 images for the MNIST-family models).
    #[serde(default)]
    pub qat_train_samples: Option<usize>,
    /// Latency: warm-up, then samples until the budget is spent (per cell, all
    /// implementations interleaved).
    pub warmup_ms: u64,
    pub budget_ms: u64,
}

impl SweepConfig {
    /// Reads a sweep config from TOML; errors name the file and the key.
    pub fn read_toml(path: &Path) -> Result<SweepConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading sweep config {}", path.display()))?;
        let config: SweepConfig = from_toml(&text, path)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Checks the grid is non-empty and free of repeats; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        fn unique<T: Ord + fmt::Debug>(key: &str, items: &[T]) -> std::result::Result<(), String> {
            if items.is_empty() {
                return Err(format!("`{key}` is empty"));
            }
            let mut seen = BTreeSet::new();
            for item in items {
                if !seen.insert(item) {
                    return Err(format!("`{key}` lists {item:?} twice"));
                }
            }
            Ok(())
        }
        unique("models", &self.models)?;
        unique("methods", &self.methods)?;
        unique("backends", &self.backends)?;
        unique("batch", &self.batch)?;
        unique("threads", &self.threads)?;
        if let Some(m) = self.models.iter().find(|m| m.trim().is_empty()) {
            return Err(format!("`models` has an empty name {m:?}"));
        }
        if self.batch.contains(&0) {
            return Err("`batch` has 0; batch sizes start at 1".into());
        }
        if self.threads.contains(&0) {
            return Err("`threads` has 0; thread counts start at 1".into());
        }
        if self.eval_limit == Some(0) {
            return Err("`eval_limit` is 0; omit it to evaluate the whole eval set".into());
        }
        if self.budget_ms == 0 {
            return Err("`budget_ms` is 0".into());
        }
        Ok(())
    }
}

/// Deserialises TOML, naming the file and the key path on error.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| anyhow::anyhow!("{}: malformed TOML: {e}", path.display()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().to_owned();
        let line = inner
            .span()
            .map(|s| {
                format!(
                    " (line {})",
                    text[..s.start.min(text.len())].lines().count().max(1)
                )
            })
            .unwrap_or_default();
        if key == "." {
            anyhow::anyhow!("{}{line}: {msg}", path.display())
        } else {
            anyhow::anyhow!("{}{line}: key `{key}`: {msg}", path.display())
        }
    })
}

/// The identity of a cell: no two cells of a results file share one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellKey {
    pub model: String,
    pub method: Method,
    pub backend: Backend,
    pub batch: u32,
    pub threads: u32,
}

impl fmt::Display for CellKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/b{}/t{}",
            self.model,
            self.method.name(),
            self.backend.name(),
            self.batch,
            self.threads
        )
    }
}

impl Cell {
    pub fn key(&self) -> CellKey {
        CellKey {
            model: self.model.clone(),
            method: self.method,
            backend: self.backend,
            batch: self.batch,
            threads: self.threads,
        }
    }

    /// A measured cell with nothing measured yet: the sweep fills it in.
    pub fn new(model: &str, method: Method, backend: Backend, batch: u32, threads: u32) -> Cell {
        Cell {
            model: model.to_owned(),
            method,
            backend,
            batch,
            threads,
            run: 0,
            state: State::Measured,
            reason: None,
            kernel: None,
            size_bytes: None,
            size_ratio: None,
            latency_ms: None,
            speedup_vs_fp32: None,
            accuracy: None,
            agreement: None,
            sqnr: None,
            tract: None,
            quantize_s: None,
            not_applicable: BTreeMap::new(),
            embedding: None,
            crashes: 0,
        }
    }

    /// Why `measure` is absent from this cell, if the cell says: its skip reason or
    /// error, or the `not_applicable` entry.
    pub fn absence(&self, measure: Measure) -> Option<String> {
        match self.state {
            State::Skipped => Some(format!("skipped: {}", self.reason.as_deref().unwrap_or(""))),
            State::Failed => Some(format!("failed: {}", self.reason.as_deref().unwrap_or(""))),
            State::Measured => self
                .not_applicable
                .get(&measure)
                .map(|r| format!("n/a: {r}")),
        }
    }

    fn has(&self, measure: Measure) -> bool {
        match measure {
            Measure::Size => self.size_bytes.is_some() || self.size_ratio.is_some(),
            Measure::Speed => self.latency_ms.is_some() || self.speedup_vs_fp32.is_some(),
            Measure::Accuracy => self.accuracy.is_some(),
            Measure::Agreement => self.agreement.is_some(),
            Measure::Sqnr => self.sqnr.is_some(),
            Measure::Tract => self.tract.is_some(),
            Measure::Quantize => self.quantize_s.is_some(),
        }
    }

    /// Checks one cell on its own; the message names the key inside the cell.
    fn validate(&self, runs: usize) -> std::result::Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("`model` is empty".into());
        }
        if self.batch == 0 || self.threads == 0 {
            return Err("`batch` and `threads` start at 1".into());
        }
        if self.run >= runs {
            return Err(format!(
                "`run` is {} but the file has {runs} run(s)",
                self.run
            ));
        }
        let reason_given = self.reason.as_deref().is_some_and(|r| !r.trim().is_empty());
        let all = [
            Measure::Size,
            Measure::Speed,
            Measure::Accuracy,
            Measure::Agreement,
            Measure::Sqnr,
            Measure::Tract,
            Measure::Quantize,
        ];
        match self.state {
            State::Skipped | State::Failed if !reason_given => {
                return Err(format!(
                    "`reason` is missing: a {} cell must say why",
                    if self.state == State::Skipped {
                        "skipped"
                    } else {
                        "failed"
                    }
                ))
            }
            State::Skipped => {
                if let Some(m) = all.iter().find(|&&m| self.has(m)) {
                    return Err(format!("a skipped cell has a {} measurement", m.as_str()));
                }
            }
            State::Failed => {}
            State::Measured => {
                if self.reason.is_some() {
                    return Err("`reason` is set on a measured cell (use `not_applicable` for a measurement that does not apply)".into());
                }
                if self.kernel.as_deref().is_none_or(|k| k.trim().is_empty()) {
                    return Err(
                        "`kernel` is missing: a measured cell names the kernel that ran".into(),
                    );
                }
                for m in all {
                    let na = self.not_applicable.get(&m);
                    if na.is_some() && self.has(m) {
                        return Err(format!(
                            "`not_applicable.{}` is set but the {} measurement is present",
                            m.as_str(),
                            m.as_str()
                        ));
                    }
                    if na.is_some_and(|r| r.trim().is_empty()) {
                        return Err(format!("`not_applicable.{}` gives no reason", m.as_str()));
                    }
                }
                // The measurements every cell reports, or says why not.
                let required = [
                    (
                        Measure::Size,
                        self.size_bytes.is_some() && self.size_ratio.is_some(),
                        "`size_bytes` and `size_ratio`",
                    ),
                    (
                        Measure::Speed,
                        self.latency_ms.is_some() && self.speedup_vs_fp32.is_some(),
                        "`latency_ms` and `speedup_vs_fp32`",
                    ),
                    (Measure::Accuracy, self.accuracy.is_some(), "`accuracy`"),
                    (Measure::Agreement, self.agreement.is_some(), "`agreement`"),
                ];
                for (m, present, keys) in required {
                    if !present && !self.not_applicable.contains_key(&m) {
                        return Err(format!(
                            "{keys} missing without a reason in `not_applicable.{}`",
                            m.as_str()
                        ));
                    }
                }
            }
        }
        let positive = |key: &str, v: f64| -> std::result::Result<(), String> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("`{key}` is {v}; it must be finite and positive"))
            }
        };
        let fraction = |key: &str, v: f64| -> std::result::Result<(), String> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("`{key}` is {v}; it is a share in 0..=1"))
            }
        };
        if let Some(r) = self.size_ratio {
            positive("size_ratio", r)?;
        }
        if let Some(s) = self.speedup_vs_fp32 {
            positive("speedup_vs_fp32", s)?;
        }
        if let Some(l) = &self.latency_ms {
            positive("latency_ms.median", l.median)?;
            positive("latency_ms.p10", l.p10)?;
            positive("latency_ms.p90", l.p90)?;
            positive("latency_ms.throughput", l.throughput)?;
            if !(l.p10 <= l.median && l.median <= l.p90) {
                return Err(format!(
                    "`latency_ms`: p10 {} ≤ median {} ≤ p90 {} does not hold",
                    l.p10, l.median, l.p90
                ));
            }
            if !(l.spread.is_finite() && l.spread >= 0.0) {
                return Err(format!("`latency_ms.spread` is {}", l.spread));
            }
            if l.samples == 0 {
                return Err("`latency_ms.samples` is 0".into());
            }
        }
        if let Some(a) = &self.accuracy {
            for (key, v) in [
                ("accuracy.value", a.value),
                ("accuracy.fp32", a.fp32),
                ("accuracy.drop_pp", a.drop_pp),
                ("accuracy.relative", a.relative),
            ] {
                if !v.is_finite() {
                    return Err(format!("`{key}` is {v}"));
                }
            }
            // Written by the sweep from value and fp32: a mismatch is a writer bug.
            let drop = (a.fp32 - a.value) * 100.0;
            if (a.drop_pp - drop).abs() > 1e-6 {
                return Err(format!(
                    "`accuracy.drop_pp` is {} but (fp32 − value) × 100 is {drop}",
                    a.drop_pp
                ));
            }
            if a.fp32 != 0.0 && (a.relative - a.value / a.fp32).abs() > 1e-6 {
                return Err(format!(
                    "`accuracy.relative` is {} but value / fp32 is {}",
                    a.relative,
                    a.value / a.fp32
                ));
            }
        }
        if let Some(a) = self.agreement {
            fraction("agreement", a)?;
        }
        if let Some(t) = &self.tract {
            if let Some(a) = t.agreement {
                fraction("tract.agreement", a)?;
            }
            if let Some(v) = t.fp32_ms {
                positive("tract.fp32_ms", v)?;
            }
            if let Some(v) = t.int8_ms {
                positive("tract.int8_ms", v)?;
            }
            if let Some(v) = t.ours_ms {
                positive("tract.ours_ms", v)?;
            }
            if let Some(a) = t.agreement_fp32 {
                fraction("tract.agreement_fp32", a)?;
            }
        }
        if let Some(q) = self.quantize_s {
            if !(q.is_finite() && q >= 0.0) {
                return Err(format!("`quantize_s` is {q}"));
            }
        }
        if let Some(s) = &self.sqnr {
            if s.worst_layer.trim().is_empty() {
                return Err("`sqnr.worst_layer` is empty".into());
            }
        }
        Ok(())
    }
}

impl Results {
    /// An empty results file for this build and `config`, with one run: this process.
    pub fn new(config: SweepConfig, shard: Option<Shard>) -> Results {
        let mut r = Results {
            schema: SCHEMA.to_owned(),
            qbench_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: env!("QBENCH_GIT_COMMIT").to_owned(),
            machine: None,
            config,
            seeds: BTreeMap::new(),
            runs: Vec::new(),
            cells: Vec::new(),
        };
        r.add_run(Run::detect(shard));
        r
    }

    /// Appends `run` (a resuming or merged process), keeps `machine` in step with the
    /// runs, and returns the run's index for its cells.
    pub fn add_run(&mut self, run: Run) -> usize {
        self.runs.push(run);
        self.machine = self.common_machine();
        self.runs.len() - 1
    }

    /// The fingerprint shared by every run, or `None` when the runs differ (or there are
    /// none): what the top-level `machine` must hold.
    pub fn common_machine(&self) -> Option<Machine> {
        let first = &self.runs.first()?.machine;
        self.runs
            .iter()
            .all(|r| r.machine == *first)
            .then(|| first.clone())
    }

    /// Reads and validates a results file. Every error names the file, and the key path
    /// where there is one (`cells[3].accuracy.fp32`).
    pub fn read(path: &Path) -> Result<Results> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading results file {}", path.display()))?;
        Results::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Results> {
        let file = path.display();
        let value: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("{file}: not valid JSON"))?;
        // The schema first: another version's fields would otherwise be reported as
        // unknown keys, hiding the real problem.
        match value.get("schema").and_then(|s| s.as_str()) {
            Some(SCHEMA) => {}
            Some(other) => bail!(
                "{file}: key `schema` is {other:?}; this qbench reads {SCHEMA:?} (a results file from another qbench version?)"
            ),
            None => bail!("{file}: key `schema` is missing: not a qbench results file ({SCHEMA})"),
        }
        // Written before the top-level `machine` existed (reports/baseline.json): it is
        // derived from the runs, so take it from them rather than refuse the file.
        let derive_machine = value.get("machine").is_none();
        let mut results: Results = serde_path_to_error::deserialize(value)
            .map_err(|e| anyhow::anyhow!("{file}: key `{}`: {}", e.path(), e.inner()))?;
        if derive_machine {
            results.machine = results.common_machine();
        }
        results
            .validate()
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        Ok(results)
    }

    /// Checks the whole file: config, runs, each cell, and that no two cells share a key
    /// or fall outside the configured grid.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "key `schema` is {:?}, expected {SCHEMA:?}",
                self.schema
            ));
        }
        self.config
            .validate()
            .map_err(|e| format!("key `config`: {e}"))?;
        if self.runs.is_empty() && !self.cells.is_empty() {
            return Err("key `runs` is empty but there are cells".into());
        }
        // `machine` is derived from the runs; a mismatch is a writer bug or a hand edit.
        let common = self.common_machine();
        if self.machine != common {
            let stated = self
                .machine
                .as_ref()
                .map_or("null".to_string(), |m| m.to_string());
            let runs = common.map_or(
                "the runs in `runs` do not share one machine, so it must be null".to_string(),
                |c| format!("every run in `runs` has {c}"),
            );
            return Err(format!("key `machine` is {stated} but {runs}"));
        }
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(s) = run.shard {
                if s.count == 0 || s.index >= s.count {
                    return Err(format!(
                        "key `runs[{i}].shard`: index {} of {} shards (index is 0-based, below count)",
                        s.index, s.count
                    ));
                }
            }
            if parse_rfc3339_utc(&run.started_at).is_none() {
                return Err(format!(
                    "key `runs[{i}].started_at`: {:?} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)",
                    run.started_at
                ));
            }
            if let Some(f) = &run.finished_at {
                if parse_rfc3339_utc(f).is_none() {
                    return Err(format!(
                        "key `runs[{i}].finished_at`: {f:?} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)"
                    ));
                }
            }
        }
        let mut seen: BTreeMap<CellKey, usize> = BTreeMap::new();
        for (i, cell) in self.cells.iter().enumerate() {
            let key = cell.key();
            cell.validate(self.runs.len())
                .map_err(|e| format!("key `cells[{i}]` ({key}): {e}"))?;
            let c = &self.config;
            let outside = if !c.models.contains(&cell.model) {
                Some("model")
            } else if !c.methods.contains(&cell.method) {
                Some("method")
            } else if !c.backends.contains(&cell.backend) {
                Some("backend")
            } else if !c.batch.contains(&cell.batch) {
                Some("batch")
            } else if !c.threads.contains(&cell.threads) {
                Some("threads")
            } else {
                None
            };
            if let Some(k) = outside {
                return Err(format!(
                    "key `cells[{i}].{k}` ({key}): not in the grid of `config.{}`",
                    if k == "model" || k == "method" || k == "backend" {
                        format!("{k}s")
                    } else {
                        k.to_owned()
                    }
                ));
            }
            if let Some(first) = seen.insert(key.clone(), i) {
                return Err(format!(
                    "key `cells[{i}]` ({key}): the same cell as `cells[{first}]`"
                ));
            }
        }
        Ok(())
    }

    /// The machine that measured `cell`.
    pub fn machine_of(&self, cell: &Cell) -> &Machine {
        &self.runs[cell.run].machine
    }

    /// Validates and writes the file atomically (pretty JSON).
    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate()
            .map_err(|e| anyhow::anyhow!("refusing to write {}: {e}", path.display()))?;
        crate::output::write_json(path, self)
    }
}

/// Formats a time as RFC 3339 UTC to the second (`2026-11-27T01:02:03Z`).
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Checks the shape `YYYY-MM-DDTHH:MM:SS[.fff]Z` and field ranges; returns the fields.
pub fn parse_rfc3339_utc(s: &str) -> Option<[u32; 6]> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let tail = &s[19..];
    let frac_ok = tail == "Z"
        || (tail.len() > 2
            && tail.starts_with('.')
            && tail.ends_with('Z')
            && tail[1..tail.len() - 1].bytes().all(|c| c.is_ascii_digit()));
    if !frac_ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let f = [
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    ];
    let ok =
        (1..=12).contains(&f[1]) && (1..=31).contains(&f[2]) && f[3] < 24 && f[4] < 60 && f[5] < 61;
    ok.then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // date -u -d @951782400 → 2000-02-29 00:00:00 (a leap day of a /400 year)
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        // date -u -d @1795741323 → 2026-11-27 01:02:03
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_795_741_323)),
            "2026-11-27T01:02:03Z"
        );
        assert!(parse_rfc3339_utc(&rfc3339_utc(std::time::SystemTime::now())).is_some());
        assert!(parse_rfc3339_utc("2026-11-27T01:02:03.250Z").is_some());
        assert!(parse_rfc3339_utc("2026-13-27T01:02:03Z").is_none());
        assert!(parse_rfc3339_utc("2026-11-27 01:02:03").is_none());
    }
}
