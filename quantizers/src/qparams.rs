//! Quantization parameters: what a tensor's integer grid is (dtype, range, symmetry,
//! granularity) and the scale/zero-point pairs that map reals onto it.
//!
//! The arithmetic follows PyTorch's `ObserverBase._calculate_qparams`, so a scale computed
//! here is the scale a PyTorch user gets from the same min/max:
//! - the range always contains 0 (`min ← min(min, 0)`, `max ← max(max, 0)`), so zero is
//!   exactly representable (padding and ReLU depend on it);
//! - affine: `scale = (max − min) / (qmax − qmin)`, `zp = qmin − round(min / scale)`,
//!   clamped to the grid;
//! - symmetric: `scale = max(|min|, max) / ((qmax − qmin) / 2)`, `zp = 0` for signed
//!   grids; for unsigned ones 128 on the full 0..=255 grid and the rounded-down midpoint
//!   `(qmin + qmax) / 2` on any narrower grid (PyTorch: 128 unless the observer was given
//!   a customized `quant_min`/`quant_max`; it refuses reduce_range for symmetric quint8,
//!   which here is just a narrower grid);
//! - scales below f32 epsilon are raised to it, so a constant (zero-range) tensor still
//!   gets a valid, finite scale.
//!
//! Rounding is half-to-even everywhere (`nearbyint` under the default FP mode, as ATen).

use crate::error::{QuantError, Result};

/// The smallest scale handed out (PyTorch: `torch.finfo(torch.float32).eps`).
pub const MIN_SCALE: f32 = f32::EPSILON;

/// Storage type of quantized values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QDType {
    /// u8 storage (PyTorch `quint8`), the activations' type on x86 and ARM.
    QUInt8,
    /// i8 storage (PyTorch `qint8`), the weights' type.
    QInt8,
}

impl QDType {
    /// The storage type's full range.
    pub fn full_range(self) -> (i32, i32) {
        match self {
            QDType::QUInt8 => (0, 255),
            QDType::QInt8 => (-128, 127),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QDType::QUInt8 => "quint8",
            QDType::QInt8 => "qint8",
        }
    }
}

/// Affine (any zero point) or symmetric (zero point at the grid's centre).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Symmetry {
    Affine,
    Symmetric,
}

/// One scale for the tensor, or one per slice along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    PerTensor,
    PerChannel { axis: usize },
}

/// What grid a tensor is quantized onto. `qmin`/`qmax` inside the dtype's range give
/// reduce_range (7-bit activations) and lower bit widths with the same code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QSpec {
    pub dtype: QDType,
    pub symmetry: Symmetry,
    pub granularity: Granularity,
    pub qmin: i32,
    pub qmax: i32,
}

impl QSpec {
    /// Affine per-tensor quint8 activations; `reduce_range` keeps them in 0..=127 (what
    /// FBGEMM needs so `vpmaddubsw` cannot saturate).
    pub fn activation_quint8(reduce_range: bool) -> QSpec {
        QSpec {
            dtype: QDType::QUInt8,
            symmetry: Symmetry::Affine,
            granularity: Granularity::PerTensor,
            qmin: 0,
            qmax: if reduce_range { 127 } else { 255 },
        }
    }

    /// Symmetric qint8 weights, per tensor or per output channel (axis 0 for Conv and
    /// for Gemm weights stored `[out, in]`).
    pub fn weight_qint8(per_channel: Option<usize>) -> QSpec {
        QSpec {
            dtype: QDType::QInt8,
            symmetry: Symmetry::Symmetric,
            granularity: match per_channel {
                Some(axis) => Granularity::PerChannel { axis },
                None => Granularity::PerTensor,
            },
            qmin: -128,
            qmax: 127,
        }
    }

    /// A spec with `bits` of range at the bottom of the storage type's grid (for
    /// unsigned) or centred (for signed): `bits = 8` is the full range.
    pub fn with_bits(mut self, bits: u32) -> Result<QSpec> {
        if !(2..=8).contains(&bits) {
            return Err(QuantError::Config {
                key: "bits".into(),
                msg: format!("{bits} is outside 2..=8"),
            });
        }
        let levels = 1i32 << bits;
        (self.qmin, self.qmax) = match self.dtype {
            QDType::QUInt8 => (0, levels - 1),
            QDType::QInt8 => (-levels / 2, levels / 2 - 1),
        };
        Ok(self)
    }

    /// Checks that the range fits the dtype and holds at least two levels.
    pub fn validate(&self, key: &str) -> Result<()> {
        let (lo, hi) = self.dtype.full_range();
        if self.qmin < lo || self.qmax > hi || self.qmin >= self.qmax {
            return Err(QuantError::Config {
                key: key.to_string(),
                msg: format!(
                    "qmin {} / qmax {} must satisfy {lo} <= qmin < qmax <= {hi} for {}",
                    self.qmin,
                    self.qmax,
                    self.dtype.name()
                ),
            });
        }
        Ok(())
    }

    /// Scale and zero point for one observed range (PyTorch's rules, module doc).
    pub fn qparams_for_range(&self, min: f32, max: f32) -> (f32, i32) {
        let min_neg = min.min(0.0);
        let max_pos = max.max(0.0);
        let (qmin, qmax) = (self.qmin as f32, self.qmax as f32);
        match self.symmetry {
            Symmetry::Symmetric => {
                let amax = (-min_neg).max(max_pos);
                let scale = (amax / ((qmax - qmin) / 2.0)).max(MIN_SCALE);
                let zp = match self.dtype {
                    QDType::QInt8 => 0,
                    // PyTorch's `_calculate_qparams`: 128 on the default quint8 range,
                    // (quant_min + quant_max) // 2 on a customized one.
                    QDType::QUInt8 if (self.qmin, self.qmax) == self.dtype.full_range() => 128,
                    QDType::QUInt8 => (self.qmin + self.qmax).div_euclid(2),
                };
                (scale, zp)
            }
            Symmetry::Affine => {
                let scale = ((max_pos - min_neg) / (qmax - qmin)).max(MIN_SCALE);
                let zp = self.qmin - (min_neg / scale).round_ties_even() as i32;
                (scale, zp.clamp(self.qmin, self.qmax))
            }
        }
    }

    /// QParams from per-channel (or one) min/max pairs.
    pub fn qparams(&self, mins: &[f32], maxs: &[f32]) -> QParams {
        debug_assert_eq!(mins.len(), maxs.len());
        let (scales, zero_points) = mins
            .iter()
            .zip(maxs)
            .map(|(&lo, &hi)| self.qparams_for_range(lo, hi))
            .unzip();
        QParams {
            spec: *self,
            scales,
            zero_points,
        }
    }
}

/// Scales and zero points of one tensor: one pair per tensor, or one per channel along
/// `spec.granularity`'s axis.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QParams {
    pub spec: QSpec,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
}

impl QParams {
    /// Per-tensor qparams with a given scale and zero point.
    pub fn per_tensor(spec: QSpec, scale: f32, zero_point: i32) -> QParams {
        QParams {
            spec,
            scales: vec![scale],
            zero_points: vec![zero_point],
        }
    }

    pub fn is_per_channel(&self) -> bool {
        matches!(self.spec.granularity, Granularity::PerChannel { .. })
    }

    /// Quantizes one value with channel `c`'s parameters (c = 0 for per-tensor).
    pub fn quantize_one(&self, x: f32, c: usize) -> i32 {
        quantize(
            x,
            self.scales[c],
            self.zero_points[c],
            self.spec.qmin,
            self.spec.qmax,
        )
    }

    /// The real value a quantized value stands for.
    pub fn dequantize_one(&self, q: i32, c: usize) -> f32 {
        (q - self.zero_points[c]) as f32 * self.scales[c]
    }

    /// Quantizes a whole tensor of `shape` (row-major), per channel along the axis.
    pub fn quantize_tensor(&self, shape: &[usize], data: &[f32]) -> Vec<i32> {
        let (outer, channels, inner) = self.channel_split(shape);
        let mut out = Vec::with_capacity(data.len());
        for o in 0..outer {
            for c in 0..channels {
                let start = (o * channels + c) * inner;
                let pick = if channels == 1 { 0 } else { c };
                out.extend(
                    data[start..start + inner]
                        .iter()
                        .map(|&x| self.quantize_one(x, pick)),
                );
            }
        }
        out
    }

    /// `dequantize(quantize(x))`: what the int8 model sees instead of `x` (fake quant).
    pub fn fake_quantize_tensor(&self, shape: &[usize], data: &[f32]) -> Vec<f32> {
        let (outer, channels, inner) = self.channel_split(shape);
        let mut out = Vec::with_capacity(data.len());
        for o in 0..outer {
            for c in 0..channels {
                let start = (o * channels + c) * inner;
                let pick = if channels == 1 { 0 } else { c };
                out.extend(
                    data[start..start + inner]
                        .iter()
                        .map(|&x| self.dequantize_one(self.quantize_one(x, pick), pick)),
                );
            }
        }
        out
    }

    /// [`QParams::fake_quantize_tensor`] and, per element, whether the rounded integer
    /// before clamping lies in `[qmin, qmax]`: the straight-through estimator's mask
    /// (PyTorch's `fake_quantize_per_tensor_affine_cachemask`). The values are the same
    /// bits as `fake_quantize_tensor`'s: the same `quantize_one`/`dequantize_one`.
    pub fn fake_quantize_with_mask(&self, shape: &[usize], data: &[f32]) -> (Vec<f32>, Vec<bool>) {
        let (outer, channels, inner) = self.channel_split(shape);
        let (lo, hi) = (self.spec.qmin as f32, self.spec.qmax as f32);
        let mut out = Vec::with_capacity(data.len());
        let mut mask = Vec::with_capacity(data.len());
        for o in 0..outer {
            for c in 0..channels {
                let start = (o * channels + c) * inner;
                let pick = if channels == 1 { 0 } else { c };
                let (scale, zp) = (self.scales[pick], self.zero_points[pick] as f32);
                for &x in &data[start..start + inner] {
                    out.push(self.dequantize_one(self.quantize_one(x, pick), pick));
                    let q = (x / scale).round_ties_even() + zp;
                    mask.push(q >= lo && q <= hi);
                }
            }
        }
        (out, mask)
    }

    /// `(outer, channels, inner)` of `shape` around the quantization axis.
    fn channel_split(&self, shape: &[usize]) -> (usize, usize, usize) {
        match self.spec.granularity {
            Granularity::PerTensor => (1, 1, shape.iter().product()),
            Granularity::PerChannel { axis } => (
                shape[..axis].iter().product(),
                shape[axis],
                shape[axis + 1..].iter().product(),
            ),
        }
    }
}

/// `clamp(round_half_even(x / scale) + zp, qmin, qmax)`.
pub fn quantize(x: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    let q = (x / scale).round_ties_even() + zero_point as f32;
    // f32 → i32 `as` saturates, so huge |x| cannot wrap before the clamp.
    (q as i32).clamp(qmin, qmax)
}

/// An int32 bias on the accumulator's grid: scale `sa · sw[c]`, zero point 0.
pub fn quantize_bias(bias: &[f32], act_scale: f32, weight_scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .enumerate()
        .map(|(c, &b)| {
            let sw = weight_scales[if weight_scales.len() == 1 { 0 } else { c }];
            let q = (b as f64 / (act_scale as f64 * sw as f64)).round_ties_even();
            q.clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_range_maps_min_and_max_to_the_grid_ends() {
        let spec = QSpec::activation_quint8(false);
        let (scale, zp) = spec.qparams_for_range(-1.0, 3.0);
        assert_eq!(scale, 4.0 / 255.0);
        assert_eq!(zp, 64); // 0 - round(-1 / (4/255)) = round(63.75)
        assert_eq!(quantize(-1.0, scale, zp, 0, 255), 0);
        assert_eq!(quantize(3.0, scale, zp, 0, 255), 255);
        assert_eq!(quantize(0.0, scale, zp, 0, 255), zp);
    }

    #[test]
    fn positive_only_ranges_still_contain_zero() {
        let spec = QSpec::activation_quint8(true);
        let (scale, zp) = spec.qparams_for_range(2.0, 6.35);
        assert_eq!(zp, 0);
        assert_eq!(scale, 6.35 / 127.0);
    }

    #[test]
    fn symmetric_weights_have_zero_point_zero_and_amax_over_127_5() {
        let spec = QSpec::weight_qint8(None);
        let (scale, zp) = spec.qparams_for_range(-0.5, 0.25);
        assert_eq!(zp, 0);
        assert_eq!(scale, 0.5 / 127.5);
        let unsigned = QSpec {
            dtype: QDType::QUInt8,
            ..QSpec::activation_quint8(false)
        };
        let sym_u8 = QSpec {
            symmetry: Symmetry::Symmetric,
            ..unsigned
        };
        // PyTorch (`MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric)`)
        // puts the zero point at 128, not the floor midpoint 127, on the full range ...
        let (scale, zp) = sym_u8.qparams_for_range(-1.0, 1.0);
        assert_eq!((scale, zp), (1.0 / 127.5, 128));
        // ... so 0 is 128 and ±0.5 are 128 ± 64 (0.5 · 127.5 = 63.75).
        assert_eq!(quantize(0.0, scale, zp, 0, 255), 128);
        assert_eq!(quantize(0.5, scale, zp, 0, 255), 192);
        assert_eq!(quantize(-0.5, scale, zp, 0, 255), 64);
        // and at (quant_min + quant_max) // 2 on a customized range (here 4 bits: 0..=15).
        let sym_u4 = sym_u8.with_bits(4).unwrap();
        assert_eq!(sym_u4.qparams_for_range(-1.0, 1.0), (1.0 / 7.5, 7));
    }

    #[test]
    fn constant_and_zero_tensors_get_a_finite_positive_scale() {
        for spec in [QSpec::activation_quint8(false), QSpec::weight_qint8(None)] {
            let (scale, zp) = spec.qparams_for_range(0.0, 0.0);
            assert_eq!(scale, MIN_SCALE);
            assert!((spec.qmin..=spec.qmax).contains(&zp));
            let (scale, _) = spec.qparams_for_range(0.7, 0.7);
            assert!(scale.is_finite() && scale > 0.0);
        }
    }

    #[test]
    fn rounding_is_half_to_even_and_saturating() {
        assert_eq!(quantize(0.5, 1.0, 0, -128, 127), 0);
        assert_eq!(quantize(1.5, 1.0, 0, -128, 127), 2);
        assert_eq!(quantize(-2.5, 1.0, 0, -128, 127), -2);
        assert_eq!(quantize(1e30, 1.0, 0, -128, 127), 127);
        assert_eq!(quantize(-1e30, 1.0, 3, 0, 255), 0);
    }

    #[test]
    fn per_channel_quantization_uses_each_channels_scale() {
        let spec = QSpec::weight_qint8(Some(0));
        let qp = spec.qparams(&[-1.0, -10.0], &[1.0, 10.0]);
        // shape [2, 3]: channel 0 then channel 1.
        let q = qp.quantize_tensor(&[2, 3], &[1.0, -0.5, 0.5, 10.0, -5.0, 20.0]);
        assert_eq!(q, vec![127, -64, 64, 127, -64, 127]);
        let fq = qp.fake_quantize_tensor(&[2, 3], &[0.5, 0.0, 0.0, 5.0, 0.0, 0.0]);
        assert!((fq[0] - 64.0 / 127.5).abs() < 1e-7);
        assert!((fq[3] - 640.0 / 127.5).abs() < 1e-5);
    }

    #[test]
    fn bit_widths_and_validation() {
        let s4 = QSpec::weight_qint8(None).with_bits(4).unwrap();
        assert_eq!((s4.qmin, s4.qmax), (-8, 7));
        let u7 = QSpec::activation_quint8(false).with_bits(7).unwrap();
        assert_eq!(u7, QSpec::activation_quint8(true));
        assert!(QSpec::weight_qint8(None).with_bits(9).is_err());
        let bad = QSpec {
            qmin: 5,
            qmax: 5,
            ..QSpec::activation_quint8(false)
        };
        let err = bad.validate("activation").unwrap_err().to_string();
        assert!(err.starts_with("activation:"), "{err}");
    }

    #[test]
    fn bias_lands_on_the_accumulator_grid() {
        let q = quantize_bias(&[0.3, -0.3], 0.1, &[0.01, 0.02]);
        assert_eq!(q, vec![300, -150]);
    }
}
