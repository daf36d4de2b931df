//! Summary statistics of timing samples. Pure arithmetic: no clocks, no I/O.

use serde::Serialize;

/// Order statistics of a set of samples (any unit; callers use nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    /// `(p90 − p10) / median`: the relative noise band of this measurement.
    pub spread: f64,
    pub samples: usize,
}

/// Summarises samples; `None` for an empty set or one containing NaN.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = percentile(&sorted, 0.5);
    let (p10, p90) = (percentile(&sorted, 0.1), percentile(&sorted, 0.9));
    Some(Summary {
        median,
        p10,
        p90,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        spread: if median > 0.0 {
            (p90 - p10) / median
        } else {
            0.0
        },
        samples: sorted.len(),
    })
}

/// Linear interpolation between closest ranks (numpy's default) on sorted data.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile([1..=10], [10, 50, 90]) = [1.9, 5.5, 9.1]
        let s = summarize(&[10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]).unwrap();
        assert!(
            (s.p10 - 1.9).abs() < 1e-12
                && (s.median - 5.5).abs() < 1e-12
                && (s.p90 - 9.1).abs() < 1e-12
        );
        assert_eq!((s.min, s.max, s.samples), (1.0, 10.0, 10));
        assert!((s.spread - 7.2 / 5.5).abs() < 1e-12);
    }

    #[test]
    fn empty_or_nan_has_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
        assert_eq!(summarize(&[4.0]).unwrap().median, 4.0);
    }
}
