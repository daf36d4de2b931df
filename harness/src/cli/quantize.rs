//! `qbench quantize`'s flags turned into a validated plan ([`QuantizeArgs`]): which
//! flags apply to which method, the QAT run's numbers, and the export form, all checked
//! before any model or data is read.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use qbench_quantizers::export::Form;
use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::{ActScales, Backend, Method};

use super::values::{parse_backend, parse_method, parse_observer, positive};
use super::DatasetArg;
use crate::commands::quantize::QuantizeArgs;
use crate::pipeline::{QuantSpec, QUICK_QAT_SAMPLES};

/// `qbench quantize`'s flags as given.
#[derive(clap::Args)]
pub struct QuantizeFlags {
    /// A zoo model name or a path to an .onnx file.
    #[arg(value_name = "MODEL|FILE.onnx")]
    model: String,
    #[arg(long, value_parser = parse_method, default_value = "static")]
    method: Method,
    #[arg(long, value_parser = parse_backend, default_value = "fbgemm")]
    backend: Backend,
    /// Static/QAT: the activation observer (minmax, moving_average_minmax, histogram, percentile, entropy, mse); default the preset's (QAT: moving_average_minmax).
    #[arg(long, value_parser = parse_observer)]
    observer: Option<ObserverKind>,
    /// Node names to keep in fp32, comma separated.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Static: calibration images, from the training split.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive)]
    calib_samples: usize,
    /// Static, a bare .onnx file: calibrate on this data set's training split (without it, on synthetic noise).
    #[arg(long, value_enum)]
    calib_data: Option<DatasetArg>,
    /// Weights per output channel, whatever the backend's default.
    #[arg(long, conflicts_with = "per_tensor")]
    per_channel: bool,
    /// Weights per tensor, whatever the backend's default.
    #[arg(long)]
    per_tensor: bool,
    /// Dynamic: one activation scale per row (token) instead of per tensor.
    #[arg(long)]
    per_row: bool,
    /// Dynamic: also quantize Conv layers (as `{nn.Linear, nn.Conv2d}` in PyTorch).
    #[arg(long)]
    conv: bool,
    /// Output file.
    #[arg(short, long, value_name = "FILE.safetensors")]
    out: std::path::PathBuf,
    /// Also export ONNX to FILE.onnx: `qoperator` (every method) or `qdq` (static and QAT only).
    #[arg(long, num_args = 2, value_names = ["qdq|qoperator", "FILE.onnx"])]
    export_onnx: Vec<String>,
    /// QAT: fine-tuning epochs over the training split [default: 1].
    #[arg(long, value_name = "E", value_parser = positive)]
    epochs: Option<usize>,
    /// QAT: peak learning rate of SGD (momentum 0.9), cosine to 0 [default: 0.001].
    #[arg(long, value_name = "LR")]
    lr: Option<f32>,
    /// QAT: images per step [default: 64].
    #[arg(long, value_name = "N", value_parser = positive)]
    batch: Option<usize>,
    /// QAT: activation observers stop after epoch E (ranges fixed from then on) [default: 1].
    #[arg(long, value_name = "E")]
    freeze_observers_after: Option<usize>,
    /// QAT: BatchNorm statistics freeze after epoch E (0: from the start) [default: 0].
    #[arg(long, value_name = "E")]
    freeze_bn_after: Option<usize>,
    /// QAT: seeds the shuffles (and the --quick / --train-samples slice) [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// QAT: fine-tune on a seeded shuffled slice of N training images [default: all].
    #[arg(long, value_name = "N")]
    train_samples: Option<usize>,
    /// QAT: a 2,000-image slice of the training split (smoke tests).
    #[arg(long)]
    quick: bool,
}

impl QuantizeFlags {
    /// Checks which flags apply to the method and turns them into the build's spec.
    pub fn plan(self) -> Result<QuantizeArgs> {
        let mut spec = QuantSpec::new(self.method, self.backend);
        QatFlags {
            epochs: self.epochs,
            lr: self.lr,
            batch: self.batch,
            freeze_observers_after: self.freeze_observers_after,
            freeze_bn_after: self.freeze_bn_after,
            seed: self.seed,
            train_samples: self.train_samples,
            quick: self.quick,
        }
        .apply(&mut spec)?;
        spec.observer = self.observer;
        spec.skip = self.skip;
        spec.calib_samples = self.calib_samples;
        if self.calib_data.is_some() && self.method != Method::Static {
            bail!(
                "--calib-data applies to --method static only (this is --method {})",
                self.method.name()
            );
        }
        spec.calib_data = self.calib_data.map(Into::into);
        if (self.per_channel || self.per_tensor) && self.method == Method::Fp16 {
            bail!("--per-channel/--per-tensor: fp16 has no int8 weights");
        }
        spec.per_channel = (self.per_channel || self.per_tensor).then_some(self.per_channel);
        if self.per_row {
            spec.act_scales = ActScales::PerRow;
        }
        if self.conv {
            spec.op_types.push("Conv".into());
        }
        Ok(QuantizeArgs {
            model: self.model,
            spec,
            out: self.out,
            export_onnx: parse_export(&self.export_onnx)?,
        })
    }
}

/// `qbench quantize`'s QAT flags as given (`None`: not given).
#[derive(Default)]
pub struct QatFlags {
    pub epochs: Option<usize>,
    pub lr: Option<f32>,
    pub batch: Option<usize>,
    pub freeze_observers_after: Option<usize>,
    pub freeze_bn_after: Option<usize>,
    pub seed: Option<u64>,
    pub train_samples: Option<usize>,
    pub quick: bool,
}

impl QatFlags {
    /// Puts the flags into `spec`, refusing them for methods other than QAT and checking
    /// the run's numbers before any data is read.
    pub fn apply(self, spec: &mut QuantSpec) -> Result<()> {
        let given: Vec<&str> = [
            ("--epochs", self.epochs.is_some()),
            ("--lr", self.lr.is_some()),
            ("--batch", self.batch.is_some()),
            (
                "--freeze-observers-after",
                self.freeze_observers_after.is_some(),
            ),
            ("--freeze-bn-after", self.freeze_bn_after.is_some()),
            ("--seed", self.seed.is_some()),
            ("--train-samples", self.train_samples.is_some()),
            ("--quick", self.quick),
        ]
        .into_iter()
        .filter_map(|(f, on)| on.then_some(f))
        .collect();
        if spec.method != Method::Qat {
            if !given.is_empty() {
                bail!(
                    "{} appl{} to --method qat only (this is --method {})",
                    given.join(", "),
                    if given.len() == 1 { "ies" } else { "y" },
                    spec.method.name()
                );
            }
            return Ok(());
        }
        if self.quick && self.train_samples.is_some() {
            bail!("--quick and --train-samples both choose the training slice; give one");
        }
        let q = &mut spec.qat;
        q.epochs = self.epochs.unwrap_or(q.epochs);
        q.lr = self.lr.unwrap_or(q.lr);
        q.batch = self.batch.unwrap_or(q.batch);
        if self.freeze_observers_after.is_some() {
            q.freeze_observers_after = self.freeze_observers_after;
        }
        if self.freeze_bn_after.is_some() {
            q.freeze_bn_after = self.freeze_bn_after;
        }
        q.seed = self.seed.unwrap_or(q.seed);
        spec.qat_samples = if self.quick {
            Some(QUICK_QAT_SAMPLES)
        } else {
            self.train_samples
        };
        if spec.qat_samples == Some(0) {
            bail!("--train-samples 0: give at least one image");
        }
        spec.qat.validate().map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string()
                    .replacen("qat.", "--", 1)
                    .replacen("freeze_observers_after", "freeze-observers-after", 1)
                    .replacen("weight_decay", "weight-decay", 1)
            )
        })?;
        Ok(())
    }
}

/// `--export-onnx`'s two values (form, path), if given.
pub fn parse_export(v: &[String]) -> Result<Option<(Form, PathBuf)>> {
    match v {
        [] => Ok(None),
        [form, path] => {
            let f = Form::from_name(form).with_context(|| {
                format!("--export-onnx: unknown form {form:?}; valid: qdq, qoperator")
            })?;
            Ok(Some((f, PathBuf::from(path))))
        }
        _ => bail!("--export-onnx takes a form and a path"),
    }
}
