//! TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017):
//! the clipping threshold whose quantized distribution loses the least information,
//! measured by KL divergence.
//!
//! - A histogram of |x| over [0, max|x|] in `bins` (default 2048) bins.
//! - For each candidate `i` in `128..=bins`: the reference P is bins `0..i` with every count
//!   beyond (the outliers the threshold would clip) added to bin `i − 1`; the candidate Q
//!   merges bins `0..i` (without the outliers) into 128 levels and expands each level back
//!   over its bins, spreading the level's count evenly over the bins where P is non-zero
//!   (zero bins stay zero). Levels are `⌊i/128⌋` bins wide, the last one takes the
//!   remainder (the merge of MXNet's and ONNX Runtime's `get_entropy_threshold`).
//! - Before the search, bin 0's count is replaced by bin 1's, as NVIDIA's reference
//!   (TensorRT's pytorch-quantization, `_compute_amax_entropy`) does: the exact zeros of a
//!   ReLU pile up in bin 0 and are exact on any grid, but Q smears that spike over its
//!   whole level whenever a level spans several bins, so the spike would dominate the KL
//!   (measured without it: 1M ReLU(N(0, 1)) values clipped at 1.54 of 4.33, 400x
//!   MinMax's squared error).
//! - The threshold is `i·w`, the right edge of the kept bins, for the `i` minimising
//!   KL(P‖Q) over the normalised P and Q (the first such `i` on ties). A candidate where Q
//!   is 0 on a bin where P is not (the clipped mass has nowhere to go) scores +∞; unlike
//!   MXNet/ORT there is no ε-smoothing, which would move that score by an arbitrary amount.
//!
//! TensorRT is symmetric: the range is [−t, t]. On an affine grid the range is that clip
//! intersected with the observed [min, max] (for ReLU outputs, [0, t]).
//!
//! Batches are merged on [`GridHistogram`]'s zero-anchored grid: whole bins merge when the
//! range grows, and with the extremes in the first batch the result equals observing the
//! concatenation at once. A histogram that grew occupies between about `bins/2` and `bins`
//! bins; candidates then run up to the occupied count.

use super::grid::GridHistogram;
use super::Observer;
use crate::error::{check_finite, QuantError, Result};
use crate::qparams::{QParams, QSpec, Symmetry};

/// TensorRT's 128 levels: the magnitudes of a symmetric 8-bit grid.
pub const ENTROPY_LEVELS: usize = 128;

pub struct Entropy {
    spec: QSpec,
    layer: String,
    histogram: GridHistogram,
    range: Option<(f32, f32)>,
}

impl Entropy {
    pub fn new(spec: QSpec, bins: usize, layer: String) -> Result<Entropy> {
        if bins < ENTROPY_LEVELS {
            return Err(QuantError::Config {
                key: format!("{layer}.observer.bins"),
                msg: format!(
                    "entropy calibration needs at least {ENTROPY_LEVELS} bins, got {bins}"
                ),
            });
        }
        Ok(Entropy {
            spec,
            layer,
            histogram: GridHistogram::new(bins),
            range: None,
        })
    }

    /// The chosen |x| threshold.
    pub fn threshold(&self) -> Result<f32> {
        let (lo, hi) = self.range.ok_or_else(|| QuantError::NoData {
            layer: self.layer.clone(),
            observer: self.name(),
        })?;
        let amax = (-lo).max(hi);
        let Some((counts, width, _)) = self.histogram.bins() else {
            return Ok(0.0); // every value was 0
        };
        let i = entropy_threshold_bins(counts);
        // The grid's top edge can lie beyond max|x| after merges; never clip beyond the data.
        Ok(((i as f64 * width) as f32).min(amax))
    }
}

impl Observer for Entropy {
    fn observe(&mut self, _shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        let Some(&first) = data.first() else {
            return Ok(());
        };
        let (lo, hi) = data
            .iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let amax = (-lo).max(hi).max(0.0);
        self.histogram.add(data.iter().map(|v| v.abs()), 0.0, amax);
        self.range = Some(match self.range {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        let t = self.threshold()?;
        let (lo, hi) = self.range.expect("threshold() checked");
        Ok(match self.spec.symmetry {
            Symmetry::Symmetric => self.spec.qparams(&[-t], &[t]),
            Symmetry::Affine => self.spec.qparams(&[lo.max(-t)], &[hi.min(t)]),
        })
    }

    fn name(&self) -> &'static str {
        "entropy"
    }
}

/// The number of bins `i` kept by the KL-minimising threshold (module doc).
pub fn entropy_threshold_bins(counts: &[f64]) -> usize {
    let n = counts.len();
    if n <= ENTROPY_LEVELS {
        return n; // 128 levels already resolve every bin: nothing to clip
    }
    let mut counts = counts.to_vec();
    counts[0] = counts[1]; // the zero spike (module doc)
    let total: f64 = counts.iter().sum();
    let mut best = (f64::INFINITY, n);
    let mut outliers: f64 = counts[ENTROPY_LEVELS..].iter().sum();
    let mut kept: f64 = total - outliers;
    for i in ENTROPY_LEVELS..=n {
        let kl = kl_for_candidate(&counts[..i], outliers, total, kept);
        if kl < best.0 {
            best = (kl, i);
        }
        if i < n {
            outliers -= counts[i];
            kept += counts[i];
        }
    }
    best.1
}

/// KL(P‖Q) for keeping `slice` (`kept` = its sum) and folding `outliers` into its last bin;
/// `total` = kept + outliers normalises P, `kept` normalises Q.
fn kl_for_candidate(slice: &[f64], outliers: f64, total: f64, kept: f64) -> f64 {
    let i = slice.len();
    if kept == 0.0 {
        return f64::INFINITY; // all mass clipped: Q is empty
    }
    let merged = i / ENTROPY_LEVELS;
    let p_at = |k: usize| {
        if k == i - 1 {
            slice[k] + outliers
        } else {
            slice[k]
        }
    };
    let mut kl = 0.0;
    for level in 0..ENTROPY_LEVELS {
        let start = level * merged;
        let stop = if level == ENTROPY_LEVELS - 1 {
            i
        } else {
            start + merged
        };
        let level_sum: f64 = slice[start..stop].iter().sum();
        let nonzero = (start..stop).filter(|&k| p_at(k) != 0.0).count();
        if nonzero == 0 {
            continue; // P is 0 here: no contribution
        }
        let q = level_sum / nonzero as f64 / kept;
        for k in start..stop {
            let p = p_at(k) / total;
            if p == 0.0 {
                continue;
            }
            if q == 0.0 {
                return f64::INFINITY;
            }
            kl += p * (p / q).ln();
        }
    }
    kl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_histogram_keeps_every_bin() {
        // Uniform |x|: any clipping folds real mass into one bin, which Q cannot follow.
        let counts = vec![5.0; 2048];
        assert_eq!(entropy_threshold_bins(&counts), 2048);
    }

    #[test]
    fn a_lone_far_outlier_is_clipped() {
        // A half-Gaussian over the first 1200 bins, one value in the last bin.
        let mut counts = vec![0.0; 2048];
        for (k, c) in counts.iter_mut().enumerate().take(1200) {
            *c = (1e4 * (-(k as f64 / 400.0).powi(2)).exp()).round();
        }
        counts[2047] = 1.0;
        let i = entropy_threshold_bins(&counts);
        assert!((128..=1200).contains(&i), "kept {i} bins");
    }

    #[test]
    fn too_few_bins_is_a_config_error_naming_the_layer() {
        let err = Entropy::new(QSpec::activation_quint8(false), 64, "fc1".into())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("fc1.observer.bins"), "{err}");
    }
}
