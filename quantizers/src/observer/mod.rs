//! Observers: they watch the values a tensor takes (weights once, activations over the
//! calibration batches) and turn what they saw into [`QParams`].
//!
//! Each observer kind lives in its own module; [`ObserverKind`] names them for configs
//! and the CLI, and [`ObserverKind::build`] makes one for a layer. Observers reject NaN
//! and Inf with an error naming the layer, and refuse to produce qparams before they have
//! seen any data.

mod entropy;
mod grid;
mod histogram;
mod minmax;
mod mse;
mod percentile;

pub use entropy::{entropy_threshold_bins, Entropy, ENTROPY_LEVELS};
pub use histogram::Histogram;
pub use minmax::{MinMax, MovingAverageMinMax, PerChannelMinMax};
pub use mse::{Mse, MSE_BINS, MSE_STEPS};
pub use percentile::{Percentile, TAIL_CAPACITY};

use crate::error::Result;
use crate::qparams::{Granularity, QParams, QSpec};

/// Something that watches a tensor and proposes its quantization parameters.
pub trait Observer: Send {
    /// Feeds one tensor of `shape` (row-major `data`). Errors on NaN/Inf.
    fn observe(&mut self, shape: &[usize], data: &[f32]) -> Result<()>;
    /// The qparams for everything observed so far. Errors when nothing was observed.
    fn qparams(&self) -> Result<QParams>;
    /// The observer's name, as [`ObserverKind::name`].
    fn name(&self) -> &'static str;
}

/// The observers qbench offers (configs and the CLI use [`ObserverKind::name`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObserverKind {
    /// Running min and max (per tensor; per channel when the spec says so).
    MinMax,
    /// Exponential moving average of each batch's min and max (PyTorch default 0.01).
    MovingAverageMinMax { averaging_constant: f32 },
    /// 2048-bin histogram, then PyTorch's search for the range minimising L2 error.
    Histogram { bins: usize },
    /// The range covering a percentile of the values (e.g. 99.99): of |x| on a symmetric
    /// grid, of each tail ((100 − p)/2 % off each side) on an affine one.
    Percentile { percentile: f64 },
    /// TensorRT's entropy calibration: the threshold minimising KL divergence.
    Entropy { bins: usize },
    /// The clipping range `[α·min, α·max]` (α = 0.01, 0.02, ..., 1) minimising the mean
    /// squared error of fake quantization on the spec's grid.
    Mse,
}

impl ObserverKind {
    /// All kinds with their default parameters, in documentation order.
    pub fn all() -> [ObserverKind; 6] {
        [
            ObserverKind::MinMax,
            ObserverKind::MovingAverageMinMax {
                averaging_constant: 0.01,
            },
            ObserverKind::Histogram { bins: 2048 },
            ObserverKind::Percentile { percentile: 99.99 },
            ObserverKind::Entropy { bins: 2048 },
            ObserverKind::Mse,
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            ObserverKind::MinMax => "minmax",
            ObserverKind::MovingAverageMinMax { .. } => "moving_average_minmax",
            ObserverKind::Histogram { .. } => "histogram",
            ObserverKind::Percentile { .. } => "percentile",
            ObserverKind::Entropy { .. } => "entropy",
            ObserverKind::Mse => "mse",
        }
    }

    /// The kind with default parameters called `name` (as [`ObserverKind::name`]).
    pub fn from_name(name: &str) -> Option<ObserverKind> {
        Self::all().into_iter().find(|k| k.name() == name)
    }

    /// A fresh observer of this kind for `layer`, producing qparams on `spec`'s grid.
    pub fn build(&self, spec: QSpec, layer: &str) -> Result<Box<dyn Observer>> {
        spec.validate(layer)?;
        let layer = layer.to_string();
        Ok(match (*self, spec.granularity) {
            (ObserverKind::MinMax, Granularity::PerChannel { axis }) => {
                Box::new(PerChannelMinMax::new(spec, axis, layer))
            }
            (ObserverKind::MinMax, Granularity::PerTensor) => Box::new(MinMax::new(spec, layer)),
            (ObserverKind::MovingAverageMinMax { averaging_constant }, Granularity::PerTensor) => {
                Box::new(MovingAverageMinMax::new(spec, averaging_constant, layer))
            }
            (ObserverKind::Histogram { bins }, Granularity::PerTensor) => {
                Box::new(Histogram::new(spec, bins, layer)?)
            }
            (ObserverKind::Percentile { percentile }, Granularity::PerTensor) => {
                Box::new(Percentile::new(spec, percentile, layer)?)
            }
            (ObserverKind::Entropy { bins }, Granularity::PerTensor) => {
                Box::new(Entropy::new(spec, bins, layer)?)
            }
            (ObserverKind::Mse, Granularity::PerTensor) => Box::new(Mse::new(spec, layer)),
            (kind, Granularity::PerChannel { .. }) => {
                return Err(crate::error::QuantError::Config {
                    key: format!("{layer}.observer"),
                    msg: format!(
                        "{} is a per-tensor observer; use minmax for per-channel weights",
                        kind.name()
                    ),
                })
            }
        })
    }
}
