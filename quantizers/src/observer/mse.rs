//! The clipping range minimising the mean squared error between x and fake-quant(x) on the
//! spec's grid.
//!
//! The search: candidates `[α·min, α·max]` of the observed range for `α = k/100`,
//! `k = 1..=100` (torchao's `AffineQuantizedMSEObserver` line search has the same 100
//! steps, but over a symmetric `±α·max|x|`; scaling both ends instead keeps a one-sided
//! range such as a ReLU's at `[0, α·max]`, so an affine grid spends no levels on values that
//! never occur; on a symmetric grid the two are the same). Each candidate gets qparams by
//! the spec's rules (zero point, qmin..=qmax, reduce_range) and is scored by its expected
//! squared error; ties keep the wider range.
//!
//! The error is computed on a 4096-bin [`GridHistogram`] of x, not on stored values (a
//! calibration set's activations do not fit in memory): each bin's count is spread
//! uniformly over the bin and integrated exactly against the piecewise-constant
//! fake-quant function, clipped values included (PyTorch's `_compute_quantization_error`
//! makes the same uniform-within-bin assumption). Bins are much narrower than a
//! quantization step (≥ 16 bins per step over the full range), so the estimate tracks the
//! error on the raw values closely.

use super::grid::GridHistogram;
use super::Observer;
use crate::error::{check_finite, QuantError, Result};
use crate::qparams::{QParams, QSpec};

/// Histogram bins behind the error estimate.
pub const MSE_BINS: usize = 4096;
/// Candidate ranges: `α = k / MSE_STEPS`, `k = 1..=MSE_STEPS`.
pub const MSE_STEPS: usize = 100;

pub struct Mse {
    spec: QSpec,
    layer: String,
    histogram: GridHistogram,
    range: Option<(f32, f32)>,
}

impl Mse {
    pub fn new(spec: QSpec, layer: String) -> Mse {
        Mse {
            spec,
            layer,
            histogram: GridHistogram::new(MSE_BINS),
            range: None,
        }
    }

    /// The chosen clipping range `(α·min, α·max)`.
    pub fn clip_range(&self) -> Result<(f32, f32)> {
        let (lo, hi) = self.range.ok_or_else(|| QuantError::NoData {
            layer: self.layer.clone(),
            observer: self.name(),
        })?;
        let Some((counts, width, first)) = self.histogram.bins() else {
            return Ok((lo, hi)); // every value was 0
        };
        let mut best = (f64::INFINITY, (lo, hi));
        // Widest first, strict `<`: ties keep the wider range.
        for k in (1..=MSE_STEPS).rev() {
            let alpha = k as f32 / MSE_STEPS as f32;
            let cand = (alpha * lo, alpha * hi);
            let (scale, zp) = self.spec.qparams_for_range(cand.0, cand.1);
            let err = expected_sq_error(counts, width, first, scale, zp, &self.spec);
            if err < best.0 {
                best = (err, cand);
            }
        }
        Ok(best.1)
    }
}

impl Observer for Mse {
    fn observe(&mut self, _shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        let Some(&first) = data.first() else {
            return Ok(());
        };
        let (lo, hi) = data
            .iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        self.histogram.add(data.iter().copied(), lo, hi);
        self.range = Some(match self.range {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        let (lo, hi) = self.clip_range()?;
        Ok(self.spec.qparams(&[lo], &[hi]))
    }

    fn name(&self) -> &'static str {
        "mse"
    }
}

/// Σ over bins of ∫ (x − fq(x))² · density, density = count / width uniform over the bin,
/// fq(x) = (clamp(round(x/s) + zp, qmin, qmax) − zp)·s.
fn expected_sq_error(
    counts: &[f64],
    width: f64,
    first: i64,
    scale: f32,
    zp: i32,
    spec: &QSpec,
) -> f64 {
    let s = f64::from(scale);
    let (qmin, qmax) = (i64::from(spec.qmin), i64::from(spec.qmax));
    let zp = i64::from(zp);
    // The level x rounds to, on the grid (rounding boundaries at half steps).
    let level = |x: f64| ((x / s).round() as i64 + zp).clamp(qmin, qmax);
    // Lower and upper end of level q's cell; the end levels take everything beyond.
    let cell = |q: i64| {
        let lo = if q == qmin {
            f64::NEG_INFINITY
        } else {
            ((q - zp) as f64 - 0.5) * s
        };
        let hi = if q == qmax {
            f64::INFINITY
        } else {
            ((q - zp) as f64 + 0.5) * s
        };
        (lo, hi)
    };
    let cube = |v: f64| v * v * v;
    let mut total = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        let a = (first + i as i64) as f64 * width;
        let b = a + width;
        let density = c / width;
        for q in level(a)..=level(b) {
            let (lo, hi) = cell(q);
            let (pa, pb) = (a.max(lo), b.min(hi));
            if pb <= pa {
                continue;
            }
            let v = (q - zp) as f64 * s;
            total += density * (cube(pb - v) - cube(pa - v)) / 3.0;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_error_of_a_uniform_in_range_is_a_twelfth_of_a_step_squared() {
        // 0..=255 grid, scale 1, zp 0; values uniform on [0, 255]: rounding error s²/12,
        // except the half cells at both ends (error s²/12 there too, by symmetry).
        let spec = QSpec::activation_quint8(false);
        let bins = 255 * 16;
        let counts = vec![1.0; bins];
        let err = expected_sq_error(&counts, 1.0 / 16.0, 0, 1.0, 0, &spec);
        let expected = bins as f64 / 12.0;
        assert!((err - expected).abs() / expected < 1e-9, "{err}");
    }

    #[test]
    fn clipped_values_cost_their_distance_to_the_end_level() {
        // One bin [10, 11) on a grid that ends at 2: error = ∫ (x − 2)² over the bin.
        let spec = QSpec {
            qmin: 0,
            qmax: 2,
            ..QSpec::activation_quint8(false)
        };
        let err = expected_sq_error(&[1.0], 1.0, 10, 1.0, 0, &spec);
        let expected = (9.0f64.powi(3) - 8.0f64.powi(3)) / 3.0;
        assert!((err - expected).abs() < 1e-9, "{err} vs {expected}");
    }
}
