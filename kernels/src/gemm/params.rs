//! The operands and output-stage parameters of int8 GEMM, and their validation.
//!
//! Everything a caller hands to [`super::gemm_i32`], [`super::gemm_dequant`] or
//! [`super::gemm_requant`] is described here, checked once per call, and rejected with a
//! [`KernelError`] that names the offending parameter.

use crate::error::KernelError;

/// Activations: a row-major `rows × cols` matrix of u8 with a zero point.
#[derive(Clone, Copy, Debug)]
pub struct MatA<'a> {
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// Elements between the starts of consecutive rows (≥ `cols`).
    pub stride: usize,
    pub zero_point: ActZeroPoints<'a>,
}

impl<'a> MatA<'a> {
    /// A densely packed matrix (`stride == cols`) with one zero point.
    pub fn new(data: &'a [u8], rows: usize, cols: usize, zero_point: i32) -> Self {
        MatA {
            data,
            rows,
            cols,
            stride: cols,
            zero_point: ActZeroPoints::PerTensor(zero_point),
        }
    }

    /// The zero point of row `m`.
    pub fn zero_point_of(&self, m: usize) -> i32 {
        match self.zero_point {
            ActZeroPoints::PerTensor(z) => z,
            ActZeroPoints::PerRow(z) => z[m],
        }
    }

    pub(crate) fn validate(&self) -> Result<(), KernelError> {
        if self.stride < self.cols {
            return Err(KernelError::Shape(format!(
                "activation stride {} is smaller than its {} columns",
                self.stride, self.cols
            )));
        }
        if self.rows > 0 && self.data.len() < (self.rows - 1) * self.stride + self.cols {
            return Err(KernelError::Shape(format!(
                "activation buffer holds {} bytes, {}x{} at stride {} needs {}",
                self.data.len(),
                self.rows,
                self.cols,
                self.stride,
                (self.rows - 1) * self.stride + self.cols
            )));
        }
        let zero_points: &[i32] = match &self.zero_point {
            ActZeroPoints::PerTensor(z) => std::slice::from_ref(z),
            ActZeroPoints::PerRow(z) => {
                check_len("activation zero points (per row)", z.len(), self.rows)?;
                z
            }
        };
        if let Some(z) = zero_points.iter().find(|z| !(0..=255).contains(*z)) {
            return Err(KernelError::Param(format!(
                "activation zero point {z} is outside 0..=255"
            )));
        }
        Ok(())
    }
}

/// Activation zero points: one for the tensor, or one per row (per-token quantization).
#[derive(Clone, Copy, Debug)]
pub enum ActZeroPoints<'a> {
    PerTensor(i32),
    PerRow(&'a [i32]),
}

/// Weights: a row-major `rows (K) × cols (N)` matrix of s8 with zero points per tensor
/// (one value) or per output column (`cols` values). Only packing reads it.
#[derive(Clone, Copy, Debug)]
pub struct MatB<'a> {
    pub data: &'a [i8],
    pub rows: usize,
    pub cols: usize,
    /// `1` (per tensor) or `cols` (per output column) values in -128..=127.
    pub zero_points: &'a [i32],
    /// When true, `data` is stored transposed: `cols × rows`, row-major (the
    /// `[out_features, in_features]` layout of PyTorch and ONNX Gemm with transB).
    pub transposed: bool,
}

impl MatB<'_> {
    /// Weight `(k, n)` whatever the storage order.
    pub fn at(&self, k: usize, n: usize) -> i8 {
        if self.transposed {
            self.data[n * self.rows + k]
        } else {
            self.data[k * self.cols + n]
        }
    }

    /// The zero point of column `n`.
    pub fn zero_point_of(&self, n: usize) -> i32 {
        if self.zero_points.len() == 1 {
            self.zero_points[0]
        } else {
            self.zero_points[n]
        }
    }

    pub(crate) fn validate(&self) -> Result<(), KernelError> {
        check_len("weights", self.data.len(), self.rows * self.cols)?;
        if self.zero_points.len() != 1 {
            check_len(
                "weight zero points (per column)",
                self.zero_points.len(),
                self.cols,
            )?;
        }
        if let Some(z) = self.zero_points.iter().find(|z| !(-128..=127).contains(*z)) {
            return Err(KernelError::Param(format!(
                "weight zero point {z} is outside -128..=127"
            )));
        }
        Ok(())
    }
}

/// A scale for the tensor or one per row.
#[derive(Clone, Copy, Debug)]
pub enum Scales<'a> {
    PerTensor(f32),
    PerRow(&'a [f32]),
}

impl Scales<'_> {
    pub fn of(&self, m: usize) -> f32 {
        match self {
            Scales::PerTensor(s) => *s,
            Scales::PerRow(s) => s[m],
        }
    }
}

/// Dequantized f32 output: `y = (acc as f32) · (sa[m] · sw[n]) + bias[n]`.
#[derive(Clone, Copy, Debug)]
pub struct Dequant<'a> {
    /// Activation scale, per tensor or per row.
    pub a_scale: Scales<'a>,
    /// Weight scale: 1 value (per tensor) or `n` (per column).
    pub b_scale: &'a [f32],
    /// Optional f32 bias, `n` values.
    pub bias: Option<&'a [f32]>,
}

impl Dequant<'_> {
    pub(crate) fn validate(&self, m: usize, n: usize) -> Result<(), KernelError> {
        match self.a_scale {
            Scales::PerTensor(s) => check_finite("activation scale", std::slice::from_ref(&s))?,
            Scales::PerRow(s) => {
                check_len("activation scales (per row)", s.len(), m)?;
                check_finite("activation scales", s)?;
            }
        }
        if self.b_scale.len() != 1 {
            check_len("weight scales (per column)", self.b_scale.len(), n)?;
        }
        check_finite("weight scales", self.b_scale)?;
        if let Some(bias) = self.bias {
            check_len("bias", bias.len(), n)?;
            check_finite("bias", bias)?;
        }
        Ok(())
    }
}

/// Requantized u8 output:
/// `clamp(round_half_even((acc + bias[n]) as f32 · multiplier[n]) + out_zero_point, qmin, qmax)`.
#[derive(Clone, Copy, Debug)]
pub struct Requant<'a> {
    /// Optional i32 bias (scale sa·sw, zero point 0), `n` values.
    pub bias: Option<&'a [i32]>,
    /// `sa · sw[n] / s_out`: 1 value (per tensor) or `n` (per column); finite and > 0.
    pub multiplier: &'a [f32],
    pub out_zero_point: i32,
    /// Clamp bounds; a fused ReLU is `qmin = out_zero_point`.
    pub qmin: u8,
    pub qmax: u8,
}

impl Requant<'_> {
    pub(crate) fn validate(&self, n: usize) -> Result<(), KernelError> {
        if let Some(bias) = self.bias {
            check_len("bias", bias.len(), n)?;
        }
        if self.multiplier.len() != 1 {
            check_len(
                "requantization multipliers (per column)",
                self.multiplier.len(),
                n,
            )?;
        }
        if let Some(m) = self
            .multiplier
            .iter()
            .find(|m| !(m.is_finite() && **m > 0.0))
        {
            return Err(KernelError::Param(format!(
                "requantization multiplier {m} must be finite and positive"
            )));
        }
        if !(0..=255).contains(&self.out_zero_point) {
            return Err(KernelError::Param(format!(
                "output zero point {} is outside 0..=255",
                self.out_zero_point
            )));
        }
        if self.qmin > self.qmax {
            return Err(KernelError::Param(format!(
                "clamp range is empty: qmin {} > qmax {}",
                self.qmin, self.qmax
            )));
        }
        Ok(())
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), KernelError> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::Shape(format!(
            "{what}: expected {want} values, got {got}"
        )))
    }
}

fn check_finite(what: &str, values: &[f32]) -> Result<(), KernelError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(KernelError::Param(format!("{what}[{i}] is {}", values[i]))),
    }
}

/// Checks an output buffer of `rows × cols` at stride `ld`.
pub(crate) fn check_output(
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), KernelError> {
    if ld < cols {
        return Err(KernelError::Shape(format!(
            "output stride {ld} is smaller than its {cols} columns"
        )));
    }
    if rows > 0 && cols > 0 && len < (rows - 1) * ld + cols {
        return Err(KernelError::Shape(format!(
            "output buffer holds {len} values, {rows}x{cols} at stride {ld} needs {}",
            (rows - 1) * ld + cols
        )));
    }
    Ok(())
}
