//! A histogram on a grid anchored at zero, for observers that merge calibration batches
//! (Entropy on |x|, MSE on x).
//!
//! Bin `k` covers `[k·w, (k+1)·w)`; the histogram always spans 0 (quantization ranges
//! contain 0 anyway) and at most `max_bins` bins. When a batch falls outside, `f` adjacent
//! bins are merged into one (`w ← f·w`, bin `k → ⌊k/f⌋`, `f` the smallest integer that
//! fits): a coarse boundary is also a fine one, so counts move whole and nothing is
//! interpolated, unlike PyTorch's re-binning. The first batch sets `w = span / max_bins`,
//! so calibrating in batches gives exactly the single-batch histogram whenever the first
//! batch holds the extremes, and a histogram of the same shape (coarser by `f`) otherwise.
//! The top edge of the grid belongs to the last bin (as `numpy.histogram` and `histc`).

pub(crate) struct GridHistogram {
    max_bins: usize,
    /// Bin width; 0 while every value seen is 0.
    width: f64,
    /// Absolute index of `counts[0]`.
    first: i64,
    counts: Vec<f64>,
    /// Values seen while `width == 0` (all zeros).
    zeros: f64,
}

impl GridHistogram {
    pub fn new(max_bins: usize) -> GridHistogram {
        GridHistogram {
            max_bins,
            width: 0.0,
            first: 0,
            counts: Vec::new(),
            zeros: 0.0,
        }
    }

    /// Adds values whose extremes are `lo ≤ hi` (callers have them already).
    pub fn add(&mut self, values: impl Iterator<Item = f32>, lo: f32, hi: f32) {
        let lo = f64::from(lo).min(0.0);
        let hi = f64::from(hi).max(0.0);
        if self.width == 0.0 {
            if hi == lo {
                self.zeros += values.count() as f64;
                return;
            }
            self.start(lo, hi);
        } else {
            self.cover(lo, hi);
        }
        let w = self.width;
        let last = self.counts.len() - 1;
        for v in values {
            let k = (f64::from(v) / w).floor() as i64 - self.first;
            // Only the top edge (or a rounding hair around an edge) lands outside.
            self.counts[k.clamp(0, last as i64) as usize] += 1.0;
        }
    }

    /// Bin counts from the bin holding 0 (or the lowest bin) upwards, the bin width and the
    /// absolute index of the first count. `None` if nothing but zeros was seen.
    pub fn bins(&self) -> Option<(&[f64], f64, i64)> {
        (self.width > 0.0).then_some((&self.counts[..], self.width, self.first))
    }

    /// First and last absolute bin needed for `[lo, hi]` at width `w` (top edge inclusive).
    fn span(lo: f64, hi: f64, w: f64) -> (f64, f64) {
        let klo = (lo / w).floor();
        let mut khi = (hi / w).floor();
        if khi > klo && khi * w >= hi {
            khi -= 1.0;
        }
        (klo, khi)
    }

    fn start(&mut self, lo: f64, hi: f64) {
        // An unaligned lo can need one bin more than span / w: then use one bin fewer.
        let mut denom = self.max_bins;
        let w = loop {
            let w = (hi - lo) / denom as f64;
            let (klo, khi) = Self::span(lo, hi, w);
            if khi - klo + 1.0 <= self.max_bins as f64 || denom == 1 {
                self.first = klo as i64;
                self.counts = vec![0.0; (khi - klo) as usize + 1];
                break w;
            }
            denom -= 1;
        };
        self.width = w;
        // Zeros seen before the first non-zero batch go where `add` would put a 0: absolute
        // bin 0, or the top bin when 0 is the grid's (inclusive) top edge.
        let z = (-self.first).clamp(0, self.counts.len() as i64 - 1) as usize;
        self.counts[z] += std::mem::take(&mut self.zeros);
    }

    /// Grows (merging bins if needed) so that `[lo, hi]` is covered.
    fn cover(&mut self, lo: f64, hi: f64) {
        let cur_lo = self.first as f64 * self.width;
        let cur_hi = (self.first + self.counts.len() as i64) as f64 * self.width;
        let lo = lo.min(cur_lo);
        let hi = hi.max(cur_hi);
        let mut f: u64 = 1;
        loop {
            let w = self.width * f as f64;
            let (klo, khi) = Self::span(lo, hi, w);
            // The merged old bins must fit as well as the new values.
            let old_lo = self.first.div_euclid(f as i64) as f64;
            let old_hi = (self.first + self.counts.len() as i64 - 1).div_euclid(f as i64) as f64;
            let (klo, khi) = (klo.min(old_lo), khi.max(old_hi));
            if khi - klo + 1.0 <= self.max_bins as f64 {
                let mut counts = vec![0.0; (khi - klo) as usize + 1];
                for (i, &c) in self.counts.iter().enumerate() {
                    let k = (self.first + i as i64).div_euclid(f as i64);
                    counts[(k - klo as i64) as usize] += c;
                }
                self.counts = counts;
                self.first = klo as i64;
                self.width = w;
                return;
            }
            // Jump close to the answer, then step.
            let need = (hi - lo) / (self.width * self.max_bins as f64);
            f = (f + 1).max(need.ceil() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(h: &mut GridHistogram, v: &[f32]) {
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        h.add(v.iter().copied(), lo, hi);
    }

    #[test]
    fn first_batch_spans_its_range_in_max_bins() {
        let mut h = GridHistogram::new(8);
        add(&mut h, &[0.0, 1.0, 7.9, 8.0]);
        let (c, w, first) = h.bins().unwrap();
        assert_eq!((w, first), (1.0, 0));
        assert_eq!(c, &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
    }

    #[test]
    fn growing_merges_whole_bins() {
        let mut h = GridHistogram::new(8);
        add(&mut h, &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 8.0]);
        // Range 0..20 at width 1 needs 20 bins: merge by 3 (width 3, 7 bins).
        add(&mut h, &[20.0]);
        let (c, w, first) = h.bins().unwrap();
        assert_eq!((w, first), (3.0, 0));
        assert_eq!(c, &[3.0, 3.0, 2.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(c.iter().sum::<f64>(), 9.0);
    }

    #[test]
    fn signed_ranges_and_zero_only_batches() {
        let mut h = GridHistogram::new(16);
        add(&mut h, &[0.0, 0.0]);
        assert!(h.bins().is_none());
        add(&mut h, &[-3.0, 1.0]);
        let (c, w, first) = h.bins().unwrap();
        assert!(c.len() <= 16);
        assert_eq!(c.iter().sum::<f64>(), 4.0);
        // The two zeros sit in the bin holding 0.
        let zero_bin = (0.0f64 / w).floor() as i64 - first;
        assert!(c[zero_bin as usize] >= 2.0);
        assert!(first as f64 * w <= -3.0);
    }
}
