//! PyTorch's `HistogramObserver` (torch/ao/quantization/observer.py, torch 2.x), step for
//! step, so the activation ranges of the `fbgemm`/`qnnpack` presets are the ones PyTorch
//! users get:
//!
//! - `observe`: a histogram of `bins` (default 2048) over the running [min, max]. The first
//!   batch is `histc` over its own extremes. A later batch is `histc`'d over the combined
//!   range; if the range grew, the old histogram is moved onto the new bins by
//!   `_combine_histograms`: each old bin is split into `upsample_rate` = 16 equal parts whose
//!   midpoints are assigned to the new bins (`_upscale_histogram`).
//! - `qparams`: `_non_linear_param_search` walks the quantile bounds inwards in steps of
//!   1e-5, moving whichever end gains more bins, and stops at the first step whose L2
//!   quantization error (`_compute_quantization_error`: each bin's values uniform within the
//!   bin, quantized onto 256 levels spread over the candidate range) exceeds the previous
//!   one. The chosen [min, max] then gets qparams on the spec's grid (`qmin..=qmax`), as
//!   `_calculate_qparams` does.
//!
//! Two PyTorch details kept on purpose: the error model always spreads the candidate range
//! over `2^8 = 256` levels (`dst_nbins = 2 ** bits(dtype)`), also under reduce_range; and
//! the element-wise arithmetic is f32 where PyTorch's tensors are f32 (histogram, cumulative
//! sum, bin positions), so near-ties break the same way. Differences from PyTorch: NaN/Inf
//! is an error naming the layer (PyTorch drops Inf with a warning), and asking for qparams
//! before any data is an error (PyTorch warns and returns scale 1).

use super::Observer;
use crate::error::{check_finite, QuantError, Result};
use crate::qparams::{QParams, QSpec};

/// `self.upsample_rate` of PyTorch's observer (fixed at 16 since torch 2.3).
const UPSAMPLE_RATE: usize = 16;
/// `self.dst_nbins = 2 ** torch.iinfo(dtype).bits`: 256 for quint8 and qint8 alike.
const DST_NBINS: usize = 256;

pub struct Histogram {
    spec: QSpec,
    layer: String,
    bins: usize,
    histogram: Vec<f32>,
    /// `(min_val, max_val)`; `None` until the first non-empty batch.
    range: Option<(f32, f32)>,
}

impl Histogram {
    pub fn new(spec: QSpec, bins: usize, layer: String) -> Result<Histogram> {
        if bins < 2 {
            return Err(QuantError::Config {
                key: format!("{layer}.observer.bins"),
                msg: format!("histogram needs at least 2 bins, got {bins}"),
            });
        }
        Ok(Histogram {
            spec,
            layer,
            bins,
            histogram: vec![0.0; bins],
            range: None,
        })
    }

    /// The (min, max) that `_non_linear_param_search` picks, before `_calculate_qparams`.
    pub fn search_range(&self) -> Result<(f32, f32)> {
        let (min_val, max_val) = self.range.ok_or_else(|| QuantError::NoData {
            layer: self.layer.clone(),
            observer: self.name(),
        })?;
        Ok(non_linear_param_search(&self.histogram, min_val, max_val))
    }

    /// The running histogram and its (min, max), for inspection and tests.
    pub fn histogram(&self) -> Option<(&[f32], f32, f32)> {
        self.range.map(|(lo, hi)| (&self.histogram[..], lo, hi))
    }
}

impl Observer for Histogram {
    fn observe(&mut self, _shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        let Some((x_min, x_max)) = extremes(data) else {
            return Ok(());
        };
        match self.range {
            None => {
                self.histogram = histc(data, self.bins, x_min, x_max);
                self.range = Some((x_min, x_max));
            }
            Some((cur_min, cur_max)) => {
                let new_min = cur_min.min(x_min);
                let new_max = cur_max.max(x_max);
                let update = histc(data, self.bins, new_min, new_max);
                if new_min == cur_min && new_max == cur_max {
                    for (h, u) in self.histogram.iter_mut().zip(&update) {
                        *h += u;
                    }
                } else {
                    self.histogram = combine_histograms(
                        &self.histogram,
                        cur_min,
                        cur_max,
                        &update,
                        new_min,
                        new_max,
                    );
                    self.range = Some((new_min, new_max));
                }
            }
        }
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        let (lo, hi) = self.search_range()?;
        Ok(self.spec.qparams(&[lo], &[hi]))
    }

    fn name(&self) -> &'static str {
        "histogram"
    }
}

fn extremes(data: &[f32]) -> Option<(f32, f32)> {
    let first = *data.first()?;
    Some(
        data.iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v))),
    )
}

/// `torch.histc(x, bins, min, max)` (ATen's linear-interpolation histogram kernel): bin
/// `⌊(x − min)·bins / (max − min)⌋` in f32, `x == max` in the last bin, values outside
/// [min, max] dropped; a zero-width range is widened to [min − 1, max + 1].
fn histc(data: &[f32], bins: usize, min: f32, max: f32) -> Vec<f32> {
    let (lo, hi) = if min == max {
        (min - 1.0, max + 1.0)
    } else {
        (min, max)
    };
    let mut out = vec![0.0f32; bins];
    let nb = bins as f32;
    for &x in data {
        if x < lo || x > hi {
            continue;
        }
        let pos = ((x - lo) * nb / (hi - lo)) as usize;
        out[pos.min(bins - 1)] += 1.0;
    }
    out
}

/// `torch.linspace(start, end, steps)` for f32 (ATen's CPU kernel: the first half counts up
/// from `start`, the second half down from `end`, with an f32 step).
fn linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// `_combine_histograms`: the old histogram (over [orig_min, orig_max]) moved onto the bins
/// of `update` (over the wider [update_min, update_max]) and added to it.
fn combine_histograms(
    orig: &[f32],
    orig_min: f32,
    orig_max: f32,
    update: &[f32],
    update_min: f32,
    update_max: f32,
) -> Vec<f32> {
    let bins = orig.len();
    let mut out = update.to_vec();
    if orig_min == orig_max {
        // All old values were one number: its whole count lands in that number's new bin.
        let total: f32 = orig.iter().sum();
        let point = histc(&[orig_min], bins, update_min, update_max);
        for (o, p) in out.iter_mut().zip(&point) {
            *o += p * total;
        }
        return out;
    }
    // `_upscale_histogram`: split each old bin into UPSAMPLE_RATE parts of equal count and
    // drop each part into the new bin holding its midpoint.
    let fine = bins * UPSAMPLE_RATE;
    let bin_size = (orig_max - orig_min) / fine as f32;
    let starts = linspace(orig_min, orig_max, fine + 1);
    let bounds = linspace(update_min, update_max, bins + 1);
    let mut moved = vec![0.0f64; bins];
    for (j, &start) in starts[..fine].iter().enumerate() {
        let mid = start + 0.5 * bin_size;
        // bucketize(right=True) − 1: the number of boundaries ≤ mid, minus one.
        let b = bounds.partition_point(|&e| e <= mid) as isize - 1;
        let b = b.clamp(0, bins as isize - 1) as usize;
        moved[b] += f64::from(orig[j / UPSAMPLE_RATE] / UPSAMPLE_RATE as f32);
    }
    for (o, m) in out.iter_mut().zip(&moved) {
        *o += *m as f32;
    }
    out
}

/// `_get_norm`: ∫ x² over [begin, end] of a density, = density·(end³ − begin³)/3.
fn get_norm(begin: f32, end: f32, density: f32) -> f32 {
    density * ((end * end * end - begin * begin * begin) / 3.0)
}

/// `_compute_quantization_error`: the L2 error of quantizing the histogram's values (uniform
/// within each bin) onto DST_NBINS levels spread over bins `start..=end`; values outside
/// are clamped to the end levels, so their distance counts too.
fn quantization_error(
    histogram: &[f32],
    min_val: f32,
    max_val: f32,
    start: usize,
    end: usize,
) -> f64 {
    let bins = histogram.len();
    // `.item()` makes these Python floats (f64); the tensors below are f32.
    let bin_width = (f64::from(max_val) - f64::from(min_val)) / bins as f64;
    let dst_bin_width = bin_width * (end - start + 1) as f64 / DST_NBINS as f64;
    if dst_bin_width == 0.0 {
        return 0.0;
    }
    let (bw, dw) = (bin_width as f32, dst_bin_width as f32);
    let last_dst = (DST_NBINS - 1) as f32;
    let full = get_norm(-dw / 2.0, dw / 2.0, 1.0);
    let mut norm = 0.0f64;
    for (k, &count) in histogram.iter().enumerate() {
        let src_begin = (k as f32 - start as f32) * bw;
        let src_end = src_begin + bw;
        let dst_of_begin = (src_begin / dw).floor().clamp(0.0, last_dst);
        let dst_of_end = (src_end / dw).floor().clamp(0.0, last_dst);
        let density = count / bw;
        let begin_center = (dst_of_begin + 0.5) * dw;
        let end_center = dst_of_end * dw + dw / 2.0;
        let mut n = get_norm(src_begin - begin_center, dw / 2.0, density);
        n += (dst_of_end - dst_of_begin - 1.0) * (full * density);
        n += get_norm(-dw / 2.0, src_end - end_center, density);
        norm += f64::from(n);
    }
    norm
}

/// `_non_linear_param_search`: the greedy walk of the quantile bounds (module doc).
fn non_linear_param_search(histogram: &[f32], min_val: f32, max_val: f32) -> (f32, f32) {
    let bins = histogram.len();
    let bin_width = (max_val - min_val) / bins as f32;
    let total = f64::from(histogram.iter().sum::<f32>());
    let csum: Vec<f32> = histogram
        .iter()
        .scan(0.0f32, |acc, &h| {
            *acc += h;
            Some(*acc)
        })
        .collect();

    const STEPSIZE: f64 = 1e-5;
    let (mut alpha, mut beta) = (0.0f64, 1.0f64);
    let (mut start_bin, mut end_bin) = (0usize, bins - 1);
    let mut norm_min = f64::INFINITY;
    while alpha < beta {
        let next_alpha = alpha + STEPSIZE;
        let next_beta = beta - STEPSIZE;
        // PyTorch compares an f32 tensor element with a Python float: done in f32.
        let lo_bound = (next_alpha * total) as f32;
        let hi_bound = (next_beta * total) as f32;
        let mut l = start_bin;
        let mut r = end_bin;
        while l < end_bin && csum[l] < lo_bound {
            l += 1;
        }
        while r > start_bin && csum[r] > hi_bound {
            r -= 1;
        }
        let (mut next_start, mut next_end) = (start_bin, end_bin);
        if l - start_bin > end_bin - r {
            next_start = l;
            alpha = next_alpha;
        } else {
            next_end = r;
            beta = next_beta;
        }
        if next_start == start_bin && next_end == end_bin {
            continue;
        }
        let norm = quantization_error(histogram, min_val, max_val, next_start, next_end);
        if norm > norm_min {
            break;
        }
        norm_min = norm;
        start_bin = next_start;
        end_bin = next_end;
    }
    (
        min_val + bin_width * start_bin as f32,
        min_val + bin_width * (end_bin + 1) as f32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histc_puts_the_maximum_in_the_last_bin_and_widens_a_point() {
        assert_eq!(
            histc(&[0.0, 0.5, 1.0, 0.99], 4, 0.0, 1.0),
            vec![1.0, 0.0, 1.0, 2.0]
        );
        // A constant: [c − 1, c + 1], so the value sits in the middle bin.
        assert_eq!(histc(&[3.0, 3.0], 4, 3.0, 3.0), vec![0.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    fn linspace_hits_both_ends_exactly() {
        let v = linspace(-1.3, 2.7, 11);
        assert_eq!(v[0], -1.3);
        assert_eq!(v[10], 2.7);
        assert!(v.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn combining_keeps_the_total_count_and_the_mass_in_place() {
        // Old: 4 bins over [0, 4], one count per bin. New range [0, 8]: the old counts must
        // land in new bins 0 and 1 (each new bin is two old ones wide).
        let old = vec![1.0f32; 4];
        let update = vec![0.0f32; 4];
        let out = combine_histograms(&old, 0.0, 4.0, &update, 0.0, 8.0);
        assert_eq!(out, vec![2.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn a_constant_first_batch_moves_whole_into_the_wider_histogram() {
        // PyTorch's orig_min == orig_max branch: the old count lands in the new bin that
        // holds the constant, without upsampling.
        let mut obs = Histogram::new(QSpec::activation_quint8(false), 8, "c".into()).unwrap();
        obs.observe(&[10], &[1.0; 10]).unwrap();
        obs.observe(&[2], &[0.0, 2.0]).unwrap();
        let (hist, lo, hi) = obs.histogram().unwrap();
        assert_eq!((lo, hi), (0.0, 2.0));
        assert_eq!(hist, &[1.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn quantization_error_of_the_full_range_matches_the_uniform_formula() {
        // Uniform density over the full range: every value is in range, the error is the
        // rounding error of a uniform, Δ²/12 per value, Δ = range / 256.
        let bins = 2048;
        let hist = vec![10.0f32; bins];
        let err = quantization_error(&hist, 0.0, 1.0, 0, bins - 1);
        let delta = 1.0 / DST_NBINS as f64;
        let expected = (bins as f64 * 10.0) * delta * delta / 12.0;
        assert!(
            (err - expected).abs() / expected < 1e-3,
            "{err} vs {expected}"
        );
    }
}
