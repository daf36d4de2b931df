//! Min/max observers: the running extremes (per tensor or per channel) and their
//! exponential moving average (PyTorch's `MinMaxObserver`, `PerChannelMinMaxObserver`,
//! `MovingAverageMinMaxObserver`).

use super::Observer;
use crate::error::{check_finite, QuantError, Result};
use crate::qparams::{QParams, QSpec};

/// Min and max of `data`, or `None` when empty.
fn extremes(data: &[f32]) -> Option<(f32, f32)> {
    data.iter().fold(None, |acc, &v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The running min and max of every value seen.
pub struct MinMax {
    spec: QSpec,
    layer: String,
    range: Option<(f32, f32)>,
}

impl MinMax {
    pub fn new(spec: QSpec, layer: String) -> MinMax {
        MinMax {
            spec,
            layer,
            range: None,
        }
    }
}

impl Observer for MinMax {
    fn observe(&mut self, _shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        if let Some((lo, hi)) = extremes(data) {
            self.range = Some(match self.range {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        let (lo, hi) = self.range.ok_or_else(|| QuantError::NoData {
            layer: self.layer.clone(),
            observer: self.name(),
        })?;
        Ok(self.spec.qparams(&[lo], &[hi]))
    }

    fn name(&self) -> &'static str {
        "minmax"
    }
}

/// Running min and max per slice along `axis` (weights: axis 0, the output channels).
pub struct PerChannelMinMax {
    spec: QSpec,
    axis: usize,
    layer: String,
    mins: Vec<f32>,
    maxs: Vec<f32>,
}

impl PerChannelMinMax {
    pub fn new(spec: QSpec, axis: usize, layer: String) -> PerChannelMinMax {
        PerChannelMinMax {
            spec,
            axis,
            layer,
            mins: Vec::new(),
            maxs: Vec::new(),
        }
    }
}

impl Observer for PerChannelMinMax {
    fn observe(&mut self, shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        let Some(&channels) = shape.get(self.axis) else {
            return Err(QuantError::Layer {
                layer: self.layer.clone(),
                op: "observer".into(),
                msg: format!(
                    "per-channel axis {} on a tensor of shape {shape:?}",
                    self.axis
                ),
            });
        };
        if self.mins.is_empty() {
            self.mins = vec![f32::INFINITY; channels];
            self.maxs = vec![f32::NEG_INFINITY; channels];
        } else if self.mins.len() != channels {
            return Err(QuantError::Layer {
                layer: self.layer.clone(),
                op: "observer".into(),
                msg: format!(
                    "{channels} channels on axis {}, earlier batches had {}",
                    self.axis,
                    self.mins.len()
                ),
            });
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        for (i, chunk) in data.chunks(inner.max(1)).enumerate() {
            let c = i % channels;
            if let Some((lo, hi)) = extremes(chunk) {
                self.mins[c] = self.mins[c].min(lo);
                self.maxs[c] = self.maxs[c].max(hi);
            }
        }
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        if self.mins.is_empty() || self.mins.iter().any(|m| m.is_infinite()) {
            return Err(QuantError::NoData {
                layer: self.layer.clone(),
                observer: self.name(),
            });
        }
        Ok(self.spec.qparams(&self.mins, &self.maxs))
    }

    fn name(&self) -> &'static str {
        "minmax"
    }
}

/// `min ← min + c·(batch_min − min)`, likewise max; the first batch sets them.
pub struct MovingAverageMinMax {
    spec: QSpec,
    averaging_constant: f32,
    layer: String,
    range: Option<(f32, f32)>,
}

impl MovingAverageMinMax {
    pub fn new(spec: QSpec, averaging_constant: f32, layer: String) -> MovingAverageMinMax {
        MovingAverageMinMax {
            spec,
            averaging_constant,
            layer,
            range: None,
        }
    }
}

impl Observer for MovingAverageMinMax {
    fn observe(&mut self, _shape: &[usize], data: &[f32]) -> Result<()> {
        check_finite(&self.layer, "observed tensor", data)?;
        if let Some((lo, hi)) = extremes(data) {
            let c = self.averaging_constant;
            self.range = Some(match self.range {
                None => (lo, hi),
                Some((a, b)) => (a + c * (lo - a), b + c * (hi - b)),
            });
        }
        Ok(())
    }

    fn qparams(&self) -> Result<QParams> {
        let (lo, hi) = self.range.ok_or_else(|| QuantError::NoData {
            layer: self.layer.clone(),
            observer: self.name(),
        })?;
        Ok(self.spec.qparams(&[lo], &[hi]))
    }

    fn name(&self) -> &'static str {
        "moving_average_minmax"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_tracks_extremes_across_batches_and_rejects_nan() {
        let mut obs = MinMax::new(QSpec::activation_quint8(false), "fc1".into());
        assert!(matches!(obs.qparams(), Err(QuantError::NoData { .. })));
        obs.observe(&[3], &[0.5, -1.0, 2.0]).unwrap();
        obs.observe(&[2], &[3.0, 0.0]).unwrap();
        let qp = obs.qparams().unwrap();
        assert_eq!(qp.scales, vec![4.0 / 255.0]);
        let err = obs.observe(&[2], &[1.0, f32::NAN]).unwrap_err().to_string();
        assert!(err.contains("\"fc1\"") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn per_channel_minmax_splits_on_the_axis() {
        let spec = QSpec::weight_qint8(Some(0));
        let mut obs = PerChannelMinMax::new(spec, 0, "conv".into());
        // shape [2, 2]: channel 0 = [1, -2], channel 1 = [0.5, 4].
        obs.observe(&[2, 2], &[1.0, -2.0, 0.5, 4.0]).unwrap();
        let qp = obs.qparams().unwrap();
        assert_eq!(qp.scales, vec![2.0 / 127.5, 4.0 / 127.5]);
        assert!(obs.observe(&[3, 2], &[0.0; 6]).is_err());
    }

    #[test]
    fn moving_average_follows_pytorch_update() {
        let mut obs = MovingAverageMinMax::new(QSpec::activation_quint8(false), 0.5, "a".into());
        obs.observe(&[2], &[-2.0, 2.0]).unwrap();
        obs.observe(&[2], &[0.0, 4.0]).unwrap();
        // min: -2 + 0.5·(0 − (−2)) = −1; max: 2 + 0.5·(4 − 2) = 3.
        assert_eq!(
            obs.qparams().unwrap(),
            QSpec::activation_quint8(false).qparams(&[-1.0], &[3.0])
        );
    }
}
