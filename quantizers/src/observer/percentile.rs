//! The range covering a given percentile of the observed values, computed exactly (the
//! percentile of all values seen, with numpy's default linear interpolation between order
//! statistics).
//!
//! Which values: on a symmetric grid, `[−t, t]` with `t` the `p`-th percentile of |x|
//! (the grid is symmetric anyway, so one threshold is all it can use); on an affine grid,
//! each tail separately, `[P_{(100−p)/2}(x), P_{100−(100−p)/2}(x)]`, so `p` % of the values
//! lie inside and each side drops half the rest. This is ONNX Runtime's
//! `HistogramCollector.compute_percentile` (symmetric: |x|, otherwise `(100 − p)/200` off
//! each side). Each tail on its own matters for activations, whose two sides are rarely
//! alike (ReLU: nothing below 0; GELU: −0.17 below, a long tail above): one |x| threshold
//! would be set by the long side alone.
//!
//! Exact without storing the calibration set: the percentiles asked for sit in the tails,
//! so only the `TAIL_CAPACITY` largest (and smallest) values are kept. That answers
//! exactly as long as the needed order statistic is among them: with the default 99.99 up
//! to 6.5·10⁸ values on a symmetric grid, 1.3·10⁹ on an affine one; a percentile that
//! reaches deeper is an error naming the layer (never a silently wrong range).

use super::Observer;
use crate::error::{check_finite, QuantError, Result};
use crate::qparams::{QParams, QSpec, Symmetry};

/// Values kept per tail (256 KiB of f32 each).
pub const TAIL_CAPACITY: usize = 1 << 16;

pub struct Percentile {
    spec: QSpec,
    layer: String,
    percentile: f64,
    /// Values seen (|x| on a symmetric grid).
    count: u64,
    /// The largest values (unsorted, up to 2·capacity between prunes).
    top: Tail,
    /// The smallest values (affine grids only).
    bottom: Tail,
    range: Option<(f32, f32)>,
}

impl Percentile {
    pub fn new(spec: QSpec, percentile: f64, layer: String) -> Result<Percentile> {
        if !(percentile > 0.0 && percentile <= 100.0) {
            return Err(QuantError::Config {
                key: format!("{layer}.observer.percentile"),
                msg: format!("percentile must be in (0, 100], got {percentile}"),
            });
        }
        Ok(Percentile {
            spec,
            layer,
            percentile,
            count: 0,
            top: Tail::new(TAIL_CAPACITY),
            bottom: Tail::new(TAIL_CAPACITY),
            range: None,
        })
    }

    fn symmetric(&self) -> bool {
        self.spec.symmetry == Symmetry::Symmetric
    }

    /// The clipping range (module doc).
    pub fn clip_range(&self) -> Result<(f32, f32)> {
        if self.range.is_none() {
            return Err(QuantError::NoData {
                layer: self.layer.clone(),
                observer: self.name(),
            });
        }
        let n = self.count;
        if self.symmetric() {
            let t = self.upper(self.percentile / 100.0, n)?;
            return Ok((-t, t));
        }
        let cut = (100.0 - self.percentile) / 200.0;
        Ok((self.lower(cut, n)?, self.upper(1.0 - cut, n)?))
    }

    /// The `q`-quantile (0..=1) from the top tail.
    fn upper(&self, q: f64, n: u64) -> Result<f32> {
        let (i, frac) = position(q, n);
        // Ascending index i is rank n−1−i from the top.
        let from_top = |idx: u64| self.top.rank(n - 1 - idx);
        let a = from_top(i).ok_or_else(|| self.too_deep(n))?;
        let b = if i + 1 < n {
            from_top(i + 1).ok_or_else(|| self.too_deep(n))?
        } else {
            a
        };
        Ok(interpolate(a, b, frac))
    }

    /// The `q`-quantile (0..=1) from the bottom tail (values stored negated).
    fn lower(&self, q: f64, n: u64) -> Result<f32> {
        let (i, frac) = position(q, n);
        let a = -self.bottom.rank(i).ok_or_else(|| self.too_deep(n))?;
        let b = if i + 1 < n {
            -self.bottom.rank(i + 1).ok_or_else(|| self.too_deep(n))?
        } else {
            a
        };
        Ok(interpolate(a, b, frac))
    }

    fn too_deep(&self, n: u64) -> QuantError {
        QuantError::Layer {
            layer: self.layer.clone(),
            op: "observer".into(),
            msg: format!(
                "percentile {} of {n} values reaches past the {TAIL_CAPACITY} values kept per \
                 tail; use a higher percentile or fewer calibration samples",
                self.percentile
            ),
        }
    }
}

/// numpy's linear method: position `(n − 1)·q`, split into index and fraction.
fn position(q: f64, n: u64) -> (u64, f64) {
    let h = (n - 1) as f64 * q;
    let i = (h.floor() as u64).min(n - 1);
    (i, h - i as f64)
}

fn interpolate(a: f32, b: f32, frac: f64) -> f32 {
    (f64::from(a) + frac * (f64::from(b) - f64::from(a))) as f32
}

impl Observer for Percentile {
    fn observe(&mut self, _shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        let Some(&first) = data.first() else {
            return Ok(());
        };
        let (lo, hi) = data
            .iter()
            .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        self.range = Some(match self.range {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
        self.count += data.len() as u64;
        if self.symmetric() {
            self.top.extend(data.iter().map(|v| v.abs()));
        } else {
            self.top.extend(data.iter().copied());
            self.bottom.extend(data.iter().map(|v| -v));
        }
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        let (lo, hi) = self.clip_range()?;
        Ok(self.spec.qparams(&[lo], &[hi]))
    }

    fn name(&self) -> &'static str {
        "percentile"
    }
}

/// The `capacity` largest values seen (exactly, as a multiset).
struct Tail {
    capacity: usize,
    values: Vec<f32>,
    /// Once pruned: the smallest kept value. A later value ≤ it cannot enter the top
    /// `capacity` (an equal one would only replace an equal one).
    floor: Option<f32>,
}

impl Tail {
    fn new(capacity: usize) -> Tail {
        Tail {
            capacity,
            values: Vec::new(),
            floor: None,
        }
    }

    fn extend(&mut self, values: impl Iterator<Item = f32>) {
        for v in values {
            if self.floor.is_some_and(|f| v <= f) {
                continue;
            }
            self.values.push(v);
            if self.values.len() >= 2 * self.capacity {
                self.prune();
            }
        }
    }

    /// Keeps the `capacity` largest.
    fn prune(&mut self) {
        let cut = self.values.len() - self.capacity;
        self.values.select_nth_unstable_by(cut, f32::total_cmp);
        self.values.drain(..cut);
        self.floor = self.values.iter().copied().min_by(f32::total_cmp);
    }

    /// The value of rank `r` from the top (0 = largest), if it is among those kept.
    fn rank(&self, r: u64) -> Option<f32> {
        // Everything ever dropped is ≤ every kept value, so kept ranks are true ranks.
        if r >= self.values.len() as u64 {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        Some(sorted[r as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_largest_exactly() {
        let mut t = Tail::new(4);
        t.extend((0..100).map(|v| ((v * 37) % 100) as f32));
        assert_eq!(t.rank(0), Some(99.0));
        assert_eq!(t.rank(3), Some(96.0));
        assert!(t.rank(7).is_none());
    }

    #[test]
    fn a_percentile_outside_0_100_is_a_config_error() {
        for p in [0.0, -1.0, 100.5, f64::NAN] {
            let err = Percentile::new(QSpec::activation_quint8(false), p, "c1".into());
            assert!(err.is_err(), "{p}");
        }
    }

    #[test]
    fn reaching_past_the_kept_tail_is_an_error_not_a_wrong_answer() {
        let mut p = Percentile::new(QSpec::weight_qint8(None), 50.0, "big".into()).unwrap();
        let data: Vec<f32> = (0..3 * TAIL_CAPACITY).map(|v| v as f32).collect();
        p.observe(&[data.len()], &data).unwrap();
        let err = p.qparams().unwrap_err().to_string();
        assert!(
            err.contains("\"big\"") && err.contains("kept per tail"),
            "{err}"
        );
    }
}
